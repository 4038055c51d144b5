"""Delivers events to the Chalice handlers as Lambda would, for the sandbox.

AWS invokes the functions from EventBridge rules, SQS event source mappings, the table's stream
and a schedule. moto routes EventBridge to SQS but invokes nothing, so this pump polls those
queues and the DynamoDB stream and calls the handlers in this process with Lambda-shaped events.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
_SQS_BATCH = 10


@dataclass(frozen=True)
class EventBridgeQueue:
    """An SQS queue an EventBridge rule targets: each message body is one event for ``handler``."""

    queue_url: str
    handler: Handler


@dataclass(frozen=True)
class SqsSource:
    """A queue the function consumes in batches (event source mapping, partial batch responses)."""

    queue_url: str
    queue_arn: str
    handler: Handler


@dataclass(frozen=True)
class StreamSource:
    """A DynamoDB stream the function consumes (records in order, a failed batch retried)."""

    stream_arn: str
    handler: Handler


@dataclass(frozen=True)
class Schedule:
    handler: Handler
    every_s: float


class EventPump:
    def __init__(
        self,
        session: Any,
        *,
        eventbridge: list[EventBridgeQueue],
        sqs: list[SqsSource],
        stream: StreamSource | None,
        schedule: Schedule | None,
        poll_interval_s: float = 0.1,
    ) -> None:
        self._sqs = session.client("sqs")
        self._streams = session.client("dynamodbstreams")
        self._eventbridge = eventbridge
        self._sources = sqs
        self._stream = stream
        self._schedule = schedule
        self._poll_interval_s = poll_interval_s
        self._shard_iterators: dict[str, str | None] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0

    def start(self) -> EventPump:
        self._thread = threading.Thread(target=self._run, name="event-pump", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        next_schedule = time.monotonic() + (self._schedule.every_s if self._schedule else 0)
        while not self._stopping.is_set():
            busy = False
            for route in self._eventbridge:
                busy |= self._guarded(self._pump_eventbridge, route)
            for source in self._sources:
                busy |= self._guarded(self._pump_sqs, source)
            if self._stream is not None:
                busy |= self._guarded(self._pump_stream, self._stream)
            if self._schedule is not None and time.monotonic() >= next_schedule:
                next_schedule = time.monotonic() + self._schedule.every_s
                self._guarded(self._run_schedule, self._schedule)
            if not busy:
                self._stopping.wait(self._poll_interval_s)

    def _guarded(self, step: Callable[..., bool], *args: Any) -> bool:
        # A failing handler is what Lambda would retry: log it, keep pumping the others.
        try:
            return step(*args)
        except Exception:
            logger.exception("event delivery failed; it will be retried")
            return False

    def _receive(self, queue_url: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self._sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=_SQS_BATCH, VisibilityTimeout=5, AttributeNames=["All"]
        ).get("Messages", [])
        return messages

    def _pump_eventbridge(self, route: EventBridgeQueue) -> bool:
        messages = self._receive(route.queue_url)
        for message in messages:
            try:
                route.handler(json.loads(message["Body"]), None)
            except Exception:
                logger.exception("handler failed; the event will be redelivered")
                continue
            self._sqs.delete_message(QueueUrl=route.queue_url, ReceiptHandle=message["ReceiptHandle"])
            self.delivered += 1
        return bool(messages)

    def _pump_sqs(self, source: SqsSource) -> bool:
        messages = self._receive(source.queue_url)
        if not messages:
            return False
        event = {"Records": [lambda_sqs_record(message, source.queue_arn) for message in messages]}
        result = source.handler(event, None) or {}
        failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                self._sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
                self.delivered += 1
        return True

    def _pump_stream(self, stream: StreamSource) -> bool:
        if not self._shard_iterators:
            shards = self._streams.describe_stream(StreamArn=stream.stream_arn)["StreamDescription"]["Shards"]
            for shard in shards:
                self._shard_iterators[shard["ShardId"]] = self._streams.get_shard_iterator(
                    StreamArn=stream.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
        busy = False
        for shard_id, iterator in list(self._shard_iterators.items()):
            if iterator is None:
                continue
            response = self._streams.get_records(ShardIterator=iterator, Limit=100)
            records = response.get("Records", [])
            if records:
                event = {"Records": [lambda_stream_record(record, stream.stream_arn) for record in records]}
                stream.handler(event, None)
                self.delivered += len(records)
                busy = True
            self._shard_iterators[shard_id] = response.get("NextShardIterator")
        return busy

    def _run_schedule(self, schedule: Schedule) -> bool:
        event = {
            "version": "0",
            "id": "sandbox-schedule",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/reconcile"],
            "detail": {},
        }
        schedule.handler(event, None)
        return True


def lambda_sqs_record(message: dict[str, Any], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """A ReceiveMessage message as Lambda's SQS event source hands it to the function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def lambda_stream_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as Lambda hands it over (creation time in epoch seconds)."""
    change = dict(record["dynamodb"])
    created = change.get("ApproximateCreationDateTime")
    if created is not None and hasattr(created, "timestamp"):
        change["ApproximateCreationDateTime"] = int(created.timestamp())
    return {**record, "dynamodb": change, "eventSourceARN": stream_arn}

"""Delivers events to the Chalice handlers as Lambda would, for the sandbox.

AWS invokes the functions from EventBridge rules, SQS event source mappings, the table's stream
and a schedule. moto routes EventBridge to SQS but invokes nothing, so this pump polls those
queues and the DynamoDB stream and calls the handlers in this process with Lambda-shaped events
and a Lambda context.

Failures are handled as the event source mappings the template configures
(``ReportBatchItemFailures`` on each, and for the stream ``MaximumRetryAttempts``,
``MaximumRecordAgeInSeconds``, ``BisectBatchOnFunctionError`` and an on-failure queue, as
``infra.render`` renders them): an SQS message reported failed stays on its queue and comes back after the
queue's visibility timeout, the others are deleted; a stream batch is retried from the first
record reported failed (the lowest sequence number) until the retries or the record age run out,
and then its description goes to the on-failure queue and the shard moves on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.config import Config
from chalice.local import LambdaContext

# The stream event source mapping's limits, as the template renders them.
from infra.render import STREAM_MAX_RECORD_AGE_S, STREAM_MAX_RETRIES

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
_SQS_BATCH = 10
# The stream event source's batch size (app.py) and the functions' settings the context reports.
_STREAM_BATCH = 100
_MEMORY_MB = 128
_TIMEOUT_MS = 60_000
ACCOUNT = "123456789012"


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
    """A DynamoDB stream the function consumes: records in order per shard, a failed batch
    retried from its first failed record (Lambda's event source mapping, as the template sets it;
    -1 means "until the record leaves the stream")."""

    stream_arn: str
    handler: Handler
    on_failure_queue_url: str | None = None
    max_retries: int = STREAM_MAX_RETRIES
    max_record_age_s: int = STREAM_MAX_RECORD_AGE_S
    bisect_on_function_error: bool = True
    batch_size: int = _STREAM_BATCH


@dataclass
class _Shard:
    """Where Lambda stands on one shard: the records from its checkpoint on that it holds, and
    how often the batch at the checkpoint has failed."""

    shard_id: str
    iterator: str | None
    pending: list[dict[str, Any]] = field(default_factory=list)
    failed_attempts: int = 0
    invocations: int = 0
    # Bisection halves the batch after a function error (without using a retry).
    batch_limit: int = _STREAM_BATCH


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
        # moto answers only the regional endpoint, not the account-based one botocore would pick.
        self._streams = session.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))
        self._eventbridge = eventbridge
        self._sources = sqs
        self._stream = stream
        self._schedule = schedule
        self._poll_interval_s = poll_interval_s
        self._shards: dict[str, _Shard] = {}
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
            busy = self.pump_once()
            if self._schedule is not None and time.monotonic() >= next_schedule:
                next_schedule = time.monotonic() + self._schedule.every_s
                self._guarded(self._run_schedule, self._schedule)
            if not busy:
                self._stopping.wait(self._poll_interval_s)

    def pump_once(self) -> bool:
        """One round over every source (what the pump's thread repeats); True if any had work."""
        busy = False
        for route in self._eventbridge:
            busy |= self._guarded(self._pump_eventbridge, route)
        for source in self._sources:
            busy |= self._guarded(self._pump_sqs, source)
        if self._stream is not None:
            busy |= self._guarded(self._pump_stream, self._stream)
        return busy

    def _guarded(self, step: Callable[..., bool], *args: Any) -> bool:
        # A failing handler is what Lambda would retry: log it, keep pumping the others.
        try:
            return step(*args)
        except Exception:
            logger.exception("event delivery failed; it will be retried")
            return False

    def _receive(self, queue_url: str, **visibility: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self._sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=_SQS_BATCH, AttributeNames=["All"], **visibility
        ).get("Messages", [])
        return messages

    def _pump_eventbridge(self, route: EventBridgeQueue) -> bool:
        # EventBridge invokes the function asynchronously and Lambda retries a failed invocation
        # within a minute or two; 5 s stands in for that here.
        messages = self._receive(route.queue_url, VisibilityTimeout=5)
        for message in messages:
            try:
                invoke(route.handler, json.loads(message["Body"]))
            except Exception:
                logger.exception("handler failed; the event will be redelivered")
                continue
            self._sqs.delete_message(QueueUrl=route.queue_url, ReceiptHandle=message["ReceiptHandle"])
            self.delivered += 1
        return bool(messages)

    def _pump_sqs(self, source: SqsSource) -> bool:
        # The queue's own visibility timeout applies, as for Lambda's event source mapping: a
        # message reported failed comes back when it runs out (or when the handler changed it).
        messages = self._receive(source.queue_url)
        if not messages:
            return False
        event = {"Records": [lambda_sqs_record(message, source.queue_arn) for message in messages]}
        result = invoke(source.handler, event) or {}
        failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                self._sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
                self.delivered += 1
        return True

    def _pump_stream(self, stream: StreamSource) -> bool:
        if not self._shards:
            shards = self._streams.describe_stream(StreamArn=stream.stream_arn)["StreamDescription"]["Shards"]
            for shard in shards:
                iterator = self._streams.get_shard_iterator(
                    StreamArn=stream.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
                self._shards[shard["ShardId"]] = _Shard(
                    shard["ShardId"], iterator, batch_limit=stream.batch_size
                )
        busy = False
        for shard in self._shards.values():
            busy |= self._pump_shard(stream, shard)
        return busy

    def _pump_shard(self, stream: StreamSource, shard: _Shard) -> bool:
        if not shard.pending:
            if shard.iterator is None:
                return False
            response = self._streams.get_records(ShardIterator=shard.iterator, Limit=stream.batch_size)
            shard.iterator = response.get("NextShardIterator")
            shard.pending = list(response.get("Records", []))
            if not shard.pending:
                return False
        batch = shard.pending[: shard.batch_limit]
        if self._too_old(stream, batch[0]):
            self._discard(stream, shard, batch, "RecordAgeExceeded", function_error=None)
            return True
        event = {"Records": [lambda_stream_record(record, stream.stream_arn) for record in batch]}
        shard.invocations += 1
        try:
            result = invoke(stream.handler, event)
        except Exception:
            logger.exception("stream handler failed; the batch is retried")
            if stream.bisect_on_function_error and len(batch) > 1:
                shard.batch_limit = max(1, len(batch) // 2)  # splitting uses no retry
                return True
            self._failed(stream, shard, batch, "Unhandled")
            return True
        first_failed = _first_failed(batch, result)
        if first_failed is None:
            shard.pending = shard.pending[len(batch) :]
            shard.failed_attempts = 0
            shard.batch_limit = stream.batch_size
            self.delivered += len(batch)
            return True
        # Checkpoint before the first failed record: the ones ahead of it are done.
        self.delivered += first_failed
        shard.pending = shard.pending[first_failed:]
        self._failed(stream, shard, batch[first_failed:], None)
        return True

    def _failed(
        self, stream: StreamSource, shard: _Shard, batch: list[dict[str, Any]], error: str | None
    ) -> None:
        shard.failed_attempts += 1
        if 0 <= stream.max_retries < shard.failed_attempts:
            self._discard(stream, shard, batch, "RetryAttemptsExhausted", function_error=error)

    def _too_old(self, stream: StreamSource, record: dict[str, Any]) -> bool:
        created = _created_at(record)
        return (
            stream.max_record_age_s >= 0
            and created is not None
            and time.time() - created > stream.max_record_age_s
        )

    def _discard(
        self,
        stream: StreamSource,
        shard: _Shard,
        batch: list[dict[str, Any]],
        condition: str,
        function_error: str | None,
    ) -> None:
        """Lambda gives up on the batch: it sends what the batch was to the on-failure destination
        (the records themselves stay in the stream until they expire) and moves past it."""
        logger.error("stream batch discarded (%s): %d records", condition, len(batch))
        if stream.on_failure_queue_url is not None:
            body = on_failure_record(
                stream.stream_arn,
                shard.shard_id,
                batch,
                condition=condition,
                invocations=shard.invocations,
                function_error=function_error,
            )
            self._sqs.send_message(QueueUrl=stream.on_failure_queue_url, MessageBody=json.dumps(body))
        shard.pending = shard.pending[len(batch) :]
        shard.failed_attempts = 0
        shard.invocations = 0
        shard.batch_limit = stream.batch_size

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
        invoke(schedule.handler, event)
        return True


def invoke(handler: Handler, event: dict[str, Any]) -> Any:
    """Call a Chalice handler as Lambda does: with the event and a Lambda context of its own."""
    # Chalice keeps the decorated function (for @app.lambda_function, inside a wrapper): its name
    # is the Lambda function's name in app.py.
    decorated = getattr(handler, "func", handler)
    function = str(getattr(getattr(decorated, "_original_func", decorated), "__name__", "handler"))
    context = LambdaContext(function, memory_size=_MEMORY_MB, max_runtime_ms=_TIMEOUT_MS)
    context.invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{function}"
    return handler(event, context)


def _first_failed(batch: list[dict[str, Any]], result: Any) -> int | None:
    """Where in the batch the handler's ``batchItemFailures`` put the checkpoint: the failed record
    with the lowest sequence number. A response Lambda cannot read as a list of this batch's
    sequence numbers fails the whole batch; an empty or missing list is a success."""
    failures = result.get("batchItemFailures") if isinstance(result, dict) else None
    if not failures:
        return None
    positions = {record["dynamodb"]["SequenceNumber"]: index for index, record in enumerate(batch)}
    found = [
        positions.get(item.get("itemIdentifier")) if isinstance(item, dict) else None for item in failures
    ]
    if any(index is None for index in found):
        return 0
    return min(index for index in found if index is not None)


def _created_at(record: dict[str, Any]) -> float | None:
    created = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    if hasattr(created, "timestamp"):
        return float(created.timestamp())
    return float(created) if isinstance(created, (int, float)) else None


def on_failure_record(
    stream_arn: str,
    shard_id: str,
    batch: list[dict[str, Any]],
    *,
    condition: str,
    invocations: int,
    function_error: str | None,
) -> dict[str, Any]:
    """What Lambda sends an on-failure destination for a discarded stream batch (the
    invocation record of "Retaining discarded records for a DynamoDB event source in Lambda")."""

    def arrival(record: dict[str, Any]) -> str:
        created = _created_at(record) or time.time()
        return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error is not None:
        response["functionError"] = function_error
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:on_release_stream",
            "condition": condition,
            "approximateInvokeCount": invocations,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": batch[0]["dynamodb"]["SequenceNumber"],
            "endSequenceNumber": batch[-1]["dynamodb"]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": arrival(batch[0]),
            "approximateArrivalOfLastRecord": arrival(batch[-1]),
            "batchSize": len(batch),
            "streamArn": stream_arn,
        },
    }


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

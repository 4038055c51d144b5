"""The sandbox's event pump handles failures as Lambda's event source mappings do (moto in
process): a stream batch is retried from its first failed record until the template's retries
run out, then described on the on-failure queue; an SQS message reported failed comes back after
its queue's visibility timeout while the others are deleted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser.models.dynamodb import (
    DynamoDBStreamLambdaOnFailureDestinationModel,
)
from moto import mock_aws

from sandbox.event_pump import EventPump, SqsSource, StreamSource

REGION = "us-east-1"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def stream_of(session: Any, keys: list[str]) -> str:
    dynamodb = session.client("dynamodb")
    table = dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    for key in keys:
        put(session, key)
    return str(table["TableDescription"]["LatestStreamArn"])


def put(session: Any, key: str) -> None:
    session.client("dynamodb").put_item(TableName="t", Item={"pk": {"S": key}})


class StreamHandler:
    """Reports ``failing`` as failed (by its sequence number) the first ``times`` times it sees it."""

    def __init__(self, failing: str, times: int) -> None:
        self.failing = failing
        self.times = times
        self.batches: list[list[str]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert context.aws_request_id
        assert context.function_name
        records = event["Records"]
        self.batches.append([record["dynamodb"]["NewImage"]["pk"]["S"] for record in records])
        for record in records:
            if record["dynamodb"]["NewImage"]["pk"]["S"] == self.failing and self.times > 0:
                self.times -= 1
                return {"batchItemFailures": [{"itemIdentifier": record["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}


def pump_until_idle(pump: EventPump, rounds: int = 30) -> None:
    for _ in range(rounds):
        if not pump.pump_once():
            return
    raise AssertionError("the pump never went idle")


def test_a_failed_stream_record_is_retried_from_where_it_failed(session: Any) -> None:
    handler = StreamHandler("b", times=2)
    stream = StreamSource(stream_of(session, ["a", "b", "c"]), handler)
    pump = EventPump(session, eventbridge=[], sqs=[], stream=stream, schedule=None)

    pump_until_idle(pump)

    # Lambda checkpoints before the lowest failed sequence number and retries from there.
    assert handler.batches == [["a", "b", "c"], ["b", "c"], ["b", "c"]]
    assert pump.delivered == 3


def test_a_stream_batch_that_keeps_failing_goes_to_the_on_failure_queue(session: Any) -> None:
    sqs = session.client("sqs")
    failures = sqs.create_queue(QueueName="stream-failures")["QueueUrl"]
    handler = StreamHandler("b", times=10_000)
    stream_arn = stream_of(session, ["a", "b", "c"])
    retries = 2
    stream = StreamSource(stream_arn, handler, on_failure_queue_url=failures, max_retries=retries)
    pump = EventPump(session, eventbridge=[], sqs=[], stream=stream, schedule=None)

    pump_until_idle(pump)
    put(session, "d")
    pump_until_idle(pump)

    # The first try and `retries` more, then the shard moves on.
    assert handler.batches == [["a", "b", "c"], *[["b", "c"]] * retries, ["d"]]
    messages = sqs.receive_message(QueueUrl=failures, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    discarded = DynamoDBStreamLambdaOnFailureDestinationModel.model_validate(json.loads(messages[0]["Body"]))
    assert discarded.request_context.condition == "RetryAttemptsExhausted"
    assert discarded.request_context.approximate_invoke_count == 1 + retries
    assert discarded.ddb_stream_batch_info.batch_size == 2
    assert discarded.ddb_stream_batch_info.stream_arn == stream_arn


def test_a_failed_sqs_message_returns_after_the_queues_visibility_timeout(session: Any) -> None:
    sqs = session.client("sqs")
    queue_url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for body in ("x", "y"):
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    seen: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.extend(record["body"] for record in event["Records"])
        failed = [r["messageId"] for r in event["Records"] if r["body"] == "x" and seen.count("x") == 1]
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}

    pump = EventPump(
        session, eventbridge=[], sqs=[SqsSource(queue_url, arn, handler)], stream=None, schedule=None
    )
    pump.pump_once()
    assert sorted(seen) == ["x", "y"]
    assert not pump.pump_once()  # x is invisible, y was deleted
    time.sleep(1.5)

    pump.pump_once()

    assert sorted(seen) == ["x", "x", "y"]
    assert pump.delivered == 2

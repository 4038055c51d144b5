from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.domain.inbound_events import (
    DeploymentState,
    MalformedEvent,
    parse_artifact_event,
    parse_codedeploy_event,
)


def eventbridge(key: str, **object_fields: Any) -> dict[str, Any]:
    return {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": "b"}, "object": {"key": key, **object_fields}},
    }


def test_eventbridge_key_is_tried_raw_then_decoded() -> None:
    [upload] = parse_artifact_event(
        eventbridge("a/red+flower%21.zip", etag='"ABC"', **{"version-id": "v1"})
    ).uploads
    assert upload.key_candidates == ("a/red+flower%21.zip", "a/red flower!.zip")
    assert upload.version_id == "v1"
    assert upload.etag == "abc"


def test_eventbridge_accepts_moto_spelling_of_etag() -> None:
    [upload] = parse_artifact_event(eventbridge("a.zip", eTag="abc")).uploads
    assert upload.key_candidates == ("a.zip",)
    assert upload.etag == "abc"


def test_classic_key_is_form_decoded_and_non_created_records_skipped() -> None:
    records = [
        {
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "caf%C3%A9+1.zip"}},
        },
        {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "x"}}},
    ]
    parsed = parse_artifact_event({"Records": records})
    assert [u.key_candidates for u in parsed.uploads] == [("café 1.zip",)]
    assert parsed.skipped == []


def test_s3_test_event_yields_nothing() -> None:
    parsed = parse_artifact_event({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})
    assert (parsed.uploads, parsed.skipped) == ([], [])


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "expected a JSON object"),
        ({"hello": 1}, "neither an EventBridge S3 event"),
        ({"Type": "Notification", "Message": "{not json"}, "SNS notification Message is not JSON"),
        (
            {"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}},
            "detail-type must be 'Object Created'",
        ),
        (eventbridge(""), "detail.object.key must be a non-empty string"),
        ({"Records": "x"}, "Records must be a list"),
    ],
)
def test_malformed_artifact_events_say_why(event: Any, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        parse_artifact_event(event)


def classic(key: str) -> dict[str, Any]:
    return {
        "Records": [
            {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": key}}}
        ]
    }


def sqs_batch(*bodies: str) -> dict[str, Any]:
    """Lambda's SQS event: each record's body is the message as sent to the queue."""
    return {
        "Records": [
            {"messageId": f"m-{index}", "body": body, "eventSource": "aws:sqs", "awsRegion": "us-east-1"}
            for index, body in enumerate(bodies)
        ]
    }


def sns_envelope(message: dict[str, Any]) -> dict[str, Any]:
    """What SNS delivers to an SQS queue without raw message delivery."""
    return {
        "Type": "Notification",
        "MessageId": "n-1",
        "TopicArn": "arn:aws:sns:::t",
        "Message": json.dumps(message),
    }


def test_s3_notifications_arriving_through_sqs_are_unwrapped_record_by_record() -> None:
    event = sqs_batch(
        json.dumps(classic("a/one.zip")),
        json.dumps(eventbridge("a/two.zip")),
        json.dumps(sns_envelope(classic("a/three.zip"))),
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}),
    )
    parsed = parse_artifact_event(event)
    assert [u.key_candidates[0] for u in parsed.uploads] == ["a/one.zip", "a/two.zip", "a/three.zip"]
    assert parsed.skipped == []


def test_s3_notifications_arriving_through_sns_are_unwrapped() -> None:
    event = {"Records": [{"EventSource": "aws:sns", "Sns": sns_envelope(classic("a/red+flower.zip"))}]}
    [upload] = parse_artifact_event(event).uploads
    assert upload.key_candidates == ("a/red flower.zip",)


def test_one_bad_record_of_an_sqs_batch_is_skipped_with_why_and_the_others_count() -> None:
    event = sqs_batch(
        "{not json",
        json.dumps(classic("a/one.zip")),
        json.dumps({"hello": 1}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}, classic("a/two.zip")["Records"][0]]}),
    )
    parsed = parse_artifact_event(event)
    assert [u.key_candidates[0] for u in parsed.uploads] == ["a/one.zip", "a/two.zip"]
    assert len(parsed.skipped) == 3
    assert parsed.skipped[0].startswith("Records[0].body (SQS message m-0) is not JSON")
    assert parsed.skipped[1].startswith("Records[2].body (SQS message m-2): neither an EventBridge S3 event")
    assert (
        parsed.skipped[2]
        == "Records[3].body (SQS message m-3): Records[0].s3 must be an object, got NoneType"
    )


def test_envelopes_nest_no_deeper_than_aws_wires_them() -> None:
    inner = sqs_batch(json.dumps(sns_envelope(classic("a/one.zip"))))
    parsed = parse_artifact_event(sqs_batch(json.dumps(inner)))
    assert parsed.uploads == []
    assert "more envelopes than S3 -> SNS -> SQS -> Lambda" in parsed.skipped[0]


def codedeploy(**detail: Any) -> dict[str, Any]:
    return {"detail-type": "CodeDeploy Deployment State-change Notification", "detail": detail}


def test_codedeploy_state_change() -> None:
    change = parse_codedeploy_event(
        codedeploy(deploymentId="d-1", state="SUCCESS", application="a", deploymentGroup="g")
    )
    assert change is not None
    assert (change.deployment_id, change.state) == ("d-1", DeploymentState.SUCCESS)


def test_instance_events_are_not_release_events() -> None:
    assert parse_codedeploy_event({"detail-type": "CodeDeploy Instance State-change Notification"}) is None


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            codedeploy(deploymentId="d", state="EXPLODED", application="a", deploymentGroup="g"),
            "detail.state must be",
        ),
        (codedeploy(state="START", application="a", deploymentGroup="g"), "detail.deploymentId"),
        ({"detail-type": "Other"}, "detail-type must be"),
        ("text", "expected a JSON object"),
    ],
)
def test_malformed_codedeploy_events_say_why(event: Any, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        parse_codedeploy_event(event)

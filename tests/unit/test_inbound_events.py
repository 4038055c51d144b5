from __future__ import annotations

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

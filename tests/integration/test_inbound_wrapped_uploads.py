"""Issue 11 item 15: S3 -> SQS -> Lambda (and EventBridge -> SQS -> Lambda) is a valid wiring.

The bodies are the messages moto's S3 itself put on the fixture's queues (the classic
notification queue and the EventBridge rule's queue), in Lambda's SQS event shape.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib import bootstrap
from chalicelib.domain.release import ReleaseState
from tests.integration.conftest import World


def sqs_event(world: World, *bodies: Any) -> dict[str, Any]:
    return dict(
        world.client.events.generate_sqs_event(
            message_bodies=[body if isinstance(body, str) else json.dumps(body) for body in bodies],
            queue_name="artifact-uploads",
        )
    )


def test_classic_and_eventbridge_notifications_in_an_sqs_batch_deploy(world: World) -> None:
    first = world.upload("api/prod/app-1.zip")
    second = world.upload("web/prod/site-1.zip")

    result = world.deliver_upload(sqs_event(world, first.classic, "{not json", second.eventbridge))

    assert [r["state"] for r in result["releases"]] == ["DEPLOYING", "DEPLOYING"]
    assert len(result["skipped"]) == 1
    assert "is not JSON" in result["skipped"][0]
    assert [d["revision"]["s3Location"]["version"] for d in world.deployments()] == [first.version_id]
    assert [d["revision"]["s3Location"]["key"] for d in world.deployments("web", "web-prod")] == [
        "web/prod/site-1.zip"
    ]
    # The same messages again (SQS is at least once): nothing deploys twice.
    again = world.deliver_upload(sqs_event(world, first.classic, second.eventbridge))
    assert [r["id"] for r in again["releases"]] == [r["id"] for r in result["releases"]]
    assert len(world.deployments()) == 1


def test_the_s3_test_event_through_sqs_is_ignored(world: World) -> None:
    [test_event] = world.s3_test_events
    assert world.deliver_upload(sqs_event(world, test_event)) == {"releases": [], "skipped": []}


def test_an_upload_that_fails_lets_the_others_through_and_the_retry_deploys_it(world: World) -> None:
    failing = world.upload("api/prod/app-1.zip")
    passing = world.upload("web/prod/site-1.zip")
    s3 = bootstrap.wiring().artifacts._client  # type: ignore[attr-defined]

    def unavailable(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == failing.key:
            raise ClientError({"Error": {"Code": "503", "Message": "Slow Down"}}, "HeadObject")

    s3.meta.events.register("provide-client-params.s3.HeadObject", unavailable)
    event = sqs_event(world, failing.classic, passing.classic)
    with pytest.raises(ClientError, match="Slow Down"):
        world.deliver_upload(event)
    s3.meta.events.unregister("provide-client-params.s3.HeadObject", unavailable)
    [started] = world.deployments("web", "web-prod")
    assert world.deployments() == []

    retried = world.deliver_upload(event)  # the batch comes back after its visibility timeout

    assert [r["state"] for r in retried["releases"]] == ["DEPLOYING", "DEPLOYING"]
    assert len(world.deployments()) == 1
    assert world.deployments("web", "web-prod") == [started]
    assert {world.release(r["id"]).state for r in retried["releases"]} == {ReleaseState.DEPLOYING}

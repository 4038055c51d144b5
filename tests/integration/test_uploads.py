"""S3 upload -> exactly one CodeDeploy deployment of exactly that object version."""

from __future__ import annotations

import pytest

from chalicelib.domain.release import EventType, ReleaseState, Revision, Trigger, upload_release_id
from tests.integration.conftest import BUCKET, World

HOSTILE_KEYS = [
    "api/prod/red flower.zip",
    "api/prod/v1.2+build.7.zip",
    "api/prod/café-ünïcode 版本.zip",
    "api/prod/50%+off & more.tar.gz",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_eventbridge_upload_deploys_exactly_that_object_version(world: World, key: str) -> None:
    upload = world.upload(key, metadata={"commit": "9f1c2e3", "author": "ana", "version-label": "1.2.0"})

    result = world.deliver_upload(upload.eventbridge)

    [created] = result["releases"]
    assert created["state"] == "DEPLOYING"
    [deployment] = world.deployments()
    location = deployment["revision"]["s3Location"]
    assert location["bucket"] == BUCKET
    assert location["key"] == key
    assert location["version"] == upload.version_id
    assert location["eTag"] == upload.etag
    assert location["bundleType"] == ("tgz" if key.endswith(".tar.gz") else "zip")
    assert deployment["deploymentConfigName"] == "CodeDeployDefault.HalfAtATime"
    release = world.release(created["id"])
    assert release.deployment_id == deployment["deploymentId"]
    assert release.trigger is Trigger.UPLOAD
    assert release.revision.key == key
    assert dict(release.metadata) == {"commit": "9f1c2e3", "author": "ana", "version_label": "1.2.0"}


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_classic_notification_of_the_same_upload_is_the_same_release(world: World, key: str) -> None:
    upload = world.upload(key)

    first = world.deliver_upload(upload.classic)
    second = world.deliver_upload(upload.eventbridge)

    assert first["releases"][0]["id"] == second["releases"][0]["id"]
    assert first["releases"][0]["id"] == upload_release_id(
        Revision(bucket=BUCKET, key=key, version=upload.version_id, etag=upload.etag)
    )
    assert len(world.deployments()) == 1


def test_s3_test_event_is_ignored(world: World) -> None:
    [test_event] = world.s3_test_events
    assert test_event["Event"] == "s3:TestEvent"

    assert world.deliver_upload(test_event) == {"releases": [], "skipped": []}
    assert world.deployments() == []


def test_same_upload_delivered_three_times_makes_one_deployment(world: World) -> None:
    upload = world.upload("api/prod/app-1.0.zip")

    ids = {world.deliver_upload(upload.eventbridge)["releases"][0]["id"] for _ in range(3)}

    assert len(ids) == 1
    assert len(world.deployments()) == 1
    history = world.history(ids.pop())
    assert [event.type for event in history] == [
        EventType.EXECUTION_STARTED,
        EventType.STATE_ENTERED,
        EventType.TASK_STARTED,
    ]


def test_upload_outside_every_prefix_is_ignored(world: World) -> None:
    upload = world.upload("docs/readme.zip")

    assert world.deliver_upload(upload.eventbridge) == {"releases": [], "skipped": []}
    assert world.deployments() == []


def test_object_that_is_not_a_bundle_fails_with_the_reason(world: World) -> None:
    upload = world.upload("api/prod/notes.txt")

    [created] = world.deliver_upload(upload.eventbridge)["releases"]

    release = world.release(created["id"])
    assert release.state is ReleaseState.FAILED
    assert "not a CodeDeploy bundle" in release.reason
    assert world.deployments() == []


def test_malformed_events_are_skipped_with_the_reason(world: World) -> None:
    bad = {"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {}}}

    result = world.deliver_upload(bad)

    assert result["releases"] == []
    assert "detail.bucket.name" in result["skipped"][0]


def test_classic_notification_skips_a_bad_record_and_keeps_the_good_one(world: World) -> None:
    upload = world.upload("api/prod/app-2.0.zip")
    event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}, *upload.classic["Records"]]}

    result = world.deliver_upload(event)

    assert len(result["releases"]) == 1
    assert "Records[0].s3.bucket" in result["skipped"][0]
    assert len(world.deployments()) == 1


def test_object_deleted_before_the_event_arrives_is_skipped(world: World) -> None:
    upload = world.upload("api/prod/gone.zip")
    world.session.client("s3").delete_object(Bucket=BUCKET, Key=upload.key, VersionId=upload.version_id)

    assert world.deliver_upload(upload.eventbridge)["releases"] == []
    assert world.deployments() == []

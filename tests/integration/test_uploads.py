"""S3 upload -> exactly one CodeDeploy deployment of exactly that object version."""

from __future__ import annotations

import json
import logging

import pytest
from botocore.stub import Stubber

from chalicelib import bootstrap
from chalicelib.domain.release import EventType, ReleaseState, Revision, Trigger, upload_release_id
from chalicelib.service.ports import ArtifactAccessDenied
from tests.integration.conftest import BUCKET, TABLE, HandlerCall, LogLines, World

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


def test_a_repeated_delivery_is_settled_on_one_lane_read_without_asking_s3(
    world: World, handler_calls: list[HandlerCall]
) -> None:
    """The event names the object version, so the release id is known before S3 is asked: the
    lane read that a new upload decides on also tells a repeat, which needs nothing more."""
    upload = world.upload("api/prod/app-1.0.zip")
    first = len(handler_calls)
    [release] = world.deliver_upload(upload.eventbridge)["releases"]
    again = len(handler_calls)

    assert world.deliver_upload(upload.eventbridge)["releases"] == [release]

    operations = [call.operation for call in handler_calls]
    assert operations[first:again] == [
        "BatchGetItem",
        "HeadObject",
        "TransactWriteItems",
        "CreateDeployment",
        "TransactWriteItems",
    ]
    assert operations[again:] == ["BatchGetItem"]


def test_upload_outside_every_prefix_is_ignored(world: World) -> None:
    upload = world.upload("docs/readme.zip")

    assert upload.eventbridge_event is None  # the template's rules match the pipelines' prefixes only
    # A classic notification of the whole bucket still reaches the handler, which ignores it.
    assert world.deliver_upload(upload.classic) == {"releases": [], "skipped": []}
    assert world.deployments() == []


@pytest.mark.parametrize(
    "key",
    [
        "api/prod/app-1.zip.sha256",  # CI's checksum beside the bundle
        "api/prod/",  # the empty "folder" object the S3 console creates
        "api/prod/README",
        "api/prod/notes.txt",
    ],
)
def test_an_upload_that_is_not_a_bundle_is_skipped_and_notifies_no_one(
    world: World, key: str, caplog: pytest.LogCaptureFixture, handler_calls: list[HandlerCall]
) -> None:
    upload = world.upload(key)
    before = len(handler_calls)

    assert upload.eventbridge_event is None  # the template's rules match bundle suffixes only
    # A classic notification of the whole prefix still reaches the handler, which skips it.
    assert world.deliver_upload(upload.classic) == {"releases": [], "skipped": []}

    assert world.store.list_releases("api-prod", 10, None) == []  # no release, so no notification
    assert world.deployments() == []
    [skipped] = [r for r in caplog.records if "not a CodeDeploy bundle" in r.getMessage()]
    assert skipped.levelno == logging.INFO
    assert [c.operation for c in handler_calls[before:]] == []  # decided before any AWS call


def test_s3_denying_the_bundle_is_loud_and_keeps_the_event(
    world: World, caplog: pytest.LogCaptureFixture, log_lines: LogLines
) -> None:
    """A 403 is a permission the role lacks (with s3:ListBucket a missing key is a 404): an
    ERROR line, the ArtifactAccessDenied metric, and the invocation fails so that Lambda's
    asynchronous retries and then the function's failure queue keep the event."""
    upload = world.upload("api/prod/app-1.zip")
    s3 = bootstrap.wiring().artifacts._client  # type: ignore[attr-defined]
    log_lines.take()

    with Stubber(s3) as stub:
        # HeadObject has no body: S3's 403 reaches botocore as the bare status.
        stub.add_client_error("head_object", "403", "Forbidden", 403)
        with pytest.raises(ArtifactAccessDenied, match="403"):
            world.deliver_upload(upload.eventbridge)

    # The handler's own "event is retried" line follows; this one says what to grant.
    [denied] = [r for r in caplog.records if r.levelno == logging.ERROR and "s3:ListBucket" in r.getMessage()]
    assert (denied.bucket, denied.key) == (BUCKET, "api/prod/app-1.zip")  # type: ignore[attr-defined]
    [metric] = [json.loads(line) for line in log_lines.take().splitlines() if '"_aws"' in line]
    [directive] = metric["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "ReleaseCoordinator"
    assert [sorted(names) for names in directive["Dimensions"]] == [["coordinator", "service"]]
    assert directive["Metrics"] == [{"Name": "ArtifactAccessDenied", "Unit": "Count"}]
    assert (metric["service"], metric["coordinator"]) == ("release-coordinator", TABLE)
    assert metric["ArtifactAccessDenied"] == [1.0]
    assert world.store.list_releases("api-prod", 10, None) == []

    # Lambda's retry, once the permission is fixed, deploys the upload.
    [created] = world.deliver_upload(upload.eventbridge)["releases"]
    assert world.release(created["id"]).state is ReleaseState.DEPLOYING


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

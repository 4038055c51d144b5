"""Uploads deploy in the order S3 stored them, not the order their events arrive (issue 12,
fault 3): the handler of upload v1 dies before its slot write, v2 (stored a second later) takes
the slot and succeeds, and v1's retry, arriving later, must not deploy over v2."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.domain.release import ReleaseState, Trigger
from chalicelib.domain.slot import UploadMark
from sandbox import moto_extensions
from tests.integration.conftest import BUCKET, World


class LambdaDied(BaseException):
    """The function timed out or ran out of memory right here."""


def die_before_the_slot_write(world: World) -> None:
    dynamodb = bootstrap.wiring().store._client  # type: ignore[attr-defined]

    def hook(**_: Any) -> None:
        raise LambdaDied("TransactWriteItems")

    dynamodb.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", hook)


def next_second() -> None:
    """S3's LastModified has whole seconds: let the clock pass into the next one."""
    time.sleep(1.05 - datetime.now(UTC).microsecond / 1_000_000)


def test_an_older_upload_whose_event_comes_late_is_superseded_not_deployed(world: World) -> None:
    v1 = world.upload("api/prod/app-1.zip")
    next_second()
    v2 = world.upload("api/prod/app-2.zip")
    die_before_the_slot_write(world)
    with pytest.raises(LambdaDied):
        world.deliver_upload(v1.eventbridge)
    bootstrap.reset()  # the next invocation runs in a new container

    [newer] = world.deliver_upload(v2.eventbridge)["releases"]
    deployment_id = world.release(newer["id"]).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Succeeded")
    world.codedeploy_event(deployment_id, "SUCCESS")
    assert world.release(newer["id"]).state is ReleaseState.SUCCEEDED

    [older] = world.deliver_upload(v1.eventbridge)["releases"]  # Lambda's retry, a minute later

    release = world.release(older["id"])
    assert release.state is ReleaseState.SUPERSEDED
    assert release.reason.startswith(f"superseded by the newer upload {newer['id']}: S3 stored this one at")
    assert [d["revision"]["s3Location"]["key"] for d in world.deployments()] == ["api/prod/app-2.zip"]
    slot = world.store.get_slot("api-prod")
    assert (slot.active, slot.last_good) == (None, newer["id"])

    # An operator who wants the older build deploys it explicitly; that is not an upload.
    response = world.client.http.post(
        "/releases",
        headers={"content-type": "application/json", "Idempotency-Key": "deploy-old-build"},
        body=json.dumps({"pipeline": "api-prod", "key": v1.key, "version": v1.version_id}),
    )
    assert response.status_code == 201, response.body
    explicit = json.loads(response.body)
    assert (explicit["trigger"], explicit["state"]) == (Trigger.API.value, ReleaseState.DEPLOYING.value)


def test_waiting_uploads_deploy_in_the_order_s3_stored_them(world: World) -> None:
    """Queue policy: v3's event overtakes v2's while v1 deploys; v2 still goes before v3."""
    v1 = world.upload("api/prod/app-1.zip")
    next_second()
    v2 = world.upload("api/prod/app-2.zip")
    next_second()
    v3 = world.upload("api/prod/app-3.zip")

    ids = [world.deliver_upload(u.eventbridge)["releases"][0]["id"] for u in (v1, v3, v2)]
    assert [world.release(i).state for i in ids] == [ReleaseState.DEPLOYING, *[ReleaseState.QUEUED] * 2]
    assert world.store.get_slot("api-prod").waiting == (ids[2], ids[1])

    for _ in ids:
        [active] = moto_extensions.active_deployments("api", "api-prod")
        moto_extensions.complete(active, "Succeeded")
        world.codedeploy_event(active, "SUCCESS")

    keys = [d["revision"]["s3Location"]["key"] for d in world.deployments()]
    assert keys == ["api/prod/app-1.zip", "api/prod/app-2.zip", "api/prod/app-3.zip"]
    stored_at = world.session.client("s3").head_object(Bucket=BUCKET, Key=v3.key)["LastModified"]
    slot = world.store.get_slot("api-prod")
    assert (slot.last_good, slot.newest_started) == (ids[1], UploadMark(ids[1], stored_at))

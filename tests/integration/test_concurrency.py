"""Twenty uploads at one pipeline from concurrent threads, against the moto server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest

import app as chalice_app
from chalicelib import bootstrap
from chalicelib.domain.release import EventType, ReleaseState
from sandbox import moto_extensions
from tests.integration.conftest import World

UPLOADS = 20


def fire_concurrently(world: World, prefix: str) -> list[str]:
    # S3 stores all twenty in one second (LastModified has whole seconds), so none is older than
    # the one that starts first: admission follows arrival, which is what races here.
    one_second = datetime.now(UTC).replace(microsecond=0)
    with mock.patch("moto.s3.models.utcnow", return_value=one_second):
        uploads = [world.upload(f"{prefix}app-{n:02d}.zip") for n in range(UPLOADS)]
    bootstrap.wiring()  # wire the clients once, as a warm container would, before the burst

    def deliver(event: dict[str, Any]) -> str:
        # The app's own entry point, called the way Lambda calls it.
        result = chalice_app.on_artifact_event(event, None)
        return str(result["releases"][0]["id"])

    with ThreadPoolExecutor(max_workers=UPLOADS) as pool:
        return list(pool.map(deliver, [upload.eventbridge for upload in uploads]))


def run_codedeploy_to_the_end(world: World, application: str, group: str) -> list[str]:
    """Play CodeDeploy: finish whatever is active, tell the coordinator, until nothing is left.
    Returns the release ids in the order they were deployed."""
    deployed: list[str] = []
    for _ in range(UPLOADS + 1):
        active = moto_extensions.active_deployments(application, group)
        assert len(active) <= 1, f"two active deployments for one group: {active}"
        if not active:
            return deployed
        release_id = world.store.release_for_deployment(active[0])
        assert release_id is not None
        deployed.append(release_id)
        moto_extensions.complete(active[0], "Succeeded")
        world.codedeploy_event(active[0], "SUCCESS", application, group)
    pytest.fail("deployments did not run out")


def assert_never_refused_by_codedeploy(world: World, release_ids: list[str]) -> None:
    """The coordinator itself kept to one deployment at a time: CodeDeploy never had to refuse."""
    for release_id in release_ids:
        assert EventType.TASK_FAILED not in {event.type for event in world.history(release_id)}


@pytest.mark.timeout(120)
def test_queue_policy_deploys_every_upload_once_in_admission_order(served_world: World) -> None:
    release_ids = fire_concurrently(served_world, "api/prod/")

    assert len(set(release_ids)) == UPLOADS
    slot = served_world.store.get_slot("api-prod")
    admitted = [slot.active, *slot.waiting]
    assert sorted(admitted) == sorted(release_ids)  # type: ignore[type-var]
    states = [served_world.release(r).state for r in release_ids]
    assert states.count(ReleaseState.DEPLOYING) == 1
    assert states.count(ReleaseState.QUEUED) == UPLOADS - 1

    deployed = run_codedeploy_to_the_end(served_world, "api", "api-prod")

    assert deployed == admitted
    assert {served_world.release(r).state for r in release_ids} == {ReleaseState.SUCCEEDED}
    assert len(served_world.deployments()) == UPLOADS
    assert_never_refused_by_codedeploy(served_world, release_ids)


@pytest.mark.timeout(120)
def test_supersede_policy_deploys_the_first_and_the_newest_waiting(served_world: World) -> None:
    release_ids = fire_concurrently(served_world, "web/prod/")

    slot = served_world.store.get_slot("web-prod")
    assert slot.active is not None
    assert len(slot.waiting) == 1

    deployed = run_codedeploy_to_the_end(served_world, "web", "web-prod")

    assert deployed == [slot.active, slot.waiting[0]]
    states = {r: served_world.release(r).state for r in release_ids}
    assert [r for r, state in states.items() if state is ReleaseState.SUCCEEDED] == [
        r for r in release_ids if r in deployed
    ]
    assert list(states.values()).count(ReleaseState.SUPERSEDED) == UPLOADS - 2
    assert_never_refused_by_codedeploy(served_world, release_ids)

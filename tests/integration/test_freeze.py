"""Freeze windows hold releases (issue 14) on moto: an upload during a freeze waits with the
freeze's reason and end, a newer one supersedes it, rollbacks run, and reconcile starts the
newest waiting release once the freeze is over, not before."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from chalicelib.domain.api_requests import DeployRequest
from chalicelib.domain.inbound_events import DeploymentState, DeploymentStateChanged, parse_artifact_event
from chalicelib.domain.release import Release, ReleaseState, Trigger, rollback_release_id
from chalicelib.service.deployment_events import handle_deployment_event
from chalicelib.service.lane_commands import roll_back_pipeline
from chalicelib.service.reconcile import reconcile
from chalicelib.service.release_commands import deploy
from chalicelib.service.uploads import handle_upload
from chalicelib.service.wiring import Wiring
from sandbox import moto_extensions
from tests.integration import conftest
from tests.integration.conftest import World
from tests.integration.test_recovery import ManualClock, direct_wiring

REASON = "Thanksgiving traffic"
# ManualClock starts at 2026-11-26T09:00Z; api-prod is frozen from 10:00 to 12:00 UTC that day.
FREEZE = {
    "reason": REASON,
    "starts_at": "2026-11-26T10:00:00+00:00",
    "ends_at": "2026-11-26T12:00:00+00:00",
}
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    """The shared pipelines file, with api-prod (on_busy = "queue") frozen for two hours."""
    text = conftest.PIPELINES_TOML.replace(
        'deployment_group = "api-prod"\n',
        'deployment_group = "api-prod"\n'
        "[[pipeline.freeze]]\n"
        f'reason = "{REASON}"\n'
        "start = 2026-11-26T10:00:00\n"
        "end = 2026-11-26T12:00:00\n",
    )
    assert text != conftest.PIPELINES_TOML
    path = tmp_path / "pipelines.toml"
    path.write_text(text, encoding="utf-8")
    return path


def upload(world: World, wiring: Wiring, key: str) -> Release:
    [created] = parse_artifact_event(world.upload(key).eventbridge).uploads
    release = handle_upload(wiring, created)
    assert release is not None
    return release


def codedeploy_ends(world: World, wiring: Wiring, release_id: str, status: str) -> None:
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, status)
    state = DeploymentState.SUCCESS if status == "Succeeded" else DeploymentState.FAILURE
    handle_deployment_event(wiring, DeploymentStateChanged(deployment_id, state, "api", "api-prod"))


def succeeded_release(world: World, wiring: Wiring, key: str) -> str:
    release_id = upload(world, wiring, key).id
    codedeploy_ends(world, wiring, release_id, "Succeeded")
    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    return release_id


def assert_waits_for_the_freeze(world: World, release_id: str) -> None:
    release = world.release(release_id)
    assert release.state is ReleaseState.QUEUED
    assert release.deployment_id is None
    assert release.reason == f"pipeline frozen until 2026-11-26T12:00:00+00:00: {REASON}"
    queued = world.history(release_id)[-1]
    assert (queued.state, queued.detail["position"], queued.detail["freeze"]) == (
        ReleaseState.QUEUED,
        1,
        FREEZE,
    )


def test_uploads_wait_out_a_freeze_a_rollback_runs_and_the_newest_starts_at_its_end(world: World) -> None:
    clock = ManualClock()
    wiring = direct_wiring(world, clock)
    last_good = succeeded_release(world, wiring, "api/prod/app-1.zip")
    deploying = upload(world, wiring, "api/prod/app-2.zip").id
    assert world.release(deploying).state is ReleaseState.DEPLOYING

    clock.advance(timedelta(minutes=90))  # 10:30, frozen
    older = upload(world, wiring, "api/prod/app-3.zip").id
    assert_waits_for_the_freeze(world, older)
    newest = upload(world, wiring, "api/prod/app-4.zip").id
    assert_waits_for_the_freeze(world, newest)
    superseded = world.release(older)
    assert superseded.state is ReleaseState.SUPERSEDED  # though api-prod's on_busy is "queue"
    assert world.history(older)[-1].detail["superseded_by"] == newest

    # The release that started before the freeze fails: its automatic rollback runs at once.
    codedeploy_ends(world, wiring, deploying, "Failed")
    rollback = world.release(rollback_release_id(deploying))
    assert (rollback.trigger, rollback.state) == (Trigger.AUTO_ROLLBACK, ReleaseState.DEPLOYING)
    assert rollback.deployment_id is not None
    assert rollback.metadata["rolled_back_to"] == last_good
    codedeploy_ends(world, wiring, rollback.id, "Succeeded")
    slot = world.store.get_slot("api-prod")
    assert (slot.active, slot.waiting) == (None, (newest,))  # the freeze holds the free slot
    assert_waits_for_the_freeze(world, newest)

    clock.advance(timedelta(minutes=89, seconds=59))  # 11:59:59, still frozen
    assert reconcile(wiring) == {}
    assert world.release(newest).state is ReleaseState.QUEUED
    assert len(world.deployments()) == 3  # app-1, app-2 and the rollback

    clock.advance(timedelta(seconds=1))  # 12:00, the freeze is over
    assert reconcile(wiring) == {"api-prod": {"promoted": newest}}
    started = world.release(newest)
    assert started.state is ReleaseState.DEPLOYING
    assert started.deployment_id == world.deployments()[-1]["deploymentId"]
    assert len(world.deployments()) == 4


def test_a_manual_rollback_runs_during_a_freeze_and_an_api_deploy_waits(world: World) -> None:
    clock = ManualClock()
    wiring = direct_wiring(world, clock)
    first = succeeded_release(world, wiring, "api/prod/app-1.zip")
    succeeded_release(world, wiring, "api/prod/app-2.zip")
    pipeline = wiring.pipelines.named("api-prod")
    assert pipeline is not None

    clock.advance(timedelta(minutes=90))  # 10:30, frozen
    waiting = deploy(wiring, DeployRequest("api-prod", "api/prod/app-2.zip", None, None), "ana", "api-ana-1")
    assert_waits_for_the_freeze(world, waiting.release.id)
    rollback, created = roll_back_pipeline(wiring, pipeline, first, "ana", "rollback-ana-1")

    assert created
    assert world.release(rollback.id).state is ReleaseState.DEPLOYING
    assert world.release(rollback.id).deployment_id == world.deployments()[-1]["deploymentId"]
    assert world.release(waiting.release.id).state is ReleaseState.QUEUED

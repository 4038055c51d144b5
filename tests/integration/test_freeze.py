"""Freeze windows hold releases (issue 14) on moto: an upload during a freeze waits with the
freeze's reason and end, a newer one supersedes it, rollbacks run, and the newest waiting release
starts when the freeze is over, not before: by the lane's wake-up on the verify queue, or by
reconcile when the wake-up was lost."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib import lambda_handlers
from chalicelib.adapters.sqs_queues import SqsVerifyQueue
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
from tests.integration.test_bad_input import sqs_event
from tests.integration.test_recovery import ManualClock, direct_wiring
from tests.unit.test_verification import sqs_max_delay_s

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


def test_break_glass_deploys_during_a_freeze_recorded_with_actor_reason_and_the_freeze(world: World) -> None:
    clock = ManualClock()
    wiring = direct_wiring(world, clock)
    succeeded_release(world, wiring, "api/prod/app-1.zip")
    world.upload("api/prod/app-2.zip", metadata={"break_glass": "not from S3"})

    clock.advance(timedelta(minutes=90))  # 10:30, frozen
    held = upload(world, wiring, "api/prod/app-2.zip")
    assert held.state is ReleaseState.QUEUED  # an object's metadata breaks no glass
    request = DeployRequest("api-prod", "api/prod/app-2.zip", None, None, break_glass="checkout is down")
    started = deploy(wiring, request, "arn:aws:iam::123456789012:user/ana", "api-ana-bg").release

    assert started.state is ReleaseState.DEPLOYING
    assert started.deployment_id == world.deployments()[-1]["deploymentId"]
    assert started.metadata["break_glass"] == "checkout is down"
    [entered] = [event for event in world.history(started.id) if "break_glass" in event.detail]
    assert entered.state is ReleaseState.DEPLOYING
    assert entered.detail["break_glass"] == {
        "reason": "checkout is down",
        "actor": "arn:aws:iam::123456789012:user/ana",
        "freeze": FREEZE,
    }
    # The upload that waited is still waiting for the freeze, behind the break-glass release.
    assert world.release(held.id).state is ReleaseState.QUEUED


class SentMessages:
    """The verify queue's messages as the coordinator sends them (body, DelaySeconds), read from
    SendMessage's parameters: moto would hold a delayed message for real seconds, while the
    test's clock jumps."""

    def __init__(self, world: World, clock: ManualClock) -> None:
        sqs = world.session.client("sqs")
        self.sent: list[tuple[dict[str, Any], int]] = []
        sqs.meta.events.register("provide-client-params.sqs.SendMessage", self._record)
        self.wiring = replace(
            direct_wiring(world, clock), verify_queue=SqsVerifyQueue(sqs, world.provisioned.verify_queue_url)
        )

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.sent.append((json.loads(params["MessageBody"]), int(params["DelaySeconds"])))

    def wake_ups(self) -> list[tuple[dict[str, Any], int]]:
        return [(body, delay_s) for body, delay_s in self.sent if body.get("kind") == "wake"]

    def deliver(self, body: dict[str, Any]) -> None:
        """The verify queue's Lambda receives one message, as SQS hands it over."""
        result = lambda_handlers.verify_messages(self.wiring, sqs_event([json.dumps(body)]))
        assert result == {"batchItemFailures": []}


def test_the_newest_waiting_release_starts_at_the_end_of_the_freeze_by_its_wake_up(world: World) -> None:
    clock = ManualClock()
    queue = SentMessages(world, clock)
    wiring = queue.wiring
    clock.advance(timedelta(minutes=30))  # 09:30, frozen from 10:00 to 12:00
    upload(world, wiring, "api/prod/app-0.zip")
    assert queue.wake_ups() == []  # it took the slot: nothing waits

    clock.advance(timedelta(minutes=60))  # 10:30, frozen; app-0 still deploying
    codedeploy_ends(world, wiring, world.store.get_slot("api-prod").active or "", "Succeeded")
    older = upload(world, wiring, "api/prod/app-1.zip").id
    clock.advance(timedelta(minutes=1))
    newest = upload(world, wiring, "api/prod/app-2.zip").id
    assert world.release(older).state is ReleaseState.SUPERSEDED
    assert_waits_for_the_freeze(world, newest)

    # One wake-up for the lane, though two uploads waited: the second left its due time as it was.
    [(wake, delay_s)] = queue.wake_ups()
    assert (wake["pipeline"], wake["due_at"], delay_s) == ("api-prod", FREEZE["ends_at"], sqs_max_delay_s())

    # SQS hands the wake-up over after its delay; until the freeze ends it only sends itself on.
    arrivals = 0
    while world.release(newest).state is ReleaseState.QUEUED:
        body, delay_s = queue.wake_ups()[-1]
        assert delay_s <= sqs_max_delay_s()
        clock.advance(timedelta(seconds=delay_s))
        queue.deliver(body)
        arrivals += 1

    assert clock.current.isoformat() == FREEZE["ends_at"]
    assert arrivals == 6  # sent at 10:30: arrives at 10:45, 11:00, 11:15, 11:30, 11:45 and 12:00
    started = world.release(newest)
    assert started.state is ReleaseState.DEPLOYING
    assert started.deployment_id == world.deployments()[-1]["deploymentId"]
    assert len(world.deployments()) == 2  # app-0, then app-2

    # SQS delivers at least once: the same wake-up again finds nothing to do.
    sent_before = len(queue.sent)
    queue.deliver(queue.wake_ups()[-1][0])
    assert len(world.deployments()) == 2
    assert len(queue.sent) == sent_before


def test_a_release_freed_during_the_freeze_wakes_the_lane_once_for_the_waiting_one(world: World) -> None:
    clock = ManualClock()
    queue = SentMessages(world, clock)
    wiring = queue.wiring
    deploying = upload(world, wiring, "api/prod/app-1.zip").id  # 09:00, before the freeze
    clock.advance(timedelta(minutes=90))  # 10:30, frozen
    waiting = upload(world, wiring, "api/prod/app-2.zip").id
    assert queue.wake_ups() == []  # app-1 holds the slot: its end hands the slot on

    codedeploy_ends(world, wiring, deploying, "Succeeded")  # 10:30: the freeze holds the free slot
    [(wake, _)] = queue.wake_ups()
    clock.advance(timedelta(minutes=90))  # 12:00
    queue.deliver(wake)
    assert world.release(waiting).state is ReleaseState.DEPLOYING


def test_a_lost_wake_up_is_made_good_by_reconcile_after_the_freeze(world: World) -> None:
    """SendMessage fails after the commit (the same as a crash between the two): the upload is
    recorded and waits, and reconcile starts it at its first run after the freeze."""
    clock = ManualClock()
    sqs = world.session.client("sqs")
    wiring = replace(
        direct_wiring(world, clock), verify_queue=SqsVerifyQueue(sqs, world.provisioned.verify_queue_url)
    )

    def refuse(**_: Any) -> None:
        raise ConnectionError("SQS unreachable")

    sqs.meta.events.register("before-call.sqs.SendMessage", refuse)
    clock.advance(timedelta(minutes=90))  # 10:30, frozen
    waiting = upload(world, wiring, "api/prod/app-1.zip").id
    assert_waits_for_the_freeze(world, waiting)

    clock.advance(timedelta(minutes=95))  # 12:05
    assert reconcile(wiring) == {"api-prod": {"promoted": waiting}}
    assert world.release(waiting).deployment_id is not None


def test_a_malformed_wake_up_is_dropped_not_retried(world: World) -> None:
    queue = SentMessages(world, ManualClock())
    for body in (
        {"kind": "wake", "version": 99, "pipeline": "api-prod", "due_at": FREEZE["ends_at"]},
        {"kind": "wake", "version": 1, "pipeline": "api-prod", "due_at": "at noon"},
        {"kind": "nap", "pipeline": "api-prod"},
    ):
        queue.deliver(body)
    assert queue.sent == []
    assert world.store.get_slot("api-prod").active is None

"""Issue 12 fault 4: a delay of the coordinator's own (a check whose handler died, a lost check
re-sent by reconcile) never fails a release whose targets are healthy. The deadline judges the
targets, not the coordinator's message timing.

The pipeline uses the default verify settings, so the deadline comes from the provisioned target
group's short health-check settings (interval 5 s, healthy threshold 2, deregistration delay 5 s:
about 80 s). The first check comes back only after the verify queue's visibility timeout, as the
template sets it, or when the 5-minute reconcile re-sends it: both past that deadline.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from app import app
from chalicelib.domain.inbound_events import DeploymentState
from chalicelib.domain.pipelines import PipelinesConfig, VerifySettings
from chalicelib.domain.release import ReleaseState, rollback_release_id
from chalicelib.domain.verification import VerifyRequest
from chalicelib.service.deployment_events import apply_deployment_state
from chalicelib.service.reconcile import reconcile
from chalicelib.service.verification import run_check
from chalicelib.service.wiring import Wiring
from infra.render import batch_sizes
from infra.sizing import function_sizing
from sandbox import moto_extensions
from tests.integration.conftest import LOAD_BALANCED, World
from tests.integration.test_recovery import ManualClock, direct_wiring
from tests.integration.test_verification import health_checks, upload_and_deploy, verified

# How long SQS keeps a crashed check invisible: the verify queue's visibility, as the template sets it.
QUEUE_VISIBILITY_S = function_sizing(batch_sizes(app))["on_verify_message"].visibility_timeout_s

# The reconcile function's schedule (app.py: Rate(5, unit=Rate.MINUTES)).
RECONCILE_EVERY = timedelta(minutes=5)


def with_default_verify_settings(context: Wiring) -> Wiring:
    pipelines = tuple(
        replace(p, verify=VerifySettings()) if p.name == LOAD_BALANCED else p
        for p in context.pipelines.pipelines
    )
    return replace(context, pipelines=PipelinesConfig(pipelines))


def start_verifying(world: World) -> tuple[str, str, ManualClock, Wiring]:
    """A previous release verified (so a verification failure would roll a healthy deploy back),
    then a second one deployed by CodeDeploy and verifying with the default settings."""
    verified(world, "1.0.0")
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    clock = ManualClock()
    clock.current = world.release(release_id).updated_at
    context = with_default_verify_settings(direct_wiring(world, clock))
    moto_extensions.complete(deployment_id, "Succeeded")
    apply_deployment_state(context, release_id, deployment_id, DeploymentState.SUCCESS)
    verification = world.release(release_id).verification
    assert verification is not None
    assert verification.deadline - clock.current < timedelta(seconds=QUEUE_VISIBILITY_S)
    return release_id, deployment_id, clock, context


def assert_verified_without_rollback(world: World, release_id: str) -> None:
    release = world.release(release_id)
    assert release.state is ReleaseState.SUCCEEDED, release.reason
    assert world.store.get_release(rollback_release_id(release_id)) is None
    assert world.store.get_slot(LOAD_BALANCED).last_good == release_id


def check(release_id: str, deployment_id: str, number: int) -> VerifyRequest:
    """The verify queue's message for that check (moto's SQS waits out DelaySeconds in real
    time; this clock is the test's)."""
    return VerifyRequest(release_id, deployment_id, number)


@pytest.mark.timeout(180)
def test_fault_4_first_check_crashed_and_back_after_the_visibility_timeout_verifies_healthy_targets(
    world: World,
) -> None:
    release_id, deployment_id, clock, context = start_verifying(world)
    verification = world.release(release_id).verification
    assert verification is not None
    first = check(release_id, deployment_id, 1)  # received: in flight until the visibility timeout
    clock.advance(timedelta(seconds=verification.interval_s))  # due
    elbv2 = context.load_balancing._client  # type: ignore[attr-defined]

    def die(**_: Any) -> None:
        raise SystemExit("Lambda timed out before DescribeTargetHealth")  # no cleanup runs

    elbv2.meta.events.register("before-call.elastic-load-balancing-v2.DescribeTargetHealth", die)
    with pytest.raises(SystemExit):
        run_check(context, first)
    elbv2.meta.events.unregister("before-call.elastic-load-balancing-v2.DescribeTargetHealth", die)

    # SQS gives the message back once its visibility timeout has run out: past the deadline.
    clock.advance(timedelta(seconds=QUEUE_VISIBILITY_S))
    assert clock.current > verification.deadline
    run_check(context, first)
    assert world.release(release_id).state is ReleaseState.VERIFYING
    clock.advance(timedelta(seconds=verification.interval_s))
    run_check(context, check(release_id, deployment_id, 2))

    assert_verified_without_rollback(world, release_id)
    late, on_time = health_checks(world, release_id)
    assert late["outcome"] == "continue"
    assert late["past_deadline"] is True
    assert late["late_s"] >= QUEUE_VISIBILITY_S
    assert "late_s" not in on_time


@pytest.mark.timeout(180)
def test_fault_4_lost_first_check_resent_by_reconcile_verifies_healthy_targets(world: World) -> None:
    release_id, deployment_id, clock, context = start_verifying(world)
    verification = world.release(release_id).verification  # its first check's message is lost
    assert verification is not None

    clock.advance(RECONCILE_EVERY)
    assert reconcile(context) == {LOAD_BALANCED: {"resent_checks": [release_id]}}
    assert clock.current > verification.deadline
    [resent] = [m for m in world.verify_messages(wait_s=0) if m["check"] == 1]
    run_check(context, VerifyRequest.from_message(resent))
    clock.advance(timedelta(seconds=verification.interval_s))
    run_check(context, check(release_id, deployment_id, 2))

    assert_verified_without_rollback(world, release_id)
    assert [c["past_deadline"] for c in health_checks(world, release_id)] == [True, True]


@pytest.mark.timeout(180)
def test_a_late_check_still_fails_targets_that_are_not_healthy(world: World) -> None:
    release_id, deployment_id, clock, context = start_verifying(world)
    verification = world.release(release_id).verification
    assert verification is not None
    arn = world.provisioned.load_balanced[LOAD_BALANCED].target_group_arn
    sick = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0]
    clock.current = verification.deadline + timedelta(seconds=QUEUE_VISIBILITY_S)
    moto_extensions.set_target_health(arn, sick, "unhealthy", "Target.Timeout", "Request timed out")
    try:
        run_check(context, check(release_id, deployment_id, 1))
    finally:
        moto_extensions.clear_target_health()

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(f"verify_failed: not healthy by the deadline: {sick} unhealthy")
    [recorded] = health_checks(world, release_id)
    assert (recorded["outcome"], recorded["past_deadline"]) == ("timed_out", True)
    assert recorded["late_s"] >= QUEUE_VISIBILITY_S
    assert world.release(rollback_release_id(release_id)).state is ReleaseState.DEPLOYING

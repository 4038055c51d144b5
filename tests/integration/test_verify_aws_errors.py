"""Issue 11 item 9: every error ELBv2 can answer during verification has a defined outcome, and a
release never stays VERIFYING (or DEPLOYING) with nothing scheduled to move it.

The errors are read from botocore's elbv2 model at test time (each operation's ``errors``, with
the wire code and HTTP status the model gives), plus throttling and server errors the model does
not list; botocore's Stubber plays them, since moto cannot. What the model calls a sender fault
can never succeed on retry: verification fails now, naming AWS's code, and rolls back. A server
error is retried after the interval, and past the deadline the release fails naming the code.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NamedTuple

import botocore.session
import pytest
from botocore.stub import Stubber

from chalicelib import bootstrap
from chalicelib.domain.inbound_events import DeploymentState
from chalicelib.domain.release import EventType, ReleaseState, rollback_release_id
from chalicelib.domain.verification import VerifyRequest
from chalicelib.service.deployment_events import apply_deployment_state
from chalicelib.service.reconcile import reconcile
from chalicelib.service.verification import run_check
from sandbox import moto_extensions
from tests.integration.conftest import LOAD_BALANCED, World
from tests.integration.test_recovery import ManualClock, direct_wiring
from tests.integration.test_verification import health_checks, upload_and_deploy, verified


class AwsError(NamedTuple):
    code: str
    status: int
    sender_fault: bool


def modeled_errors(operation: str) -> list[AwsError]:
    model = botocore.session.get_session().get_service_model("elbv2").operation_model(operation)
    return [
        AwsError(
            shape.metadata["error"]["code"],
            int(shape.metadata["error"]["httpStatusCode"]),
            bool(shape.metadata["error"].get("senderFault")),
        )
        for shape in model.error_shapes
    ]


# Not in the operation's model but answered by every AWS API: throttling (ELBv2 is a query
# protocol service: code "Throttling", HTTP 400) and server errors.
COMMON_TRANSIENT = [
    AwsError("Throttling", 400, False),
    AwsError("InternalFailure", 500, False),
    AwsError("ServiceUnavailable", 503, False),
]
HEALTH_ERRORS = modeled_errors("DescribeTargetHealth") + COMMON_TRANSIENT
GROUP_ERRORS = modeled_errors("DescribeTargetGroups") + COMMON_TRANSIENT


def test_the_model_lists_the_errors_this_suite_expects_to_see() -> None:
    """A guard that the sweep below is not empty: the codes the reviewed AWS docs name."""
    codes = {error.code for error in modeled_errors("DescribeTargetHealth")}
    assert {"InvalidTarget", "TargetGroupNotFound", "HealthUnavailable"} <= codes
    assert "TargetGroupNotFound" in {error.code for error in modeled_errors("DescribeTargetGroups")}


def verifying(world: World) -> tuple[str, str, ManualClock, Any]:
    verified(world, "1.0.0")  # a good release to roll back to
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    clock = ManualClock()
    clock.current = world.release(release_id).updated_at
    context = direct_wiring(world, clock)
    moto_extensions.complete(deployment_id, "Succeeded")
    apply_deployment_state(context, release_id, deployment_id, DeploymentState.SUCCESS)
    assert world.release(release_id).state is ReleaseState.VERIFYING
    assert [m["check"] for m in world.verify_messages()] == [1]  # delivered by the test below
    return release_id, deployment_id, clock, context


def stubbed(context: Any) -> Stubber:
    return Stubber(context.load_balancing._client)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("error", HEALTH_ERRORS, ids=lambda error: error.code)
def test_describe_target_health_errors_end_or_retry_verification(world: World, error: AwsError) -> None:
    release_id, deployment_id, clock, context = verifying(world)
    verification = world.release(release_id).verification
    assert verification is not None
    clock.advance(timedelta(seconds=verification.interval_s))

    with stubbed(context) as stub:
        stub.add_client_error("describe_target_health", error.code, "from the test", error.status)
        run_check(context, VerifyRequest(release_id, deployment_id, 1))

    release = world.release(release_id)
    [recorded] = health_checks(world, release_id)
    assert f"ELBv2 {error.code}: from the test" in recorded["error"]
    if error.sender_fault:
        assert release.state is ReleaseState.FAILED
        assert release.reason.startswith(
            f"verify_failed: cannot verify deployment {deployment_id}: ELBv2 {error.code}: from the test"
        )
        assert world.release(rollback_release_id(release_id)).state is ReleaseState.DEPLOYING
        return
    # Transient: the check is recorded, the streak restarts and the next check is scheduled.
    assert release.state is ReleaseState.VERIFYING
    assert (recorded["outcome"], recorded["streak"]) == ("continue", 0)
    assert [m["check"] for m in world.verify_messages()] == [2]
    # Still failing past the deadline: the release ends, naming the code.
    clock.current = verification.deadline
    with stubbed(context) as stub:
        stub.add_client_error("describe_target_health", error.code, "from the test", error.status)
        run_check(context, VerifyRequest(release_id, deployment_id, 2))
    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(
        f"verify_failed: target health still unreadable at the deadline: ELBv2 {error.code}: from the test"
    )
    assert world.history(release_id)[-1].detail["error_code"] == error.code
    assert world.release(rollback_release_id(release_id)).state is ReleaseState.DEPLOYING


@pytest.mark.timeout(120)
def test_a_transient_error_then_healthy_targets_verifies(world: World) -> None:
    release_id, deployment_id, _, context = verifying(world)
    with stubbed(context) as stub:
        stub.add_client_error("describe_target_health", "HealthUnavailable", "try later", 500)
        run_check(context, VerifyRequest(release_id, deployment_id, 1))
    for check in (2, 3):
        run_check(context, VerifyRequest(release_id, deployment_id, check))

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    assert [c["outcome"] for c in health_checks(world, release_id)] == ["continue", "continue", "verified"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("error", GROUP_ERRORS, ids=lambda error: error.code)
def test_describe_target_groups_errors_fail_or_leave_it_to_the_retry(world: World, error: AwsError) -> None:
    verified(world, "1.0.0")
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    clock = ManualClock()
    context = direct_wiring(world, clock)
    moto_extensions.complete(deployment_id, "Succeeded")

    with stubbed(context) as stub:
        stub.add_client_error("describe_target_groups", error.code, "from the test", error.status)
        if error.sender_fault:
            apply_deployment_state(context, release_id, deployment_id, DeploymentState.SUCCESS)
        else:
            with pytest.raises(Exception, match=error.code):
                apply_deployment_state(context, release_id, deployment_id, DeploymentState.SUCCESS)

    release = world.release(release_id)
    if error.sender_fault:
        assert release.state is ReleaseState.FAILED
        assert release.reason.startswith(
            f"verify_failed: cannot verify deployment {deployment_id}: ELBv2 {error.code}: from the test"
        )
        assert world.history(release_id)[-1].detail["error_code"] == error.code
        assert world.release(rollback_release_id(release_id)).state is ReleaseState.DEPLOYING
        return
    # The event fails (Lambda retries it) and the release stays DEPLOYING; reconcile, which
    # runs every 5 minutes, asks CodeDeploy and verifies it.
    assert release.state is ReleaseState.DEPLOYING
    assert reconcile(context)[LOAD_BALANCED]["applied"] == [release_id]
    assert world.release(release_id).state is ReleaseState.VERIFYING


@pytest.mark.timeout(120)
def test_a_deleted_target_group_fails_verification_on_moto_too(world: World) -> None:
    """moto, like AWS, answers DescribeTargetGroups(Names=[missing]) with TargetGroupNotFound."""
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    world.session.client("elbv2").delete_target_group(
        TargetGroupArn=world.provisioned.load_balanced[LOAD_BALANCED].target_group_arn
    )
    moto_extensions.complete(deployment_id, "Succeeded")
    world.codedeploy_event(deployment_id, "SUCCESS", "shop", "shop-prod")

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(
        f"verify_failed: cannot verify deployment {deployment_id}: ELBv2 TargetGroupNotFound:"
    )
    assert failed.reason.endswith("nothing to roll back to: no release of this pipeline was verified yet")
    assert world.store.get_slot(LOAD_BALANCED).active is None


@pytest.mark.timeout(120)
def test_the_verify_handler_reports_no_failure_for_an_elbv2_error(world: World) -> None:
    """The error is handled in the check (recorded, retried on schedule), not by SQS's
    redelivery: five of those would dead-letter the check and hold the slot."""
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    moto_extensions.complete(deployment_id, "Succeeded")
    world.codedeploy_event(deployment_id, "SUCCESS", "shop", "shop-prod")
    messages = world.verify_messages()

    with Stubber(bootstrap.wiring().load_balancing._client) as stub:  # type: ignore[attr-defined]
        stub.add_client_error("describe_target_health", "HealthUnavailable", "try later", 500)
        result = world.deliver_verify(messages)

    assert result == {"batchItemFailures": []}
    assert world.history(release_id)[-1].type is EventType.TASK_FAILED
    assert [m["check"] for m in world.verify_messages()] == [2]

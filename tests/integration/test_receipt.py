"""The zero-downtime receipt on moto: the load balancer's CloudWatch metrics (published as the ALB
would, with sandbox.load_balancer.publish) are read once when a release ends and recorded in its
terminal history event. moto's ALB publishes nothing and moto cannot refuse: the test publishes,
and botocore's Stubber plays CloudWatch's refusal."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from chalicelib.adapters.cloudwatch import CloudWatchMetrics
from chalicelib.domain.inbound_events import DeploymentState
from chalicelib.domain.release import ReleaseState
from chalicelib.domain.verification import VerifyRequest
from chalicelib.service.deployment_events import apply_deployment_state
from chalicelib.service.verification import run_check
from sandbox import load_balancer, moto_extensions
from sandbox.load_balancer import TrafficBucket, publish
from tests.integration import conftest
from tests.integration.conftest import LOAD_BALANCED, HandlerCall, World
from tests.integration.test_recovery import ManualClock, direct_wiring
from tests.integration.test_verification import fail, run_checks, succeed, upload_and_deploy


def attach_load_balancer(world: World) -> tuple[str, str]:
    """An ALB forwarding to the load-balanced pipeline's target group (the tests' moto has the
    target group only). Returns the load balancer's and the group's ARNs."""
    group_arn = world.provisioned.load_balanced[LOAD_BALANCED].target_group_arn
    return load_balancer.attach_load_balancer(world.session, group_arn, "shop"), group_arn


@pytest.fixture
def balanced(world: World) -> tuple[World, str, str]:
    balancer_arn, group_arn = attach_load_balancer(world)
    return world, balancer_arn, group_arn


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def publish_traffic(world: World, balancer_arn: str, group_arn: str, buckets: list[TrafficBucket]) -> None:
    publish(world.aws("cloudwatch"), buckets, balancer_arn, group_arn)


def rollout_and_baseline(now: datetime) -> list[TrafficBucket]:
    """The rollout's minute: 1,000 requests, 2 answered 502 by the load balancer, 1 target 500,
    one target unhealthy for a while; the baseline, 3 minutes before: 400 requests, 2 errors."""
    return [
        TrafficBucket(
            minute(now),
            requests=1000,
            elb_5xx=2,
            target_5xx=1,
            connection_errors=2,
            unhealthy_hosts=1,
            response_times_s=[0.010] * 900 + [0.120] * 100,
        ),
        TrafficBucket(
            minute(now) - timedelta(minutes=3),
            requests=400,
            target_5xx=2,
            response_times_s=[0.008] * 400,
        ),
    ]


def terminal_detail(world: World, release_id: str) -> dict[str, Any]:
    return dict(world.history(release_id)[-1].detail)


def test_a_verified_release_records_its_receipt_against_the_baseline(
    balanced: tuple[World, str, str],
) -> None:
    world, balancer_arn, group_arn = balanced
    publish_traffic(world, balancer_arn, group_arn, rollout_and_baseline(datetime.now(UTC)))
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")

    succeed(world, deployment_id)
    run_checks(world, 1)

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    receipt = terminal_detail(world, release_id)["receipt"]
    assert receipt["requests"] == 1000
    assert receipt["elb_5xx"] == 2
    assert receipt["target_5xx"] == 1
    assert receipt["connection_errors"] == 2
    assert receipt["rejected_connections"] == 0
    assert receipt["max_unhealthy_hosts"] == 1
    assert receipt["slowest_p90_ms"] == 10
    assert receipt["error_rate_ppm"] == 3000
    assert receipt["baseline_requests"] == 400
    assert receipt["baseline_error_rate_ppm"] == 5000
    # Read at the end of the rollout, before CloudWatch can have its last minute.
    assert receipt["so_far"] is True
    assert receipt["summary"] == (
        "3 load-balancer errors in 1,000 requests during rollout so far (baseline 0.50%); slowest p90 10 ms"
    )


def test_a_deployment_that_fails_records_its_receipt_too(balanced: tuple[World, str, str]) -> None:
    world, balancer_arn, group_arn = balanced
    publish_traffic(world, balancer_arn, group_arn, rollout_and_baseline(datetime.now(UTC)))
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    instance = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0]

    fail(world, deployment_id, instance)

    assert world.release(release_id).state is ReleaseState.FAILED
    failed = [event for event in world.history(release_id) if event.state is ReleaseState.FAILED]
    receipt = failed[0].detail["receipt"]
    assert (receipt["requests"], receipt["elb_5xx"], receipt["target_5xx"]) == (1000, 2, 1)


def test_a_stopped_deployment_records_its_receipt(balanced: tuple[World, str, str]) -> None:
    world, balancer_arn, group_arn = balanced
    publish_traffic(world, balancer_arn, group_arn, rollout_and_baseline(datetime.now(UTC)))
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")

    moto_extensions.complete(deployment_id, "Stopped")
    world.codedeploy_event(deployment_id, "STOP", "shop", "shop-prod")

    assert world.release(release_id).state is ReleaseState.STOPPED
    assert terminal_detail(world, release_id)["receipt"]["requests"] == 1000


def test_a_refused_metrics_read_leaves_the_receipt_unavailable_and_the_release_succeeds(
    balanced: tuple[World, str, str],
) -> None:
    world, _, _ = balanced
    release_id, deployment_id, _, cloudwatch, wiring = _checked_by_hand(world)

    with Stubber(cloudwatch) as stub:
        stub.add_client_error(
            "get_metric_data", "AccessDenied", "not authorized to perform cloudwatch:GetMetricData", 403
        )
        run_check(wiring, VerifyRequest(release_id, deployment_id, 2))
        stub.assert_no_pending_responses()

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    receipt = terminal_detail(world, release_id)["receipt"]
    assert receipt["unavailable"] == "AccessDenied: not authorized to perform cloudwatch:GetMetricData"
    assert "requests" not in receipt
    # The summary goes to Slack, mail and GitHub: the code only (a message may name the role).
    assert receipt["summary"] == "no load-balancer figures: CloudWatch did not answer (AccessDenied)"


def _checked_by_hand(world: World) -> tuple[str, str, ManualClock, Any, Any]:
    """A release whose verification began at CodeDeploy's success, on a clock the test moves and
    with the CloudWatch client the receipt reads (the test may stub it)."""
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    clock = ManualClock()
    clock.current = world.release(release_id).updated_at
    cloudwatch = world.session.client("cloudwatch")
    wiring = replace(direct_wiring(world, clock), traffic=CloudWatchMetrics(lambda: cloudwatch))
    moto_extensions.complete(deployment_id, "Succeeded")
    apply_deployment_state(wiring, release_id, deployment_id, DeploymentState.SUCCESS)
    return release_id, deployment_id, clock, cloudwatch, wiring


@pytest.mark.parametrize(("status", "permanent"), [("Forbidden", True), ("InternalError", False)])
def test_a_metric_result_cloudwatch_could_not_give_leaves_the_receipt_unavailable(
    balanced: tuple[World, str, str], status: str, permanent: bool
) -> None:
    world, _, _ = balanced
    release_id, deployment_id, _, cloudwatch, wiring = _checked_by_hand(world)
    failed_result = {
        "Id": "lb0_elb_5xx",
        "Timestamps": [],
        "Values": [],
        "StatusCode": status,
        "Messages": [{"Code": status, "Value": "no access to the namespace"}],
    }

    # GetMetricData answers 200 with a failed result: no data points, which must not read as
    # no traffic.
    with Stubber(cloudwatch) as stub:
        stub.add_response("get_metric_data", {"MetricDataResults": [failed_result]})
        run_check(wiring, VerifyRequest(release_id, deployment_id, 2))
        stub.assert_no_pending_responses()

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    receipt = terminal_detail(world, release_id)["receipt"]
    assert receipt["unavailable"] == f"{status}: query lb0_elb_5xx: {status}: no access to the namespace"
    assert receipt["summary"] == f"no load-balancer figures: CloudWatch did not answer ({status})"
    assert "requests" not in receipt


def test_a_receipt_read_minutes_after_the_rollout_ended_is_not_so_far(
    balanced: tuple[World, str, str],
) -> None:
    world, balancer_arn, group_arn = balanced
    release_id, deployment_id, clock, _, wiring = _checked_by_hand(world)
    ended_at = clock.now()
    publish_traffic(world, balancer_arn, group_arn, rollout_and_baseline(ended_at))

    # The second check, which verifies, runs 5 minutes after CodeDeploy's success.
    clock.advance(timedelta(minutes=5))
    run_check(wiring, VerifyRequest(release_id, deployment_id, 2))

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    receipt = terminal_detail(world, release_id)["receipt"]
    assert receipt["so_far"] is False
    # The rollout window ends with the rollout, not at the read.
    assert receipt["rollout"]["end"] == (minute(ended_at) + timedelta(minutes=1)).isoformat()
    assert receipt["requests"] == 1000


@pytest.mark.parametrize("pipelines_file", ["receipt = false\n"], indirect=True)
def test_with_the_receipt_off_no_metrics_are_read(
    balanced: tuple[World, str, str], handler_calls: list[HandlerCall]
) -> None:
    world, balancer_arn, group_arn = balanced
    publish_traffic(world, balancer_arn, group_arn, rollout_and_baseline(datetime.now(UTC)))
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    already = len(handler_calls)

    succeed(world, deployment_id)
    run_checks(world, 1)

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    assert "receipt" not in terminal_detail(world, release_id)
    assert not [call for call in handler_calls[already:] if call.operation == "GetMetricData"]


@pytest.fixture
def pipelines_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The shared pipelines file, with the verify lines a test names (indirect parametrization)."""
    extra = getattr(request, "param", "")
    text = conftest.PIPELINES_TOML.replace("deadline_s = 60\n", f"deadline_s = 60\n{extra}")
    path = tmp_path / "pipelines.toml"
    path.write_text(text, encoding="utf-8")
    return path

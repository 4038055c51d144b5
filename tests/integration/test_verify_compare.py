"""The baseline comparison after a bake (``verify.compare``), on moto: the load balancer's metrics,
put into moto's CloudWatch as the ALB would publish them (sandbox.load_balancer.publish), are read
at the check after the bake. A bake that doubles the baseline's error rate fails verify_failed
with both figures in the history and rolls back; one within the ratio verifies; too little
traffic passes or fails as configured; a throttled read is tried again at the next check.

The checks run on a clock the test moves through the bake (4 minutes, the shortest a comparison
takes), and the bake's traffic is published in a minute that CloudWatch would have settled by the
check after it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from chalicelib.adapters.cloudwatch import CloudWatchMetrics
from chalicelib.domain.inbound_events import DeploymentState
from chalicelib.domain.pipelines import MIN_COMPARED_BAKE_S
from chalicelib.domain.release import ReleaseState, rollback_release_id
from chalicelib.domain.traffic import SETTLING_S
from chalicelib.domain.verification import VerifyRequest
from chalicelib.service.deployment_events import apply_deployment_state
from chalicelib.service.verification import run_check
from chalicelib.service.wiring import Wiring
from sandbox import moto_extensions
from sandbox.load_balancer import TrafficBucket, publish
from tests.integration import conftest
from tests.integration.conftest import World
from tests.integration.test_receipt import attach_load_balancer, minute
from tests.integration.test_recovery import ManualClock, direct_wiring
from tests.integration.test_verification import health_checks, upload_and_deploy


@pytest.fixture
def pipelines_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """shop-prod bakes as briefly as a comparison allows and compares; ``request.param``: what too
    little traffic does. The deadline leaves time for a check after the bake's."""
    when = getattr(request, "param", "pass")
    text = conftest.PIPELINES_TOML.replace(
        "deadline_s = 60\n",
        f"deadline_s = 600\nbake_s = {MIN_COMPARED_BAKE_S}\n[pipeline.verify.compare]\n"
        f'error_rate_ratio = 2.0\nmin_requests = 100\nnot_enough_traffic = "{when}"\n',
    )
    path = tmp_path / "pipelines.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Checks:
    """shop-prod's health checks run by hand on a clock the test moves, with the CloudWatch client
    the receipt and the comparison read (a test may stub it)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.clock = ManualClock()
        self.cloudwatch = world.session.client("cloudwatch")
        self.wiring: Wiring = replace(
            direct_wiring(world, self.clock), traffic=CloudWatchMetrics(lambda: self.cloudwatch)
        )
        self.balancer_arn, self.group_arn = attach_load_balancer(world)

    def deploy_and_bake(self, version: str) -> tuple[str, str]:
        """Upload, CodeDeploy's success (the first check) and the second check: the streak is
        done, the bake begins at the clock's time."""
        release_id, deployment_id = upload_and_deploy(self.world, version)
        self.clock.current = self.world.release(release_id).updated_at
        moto_extensions.complete(deployment_id, "Succeeded")
        apply_deployment_state(self.wiring, release_id, deployment_id, DeploymentState.SUCCESS)
        run_check(self.wiring, VerifyRequest(release_id, deployment_id, 2))
        verification = self.world.release(release_id).verification
        assert verification is not None
        assert verification.baked
        return release_id, deployment_id

    def publish(self, at: datetime, requests: int, errors: int) -> None:
        bucket = TrafficBucket(at, requests=requests, target_5xx=errors, response_times_s=[0.02] * requests)
        publish(self.world.aws("cloudwatch"), [bucket], self.balancer_arn, self.group_arn)

    def publish_baseline(self, release_id: str, requests: int, errors: int) -> None:
        """Traffic two minutes before the release's rollout."""
        verification = self.world.release(release_id).verification
        assert verification is not None
        assert verification.rollout_started_at is not None
        self.publish(minute(verification.rollout_started_at) - timedelta(minutes=2), requests, errors)

    def publish_bake(self, requests: int, errors: int) -> None:
        """Traffic in the bake's first whole minute: settled by the check after the bake."""
        settled = minute(self.clock.now()) + timedelta(minutes=1)
        assert settled + timedelta(minutes=1, seconds=SETTLING_S) <= self.clock.now() + timedelta(
            seconds=MIN_COMPARED_BAKE_S
        )
        self.publish(settled, requests, errors)

    def after_bake(self, release_id: str, deployment_id: str, check: int = 3) -> None:
        """The check after the bake, when it is due."""
        self.clock.advance(timedelta(seconds=MIN_COMPARED_BAKE_S))
        run_check(self.wiring, VerifyRequest(release_id, deployment_id, check))


@pytest.fixture
def checks(world: World) -> Checks:
    return Checks(world)


def bake_with_traffic(checks: Checks, *, baseline: tuple[int, int], bake: tuple[int, int]) -> str:
    """Deploy shop-prod 2.0.0 after a verified 1.0.0, publish the baseline's (requests, target
    5xx) before the rollout and the bake's in the bake, and run the check after it."""
    _verified_through_bake(checks, "1.0.0")
    release_id, deployment_id = checks.deploy_and_bake("2.0.0")
    checks.publish_baseline(release_id, *baseline)
    checks.publish_bake(*bake)
    checks.after_bake(release_id, deployment_id)
    return release_id


def _verified_through_bake(checks: Checks, version: str) -> str:
    """The first release, with no traffic at all: too little to judge, which passes here."""
    release_id, deployment_id = checks.deploy_and_bake(version)
    checks.after_bake(release_id, deployment_id)
    assert checks.world.release(release_id).state is ReleaseState.SUCCEEDED
    return release_id


def comparison(world: World, release_id: str) -> dict[str, Any]:
    return dict(health_checks(world, release_id)[-1]["comparison"])


def test_a_bake_that_doubles_the_error_rate_fails_and_rolls_back(world: World, checks: Checks) -> None:
    release_id = bake_with_traffic(checks, baseline=(1000, 10), bake=(1000, 25))

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(
        "verify_failed: the bake did worse than the baseline window: error rate 2.50% during the bake "
        "against 1.00% before (limit 2.00%: verify.compare.error_rate_ratio = 2)"
    )
    judged = comparison(world, release_id)
    assert judged["verdict"] == "exceeded"
    assert judged["bake"] == {"requests": 1000, "errors": 25, "error_rate_ppm": 25000, "p90_ms": 20}
    assert judged["baseline"] == {"requests": 1000, "errors": 10, "error_rate_ppm": 10000, "p90_ms": 20}
    ended = world.history(release_id)[-1]
    assert ended.detail["failure"] == "verify_failed"
    # The receipt counts the rollout, which ended at CodeDeploy's success, before the bake's minute.
    assert ended.detail["receipt"]["target_5xx"] == 0
    assert world.release(rollback_release_id(release_id)).state is ReleaseState.DEPLOYING


def test_a_bake_within_the_ratio_verifies(world: World, checks: Checks) -> None:
    release_id = bake_with_traffic(checks, baseline=(1000, 10), bake=(1000, 15))

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    judged = comparison(world, release_id)
    assert (judged["verdict"], judged["passes"]) == ("within", True)
    assert judged["reason"] == "error rate 1.50% against 1.00% before, p90 20 ms against 20 ms"


@pytest.mark.parametrize(
    ("pipelines_file", "ends"),
    [("pass", ReleaseState.SUCCEEDED), ("fail", ReleaseState.FAILED)],
    indirect=["pipelines_file"],
)
def test_too_little_traffic_to_judge_passes_or_fails_as_configured(
    world: World, checks: Checks, ends: ReleaseState
) -> None:
    if ends is ReleaseState.FAILED:
        # The first release would fail too with no traffic at all: this test deploys one only.
        release_id, deployment_id = checks.deploy_and_bake("1.0.0")
        checks.publish_bake(50, 40)
        checks.after_bake(release_id, deployment_id)
    else:
        release_id = bake_with_traffic(checks, baseline=(1000, 10), bake=(50, 40))

    assert world.release(release_id).state is ends
    judged = comparison(world, release_id)
    assert judged["verdict"] == "not_enough_traffic"
    assert judged["reason"].startswith("not enough traffic to judge: 50 requests during the bake")


@pytest.mark.parametrize("pipelines_file", ["fail"], indirect=True)
def test_a_throttled_read_after_the_bake_is_tried_again_at_the_next_check(
    world: World, checks: Checks
) -> None:
    release_id, deployment_id = checks.deploy_and_bake("1.0.0")
    checks.publish_baseline(release_id, 1000, 10)
    checks.publish_bake(1000, 10)

    # CloudWatch throttles past botocore's retries: with not_enough_traffic = "fail" the empty
    # figures would fail a healthy release; it is checked again instead.
    with Stubber(checks.cloudwatch) as stub:
        stub.add_client_error("get_metric_data", "Throttling", "Rate exceeded", 400)
        checks.after_bake(release_id, deployment_id)
        stub.assert_no_pending_responses()
    assert world.release(release_id).state is ReleaseState.VERIFYING
    throttled = health_checks(world, release_id)[-1]
    assert throttled["outcome"] == "continue"
    assert throttled["comparison"]["unavailable"] == "Throttling: Rate exceeded"

    interval = timedelta(seconds=1)  # shop-prod's verify.interval_s
    checks.clock.advance(interval)
    run_check(checks.wiring, VerifyRequest(release_id, deployment_id, 4))

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    assert comparison(world, release_id)["verdict"] == "within"

"""The baseline comparison after a bake (``verify.compare``), on moto: the load balancer's metrics,
put into moto's CloudWatch as the ALB would publish them (sandbox.load_balancer.publish), are read
at the check after the bake. A bake that doubles the baseline's error rate fails verify_failed
with both figures in the history and rolls back; one within the ratio verifies; too little
traffic passes or fails as configured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.release import ReleaseState, rollback_release_id
from sandbox.load_balancer import TrafficBucket, publish
from tests.integration import conftest
from tests.integration.conftest import World
from tests.integration.test_receipt import attach_load_balancer, minute
from tests.integration.test_verification import health_checks, run_checks, succeed, upload_and_deploy


@pytest.fixture
def pipelines_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """shop-prod bakes for a second and compares; ``request.param``: what too little traffic does."""
    when = getattr(request, "param", "pass")
    text = conftest.PIPELINES_TOML.replace(
        "deadline_s = 60\n",
        "deadline_s = 60\nbake_s = 1\n[pipeline.verify.compare]\n"
        f'error_rate_ratio = 2.0\nmin_requests = 100\nnot_enough_traffic = "{when}"\n',
    )
    path = tmp_path / "pipelines.toml"
    path.write_text(text, encoding="utf-8")
    return path


def bake_with_traffic(world: World, *, baseline: tuple[int, int], bake: tuple[int, int]) -> str:
    """Deploy shop-prod 2.0.0 after a verified 1.0.0, publish the baseline's (requests, target
    5xx) before the rollout and the bake's once the bake has begun, and run the check after it."""
    balancer_arn, group_arn = attach_load_balancer(world)
    _verified_through_bake(world, "1.0.0")
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    succeed(world, deployment_id)
    run_checks(world, 1)  # the streak is done: the bake begins
    verification = world.release(release_id).verification
    assert verification is not None
    assert verification.baked
    assert verification.rollout_started_at is not None
    cloudwatch = world.aws("cloudwatch")
    requests, errors = baseline
    before = minute(verification.rollout_started_at) - timedelta(minutes=2)
    publish(
        cloudwatch,
        [TrafficBucket(before, requests=requests, target_5xx=errors, response_times_s=[0.02] * requests)],
        balancer_arn,
        group_arn,
    )
    requests, errors = bake
    during = datetime.now(UTC)
    publish(
        cloudwatch,
        [TrafficBucket(during, requests=requests, target_5xx=errors, response_times_s=[0.02] * requests)],
        balancer_arn,
        group_arn,
    )
    run_checks(world, 1)  # the check after the bake
    return release_id


def _verified_through_bake(world: World, version: str) -> str:
    """The first release, with no traffic at all: too little to judge, which passes here."""
    release_id, deployment_id = upload_and_deploy(world, version)
    succeed(world, deployment_id)
    run_checks(world, 2)
    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    return release_id


def comparison(world: World, release_id: str) -> dict[str, Any]:
    return dict(health_checks(world, release_id)[-1]["comparison"])


def test_a_bake_that_doubles_the_error_rate_fails_and_rolls_back(world: World) -> None:
    release_id = bake_with_traffic(world, baseline=(1000, 10), bake=(1000, 25))

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
    assert ended.detail["receipt"]["target_5xx"] == 25
    assert world.release(rollback_release_id(release_id)).state is ReleaseState.DEPLOYING


def test_a_bake_within_the_ratio_verifies(world: World) -> None:
    release_id = bake_with_traffic(world, baseline=(1000, 10), bake=(1000, 15))

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    judged = comparison(world, release_id)
    assert (judged["verdict"], judged["passes"]) == ("within", True)
    assert judged["reason"] == "error rate 1.50% against 1.00% before, p90 20 ms against 20 ms"


@pytest.mark.parametrize(
    ("pipelines_file", "ends"),
    [("pass", ReleaseState.SUCCEEDED), ("fail", ReleaseState.FAILED)],
    indirect=["pipelines_file"],
)
def test_too_little_traffic_to_judge_passes_or_fails_as_configured(world: World, ends: ReleaseState) -> None:
    if ends is ReleaseState.FAILED:
        # The first release would fail too with no traffic at all: this test deploys one only.
        release_id = _only_release_with_traffic(world, bake=(50, 40))
    else:
        release_id = bake_with_traffic(world, baseline=(1000, 10), bake=(50, 40))

    assert world.release(release_id).state is ends
    judged = comparison(world, release_id)
    assert judged["verdict"] == "not_enough_traffic"
    assert judged["reason"].startswith("not enough traffic to judge: 50 requests during the bake")


def _only_release_with_traffic(world: World, *, bake: tuple[int, int]) -> str:
    balancer_arn, group_arn = attach_load_balancer(world)
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    succeed(world, deployment_id)
    run_checks(world, 1)
    requests, errors = bake
    publish(
        world.aws("cloudwatch"),
        [TrafficBucket(datetime.now(UTC), requests=requests, target_5xx=errors)],
        balancer_arn,
        group_arn,
    )
    run_checks(world, 1)
    return release_id

"""The deployment-config arithmetic of the sandbox's CodeDeploy agent (sandbox/deployment_config.py):
batch sizes that keep the minimum of healthy instances, stopping after failures, and the outcome."""

from __future__ import annotations

import logging

import pytest

from sandbox.deployment_config import DeploymentConfig

CONFIGS = ("CodeDeployDefault.AllAtOnce", "CodeDeployDefault.HalfAtATime", "CodeDeployDefault.OneAtATime")


@pytest.mark.parametrize(
    ("config", "fleet", "batches"),
    [
        ("CodeDeployDefault.HalfAtATime", 1, 1),
        ("CodeDeployDefault.HalfAtATime", 2, 1),
        ("CodeDeployDefault.HalfAtATime", 4, 2),
        ("CodeDeployDefault.HalfAtATime", 5, 2),
        ("CodeDeployDefault.OneAtATime", 4, 1),
        ("CodeDeployDefault.AllAtOnce", 4, 4),
    ],
)
def test_batch_size_keeps_the_minimum_healthy(config: str, fleet: int, batches: int) -> None:
    assert DeploymentConfig.named(config).next_batch_size(fleet, fleet, 0, 0) == batches


@pytest.mark.parametrize(
    ("config", "fleet", "state", "next_size"),
    [
        # (untouched, succeeded, failed): a failure counts as unhealthy from then on.
        ("CodeDeployDefault.HalfAtATime", 2, (1, 0, 1), 0),
        ("CodeDeployDefault.HalfAtATime", 4, (2, 0, 2), 0),
        ("CodeDeployDefault.HalfAtATime", 4, (2, 1, 1), 1),
        ("CodeDeployDefault.OneAtATime", 3, (2, 0, 1), 0),
        ("CodeDeployDefault.AllAtOnce", 4, (0, 2, 2), 0),
    ],
)
def test_after_a_failure_only_batches_that_keep_the_minimum_healthy_go_on(
    config: str, fleet: int, state: tuple[int, int, int], next_size: int
) -> None:
    assert DeploymentConfig.named(config).next_batch_size(fleet, *state) == next_size


@pytest.mark.parametrize(
    ("config", "fleet", "succeeded", "skipped", "outcome"),
    [
        ("CodeDeployDefault.HalfAtATime", 4, 2, 0, True),  # at least half (rounded up)
        ("CodeDeployDefault.HalfAtATime", 3, 1, 0, False),
        ("CodeDeployDefault.OneAtATime", 3, 2, 0, True),  # only the last one failed: AWS's rule
        ("CodeDeployDefault.OneAtATime", 1, 0, 0, False),
        ("CodeDeployDefault.AllAtOnce", 4, 1, 0, True),
        ("CodeDeployDefault.HalfAtATime", 2, 1, 1, False),
    ],
)
def test_deployment_outcome_follows_the_config(
    config: str, fleet: int, succeeded: int, skipped: int, outcome: bool
) -> None:
    assert DeploymentConfig.named(config).succeeded(fleet, succeeded, skipped) is outcome


@pytest.mark.parametrize("config", CONFIGS)
def test_a_fleet_that_keeps_succeeding_is_deployed_whole_never_below_the_minimum(config: str) -> None:
    for fleet in range(1, 31):
        rules = DeploymentConfig.named(config)
        untouched, succeeded = fleet, 0
        while untouched:
            size = rules.next_batch_size(fleet, untouched, succeeded, 0)
            assert size >= 1, (fleet, untouched, succeeded)
            healthy_during_batch = untouched - size + succeeded
            # A single instance is deployed even though that leaves none healthy, as on AWS.
            assert healthy_during_batch >= rules.min_healthy(fleet) or fleet == 1, (fleet, untouched)
            untouched, succeeded = untouched - size, succeeded + size
        assert rules.succeeded(fleet, succeeded, skipped=0), fleet


@pytest.mark.parametrize("config", CONFIGS)
def test_after_a_failure_no_batch_takes_the_healthy_below_the_minimum(config: str) -> None:
    for fleet in range(1, 13):
        rules = DeploymentConfig.named(config)
        for failed in range(1, fleet + 1):
            for succeeded in range(fleet - failed + 1):
                untouched = fleet - failed - succeeded
                size = rules.next_batch_size(fleet, untouched, succeeded, failed)
                assert 0 <= size <= untouched, (fleet, untouched, succeeded, failed)
                if size:
                    healthy_during_batch = untouched - size + succeeded
                    assert healthy_during_batch >= rules.min_healthy(fleet), (fleet, failed, succeeded)


def test_the_codedeploydefault_prefix_is_optional() -> None:
    assert DeploymentConfig.named("HalfAtATime") == DeploymentConfig.named("CodeDeployDefault.HalfAtATime")


def test_a_config_not_modelled_runs_one_at_a_time_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sandbox.deployment_config"):
        config = DeploymentConfig.named("Custom.NinetyPercent")

    assert config == DeploymentConfig("OneAtATime")
    assert "Custom.NinetyPercent is not modelled locally" in caplog.text

"""The watchdog's judgment (pure) and its ``[pipeline.watchdog]`` limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.domain.pipelines import PipelinesConfigError, load_pipelines
from chalicelib.domain.watchdog import (
    CODEDEPLOY_HOOK_TIMEOUT,
    Finding,
    HookProgress,
    StuckClass,
    TargetProgress,
    WatchdogLimits,
    judge,
    stopped_by_watchdog,
)
from tests.unit.test_pipelines_config import VALID, write

START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
LIMITS = WatchdogLimits()


def pending(instance_id: str, since: datetime = START) -> TargetProgress:
    return TargetProgress(instance_id, "Pending", since, (HookProgress("ApplicationStop", "Pending"),))


def running(instance_id: str, hook: str, since: datetime = START) -> TargetProgress:
    return TargetProgress(
        instance_id,
        "InProgress",
        since,
        (HookProgress("ApplicationStop", "Succeeded", since), HookProgress(hook, "InProgress", since)),
    )


def test_every_instance_untouched_past_the_agent_timeout_is_an_agent_not_polling() -> None:
    targets = [pending("i-1"), pending("i-2")]

    assert judge(targets, LIMITS, START + timedelta(minutes=10)).stop is None  # not past it yet
    verdict = judge(targets, LIMITS, START + timedelta(minutes=10, seconds=1))

    assert verdict.stop is not None
    assert verdict.stop.kind is StuckClass.AGENT_NOT_POLLING
    assert (
        verdict.stop.next_step
        == "agent on i-1 (and 1 more) did not poll for 10 min: is codedeploy-agent running?"
    )


def test_the_agent_timeout_counts_from_the_latest_change_of_any_instance() -> None:
    targets = [pending("i-1"), pending("i-2", since=START + timedelta(minutes=8))]
    assert judge(targets, LIMITS, START + timedelta(minutes=15)).stop is None


def test_one_instance_at_work_means_the_agent_polls() -> None:
    targets = [running("i-1", "BeforeInstall"), pending("i-2")]
    assert judge(targets, LIMITS, START + timedelta(minutes=50)).stop is None


def test_no_targets_yet_is_no_verdict() -> None:
    assert judge([], LIMITS, START + timedelta(hours=3)) == judge([], LIMITS, START)
    assert judge([], LIMITS, START).stop is None


def test_a_hook_overruns_after_its_timeout_plus_the_margin() -> None:
    limits = WatchdogLimits(hook_timeout=timedelta(minutes=3), margin=timedelta(seconds=30))
    targets = [running("i-1", "ValidateService")]

    assert judge(targets, limits, START + timedelta(minutes=3, seconds=30)).stop is None
    verdict = judge(targets, limits, START + timedelta(minutes=3, seconds=31))

    assert verdict.stop is not None
    assert verdict.stop.kind is StuckClass.HOOK_OVERRUN
    assert verdict.stop.next_step.startswith(
        "ValidateService on i-1 has run 3 min, past its 3 min timeout + 30 s:"
    )
    assert verdict.stop.detail["limit_s"] == "210"


def test_a_failed_download_is_named_before_anything_else() -> None:
    download = TargetProgress(
        "i-2",
        "Failed",
        START,
        (HookProgress("DownloadBundle", "Failed", START, "Access Denied\nRequest id ..."),),
    )
    targets = [running("i-1", "ValidateService"), download]

    verdict = judge(targets, LIMITS, START + timedelta(hours=2))

    assert verdict.stop is not None
    assert verdict.stop.kind is StuckClass.DOWNLOAD_FAILED
    assert verdict.stop.next_step.startswith("DownloadBundle failed on i-2: Access Denied: can the instance")


def test_instances_added_are_those_not_seen_before_and_stop_nothing() -> None:
    targets = [running("i-1", "BeforeInstall"), running("i-2", "BeforeInstall"), pending("i-3")]

    assert judge(targets, LIMITS, START).added is None  # the first look: what is there is the start
    verdict = judge(targets, LIMITS, START, known_instances={"i-1", "i-2"})

    assert verdict.stop is None
    assert verdict.added is not None
    assert verdict.added.kind is StuckClass.INSTANCE_ADDED
    assert verdict.added.detail == {"instances": "i-3"}
    assert judge(targets, LIMITS, START, known_instances={"i-1", "i-2", "i-3"}).added is None


def test_the_stop_decision_round_trips_through_the_release_metadata() -> None:
    finding = Finding(StuckClass.HOOK_OVERRUN, "look at the script")
    assert stopped_by_watchdog(finding.as_metadata()) == finding
    assert stopped_by_watchdog({}) is None
    assert stopped_by_watchdog({"watchdog_class": "from_the_future", "watchdog_next_step": "x"}) is None


def test_the_watchdog_defaults(tmp_path: Path) -> None:
    [pipeline] = load_pipelines(write(tmp_path, VALID)).pipelines
    assert pipeline.watchdog == WatchdogLimits(
        enabled=True,
        agent_timeout=timedelta(minutes=10),
        hook_timeout=CODEDEPLOY_HOOK_TIMEOUT,
        margin=timedelta(minutes=5),
    )


def test_the_watchdog_limits_load(tmp_path: Path) -> None:
    text = VALID + '[pipeline.watchdog]\nagent_timeout = "3m"\nhook_timeout = "20m"\nmargin = "0s"\n'
    [pipeline] = load_pipelines(write(tmp_path, text)).pipelines
    assert pipeline.watchdog == WatchdogLimits(
        agent_timeout=timedelta(minutes=3), hook_timeout=timedelta(minutes=20), margin=timedelta(0)
    )
    off = load_pipelines(write(tmp_path, VALID + "[pipeline.watchdog]\nenabled = false\n")).pipelines[0]
    assert off.watchdog.enabled is False


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('agent_timeout = "0s"', "key 'watchdog.agent_timeout': must be longer than 0s"),
        ('hook_timeout = "61m"', "key 'watchdog.hook_timeout': must be at most 3600s"),
        ("margin = 300", "key 'watchdog.margin': must be days, hours, minutes and seconds"),
        ('enabled = "yes"', "key 'watchdog.enabled': must be true or false"),
        ("stuck_after = 1", "key 'watchdog.stuck_after': unknown key"),
    ],
)
def test_invalid_watchdog_limits_fail_at_load(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(PipelinesConfigError, match=message):
        load_pipelines(write(tmp_path, f"{VALID}[pipeline.watchdog]\n{table}\n"))

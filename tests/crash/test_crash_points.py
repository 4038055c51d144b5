"""Exactly once when a Lambda dies at any point (issue 12): every handler invocation of each
scenario killed just before each of its AWS and Slack calls, and after its last one, then AWS
redelivering as the template configures it; the four faults' named cases; a randomized pass with
crashes plus duplicated, delayed and lost events. Known failures: ``tests/crash/known_faults.py``.

Environment: ``CRASH_RANDOM_RUNS`` (random runs, default 20), ``CRASH_RANDOM_SEED`` (first seed,
default 0; a failing run prints its seed: rerun it with ``CRASH_RANDOM_SEED=<seed>
CRASH_RANDOM_RUNS=1``), ``CRASH_WORKERS`` (processes, default 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.crash.harness import CrashPoint
from tests.crash.known_faults import KNOWN_FAULTS
from tests.crash.scenarios import SCENARIOS
from tests.crash.sweep import (
    InvocationTrace,
    Point,
    PointResult,
    Sweep,
    SweepResults,
    _point_result,
    baselines,
    in_child,
    points_of,
    run_sweep,
)

RANDOM_RUNS = int(os.environ.get("CRASH_RANDOM_RUNS", "20"))
RANDOM_SEED = int(os.environ.get("CRASH_RANDOM_SEED", "0"))
WORKERS = max(1, int(os.environ.get("CRASH_WORKERS", "2")))
# The whole sweep runs in the first item that needs it; the random pass grows with its runs.
SWEEP_TIMEOUT_S = 1200
RANDOM_TIMEOUT_S = 600 + 10 * RANDOM_RUNS

# The uncrashed run of each scenario, at collection: it says which points there are.
TRACES: dict[str, list[InvocationTrace]] = baselines()
POINTS: list[Point] = [point for name in SCENARIOS for point in points_of(name, TRACES[name])]
# What the run's summary line says (tests/crash/conftest.py).
STATS: dict[str, Any] = {
    "invocations": sum(len(trace) for trace in TRACES.values()),
    "points": len(POINTS),
    "checked": 0,
    "broken": [],
    "known": [],
    "random": [],
    "random_excused": [],
    "seconds": 0.0,
}


def _case(name: str, value: Any) -> Any:
    """A pytest parameter, strict-xfailed when the known faults list names it."""
    faults = [known.fault for known in KNOWN_FAULTS if name in known.cases]
    marks = [pytest.mark.xfail(strict=True, reason="; ".join(faults))] if faults else []
    return pytest.param(value, id=name, marks=marks)


def _failure(result: PointResult) -> str:
    if result.error:
        return f"{result.name}: the run itself failed: {result.error}"
    return f"{result.name}: {len(result.violations)} invariant(s) broken\n{result.story}"


@pytest.fixture(scope="module")
def swept() -> SweepResults:
    results = run_sweep(TRACES, workers=WORKERS, random_seeds=[])
    STATS["seconds"] += results.seconds
    return results


@pytest.fixture(scope="module")
def random_pass() -> SweepResults:
    seeds = list(range(RANDOM_SEED, RANDOM_SEED + RANDOM_RUNS))
    results = run_sweep(TRACES, workers=WORKERS, random_seeds=seeds, sweep_points=False)
    STATS["seconds"] += results.seconds
    return results


@pytest.mark.timeout(SWEEP_TIMEOUT_S)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_uncrashed_run_holds_every_invariant(scenario: str, swept: SweepResults) -> None:
    assert not swept.nondeterministic, (
        f"uncrashed runs differ from the baseline (the forked points are not the points counted): "
        f"{swept.nondeterministic}"
    )
    result = swept.points[f"{scenario}/uncrashed"]
    assert result.error is None, _failure(result)
    assert not result.violations, _failure(result)


@pytest.mark.timeout(SWEEP_TIMEOUT_S)
@pytest.mark.parametrize("point", [_case(point.name, point) for point in POINTS])
def test_crash_point(point: Point, swept: SweepResults) -> None:
    result = swept.points[point.name]
    STATS["checked"] += 1
    if result.error is not None or result.violations:
        listed = any(point.name in known.cases for known in KNOWN_FAULTS)
        STATS["known" if listed else "broken"].append(point.name)
    assert result.error is None, _failure(result)
    assert not result.violations, _failure(result)


# Points whose forked result is checked against a run from scratch: a crash in the upload's
# handler, in a health check, in a notification delivery, in the Slack interactions route after
# it queued the click (the user clicks again), in the Slack actions worker before it approves, and
# in the soak's wake-up before it writes the promotion (reconcile makes it).
FROM_SCRATCH = (
    "second_upload_queues/on_artifact_event#1/before dynamodb.TransactWriteItems#1",
    "one_upload/on_verify_message#1/before elbv2.DescribeTargetHealth#1",
    "one_upload/on_notify_message#2/before slack.chat.postMessage#1",
    "approval_from_slack/api_handler#1/after last call",
    "approval_from_slack/on_slack_action#1/before dynamodb.TransactWriteItems#1",
    "promotion_after_soak/on_verify_message#1/before dynamodb.TransactWriteItems#1",
)


@pytest.mark.timeout(SWEEP_TIMEOUT_S)
def test_forked_points_are_the_runs_from_scratch(swept: SweepResults) -> None:
    """The sweep forks the uncrashed run just before a point's invocation instead of replaying
    it; a run from scratch with the same crash point must end the same way."""
    chosen = [point for point in POINTS if point.name in FROM_SCRATCH]
    assert len(chosen) == len(FROM_SCRATCH), [point.name for point in chosen]

    def work() -> list[PointResult]:
        sweep = Sweep()
        try:
            import time

            answers = []
            for point in chosen:
                started = time.perf_counter()
                outcome = sweep.run(SCENARIOS[point.scenario], (point.crash_point,))
                answers.append(_point_result(point.name, outcome, started))
            return answers
        finally:
            sweep.close()

    for from_scratch in in_child(work):
        forked = swept.points[from_scratch.name]
        # (A point that stands for equal ones tells its story with their first call.)
        assert (forked.violations, forked.invocations) == (
            from_scratch.violations,
            from_scratch.invocations,
        ), f"{from_scratch.name}: forked\n{forked.story}\nfrom scratch\n{from_scratch.story}"


def test_known_faults_name_existing_cases() -> None:
    """A listed case that no longer exists (its fix changed the calls) must go from the list."""
    existing = {point.name for point in POINTS} | {f"named/{name}" for name in NAMED_CASES}
    stale = sorted(case for known in KNOWN_FAULTS for case in known.cases if case not in existing)
    assert not stale, f"remove from tests/crash/known_faults.py, these cases no longer exist: {stale}"


# --- the named cases of issue 12 ------------------------------------------------------------


def _after(trace: list[InvocationTrace], function: str, calls: tuple[str, ...]) -> CrashPoint:
    """Die right after the first run of ``calls`` in ``function``'s invocations: before the
    next call, or after the last one."""
    for number, invocation in enumerate(trace, start=1):
        if invocation.function != function:
            continue
        for start in range(len(invocation.calls) - len(calls) + 1):
            if invocation.calls[start : start + len(calls)] == calls:
                following = start + len(calls) + 1
                return CrashPoint(number, following if following <= len(invocation.calls) else None)
    raise AssertionError(f"no {function} invocation makes {calls}: {trace}")


def _before(trace: list[InvocationTrace], function: str, occurrence: int, call: str | None) -> CrashPoint:
    """Die before ``function``'s ``occurrence``-th invocation's first ``call`` (None: its first)."""
    for number, invocation in enumerate(trace, start=1):
        if invocation.function == function and invocation.occurrence == occurrence:
            index = 1 if call is None else invocation.calls.index(call) + 1
            return CrashPoint(number, index)
    raise AssertionError(f"no {function}#{occurrence}: {trace}")


NamedCase = tuple[str, Callable[[list[InvocationTrace]], CrashPoint], str]
NAMED_CASES: dict[str, NamedCase] = {
    # Fault 1: the card is posted; the process dies before the thread is stored on the release.
    "duplicate_slack_root_card": (
        "one_upload",
        lambda trace: _after(trace, "on_notify_message", ("slack.chat.postMessage",)),
        "slack_root_duplicate",
    ),
    # Fault 2: the card is edited and the reply posted; the process dies before the delivery is
    # confirmed.
    "duplicate_slack_reply": (
        "one_upload",
        lambda trace: _after(trace, "on_notify_message", ("slack.chat.update", "slack.chat.postMessage")),
        "slack_reply_duplicate",
    ),
    # Fault 3: v1's handler dies before its slot write; v2, uploaded a second later, deploys and
    # succeeds; v1's retry comes 60 s later.
    "older_upload_served": (
        "second_upload_queues",
        lambda trace: _before(trace, "on_artifact_event", 1, "dynamodb.TransactWriteItems"),
        "served_not_newest",
    ),
    # Fault 4: the first health check dies; SQS hands it back after the queue's visibility
    # timeout, past the deadline the default verify settings derive from the target group.
    "healthy_release_failed_late": (
        "one_upload",
        lambda trace: _before(trace, "on_verify_message", 1, None),
        "healthy_failed_verification",
    ),
    # The API request holding the Idempotency-Key dies; the CLI repeats it with the same key.
    "api_retry_refused_after_crash": (
        "cancel_deploying",
        lambda trace: _before(trace, "api_handler", 1, "codedeploy.StopDeployment"),
        "api_retry_refused",
    ),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", [_case(f"named/{name}", name) for name in NAMED_CASES])
def test_named_crash_case(case: str) -> None:
    """Each fault's own case, run from scratch in a process of its own."""
    scenario, point_of, breaks = NAMED_CASES[case]
    point = point_of(TRACES[scenario])

    def work() -> PointResult:
        sweep = Sweep()
        try:
            import time

            started = time.perf_counter()
            return _point_result(f"named/{case}", sweep.run(SCENARIOS[scenario], (point,)), started)
        finally:
            sweep.close()

    result: PointResult = in_child(work)
    assert result.error is None, result.error
    assert breaks not in result.kinds, _failure(result)
    assert not result.violations, _failure(result)


# --- the randomized pass --------------------------------------------------------------------


@pytest.mark.timeout(RANDOM_TIMEOUT_S)
def test_random_crashes_with_duplicated_delayed_and_lost_events(random_pass: SweepResults) -> None:
    """Violations that only a listed known fault explains are counted, not failed (they turn
    into failures once the fault's entry is removed); anything else fails with its seed."""
    excusable = {kind for known in KNOWN_FAULTS for kind in known.breaks}
    failures = []
    for random_result in random_pass.randoms:
        result = random_result.result
        STATS["random"].append(random_result.seed)
        if result.error is None and not result.violations:
            continue
        if result.error is None and result.kinds <= excusable:
            STATS["random_excused"].append(random_result.seed)
            continue
        failures.append(f"seed {random_result.seed} ({random_result.scenario}):\n{_failure(result)}")
    assert not failures, "\n\n".join(failures)

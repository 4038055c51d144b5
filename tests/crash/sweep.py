"""The crash-point sweep: an uncrashed run of each scenario counts every invocation's calls; then
each point (invocation i dies before its call k, or after its last call) is a run of its own from
the provisioned state, judged by the invariants."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from moto.moto_api._internal import mock_random

from tests.crash.clock import SimulatedClock, driving_time
from tests.crash.harness import METER, Chaos, CrashPoint, Invocation, Run, Violation, install_meter, is_read
from tests.crash.invariants import check
from tests.crash.scenarios import SCENARIOS, Scenario
from tests.crash.world import World


@dataclass(frozen=True)
class InvocationTrace:
    function: str
    occurrence: int
    what: str
    calls: tuple[str, ...]


@dataclass(frozen=True)
class Point:
    """One crash point of a scenario, named so that the name survives unrelated changes in
    other invocations: which function's how-many-th invocation, and which of its calls."""

    scenario: str
    invocation: int  # in the uncrashed run (1-based)
    before_call: int | None  # 1-based; None: after the last call
    name: str

    @property
    def crash_point(self) -> CrashPoint:
        return CrashPoint(self.invocation, self.before_call)


@dataclass
class Outcome:
    run: Run
    violations: list[Violation]

    def describe(self) -> str:
        crashed = [
            f"#{inv.number} {inv.function} ({inv.what}) died "
            + (f"before {inv.crashed_before}" if inv.crashed_before else "after its last call")
            for inv in self.run.invocations
            if inv.outcome == "crashed"
        ]
        lines = [
            *(f"  crash: {line}" for line in crashed),
            *(f"  {violation}" for violation in self.violations),
        ]
        return "\n".join(lines)


def representative(point: Point, trace: list[InvocationTrace]) -> int:
    """The earliest crash position of the point's invocation that leaves the same state: dying
    before call k after only reads since the last write is dying before the first of those
    reads (the reads change nothing, and the dead process's memory is gone). Each point keeps
    its own verdict; equal ones are run once."""
    calls = trace[point.invocation - 1].calls
    position = point.before_call if point.before_call is not None else len(calls) + 1
    while position > 1 and is_read(calls[position - 2]):
        position -= 1
    return position


def points_of(scenario: str, trace: list[InvocationTrace]) -> list[Point]:
    """Every call of every invocation of the scenario's uncrashed run, and after the last one;
    only the invocations of the functions it names, when it names some (``Scenario.crashed``)."""
    crashed = SCENARIOS[scenario].crashed
    points = []
    for number, invocation in enumerate(trace, start=1):
        if crashed is not None and invocation.function not in crashed:
            continue
        where = f"{scenario}/{invocation.function}#{invocation.occurrence}"
        seen: Counter[str] = Counter()
        for index, call in enumerate(invocation.calls, start=1):
            seen[call] += 1
            points.append(Point(scenario, number, index, f"{where}/before {call}#{seen[call]}"))
        points.append(Point(scenario, number, None, f"{where}/after last call"))
    return points


@dataclass(frozen=True)
class PointResult:
    name: str
    violations: tuple[tuple[str, str], ...]
    story: str  # which invocations died where, and what broke
    invocations: int
    seconds: float
    error: str | None = None

    @property
    def kinds(self) -> set[str]:
        return {kind for kind, _ in self.violations}


class Sweep:
    """The world, the clock and the meter, started together and stopped together."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        try:
            self.clock = SimulatedClock()
            self._stack.enter_context(quiet_logs())
            # Before the shared session exists: botocore copies its handlers into each new session.
            self._stack.callback(install_meter())
            self._stack.enter_context(shared_service_models())
            self._stack.enter_context(driving_time(self.clock))
            self.world = World()
            self._stack.callback(self.world.close)
        except BaseException:
            self._stack.close()
            raise

    def close(self) -> None:
        self._stack.close()

    def run(
        self,
        scenario: Scenario,
        crash_points: tuple[CrashPoint, ...] = (),
        chaos: Chaos | None = None,
        before_invocation: Callable[[Run, int], None] | None = None,
    ) -> Outcome:
        self.world.reset()
        self.clock.reset()
        # moto's ids (object versions, deployments, receipts) the same in every run of a seed.
        mock_random.seed(0)
        run = Run(self.world, self.clock, crash_points=crash_points, chaos=chaos)
        if before_invocation is not None:
            run.before_invocation = lambda number: before_invocation(run, number)
        scenario.schedule(run)
        run.execute()
        return Outcome(run, check(run))

    def baseline(self, name: str) -> tuple[list[InvocationTrace], Outcome]:
        outcome = self.run(SCENARIOS[name])
        return [_trace(invocation) for invocation in outcome.run.invocations], outcome

    def sweep(
        self, name: str, points: list[Point], trace: list[InvocationTrace]
    ) -> tuple[list[InvocationTrace], dict[str, PointResult]]:
        """Every point of a scenario. The uncrashed run is forked just before each invocation
        that has points, once per point: the child is the run from scratch up to there (runs are
        deterministic: fixed clock, seeded ids), dies at its point and plays on to the end."""
        by_invocation: dict[int, list[Point]] = {}
        stands_for: dict[str, list[Point]] = {}
        for point in points:
            position = representative(point, trace)
            calls = len(trace[point.invocation - 1].calls)
            key = f"{point.invocation}:{position}"
            if key not in stands_for:
                run_as = Point(
                    point.scenario, point.invocation, position if position <= calls else None, point.name
                )
                by_invocation.setdefault(point.invocation, []).append(run_as)
            stands_for.setdefault(key, []).append(point)
        results: dict[str, PointResult] = {}
        child: list[Point] = []

        def fork_points(run: Run, number: int) -> None:
            if number not in by_invocation:
                return
            self.world.pause_lookalikes()
            try:
                for point in by_invocation[number]:
                    started = time.perf_counter()
                    forked = _fork()
                    if forked is None:
                        child.append(point)
                        run.before_invocation = None
                        METER.plan = {number: point.before_call}
                        return
                    results[point.name] = _result_from(forked, point.name, started)
            finally:
                self.world.serve_lookalikes()

        started = time.perf_counter()
        try:
            outcome = self.run(SCENARIOS[name], before_invocation=fork_points)
            if child:
                _report(_point_result(child[0].name, outcome, started))
            results[f"{name}/uncrashed"] = _point_result(f"{name}/uncrashed", outcome, started)
            for members in stands_for.values():
                ran = results.pop(members[0].name)
                for member in members:
                    results[member.name] = dataclasses.replace(ran, name=member.name)
        except BaseException as error:
            if child:
                _report(
                    PointResult(child[0].name, (), "", 0, time.perf_counter() - started, error=repr(error))
                )
            raise
        finally:
            if child:
                os._exit(0)
        return [_trace(invocation) for invocation in outcome.run.invocations], results


def _point_result(name: str, outcome: Outcome, started: float) -> PointResult:
    return PointResult(
        name,
        tuple((violation.kind, violation.message) for violation in outcome.violations),
        outcome.describe(),
        len(outcome.run.invocations),
        time.perf_counter() - started,
    )


# --- processes: a forked child hands back one pickled answer --------------------------------

_ANSWER_FD: list[int] = []


def _fork() -> tuple[int, int] | None:
    """None in the child; in the parent the child's pid and the read end of its answer pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _ANSWER_FD[:] = [write_fd]
        return None
    os.close(write_fd)
    return pid, read_fd


def _collect(forked: tuple[int, int]) -> Any:
    pid, read_fd = forked
    chunks = []
    with os.fdopen(read_fd, "rb") as answers:
        while chunk := answers.read(1 << 16):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        raise ChildDied(f"child {pid} ended (status {status}) without an answer")
    return pickle.loads(b"".join(chunks))


def _result_from(forked: tuple[int, int], name: str, started: float) -> PointResult:
    try:
        result: PointResult = _collect(forked)
    except ChildDied as died:
        return PointResult(name, (), "", 0, time.perf_counter() - started, error=str(died))
    return result


def _report(answer: Any) -> None:
    with os.fdopen(_ANSWER_FD[0], "wb") as out:
        out.write(pickle.dumps(answer))


class ChildDied(RuntimeError):
    """A forked run ended without answering (a harness bug, or killed)."""


def in_child(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a forked process (its own moto, Slack look-alike and patches) and return
    its answer; this process is left as it was."""
    forked = _fork()
    if forked is None:
        try:
            _report(work())
        except BaseException as error:
            _report(ChildDied(f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
        finally:
            os._exit(0)
    answer = _collect(forked)
    if isinstance(answer, ChildDied):
        raise answer
    return answer


def in_children(works: list[Callable[[], Any]]) -> list[Any]:
    """``in_child`` for each, all running at once."""
    started = []
    for work in works:
        forked = _fork()
        if forked is None:
            try:
                _report(work())
            except BaseException as error:
                _report(ChildDied(f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))
            finally:
                os._exit(0)
        started.append(forked)
    answers = [_collect(forked) for forked in started]
    for answer in answers:
        if isinstance(answer, ChildDied):
            raise answer
    return answers


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The app logs every transition at INFO; thousands of runs need only its warnings."""
    from chalicelib.log import logger

    level = logger.log_level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def shared_service_models() -> Iterator[None]:
    """Every container (a new one after each crash) builds its boto3 clients from a new
    ``boto3.session.Session()``, which reads and compiles the same service models again. Inside
    this, that call returns one shared session, so models are read once; each container still
    gets new client objects (new connections, nothing cached from the dead one)."""
    import boto3.session

    original = boto3.session.Session
    shared = original()

    def session(*args: Any, **kwargs: Any) -> Any:
        return shared if not args and not kwargs else original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(boto3.session, "Session", session)
        yield


def _trace(invocation: Invocation) -> InvocationTrace:
    return InvocationTrace(
        invocation.function, invocation.occurrence, invocation.what, tuple(invocation.calls)
    )


def random_crash_points(rng: random.Random, trace: list[InvocationTrace]) -> tuple[CrashPoint, ...]:
    """0 to 2 crash points at invocations of the uncrashed run (a crash changes what follows,
    so a second point may fall on a different invocation than it would have)."""
    count = rng.choice((0, 1, 1, 2, 2))
    chosen: dict[int, int | None] = {}
    for _ in range(count):
        number = rng.randint(1, len(trace))
        calls = len(trace[number - 1].calls)
        index = rng.randint(1, calls + 1)
        chosen[number] = None if index > calls else index
    return tuple(CrashPoint(number, before) for number, before in sorted(chosen.items()))


# --- the whole sweep, spread over worker processes -------------------------------------------


@dataclass(frozen=True)
class RandomResult:
    seed: int
    scenario: str
    result: PointResult


@dataclass(frozen=True)
class SweepResults:
    points: dict[str, PointResult]
    randoms: list[RandomResult]
    # Scenarios whose uncrashed run in a worker made other calls than the baseline did: the
    # forked points would then not be the points counted.
    nondeterministic: list[str]
    seconds: float


def baselines() -> dict[str, list[InvocationTrace]]:
    """The uncrashed run of every scenario, in a process of its own."""

    def work() -> dict[str, list[InvocationTrace]]:
        sweep = Sweep()
        try:
            return {name: sweep.baseline(name)[0] for name in SCENARIOS}
        finally:
            sweep.close()

    answer: dict[str, list[InvocationTrace]] = in_child(work)
    return answer


def random_chaos(seed: int) -> tuple[str, random.Random]:
    rng = random.Random(seed)
    return rng.choice(sorted(SCENARIOS)), rng


def random_run(sweep: Sweep, seed: int, traces: dict[str, list[InvocationTrace]]) -> RandomResult:
    """Seed -> scenario, 0-2 crash points, and duplicated (20%), delayed (20%, up to 90 s) and
    lost (10%, CodeDeploy's events only) deliveries."""
    name, rng = random_chaos(seed)
    points = random_crash_points(rng, traces[name])
    chaos = Chaos(rng, duplicate=0.2, delay=0.2, lose=0.1)
    started = time.perf_counter()
    try:
        outcome = sweep.run(SCENARIOS[name], points, chaos)
    except Exception as error:
        return RandomResult(seed, name, PointResult(f"seed {seed}", (), "", 0, 0.0, error=repr(error)))
    return RandomResult(seed, name, _point_result(f"seed {seed}", outcome, started))


def run_sweep(
    traces: dict[str, list[InvocationTrace]],
    *,
    workers: int,
    random_seeds: list[int],
    sweep_points: bool = True,
) -> SweepResults:
    """Every crash point of every scenario and the random runs, over ``workers`` processes:
    each takes every ``workers``-th invocation of each scenario and every ``workers``-th seed."""
    started = time.perf_counter()

    def worker(
        number: int,
    ) -> tuple[dict[str, PointResult], list[RandomResult], dict[str, list[InvocationTrace]]]:
        sweep = Sweep()
        try:
            results: dict[str, PointResult] = {}
            spines: dict[str, list[InvocationTrace]] = {}
            for name, trace in traces.items() if sweep_points else []:
                mine = [p for p in points_of(name, trace) if (p.invocation - 1) % workers == number]
                spines[name], found = sweep.sweep(name, mine, trace)
                results.update(found)
            randoms = [random_run(sweep, seed, traces) for seed in random_seeds[number::workers]]
            return results, randoms, spines
        finally:
            sweep.close()

    answers = in_children([functools.partial(worker, number) for number in range(workers)])
    points: dict[str, PointResult] = {}
    randoms: list[RandomResult] = []
    nondeterministic: list[str] = []
    for number, (found, random_results, spines) in enumerate(answers):
        points.update(found)
        randoms.extend(random_results)
        nondeterministic += [
            f"worker {number}: {name}"
            for name, spine in spines.items()
            if [(t.function, t.calls) for t in spine] != [(t.function, t.calls) for t in traces[name]]
        ]
    return SweepResults(
        points, sorted(randoms, key=lambda r: r.seed), nondeterministic, time.perf_counter() - started
    )

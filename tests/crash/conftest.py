"""Puts the crash-point sweep's line in the test run's summary (shown without ``-s``)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.crash.test_crash_points import STATS

    checked, runs = STATS["checked"], STATS["random"]
    if not checked and not runs:
        return
    invocations, points = STATS["invocations"], STATS["points"]
    broken, known = STATS["broken"], STATS["known"]
    if broken or known:
        verdict = (
            f"{len(broken) + len(known)} broke invariants ({len(known)} of them listed known faults, xfailed)"
        )
    elif checked < points:
        verdict = f"{checked} checked, all of them held every invariant"
    else:
        verdict = "all invariants held"
    terminalreporter.write_line(
        f"crash points: {invocations} invocations, {points} points, {verdict} ({STATS['seconds']:.0f}s)"
    )
    if runs:
        excused = STATS["random_excused"]
        shown = ", ".join(map(str, excused[:20])) + ("..." if len(excused) > 20 else "")
        terminalreporter.write_line(
            f"crash points, random pass: {len(runs)} runs (seeds {min(runs)}-{max(runs)}), "
            f"{len(excused)} broken only by listed known faults" + (f" (seeds {shown})" if excused else "")
        )

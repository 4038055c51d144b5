"""Says in the test run's summary how many generated cases the lane's state machine ran."""

from __future__ import annotations

import pytest

from tests.unit.test_lane import RUN_STATS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RUN_STATS["examples"]:
        terminalreporter.write_line(
            f"lane: {RUN_STATS['examples']} examples, {RUN_STATS['steps']} steps "
            "(hypothesis state machine over submissions, finishes, cancels, repairs, adoptions, "
            "approvals, break-glass deploys and promotions)"
        )

"""Says in the test run's summary how many generated cases the reliability suite ran."""

from __future__ import annotations

import pytest

from tests.reliability.test_release_state_machine import RUN_STATS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RUN_STATS["examples"]:
        terminalreporter.write_line(
            f"reliability: {RUN_STATS['examples']} generated cases, {RUN_STATS['steps']} steps "
            "(hypothesis state machine over uploads, CodeDeploy events, cancels, redeploys, "
            "notifications and reconcile)"
        )

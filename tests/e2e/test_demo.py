"""End to end on the sandbox: the demo scenario with real hooks, a real load balancer and
steady traffic. Nothing it starts may outlive it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.demo import run_demo


def processes_under(directory: Path) -> list[str]:
    """Command lines of running processes that mention the directory (the instances' apps)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in command:
            found.append(f"{pid}: {command}")
    return found


@pytest.mark.timeout(400)
def test_demo_deploys_under_traffic_fails_and_rolls_back_with_zero_failed_requests(tmp_path: Path) -> None:
    result = run_demo(tmp_path)

    outcome = [(r.state.value, r.trigger.value, r.metadata.get("version_label")) for r in result.releases]
    assert outcome == [
        ("SUCCEEDED", "upload", "1.0.0"),
        ("SUCCEEDED", "upload", "2.0.0"),
        ("FAILED", "upload", "3.0.0-broken"),
        ("SUCCEEDED", "auto_rollback", "2.0.0"),
    ]
    assert "ValidateService failed" in result.releases[2].reason
    assert result.traffic is not None
    assert result.traffic.sent > 100
    assert result.traffic.failed == 0, result.traffic.failures
    assert result.traffic.by_version.get("2.0.0", 0) > 0
    assert result.serving_version == "2.0.0"
    threads = {thread["release"]: thread["thread"] for thread in result.notifications["slack"]}
    assert "ValidateService" in threads[result.releases[2].id]
    assert threads[result.releases[3].id].startswith("Rolled back")
    assert "[FAILED] demo 3.0.0-broken" in result.notifications["email"]
    assert "[ROLLED BACK] demo 2.0.0" in result.notifications["email"]
    assert processes_under(tmp_path) == []

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
def test_demo_deploys_under_traffic_with_approvals_fails_and_rolls_back_with_zero_failed_requests(
    tmp_path: Path,
) -> None:
    result = run_demo(tmp_path)

    outcome = [(r.state.value, r.trigger.value, r.metadata.get("version_label")) for r in result.releases]
    assert outcome == [
        ("SUCCEEDED", "upload", "1.0.0"),
        ("SUCCEEDED", "upload", "2.0.0"),
        ("FAILED", "upload", "3.0.0-broken"),
        ("SUCCEEDED", "auto_rollback", "2.0.0"),
        ("FAILED", "upload", "4.0.0"),
        ("SUCCEEDED", "auto_rollback", "2.0.0"),
    ]
    assert "ValidateService failed" in result.releases[2].reason
    # Every upload waited for approval, given by the release lead from its Slack card.
    as_json = {release["id"]: release for release in result.to_json()["releases"]}
    for release in (result.releases[0], result.releases[1], result.releases[2], result.releases[4]):
        states = [event["state"] for event in as_json[release.id]["history"]]
        assert states[:3] == ["RECEIVED", "AWAITING_APPROVAL", "DEPLOYING"], states
        approvals = [e["detail"] for e in as_json[release.id]["history"] if "approved_by" in e["detail"]]
        assert [approval["approved_by"] for approval in approvals] == ["slack:U0LEAD (release-lead)"]
    # The alarm gate: demo-5xx went to ALARM as 4.0.0 deployed, its first check failed it, and it
    # rolled back.
    alarm_gated = result.releases[4]
    assert alarm_gated.reason.startswith("verify_failed: alarm demo-5xx is in ALARM since ")
    failed_check = [e for e in as_json[alarm_gated.id]["history"] if e["type"] == "TaskFailed"][-1]
    assert [alarm["alarm"] for alarm in failed_check["detail"]["in_alarm"]] == ["demo-5xx"]
    assert result.releases[5].rollback_of == alarm_gated.id
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

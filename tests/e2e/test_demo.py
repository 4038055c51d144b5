"""End to end on the sandbox: the demo scenario on two fleets (staging and production, each with
real hooks behind a real load balancer under steady traffic), what staging verified promoted to
production. Nothing it starts may outlive it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chalicelib.domain.release import PROMOTED_FROM, ReleaseState
from sandbox.demo import run_demo
from sandbox.runtime import PRODUCTION, STAGING, demo_commit


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
def test_demo_deploys_under_traffic_with_approvals_promotes_fails_and_rolls_back_with_zero_failed_requests(
    tmp_path: Path,
) -> None:
    result = run_demo(tmp_path)

    outcome = [
        (r.pipeline, r.state.value, r.trigger.value, r.metadata.get("version_label")) for r in result.releases
    ]
    assert outcome == [
        ("demo", "SUCCEEDED", "upload", "1.0.0"),
        ("demo-prod", "SUCCEEDED", "promotion", "1.0.0"),
        ("demo", "SUCCEEDED", "upload", "2.0.0"),
        ("demo-prod", "SUCCEEDED", "promotion", "2.0.0"),
        ("demo", "FAILED", "upload", "3.0.0-broken"),
        ("demo", "SUCCEEDED", "auto_rollback", "2.0.0"),
        ("demo", "FAILED", "upload", "4.0.0"),
        ("demo", "SUCCEEDED", "auto_rollback", "2.0.0"),
    ]
    first, first_promotion, second, second_promotion, broken, rollback, alarm_gated, alarm_rollback = (
        result.releases
    )
    assert "ValidateService failed" in broken.reason
    as_json = {release["id"]: release for release in result.to_json()["releases"]}
    # Production runs exactly the object versions staging verified, promoted without approval.
    for upstream, promotion in ((first, first_promotion), (second, second_promotion)):
        assert promotion.metadata[PROMOTED_FROM] == upstream.id
        assert as_json[promotion.id]["promoted_from"] == upstream.id
        assert as_json[promotion.id]["revision"] == as_json[upstream.id]["revision"]
        assert as_json[promotion.id]["revision"]["version"]
        assert as_json[promotion.id]["revision"]["etag"]
        states = [event["state"] for event in as_json[promotion.id]["history"]]
        assert "AWAITING_APPROVAL" not in states
    # Every upload waited for approval, given by the release lead from its Slack card.
    for release in (first, second, broken, alarm_gated):
        states = [event["state"] for event in as_json[release.id]["history"]]
        assert states[:3] == ["RECEIVED", "AWAITING_APPROVAL", "DEPLOYING"], states
        approvals = [e["detail"] for e in as_json[release.id]["history"] if "approved_by" in e["detail"]]
        assert [approval["approved_by"] for approval in approvals] == ["slack:U0LEAD (release-lead)"]
    # The alarm gate: demo-5xx went to ALARM as 4.0.0 deployed, its first check failed it, and it
    # rolled back.
    assert alarm_gated.reason.startswith("verify_failed: alarm demo-5xx is in ALARM since ")
    failed_check = [e for e in as_json[alarm_gated.id]["history"] if e["type"] == "TaskFailed"][-1]
    assert [alarm["alarm"] for alarm in failed_check["detail"]["in_alarm"]] == ["demo-5xx"]
    assert alarm_rollback.rollback_of == alarm_gated.id
    # Both fleets served every request under traffic through their rollouts, and serve 2.0.0.
    assert set(result.traffic) == {STAGING, PRODUCTION}
    for fleet, traffic in result.traffic.items():
        assert traffic.sent > 100, fleet
        assert traffic.failed == 0, (fleet, traffic.failures)
        assert traffic.by_version.get("2.0.0", 0) > 0, fleet
    assert result.traffic[PRODUCTION].by_version.get("1.0.0", 0) > 0  # v2's promotion under traffic
    assert result.serving == {STAGING: "2.0.0", PRODUCTION: "2.0.0"}
    traffic_json = result.to_json()["traffic"]
    assert traffic_json["sent"] == sum(fleet["sent"] for fleet in traffic_json["fleets"].values())
    assert traffic_json["failed"] == 0
    threads = {thread["release"]: thread["thread"] for thread in result.notifications["slack"]}
    assert "ValidateService" in threads[broken.id]
    assert threads[rollback.id].startswith("Rolled back")
    assert threads[second_promotion.id].startswith("Succeeded: demo-prod 2.0.0")
    assert "[FAILED] demo 3.0.0-broken" in result.notifications["email"]
    assert "[ROLLED BACK] demo 2.0.0" in result.notifications["email"]
    # One GitHub deployment per release, in its pipeline's environment, of the commit its upload
    # named; its statuses follow the release to its end (success made older ones inactive).
    deployments = {deployment["release"]: deployment for deployment in result.notifications["github"]}
    assert set(deployments) == {release.id for release in result.releases}
    assert len(result.notifications["github"]) == len(result.releases)
    for release in result.releases:
        deployment = deployments[release.id]
        assert deployment["environment"] == release.pipeline
        assert deployment["sha"] == demo_commit(str(release.metadata["version_label"]))
        final = "success" if release.state is ReleaseState.SUCCEEDED else "failure"
        settled = [state for state in deployment["statuses"] if state != "inactive"]
        assert settled[-2:] == ["in_progress", final], deployment
    assert processes_under(tmp_path) == []

"""The main job on the embedded default: deploy v1, roll out v2 under steady traffic, watch a
broken v3 fail and roll back to v2, then a v4 whose alarm fires as it deploys fail verification and
roll back to v2, then summarise what happened. Every release but the rollbacks waits for approval,
which the release lead gives from its Slack card. ``relco demo`` runs this.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.domain.release import Release, ReleaseState, rollback_release_id
from sandbox.runtime import Sandbox
from sandbox.traffic import SteadyTraffic, TrafficReport

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    releases: list[Release] = field(default_factory=list)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    traffic: TrafficReport | None = None
    serving_version: str | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    notifications: dict[str, Any] = field(default_factory=lambda: {"slack": [], "email": []})

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``relco demo --json`` (DESIGN.md section 5)."""
        return {
            "releases": [
                {
                    "id": release.id,
                    "state": release.state.value,
                    "trigger": release.trigger.value,
                    "version": release.metadata.get("version_label"),
                    "reason": release.reason,
                    "rollback_of": release.rollback_of,
                    "history": self.histories.get(release.id, []),
                }
                for release in self.releases
            ],
            "traffic": {
                "sent": self.traffic.sent if self.traffic else 0,
                "failed": self.traffic.failed if self.traffic else 0,
                "by_version": dict(self.traffic.by_version) if self.traffic else {},
            },
            "serving_version": self.serving_version,
            "notifications": self.notifications,
            "timings_s": {name: round(seconds, 2) for name, seconds in self.timings_s.items()},
        }


class DemoFailed(RuntimeError):
    """A step of the demo did not end as it must; the message says which."""


def run_demo(workdir: Path, *, instances: int = 2) -> DemoResult:
    result = DemoResult()
    started = time.monotonic()
    with Sandbox(workdir, instances=instances, gates=True) as sandbox:
        result.timings_s["sandbox_start"] = time.monotonic() - started
        first = _release(sandbox, "1.0.0", result, "deploy_v1")
        _expect(first, ReleaseState.SUCCEEDED)
        assert sandbox.endpoints is not None
        traffic = SteadyTraffic(sandbox.endpoints.lb_url + "/", rate_per_s=20.0, concurrency=4).start()
        try:
            second = _release(sandbox, "2.0.0", result, "deploy_v2_under_traffic")
            _expect(second, ReleaseState.SUCCEEDED)
            broken = _release(sandbox, "3.0.0-broken", result, "deploy_v3_broken")
            _expect(broken, ReleaseState.FAILED)
            rollback_started = time.monotonic()
            rollback = sandbox.wait_terminal(rollback_release_id(broken.id))
            result.timings_s["auto_rollback"] = time.monotonic() - rollback_started
            _expect(rollback, ReleaseState.SUCCEEDED)
            alarmed, alarm_rollback = _alarm_gated_release(sandbox, "4.0.0", result)
        finally:
            result.traffic = traffic.stop()
        result.releases = [first, second, broken, rollback, alarmed, alarm_rollback]
        store = _store()
        result.histories = {r.id: [event.to_dict() for event in store.history(r.id)] for r in result.releases}
        result.serving_version = _serving_version(sandbox.endpoints.lb_url)
        _collect_notifications(sandbox, result)
    result.timings_s["total"] = time.monotonic() - started
    return result


def _store() -> Any:
    from chalicelib import bootstrap

    return bootstrap.wiring().store


def _alarm_gated_release(sandbox: Sandbox, version: str, result: DemoResult) -> tuple[Release, Release]:
    """``version`` is approved and deploys; as it does, its errors set off the pipeline's alarm
    (SetAlarmState stands in for the 5xx metric), so its first health check fails it
    (verify_failed) and it rolls back. The alarm clears once the bad version is gone."""
    began = time.monotonic()
    release_id = sandbox.upload(version)
    sandbox.approve_from_slack(release_id)
    sandbox.wait_for(release_id, lambda release: release.deployment_id is not None, "deploying")
    sandbox.set_alarm("ALARM", f"Threshold Crossed: 5xx responses rose as {version} rolled out")
    failed = sandbox.wait_terminal(release_id)
    sandbox.set_alarm("OK", "Threshold not crossed: the 5xx responses stopped")
    _expect(failed, ReleaseState.FAILED)
    rollback = sandbox.wait_terminal(rollback_release_id(release_id))
    _expect(rollback, ReleaseState.SUCCEEDED)
    result.timings_s["deploy_v4_alarm_and_rollback"] = time.monotonic() - began
    return failed, rollback


def _release(sandbox: Sandbox, version: str, result: DemoResult, timing: str) -> Release:
    began = time.monotonic()
    release = sandbox.deploy(version)
    result.timings_s[timing] = time.monotonic() - began
    return release


def _collect_notifications(sandbox: Sandbox, result: DemoResult, wait_s: float = 10.0) -> None:
    """The Slack threads and mail of the demo's releases, once the outbox has caught up."""
    deadline = time.monotonic() + wait_s
    store = _store()
    while True:
        releases = [store.get_release(release.id) or release for release in result.releases]
        threads = {release.id: sandbox.slack_thread(release) for release in releases}
        subjects = sandbox.email_subjects()
        done = all(threads.values()) and any(subject.startswith("[ROLLED BACK]") for subject in subjects)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    result.notifications = {
        "slack": [{"release": release_id, "thread": text} for release_id, text in threads.items() if text],
        "email": subjects,
    }


def _expect(release: Release, state: ReleaseState) -> None:
    if release.state is not state:
        raise DemoFailed(
            f"release {release.id} ended {release.state.value}, expected {state.value}: {release.reason}"
        )


def _serving_version(lb_url: str) -> str | None:
    with urllib.request.urlopen(lb_url + "/", timeout=5) as response:
        body = json.loads(response.read())
    version = body.get("version")
    return str(version) if version is not None else None


def summary(result: DemoResult) -> str:
    """The readable report of ``relco demo``."""
    lines = ["Release Coordinator demo (sandbox)", ""]
    for release in result.releases:
        label = release.metadata.get("version_label") or release.revision.key
        lines.append(f"{release.state.value:<10} {label:<14} {release.trigger.value:<14} {release.id}")
        history = result.histories.get(release.id, [])
        if history:
            start = _seconds(history[0]["timestamp"])
            for event in history:
                offset = _seconds(event["timestamp"]) - start
                detail = event["detail"]
                reason = detail.get("reason") or detail.get("task") or ""
                if detail.get("approved_by"):
                    reason += f" (approved by {detail['approved_by']} from Slack)"
                lines.append(f"    +{offset:6.1f}s  {event['type']:<20} {event['state']:<10} {reason}"[:160])
        lines.append(f"    reason: {release.reason}")
        lines.append("")
    if result.traffic is not None:
        traffic = result.traffic
        by_version = ", ".join(f"{version}: {count}" for version, count in sorted(traffic.by_version.items()))
        lines.append(
            f"Traffic through the load balancer: {traffic.sent} sent, {traffic.failed} failed ({by_version})"
        )
    lines.append(f"Fleet now serves: {result.serving_version}")
    lines.append("")
    for thread in result.notifications.get("slack", []):
        lines.append(f"Slack thread of {thread['release']}:")
        lines.extend(f"    {line}" for line in str(thread["thread"]).splitlines())
    subjects = result.notifications.get("email", [])
    lines.append("Email: " + ("; ".join(subjects) if subjects else "none sent"))
    lines.append(
        "Timings: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in result.timings_s.items())
    )
    return "\n".join(lines)


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp).timestamp()


def main(as_json: bool = False, instances: int = 2) -> int:
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("werkzeug", "release-coordinator"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="relco-demo-") as workdir:
        result = run_demo(Path(workdir), instances=instances)
    print(json.dumps(result.to_json()) if as_json else summary(result))
    return 0 if result.traffic is not None and result.traffic.failed == 0 else 1


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Run the release flow on the embedded sandbox.")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    parser.add_argument("--instances", type=int, default=2, help="local instances behind the load balancer")
    arguments = parser.parse_args()
    sys.exit(main(as_json=arguments.json, instances=arguments.instances))

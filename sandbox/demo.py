"""The main job on the embedded default, on two fleets: deploy v1 to staging, roll out v2 under
steady traffic, watch a broken v3 fail and roll back to v2, then a v4 whose alarm fires as it
deploys fail verification and roll back to v2, then summarise what happened. Every staging release
but the rollbacks waits for approval, which the release lead gives from its Slack card. What
staging verified (v1, v2) is promoted to production, the same S3 object version, under traffic on
both load balancers; what failed there (v3, v4) and the rollbacks never are. ``relco demo`` runs
this.
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

from chalicelib.domain.release import (
    PROMOTED_FROM,
    Release,
    ReleaseState,
    Trigger,
    promotion_release_id,
    rollback_release_id,
)
from sandbox.runtime import PRODUCTION, PRODUCTION_PIPELINE, STAGING, Sandbox
from sandbox.traffic import SteadyTraffic, TrafficReport

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    releases: list[Release] = field(default_factory=list)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Per fleet (STAGING, PRODUCTION): the traffic through its load balancer, and the version it
    # serves at the end.
    traffic: dict[str, TrafficReport] = field(default_factory=dict)
    serving: dict[str, str | None] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    notifications: dict[str, Any] = field(default_factory=lambda: {"slack": [], "email": [], "github": []})

    @property
    def requests_sent(self) -> int:
        return sum(report.sent for report in self.traffic.values())

    @property
    def requests_failed(self) -> int:
        return sum(report.failed for report in self.traffic.values())

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``relco demo --json`` (DESIGN.md section 5). ``traffic``'s
        ``sent``/``failed``/``by_version`` add up both fleets; ``fleets`` has each one's, and
        ``serving_version`` is staging's (``serving`` has each fleet's)."""
        by_version: dict[str, int] = {}
        for report in self.traffic.values():
            for version, count in report.by_version.items():
                by_version[version] = by_version.get(version, 0) + count
        return {
            "releases": [
                {
                    "id": release.id,
                    "pipeline": release.pipeline,
                    "state": release.state.value,
                    "trigger": release.trigger.value,
                    "version": release.metadata.get("version_label"),
                    "revision": release.revision.to_dict(),
                    "reason": release.reason,
                    "rollback_of": release.rollback_of,
                    "promoted_from": release.metadata.get(PROMOTED_FROM),
                    "history": self.histories.get(release.id, []),
                }
                for release in self.releases
            ],
            "traffic": {
                "sent": self.requests_sent,
                "failed": self.requests_failed,
                "by_version": by_version,
                "fleets": {
                    fleet: {
                        "sent": report.sent,
                        "failed": report.failed,
                        "by_version": dict(report.by_version),
                    }
                    for fleet, report in self.traffic.items()
                },
            },
            "serving_version": self.serving.get(STAGING),
            "serving": dict(self.serving),
            "notifications": self.notifications,
            "timings_s": {name: round(seconds, 2) for name, seconds in self.timings_s.items()},
        }


class DemoFailed(RuntimeError):
    """A step of the demo did not end as it must; the message says which."""


def run_demo(workdir: Path, *, instances: int = 2) -> DemoResult:
    result = DemoResult()
    started = time.monotonic()
    with Sandbox(workdir, instances=instances, gates=True, production=True) as sandbox:
        result.timings_s["sandbox_start"] = time.monotonic() - started
        assert sandbox.endpoints is not None
        urls = {STAGING: sandbox.endpoints.lb_url, PRODUCTION: sandbox.endpoints.production_lb_url}
        first = _release(sandbox, "1.0.0", result, "deploy_v1")
        _expect(first, ReleaseState.SUCCEEDED)
        traffic = {STAGING: _traffic(urls[STAGING])}
        try:
            # v1's promotion deploys to production while the release lead approves v2; production
            # has something to serve (and its traffic starts) once that promotion succeeded,
            # before v2's promotion can start (one deployment at a time per group).
            began = time.monotonic()
            second_id = sandbox.upload("2.0.0")
            sandbox.approve_from_slack(second_id)
            first_promotion = _promotion(sandbox, first, result, "promote_v1")
            traffic[PRODUCTION] = _traffic(urls[PRODUCTION])
            second = sandbox.wait_terminal(second_id)
            result.timings_s["deploy_v2_under_traffic"] = time.monotonic() - began
            _expect(second, ReleaseState.SUCCEEDED)
            broken = _release(sandbox, "3.0.0-broken", result, "deploy_v3_broken")
            _expect(broken, ReleaseState.FAILED)
            rollback_started = time.monotonic()
            rollback = sandbox.wait_terminal(rollback_release_id(broken.id))
            result.timings_s["auto_rollback"] = time.monotonic() - rollback_started
            _expect(rollback, ReleaseState.SUCCEEDED)
            alarmed, alarm_rollback = _alarm_gated_release(sandbox, "4.0.0", result)
            second_promotion = _promotion(sandbox, second, result, "promote_v2")
        finally:
            result.traffic = {fleet: generator.stop() for fleet, generator in traffic.items()}
        result.releases = [
            first,
            first_promotion,
            second,
            second_promotion,
            broken,
            rollback,
            alarmed,
            alarm_rollback,
        ]
        store = _store()
        result.histories = {r.id: [event.to_dict() for event in store.history(r.id)] for r in result.releases}
        result.serving = {fleet: _serving_version(url) for fleet, url in urls.items() if url is not None}
        _collect_notifications(sandbox, result)
        # By now the failed releases and the rollbacks have long been terminal in staging: a
        # promotion of any of them would have been created (a wake-up, within a second).
        _expect_not_promoted([broken, rollback, alarmed, alarm_rollback])
    result.timings_s["total"] = time.monotonic() - started
    return result


def _traffic(url: str | None) -> SteadyTraffic:
    assert url is not None
    return SteadyTraffic(url + "/", rate_per_s=20.0, concurrency=4).start()


def _promotion(sandbox: Sandbox, upstream: Release, result: DemoResult, timing: str) -> Release:
    """The production release of what staging verified in ``upstream``, once it ended; it must
    have SUCCEEDED with exactly that S3 object version. ``timing``: from staging's success to
    production's, by the coordinator's clock."""
    promotion = sandbox.wait_terminal(promotion_release_id(PRODUCTION_PIPELINE, upstream.id))
    _expect(promotion, ReleaseState.SUCCEEDED)
    if promotion.trigger is not Trigger.PROMOTION or promotion.revision != upstream.revision:
        raise DemoFailed(
            f"release {promotion.id} ({promotion.trigger.value}, {promotion.revision.to_dict()}) is not "
            f"a promotion of {upstream.id}'s revision {upstream.revision.to_dict()}"
        )
    result.timings_s[timing] = (promotion.updated_at - upstream.updated_at).total_seconds()
    return promotion


def _expect_not_promoted(releases: list[Release]) -> None:
    store = _store()
    for release in releases:
        promotion = store.get_release(promotion_release_id(PRODUCTION_PIPELINE, release.id))
        if promotion is not None:
            raise DemoFailed(
                f"release {release.id} ({release.trigger.value}, {release.state.value}) was promoted to "
                f"production as {promotion.id}"
            )


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
    """The Slack threads, mail and GitHub deployments of the demo's releases, once the outbox has
    caught up."""
    deadline = time.monotonic() + wait_s
    store = _store()
    while True:
        releases = [store.get_release(release.id) or release for release in result.releases]
        threads = {release.id: sandbox.slack_thread(release) for release in releases}
        subjects = sandbox.email_subjects()
        deployments = sandbox.github.deployments() if sandbox.github is not None else []
        # Each release's GitHub deployment has its final status (success or failure) posted.
        settled = {
            deployment.payload.get("release_id")
            for deployment in deployments
            if {"success", "failure"} & set(deployment.states)
        }
        done = (
            all(threads.values())
            and any(subject.startswith("[ROLLED BACK]") for subject in subjects)
            and (sandbox.github is None or settled >= {release.id for release in releases})
        )
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    result.notifications = {
        "slack": [{"release": release_id, "thread": text} for release_id, text in threads.items() if text],
        "email": subjects,
        "github": [
            {
                "release": deployment.payload.get("release_id"),
                "environment": deployment.environment,
                "sha": deployment.sha,
                "statuses": deployment.states,
            }
            for deployment in deployments
        ],
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
        columns = (release.state.value, label, release.pipeline, release.trigger.value)
        lines.append("{:<10} {:<14} {:<10} {:<14} ".format(*columns) + release.id)
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
        receipt = receipt_of(history)
        if receipt is not None:
            lines.append(f"    receipt: {receipt.get('summary')}")
        lines.append("")
    for fleet, traffic in result.traffic.items():
        by_version = ", ".join(f"{version}: {count}" for version, count in sorted(traffic.by_version.items()))
        lines.append(
            f"Traffic through the {fleet} load balancer: {traffic.sent} sent, {traffic.failed} failed "
            f"({by_version})"
        )
    for fleet, version in result.serving.items():
        lines.append(f"The {fleet} fleet now serves: {version}")
    lines.append("")
    for thread in result.notifications.get("slack", []):
        lines.append(f"Slack thread of {thread['release']}:")
        lines.extend(f"    {line}" for line in str(thread["thread"]).splitlines())
    subjects = result.notifications.get("email", [])
    lines.append("Email: " + ("; ".join(subjects) if subjects else "none sent"))
    deployments = result.notifications.get("github", [])
    lines.append(f"GitHub deployments ({len(deployments)}):" if deployments else "GitHub deployments: none")
    lines.extend(
        f"    {deployment['environment']:<10} {deployment['sha'][:7]}  {' -> '.join(deployment['statuses'])}"
        for deployment in deployments
    )
    lines.append(
        "Timings: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in result.timings_s.items())
    )
    return "\n".join(lines)


def receipt_of(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The zero-downtime receipt recorded with the event that ended the release, if any."""
    ended = [event["detail"]["receipt"] for event in history if "receipt" in event["detail"]]
    return ended[-1] if ended else None


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
    both_fleets = set(result.traffic) == {STAGING, PRODUCTION}
    return 0 if both_fleets and result.requests_failed == 0 else 1


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Run the release flow on the embedded sandbox.")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    parser.add_argument("--instances", type=int, default=2, help="local instances behind the load balancer")
    arguments = parser.parse_args()
    sys.exit(main(as_json=arguments.json, instances=arguments.instances))

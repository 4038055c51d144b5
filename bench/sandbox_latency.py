"""The sandbox end to end (moto server on 127.0.0.1, local CodeDeploy agent running the real hooks,
local load balancer, the event pump invoking the handlers): latencies of one release, and failed
requests under steady load during a deploy, for HalfAtATime and AllAtOnce with 2 and 4 instances.

Each configuration gets its own sandbox: v1 is deployed first (the fleet then serves), v2 is
deployed under ``SteadyTraffic``. The deployment config is the sandbox pipeline's; the benchmark
swaps it in ``sandbox.runtime.PIPELINES_TOML`` for the run (the Sandbox reads it when it starts).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.measurement import Outcome, main, verdict

CONFIGURATIONS = (("HalfAtATime", 2), ("AllAtOnce", 2), ("HalfAtATime", 4), ("AllAtOnce", 4))
TRAFFIC_PER_S = 20.0
DEFAULT_CONFIG = "CodeDeployDefault.HalfAtATime"


@dataclass(frozen=True)
class ReleaseTimings:
    upload_to_create_deployment_s: float
    deploy_s: float
    codedeploy_done_to_release_reacts_s: float
    codedeploy_done_to_release_terminal_s: float
    upload_to_terminal_s: float
    state: str
    slack_card_updated_s: float | None


def _utc(moment: datetime) -> datetime:
    # moto stamps some times naive (UTC), the sandbox's extensions aware.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextmanager
def _deployment_config(name: str) -> Iterator[None]:
    from sandbox import runtime

    original = runtime.PIPELINES_TOML
    if DEFAULT_CONFIG not in original:
        raise RuntimeError("sandbox.runtime.PIPELINES_TOML no longer names a deployment_config to swap")
    runtime.PIPELINES_TOML = original.replace(DEFAULT_CONFIG, f"CodeDeployDefault.{name}")
    try:
        yield
    finally:
        runtime.PIPELINES_TOML = original


class SlackWatch:
    """Notes when the sandbox's Slack look-alike receives each ``chat.update`` (the card edited in
    place). Slack records calls without times, so a thread polls the call list."""

    def __init__(self, slack: Any) -> None:
        self._slack = slack
        self._seen = 0
        self.updates: list[datetime] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-slack-watch", daemon=True)

    def start(self) -> SlackWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(0.02):
            calls = self._slack.calls()
            for call in calls[self._seen :]:
                if call.method == "chat.update" and call.error is None:
                    self.updates.append(datetime.now(UTC))
            self._seen = len(calls)


def _release(sandbox: Any, version: str, watch: SlackWatch | None) -> ReleaseTimings:
    from chalicelib import bootstrap
    from sandbox import moto_extensions

    uploaded = datetime.now(UTC)
    release = sandbox.deploy(version)
    store = bootstrap.wiring().store
    deployment = moto_extensions.backend().deployments[release.deployment_id]
    created = _utc(deployment.create_time)
    completed = _utc(deployment.complete_time)
    history = store.history(release.id)
    stamps = [datetime.fromisoformat(event.to_dict()["timestamp"]) for event in history]
    after = [stamp for stamp in stamps if stamp >= completed]
    terminal = stamps[-1]
    card: float | None = None
    if watch is not None:
        time.sleep(2.0)  # give the outbox its moment; a card edited later counts from its time
        updates = [moment for moment in watch.updates if moment >= terminal]
        card = (updates[0] - completed).total_seconds() if updates else None
    return ReleaseTimings(
        upload_to_create_deployment_s=(created - uploaded).total_seconds(),
        deploy_s=(completed - _utc(deployment.start_time)).total_seconds(),
        codedeploy_done_to_release_reacts_s=(after[0] - completed).total_seconds() if after else float("nan"),
        codedeploy_done_to_release_terminal_s=(terminal - completed).total_seconds(),
        upload_to_terminal_s=(terminal - uploaded).total_seconds(),
        state=release.state.value,
        slack_card_updated_s=card,
    )


def _notifications_wired(sandbox: Any) -> bool:
    from chalicelib import bootstrap

    return sandbox.slack is not None and bootstrap.wiring().notifications is not None


def _configuration(config: str, instances: int) -> dict[str, Any]:
    from sandbox.runtime import Sandbox
    from sandbox.traffic import SteadyTraffic

    with (
        _deployment_config(config),
        tempfile.TemporaryDirectory(prefix="relco-bench-sandbox-") as workdir,
        Sandbox(Path(workdir), instances=instances) as sandbox,
    ):
        watch = SlackWatch(sandbox.slack).start() if _notifications_wired(sandbox) else None
        try:
            first = _release(sandbox, "1.0.0", watch)
            assert sandbox.endpoints is not None
            traffic = SteadyTraffic(sandbox.endpoints.lb_url + "/", rate_per_s=TRAFFIC_PER_S, concurrency=4)
            traffic.start()
            try:
                second = _release(sandbox, "2.0.0", watch)
            finally:
                report = traffic.stop()
        finally:
            if watch is not None:
                watch.stop()
    return {
        "config": config,
        "instances": instances,
        "releases": [first.__dict__, second.__dict__],
        "traffic": {"sent": report.sent, "failed": report.failed, "failures": report.failures[:5]},
        "notifications": watch is not None,
    }


def _seconds(values: list[float]) -> str:
    values = [value for value in values if not math.isnan(value)]  # NaN: no event after CodeDeploy
    if not values:
        return "not measured"
    spread = f"min {min(values):.2f}, max {max(values):.2f}, n={len(values)}"
    return f"median {statistics.median(values):.2f} s ({spread})"


def run() -> Outcome:
    outcome = Outcome()
    runs = [_configuration(config, instances) for config, instances in CONFIGURATIONS]
    releases = [release for run in runs for release in run["releases"]]
    outcome.add(
        "Sandbox: upload → CreateDeployment (S3 event via EventBridge→SQS, pump polls every 0.1 s)",
        _seconds([r["upload_to_create_deployment_s"] for r in releases]),
    )
    outcome.add(
        "Sandbox: CodeDeploy terminal → release moves (VERIFYING; pump polls every 0.1 s)",
        _seconds([r["codedeploy_done_to_release_reacts_s"] for r in releases]),
    )
    outcome.add(
        "Sandbox: CodeDeploy terminal → release SUCCEEDED (2 health checks, 1 s apart)",
        _seconds([r["codedeploy_done_to_release_terminal_s"] for r in releases]),
    )
    if any(run["notifications"] for run in runs):
        cards = [r["slack_card_updated_s"] for r in releases if r["slack_card_updated_s"] is not None]
        outcome.add("Sandbox: CodeDeploy terminal → Slack card updated", _seconds(cards))
    else:
        outcome.add(
            "Sandbox: CodeDeploy terminal → Slack card updated",
            "not built: the sandbox wires no notify queue or Slack route yet",
        )
    for run in runs:
        deploys = [r["deploy_s"] for r in run["releases"]]
        outcome.add(
            f"Sandbox: deploy duration, {run['config']}, {run['instances']} instances (v1, v2 under traffic)",
            f"{deploys[0]:.1f} s, {deploys[1]:.1f} s",
        )
    for run in runs:
        traffic = run["traffic"]
        states = "/".join(r["state"] for r in run["releases"])
        budgeted = run["config"] == "HalfAtATime"
        outcome.add(
            f"Sandbox: failed requests during the deploy under {TRAFFIC_PER_S:.0f} req/s, {run['config']}, "
            f"{run['instances']} instances",
            f"{traffic['failed']} of {traffic['sent']} (releases {states})",
            "0 (HalfAtATime)" if budgeted else "",
            verdict(traffic["failed"] == 0) if budgeted else "",
        )
    outcome.data = {
        "runs": runs,
        "release_seconds": [r["upload_to_terminal_s"] for r in releases if r["state"] == "SUCCEEDED"],
    }
    return outcome


if __name__ == "__main__":
    main(run)

"""The stuck-deployment watchdog's judgment: is a running CodeDeploy deployment making progress?

CodeDeploy itself waits up to an hour per lifecycle event (a hook's ``timeout``, at most 3600 s)
and as long as it takes for an agent that never polls. The watchdog looks at the deployment's
instance targets with their lifecycle events (BatchGetDeploymentTargets) and says, before that
hour is over, when the deployment will not get anywhere and what a person should look at next.

Pure: the caller reads the targets, the limits come from ``[pipeline.watchdog]``, and the verdict
says whether to stop the deployment and what to write in the history.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

# CodeDeploy's hook timeout when the appspec gives none, and its maximum (aws-facts.md, appspec).
CODEDEPLOY_HOOK_TIMEOUT = timedelta(seconds=3600)
# Where the CodeDeploy agent logs every hook's output on an EC2 instance (Linux).
AGENT_LOG = "/opt/codedeploy-agent/deployment-root/deployment-logs/codedeploy-agent-deployments.log"

# Release metadata written with the decision to stop, before StopDeployment is asked: whoever
# ends the release (the watchdog, CodeDeploy's STOP event, reconcile) ends it FAILED with this.
STOPPED_AS = "watchdog_class"
STOPPED_BECAUSE = "watchdog_next_step"
# The instances the watchdog first saw in the deployment (comma-separated, sorted), and those it
# already recorded as added since: an instance joining later is recorded once.
INSTANCES_AT_START = "watchdog_instances"
INSTANCES_ADDED = "watchdog_added"


@dataclass(frozen=True)
class WatchdogLimits:
    """``[pipeline.watchdog]``: how long a deployment may make no progress before it is stopped."""

    enabled: bool = True
    # Every instance still Pending (no lifecycle event started) for this long: the agent is not polling.
    agent_timeout: timedelta = timedelta(minutes=10)
    # The appspec's hook ``timeout`` (CodeDeploy's default when the appspec gives none).
    hook_timeout: timedelta = CODEDEPLOY_HOOK_TIMEOUT
    # Added to ``hook_timeout`` before a running hook counts as overrun: CodeDeploy's own
    # timeout should fire first, and the agent reports it late.
    margin: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class HookProgress:
    """One lifecycle event of an instance, as BatchGetDeploymentTargets reports it."""

    name: str
    status: str  # Pending | InProgress | Succeeded | Failed | Skipped | Unknown
    started_at: datetime | None = None
    message: str | None = None


@dataclass(frozen=True)
class TargetProgress:
    """One instance of a deployment with its lifecycle events."""

    instance_id: str
    status: str  # Pending | InProgress | Succeeded | Failed | Skipped | Unknown | Ready
    last_updated_at: datetime | None = None
    hooks: tuple[HookProgress, ...] = ()

    @property
    def untouched(self) -> bool:
        """Pending with no lifecycle event started: no agent has picked the deployment up here."""
        return self.status == "Pending" and all(hook.status == "Pending" for hook in self.hooks)


class StuckClass(StrEnum):
    AGENT_NOT_POLLING = "agent_not_polling"
    HOOK_OVERRUN = "hook_overrun"
    DOWNLOAD_FAILED = "download_failed"
    INSTANCE_ADDED = "instance_added"


@dataclass(frozen=True)
class Finding:
    """What the watchdog found: its class, ONE next-step line for people, and the facts behind it."""

    kind: StuckClass
    next_step: str
    detail: Mapping[str, str] = field(default_factory=dict)

    def reason(self, deployment_id: str) -> str:
        """The release's reason when the watchdog stopped its deployment."""
        return f"watchdog stopped CodeDeploy deployment {deployment_id}: {self.kind.value}: {self.next_step}"

    def as_metadata(self) -> dict[str, str]:
        return {STOPPED_AS: self.kind.value, STOPPED_BECAUSE: self.next_step}


@dataclass(frozen=True)
class Verdict:
    """``stop``: why the deployment must be stopped, or None; ``added``: instances that joined it
    since the watchdog first saw it, not yet recorded (recorded, no stop needed for that)."""

    stop: Finding | None = None
    added: Finding | None = None


def judge(
    targets: Sequence[TargetProgress],
    limits: WatchdogLimits,
    now: datetime,
    *,
    known_instances: Collection[str] | None = None,
) -> Verdict:
    """The verdict on a running deployment. ``known_instances``: the instances the deployment had
    when first seen and those already recorded as added (None: this is the first look).

    A failed download is the most specific, then an overrun hook, then an agent that never
    polled; only one of them stops the deployment and is named.
    """
    stop = (
        _download_failed(targets)
        or _hook_overrun(targets, limits, now)
        or _agent_not_polling(targets, limits, now)
    )
    return Verdict(stop=stop, added=_instances_added(targets, known_instances))


def stopped_by_watchdog(metadata: Mapping[str, str]) -> Finding | None:
    """The finding a watchdog stop was decided on, from the release's metadata (None: not stopped
    by the watchdog)."""
    kind, next_step = metadata.get(STOPPED_AS), metadata.get(STOPPED_BECAUSE)
    if kind is None or next_step is None:
        return None
    try:
        return Finding(StuckClass(kind), next_step)
    except ValueError:  # written by a newer coordinator: a plain stop
        return None


def _download_failed(targets: Sequence[TargetProgress]) -> Finding | None:
    for target in targets:
        for hook in target.hooks:
            if hook.name == "DownloadBundle" and hook.status == "Failed":
                lines = (hook.message or "").strip().splitlines()
                why = lines[0][:300] if lines else ""
                cause = f": {why}" if why else ""
                return Finding(
                    StuckClass.DOWNLOAD_FAILED,
                    f"DownloadBundle failed on {target.instance_id}{cause}: can the instance profile "
                    "read the bundle (s3:GetObject, s3:GetObjectVersion) and reach S3?",
                    {"instance": target.instance_id, "lifecycle_event": "DownloadBundle", "message": why},
                )
    return None


def _hook_overrun(targets: Sequence[TargetProgress], limits: WatchdogLimits, now: datetime) -> Finding | None:
    allowed = limits.hook_timeout + limits.margin
    for target in targets:
        for hook in target.hooks:
            if hook.status != "InProgress" or hook.started_at is None:
                continue
            running = now - hook.started_at
            if running > allowed:
                return Finding(
                    StuckClass.HOOK_OVERRUN,
                    f"{hook.name} on {target.instance_id} has run {_minutes(running)}, past its "
                    f"{_minutes(limits.hook_timeout)} timeout + {_minutes(limits.margin)}: "
                    f"what does its script wait for? See {AGENT_LOG} on the instance",
                    {
                        "instance": target.instance_id,
                        "lifecycle_event": hook.name,
                        "running_s": str(int(running.total_seconds())),
                        "limit_s": str(int(allowed.total_seconds())),
                    },
                )
    return None


def _agent_not_polling(
    targets: Sequence[TargetProgress], limits: WatchdogLimits, now: datetime
) -> Finding | None:
    # Only every instance untouched says the agent is the problem: a HalfAtATime deployment
    # leaves the second half Pending while the first half deploys.
    if not targets or not all(target.untouched for target in targets):
        return None
    since = [target.last_updated_at for target in targets if target.last_updated_at is not None]
    if len(since) != len(targets):
        return None
    waited = now - max(since)
    if waited <= limits.agent_timeout:
        return None
    instances = sorted(target.instance_id for target in targets)
    named = instances[0] if len(instances) == 1 else f"{instances[0]} (and {len(instances) - 1} more)"
    return Finding(
        StuckClass.AGENT_NOT_POLLING,
        f"agent on {named} did not poll for {_minutes(waited)}: is codedeploy-agent running?",
        {"instances": ",".join(instances), "waited_s": str(int(waited.total_seconds()))},
    )


def _instances_added(targets: Sequence[TargetProgress], known: Collection[str] | None) -> Finding | None:
    if known is None:
        return None
    added = sorted(target.instance_id for target in targets if target.instance_id not in known)
    if not added:
        return None
    return Finding(
        StuckClass.INSTANCE_ADDED,
        f"{', '.join(added)} joined the deployment while it ran (Auto Scaling?): "
        "check it runs the new revision once the release ends",
        {"instances": ",".join(added)},
    )


def _minutes(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min"

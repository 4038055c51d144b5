"""A deployment's progress as CodeDeploy reports it (BatchGetDeploymentTargets, GetDeployment's
overview): per instance its status and lifecycle events with their diagnostics, written to moto
after every change."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appspec import LIFECYCLE_EVENTS
from sandbox import moto_extensions


@dataclass(frozen=True)
class Diagnostics:
    error_code: str  # Success | ScriptMissing | ScriptFailed | ScriptTimedOut | UnknownError
    script_name: str
    message: str
    log_tail: str

    def as_dict(self) -> dict[str, str]:
        return {
            "errorCode": self.error_code,
            "scriptName": self.script_name,
            "message": self.message,
            "logTail": self.log_tail,
        }


@dataclass(frozen=True)
class StepOutcome:
    status: str  # Succeeded | Failed | Skipped
    diagnostics: Diagnostics | None = None

    @classmethod
    def failed(
        cls, message: str, error_code: str = "UnknownError", script: str = "", tail: str = ""
    ) -> StepOutcome:
        return cls("Failed", Diagnostics(error_code, script, message, tail))


SKIPPED = StepOutcome("Skipped")
SUCCEEDED = StepOutcome("Succeeded")


@dataclass
class LifecycleEvent:
    name: str
    status: str = "Pending"
    start_time: datetime | None = None
    end_time: datetime | None = None
    diagnostics: Diagnostics | None = None

    def as_dict(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"lifecycleEventName": self.name, "status": self.status}
        if self.start_time:
            fields["startTime"] = self.start_time
        if self.end_time:
            fields["endTime"] = self.end_time
        if self.diagnostics:
            fields["diagnostics"] = self.diagnostics.as_dict()
        return fields


@dataclass
class InstanceTarget:
    instance_id: str
    status: str = "Pending"  # Pending | InProgress | Succeeded | Failed | Skipped
    events: list[LifecycleEvent] = field(
        default_factory=lambda: [LifecycleEvent(n) for n in LIFECYCLE_EVENTS]
    )

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "lifecycleEvents": [event.as_dict() for event in self.events]}

    def event(self, name: str) -> LifecycleEvent:
        return next(event for event in self.events if event.name == name)


class DeploymentProgress:
    """Per-instance progress, written to moto after every change so a reader (the coordinator's
    ListDeploymentTargets/BatchGetDeploymentTargets, GetDeployment) sees it as it happens."""

    def __init__(self, deployment_id: str, instance_ids: Sequence[str], region: str) -> None:
        self.deployment_id = deployment_id
        self.region = region
        self._targets = {instance_id: InstanceTarget(instance_id) for instance_id in instance_ids}
        # Instances of one batch report from their own threads.
        self._lock = threading.Lock()
        self.publish()

    def set_status(self, instance_id: str, status: str) -> None:
        with self._lock:
            target = self._targets[instance_id]
            target.status = status
            if status in ("Succeeded", "Failed", "Skipped"):
                for event in target.events:
                    if event.status in ("Pending", "InProgress"):
                        event.status = "Skipped"
        self.publish()

    def event_started(self, instance_id: str, name: str) -> None:
        with self._lock:
            event = self._targets[instance_id].event(name)
            event.status, event.start_time = "InProgress", datetime.now(UTC)
        self.publish()

    def event_finished(self, instance_id: str, name: str, outcome: StepOutcome) -> None:
        with self._lock:
            event = self._targets[instance_id].event(name)
            event.status, event.end_time, event.diagnostics = (
                outcome.status,
                datetime.now(UTC),
                outcome.diagnostics,
            )
        self.publish()

    def publish(self) -> None:
        with self._lock:
            targets = {instance_id: target.as_dict() for instance_id, target in self._targets.items()}
            counts: dict[str, int] = {}
            for target in self._targets.values():
                counts[target.status] = counts.get(target.status, 0) + 1
        moto_extensions.set_instance_targets(self.deployment_id, targets, region=self.region)
        moto_extensions.set_deployment_overview(self.deployment_id, counts, region=self.region)

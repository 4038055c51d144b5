"""The release record: a Step Functions-style state machine with a numbered history.

A transition returns a new ``Release`` plus the history event that explains it; the store writes
both in one conditional write, so the history event doubles as the notification outbox.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from chalicelib.domain.verification import Verification


class ReleaseState(StrEnum):
    RECEIVED = "RECEIVED"
    # Before it takes the slot: a person must approve it ([pipeline.approval]).
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    QUEUED = "QUEUED"
    DEPLOYING = "DEPLOYING"
    VERIFYING = "VERIFYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    SUPERSEDED = "SUPERSEDED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {ReleaseState.SUCCEEDED, ReleaseState.FAILED, ReleaseState.STOPPED, ReleaseState.SUPERSEDED}
)

# DESIGN.md section 3. Anything not listed is ignored: duplicate and late events are normal.
ALLOWED_TRANSITIONS: Mapping[ReleaseState, frozenset[ReleaseState]] = {
    # RECEIVED -> SUPERSEDED: an upload S3 stored before one the pipeline already took.
    ReleaseState.RECEIVED: frozenset(
        {
            ReleaseState.AWAITING_APPROVAL,
            ReleaseState.QUEUED,
            ReleaseState.DEPLOYING,
            ReleaseState.FAILED,
            ReleaseState.SUPERSEDED,
        }
    ),
    # -> STOPPED: rejected, cancelled, or the approval expired; -> SUPERSEDED: a newer release
    # awaits approval in its place.
    # -> FAILED: approved while an alarm is in ALARM (``verify.alarm_at_start = "fail"``).
    ReleaseState.AWAITING_APPROVAL: frozenset(
        {
            ReleaseState.QUEUED,
            ReleaseState.DEPLOYING,
            ReleaseState.FAILED,
            ReleaseState.STOPPED,
            ReleaseState.SUPERSEDED,
        }
    ),
    # -> FAILED: its turn came while an alarm is in ALARM (``verify.alarm_at_start = "fail"``).
    ReleaseState.QUEUED: frozenset(
        {ReleaseState.DEPLOYING, ReleaseState.FAILED, ReleaseState.STOPPED, ReleaseState.SUPERSEDED}
    ),
    ReleaseState.DEPLOYING: frozenset(
        {
            ReleaseState.VERIFYING,
            ReleaseState.SUCCEEDED,
            ReleaseState.FAILED,
            ReleaseState.STOPPED,
        }
    ),
    ReleaseState.VERIFYING: frozenset({ReleaseState.SUCCEEDED, ReleaseState.FAILED, ReleaseState.STOPPED}),
}


class Trigger(StrEnum):
    UPLOAD = "upload"
    API = "api"
    ROLLBACK = "rollback"
    AUTO_ROLLBACK = "auto_rollback"
    EXTERNAL = "external"
    # A revision the upstream pipeline verified (``promote_from``), deployed downstream as it is.
    PROMOTION = "promotion"

    @property
    def is_rollback(self) -> bool:
        """A rollback (asked for, or automatic) goes ahead of every waiting release, is never
        superseded and never causes another rollback."""
        return self in (Trigger.ROLLBACK, Trigger.AUTO_ROLLBACK)


class EventType(StrEnum):
    """History event types, named after Step Functions' execution history."""

    EXECUTION_STARTED = "ExecutionStarted"
    STATE_ENTERED = "StateEntered"
    TASK_SCHEDULED = "TaskScheduled"
    TASK_STARTED = "TaskStarted"
    TASK_SUCCEEDED = "TaskSucceeded"
    TASK_FAILED = "TaskFailed"
    EXECUTION_SUCCEEDED = "ExecutionSucceeded"
    EXECUTION_FAILED = "ExecutionFailed"
    EXECUTION_ABORTED = "ExecutionAborted"


_EVENT_FOR_TARGET: Mapping[ReleaseState, EventType] = {
    ReleaseState.SUCCEEDED: EventType.EXECUTION_SUCCEEDED,
    ReleaseState.FAILED: EventType.EXECUTION_FAILED,
    ReleaseState.STOPPED: EventType.EXECUTION_ABORTED,
    ReleaseState.SUPERSEDED: EventType.EXECUTION_ABORTED,
}

Detail = Mapping[str, Any]

# The metadata key of a release started by break-glass (its value: the reason given); the history
# event of its start carries the reason, the actor and the freeze it broke.
BREAK_GLASS = "break_glass"
# The metadata key of a promotion release: the upstream release whose revision it deploys.
PROMOTED_FROM = "promoted_from"
PROMOTED_FROM_PIPELINE = "promoted_from_pipeline"
# The metadata key a manual rollback sets on the release it rolls back, when other pipelines
# promote from its pipeline: that release is never promoted again.
ROLLED_BACK_BY = "rolled_back_by"


@dataclass(frozen=True)
class Revision:
    """Exactly one S3 object version: what CodeDeploy is asked to deploy."""

    bucket: str
    key: str
    version: str | None
    etag: str | None

    @property
    def bundle_type(self) -> str | None:
        return bundle_type_of(self.key)

    def to_dict(self) -> dict[str, str | None]:
        return {"bucket": self.bucket, "key": self.key, "version": self.version, "etag": self.etag}


def bundle_type_of(key: str) -> str | None:
    """CodeDeploy's bundle type from a key's extension, or None when it has none it knows."""
    lowered = key.lower()
    if lowered.endswith((".tar.gz", ".tgz")):
        return "tgz"
    if lowered.endswith(".tar"):
        return "tar"
    if lowered.endswith(".zip"):
        return "zip"
    return None


def upload_release_id(revision: Revision) -> str:
    """The id of the release an upload creates: the same object version always gives the same id,
    whatever the delivery, so a repeated delivery finds its release already there."""
    identity = revision.version or revision.etag or ""
    digest = hashlib.sha256(f"{revision.bucket}\n{revision.key}\n{identity}".encode()).hexdigest()
    return f"rel-{digest[:20]}"


def rollback_release_id(failed_release_id: str) -> str:
    """One auto-rollback per failed release, however often its failure is reported."""
    return f"rb-{failed_release_id}"


def promotion_release_id(downstream: str, upstream_release_id: str) -> str:
    """One promotion of an upstream release into each downstream pipeline, however often it is
    found due (a wake-up, reconcile, ``relco promote``)."""
    digest = hashlib.sha256(f"{downstream}\n{upstream_release_id}".encode()).hexdigest()
    return f"pr-{digest[:20]}"


def external_release_id(deployment_id: str) -> str:
    """The id of the release recorded for a deployment the coordinator did not start."""
    return f"ext-{deployment_id}"


@dataclass(frozen=True)
class HistoryEvent:
    id: int
    previous_event_id: int
    timestamp: datetime
    type: EventType
    state: ReleaseState
    detail: Detail = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "previous_event_id": self.previous_event_id,
            "timestamp": self.timestamp.isoformat(),
            "type": self.type.value,
            "state": self.state.value,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class Release:
    id: str
    pipeline: str
    application: str
    deployment_group: str
    revision: Revision
    trigger: Trigger
    state: ReleaseState
    created_at: datetime
    updated_at: datetime
    reason: str = ""
    deployment_id: str | None = None
    actor: str | None = None
    rollback_of: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # When a start (CreateDeployment) was last claimed: a second delivery of the same upload
    # leaves a fresh claim alone instead of deploying twice.
    start_claimed_at: datetime | None = None
    # Health verification after CodeDeploy succeeded (VERIFYING and after).
    verification: Verification | None = None
    # Slack threads following the release: notify route key -> "<channel id>/<root ts>".
    notification_threads: Mapping[str, str] = field(default_factory=dict)
    # Optimistic-lock version of the stored item; 0 until first written.
    version: int = 0
    last_event_id: int = 0

    @property
    def created_key(self) -> str:
        """Where the release sits among its pipeline's, oldest first: the sort key of the store's
        by-pipeline index, and the position a page of releases is read before."""
        return f"{self.created_at.isoformat()}#{self.id}"

    @property
    def awaiting_deployment(self) -> bool:
        """Holds the slot but CodeDeploy has no deployment for it yet."""
        return self.state is ReleaseState.DEPLOYING and self.deployment_id is None

    def to_dict(self) -> dict[str, Any]:
        """The release JSON of the API and CLI (DESIGN.md section 5), without history."""
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "application": self.application,
            "deployment_group": self.deployment_group,
            "state": self.state.value,
            "reason": self.reason,
            "deployment_id": self.deployment_id,
            "revision": self.revision.to_dict(),
            "trigger": self.trigger.value,
            "rollback_of": self.rollback_of,
            "actor": self.actor,
            "metadata": dict(self.metadata),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class Step:
    """A release as it will be after a write, with the history events that write appends."""

    release: Release
    events: tuple[HistoryEvent, ...]


def new_release(
    *,
    release_id: str,
    pipeline: str,
    application: str,
    deployment_group: str,
    revision: Revision,
    trigger: Trigger,
    now: datetime,
    actor: str | None = None,
    rollback_of: str | None = None,
    metadata: Mapping[str, str] | None = None,
    deployment_id: str | None = None,
) -> Step:
    """A release in RECEIVED, with its ExecutionStarted event."""
    release = Release(
        id=release_id,
        pipeline=pipeline,
        application=application,
        deployment_group=deployment_group,
        revision=revision,
        trigger=trigger,
        state=ReleaseState.RECEIVED,
        created_at=now,
        updated_at=now,
        actor=actor,
        rollback_of=rollback_of,
        metadata=dict(metadata or {}),
        deployment_id=deployment_id,
    )
    started_detail: dict[str, Any] = {"trigger": trigger.value, "revision": revision.to_dict()}
    if actor:
        started_detail["actor"] = actor
    if rollback_of:
        started_detail["rollback_of"] = rollback_of
    return record(Step(release, ()), EventType.EXECUTION_STARTED, now=now, detail=started_detail)


def record(step: Step, event_type: EventType, *, now: datetime, detail: Detail | None = None) -> Step:
    """Append a history event without changing state (a task scheduled, started, failed...)."""
    release = step.release
    event = HistoryEvent(
        id=release.last_event_id + 1,
        previous_event_id=release.last_event_id,
        timestamp=now,
        type=event_type,
        state=release.state,
        detail=dict(detail or {}),
    )
    updated = dataclasses.replace(release, last_event_id=event.id, updated_at=now)
    return Step(updated, (*step.events, event))


@dataclass(frozen=True)
class Refused:
    """A transition the state machine does not allow: logged by the caller, never raised."""

    release_id: str
    current: ReleaseState
    target: ReleaseState

    @property
    def message(self) -> str:
        return f"release {self.release_id}: {self.current} -> {self.target} is not a transition; ignored"


def can_transition(current: ReleaseState, target: ReleaseState) -> bool:
    return target in ALLOWED_TRANSITIONS.get(current, frozenset())


def transition(
    step: Step,
    target: ReleaseState,
    *,
    now: datetime,
    reason: str,
    detail: Detail | None = None,
    **changes: Any,
) -> Step | Refused:
    """Move the release to ``target`` with one history event, or refuse.

    ``changes`` sets other release fields in the same write (deployment id, start claim...).
    """
    release = step.release
    if not can_transition(release.state, target):
        return Refused(release.id, release.state, target)
    event_type = _EVENT_FOR_TARGET.get(target, EventType.STATE_ENTERED)
    moved = dataclasses.replace(release, state=target, reason=reason, **changes)
    event_detail = {"from": release.state.value, "reason": reason, **(detail or {})}
    return record(Step(moved, step.events), event_type, now=now, detail=event_detail)


def update(step: Step, *, now: datetime, **changes: Any) -> Step:
    """Change release fields that are not its state (start claim, deployment id)."""
    return Step(dataclasses.replace(step.release, updated_at=now, **changes), step.events)

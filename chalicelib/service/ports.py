"""What the use cases need from the outside world, as small interfaces.

Adapters in ``chalicelib.adapters`` implement these against AWS; tests may hand in others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.domain.release import HistoryEvent, Release, Revision
from chalicelib.domain.slot import PipelineSlot
from chalicelib.domain.verification import AlarmStatus, TargetGroupSettings, TargetHealth, VerifyRequest

if TYPE_CHECKING:
    # Named in the interfaces only: loaded by the code that uses them, not by every function's
    # cold start (DESIGN.md section 8). The store commits the domain's Change (domain/lane.py).
    from chalicelib.domain.fleet import GroupDeployment
    from chalicelib.domain.lane import Change
    from chalicelib.domain.traffic import QueryPlan, Series
    from chalicelib.domain.wakeups import WakeUp
    from chalicelib.domain.watchdog import TargetProgress


class WriteConflict(Exception):
    """A conditional write lost a race: re-read and decide again."""


class ReleaseStore(Protocol):
    def get_release(self, release_id: str) -> Release | None: ...

    def get_releases(self, release_ids: Sequence[str]) -> list[Release]: ...

    def get_slot(self, pipeline: str) -> PipelineSlot: ...

    def read_lane(
        self, pipeline: str, release_ids: Sequence[str], *, next_in_line: bool = False
    ) -> tuple[PipelineSlot, dict[str, Release]]:
        """The pipeline's slot and those of the releases that exist, read together (one
        strongly consistent batch read); a decision's conditional write catches any change since.
        ``next_in_line``: also the release this container last saw at the head of the slot's
        waiting line, which a finish hands the slot to (a guess: when the line moved since, the
        lane asks for the head it needs)."""
        ...

    def release_for_deployment(self, deployment_id: str) -> str | None: ...

    def remembered_release_for_deployment(self, deployment_id: str) -> str | None:
        """The deployment's release as this container already knows it (a link it wrote or
        read; links never change), without a call; None when it does not know."""
        ...

    def ended_release_for_deployment(self, deployment_id: str) -> str | None:
        """The release the deployment carried, when this container wrote or read it in a terminal
        state (nothing moves a release out of one), without a call; None when it does not know."""
        ...

    def history(self, release_id: str) -> list[HistoryEvent]: ...

    def open_releases(self, pipeline: str) -> list[Release]:
        """Releases of a pipeline not yet in a terminal state."""
        ...

    def commit(self, change: Change) -> dict[str, Release]:
        """Write the change in one transaction; raise ``WriteConflict`` if any condition fails.
        Returns the change's releases as stored (their new versions), by id."""
        ...

    def list_releases(self, pipeline: str, limit: int, before: str | None) -> list[Release]:
        """A pipeline's releases newest first, older than the position ``before`` (a release's
        ``created_at.isoformat()#id``), at most ``limit``."""
        ...

    def request_ledger(self) -> RequestLedger:
        """The answers to requests made with an idempotency key, kept beside the releases."""
        ...


class IdempotencyKeyReused(Exception):
    """The idempotency key was first used for a different request."""


class IdempotencyKeyBusy(Exception):
    """The first request made with the idempotency key is still being answered."""


class RequestLedger(Protocol):
    """Requests carried out at most once per idempotency key (the HTTP API's ``Idempotency-Key``,
    chalicelib/http_api.py): the first answer is kept and given again to the same request."""

    def answer_once(
        self, key: str, request_hash: str, answer: Callable[[], dict[str, Any]], time_left: timedelta
    ) -> tuple[dict[str, Any], bool]:
        """The answer to the request, and whether it is the kept answer of an earlier one.

        ``request_hash`` says what makes two requests the same; ``answer`` (JSON) runs only when
        no answer is kept and no request with the key is running. ``time_left`` is how long
        this request can still run: a claim older than that belongs to a request that died, and
        a retry takes it over. When ``answer`` raises, nothing is kept and the key is free again.
        Raises ``IdempotencyKeyReused`` and ``IdempotencyKeyBusy``."""
        ...


@dataclass(frozen=True)
class StoredObject:
    """An S3 object version as it exists, with the user metadata CI attached to it."""

    revision: Revision
    metadata: Mapping[str, str]
    # When S3 stored this version (HeadObject's LastModified, whole seconds).
    stored_at: datetime | None = None


class ArtifactAccessDenied(Exception):
    """S3 refused to show the object (403): the function's role lacks a permission. Never read
    as "missing", since with ``s3:ListBucket`` granted S3 answers 404 for that."""

    def __init__(self, bucket: str, key: str, code: str) -> None:
        super().__init__(f"S3 denied HeadObject on s3://{bucket}/{key} ({code})")
        self.bucket = bucket
        self.key = key
        self.code = code


class ArtifactStore(Protocol):
    def find(self, bucket: str, key: str, version_id: str | None) -> StoredObject | None:
        """The object (that version, if given), or None when S3 does not have it. Raises
        ``ArtifactAccessDenied`` when S3 refuses to say."""
        ...


class DeploymentBusy(Exception):
    """CodeDeploy already runs a deployment for the group (started outside the coordinator)."""

    def __init__(self, message: str, active_deployment_id: str | None) -> None:
        super().__init__(message)
        self.active_deployment_id = active_deployment_id


class DeploymentNotFound(Exception):
    """CodeDeploy has no such deployment (a malformed or foreign id, or one long deleted)."""


class DeploymentAlreadyEnded(Exception):
    """StopDeployment came too late: the deployment already finished."""


class RevisionRejected(Exception):
    """CodeDeploy refuses this revision or target for good: retrying cannot help."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class DeploymentInfo:
    deployment_id: str
    application: str
    deployment_group: str
    status: str  # CodeDeploy's: Created, Queued, InProgress, Baking, Succeeded, Failed, Stopped, Ready
    revision: Revision | None
    creator: str
    # GetDeployment's createTime.
    created_at: datetime | None = None
    # The release the coordinator started this deployment for, if it did.
    release_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    # ALB target groups of the deployment (names, as GetDeployment gives them).
    target_group_names: tuple[str, ...] = ()
    # CodeDeploy rolls back by itself on failure (autoRollbackConfiguration with DEPLOYMENT_FAILURE).
    rolls_back_on_failure: bool = False
    # For a rollback CodeDeploy started: the deployment whose failure triggered it.
    rollback_of_deployment_id: str | None = None
    # Instances by CodeDeploy status (deploymentOverview: Pending, InProgress, Succeeded, ...).
    instance_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LifecycleEvent:
    name: str
    status: str
    error_code: str | None = None
    script_name: str | None = None
    message: str | None = None
    log_tail: str | None = None


@dataclass(frozen=True)
class InstanceTarget:
    instance_id: str
    status: str  # Pending, InProgress, Succeeded, Failed, Skipped, Unknown, Ready
    lifecycle_events: tuple[LifecycleEvent, ...] = ()


class Deployments(Protocol):
    def create(self, release: Release, deployment_config: str) -> str:
        """Start a CodeDeploy deployment of the release's revision; return its id.

        Raises ``DeploymentBusy`` or ``RevisionRejected``; throttling and server errors propagate.
        """
        ...

    def find_for_release(self, release: Release) -> str | None:
        """A deployment already created for this release (CreateDeployment takes no client
        token, so a retry must look before it creates)."""
        ...

    def describe(self, deployment_id: str) -> DeploymentInfo: ...

    def stop(self, deployment_id: str, auto_rollback: bool) -> None:
        """Ask CodeDeploy to stop the deployment (its STOP event follows); ``auto_rollback`` has
        CodeDeploy redeploy the previous revision to the instances already updated. Raises
        ``DeploymentAlreadyEnded``."""
        ...

    def instance_ids(self, deployment_id: str, status: str) -> list[str]:
        """The instances of the deployment in CodeDeploy's ``status`` (Succeeded, Failed, ...):
        one filtered ListDeploymentTargets, no details."""
        ...

    def instance_targets(self, deployment_id: str, status: str) -> list[InstanceTarget]:
        """The instances of the deployment in ``status``, with their lifecycle events."""
        ...

    def group_deployments(self, application: str, group: str, count: int) -> list[GroupDeployment]:
        """The group's ``count`` newest deployments, newest first (chalicelib/domain/fleet.py)."""
        ...

    def target_progress(self, deployment_id: str) -> list[TargetProgress]:
        """Every instance of the deployment with its lifecycle events and when each started
        (none before CodeDeploy starts the deployment)."""
        ...


class LoadBalancing(Protocol):
    def target_groups(self, names: Sequence[str]) -> list[TargetGroupSettings]: ...

    def target_health(self, target_group_arn: str, target_ids: Sequence[str]) -> list[TargetHealth]: ...

    def registered_targets(self, target_group_arn: str) -> list[TargetHealth]:
        """Every target registered with the group, with its health."""
        ...


class Alarms(Protocol):
    def alarm_states(self, names: Sequence[str]) -> list[AlarmStatus]:
        """The named CloudWatch alarms that exist, with their state; a name with no alarm is
        left out. Raises ``AlarmReadError``."""
        ...


class TrafficMetrics(Protocol):
    def metric_series(self, plan: QueryPlan) -> Series:
        """The plan's data points by query id (one GetMetricData). Raises ``MetricsReadError``."""
        ...


class VerifyQueue(Protocol):
    def schedule(self, request: VerifyRequest, delay_s: int) -> None: ...

    def schedule_wake(self, wake: WakeUp, delay_s: int) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...

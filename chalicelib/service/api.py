"""The use cases behind the HTTP API: read releases and pipelines; deploy, redeploy, roll back
and cancel on behalf of a caller, who is recorded as the actor.

Each returns what it found or did, or raises a ``Refused`` (chalicelib/domain/api_requests.py)
whose message says what to fix; chalicelib/api.py turns both into HTTP answers. New releases go
through ``submit``, like uploads, so the API adds no second way into a pipeline's slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain.api_requests import (
    ConflictingState,
    DeployRequest,
    InvalidValue,
    ListQuery,
    NotFound,
    encode_cursor,
    known_release_id,
)
from chalicelib.domain.lane import Change, Submission, change_of
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import (
    EventType,
    HistoryEvent,
    Release,
    ReleaseState,
    Revision,
    Step,
    Trigger,
    record,
)
from chalicelib.domain.slot import PipelineSlot
from chalicelib.log import logger
from chalicelib.service.aws_errors import aws_error_code
from chalicelib.service.lane_commands import Cancellation, cancel_release, roll_back_pipeline, still_in_s3
from chalicelib.service.ports import DeploymentAlreadyEnded
from chalicelib.service.slot_flow import on_release
from chalicelib.service.submission import submit
from chalicelib.service.wiring import Wiring

# Instance statuses CodeDeploy is done with.
_DONE_STATUSES = ("Succeeded", "Failed", "Skipped", "Ready")


@dataclass(frozen=True)
class ReleasePage:
    """Releases newest first, and the token of the next page (None: this is the last)."""

    releases: list[Release]
    next_token: str | None


@dataclass(frozen=True)
class ReleaseDetail:
    release: Release
    history: list[HistoryEvent]
    # How far a DEPLOYING or VERIFYING release got; None otherwise, or when CodeDeploy could not say.
    progress: Mapping[str, Any] | None


@dataclass(frozen=True)
class Submitted:
    """A release the API asked for, as it stands after its start (with its deployment id, or
    FAILED if CodeDeploy refused it)."""

    release: Release
    # False: the release already existed (a repeated request made it before).
    created: bool


@dataclass(frozen=True)
class PipelineStatus:
    pipeline: Pipeline
    slot: PipelineSlot

    @property
    def named_releases(self) -> list[str]:
        """The ids of the releases the slot names: active, waiting, last good."""
        slot = self.slot
        return [release_id for release_id in (slot.active, *slot.waiting, slot.last_good) if release_id]


@dataclass(frozen=True)
class PipelineDetail:
    status: PipelineStatus
    # The releases the slot names, by id (one the store no longer has is left out).
    releases: Mapping[str, Release]


def list_releases(wiring: Wiring, query: ListQuery) -> ReleasePage:
    """Newest first. Without a pipeline, each configured pipeline's page is read and merged: one
    query per pipeline, and the token (a position in time) works the same for one or all."""
    if query.pipeline is not None:
        _pipeline_for_value(wiring, query.pipeline)
        names = [query.pipeline]
    else:
        names = [pipeline.name for pipeline in wiring.pipelines.pipelines]
    # One more than asked says whether there is a next page.
    found = [
        release
        for name in names
        for release in wiring.store.list_releases(name, query.limit + 1, query.before)
    ]
    found.sort(key=_position, reverse=True)
    page = found[: query.limit]
    token = encode_cursor(_position(page[-1])) if len(found) > query.limit else None
    return ReleasePage(page, token)


def _position(release: Release) -> str:
    """Where the release sits in the by_pipeline index (its ``created_key``)."""
    return f"{release.created_at.isoformat()}#{release.id}"


def release_detail(wiring: Wiring, release_id: str) -> ReleaseDetail:
    release = _release(wiring, release_id)
    return ReleaseDetail(release, wiring.store.history(release.id), _progress(wiring, release))


def _progress(wiring: Wiring, release: Release) -> dict[str, Any] | None:
    """How far the release got: CodeDeploy's instance counts while deploying, the healthy
    streak while verifying."""
    if release.state is ReleaseState.VERIFYING and release.verification is not None:
        verification = release.verification
        return {
            "phase": "verifying",
            "checks_done": verification.checks_done,
            "checks_needed": verification.healthy_checks,
            "deadline": verification.deadline.isoformat(),
        }
    if release.state is not ReleaseState.DEPLOYING or release.deployment_id is None:
        return None
    try:
        info = wiring.deployments.describe(release.deployment_id)
    except Exception:
        # Progress is a courtesy: the release itself was read, so answer without it.
        logger.warning("could not read the deployment's progress", extra={"release_id": release.id})
        return None
    counts = dict(info.instance_counts)
    return {
        "phase": "deploying",
        "deployment_status": info.status,
        "instances_total": sum(counts.values()),
        "instances_done": sum(counts.get(status, 0) for status in _DONE_STATUSES),
        "instances": counts,
    }


def deploy(wiring: Wiring, request: DeployRequest, actor: str, release_id: str) -> Submitted:
    """Deploy an object of a pipeline that is already in S3 (an upload that was missed, or an
    older object again)."""
    pipeline = _pipeline_for_value(wiring, request.pipeline)
    where = f"s3://{pipeline.bucket}/{pipeline.prefix}"
    if request.bucket is not None and request.bucket != pipeline.bucket:
        raise InvalidValue(
            f"pipeline {pipeline.name!r} deploys from bucket {pipeline.bucket!r}, not {request.bucket!r}"
        )
    if not pipeline.matches(pipeline.bucket, request.key):
        raise InvalidValue(
            f"key {request.key[:200]!r} is not under {where}: "
            f"pipeline {pipeline.name!r} deploys only from there"
        )
    if Revision(pipeline.bucket, request.key, None, None).bundle_type is None:
        raise InvalidValue(
            f"key {request.key[:200]!r} is not a CodeDeploy bundle: "
            "it must end in .zip, .tar, .tar.gz or .tgz"
        )
    stored = wiring.artifacts.find(pipeline.bucket, request.key, request.version)
    if stored is None:
        version = f" version {request.version!r}" if request.version else ""
        raise InvalidValue(f"s3://{pipeline.bucket}/{request.key}{version} does not exist: upload it first")
    return _submit(
        wiring,
        pipeline,
        stored.revision,
        trigger=Trigger.API,
        actor=actor,
        release_id=release_id,
        metadata=stored.metadata,
    )


def redeploy(wiring: Wiring, release_id: str, actor: str, new_release_id: str) -> Submitted:
    """Deploy the exact revision of an earlier release again, as a new release."""
    original = _release(wiring, release_id)
    if not original.state.is_terminal:
        raise ConflictingState(
            f"release {original.id} is still {original.state.value}; wait for it to end or cancel it first"
        )
    pipeline = _pipeline_for_release(wiring, original)
    stored = still_in_s3(wiring, original)
    return _submit(
        wiring,
        pipeline,
        stored.revision,
        trigger=Trigger.API,
        actor=actor,
        release_id=new_release_id,
        metadata={**original.metadata, "redeploy_of": original.id},
    )


def roll_back(
    wiring: Wiring, pipeline_name: str, to: str | None, actor: str, new_release_id: str
) -> Submitted:
    """A new release of an earlier verified revision: ``to``, or the pipeline's last good one
    (the lane chooses). Like an automatic rollback it goes ahead of every waiting release."""
    pipeline = _pipeline_for_path(wiring, pipeline_name)
    release, created = roll_back_pipeline(wiring, pipeline, to, actor, new_release_id)
    # As it stands after the start: with its deployment id, or FAILED if CodeDeploy refused it.
    return Submitted(wiring.store.get_release(release.id) or release, created)


def cancel(wiring: Wiring, release_id: str, actor: str) -> Cancellation:
    """A waiting or verifying release stops at once (the lane decides); a deploying one asks
    CodeDeploy to stop, and CodeDeploy's STOP event then finishes it."""
    cancellation = cancel_release(wiring, release_id, actor)
    release = cancellation.release
    if cancellation.stopped:
        return cancellation
    assert release.deployment_id is not None  # the lane refuses a release still being started
    pipeline = wiring.pipelines.named(release.pipeline)
    # The pipeline's rollback setting decides whether CodeDeploy puts the previous revision back
    # on the instances this deployment already updated.
    auto_rollback = bool(pipeline and pipeline.rollback.on_deploy_failure)
    stop = {"task": "StopDeployment", "deployment_id": release.deployment_id, "auto_rollback": auto_rollback}
    try:
        wiring.deployments.stop(release.deployment_id, auto_rollback)
    except DeploymentAlreadyEnded:
        raise ConflictingState(
            f"CodeDeploy deployment {release.deployment_id} already ended; release {release.id} "
            "records its outcome shortly"
        ) from None
    except Exception as refused:
        # The deployment goes on; the history says who asked and why it did not stop. The error
        # itself answers the caller (chalicelib.api names its AWS code).
        detail = {**stop, "actor": actor, "aws_error": aws_error_code(refused), "error": str(refused)[:500]}
        try:
            _record_on_deploying(wiring, release.id, EventType.TASK_FAILED, detail)
        except Exception:
            logger.exception("could not record the refused cancel", extra={"release_id": release.id})
        raise
    scheduled = _record_on_deploying(wiring, release.id, EventType.TASK_SCHEDULED, {**stop, "actor": actor})
    return Cancellation(scheduled, stopped=False)


def _record_on_deploying(
    wiring: Wiring, release_id: str, event_type: EventType, detail: Mapping[str, Any]
) -> Release:
    """One history event on a release that is still DEPLOYING (none once it moved on)."""

    def note(release: Release, now: datetime) -> Change | None:
        if release.state is not ReleaseState.DEPLOYING:
            return None
        step = record(Step(release, ()), event_type, now=now, detail=dict(detail))
        return change_of([step])

    return on_release(wiring, release_id, note) or _release(wiring, release_id)


def list_pipelines(wiring: Wiring) -> list[PipelineStatus]:
    return [_pipeline_status(wiring, pipeline) for pipeline in wiring.pipelines.pipelines]


def pipeline_detail(wiring: Wiring, name: str) -> PipelineDetail:
    """The pipeline with its slot, and the releases the slot names in full."""
    status = _pipeline_status(wiring, _pipeline_for_path(wiring, name))
    releases = {release.id: release for release in wiring.store.get_releases(status.named_releases)}
    return PipelineDetail(status, releases)


def _pipeline_status(wiring: Wiring, pipeline: Pipeline) -> PipelineStatus:
    return PipelineStatus(pipeline, wiring.store.get_slot(pipeline.name))


def _submit(
    wiring: Wiring,
    pipeline: Pipeline,
    revision: Revision,
    *,
    trigger: Trigger,
    actor: str,
    release_id: str,
    metadata: Mapping[str, str],
    rollback_of: str | None = None,
) -> Submitted:
    with logger.append_context_keys(release_id=release_id, pipeline=pipeline.name, actor=actor):
        release, created = submit(
            wiring,
            Submission(
                release_id=release_id,
                pipeline=pipeline,
                revision=revision,
                trigger=trigger,
                actor=actor,
                metadata=metadata,
                rollback_of=rollback_of,
            ),
        )
    # As it stands after the start: with its deployment id, or FAILED if CodeDeploy refused it.
    return Submitted(wiring.store.get_release(release.id) or release, created)


def _release(wiring: Wiring, release_id: str) -> Release:
    release = wiring.store.get_release(release_id) if known_release_id(release_id) else None
    if release is None:
        raise NotFound(f"no release {release_id[:200]!r}")
    return release


def _pipeline_for_path(wiring: Wiring, name: str) -> Pipeline:
    pipeline = wiring.pipelines.named(name)
    if pipeline is None:
        raise NotFound(f"no pipeline {name[:200]!r}; configured: {_configured(wiring)}")
    return pipeline


def _pipeline_for_value(wiring: Wiring, name: str) -> Pipeline:
    pipeline = wiring.pipelines.named(name)
    if pipeline is None:
        raise InvalidValue(f"pipeline {name[:200]!r} is not configured; configured: {_configured(wiring)}")
    return pipeline


def _pipeline_for_release(wiring: Wiring, release: Release) -> Pipeline:
    pipeline = wiring.pipelines.named(release.pipeline)
    if pipeline is None:
        raise ConflictingState(
            f"pipeline {release.pipeline!r} of release {release.id} is no longer configured"
        )
    return pipeline


def _configured(wiring: Wiring) -> str:
    return ", ".join(pipeline.name for pipeline in wiring.pipelines.pipelines)

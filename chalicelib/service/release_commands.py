"""What the HTTP API changes on behalf of a caller, who is recorded as the actor: deploy,
redeploy, roll back and cancel.

Each returns what it did or raises a ``Refused`` (chalicelib/domain/api_requests.py) whose message
says what to fix; chalicelib/http_api.py turns both into HTTP answers. New releases go through
``submit``, like uploads, so the API adds no second way into a pipeline's slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain.api_requests import ConflictingState, DeployRequest, InvalidValue
from chalicelib.domain.lane import Change, Submission, change_of
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import EventType, Release, ReleaseState, Revision, Step, Trigger, record
from chalicelib.log import logger
from chalicelib.service import promotions
from chalicelib.service.aws_errors import aws_error_code
from chalicelib.service.caller_lookups import (
    pipeline_in_body,
    pipeline_in_path,
    pipeline_of_release,
    release_named,
)
from chalicelib.service.lane_commands import Cancellation, cancel_release, roll_back_pipeline, still_in_s3
from chalicelib.service.ports import DeploymentAlreadyEnded
from chalicelib.service.slot_flow import on_release
from chalicelib.service.submission import submit
from chalicelib.service.wiring import Wiring


@dataclass(frozen=True)
class Submitted:
    """A release the API asked for, as it stands after its start (with its deployment id, or
    FAILED if CodeDeploy refused it)."""

    release: Release
    # False: the release already existed (a repeated request made it before).
    created: bool


def deploy(wiring: Wiring, request: DeployRequest, actor: str, release_id: str) -> Submitted:
    """Deploy an object of a pipeline that is already in S3 (an upload that was missed, or an
    older object again)."""
    pipeline = pipeline_in_body(wiring, request.pipeline)
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
    if pipeline.promote_from is not None and request.break_glass is None:
        promotions.passed_upstream(wiring, pipeline, stored.revision)
    return _submit(
        wiring,
        pipeline,
        stored.revision,
        trigger=Trigger.API,
        actor=actor,
        release_id=release_id,
        metadata=stored.metadata,
        break_glass=request.break_glass,
    )


def redeploy(
    wiring: Wiring, release_id: str, actor: str, new_release_id: str, break_glass: str | None = None
) -> Submitted:
    """Deploy the exact revision of an earlier release again, as a new release (``break_glass``:
    during a freeze, for this reason)."""
    original = release_named(wiring, release_id)
    if not original.state.is_terminal:
        raise ConflictingState(
            f"release {original.id} is still {original.state.value}; wait for it to end or cancel it first"
        )
    pipeline = pipeline_of_release(wiring, original)
    stored = still_in_s3(wiring, original)
    if pipeline.promote_from is not None and break_glass is None:
        promotions.passed_upstream(wiring, pipeline, stored.revision)
    return _submit(
        wiring,
        pipeline,
        stored.revision,
        trigger=Trigger.API,
        actor=actor,
        release_id=new_release_id,
        metadata={**original.metadata, "redeploy_of": original.id},
        break_glass=break_glass,
    )


def roll_back(
    wiring: Wiring, pipeline_name: str, to: str | None, actor: str, new_release_id: str
) -> Submitted:
    """A new release of an earlier verified revision: ``to``, or the pipeline's last good one
    (the lane chooses). Like an automatic rollback it goes ahead of every waiting release."""
    pipeline = pipeline_in_path(wiring, pipeline_name)
    release, created = roll_back_pipeline(wiring, pipeline, to, actor, new_release_id)
    return _as_started(wiring, release, created)


def promote(wiring: Wiring, pipeline_name: str, release_id: str | None, actor: str) -> Submitted:
    """Promote a release the upstream pipeline verified (``release_id``, or its last good one)
    into pipeline ``pipeline_name`` now, without waiting for the soak."""
    release, created = promotions.promote_now(wiring, pipeline_name, release_id, actor)
    return _as_started(wiring, release, created)


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
        # itself answers the caller (chalicelib.http_api names its AWS code).
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

    return on_release(wiring, release_id, note) or release_named(wiring, release_id)


def _submit(
    wiring: Wiring,
    pipeline: Pipeline,
    revision: Revision,
    *,
    trigger: Trigger,
    actor: str,
    release_id: str,
    metadata: Mapping[str, str],
    break_glass: str | None,
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
                break_glass=break_glass,
            ),
        )
    return _as_started(wiring, release, created)


def _as_started(wiring: Wiring, release: Release, created: bool) -> Submitted:
    """The release as it stands after its start: with its deployment id, or FAILED if CodeDeploy
    refused it."""
    return Submitted(wiring.store.get_release(release.id) or release, created)

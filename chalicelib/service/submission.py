"""Submitting a revision as a release: the one way uploads, API deploys, redeploys and manual
rollbacks enter the pipeline slot."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import (
    Refused,
    Release,
    ReleaseState,
    Revision,
    Step,
    Trigger,
    new_release,
    transition,
)
from chalicelib.domain.slot import Admission, UploadMark
from chalicelib.log import logger
from chalicelib.service.context import Context, retry_on_conflict
from chalicelib.service.ports import Change
from chalicelib.service.reads import stored
from chalicelib.service.slot_flow import Batch, advance, log_refused, start_deployment

_ROLLBACK_TRIGGERS = (Trigger.ROLLBACK, Trigger.AUTO_ROLLBACK)


@dataclass(frozen=True)
class Submission:
    release_id: str  # derived from what is submitted, so a repeat finds the same release
    pipeline: Pipeline
    revision: Revision
    trigger: Trigger
    actor: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    rollback_of: str | None = None
    # When S3 stored the uploaded object (LastModified): orders automatic uploads.
    stored_at: datetime | None = None

    @property
    def goes_first(self) -> bool:
        """Rollbacks go ahead of every waiting release and are never superseded."""
        return self.trigger in _ROLLBACK_TRIGGERS

    @property
    def upload_mark(self) -> UploadMark | None:
        """Where an automatic upload stands in S3's order; an API deploy of any revision, a
        redeploy or a rollback is not ordered against uploads."""
        if self.trigger is not Trigger.UPLOAD or self.stored_at is None:
            return None
        return UploadMark(self.release_id, self.stored_at)


def _second(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat()


def _supersede_as_older(
    context: Context, step: Step, upload: UploadMark, newer: UploadMark, now: datetime
) -> Release:
    """An upload whose event came late (a retry after a crash, or S3's unordered delivery): the
    pipeline already took an upload S3 stored after it. The slot is not written: its marks only
    move forward, so a stale read can miss this decision but never make it wrongly."""
    superseded = transition(
        step,
        ReleaseState.SUPERSEDED,
        now=now,
        reason=(
            f"superseded by the newer upload {newer.release_id}: S3 stored this one at "
            f"{_second(upload.stored_at)} and that one at {_second(newer.stored_at)}, which the "
            "pipeline already took (deploy this revision through the API to run it anyway)"
        ),
        detail={
            "superseded_by": newer.release_id,
            "stored_at": _second(upload.stored_at),
            "newer_stored_at": _second(newer.stored_at),
        },
    )
    assert not isinstance(superseded, Refused)  # RECEIVED -> SUPERSEDED is always allowed
    release = superseded.release
    context.store.commit(Change(releases=[release], events={release.id: superseded.events}))
    logger.info("release superseded by a newer upload", extra={"newer": newer.release_id})
    return stored(release)


def submit(context: Context, submission: Submission) -> tuple[Release, bool]:
    """Record the release and start or queue it. Returns the release and whether this call
    created it (False: it existed already, and nothing new was done)."""
    release_id = submission.release_id
    pipeline = submission.pipeline

    def decide() -> tuple[Release, bool | None]:
        """The release, and whether it took the slot (None: it was already recorded)."""
        existing = context.store.get_release(release_id)
        if existing is not None:
            return existing, None
        now = context.clock.now()
        step = new_release(
            release_id=release_id,
            pipeline=pipeline.name,
            application=pipeline.application,
            deployment_group=pipeline.deployment_group,
            revision=submission.revision,
            trigger=submission.trigger,
            now=now,
            actor=submission.actor,
            rollback_of=submission.rollback_of,
            metadata=submission.metadata,
        )
        key = submission.revision.key
        if submission.revision.bundle_type is None:
            failed = transition(
                step,
                ReleaseState.FAILED,
                now=now,
                reason=f"{key!r} is not a CodeDeploy bundle: the key must end in .zip, .tar, .tar.gz or .tgz",
            )
            assert not isinstance(failed, Refused)  # RECEIVED -> FAILED is always allowed
            context.store.commit(Change(releases=[failed.release], events={release_id: failed.events}))
            return failed.release, False
        slot = context.store.get_slot(pipeline.name)
        if submission.goes_first:
            first = slot.give_first(release_id)
            admission = Admission(first, first.active == release_id, ())
        else:
            admission = slot.admit(release_id, pipeline.on_busy, submission.upload_mark)
        upload, newer = submission.upload_mark, admission.turned_away_by
        if upload is not None and newer is not None:
            return _supersede_as_older(context, step, upload, newer, now), False
        batch = Batch()
        if admission.active:
            moved = transition(
                step,
                ReleaseState.DEPLOYING,
                now=now,
                reason="slot free: starting CodeDeploy",
                start_claimed_at=now,
            )
        else:
            moved = transition(
                step,
                ReleaseState.QUEUED,
                now=now,
                reason=f"pipeline busy with {slot.active or slot.waiting[0]}",
                detail={"position": admission.slot.waiting.index(release_id) + 1},
            )
        assert not isinstance(moved, Refused)  # RECEIVED goes to DEPLOYING or QUEUED
        batch.add(moved)
        kept: list[str] = []
        for superseded_id in admission.superseded:
            older = context.store.get_release(superseded_id)
            if older is None:
                continue
            if older.trigger in _ROLLBACK_TRIGGERS:
                kept.append(superseded_id)
                continue
            superseded = transition(
                Step(older, ()),
                ReleaseState.SUPERSEDED,
                now=now,
                reason=f"superseded by {release_id}",
                detail={"superseded_by": release_id},
            )
            if isinstance(superseded, Refused):
                log_refused(superseded)
                continue
            batch.add(superseded)
        new_slot = dataclasses.replace(admission.slot, waiting=(*kept, *admission.slot.waiting))
        context.store.commit(batch.change(new_slot))
        logger.info(f"release {moved.release.state.value.lower()}", extra={"key": key})
        return stored(moved.release), admission.active

    release, took_slot = retry_on_conflict(decide)
    if took_slot:
        start_deployment(context, release, pipeline, look_first=False)
    elif took_slot is None and release.awaiting_deployment:
        # A repeat (Lambda's retry after a failed CreateDeployment, or S3's duplicate delivery):
        # picks the start up again if it was handed back or abandoned, else leaves it alone.
        advance(context, pipeline)
    elif took_slot is None:
        logger.info("release already recorded; nothing to do", extra={"state": release.state.value})
    return release, took_slot is not None

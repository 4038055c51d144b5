"""An S3 upload under a pipeline's prefix becomes one release, deployed once."""

from __future__ import annotations

from chalicelib.domain.inbound_events import ObjectCreated
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import (
    Refused,
    Release,
    ReleaseState,
    Step,
    Trigger,
    new_release,
    transition,
    upload_release_id,
)
from chalicelib.service.context import Context, logger, retry_on_conflict
from chalicelib.service.ports import Change, StoredObject
from chalicelib.service.slot_flow import Batch, advance, log_refused, start_deployment


def handle_upload(context: Context, upload: ObjectCreated) -> Release | None:
    """Record the upload as a release and start or queue it. Returns the release, or None when
    the upload is not for any pipeline or the object is gone."""
    # Match before any S3 call: uploads outside every pipeline cost nothing and need no access.
    candidates = [key for key in upload.key_candidates if context.pipelines.for_upload(upload.bucket, key)]
    if not candidates:
        logger.info(
            "upload matches no pipeline; ignored",
            extra={"bucket": upload.bucket, "keys": list(upload.key_candidates)},
        )
        return None
    stored = _resolve(context, upload.bucket, candidates, upload.version_id)
    if stored is None:
        logger.warning(
            "uploaded object not found in S3 (deleted, or the event is stale); skipped",
            extra={"bucket": upload.bucket, "keys": candidates, "version_id": upload.version_id},
        )
        return None
    revision = stored.revision
    pipeline = context.pipelines.for_upload(revision.bucket, revision.key)
    if pipeline is None:  # only the candidates that matched were resolved
        return None
    release_id = upload_release_id(revision)
    with logger.append_context_keys(release_id=release_id, pipeline=pipeline.name):
        return _record_and_start(context, stored, pipeline, release_id)


def _record_and_start(context: Context, stored: StoredObject, pipeline: Pipeline, release_id: str) -> Release:
    revision = stored.revision

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
            revision=revision,
            trigger=Trigger.UPLOAD,
            now=now,
            actor=stored.metadata.get("author"),
            metadata=stored.metadata,
        )
        if revision.bundle_type is None:
            failed = transition(
                step,
                ReleaseState.FAILED,
                now=now,
                reason=(
                    f"{revision.key!r} is not a CodeDeploy bundle: "
                    "the key must end in .zip, .tar, .tar.gz or .tgz"
                ),
            )
            assert not isinstance(failed, Refused)  # RECEIVED -> FAILED is always allowed
            context.store.commit(Change(releases=[failed.release], events={release_id: failed.events}))
            return failed.release, False
        slot = context.store.get_slot(pipeline.name)
        admission = slot.admit(release_id, pipeline.on_busy)
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
            ahead = slot.active or slot.waiting[0]
            moved = transition(
                step,
                ReleaseState.QUEUED,
                now=now,
                reason=f"pipeline busy with {ahead}",
                detail={"position": len(admission.slot.waiting)},
            )
        assert not isinstance(moved, Refused)  # RECEIVED goes to DEPLOYING or QUEUED
        batch.add(moved)
        for superseded_id in admission.superseded:
            older = context.store.get_release(superseded_id)
            if older is None:
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
        context.store.commit(batch.change(admission.slot))
        logger.info(f"release {moved.release.state.value.lower()}", extra={"key": revision.key})
        return moved.release, admission.active

    release, took_slot = retry_on_conflict(decide)
    if took_slot:
        start_deployment(context, release, pipeline, look_first=False)
    elif took_slot is None and release.awaiting_deployment:
        # A repeated delivery (Lambda's retry after a failed CreateDeployment, or S3's duplicate):
        # picks the start up again if it was handed back or abandoned, else leaves it alone.
        advance(context, pipeline)
    elif took_slot is None:
        logger.info("upload already recorded; nothing to do", extra={"state": release.state.value})
    return release


def _resolve(context: Context, bucket: str, keys: list[str], version_id: str | None) -> StoredObject | None:
    """The object as S3 has it, trying each spelling of the key the event may have used, so two
    deliveries of one upload in different encodings are one release."""
    for key in keys:
        stored = context.artifacts.find(bucket, key, version_id)
        if stored is not None:
            return stored
    return None

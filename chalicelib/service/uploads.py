"""An S3 upload under a pipeline's prefix becomes one release, deployed once."""

from __future__ import annotations

from chalicelib.domain.inbound_events import ObjectCreated
from chalicelib.domain.release import Release, Trigger, upload_release_id
from chalicelib.service.context import Context, logger
from chalicelib.service.ports import StoredObject
from chalicelib.service.submission import Submission, submit


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
        release, _ = submit(
            context,
            Submission(
                release_id=release_id,
                pipeline=pipeline,
                revision=revision,
                trigger=Trigger.UPLOAD,
                actor=stored.metadata.get("author"),
                metadata=stored.metadata,
            ),
        )
        return release


def _resolve(context: Context, bucket: str, keys: list[str], version_id: str | None) -> StoredObject | None:
    """The object as S3 has it, trying each spelling of the key the event may have used, so two
    deliveries of one upload in different encodings are one release."""
    for key in keys:
        stored = context.artifacts.find(bucket, key, version_id)
        if stored is not None:
            return stored
    return None

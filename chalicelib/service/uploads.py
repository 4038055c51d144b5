"""An S3 upload under a pipeline's prefix becomes one release, deployed once.

Only bundles do: a checksum file, a README or the empty "folder" object the S3 console creates
under the same prefix is skipped with an INFO line and notifies no one. An object S3 refuses to
show (403) is loud: an ERROR line, the ``ArtifactAccessDenied`` metric, and the event raised so
Lambda retries it and then keeps it in the function's failure queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.domain.dora import COMMIT_TIME, MalformedCommitTime, parse_commit_time
from chalicelib.domain.inbound_events import ObjectCreated
from chalicelib.domain.lane import Submission
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import Release, Revision, Trigger, bundle_type_of, upload_release_id
from chalicelib.log import logger, new_metrics, write_metrics
from chalicelib.service.ports import ArtifactAccessDenied, StoredObject
from chalicelib.service.slot_flow import LaneRead
from chalicelib.service.submission import submit
from chalicelib.service.wiring import Wiring


def handle_upload(wiring: Wiring, upload: ObjectCreated) -> Release | None:
    """Record the upload as a release and start or queue it. Returns the release, or None when
    the upload is not for any pipeline or the object is gone."""
    # Match before any S3 call: uploads outside every pipeline cost nothing and need no access.
    candidates = [key for key in upload.key_candidates if wiring.pipelines.for_upload(upload.bucket, key)]
    if not candidates:
        logger.info(
            "upload matches no pipeline; ignored",
            extra={"bucket": upload.bucket, "keys": list(upload.key_candidates)},
        )
        return None
    bundles = [key for key in candidates if bundle_type_of(key)]
    if not bundles:
        logger.info(
            "upload is not a CodeDeploy bundle (.zip, .tar, .tar.gz, .tgz); skipped",
            extra={"bucket": upload.bucket, "keys": candidates},
        )
        return None
    recorded = _read_lane_of_version(wiring, upload, bundles)
    if recorded is not None and recorded.existing is not None:
        # A repeated delivery of a recorded upload: the lane settles it (nothing to do, or the
        # repair of a start that was handed back) without asking S3 again.
        existing = recorded.existing
        with logger.append_context_keys(release_id=existing.id, pipeline=recorded.pipeline.name):
            release, _ = submit(wiring, _repeat_of(existing, recorded.pipeline), known=recorded.lane)
            return release
    try:
        stored = _resolve(wiring, upload.bucket, bundles, upload.version_id)
    except ArtifactAccessDenied as denied:
        _report_access_denied(wiring.coordinator, denied)
        raise
    if stored is None:
        logger.warning(
            "uploaded object not found in S3 (deleted, or the event is stale); skipped",
            extra={"bucket": upload.bucket, "keys": bundles, "version_id": upload.version_id},
        )
        return None
    revision = stored.revision
    pipeline = wiring.pipelines.for_upload(revision.bucket, revision.key)
    if pipeline is None:  # only the candidates that matched were resolved
        return None
    release_id = upload_release_id(revision)
    # The lane read before S3 holds this release (absent) when S3 resolved the version the
    # event named; a change since then fails the write, which reads again.
    known = recorded.lane if recorded is not None and release_id in recorded.release_ids else None
    with logger.append_context_keys(release_id=release_id, pipeline=pipeline.name):
        release, _ = submit(
            wiring,
            Submission(
                release_id=release_id,
                pipeline=pipeline,
                revision=revision,
                trigger=Trigger.UPLOAD,
                actor=stored.metadata.get("author"),
                metadata=_without_malformed_commit_time(stored.metadata),
                stored_at=stored.stored_at,
            ),
            known=known,
        )
        return release


@dataclass(frozen=True)
class _VersionLane:
    """The lane of the pipeline an upload's object version belongs to, read with the releases
    each spelling of its key would be (the id derives from bucket, key and version id)."""

    pipeline: Pipeline
    release_ids: frozenset[str]
    lane: LaneRead

    @property
    def existing(self) -> Release | None:
        return next(iter(self.lane[1].values()), None)


def _read_lane_of_version(wiring: Wiring, upload: ObjectCreated, keys: list[str]) -> _VersionLane | None:
    """When the event names the object version (a versioned bucket), the release ids are known
    before S3 is asked: one read of the lane tells a repeated delivery, and a new upload decides
    on the same read. Without a version id the id depends on the eTag S3 answers for the key's
    current object, so nothing is read ahead."""
    if upload.version_id is None:
        return None
    pipeline = wiring.pipelines.for_upload(upload.bucket, keys[0])
    if pipeline is None or any(wiring.pipelines.for_upload(upload.bucket, key) != pipeline for key in keys):
        return None  # the spellings match different pipelines: S3 tells which one exists first
    release_ids = frozenset(
        upload_release_id(Revision(upload.bucket, key, upload.version_id, None)) for key in keys
    )
    return _VersionLane(pipeline, release_ids, wiring.store.read_lane(pipeline.name, sorted(release_ids)))


def _repeat_of(existing: Release, pipeline: Pipeline) -> Submission:
    """The recorded release submitted again, as its first delivery submitted it."""
    return Submission(
        release_id=existing.id,
        pipeline=pipeline,
        revision=existing.revision,
        trigger=existing.trigger,
        actor=existing.actor,
        metadata=existing.metadata,
    )


def _resolve(wiring: Wiring, bucket: str, keys: list[str], version_id: str | None) -> StoredObject | None:
    """The object as S3 has it, trying each spelling of the key the event may have used, so two
    deliveries of one upload in different encodings are one release. A spelling S3 denies does
    not end the search (a role without s3:ListBucket gets 403 for the spelling that does not
    exist), but when no spelling resolves, the denial is raised."""
    denied: ArtifactAccessDenied | None = None
    for key in keys:
        try:
            stored = wiring.artifacts.find(bucket, key, version_id)
        except ArtifactAccessDenied as refusal:
            denied = denied or refusal
            continue
        if stored is not None:
            return stored
    if denied is not None:
        raise denied
    return None


def _without_malformed_commit_time(metadata: Mapping[str, str]) -> Mapping[str, str]:
    """The upload's metadata, less a commit time that is not ISO 8601 with an offset: DORA's lead
    time then starts at the upload, and the upload goes ahead as any other."""
    raw = metadata.get(COMMIT_TIME)
    if raw is None:
        return metadata
    try:
        parse_commit_time(raw)
    except MalformedCommitTime as malformed:
        logger.warning("the upload's commit time is ignored", extra={"why": str(malformed)})
        return {name: value for name, value in metadata.items() if name != COMMIT_TIME}
    return metadata


def _report_access_denied(coordinator: str, denied: ArtifactAccessDenied) -> None:
    logger.error(
        "S3 denied reading the uploaded bundle; the upload is retried and then kept in the "
        "function's failure queue. Grant the on_artifact_event role s3:GetObject and "
        "s3:GetObjectVersion on the objects and s3:ListBucket on the bucket",
        extra={"bucket": denied.bucket, "key": denied.key, "code": denied.code},
    )
    from aws_lambda_powertools.metrics import MetricUnit

    metrics = new_metrics(coordinator)
    metrics.add_metric(name="ArtifactAccessDenied", unit=MetricUnit.Count, value=1)
    write_metrics(metrics.serialize_metric_set())

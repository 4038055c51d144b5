"""What a person asks of a pipeline's lane through the API: roll back, cancel. The lane decides;
these load it, commit, and call S3 or CodeDeploy around it. Refusals are the domain's errors
(``ConflictingState``, ``InvalidValue``, ``NotFound``), which the HTTP layer maps."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from chalicelib.domain.api_requests import ConflictingState, NotFound, known_release_id
from chalicelib.domain.lane import Submission
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import Release, ReleaseState, Trigger
from chalicelib.log import logger
from chalicelib.service import promotions
from chalicelib.service.ports import StoredObject
from chalicelib.service.slot_flow import decide_in_lane, run_in_lane, start_next
from chalicelib.service.submission import submit
from chalicelib.service.wiring import Wiring


def roll_back_pipeline(
    wiring: Wiring, pipeline: Pipeline, to: str | None, actor: str, new_release_id: str
) -> tuple[Release, bool]:
    """A new release of an earlier verified revision: ``to``, or the pipeline's last good one.
    Like an automatic rollback it goes ahead of every waiting release. Returns the release and
    whether this call created it."""

    @functools.cache
    def newest() -> str | None:
        releases = wiring.store.list_releases(pipeline.name, 1, None)
        return releases[0].id if releases else None

    choice = decide_in_lane(
        wiring,
        pipeline.name,
        [to] if to is not None else [],
        # The current release is the active one, else the newest: only then is the list read.
        lambda lane: lane.choose_rollback(to, None if lane.slot.active else newest()),
    )
    stored = still_in_s3(wiring, choice.target)
    with logger.append_context_keys(release_id=new_release_id, pipeline=pipeline.name, actor=actor):
        release, created = submit(
            wiring,
            Submission(
                release_id=new_release_id,
                pipeline=pipeline,
                revision=stored.revision,
                trigger=Trigger.ROLLBACK,
                actor=actor,
                metadata={**choice.target.metadata, "rolled_back_to": choice.target.id},
                rollback_of=choice.current,
            ),
        )
        if pipeline.downstream_soaks:
            # The release rolled back is marked in the rollback's write; its promotions still
            # waiting downstream stop now (reconcile does it should this call die first).
            # The release as recorded names what it rolled back: a repeated request (the slot's
            # active release is then the rollback itself) cancels the same promotions.
            promotions.cancel_promotions_of(
                wiring, pipeline, release.rollback_of or choice.current, release.id
            )
        return release, created


@dataclass(frozen=True)
class Cancellation:
    release: Release
    # True: the release stopped at once (it was waiting or verifying). False: it is deploying:
    # CodeDeploy is asked to stop its deployment, whose STOP event then finishes the release.
    stopped: bool


def cancel_release(wiring: Wiring, release_id: str, actor: str) -> Cancellation:
    """Stop a waiting or verifying release at once, freeing its place and starting the next."""
    found = wiring.store.get_release(release_id) if known_release_id(release_id) else None
    if found is None:
        raise NotFound(f"no release {release_id[:200]!r}")
    decision = run_in_lane(
        wiring, found.pipeline, [release_id], lambda lane, now: lane.cancel(release_id, actor, now)
    )
    start_next(wiring, decision)
    release = decision.subject
    assert release is not None  # the lane refuses, or names the release it stopped or left deploying
    return Cancellation(release, stopped=release.state is ReleaseState.STOPPED)


def still_in_s3(wiring: Wiring, release: Release) -> StoredObject:
    """The release's exact revision, if S3 still has it (an unversioned object must still be the
    same bytes: same eTag)."""
    revision = release.revision
    stored = wiring.artifacts.find(revision.bucket, revision.key, revision.version)
    if stored is None or (
        revision.version is None and revision.etag and stored.revision.etag != revision.etag
    ):
        raise ConflictingState(
            f"the bundle of release {release.id} (s3://{revision.bucket}/{revision.key}) is no longer in S3 "
            "as it was; upload it again"
        )
    return stored

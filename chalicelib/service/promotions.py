"""Promotion between pipelines (``promote_from``): the exact revision a pipeline verified goes to
the pipelines that promote from it, never a rebuild.

A release that succeeds and stays its pipeline's last good for a downstream pipeline's ``soak``
becomes a ``promotion`` release there, of the same bucket, key, version id and eTag. It is found
due by the upstream lane's wake-up at that time (``domain/wakeups.py``), with reconcile as the
safety net, and ``relco promote`` asks for one at once. Each upstream release is promoted once
into each downstream pipeline (``promotion_release_id``), so a repeated wake-up, reconcile or
request finds the promotion already there. A manual rollback upstream marks the release it rolls
back (the lane, in the rollback's own write); its promotions still waiting downstream are then
cancelled here, and by reconcile should that be lost.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib.domain.api_requests import ConflictingState, InvalidValue, NotFound, known_release_id
from chalicelib.domain.lane import Submission
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import (
    BREAK_GLASS,
    PROMOTED_FROM,
    PROMOTED_FROM_PIPELINE,
    ROLLED_BACK_BY,
    EventType,
    Release,
    ReleaseState,
    Revision,
    Step,
    Trigger,
    promotion_release_id,
    record,
)
from chalicelib.domain.wakeups import soak_ends
from chalicelib.log import logger
from chalicelib.service.slot_flow import run_in_lane, start_next
from chalicelib.service.submission import submit
from chalicelib.service.wiring import Wiring

# How far back an API deploy to a downstream pipeline looks upstream for its revision: the 100
# newest releases (the store reads them in as many queries as that takes).
_SEARCH_LIMIT = 100


def promotable(release: Release) -> bool:
    """A release whose revision may go downstream: verified, built for the pipeline (not a
    rollback to an older build, nor a deployment made outside the coordinator), and not rolled
    back since."""
    return (
        release.state is ReleaseState.SUCCEEDED
        and release.trigger in (Trigger.UPLOAD, Trigger.API, Trigger.PROMOTION)
        and ROLLED_BACK_BY not in release.metadata
    )


def promote_due(wiring: Wiring, upstream: Pipeline) -> dict[str, Any]:
    """Promote the upstream pipeline's last good release into each downstream pipeline whose
    soak has passed since it succeeded. Returns what it promoted."""
    downstream = wiring.pipelines.downstream_of(upstream.name)
    if not downstream:
        return {}
    slot = wiring.store.get_slot(upstream.name)
    if slot.last_good is None or slot.last_good_at is None:
        return {}
    now = wiring.clock.now()
    due = [pipeline for pipeline in downstream if now >= slot.last_good_at + pipeline.soak]
    if not due:
        return {}
    release = wiring.store.get_release(slot.last_good)
    if release is None or not promotable(release):
        return {}
    promoted = {}
    for pipeline in due:
        promotion, created = promote(wiring, pipeline, release, actor=None)
        if created:
            promoted[pipeline.name] = promotion.id
    return {"promoted": promoted} if promoted else {}


def next_promotion_due(upstream: Pipeline, last_good_at: datetime | None, now: datetime) -> datetime | None:
    """The next time, after ``now``, a downstream pipeline's soak of the last good release ends."""
    return min((moment for moment in soak_ends(upstream, last_good_at) if moment > now), default=None)


def promote(
    wiring: Wiring, downstream: Pipeline, upstream_release: Release, *, actor: str | None
) -> tuple[Release, bool]:
    """The promotion of ``upstream_release`` into ``downstream``: submitted (it takes the slot,
    waits, or awaits approval as the pipeline says), or found already there. The upstream
    release's history links to it, in the same write."""
    release_id = promotion_release_id(downstream.name, upstream_release.id)
    metadata = {
        **{name: value for name, value in upstream_release.metadata.items() if name != BREAK_GLASS},
        PROMOTED_FROM: upstream_release.id,
        PROMOTED_FROM_PIPELINE: upstream_release.pipeline,
    }
    detail = {"task": "Promotion", "pipeline": downstream.name, "release_id": release_id}

    def link(now: datetime) -> Step:
        """The upstream release's history says where it went, in the promotion's own write (read
        afresh: its version conditions that write)."""
        upstream = wiring.store.get_release(upstream_release.id) or upstream_release
        return record(Step(upstream, ()), EventType.TASK_SUCCEEDED, now=now, detail=detail)

    with logger.append_context_keys(release_id=release_id, pipeline=downstream.name):
        promotion, created = submit(
            wiring,
            Submission(
                release_id=release_id,
                pipeline=downstream,
                revision=upstream_release.revision,
                trigger=Trigger.PROMOTION,
                actor=actor,
                metadata=metadata,
            ),
            with_new=link,
        )
    return wiring.store.get_release(promotion.id) or promotion, created


def promote_now(wiring: Wiring, name: str, release_id: str | None, actor: str) -> tuple[Release, bool]:
    """``relco promote``: promote the upstream pipeline's last good release (or ``release_id``,
    any release it verified) into pipeline ``name`` now, without waiting for the soak."""
    downstream = wiring.pipelines.named(name)
    if downstream is None:
        raise NotFound(f"no pipeline {name[:200]!r}")
    if downstream.promote_from is None:
        raise ConflictingState(f"pipeline {name!r} does not promote from another pipeline (no promote_from)")
    upstream = downstream.promote_from
    if release_id is None:
        slot = wiring.store.get_slot(upstream)
        if slot.last_good is None:
            raise ConflictingState(f"pipeline {upstream!r} has verified no release yet: nothing to promote")
        release_id = slot.last_good
    release = wiring.store.get_release(release_id) if known_release_id(release_id) else None
    if release is None or release.pipeline != upstream:
        raise InvalidValue(f"field 'release': pipeline {upstream!r} has no release {release_id[:200]!r}")
    if not promotable(release):
        raise InvalidValue(
            f"field 'release': release {release.id} of {upstream!r} cannot be promoted: only a "
            "SUCCEEDED upload, API deploy or promotion that was not rolled back can "
            f"(it is {release.state.value}, trigger {release.trigger.value})"
        )
    return promote(wiring, downstream, release, actor=actor)


def passed_upstream(wiring: Wiring, downstream: Pipeline, revision: Revision) -> Release:
    """The upstream release that verified ``revision``, for an API deploy to a downstream
    pipeline; refused (``InvalidValue``) when none of its last 100 releases did."""
    assert downstream.promote_from is not None
    for release in wiring.store.list_releases(downstream.promote_from, _SEARCH_LIMIT, None):
        same = release.revision
        if (
            promotable(release)
            and (same.bucket, same.key, same.version) == (revision.bucket, revision.key, revision.version)
            and (revision.etag is None or same.etag == revision.etag)
        ):
            return release
    raise InvalidValue(
        f"pipeline {downstream.name!r} deploys only what pipeline {downstream.promote_from!r} verified, and "
        f"s3://{revision.bucket}/{revision.key} (version {revision.version}) did not pass it: promote a "
        f"release of {downstream.promote_from!r} (relco promote {downstream.name} --release ID), or "
        'deploy with {"break_glass": "<reason>"}'
    )


def cancel_promotions_of(
    wiring: Wiring, upstream: Pipeline, upstream_release_id: str, rollback_id: str
) -> None:
    """A manual rollback upstream rolled ``upstream_release_id`` back: its promotions still
    waiting downstream stop."""
    reason = f"cancelled: {upstream.name} rolled back {upstream_release_id} (release {rollback_id})"
    for pipeline in wiring.pipelines.downstream_of(upstream.name):
        _cancel(wiring, pipeline.name, upstream_release_id, reason)


def repair_promotions(wiring: Wiring, downstream: Pipeline) -> dict[str, Any]:
    """Reconcile's safety net: cancel the downstream pipeline's waiting promotions whose upstream
    release was rolled back since (the cancel after the rollback was lost)."""
    slot = wiring.store.get_slot(downstream.name)
    pending = [mark.release_id for mark in slot.awaiting_approval] + list(slot.waiting)
    if not pending:
        return {}
    promotions = [r for r in wiring.store.get_releases(pending) if r.trigger is Trigger.PROMOTION]
    upstream_ids = sorted({r.metadata[PROMOTED_FROM] for r in promotions if PROMOTED_FROM in r.metadata})
    rolled_back = {
        release.id: release.metadata[ROLLED_BACK_BY]
        for release in wiring.store.get_releases(upstream_ids)
        if ROLLED_BACK_BY in release.metadata
    }
    cancelled = []
    for upstream_id, rollback_id in rolled_back.items():
        reason = f"cancelled: {downstream.promote_from} rolled back {upstream_id} (release {rollback_id})"
        cancelled.extend(_cancel(wiring, downstream.name, upstream_id, reason))
    return {"cancelled_promotions": cancelled} if cancelled else {}


def _cancel(wiring: Wiring, pipeline: str, upstream_release_id: str, reason: str) -> list[str]:
    decision = run_in_lane(
        wiring, pipeline, [], lambda lane, now: lane.cancel_promotions(upstream_release_id, reason, now)
    )
    start_next(wiring, decision)
    return [release.id for release in decision.change.releases]

"""What the HTTP API reads: releases newest first, one release with its history and progress,
pipelines with their slots and freezes. Each returns what it found or raises a ``Refused``
(chalicelib/domain/api_requests.py); chalicelib/http_api.py turns both into HTTP answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from chalicelib.domain.api_requests import ListQuery, encode_cursor
from chalicelib.domain.freeze import Freeze, current_freeze, next_freeze
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import HistoryEvent, Release, ReleaseState
from chalicelib.domain.slot import PipelineSlot
from chalicelib.log import logger
from chalicelib.service.caller_lookups import pipeline_in_body, pipeline_in_path, release_named
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
class PipelineStatus:
    pipeline: Pipeline
    slot: PipelineSlot
    # The pipeline's freeze in force now, and the next one after it has ended.
    current_freeze: Freeze | None
    next_freeze: Freeze | None
    # The last good release: the revision the fleet runs as verified (a stage of a chain).
    running: Release | None = None

    @property
    def named_releases(self) -> list[str]:
        """The ids of the releases the slot names: active, waiting, awaiting approval, last good."""
        slot = self.slot
        awaiting = (mark.release_id for mark in slot.awaiting_approval)
        return [
            release_id for release_id in (slot.active, *slot.waiting, *awaiting, slot.last_good) if release_id
        ]


@dataclass(frozen=True)
class PipelineDetail:
    status: PipelineStatus
    # The releases the slot names, by id (one the store no longer has is left out).
    releases: Mapping[str, Release]


# The most releases one GET /releases examines when a state or trigger filter leaves some out,
# shared evenly by the pipelines it reads (or ``limit + 1`` of each when that is more: as many as
# an unfiltered page reads, so the bound never makes a page shorter than its filters require): a
# filter that matches rarely would otherwise read a pipeline's whole history in one request, past
# API Gateway's 29 s integration timeout and at Lambda's and DynamoDB's cost. A Query page holds
# at most 1 MB, so this is a handful of Query calls; a page cut short by the bound carries a
# ``next`` that goes on from where it stopped.
MAX_EXAMINED = 500


@dataclass(frozen=True)
class _Scan:
    """What one pipeline's read found: its matching releases, newest first, and how far down the
    index they are complete."""

    matches: list[Release]
    # The oldest position examined; every matching release from ``before`` down to it, itself
    # included, is in ``matches``. None: the read reached the end of the pipeline's index.
    covered_to: str | None


def list_releases(wiring: Wiring, query: ListQuery) -> ReleasePage:
    """Newest first, the releases the query's filters match. Without a pipeline, each configured
    pipeline is read and the reads merged, and the token (a position in time) works the same for
    one or all. Without filters this is one Query per pipeline for up to ``limit + 1`` releases."""
    if query.pipeline is not None:
        pipeline_in_body(wiring, query.pipeline)
        names = [query.pipeline]
    else:
        names = [pipeline.name for pipeline in wiring.pipelines.pipelines]
    # Each pipeline reads at least one more release than the page holds, as an unfiltered page
    # always has, so the bound never makes a page shorter than its filters require.
    # (The pipelines file defines at least one pipeline.)
    share = max(MAX_EXAMINED // len(names), query.limit + 1)
    scans = [_scan(wiring, name, query, share) for name in names]
    # Below the highest of the pipelines' ``covered_to`` some pipeline was not read: only what is
    # at or above it is complete, and the next page starts there.
    frontiers = [scan.covered_to for scan in scans if scan.covered_to is not None]
    boundary = max(frontiers) if frontiers else None
    found = [
        release
        for scan in scans
        for release in scan.matches
        if boundary is None or release.created_key >= boundary
    ]
    found.sort(key=lambda release: release.created_key, reverse=True)
    if len(found) > query.limit:
        page = found[: query.limit]
        return ReleasePage(page, encode_cursor(page[-1].created_key))
    # A short page: every pipeline's index ended (no next page), or the bound stopped a read and
    # the next page goes on below the last release it examined.
    return ReleasePage(found, encode_cursor(boundary) if boundary is not None else None)


def _scan(wiring: Wiring, pipeline: str, query: ListQuery, budget: int) -> _Scan:
    """The pipeline's releases before ``query.before`` that match, until one more than the page
    holds are found (that one says there is a next page), the index ends or ``budget`` releases
    were examined. The first read asks for exactly that many, as without filters; each further
    read asks for twice as many as the last, so a rare match costs few round trips."""
    wanted = query.limit + 1
    matches: list[Release] = []
    before = query.before
    examined = 0
    asked = wanted
    while True:
        asked = min(asked, budget - examined)
        releases = wiring.store.list_releases(pipeline, asked, before)
        examined += len(releases)
        for release in releases:
            if query.matches(release):
                matches.append(release)
                if len(matches) == wanted:
                    return _Scan(matches, release.created_key)
        if len(releases) < asked:
            return _Scan(matches, None)
        before = releases[-1].created_key
        if examined >= budget:
            return _Scan(matches, before)
        asked *= 2


def release_detail(wiring: Wiring, release_id: str) -> ReleaseDetail:
    release = release_named(wiring, release_id)
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


def list_pipelines(wiring: Wiring) -> list[PipelineStatus]:
    """Each pipeline with its slot, freezes and the release it runs (one read for all of them)."""
    statuses = [_pipeline_status(wiring, pipeline) for pipeline in wiring.pipelines.pipelines]
    last_good = [status.slot.last_good for status in statuses if status.slot.last_good]
    found = {release.id: release for release in wiring.store.get_releases(last_good)} if last_good else {}
    return [
        replace(status, running=found.get(status.slot.last_good)) if status.slot.last_good else status
        for status in statuses
    ]


def pipeline_detail(wiring: Wiring, name: str) -> PipelineDetail:
    """The pipeline with its slot and freezes, and the releases the slot names in full."""
    status = _pipeline_status(wiring, pipeline_in_path(wiring, name))
    releases = {release.id: release for release in wiring.store.get_releases(status.named_releases)}
    running = releases.get(status.slot.last_good) if status.slot.last_good else None
    return PipelineDetail(replace(status, running=running), releases)


def _pipeline_status(wiring: Wiring, pipeline: Pipeline) -> PipelineStatus:
    now = wiring.clock.now()
    return PipelineStatus(
        pipeline,
        wiring.store.get_slot(pipeline.name),
        current_freeze(pipeline.freeze, now),
        next_freeze(pipeline.freeze, now),
    )

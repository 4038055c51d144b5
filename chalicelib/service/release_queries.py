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


def list_releases(wiring: Wiring, query: ListQuery) -> ReleasePage:
    """Newest first. Without a pipeline, each configured pipeline's page is read and merged: one
    query per pipeline, and the token (a position in time) works the same for one or all."""
    if query.pipeline is not None:
        pipeline_in_body(wiring, query.pipeline)
        names = [query.pipeline]
    else:
        names = [pipeline.name for pipeline in wiring.pipelines.pipelines]
    # One more than asked says whether there is a next page.
    found = [
        release
        for name in names
        for release in wiring.store.list_releases(name, query.limit + 1, query.before)
    ]
    found.sort(key=lambda release: release.created_key, reverse=True)
    page = found[: query.limit]
    token = encode_cursor(page[-1].created_key) if len(found) > query.limit else None
    return ReleasePage(page, token)


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

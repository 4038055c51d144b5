"""DORA's four keys for one pipeline, from its releases: deployment frequency, lead time for
changes, change failure rate and time to restore. Pure: the releases come in, figures go out.
docs/stats.md states each definition for users; the code below is the one that counts.

A terminal release ended at its ``updated_at``: the write that made it terminal stamps it, and
only the rollback mark of a pipeline with promotion stages downstream stamps it again (such a
release is counted as a failure, and its lead time then runs to the rollback).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.release import Release, ReleaseState

# The metadata key of the commit time CI attaches (``relco bundle push``: git's ``%cI`` of HEAD).
COMMIT_TIME = "commit_time"


class MalformedCommitTime(ValueError):
    """A commit time that is not an ISO 8601 time with its UTC offset."""


def parse_commit_time(raw: str) -> datetime:
    """git's ``%cI`` (``2026-03-01T12:00:00+01:00``). A time without an offset is refused: it
    could be any of 26 hours."""
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise MalformedCommitTime(f"commit time {raw[:64]!r} is not an ISO 8601 time") from None
    if parsed.utcoffset() is None:
        raise MalformedCommitTime(f"commit time {raw[:64]!r} has no UTC offset")
    return parsed


def change_started_at(release: Release) -> datetime:
    """Where the lead time of a release's change starts: the commit time it carries, else its
    upload (when the coordinator recorded it). Uploads drop a malformed commit time, but a release
    recorded before that check, or one deployed through the API, may still carry one."""
    raw = release.metadata.get(COMMIT_TIME)
    if raw is not None:
        try:
            return parse_commit_time(raw)
        except MalformedCommitTime:
            pass
    return release.created_at


def reached_deployment(release: Release) -> bool:
    """Ended SUCCEEDED or FAILED after CodeDeploy started a deployment for it. Releases stopped by
    a person, superseded, or failed before any deployment (a bad revision, an alarm at start)
    never changed what the fleet runs."""
    return release.deployment_id is not None and release.state in (
        ReleaseState.SUCCEEDED,
        ReleaseState.FAILED,
    )


def lead_time(release: Release) -> timedelta:
    """From the change's start to the release's verification (never negative: a commit clock
    ahead of AWS's counts as zero)."""
    return max(timedelta(0), release.updated_at - change_started_at(release))


@dataclass(frozen=True)
class Durations:
    """Median and 90th percentile (nearest rank) of some durations, in seconds; None when there
    are none."""

    count: int
    median_s: float | None
    p90_s: float | None

    @classmethod
    def of(cls, durations: Iterable[timedelta]) -> Durations:
        seconds = sorted(duration.total_seconds() for duration in durations)
        if not seconds:
            return cls(0, None, None)
        # Nearest rank: the smallest value with at least 90% of the values at or below it.
        p90 = seconds[math.ceil(0.9 * len(seconds)) - 1]
        middle = len(seconds) // 2
        median = seconds[middle] if len(seconds) % 2 else (seconds[middle - 1] + seconds[middle]) / 2
        return cls(len(seconds), median, p90)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "median_s": self.median_s, "p90_s": self.p90_s}


@dataclass(frozen=True)
class PipelineStats:
    pipeline: str
    since: datetime
    until: datetime
    # Where the figures start: ``since``, or later when the read of the releases was bounded and
    # stopped before reaching ``since`` (the created time of the oldest release read).
    covered_since: datetime
    # Releases created in the covered part of the window (any state).
    releases: int
    # Verified (SUCCEEDED) releases, and their number per day of the covered part of the window.
    deployments: int
    deployments_per_day: float
    lead_time: Durations
    # Releases that reached the deployment, and how many of them failed or were rolled back.
    reached_deployment: int
    change_failures: int
    # change_failures / reached_deployment; None when nothing reached the deployment.
    change_failure_rate: float | None
    time_to_restore: Durations
    # Failed releases no verified release has followed yet.
    unrestored_failures: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "covered_since": self.covered_since.isoformat(),
            "releases": self.releases,
            "deployment_frequency": {
                "deployments": self.deployments,
                "per_day": self.deployments_per_day,
            },
            "lead_time": self.lead_time.to_dict(),
            "change_failure_rate": {
                "reached_deployment": self.reached_deployment,
                "failures": self.change_failures,
                "rate": self.change_failure_rate,
            },
            "time_to_restore": {
                **self.time_to_restore.to_dict(),
                "unrestored": self.unrestored_failures,
            },
        }


def rolled_back_ids(releases: Iterable[Release]) -> frozenset[str]:
    """The releases some rollback release (asked for, or automatic) names as the one it rolls
    back."""
    return frozenset(
        release.rollback_of for release in releases if release.trigger.is_rollback and release.rollback_of
    )


def pipeline_stats(
    pipeline: str,
    releases: Sequence[Release],
    since: datetime,
    until: datetime,
    *,
    covered_since: datetime | None = None,
) -> PipelineStats:
    """The four keys over the pipeline's releases created in ``[since, until)``; releases outside
    the window or of another pipeline are left out. For a promotion stage these are the stage's
    own releases: what reached it is what it deployed.

    ``covered_since``: when the releases given are only the newest part of the window (a bounded
    read stopped before ``since``), the created time of the oldest of them. The figures are then
    those of ``[covered_since, until)``: counts and rates over the releases read, and the
    deployments per day over that span, since dividing by the whole window's days would
    understate the frequency by the part that was not read."""
    start = since if covered_since is None else max(since, covered_since)
    window = [
        release
        for release in releases
        if release.pipeline == pipeline and start <= release.created_at < until
    ]
    verified = [release for release in window if release.state is ReleaseState.SUCCEEDED]
    # A rollback redeploys an old commit: it restores, it delivers no change.
    changes = [release for release in verified if not release.trigger.is_rollback]
    deployed = [release for release in window if reached_deployment(release)]
    rolled_back = rolled_back_ids(window)
    failures = [
        release for release in deployed if release.state is ReleaseState.FAILED or release.id in rolled_back
    ]
    restores, unrestored = _restores(deployed, verified)
    days = (until - start) / timedelta(days=1)
    return PipelineStats(
        pipeline=pipeline,
        since=since,
        until=until,
        covered_since=start,
        releases=len(window),
        deployments=len(verified),
        deployments_per_day=len(verified) / days if days > 0 else 0.0,
        lead_time=Durations.of(lead_time(release) for release in changes),
        reached_deployment=len(deployed),
        change_failures=len(failures),
        change_failure_rate=len(failures) / len(deployed) if deployed else None,
        time_to_restore=Durations.of(restores),
        unrestored_failures=unrestored,
    )


def _restores(deployed: Sequence[Release], verified: Sequence[Release]) -> tuple[list[timedelta], int]:
    """For each release that FAILED after its deployment started: its end to the end of the first
    verified release that ended after it. Returns those durations and the number of failures no
    verified release has followed yet."""
    verified_ends = sorted(release.updated_at for release in verified)
    restores: list[timedelta] = []
    unrestored = 0
    for failed in (release for release in deployed if release.state is ReleaseState.FAILED):
        # A binary search: a request may hold thousands of failures and of verified releases.
        first_after = bisect.bisect_right(verified_ends, failed.updated_at)
        if first_after == len(verified_ends):
            unrestored += 1
        else:
            restores.append(verified_ends[first_after] - failed.updated_at)
    return restores, unrestored


@dataclass(frozen=True)
class TerminalFigures:
    """What one release that just ended adds to the pipeline's metrics (EMF, per release): a
    deployment that reached the fleet, whether it failed, its lead time (verified changes), and
    its time to restore (a verified rollback: from the failure it answers)."""

    deployed: bool
    failed: bool
    lead_time: timedelta | None
    restore: timedelta | None


def terminal_figures(release: Release) -> TerminalFigures:
    """The figures of a release as it ends. A rollback release is created by the write that
    records the failure it answers (an automatic rollback) or by the person who saw it (a
    rollback asked for), so its time to restore runs from its own creation: no other release
    need be read. A fix-forward after a failure restores too, but only ``relco stats``, which
    reads the pipeline's history, can see that."""
    verified = release.state is ReleaseState.SUCCEEDED
    return TerminalFigures(
        deployed=reached_deployment(release),
        failed=reached_deployment(release) and release.state is ReleaseState.FAILED,
        lead_time=lead_time(release) if verified and not release.trigger.is_rollback else None,
        restore=max(timedelta(0), release.updated_at - release.created_at)
        if verified and release.trigger.is_rollback
        else None,
    )

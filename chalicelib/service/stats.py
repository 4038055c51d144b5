"""``GET /stats``: DORA's four keys per pipeline over the last N days (chalicelib/domain/dora.py),
from each pipeline's releases read newest first from the store's by-pipeline index, page by page,
until the page reaches past the window's start, or until the request's bound on the releases it
examines stops the read; the figures then cover the part read, and say where it starts."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from chalicelib.domain.api_requests import StatsQuery
from chalicelib.domain.dora import PipelineStats, pipeline_stats
from chalicelib.domain.release import Release
from chalicelib.service.caller_lookups import pipeline_in_body
from chalicelib.service.ports import ReleaseStore
from chalicelib.service.wiring import Wiring

# Releases asked of the store per call. The store pages the DynamoDB Query (each page at most
# 1 MB) until it has them, so a bigger call costs fewer round trips for a busy pipeline; but the
# last call of a pipeline may read up to this many releases older than the window's start only to
# drop them. A release item is 0.5 to 1 KB, so a thousand are about one Query page.
READ_SIZE = 1000

# The releases one request examines, over all the pipelines it covers. API Gateway answers the
# caller with a 504 after 29 s, whatever the function goes on doing. 20,000 releases are about 20
# Query calls (a few seconds of round trips and under a second of decoding and figures), about
# 2,000 read units of an eventually consistent index read, and some 30 to 50 MB of Release objects
# in the function's memory. A request past the bound answers figures over the newest part of a
# pipeline's window, with ``covered_since`` saying so.
RELEASES_PER_REQUEST = 20_000

# The resolution of a release's creation time (its ``created_key`` holds microseconds).
_INSTANT = timedelta(microseconds=1)


def stats(wiring: Wiring, query: StatsQuery) -> list[PipelineStats]:
    """The named pipeline's figures, or each configured pipeline's in the file's order."""
    if query.pipeline is not None:
        names = [pipeline_in_body(wiring, query.pipeline).name]
    else:
        names = [pipeline.name for pipeline in wiring.pipelines.pipelines]
    until = wiring.clock.now()
    since = until - timedelta(days=query.days)
    reads = [WindowRead(name, since) for name in names]
    share_out(wiring.store, reads, RELEASES_PER_REQUEST)
    return [
        pipeline_stats(
            read.pipeline,
            read.releases,
            since,
            until,
            covered_since=read.covered_since(until),
        )
        for read in reads
    ]


def releases_since(wiring: Wiring, pipeline: str, since: datetime) -> list[Release]:
    """The pipeline's releases created at or after ``since``, newest first, all of them (the
    weekly digest's two weeks of one pipeline, read by reconcile, whose time is not API Gateway's)."""
    read = WindowRead(pipeline, since)
    read.read_more(wiring.store, sys.maxsize)
    return read.releases


def share_out(store: ReleaseStore, reads: list[WindowRead], bound: int) -> None:
    """Reads the windows examining at most ``bound`` releases in all (those of the windows and the
    older ones a window's last page holds alike). Each round gives every window not yet read
    through an equal share of what is left, so quiet pipelines leave their unused share to the
    busy ones instead of a busy pipeline early in the file taking it all."""
    left = bound
    unfinished = list(reads)
    while unfinished and left >= len(unfinished):
        share = left // len(unfinished)
        for read in unfinished:
            left -= read.read_more(store, share)
        unfinished = [read for read in unfinished if not read.complete]


@dataclass
class WindowRead:
    """One pipeline's releases created at or after ``since``, read newest first, so far."""

    pipeline: str
    since: datetime
    releases: list[Release] = field(default_factory=list)
    # The read reached a release older than ``since``, or the pipeline's first release.
    complete: bool = False

    def covered_since(self, until: datetime) -> datetime | None:
        """None when the read reached the window's start. Else just after the creation of the
        oldest release read: releases created in that same microsecond sort by id, and the ones
        after it in the index were not read, so none of that instant counts. ``until`` when the
        bound left this pipeline no share at all (more pipelines than the bound: its figures then
        cover nothing)."""
        if self.complete:
            return None
        return self.releases[-1].created_at + _INSTANT if self.releases else until

    def read_more(self, store: ReleaseStore, budget: int) -> int:
        """Reads on, examining at most ``budget`` more releases, and returns how many it examined.
        The read is complete when a page ends the index or holds a release older than ``since``;
        a window of exactly ``budget`` releases is not known to be complete until one more is
        read."""
        examined = 0
        while not self.complete and examined < budget:
            asked = min(READ_SIZE, budget - examined)
            before = self.releases[-1].created_key if self.releases else None
            page = store.list_releases(self.pipeline, asked, before)
            examined += len(page)
            # Newest first: the window's releases are the page's head.
            in_window = [release for release in page if release.created_at >= self.since]
            self.releases.extend(in_window)
            self.complete = len(in_window) < len(page) or len(page) < asked
        return examined

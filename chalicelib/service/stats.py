"""``GET /stats``: DORA's four keys per pipeline over the last N days (chalicelib/domain/dora.py),
from each pipeline's releases read newest first from the store's by-pipeline index, page by page,
until the page reaches past the window's start."""

from __future__ import annotations

from datetime import datetime, timedelta

from chalicelib.domain.api_requests import StatsQuery
from chalicelib.domain.dora import PipelineStats, pipeline_stats
from chalicelib.domain.release import Release
from chalicelib.service.caller_lookups import pipeline_in_body
from chalicelib.service.wiring import Wiring

# Releases per query: the store reads as many DynamoDB pages as this needs.
PAGE_SIZE = 100


def stats(wiring: Wiring, query: StatsQuery) -> list[PipelineStats]:
    """The named pipeline's figures, or each configured pipeline's in the file's order."""
    if query.pipeline is not None:
        names = [pipeline_in_body(wiring, query.pipeline).name]
    else:
        names = [pipeline.name for pipeline in wiring.pipelines.pipelines]
    until = wiring.clock.now()
    since = until - timedelta(days=query.days)
    return [pipeline_stats(name, releases_since(wiring, name, since), since, until) for name in names]


def releases_since(wiring: Wiring, pipeline: str, since: datetime) -> list[Release]:
    """The pipeline's releases created at or after ``since``, newest first."""
    found: list[Release] = []
    before: str | None = None
    while True:
        page = wiring.store.list_releases(pipeline, PAGE_SIZE, before)
        found.extend(release for release in page if release.created_at >= since)
        if len(page) < PAGE_SIZE or page[-1].created_at < since:
            return found
        before = page[-1].created_key

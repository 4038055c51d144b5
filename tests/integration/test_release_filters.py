"""``GET /releases?state=&trigger=`` on moto: the coordinator filters what it reads, page by page,
and a page the examine bound cut short carries a ``next`` that continues without skipping or
repeating a release, for one pipeline and for every pipeline merged."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.lane import Change
from chalicelib.domain.release import Release, ReleaseState, Revision, Trigger, new_release
from chalicelib.service import release_queries
from tests.integration.conftest import BUCKET, HandlerCall, World
from tests.integration.test_api import call

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
STATES = (ReleaseState.SUCCEEDED, ReleaseState.FAILED, ReleaseState.SUCCEEDED, ReleaseState.STOPPED)
TRIGGERS = (Trigger.UPLOAD, Trigger.API, Trigger.UPLOAD, Trigger.ROLLBACK, Trigger.UPLOAD)


def seed_releases(world: World, pipeline: str, count: int, *, offset_s: int) -> list[Release]:
    """``count`` releases of ``pipeline``, a minute apart from ``offset_s`` seconds after START,
    their states and triggers cycling out of step so that every combination occurs."""
    application = pipeline.removesuffix("-prod")
    releases = [
        replace(
            new_release(
                release_id=f"rel-{application}-{number:03d}",
                pipeline=pipeline,
                application=application,
                deployment_group=pipeline,
                revision=Revision(BUCKET, f"{application}/prod/app-{number}.zip", "v1", None),
                trigger=trigger,
                now=START + timedelta(minutes=number, seconds=offset_s),
            ).release,
            state=state,
        )
        for number, state, trigger in zip(
            range(count), itertools.cycle(STATES), itertools.cycle(TRIGGERS), strict=False
        )
    ]
    for start in range(0, count, 50):
        world.store.commit(Change(releases=releases[start : start + 50]))
    return releases


def _newest_first(releases: list[Release], states: set[str], triggers: set[str]) -> list[str]:
    matching = [
        release
        for release in releases
        if (not states or release.state in states) and (not triggers or release.trigger in triggers)
    ]
    return [release.id for release in sorted(matching, key=lambda release: release.created_key, reverse=True)]


@dataclass(frozen=True)
class Page:
    ids: list[str]
    next: str | None
    # The releases the request's Query calls asked DynamoDB for (their Limits), all pipelines together.
    asked: int


def _pages(world: World, handler_calls: list[HandlerCall], query: str) -> list[Page]:
    """Each page, following the tokens from the first page to the last."""
    pages: list[Page] = []
    token: str | None = None
    while True:
        before = len(handler_calls)
        reply = call(world, "GET", f"/releases?{query}" + (f"&next={token}" if token else ""))
        assert reply.status == 200, reply.json
        asked = sum(made.params["Limit"] for made in handler_calls[before:] if made.operation == "Query")
        token = reply.json["next"]
        pages.append(Page([release["id"] for release in reply.json["releases"]], token, asked))
        if token is None:
            return pages
        assert len(pages) < 200, "the tokens do not reach the end"


def _listed(pages: list[Page]) -> list[str]:
    return [release_id for page in pages for release_id in page.ids]


@pytest.fixture
def seeded(world: World) -> list[Release]:
    """Two pipelines' releases, interleaved in time (api-prod's 40 and web-prod's 25), and none of
    shop-prod."""
    return seed_releases(world, "api-prod", 40, offset_s=0) + seed_releases(
        world, "web-prod", 25, offset_s=30
    )


@pytest.mark.parametrize(
    ("filters", "states", "triggers"),
    [
        ("state=FAILED", {"FAILED"}, set()),
        ("trigger=rollback", set(), {"rollback"}),
        ("state=FAILED,STOPPED&trigger=upload", {"FAILED", "STOPPED"}, {"upload"}),
    ],
)
def test_filters_page_through_every_match_of_one_pipeline_once_newest_first(
    world: World,
    seeded: list[Release],
    handler_calls: list[HandlerCall],
    filters: str,
    states: set[str],
    triggers: set[str],
) -> None:
    expected = _newest_first([r for r in seeded if r.pipeline == "api-prod"], states, triggers)
    assert 3 < len(expected) < 40  # the filter leaves some out and fills more than one page

    whole = call(world, "GET", f"/releases?pipeline=api-prod&limit=100&{filters}")
    assert [release["id"] for release in whole.json["releases"]] == expected
    assert whole.json["next"] is None

    pages = _pages(world, handler_calls, f"pipeline=api-prod&limit=3&{filters}")
    assert _listed(pages) == expected
    assert all(len(page.ids) == 3 for page in pages if page.next is not None)


def test_filters_over_every_pipeline_merge_their_matches(
    world: World, seeded: list[Release], handler_calls: list[HandlerCall]
) -> None:
    expected = _newest_first(seeded, {"FAILED", "STOPPED"}, set())
    assert {release_id.split("-")[1] for release_id in expected} == {"api", "web"}

    pages = _pages(world, handler_calls, "limit=4&state=FAILED,STOPPED")

    assert _listed(pages) == expected


@pytest.mark.parametrize("pipeline", ["pipeline=api-prod&", ""])
def test_a_read_cut_short_by_the_bound_goes_on_where_it_stopped(
    world: World,
    seeded: list[Release],
    monkeypatch: pytest.MonkeyPatch,
    handler_calls: list[HandlerCall],
    pipeline: str,
) -> None:
    """With at most 10 releases examined per request (3 of each of the three pipelines without
    ``pipeline``: never fewer than a page and one), a rare match comes in short pages, some empty,
    each with a ``next``; following them lists every match once, in order."""
    monkeypatch.setattr(release_queries, "MAX_EXAMINED", 10)
    releases = [r for r in seeded if r.pipeline == "api-prod"] if pipeline else seeded
    expected = _newest_first(releases, {"STOPPED"}, {"rollback"})
    assert len(expected) >= 2

    pages = _pages(world, handler_calls, f"{pipeline}limit=2&state=STOPPED&trigger=rollback")

    assert _listed(pages) == expected
    assert any(len(page.ids) < 2 and page.next is not None for page in pages)
    assert [] in [page.ids for page in pages]
    assert max(page.asked for page in pages) <= 10


def test_without_filters_a_page_reads_each_pipeline_once(
    world: World, seeded: list[Release], handler_calls: list[HandlerCall]
) -> None:
    before = len(handler_calls)

    reply = call(world, "GET", "/releases?limit=5")

    queries = [call for call in handler_calls[before:] if call.operation == "Query"]
    assert [
        (call.params["ExpressionAttributeValues"][":pipeline"]["S"], call.params["Limit"]) for call in queries
    ] == [
        ("api-prod", 6),
        ("web-prod", 6),
        ("shop-prod", 6),
    ]
    assert [release["id"] for release in reply.json["releases"]] == _newest_first(seeded, set(), set())[:5]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        (
            "state=BROKEN",
            "query parameter 'state' has an unknown value 'BROKEN'; allowed (case matters): RECEIVED, ",
        ),
        (
            "trigger=push",
            "query parameter 'trigger' has an unknown value 'push'; allowed (case matters): upload, ",
        ),
        ("state=", "query parameter 'state' has an empty value"),
        ("state=FAILED&state=STOPPED", "'state' must be given once"),
    ],
)
def test_unknown_or_empty_filters_are_400(world: World, query: str, says: str) -> None:
    reply = call(world, "GET", f"/releases?{query}")

    assert reply.status == 400, reply.json
    assert says in reply.message


def test_a_rare_match_is_read_in_reads_that_double(
    world: World, seeded: list[Release], handler_calls: list[HandlerCall]
) -> None:
    """api-prod's 40 releases hold two STOPPED rollbacks (numbers 23 and 3): the first read asks for
    a page and one, as without filters, and each further read for twice the last."""
    before = len(handler_calls)

    reply = call(world, "GET", "/releases?pipeline=api-prod&limit=2&state=STOPPED&trigger=rollback")

    assert [release["id"] for release in reply.json["releases"]] == ["rel-api-023", "rel-api-003"]
    assert reply.json["next"] is None
    limits = [made.params["Limit"] for made in handler_calls[before:] if made.operation == "Query"]
    assert limits == [3, 6, 12, 24]

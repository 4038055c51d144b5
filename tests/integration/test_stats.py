"""``GET /stats`` and ``relco stats`` on moto: the hand-computed history of tests/unit/test_dora.py
written to the table, read back through the pipeline index in pages of 4 (so the use case pages
through 15 releases), answered through the API (checked against docs/openapi.yaml) and the CLI;
and the commit time an upload carries, kept when well formed and dropped when not."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from boto3.dynamodb.types import TypeSerializer

from chalicelib.adapters.dynamodb_store import release_to_item
from chalicelib.domain.lane import Change
from chalicelib.domain.release import Release, ReleaseState
from chalicelib.service import stats
from tests.integration.conftest import TABLE, HandlerCall, World
from tests.integration.test_api import call
from tests.integration.test_cli import api_url, relco, relco_json
from tests.unit.test_dora import history
from tests.unit.test_dora import release as dora_release

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")

PIPELINE = "shop-prod"
# The figures tests/unit/test_dora.py computes by hand for this history over its 10 days.
EXPECTED = {
    "releases": 14,
    "deployment_frequency": {"deployments": 6, "per_day": 0.6},
    "lead_time": {"count": 4, "median_s": 4050.0, "p90_s": 5400.0},
    "change_failure_rate": {"reached_deployment": 10, "failures": 5, "rate": 0.5},
    "time_to_restore": {"count": 3, "median_s": 5400.0, "p90_s": 9900.0, "unrestored": 1},
}
__all__ = ["api_url"]  # a fixture, used by name


@pytest.fixture
def recorded_history(world: World, monkeypatch: pytest.MonkeyPatch) -> list[Release]:
    """The history, its day 0 ten days before now (and a minute, so that the request's window,
    which starts ten days before the request, holds day 0's releases as the unit test's does)."""
    monkeypatch.setattr(stats, "READ_SIZE", 4)
    t0 = datetime.now(UTC) - timedelta(days=10) + timedelta(minutes=1)
    releases = [release for release in history(t0, PIPELINE) if release.pipeline == PIPELINE]
    world.store.commit(Change(releases=releases))
    return releases


def figures(answer: dict[str, object]) -> dict[str, object]:
    return {name: answer[name] for name in EXPECTED}


def test_the_api_answers_the_hand_computed_figures(world: World, recorded_history: list[Release]) -> None:
    reply = call(world, "GET", f"/stats?pipeline={PIPELINE}&days=10")

    assert reply.status == 200, reply.json
    assert reply.json["days"] == 10
    [shop] = reply.json["pipelines"]
    assert shop["pipeline"] == PIPELINE
    assert figures(shop) == EXPECTED
    until = datetime.fromisoformat(shop["until"])
    assert until - datetime.fromisoformat(shop["since"]) == timedelta(days=10)
    # Read whole: the figures start at the window's start.
    assert shop["covered_since"] == shop["since"]


def test_without_a_pipeline_every_pipeline_is_answered(world: World, recorded_history: list[Release]) -> None:
    reply = call(world, "GET", "/stats?days=10")

    assert reply.status == 200, reply.json
    by_name = {entry["pipeline"]: entry for entry in reply.json["pipelines"]}
    assert list(by_name) == ["api-prod", "web-prod", PIPELINE]
    assert figures(by_name[PIPELINE]) == EXPECTED
    assert by_name["api-prod"]["releases"] == 0
    assert by_name["api-prod"]["change_failure_rate"]["rate"] is None


def test_a_shorter_window_leaves_older_releases_out(world: World, recorded_history: list[Release]) -> None:
    # The last 2 days hold r13 (FAILED, unrestored) and r14 (DEPLOYING) only.
    reply = call(world, "GET", f"/stats?pipeline={PIPELINE}&days=2")

    [shop] = reply.json["pipelines"]
    assert shop["releases"] == 2
    assert shop["change_failure_rate"] == {"reached_deployment": 1, "failures": 1, "rate": 1.0}
    assert shop["time_to_restore"]["unrestored"] == 1
    assert shop["deployment_frequency"] == {"deployments": 0, "per_day": 0.0}


def by_id(releases: list[Release]) -> dict[str, Release]:
    return {release.id: release for release in releases}


def test_a_read_stopped_by_the_bound_answers_the_part_read_and_says_where_it_starts(
    world: World, recorded_history: list[Release], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The newest 9 of the window's 14 are r14 .. r6. Releases created in r6's microsecond may not
    # all have been read, so the figures start just after it: r14 .. r7, tests/unit/test_dora.py's
    # partial window.
    monkeypatch.setattr(stats, "RELEASES_PER_REQUEST", 9)

    reply = call(world, "GET", f"/stats?pipeline={PIPELINE}&days=10")

    assert reply.status == 200, reply.json
    [shop] = reply.json["pipelines"]
    start = by_id(recorded_history)["r6"].created_at + timedelta(microseconds=1)
    assert shop["covered_since"] == start.isoformat()
    assert shop["since"] != shop["covered_since"]
    covered_days = (datetime.fromisoformat(shop["until"]) - start) / timedelta(days=1)
    assert shop["releases"] == 8
    assert shop["deployment_frequency"] == {"deployments": 1, "per_day": pytest.approx(1 / covered_days)}
    assert shop["lead_time"] == {"count": 1, "median_s": 4500.0, "p90_s": 4500.0}
    assert shop["change_failure_rate"] == {"reached_deployment": 4, "failures": 3, "rate": 0.75}
    assert shop["time_to_restore"] == {"count": 2, "median_s": 7650.0, "p90_s": 9900.0, "unrestored": 1}


def test_a_window_is_whole_only_once_the_read_sees_past_it(
    world: World, recorded_history: list[Release], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 14 of 14: the index might hold more in the window, so the figures start after r1's instant.
    monkeypatch.setattr(stats, "RELEASES_PER_REQUEST", 14)
    [shop] = call(world, "GET", f"/stats?pipeline={PIPELINE}&days=10").json["pipelines"]
    after_r1 = by_id(recorded_history)["r1"].created_at + timedelta(microseconds=1)
    assert (shop["covered_since"], shop["releases"]) == (after_r1.isoformat(), 13)

    # One more examined finds the index's end: the whole window.
    monkeypatch.setattr(stats, "RELEASES_PER_REQUEST", 15)
    [shop] = call(world, "GET", f"/stats?pipeline={PIPELINE}&days=10").json["pipelines"]
    assert shop["covered_since"] == shop["since"]
    assert figures(shop) == EXPECTED


def test_the_bound_counts_every_release_examined_older_ones_included(
    world: World,
    recorded_history: list[Release],
    handler_calls: list[HandlerCall],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The last 2 days hold r14 and r13; the page that finds the window's start holds older ones,
    # and those count against the bound too.
    monkeypatch.setattr(stats, "RELEASES_PER_REQUEST", 5)
    handler_calls.clear()

    [shop] = call(world, "GET", f"/stats?pipeline={PIPELINE}&days=2").json["pipelines"]

    assert (shop["releases"], shop["covered_since"]) == (2, shop["since"])
    queries = [
        c for c in handler_calls if c.operation == "Query" and c.params.get("IndexName") == "by_pipeline"
    ]
    assert sum(query.params["Limit"] for query in queries) <= 5


def test_quiet_pipelines_leave_their_share_of_the_bound_to_a_busy_one(
    world: World, recorded_history: list[Release], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 9 over three pipelines: 3 each, api-prod and web-prod examine none, and shop-prod gets the
    # 6 they left: r14 .. r6 examined, the figures over r14 .. r7 (after r6's instant).
    monkeypatch.setattr(stats, "RELEASES_PER_REQUEST", 9)

    reply = call(world, "GET", "/stats?days=10")

    by_name = {entry["pipeline"]: entry for entry in reply.json["pipelines"]}
    assert by_name[PIPELINE]["releases"] == 8
    after_r6 = by_id(recorded_history)["r6"].created_at + timedelta(microseconds=1)
    assert by_name[PIPELINE]["covered_since"] == after_r6.isoformat()
    for quiet in ("api-prod", "web-prod"):
        assert by_name[quiet]["covered_since"] == by_name[quiet]["since"]


def test_a_pipeline_the_bound_leaves_no_share_covers_nothing(
    world: World, recorded_history: list[Release], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 over three pipelines: no round can give each one, so none is read.
    monkeypatch.setattr(stats, "RELEASES_PER_REQUEST", 2)

    reply = call(world, "GET", "/stats?days=10")

    assert reply.status == 200, reply.json
    for entry in reply.json["pipelines"]:
        assert entry["covered_since"] == entry["until"]
        assert (entry["releases"], entry["deployment_frequency"]["per_day"]) == (0, 0.0)


def test_a_busy_pipeline_costs_one_query_per_thousand_releases(
    world: World, handler_calls: list[HandlerCall]
) -> None:
    # 2,500 releases in the window, read 1,000 a call: 1,000, 1,000, then 500 of the 1,000 asked
    # for, which ends the read (one Query each: 1,000 of these items are about 0.5 MB, under a page).
    now = datetime.now(UTC)
    serializer = TypeSerializer()
    items = [
        {
            name: serializer.serialize(value)
            for name, value in release_to_item(release).items()
            if value is not None
        }
        for release in (
            dora_release(
                f"b{n:04}",
                now - timedelta(minutes=n + 1),
                now - timedelta(minutes=n),
                ReleaseState.SUCCEEDED,
                pipeline=PIPELINE,
            )
            for n in range(2500)
        )
    ]
    # BatchWriteItem (25 items a call), not the store's transactions, which moto makes slow.
    for start in range(0, len(items), 25):
        world.aws("dynamodb").batch_write_item(
            RequestItems={TABLE: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]}
        )
    handler_calls.clear()

    [shop] = call(world, "GET", f"/stats?pipeline={PIPELINE}&days=30").json["pipelines"]

    assert (shop["releases"], shop["covered_since"]) == (2500, shop["since"])
    queries = [
        c for c in handler_calls if c.operation == "Query" and c.params.get("IndexName") == "by_pipeline"
    ]
    assert [query.params["Limit"] for query in queries] == [1000, 1000, 1000]


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("days=0", 400, "between 1 and 365"),
        ("days=366", 400, "between 1 and 365"),
        ("days=ten", 400, "whole number"),
        ("days=-3", 400, "whole number"),
        ("days=5&days=6", 400, "given once"),
        ("week=1", 400, "unknown query parameter"),
        ("pipeline=", 400, "empty"),
        ("pipeline=nope", 422, "not configured"),
    ],
)
def test_bad_queries_are_refused_with_what_to_fix(world: World, query: str, status: int, says: str) -> None:
    reply = call(world, "GET", f"/stats?{query}")
    assert reply.status == status, reply.json
    assert says in reply.message


def test_relco_stats_prints_the_figures(world: World, recorded_history: list[Release], api_url: str) -> None:
    answer = relco_json(api_url, "stats", PIPELINE, "--days", "10")
    [shop] = answer["pipelines"]
    assert figures(shop) == EXPECTED

    result = relco(api_url, "stats", PIPELINE, "--days", "10")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{PIPELINE}: last 10 days, 14 releases",
        "  deployment frequency  0.60/day (6 verified)",
        "  lead time             median 67.5m, p90 90.0m (4 changes)",
        "  change failure rate   50% (5 of 10)",
        "  time to restore       median 90.0m, p90 2.8h (3 restored, 1 not yet)",
    ]


def test_relco_stats_says_when_the_figures_cover_only_part_of_the_window(
    world: World, recorded_history: list[Release], api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # r14 .. r7 examined; the figures start just after r7's instant: r14 .. r8.
    monkeypatch.setattr(stats, "RELEASES_PER_REQUEST", 8)
    covered = by_id(recorded_history)["r7"].created_at + timedelta(microseconds=1)

    [shop] = relco_json(api_url, "stats", PIPELINE, "--days", "10")["pipelines"]
    assert shop["covered_since"] == covered.isoformat()

    note = f"  partial: the figures cover only since {covered:%Y-%m-%d %H:%M} UTC, the read was bounded; ask"
    one = relco(api_url, "stats", PIPELINE, "--days", "10").stdout.splitlines()
    assert one[:2] == [f"{PIPELINE}: last 10 days, 7 releases", f"{note} fewer --days"]
    every = relco(api_url, "stats", "--days", "10").stdout.splitlines()
    assert f"{note} `relco stats {PIPELINE}` or fewer --days" in every
    assert [line for line in every if "partial" in line] == [
        f"{note} `relco stats {PIPELINE}` or fewer --days"
    ]


def test_relco_stats_refuses_a_window_out_of_range(api_url: str) -> None:
    result = relco(api_url, "stats", "--days", "400")
    assert result.exit_code == 2
    assert "400 is not in the range 1<=x<=365" in result.output


def test_an_upload_keeps_its_commit_time(world: World) -> None:
    upload = world.upload("api/prod/app-1.zip", metadata={"commit-time": "2026-03-02T10:00:00+01:00"})

    [created] = world.deliver_upload(upload.eventbridge)["releases"]

    assert world.release(created["id"]).metadata["commit_time"] == "2026-03-02T10:00:00+01:00"


def test_a_malformed_commit_time_is_dropped_and_the_upload_goes_ahead(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    upload = world.upload("api/prod/app-2.zip", metadata={"commit-time": "2026-03-02 10:00", "commit": "abc"})

    with caplog.at_level(logging.WARNING):
        [created] = world.deliver_upload(upload.eventbridge)["releases"]

    release = world.release(created["id"])
    assert release.state.value == "DEPLOYING"
    assert dict(release.metadata) == {"commit": "abc"}
    [warning] = [
        record for record in caplog.records if record.getMessage() == "the upload's commit time is ignored"
    ]
    assert "has no UTC offset" in getattr(warning, "why", "")

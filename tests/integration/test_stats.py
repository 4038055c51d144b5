"""``GET /stats`` and ``relco stats`` on moto: the hand-computed history of tests/unit/test_dora.py
written to the table, read back through the pipeline index in pages of 4 (so the use case pages
through 15 releases), answered through the API (checked against docs/openapi.yaml) and the CLI;
and the commit time an upload carries, kept when well formed and dropped when not."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.lane import Change
from chalicelib.domain.release import Release
from chalicelib.service import stats
from tests.integration.conftest import World
from tests.integration.test_api import call
from tests.integration.test_cli import api_url, relco, relco_json
from tests.unit.test_dora import history

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
    monkeypatch.setattr(stats, "PAGE_SIZE", 4)
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

"""The DORA metrics each release that ended writes as Embedded Metric Format lines to the
coordinator's log stream (stdout in Lambda), from ``on_release_stream`` on moto: a verified
release with its lead time, a failure, and the automatic rollback that restores it; the same
figures when each stream record comes in a batch of its own (the release is then read), and no
AWS call when the batch holds it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.conftest import TABLE, HandlerCall, LogLines, World
from tests.integration.test_api import finish, uploaded_release
from tests.integration.test_notifications import Pump

PIPELINE = "api-prod"


def emf_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


def by_metric(line: dict[str, Any]) -> dict[str, float]:
    [directive] = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "ReleaseCoordinator"
    assert [sorted(names) for names in directive["Dimensions"]] == [["coordinator", "pipeline", "service"]]
    assert (line["pipeline"], line["service"]) == (PIPELINE, "release-coordinator")
    assert line["coordinator"] == TABLE  # the stack's releases table (RELEASES_TABLE)
    return {metric["Name"]: line[metric["Name"]][0] for metric in directive["Metrics"]}


def history_of_three(world: World) -> tuple[str, str, str, datetime]:
    """A verified release whose commit was an hour before its upload, a failed one, and its
    automatic rollback, verified."""
    committed = datetime.now(UTC) - timedelta(hours=1)
    upload = world.upload("api/prod/app-1.zip", metadata={"commit-time": committed.isoformat()})
    [first] = world.deliver_upload(upload.eventbridge)["releases"]
    finish(world, first["id"])
    failed = uploaded_release(world, "api/prod/app-2.zip")
    finish(world, failed, "Failed", "FAILURE")
    rollback = world.release(f"rb-{failed}")
    finish(world, rollback.id)
    return first["id"], failed, rollback.id, committed


def expected_lines(
    world: World, first: str, failed: str, rollback: str, committed: datetime
) -> list[dict[str, float]]:
    verified, restored, failure = world.release(first), world.release(rollback), world.release(failed)
    assert (verified.state.value, failure.state.value, restored.state.value) == (
        "SUCCEEDED",
        "FAILED",
        "SUCCEEDED",
    )
    # The rollback is created by the failure's write: it restores from the failure's end.
    assert restored.created_at == failure.updated_at
    return [
        {
            "DeploymentCount": 1.0,
            "DeploymentFailed": 0.0,
            "LeadTimeSeconds": (verified.updated_at - committed).total_seconds(),
        },
        {"DeploymentCount": 1.0, "DeploymentFailed": 1.0},
        {
            "DeploymentCount": 1.0,
            "DeploymentFailed": 0.0,
            "RestoreSeconds": (restored.updated_at - failure.updated_at).total_seconds(),
        },
    ]


def test_each_release_that_ended_prints_its_metrics_once_without_an_aws_call(
    world: World, log_lines: LogLines, handler_calls: list[HandlerCall]
) -> None:
    pump = Pump(world)
    first, failed, rollback, committed = history_of_three(world)
    records = pump.stream_records()
    log_lines.take()
    calls_before = len(handler_calls)

    pump.publish(records)

    lines = emf_lines(log_lines.take())
    assert [by_metric(line) for line in lines] == expected_lines(world, first, failed, rollback, committed)
    lead_time = by_metric(lines[0])["LeadTimeSeconds"]
    assert 3600 <= lead_time < 3660
    # No route wants these events and the batch holds each release: nothing is read or sent.
    assert handler_calls[calls_before:] == []


def test_a_release_its_batch_does_not_hold_is_read(
    world: World, log_lines: LogLines, handler_calls: list[HandlerCall]
) -> None:
    pump = Pump(world)
    first, failed, rollback, committed = history_of_three(world)
    records = pump.stream_records()
    log_lines.take()
    calls_before = len(handler_calls)

    for record in records:
        pump.publish([record])

    lines = emf_lines(log_lines.take())
    assert [by_metric(line) for line in lines] == expected_lines(world, first, failed, rollback, committed)
    reads = [(call.service, call.operation) for call in handler_calls[calls_before:]]
    assert reads == [("dynamodb", "GetItem")] * 3


def test_a_release_that_never_reached_the_deployment_prints_nothing(
    world: World, log_lines: LogLines
) -> None:
    pump = Pump(world)
    uploaded_release(world, "api/prod/app-1.zip")
    waiting = uploaded_release(world, "api/prod/app-2.zip")
    world.client.http.request(
        "POST", f"/releases/{waiting}/cancel", headers={"content-type": "application/json"}, body=b""
    )
    assert world.release(waiting).state.value == "STOPPED"
    records = pump.stream_records()
    log_lines.take()

    pump.publish(records)

    assert emf_lines(log_lines.take()) == []

"""A corpus of bad input for every handler and route: truncated JSON, wrong types, missing
fields, huge payloads, unknown enum values, hostile keys. Handlers log and skip (a malformed
message is never retried forever); routes answer 4xx with a message, never 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.release import ReleaseState
from tests.integration import conftest
from tests.integration.conftest import World

# A pipeline whose releases await approval by a role the test client (an unverified caller) is
# not: the approve and reject routes meet a real release awaiting approval.
GATED_TOML = """
[[pipeline]]
name = "gated-prod"
bucket = "acme-artifacts"
prefix = "gated/prod/"
application = "gated"
deployment_group = "gated-prod"

[pipeline.approval]
required = true
approvers = ["arn:aws:iam::123456789012:role/Releasers"]
"""


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    """The shared pipelines file and the approval pipeline."""
    path = tmp_path / "pipelines.toml"
    path.write_text(conftest.PIPELINES_TOML + GATED_TOML, encoding="utf-8")
    return path


HOSTILE_STRINGS = [
    "",
    "../../etc/passwd",
    "api/prod/../../../x.zip",
    "\x00\x01\x1b[31mred",
    "é" * 3000,
    "x" * 300_000,
    "%00%2e%2e%2f",
    "${jndi:ldap://127.0.0.1/a}",
    "<script>alert(1)</script>",
]
WRONG_TYPES: list[Any] = [None, 0, -1, 1.5, True, [], {}, [None], {"a": {"b": {"c": []}}}]
# Valid ISO 8601 times at the edges of Python's datetime: their UTC value, or the time left until
# them, is out of its range.
EXTREME_TIMES = [
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+00:00",
]
BAD_BODIES = ["{", '{"a":', "null", "[]", '"text"', "1e999", "\x00", "{" * 5000 + "}" * 5000]


def artifact_events() -> list[Any]:
    events: list[Any] = [*WRONG_TYPES, {"source": "aws.s3"}, {"Records": None}, {"Records": [None, 1, "x"]}]
    for value in [*HOSTILE_STRINGS, *WRONG_TYPES]:
        events.append(
            {
                "source": "aws.s3",
                "detail-type": "Object Created",
                "detail": {"bucket": {"name": value}, "object": {"key": value}},
            }
        )
        events.append(
            {
                "Records": [
                    {
                        "eventName": "ObjectCreated:Put",
                        "s3": {
                            "bucket": {"name": "acme-artifacts"},
                            "object": {"key": value, "versionId": value},
                        },
                    }
                ]
            }
        )
    return events


def codedeploy_events() -> list[Any]:
    """EventBridge always sends its envelope (Chalice's CloudWatchEvent needs it); what is inside
    the detail is what can be wrong."""
    envelope = {
        "version": "0",
        "id": "1",
        "source": "aws.codedeploy",
        "account": "123456789012",
        "time": "2026-11-26T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail-type": "CodeDeploy Deployment State-change Notification",
    }
    events: list[Any] = [{**envelope, "detail": detail} for detail in WRONG_TYPES]
    events.append({**envelope, "detail-type": "Something Else", "detail": {}})
    for value in [*HOSTILE_STRINGS[:6], *WRONG_TYPES, "EXPLODED"]:
        detail = {"deploymentId": value, "state": value, "application": "api", "deploymentGroup": "api-prod"}
        events.append({**envelope, "detail": detail})
        events.append({**envelope, "detail": {**detail, "state": "SUCCESS"}})
    return events


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m-{number}",
                "receiptHandle": f"r-{number}",
                "body": body,
                "attributes": {"MessageGroupId": "g", "MessageDeduplicationId": f"d-{number}"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue",
                "awsRegion": "us-east-1",
            }
            for number, body in enumerate(bodies)
        ]
    }


def queue_bodies() -> list[str]:
    values = [json.dumps(v) for v in [*WRONG_TYPES, *HOSTILE_STRINGS[:5]]]
    shaped = [
        json.dumps({"release_id": v, "deployment_id": v, "check": v, "event_id": v, "route": v})
        for v in [*HOSTILE_STRINGS[:5], *WRONG_TYPES]
    ]
    # Lane wake-ups on the verify queue (chalicelib/domain/wakeups.py).
    wake_ups = [
        json.dumps({"kind": kind, "version": version, "pipeline": v, "due_at": v})
        for v in [*HOSTILE_STRINGS[:5], *WRONG_TYPES]
        for kind, version in (("wake", 1), ("wake", v), (v, 1))
    ]
    wake_ups += [
        json.dumps({"kind": "wake", "version": 1, "pipeline": v, "due_at": "2026-01-01T00:00:00+00:00"})
        for v in HOSTILE_STRINGS[:5]
    ]
    # A configured pipeline's wake-up due at the ends of what a datetime holds, with extreme
    # offsets, without a zone, or not a date; and versions that only look like 1.
    wake_ups += [
        json.dumps({"kind": "wake", "version": 1, "pipeline": "api-prod", "due_at": due_at})
        for due_at in [*EXTREME_TIMES, "2026-01-01T00:00:00", "2026-13-45T99:00:00+00:00", "now"]
    ]
    wake_ups += [
        json.dumps({"kind": "wake", "version": version, "pipeline": "api-prod", "due_at": EXTREME_TIMES[0]})
        for version in (True, 1.0, "1", [1], 2)
    ]
    return [*BAD_BODIES, *values, *shaped, *wake_ups]


def stream_records() -> list[Any]:
    return [
        {"eventName": "INSERT", "dynamodb": {}},
        {"eventName": "INSERT", "dynamodb": {"NewImage": {"kind": {"S": "event"}}}},
        {
            "eventName": "INSERT",
            "dynamodb": {"NewImage": {"kind": {"S": "event"}, "id": {"S": "x"}, "type": {"N": "1"}}},
        },
        {"eventName": "MODIFY", "dynamodb": {"NewImage": None}},
        {"eventName": "REMOVE"},
    ]


@pytest.mark.timeout(300)
def test_artifact_handler_skips_every_bad_event(world: World) -> None:
    for event in artifact_events():
        result = world.invoke("on_artifact_event", event)
        assert result["releases"] == [], event
    assert world.deployments() == []


@pytest.mark.timeout(120)
def test_codedeploy_handler_skips_every_bad_event(world: World) -> None:
    for event in codedeploy_events():
        world.invoke("on_codedeploy_event", event)
    assert world.store.get_slot("api-prod").active is None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("function", ["on_verify_message", "on_notify_message", "on_slack_action"])
def test_queue_handlers_drop_malformed_messages_instead_of_retrying_them(world: World, function: str) -> None:
    for body in queue_bodies():
        result = world.invoke(function, sqs_event([body]))
        assert result == {"batchItemFailures": []}, body


@pytest.mark.timeout(120)
def test_stream_handler_skips_records_that_are_not_history_events(world: World) -> None:
    for record in stream_records():
        event = {
            "Records": [
                {**record, "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"}
            ]
        }
        result = world.invoke("on_release_stream", event)
        assert result.get("batchItemFailures", []) == [], record


ROUTES = [
    ("GET", "/releases"),
    ("POST", "/releases"),
    ("GET", "/releases/{id}"),
    ("POST", "/releases/{id}/redeploy"),
    ("POST", "/releases/{id}/cancel"),
    ("POST", "/releases/{id}/approve"),
    ("POST", "/releases/{id}/reject"),
    ("GET", "/pipelines"),
    ("GET", "/pipelines/{id}"),
    ("GET", "/pipelines/{id}/fleet"),
    ("POST", "/pipelines/{id}/rollback"),
    ("POST", "/pipelines/{id}/promote"),
    ("GET", "/stats"),
]


# Slack's route answers only with a [slack] app and Slack's signature: its corpus is in
# tests/integration/test_slack_actions.py (test_the_route_answers_bad_input_with_a_4xx).
ROUTES_WITH_THEIR_OWN_CORPUS = {("POST", "/slack/interactions")}


def test_the_corpus_covers_every_route() -> None:
    """A new route joins ROUTES (or a corpus of its own below), or this fails."""
    import re

    from app import app

    served = {
        (method, re.sub(r"\{[a-z_]+\}", "{id}", path))
        for path, methods in app.routes.items()
        for method in methods
    }
    assert served == set(ROUTES) | ROUTES_WITH_THEIR_OWN_CORPUS


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("method", "template"), ROUTES)
def test_routes_answer_bad_input_with_a_4xx_and_a_message(world: World, method: str, template: str) -> None:
    from urllib.parse import quote

    for value in [*HOSTILE_STRINGS[:5], "x" * 2000]:
        path = template.replace("{id}", quote(value, safe="") or "%20")
        query = (
            f"?pipeline={quote(value)}&limit={quote(value)}&next={quote(value)}" if method == "GET" else ""
        )
        if template == "/stats":
            query = f"?pipeline={quote(value)}&days={quote(value)}"
        hostile = {"pipeline": value, "key": value, "to": value, "version": 5}
        for body in [
            *BAD_BODIES,
            json.dumps(hostile),
            json.dumps({"comment": value}),
            json.dumps({"comment": 5}),
            json.dumps({"break_glass": value}),
            json.dumps({"break_glass": ""}),
            json.dumps({**hostile, "break_glass": ["x"]}),
        ]:
            headers = {"Content-Type": "application/json", "Idempotency-Key": value[:300] or "k"}
            response = (
                world.client.http.get(path + query, headers=headers)
                if method == "GET"
                else world.client.http.post(path, headers=headers, body=body)
            )
            assert response.status_code < 500, (method, path, body[:80], response.body[:200])
            if response.status_code >= 400:
                assert json.loads(response.body).get("Message"), response.body[:200]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_release_awaiting_approval_is_unmoved_by_bad_decisions(world: World, decision: str) -> None:
    """Bad bodies, hostile comments and a caller the pipeline does not name: a 4xx with a message,
    and the release still awaits approval with its history as it was."""
    [release] = world.deliver_upload(world.upload("gated/prod/app-1.zip").eventbridge)["releases"]
    release_id = release["id"]
    assert world.release(release_id).state is ReleaseState.AWAITING_APPROVAL
    history = world.history(release_id)
    bodies = [
        *BAD_BODIES,
        *(json.dumps({"comment": value}) for value in [*HOSTILE_STRINGS, *WRONG_TYPES]),
        json.dumps({"comment": "fine", "break_glass": "not a field here"}),
        "{}",
    ]
    for number, body in enumerate(bodies):
        response = world.client.http.post(
            f"/releases/{release_id}/{decision}",
            headers={"Content-Type": "application/json", "Idempotency-Key": f"k-{number}"},
            body=body,
        )
        assert 400 <= response.status_code < 500, (body[:80], response.body[:200])
        assert json.loads(response.body).get("Message"), response.body[:200]
    assert world.release(release_id).state is ReleaseState.AWAITING_APPROVAL
    assert world.history(release_id) == history
    assert world.deployments("gated", "gated-prod") == []


@pytest.mark.timeout(300)
def test_break_glass_reasons_are_recorded_or_refused_never_a_500(world: World) -> None:
    """A real object of a pipeline deployed with hostile break-glass reasons: taken (201, the
    reason recorded as sent, stripped) or refused with a 4xx and a message."""
    world.upload("web/prod/app-1.zip")
    for number, reason in enumerate([*HOSTILE_STRINGS, *WRONG_TYPES, " ", "\t\n"]):
        body = {"pipeline": "web-prod", "key": "web/prod/app-1.zip", "break_glass": reason}
        response = world.client.http.post(
            "/releases",
            headers={"Content-Type": "application/json", "Idempotency-Key": f"bg-{number}"},
            body=json.dumps(body),
        )
        assert response.status_code < 500, (repr(reason)[:80], response.body[:200])
        answer = json.loads(response.body)
        if response.status_code == 201:
            assert isinstance(reason, str)
            assert world.release(answer["id"]).metadata["break_glass"] == reason.strip()
        else:
            assert 400 <= response.status_code < 500, response.body[:200]
            assert answer.get("Message"), response.body[:200]

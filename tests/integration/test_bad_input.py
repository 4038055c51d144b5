"""A corpus of bad input for every handler and route: truncated JSON, wrong types, missing
fields, huge payloads, unknown enum values, hostile keys. Handlers log and skip (a malformed
message is never retried forever); routes answer 4xx with a message, never 500."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import World

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
    ("POST", "/pipelines/{id}/rollback"),
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

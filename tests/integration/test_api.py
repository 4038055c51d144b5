"""The HTTP API through ``chalice.test.Client`` on moto: every route, every error code.

The test client lets every request through its IAM authorizer (../shared/reference/aws-facts.md),
so authorization is checked on the route table and the generated API definition, and the actor
on a request shaped as API Gateway sends it after IAM authentication.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from boto3.dynamodb.types import TypeDeserializer
from chalice.app import IAMAuthorizer
from chalice.deploy.swagger import SwaggerGenerator
from chalice.local import LocalGateway, RouteMatcher

from app import app
from chalicelib import bootstrap
from chalicelib.domain.api_requests import MAX_BODY_BYTES, encode_cursor
from chalicelib.domain.release import EventType, ReleaseState, Trigger
from infra import stack
from sandbox import moto_extensions
from tests.integration.conftest import BUCKET, INSTANCES, LOAD_BALANCED, PIPELINES_TOML, TABLE, World
from tests.integration.test_error_model import AwsFaults, aws_faults
from tests.unit.test_api_openapi import check_answer

__all__ = ["aws_faults"]  # a fixture of this module's tests

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")

ROUTES = RouteMatcher(list(app.routes))
USER_ARN = "arn:aws:sts::123456789012:assumed-role/ci-deployer/build-42"


class Reply:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.json: Any = json.loads(body) if body else None
        self.headers = {name.lower(): value for name, value in headers.items()}

    @property
    def message(self) -> str:
        return str(self.json["Message"])


def call(
    world: World, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> Reply:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    response = world.client.http.request(
        method, path, headers={"content-type": "application/json", **(headers or {})}, body=raw
    )
    reply = Reply(response.status_code, response.body, dict(response.headers))
    # Chalice itself answers an unsupported method (405) or media type (415).
    if reply.status not in (405, 415):
        template = ROUTES.match_route(path).route
        check_answer(template, method, reply.status, reply.json)
    return reply


def uploaded_release(world: World, key: str) -> str:
    upload = world.upload(key)
    return str(world.deliver_upload(upload.eventbridge)["releases"][0]["id"])


def finish(world: World, release_id: str, status: str = "Succeeded", state: str = "SUCCESS") -> None:
    release = world.release(release_id)
    assert release.deployment_id is not None
    moto_extensions.complete(release.deployment_id, status)
    world.codedeploy_event(release.deployment_id, state, release.application, release.deployment_group)


# --- auth -------------------------------------------------------------------------------------


def test_every_route_requires_iam_auth() -> None:
    """All but Slack's, signed with the Slack app's secret (tests/integration/test_slack_actions.py)."""
    routes = [
        (path, method, entry) for path, methods in app.routes.items() for method, entry in methods.items()
    ]
    assert len(routes) == 14
    unsigned = [(path, method) for path, method, entry in routes if entry.authorizer is None]
    assert unsigned == [("/slack/interactions", "POST")]
    assert all(
        isinstance(entry.authorizer, IAMAuthorizer)
        for path, _, entry in routes
        if path != "/slack/interactions"
    )
    swagger = SwaggerGenerator(
        "us-east-1", {"api_handler_arn": "arn:aws:lambda:us-east-1:123456789012:function:api_handler"}
    ).generate_swagger(app)
    for path, methods in swagger["paths"].items():
        for method, operation in methods.items():
            if method != "options" and path != "/slack/interactions":
                assert operation["security"] == [{"sigv4": []}], (path, method)


def test_the_verified_principal_is_the_actor(world: World) -> None:
    """A request as API Gateway hands it to Lambda after IAM authentication."""
    world.upload("api/prod/app-1.zip")
    event = {
        "resource": "/releases",
        "path": "/releases",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/releases",
            "httpMethod": "POST",
            "path": "/api/releases",
            "stage": "api",
            "identity": {
                "accountId": "123456789012",
                "caller": "AROAEXAMPLE:build-42",
                "user": "AROAEXAMPLE:build-42",
                "userArn": USER_ARN,
                "accessKey": "ASIAEXAMPLE",
                "sourceIp": "203.0.113.9",
            },
        },
        "body": json.dumps({"pipeline": "api-prod", "key": "api/prod/app-1.zip"}),
        "isBase64Encoded": False,
    }
    response = app(event, None)
    assert response["statusCode"] == 201, response
    release = json.loads(response["body"])
    check_answer("/releases", "POST", 201, release)
    assert release["actor"] == USER_ARN
    started = world.history(release["id"])[0]
    assert started.detail["actor"] == USER_ARN


# --- pipelines --------------------------------------------------------------------------------


def test_pipelines_list_their_slot(world: World) -> None:
    active = uploaded_release(world, "api/prod/app-1.zip")
    waiting = uploaded_release(world, "api/prod/app-2.zip")

    reply = call(world, "GET", "/pipelines")

    assert reply.status == 200
    by_name = {pipeline["name"]: pipeline for pipeline in reply.json["pipelines"]}
    assert set(by_name) == {"api-prod", "web-prod", "shop-prod"}
    api_prod = by_name["api-prod"]
    assert {k: api_prod[k] for k in ("bucket", "prefix", "application", "deployment_group", "on_busy")} == {
        "bucket": BUCKET,
        "prefix": "api/prod/",
        "application": "api",
        "deployment_group": "api-prod",
        "on_busy": "queue",
    }
    assert (api_prod["active"], api_prod["waiting"], api_prod["last_good"]) == (active, [waiting], None)
    assert by_name["web-prod"]["on_busy"] == "supersede"


def test_one_pipeline_with_its_releases(world: World) -> None:
    first = uploaded_release(world, "api/prod/app-1.zip")
    finish(world, first)
    second = uploaded_release(world, "api/prod/app-2.zip")

    reply = call(world, "GET", "/pipelines/api-prod")

    assert reply.status == 200
    assert (reply.json["active"], reply.json["waiting"], reply.json["last_good"]) == (second, [], first)
    assert reply.json["active_release"]["state"] == "DEPLOYING"
    assert reply.json["last_good_release"]["id"] == first
    assert reply.json["waiting_releases"] == []


def test_a_pipeline_shows_its_current_and_next_freeze(world: World, pipelines_file: Path) -> None:
    # Windows far from any date the test runs on: a global one (Berlin time) in force now until
    # 2100, and one of api-prod's own (UTC) later that year.
    global_windows = (
        '[[freeze]]\nreason = "century"\ntimezone = "Europe/Berlin"\n'
        "start = 2000-01-01T00:00:00\nend = 2100-01-01T00:00:00\n"
    )
    api_prod_window = (
        '[[pipeline.freeze]]\nreason = "audit"\nstart = 2100-03-01T09:00:00\n'
        'rrule = "FREQ=YEARLY"\nduration = "8h"\n'
    )
    api_prod_table, others = PIPELINES_TOML.split('[[pipeline]]\nname = "web-prod"')
    pipelines_file.write_text(
        global_windows + api_prod_table + api_prod_window + '[[pipeline]]\nname = "web-prod"' + others,
        encoding="utf-8",
    )
    bootstrap.reset()

    api_prod = call(world, "GET", "/pipelines/api-prod")
    web_prod = call(world, "GET", "/pipelines/web-prod")

    assert api_prod.json["freeze"] == {
        "current": {
            "reason": "century",
            "starts_at": "1999-12-31T23:00:00+00:00",
            "ends_at": "2099-12-31T23:00:00+00:00",
        },
        "next": {
            "reason": "audit",
            "starts_at": "2100-03-01T09:00:00+00:00",
            "ends_at": "2100-03-01T17:00:00+00:00",
        },
    }
    assert web_prod.json["freeze"]["current"] == api_prod.json["freeze"]["current"]
    assert web_prod.json["freeze"]["next"] is None
    listed = {p["name"]: p["freeze"] for p in call(world, "GET", "/pipelines").json["pipelines"]}
    assert listed["api-prod"] == api_prod.json["freeze"]
    assert listed["web-prod"] == web_prod.json["freeze"]


def test_a_pipeline_without_freeze_windows_shows_none(world: World) -> None:
    reply = call(world, "GET", "/pipelines/api-prod")
    assert reply.json["freeze"] == {"current": None, "next": None}


def test_unknown_pipeline_is_404(world: World) -> None:
    reply = call(world, "GET", "/pipelines/nope")
    assert reply.status == 404
    assert "no pipeline 'nope'" in reply.message
    assert "api-prod" in reply.message
    assert call(world, "GET", "/pipelines?x=1").status == 400


# --- reading releases -------------------------------------------------------------------------


def test_releases_newest_first_in_pages(world: World) -> None:
    ids = [uploaded_release(world, f"api/prod/app-{n}.zip") for n in range(1, 4)]
    web = uploaded_release(world, "web/prod/site-1.zip")

    everything = call(world, "GET", "/releases")
    assert everything.status == 200
    assert [r["id"] for r in everything.json["releases"]] == [web, *reversed(ids)]
    assert everything.json["next"] is None

    first = call(world, "GET", "/releases?pipeline=api-prod&limit=2")
    assert [r["id"] for r in first.json["releases"]] == [ids[2], ids[1]]
    assert first.json["releases"][0]["revision"]["key"] == "api/prod/app-3.zip"
    assert first.json["next"]
    rest = call(world, "GET", f"/releases?pipeline=api-prod&limit=2&next={first.json['next']}")
    assert [r["id"] for r in rest.json["releases"]] == [ids[0]]
    assert rest.json["next"] is None

    merged = call(world, "GET", "/releases?limit=3")
    assert [r["id"] for r in merged.json["releases"]] == [web, ids[2], ids[1]]
    after = call(world, "GET", f"/releases?limit=3&next={merged.json['next']}")
    assert [r["id"] for r in after.json["releases"]] == [ids[0]]


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("limit=abc", 400, "whole number"),
        ("limit=-1", 400, "whole number"),
        ("limit=0", 422, "between 1 and 100"),
        ("limit=101", 422, "between 1 and 100"),
        ("next=not-a-token", 400, "'next'"),
        (f"next={encode_cursor('x')[:-2]}", 400, "'next'"),
        ("pipeline=nope", 422, "not configured"),
        ("pipeline=", 422, "empty"),
        ("sort=asc", 400, "unknown query parameter"),
        ("limit=1&limit=2", 400, "once"),
    ],
)
def test_bad_release_queries(world: World, query: str, status: int, says: str) -> None:
    reply = call(world, "GET", f"/releases?{query}")
    assert reply.status == status, reply.json
    assert says in reply.message


def test_a_release_with_its_history_and_progress(world: World) -> None:
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.set_deployment_overview(deployment_id, {"Succeeded": 1, "InProgress": 1})

    reply = call(world, "GET", f"/releases/{release_id}")

    assert reply.status == 200
    body = reply.json
    assert body["state"] == "DEPLOYING"
    assert body["trigger"] == "upload"
    assert [event["type"] for event in body["history"]][:2] == ["ExecutionStarted", "StateEntered"]
    assert body["history"][0]["id"] == 1
    assert body["progress"]["instances_total"] == 2
    assert body["progress"]["instances_done"] == 1


@pytest.mark.parametrize("release_id", ["rel-0000", "no%20such", "a" * 300, "%F0%9F%98%80"])
def test_unknown_release_is_404(world: World, release_id: str) -> None:
    reply = call(world, "GET", f"/releases/{release_id}")
    assert reply.status == 404
    assert "no release" in reply.message


# --- deploying --------------------------------------------------------------------------------


def test_deploy_an_object_of_a_pipeline(world: World) -> None:
    upload = world.upload("api/prod/app-7.zip", metadata={"commit": "abc123", "version-label": "7"})

    reply = call(world, "POST", "/releases", {"pipeline": "api-prod", "key": "api/prod/app-7.zip"})

    assert reply.status == 201, reply.json
    release = reply.json
    assert reply.headers["location"] == f"/releases/{release['id']}"
    assert release["state"] == "DEPLOYING"
    assert release["deployment_id"] == world.deployments()[0]["deploymentId"]
    assert release["trigger"] == "api"
    assert release["actor"] == "unverified@127.0.0.1"
    assert release["revision"] == {
        "bucket": BUCKET,
        "key": "api/prod/app-7.zip",
        "version": upload.version_id,
        "etag": upload.etag,
    }
    assert release["metadata"]["commit"] == "abc123"
    assert [d["revision"]["s3Location"]["version"] for d in world.deployments()] == [upload.version_id]


def test_deploy_an_older_version(world: World) -> None:
    older = world.upload("api/prod/app.zip")
    world.upload("api/prod/app.zip")

    reply = call(
        world,
        "POST",
        "/releases",
        {"pipeline": "api-prod", "key": "api/prod/app.zip", "version": older.version_id},
    )

    assert reply.status == 201
    assert reply.json["revision"]["version"] == older.version_id


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"pipeline": "api-prod", "pipeline": "web-prod", "key": "k.zip"}', 400, "appears twice"),
        (b'{"pipeline": NaN}', 400, "not valid JSON"),
        (b"\xff\xfe", 400, "UTF-8"),
        (b"", 422, "'pipeline' is required"),
        ({"pipeline": "api-prod"}, 422, "'key' is required"),
        ({"pipeline": "api-prod", "key": "api/prod/a.zip", "force": True}, 422, "unknown field(s) 'force'"),
        ({"pipeline": 7, "key": "api/prod/a.zip"}, 422, "must be a non-empty string"),
        ({"pipeline": "nope", "key": "api/prod/a.zip"}, 422, "not configured"),
        ({"pipeline": "api-prod", "key": "web/prod/a.zip"}, 422, "not under s3://acme-artifacts/api/prod/"),
        ({"pipeline": "api-prod", "key": "api/prod/a.zip", "bucket": "other"}, 422, "deploys from bucket"),
        ({"pipeline": "api-prod", "key": "api/prod/a.txt"}, 422, "not a CodeDeploy bundle"),
        ({"pipeline": "api-prod", "key": "api/prod/missing.zip"}, 422, "does not exist"),
        (
            {"pipeline": "api-prod", "key": "api/prod/a.zip", "version": "bad version"},
            422,
            "not an S3 version id",
        ),
        ({"pipeline": "api-prod", "key": "api/prod/\ud800.zip"}, 422, "not valid Unicode"),
        ({"pipeline": "api-prod", "key": "api/prod/\n.zip"}, 422, "control characters"),
        ({"pipeline": "api-prod", "key": "api/prod/" + "k" * 1100 + ".zip"}, 422, "at most 1024"),
    ],
)
def test_bad_deploy_requests(world: World, body: Any, status: int, says: str) -> None:
    reply = call(world, "POST", "/releases", body)
    assert reply.status == status, reply.json
    assert says in reply.message
    assert world.deployments() == []


def test_oversized_body_is_413(world: World) -> None:
    body = json.dumps({"pipeline": "api-prod", "key": "api/prod/a.zip", "pad": "x" * MAX_BODY_BYTES}).encode()
    reply = call(world, "POST", "/releases", body)
    assert reply.status == 413
    assert f"at most {MAX_BODY_BYTES}" in reply.message


def test_other_media_types_and_methods_are_refused(world: World) -> None:
    refused = world.client.http.request(
        "POST", "/releases", headers={"content-type": "text/plain"}, body=b"x"
    )
    assert refused.status_code == 415
    assert call(world, "DELETE", "/releases").status == 405


# --- idempotency ------------------------------------------------------------------------------


def test_same_idempotency_key_and_body_get_the_same_answer_and_one_deployment(world: World) -> None:
    world.upload("api/prod/app-1.zip")
    body = {"pipeline": "api-prod", "key": "api/prod/app-1.zip"}
    key = {"Idempotency-Key": "ci-build-42"}

    first = call(world, "POST", "/releases", body, key)
    # Same request, spelled differently: field order and whitespace do not matter.
    again = call(world, "POST", "/releases", b'{"key": "api/prod/app-1.zip",  "pipeline": "api-prod"}', key)

    assert first.status == again.status == 201
    assert again.json == first.json
    assert again.headers["idempotent-replayed"] == "true"
    assert len(world.deployments()) == 1
    assert len(call(world, "GET", "/releases?pipeline=api-prod").json["releases"]) == 1


def test_same_idempotency_key_with_another_request_is_422(world: World) -> None:
    world.upload("api/prod/app-1.zip")
    world.upload("api/prod/app-2.zip")
    key = {"Idempotency-Key": "ci-build-43"}
    assert (
        call(world, "POST", "/releases", {"pipeline": "api-prod", "key": "api/prod/app-1.zip"}, key).status
        == 201
    )

    reply = call(world, "POST", "/releases", {"pipeline": "api-prod", "key": "api/prod/app-2.zip"}, key)

    assert reply.status == 422
    assert "already used for a different request" in reply.message
    assert len(world.deployments()) == 1


def test_a_refused_request_does_not_use_up_its_key(world: World) -> None:
    key = {"Idempotency-Key": "ci-build-44"}
    body = {"pipeline": "api-prod", "key": "api/prod/late.zip"}
    assert call(world, "POST", "/releases", body, key).status == 422
    world.upload("api/prod/late.zip")
    assert call(world, "POST", "/releases", body, key).status == 201


class LambdaDied(BaseException):
    """The API's Lambda is killed mid-request (a timeout): no ``except Exception`` cleanup runs."""


def during_head_object(hook: Callable[[], None]) -> Callable[[], None]:
    """Run ``hook`` when the app's next request reads its bundle from S3 (once); returns the
    uninstaller."""
    events = bootstrap.wiring().artifacts._client.meta.events  # type: ignore[attr-defined]
    done: list[bool] = []

    def before_call(**_: Any) -> None:
        if not done:
            done.append(True)
            hook()

    events.register("before-call.s3.HeadObject", before_call)
    return lambda: events.unregister("before-call.s3.HeadObject", before_call)


def idempotency_records(world: World) -> list[dict[str, Any]]:
    items = world.session.client("dynamodb").query(
        TableName=TABLE,
        KeyConditionExpression="pk = :partition",
        ExpressionAttributeValues={":partition": {"S": "IDEMPOTENCY"}},
    )["Items"]
    return [{name: TypeDeserializer().deserialize(value) for name, value in item.items()} for item in items]


def test_a_key_still_being_answered_is_409(world: World) -> None:
    world.upload("api/prod/app-1.zip")
    body = {"pipeline": "api-prod", "key": "api/prod/app-1.zip"}
    key = {"Idempotency-Key": "busy"}
    meanwhile: list[Reply] = []
    # The same request again while the first is between its claim and its answer.
    uninstall = during_head_object(lambda: meanwhile.append(call(world, "POST", "/releases", body, key)))
    try:
        first = call(world, "POST", "/releases", body, key)
    finally:
        uninstall()

    assert first.status == 201
    [busy] = meanwhile
    assert busy.status == 409
    assert "still being answered" in busy.message
    assert call(world, "POST", "/releases", body, key).json == first.json
    assert len(world.deployments()) == 1


def test_a_key_whose_record_keeps_changing_hands_is_409_not_500(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Powertools gives up with IdempotencyInconsistentStateError when the key's record exists at
    its conditional write and is gone at its read, three times over (other requests claiming and
    finishing it): the caller is told to retry, like for a busy key, never a 500."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyItemAlreadyExistsError,
        IdempotencyItemNotFoundError,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.dynamodb import DynamoDBPersistenceLayer

    def taken(*_: Any, **__: Any) -> None:
        raise IdempotencyItemAlreadyExistsError

    def gone(*_: Any, **__: Any) -> None:
        raise IdempotencyItemNotFoundError

    monkeypatch.setattr(DynamoDBPersistenceLayer, "_put_record", taken)
    monkeypatch.setattr(DynamoDBPersistenceLayer, "_get_record", gone)
    world.upload("api/prod/app-1.zip")
    body = {"pipeline": "api-prod", "key": "api/prod/app-1.zip"}

    reply = call(world, "POST", "/releases", body, {"Idempotency-Key": "changing-hands"})

    assert reply.status == 409, reply.json
    assert "still being answered" in reply.message
    assert world.deployments() == []


def test_a_retry_takes_over_the_key_of_a_request_that_died(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cannot outlive its function's time: a claim without an answer older than that
    belongs to a request that died, and a retry with the same key takes it over."""
    # The test client gives a route the function's timeout as its Lambda context's remaining time;
    # here 1 s, so the claim of a request that died lapses 2 s later (with the 1 s of clock skew).
    monkeypatch.setattr(LocalGateway, "MAX_LAMBDA_EXECUTION_TIME", 1)
    world.upload("api/prod/app-1.zip")
    body = {"pipeline": "api-prod", "key": "api/prod/app-1.zip"}
    key = {"Idempotency-Key": "dies"}

    def die() -> None:
        raise LambdaDied("killed after claiming the key")

    uninstall = during_head_object(die)
    died_at = time.monotonic()
    try:
        with pytest.raises(LambdaDied):
            call(world, "POST", "/releases", body, key)
    finally:
        uninstall()
    bootstrap.reset()  # the next request runs in a new container

    alive = call(world, "POST", "/releases", body, key)
    assert alive.status == 409, alive.json
    time.sleep(max(0.0, died_at + 2.1 - time.monotonic()))
    taken_over = call(world, "POST", "/releases", body, key)

    assert taken_over.status == 201, taken_over.json
    # The takeover made the release the dead request had not got to.
    assert len(call(world, "GET", "/releases?pipeline=api-prod").json["releases"]) == 1
    assert len(world.deployments()) == 1


def test_a_claim_lapses_with_api_gateways_timeout_and_an_answer_after_a_day(world: World) -> None:
    """The test client's context claims Lambda's 900 s; API Gateway answers 504 after 29 s, so a
    claim is held no longer than that (and 1 s of clock skew). The answer is kept 24 hours, in
    the table's TTL attribute."""
    world.upload("api/prod/app-1.zip")
    body = {"pipeline": "api-prod", "key": "api/prod/app-1.zip"}
    claims: list[dict[str, Any]] = []
    uninstall = during_head_object(lambda: claims.extend(idempotency_records(world)))
    try:
        claimed_at = time.time()
        assert call(world, "POST", "/releases", body, {"Idempotency-Key": "k"}).status == 201
    finally:
        uninstall()

    [claim] = claims
    assert claim["status"] == "INPROGRESS"
    assert 28.0 < float(claim["in_progress_expiration"]) / 1000 - claimed_at <= 30.5
    [answered] = idempotency_records(world)
    assert answered["status"] == "COMPLETED"
    assert abs(float(answered[stack.TTL_ATTRIBUTE]) - claimed_at - 24 * 3600) < 60


def test_bad_idempotency_key_is_400(world: World) -> None:
    reply = call(world, "POST", "/releases", {}, {"Idempotency-Key": "has space"})
    assert reply.status == 400
    assert "Idempotency-Key" in reply.message


# --- redeploy ---------------------------------------------------------------------------------


def test_redeploy_a_finished_release(world: World) -> None:
    original = uploaded_release(world, "api/prod/app-1.zip")
    finish(world, original)

    reply = call(world, "POST", f"/releases/{original}/redeploy")

    assert reply.status == 201, reply.json
    again = reply.json
    assert again["id"] != original
    assert again["trigger"] == "api"
    assert again["state"] == "DEPLOYING"
    assert again["revision"] == world.release(original).revision.to_dict()
    assert again["metadata"]["redeploy_of"] == original
    assert len(world.deployments()) == 2


def test_redeploy_refusals(world: World) -> None:
    running = uploaded_release(world, "api/prod/app-1.zip")
    busy = call(world, "POST", f"/releases/{running}/redeploy")
    assert busy.status == 409
    assert "still DEPLOYING" in busy.message
    assert call(world, "POST", "/releases/rel-none/redeploy").status == 404
    assert call(world, "POST", f"/releases/{running}/redeploy", {"why": "x"}).status == 422
    assert call(world, "POST", f"/releases/{running}/redeploy", b"nope").status == 400

    finish(world, running)
    world.session.client("s3").delete_object(
        Bucket=BUCKET, Key="api/prod/app-1.zip", VersionId=world.release(running).revision.version
    )
    gone = call(world, "POST", f"/releases/{running}/redeploy")
    assert gone.status == 409
    assert "no longer in S3" in gone.message


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_a_waiting_release(world: World) -> None:
    uploaded_release(world, "api/prod/app-1.zip")
    waiting = uploaded_release(world, "api/prod/app-2.zip")

    reply = call(world, "POST", f"/releases/{waiting}/cancel")

    assert reply.status == 200
    assert reply.json["state"] == "STOPPED"
    assert reply.json["reason"] == "cancelled by unverified@127.0.0.1"
    assert world.store.get_slot("api-prod").waiting == ()
    assert world.history(waiting)[-1].type is EventType.EXECUTION_ABORTED
    again = call(world, "POST", f"/releases/{waiting}/cancel")
    assert again.status == 409
    assert "already ended STOPPED" in again.message


def test_cancel_a_deploying_release_stops_the_deployment(world: World) -> None:
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None

    reply = call(world, "POST", f"/releases/{release_id}/cancel")

    assert reply.status == 202
    assert reply.json["state"] == "DEPLOYING"
    # StopDeployment reached CodeDeploy (moto_extensions records it; moto itself answers 500).
    assert moto_extensions.stop_requested(deployment_id)
    asked = world.history(release_id)[-1]
    assert asked.type is EventType.TASK_SCHEDULED
    assert asked.detail == {
        "task": "StopDeployment",
        "deployment_id": deployment_id,
        "auto_rollback": True,
        "actor": "unverified@127.0.0.1",
    }
    finish(world, release_id, "Stopped", "STOP")
    assert world.release(release_id).state is ReleaseState.STOPPED


@pytest.mark.parametrize(
    ("code", "http_status", "answer"),
    [("AccessDeniedException", 400, 502), ("ThrottlingException", 400, 503), ("InternalFailure", 500, 503)],
)
def test_a_refused_stop_answers_its_aws_code_and_is_recorded(
    world: World, aws_faults: AwsFaults, code: str, http_status: int, answer: int
) -> None:
    """StopDeployment has no resource type in the Service Authorization Reference: a policy that
    scopes it to the deployment group is refused with AccessDeniedException."""
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    aws_faults.inject("codedeploy", "StopDeployment", code, http_status)

    reply = call(world, "POST", f"/releases/{release_id}/cancel")

    assert reply.status == answer, reply.json
    assert reply.json["aws_error"] == code
    assert "StopDeployment" in reply.message
    assert ("retry-after" in reply.headers) == (answer == 503)
    refused = world.history(release_id)[-1]
    assert refused.type is EventType.TASK_FAILED
    assert {k: refused.detail[k] for k in ("task", "deployment_id", "actor", "aws_error")} == {
        "task": "StopDeployment",
        "deployment_id": deployment_id,
        "actor": "unverified@127.0.0.1",
        "aws_error": code,
    }
    assert world.release(release_id).state is ReleaseState.DEPLOYING
    assert not moto_extensions.stop_requested(str(deployment_id))


def test_an_aws_error_in_any_route_is_json_naming_its_code(world: World, aws_faults: AwsFaults) -> None:
    uploaded_release(world, "api/prod/app-1.zip")
    aws_faults.inject("dynamodb", "GetItem", "AccessDeniedException")
    aws_faults.inject("dynamodb", "Query", "ProvisionedThroughputExceededException")
    for path in ["/pipelines", "/pipelines/api-prod", "/releases", "/releases/rel-x"]:
        reply = call(world, "GET", path)
        assert reply.status in (502, 503), (path, reply.json)
        assert reply.json["aws_error"] in ("AccessDeniedException", "ProvisionedThroughputExceededException")


def test_the_throttling_codes_are_botocores() -> None:
    from botocore.retries.standard import ThrottledRetryableChecker

    from chalicelib.http_api import THROTTLING_CODES

    assert frozenset(ThrottledRetryableChecker._THROTTLED_ERROR_CODES) == THROTTLING_CODES


def test_cancel_after_the_deployment_ended_is_409(world: World) -> None:
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Succeeded")  # its event has not arrived yet

    reply = call(world, "POST", f"/releases/{release_id}/cancel")

    assert reply.status == 409
    assert "already ended" in reply.message


def test_cancel_a_verifying_release(world: World) -> None:
    upload = world.upload("shop/prod/shop-1.zip")
    release_id = str(world.deliver_upload(upload.eventbridge)["releases"][0]["id"])
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    instances = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids
    assert len(instances) == INSTANCES
    moto_extensions.set_instance_targets(deployment_id, {i: {"status": "Succeeded"} for i in instances})
    finish(world, release_id)
    assert world.release(release_id).state is ReleaseState.VERIFYING
    assert call(world, "GET", f"/releases/{release_id}").json["progress"]["phase"] == "verifying"

    reply = call(world, "POST", f"/releases/{release_id}/cancel")

    assert reply.status == 200
    assert reply.json["state"] == "STOPPED"
    assert world.store.get_slot("shop-prod").active is None


def test_cancel_refusals(world: World) -> None:
    assert call(world, "POST", "/releases/rel-none/cancel").status == 404
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    assert call(world, "POST", f"/releases/{release_id}/cancel", {"force": True}).status == 422
    assert call(world, "POST", f"/releases/{release_id}/cancel?now=1").status == 400


# --- rollback ---------------------------------------------------------------------------------


def test_roll_back_to_the_last_good_release_goes_first(world: World) -> None:
    good = uploaded_release(world, "api/prod/app-1.zip")
    finish(world, good)
    bad = uploaded_release(world, "api/prod/app-2.zip")
    waiting = uploaded_release(world, "api/prod/app-3.zip")

    reply = call(world, "POST", "/pipelines/api-prod/rollback")

    assert reply.status == 201, reply.json
    rollback = reply.json
    assert rollback["trigger"] == Trigger.ROLLBACK.value
    assert rollback["rollback_of"] == bad
    assert rollback["revision"] == world.release(good).revision.to_dict()
    assert rollback["state"] == "QUEUED"
    assert world.store.get_slot("api-prod").waiting == (rollback["id"], waiting)


def test_roll_back_to_a_named_release(world: World) -> None:
    first = uploaded_release(world, "api/prod/app-1.zip")
    finish(world, first)
    second = uploaded_release(world, "api/prod/app-2.zip")
    finish(world, second)

    latest = call(world, "POST", "/pipelines/api-prod/rollback")
    assert latest.status == 409
    assert "already the current release" in latest.message

    reply = call(world, "POST", "/pipelines/api-prod/rollback", {"to": first})

    assert reply.status == 201
    assert reply.json["state"] == "DEPLOYING"
    assert reply.json["rollback_of"] == second
    assert reply.json["revision"]["key"] == "api/prod/app-1.zip"


def test_rollback_refusals(world: World) -> None:
    assert call(world, "POST", "/pipelines/nope/rollback").status == 404
    nothing = call(world, "POST", "/pipelines/api-prod/rollback")
    assert nothing.status == 409
    assert "nothing to roll back to" in nothing.message

    failed = uploaded_release(world, "api/prod/app-1.zip")
    finish(world, failed, "Failed", "FAILURE")
    web = uploaded_release(world, "web/prod/site-1.zip")
    for body, says in [
        ({"to": failed}, "only a SUCCEEDED release"),
        ({"to": "rel-none"}, "has no release"),
        ({"to": web}, "has no release"),
        ({"to": "no spaces"}, "not a release id"),
        ({"to": 3}, "non-empty string"),
        ({"back": "x"}, "unknown field"),
    ]:
        reply = call(world, "POST", "/pipelines/api-prod/rollback", body)
        assert reply.status == 422, body
        assert says in reply.message
    assert call(world, "POST", "/pipelines/api-prod/rollback", b"{").status == 400


# --- logs -------------------------------------------------------------------------------------


def test_every_handler_and_route_logs_with_its_lambda_context(world: World) -> None:
    """Powertools' Lambda context keys on each line: which invocation wrote it, and whether it
    was the container's first."""
    import io

    from chalicelib.log import logger

    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    captured = io.StringIO()
    previous = handler.setStream(captured)
    try:
        uploaded_release(world, "api/prod/app-1.zip")  # a plain Lambda function
        world.codedeploy_event("no-such-deployment", "SUCCESS")  # an EventBridge rule
        world.reconcile()  # a schedule
        world.upload("api/prod/app-2.zip")
        call(world, "POST", "/releases", {"pipeline": "api-prod", "key": "api/prod/app-2.zip"})  # a route
    finally:
        handler.setStream(previous)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    by_function: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_function.setdefault(line.get("function_name", "?"), []).append(line)
    assert {"on_artifact_event", "on_codedeploy_event", "reconcile", "api_handler"} <= set(by_function), lines
    for function, written in by_function.items():
        for line in written:
            assert line["function_request_id"], (function, line)
            assert isinstance(line["cold_start"], bool), (function, line)
    request_ids = {line["function_request_id"] for line in lines}
    assert len(request_ids) == len(by_function)  # one invocation each, none mixed up


# --- the document's limits are the API's ------------------------------------------------------

# How the API words a refusal of a value's shape (as opposed to "nothing by that name").
SHAPE_REFUSALS = (
    "must be a non-empty string",
    "bytes long; at most",
    "control characters",
    "not an S3 version id",
    "not a release id",
    "whole number",
    "between 1 and",
    "not a token this API gave out",
    "is empty",
)
# Where a field's value sits in a request: what comes before and after the padding that takes
# it to a length limit (so a key stays under the pipeline's prefix and a bundle).
FRAMES = {
    "pipeline": ("api-prod", ""),
    "key": ("api/prod/", ".zip"),
    "bucket": (BUCKET, ""),
    "version": ("v", ""),
    "to": ("rel-", ""),
    "break_glass": ("", ""),
}


def schema_of(*path: str) -> Any:
    """The document's node at ``path``, with its references resolved."""
    from tests.unit.test_api_openapi import document, inline

    node: Any = document()
    for part in path:
        node = node[part]
    return inline(node)


def at_limits(name: str, schema: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Values just inside and just outside the schema's limits, each checked against the schema
    itself, so the test follows the document rather than the code."""
    from openapi_schema_validator import OAS30Validator

    head, tail = FRAMES[name]
    longest = int(schema["maxLength"])

    def sized(length: int) -> str:
        return head + "a" * (length - len(head) - len(tail)) + tail

    inside = [sized(longest), sized(max(len(head) + len(tail), int(schema.get("minLength", 0))) + 1)]
    outside = [sized(longest + 1), ""]
    if "pattern" in schema:
        outside.append(head + "\x07" + tail if name in ("pipeline", "key", "bucket") else head + " " + tail)
    validator = OAS30Validator(schema)
    assert all(validator.is_valid(value) for value in inside), (name, inside)
    assert not any(validator.is_valid(value) for value in outside), (name, outside)
    return inside, outside


def refused_for_shape(reply: Reply) -> bool:
    return 400 <= reply.status < 500 and any(phrase in reply.message for phrase in SHAPE_REFUSALS)


@pytest.mark.timeout(300)
def test_deploy_fields_at_the_documents_limits(world: World) -> None:
    properties = schema_of("components", "schemas", "DeployRequest", "properties")
    base = {"pipeline": "api-prod", "key": "api/prod/app-1.zip"}
    world.upload(base["key"])
    for name, schema in properties.items():
        inside, outside = at_limits(name, schema)
        for value in inside:
            if name == "key":
                world.upload(value)  # a real object: the longest key deploys
            reply = call(world, "POST", "/releases", {**base, name: value})
            assert not refused_for_shape(reply), (name, len(value), reply.json)
            if name == "key":
                assert reply.status == 201, (len(value), reply.json)
        for value in outside:
            reply = call(world, "POST", "/releases", {**base, name: value})
            assert refused_for_shape(reply), (name, value[:40], len(value), reply.json)
            assert repr(name) in reply.message


def test_rollback_target_at_the_documents_limits(world: World) -> None:
    schema = schema_of("paths", "/pipelines/{name}/rollback", "post", "requestBody", "content")
    inside, outside = at_limits("to", schema["application/json"]["schema"]["properties"]["to"])
    for value in inside:
        reply = call(world, "POST", "/pipelines/api-prod/rollback", {"to": value})
        assert reply.status == 422, reply.json
        assert "has no release" in reply.message
    for value in outside:
        assert refused_for_shape(call(world, "POST", "/pipelines/api-prod/rollback", {"to": value}))


def test_list_parameters_at_the_documents_limits(world: World) -> None:
    for n in range(1, 4):
        uploaded_release(world, f"api/prod/app-{n}.zip")
    parameters = {
        parameter["name"]: parameter["schema"]
        for parameter in schema_of("paths", "/releases", "get", "parameters")
    }
    limit = parameters["limit"]
    for inside in (limit["minimum"], limit["maximum"]):
        assert call(world, "GET", f"/releases?limit={inside}").status == 200
    for outside in (limit["minimum"] - 1, limit["maximum"] + 1):
        assert refused_for_shape(call(world, "GET", f"/releases?limit={outside}"))
    assert parameters["pipeline"]["minLength"] == 1
    assert refused_for_shape(call(world, "GET", "/releases?pipeline="))
    token = call(world, "GET", "/releases?limit=1").json["next"]
    assert len(token) <= parameters["next"]["maxLength"]
    assert call(world, "GET", f"/releases?limit=1&next={token}").status == 200
    longest = int(parameters["next"]["maxLength"])
    for outside in ("A" * (longest + 1), token[:-1] + "+", ""):
        assert refused_for_shape(call(world, "GET", f"/releases?next={quote(outside)}")), outside

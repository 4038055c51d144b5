"""The HTTP API between API Gateway (through Chalice) and the use cases in
``chalicelib.service.release_queries`` and ``release_commands``: read and check the request, run
the use case, shape the answer: the status, body and headers of each result and refusal are
decided here and nowhere else. ``app.py`` only routes here.

A POST with an ``Idempotency-Key`` is answered once: the same key and request get the first answer
again (``Idempotent-Replayed: true``), another request under the key is refused (422), and one
made while the first is still running is refused (409). The answers are kept by the store's
request ledger (Powertools' idempotency utility, loaded on the first such request).

Errors are JSON in Chalice's own shape, ``{"Code": ..., "Message": ...}``, so an error this module
writes and one Chalice writes (405, 415) read the same. An AWS call that fails in any route is
answered here, once for every route, with the AWS error code in ``aws_error``: 503 with
``Retry-After`` where retrying can succeed (throttling, AWS 5xx, no connection, a write that kept
losing races), 502 where AWS refused the call (AccessDenied, a validation error of ours).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import Request, Response

from chalicelib.domain.api_requests import (
    ConflictingState,
    DeployRequest,
    Forbidden,
    InvalidValue,
    ListQuery,
    Malformed,
    NotFound,
    Refused,
    StatsQuery,
    TooLarge,
    break_glass_reason,
    comment,
    derived_release_id,
    idempotency_key,
    parse_body,
    promotion_source,
    request_fingerprint,
    rollback_target,
)
from chalicelib.domain.permissions import Person
from chalicelib.domain.release import Release
from chalicelib.domain.slack_interactions import BadSignature, SlackActionsUnavailable
from chalicelib.domain.verification import LoadBalancerError
from chalicelib.log import logger
from chalicelib.service.ports import ArtifactAccessDenied, IdempotencyKeyBusy, IdempotencyKeyReused
from chalicelib.service.wiring import ConflictPersisted, Wiring

if TYPE_CHECKING:
    from chalicelib.service import release_commands, release_queries

# API Gateway ends a REST API integration after 29 s (its default integration timeout).
API_GATEWAY_TIMEOUT = timedelta(seconds=29)
# Claims are stamped by the clocks of different Lambda hosts.
CLOCK_SKEW = timedelta(seconds=1)
# Throttling as AWS services spell it (botocore's retry handler: _THROTTLED_ERROR_CODES).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
# What a 503 asks the caller to wait before retrying.
RETRY_AFTER_S = 5
# Each refusal's status and Chalice's name for it.
REFUSALS: dict[type[Refused], tuple[int, str]] = {
    Malformed: (400, "BadRequestError"),
    NotFound: (404, "NotFoundError"),
    Forbidden: (403, "ForbiddenError"),
    ConflictingState: (409, "ConflictError"),
    TooLarge: (413, "PayloadTooLargeError"),
    InvalidValue: (422, "UnprocessableEntityError"),
    BadSignature: (401, "UnauthorizedError"),
}


@dataclass(frozen=True)
class Answer:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    # Set when the answer is the kept one of an earlier request with the same Idempotency-Key.
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "body": dict(self.body), "headers": dict(self.headers)}

    @classmethod
    def from_json(cls, kept: Mapping[str, Any], replayed: bool) -> Answer:
        return cls(int(kept["status"]), kept["body"], kept["headers"], replayed)


@dataclass(frozen=True)
class Post:
    """A POST, checked: its JSON body, who sent it, and the id of a release it may create."""

    body: dict[str, Any]
    actor: str
    new_release_id: str


def log_with_lambda_context(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Chalice middleware for every handler and route: each log line of the invocation carries its
    Lambda context (``function_request_id``, ``cold_start``, ...) and no keys of the previous one.
    A route's event is the request (``lambda_context``); any other handler's has ``context``."""
    lambda_context = event.lambda_context if isinstance(event, Request) else getattr(event, "context", None)
    if lambda_context is None:
        # Called as a plain function (a test or benchmark driving the handler directly).
        return get_response(event)

    def handle(_event: Any, _context: Any) -> Any:
        return get_response(event)

    return logger.inject_lambda_context(handle, clear_state=True)(event, lambda_context)


def current(request: Request | None) -> Request:
    """Chalice's ``current_request``, which it sets before calling any route."""
    if request is None:
        raise RuntimeError("no current request: call the API only from a Chalice route")
    return request


def caller(request: Request) -> str:
    """The IAM principal API Gateway verified (``userArn``: an IAM user, or an assumed role with
    its session name). Only the local server and the test client, which check no signature,
    have none: the caller is then named by address and marked unverified."""
    identity = request.context.get("identity") or {}
    user_arn = identity.get("userArn")
    if isinstance(user_arn, str) and user_arn:
        return user_arn
    return f"unverified@{identity.get('sourceIp') or 'unknown'}"


def list_releases(wiring: Wiring, request: Request) -> Response:
    from chalicelib.service import release_queries

    def run() -> Answer:
        page = release_queries.list_releases(wiring, ListQuery.from_params(_query(request)))
        return Answer(
            200, {"releases": [release.to_dict() for release in page.releases], "next": page.next_token}
        )

    return _respond(run)


def get_stats(wiring: Wiring, request: Request) -> Response:
    """DORA's four keys per pipeline over the last ``days`` days (docs/stats.md)."""
    from chalicelib.service import stats

    def run() -> Answer:
        query = StatsQuery.from_params(_query(request))
        figures = stats.stats(wiring, query)
        return Answer(200, {"days": query.days, "pipelines": [pipeline.to_dict() for pipeline in figures]})

    return _respond(run)


def get_release(wiring: Wiring, request: Request, release_id: str) -> Response:
    from chalicelib.service import release_queries

    def run() -> Answer:
        _no_query(request)
        detail = release_queries.release_detail(wiring, release_id)
        body = {**detail.release.to_dict(), "history": [event.to_dict() for event in detail.history]}
        if detail.progress is not None:
            body["progress"] = dict(detail.progress)
        return Answer(200, body)

    return _respond(run)


def create_release(wiring: Wiring, request: Request) -> Response:
    from chalicelib.service import release_commands

    def run(post: Post) -> Answer:
        request_body = DeployRequest.from_body(post.body)
        return _submitted(release_commands.deploy(wiring, request_body, post.actor, post.new_release_id))

    return _post(wiring, request, DeployRequest.FIELDS, run)


def redeploy(wiring: Wiring, request: Request, release_id: str) -> Response:
    from chalicelib.service import release_commands

    def run(post: Post) -> Answer:
        return _submitted(
            release_commands.redeploy(
                wiring, release_id, post.actor, post.new_release_id, break_glass_reason(post.body)
            )
        )

    return _post(wiring, request, frozenset({"break_glass"}), run)


def approve(wiring: Wiring, request: Request, release_id: str) -> Response:
    from chalicelib.service import approvals

    def run(post: Post) -> Answer:
        person = Person(iam_arn=post.actor)
        return Answer(200, approvals.approve(wiring, release_id, person, comment(post.body)).to_dict())

    return _post(wiring, request, frozenset({"comment"}), run)


def reject(wiring: Wiring, request: Request, release_id: str) -> Response:
    from chalicelib.service import approvals

    def run(post: Post) -> Answer:
        person = Person(iam_arn=post.actor)
        return Answer(200, approvals.reject(wiring, release_id, person, comment(post.body)).to_dict())

    return _post(wiring, request, frozenset({"comment"}), run)


def cancel(wiring: Wiring, request: Request, release_id: str) -> Response:
    from chalicelib.service import release_commands

    def run(post: Post) -> Answer:
        cancelled = release_commands.cancel(wiring, release_id, post.actor)
        # 202: CodeDeploy was asked to stop, and the release ends when it has.
        return Answer(200 if cancelled.stopped else 202, cancelled.release.to_dict())

    return _post(wiring, request, frozenset(), run)


def roll_back(wiring: Wiring, request: Request, name: str) -> Response:
    from chalicelib.service import release_commands

    def run(post: Post) -> Answer:
        target = rollback_target(post.body)
        return _submitted(release_commands.roll_back(wiring, name, target, post.actor, post.new_release_id))

    return _post(wiring, request, frozenset({"to"}), run)


def promote(wiring: Wiring, request: Request, name: str) -> Response:
    from chalicelib.service import release_commands

    def run(post: Post) -> Answer:
        source = promotion_source(post.body)
        return _submitted(release_commands.promote(wiring, name, source, post.actor))

    return _post(wiring, request, frozenset({"release"}), run)


def list_pipelines(wiring: Wiring, request: Request) -> Response:
    from chalicelib.service import release_queries

    def run() -> Answer:
        _no_query(request)
        statuses = release_queries.list_pipelines(wiring)
        return Answer(200, {"pipelines": [_pipeline_status(status) for status in statuses]})

    return _respond(run)


def get_pipeline(wiring: Wiring, request: Request, name: str) -> Response:
    from chalicelib.service import release_queries

    def run() -> Answer:
        _no_query(request)
        detail = release_queries.pipeline_detail(wiring, name)
        slot = detail.status.slot
        body = _pipeline_status(detail.status)
        body["active_release"] = _named(detail.releases, slot.active)
        body["waiting_releases"] = [
            detail.releases[waiting].to_dict() for waiting in slot.waiting if waiting in detail.releases
        ]
        body["awaiting_approval_releases"] = [
            detail.releases[mark.release_id].to_dict()
            for mark in slot.awaiting_approval
            if mark.release_id in detail.releases
        ]
        body["last_good_release"] = _named(detail.releases, slot.last_good)
        return Answer(200, body)

    return _respond(run)


def get_fleet(wiring: Wiring, request: Request, name: str) -> Response:
    """Each instance of the pipeline's deployment group with the revision it last received, its
    target health and whether the fleet is mixed (chalicelib/service/fleet.py)."""
    from chalicelib.service import fleet
    from chalicelib.service.caller_lookups import pipeline_in_path

    def run() -> Answer:
        _no_query(request)
        return Answer(200, fleet.read_fleet(wiring, pipeline_in_path(wiring, name)).to_dict())

    try:
        return _respond(run)
    except LoadBalancerError as error:
        # ELBv2's errors reach here already read (chalicelib/adapters/elbv2.py): answered as any
        # AWS error is, naming AWS's code.
        logger.error("an ELBv2 call failed", extra={"aws_error": error.code, "permanent": error.permanent})
        if error.permanent:
            return _aws_refused(error.code, str(error))
        return _unavailable(error.code, f"AWS is busy or failing; retry later: {error}")


def slack_interaction(wiring: Wiring, request: Request) -> Response:
    """``POST /slack/interactions``, the one route without IAM auth: Slack's signature with the
    ``[slack]`` app's signing secret proves the sender instead. It only verifies, records and
    queues the click (Slack's three seconds); the worker acts and answers the user."""
    from chalicelib.service import slack_actions

    def run() -> Answer:
        _no_query(request)
        headers = request.headers
        slack_actions.accept(
            wiring,
            request.raw_body,
            headers.get("x-slack-request-timestamp"),
            headers.get("x-slack-signature"),
        )
        return Answer(200, {})

    try:
        answered = _respond(run)
    except SlackActionsUnavailable as unavailable:
        logger.error("a Slack click could not be taken", extra={"why": str(unavailable)})
        return _unavailable(None, str(unavailable))
    if answered.status_code != 200:
        return answered
    # Slack takes an empty 200 as "received"; what a body says would be shown to the user.
    return Response(body="", status_code=200, headers={"Content-Type": "text/plain"})


def _submitted(submitted: release_commands.Submitted) -> Answer:
    release = submitted.release
    # 200: a repeated request, whose release exists already.
    status = 201 if submitted.created else 200
    return Answer(status, release.to_dict(), headers={"Location": f"/releases/{release.id}"})


def _pipeline_status(status: release_queries.PipelineStatus) -> dict[str, Any]:
    slot = status.slot
    return {
        **status.pipeline.to_dict(),
        "active": slot.active,
        "waiting": list(slot.waiting),
        "awaiting_approval": [
            {"release_id": mark.release_id, "expires_at": mark.expires_at.isoformat()}
            for mark in slot.awaiting_approval
        ],
        "last_good": slot.last_good,
        "promotion": _promotion_status(status),
        "freeze": {
            "current": status.current_freeze.to_dict() if status.current_freeze else None,
            "next": status.next_freeze.to_dict() if status.next_freeze else None,
        },
    }


def _promotion_status(status: release_queries.PipelineStatus) -> dict[str, Any]:
    """The pipeline as a stage of a promotion chain: where it promotes from, how, and the
    revision it runs (its last good release) with when that was verified."""
    pipeline, running = status.pipeline, status.running
    verified_at = status.slot.last_good_at
    return {
        "promote_from": pipeline.promote_from,
        "promote": pipeline.promote.value if pipeline.promote_from else None,
        "soak_s": int(pipeline.soak.total_seconds()) if pipeline.promote_from else None,
        "running": {
            "release_id": running.id,
            "trigger": running.trigger.value,
            "revision": running.revision.to_dict(),
            "version_label": running.metadata.get("version_label"),
            "verified_at": verified_at.isoformat() if verified_at else None,
        }
        if running is not None
        else None,
    }


def _named(releases: Mapping[str, Release], release_id: str | None) -> dict[str, Any] | None:
    release = releases.get(release_id) if release_id else None
    return release.to_dict() if release is not None else None


def _post(
    wiring: Wiring, request: Request, fields: frozenset[str], use_case: Callable[[Post], Answer]
) -> Response:
    def run() -> Answer:
        _no_query(request)
        key = idempotency_key(request.headers.get("idempotency-key"))
        body = parse_body(request.raw_body, fields)
        route = json.dumps([request.path, request.uri_params or {}], sort_keys=True)
        fingerprint = request_fingerprint(request.method, route, body)
        release_id = derived_release_id(key, fingerprint, uuid.uuid4().hex[:20])
        post = Post(body=body, actor=caller(request), new_release_id=release_id)
        if key is None:
            return use_case(post)
        return _answer_once(wiring, request, key, fingerprint, lambda: use_case(post))

    return _respond(run)


def _answer_once(
    wiring: Wiring, request: Request, key: str, fingerprint: str, answer: Callable[[], Answer]
) -> Answer:
    """Run a POST at most once per Idempotency-Key. The release id is derived from the key and
    request, so a retry that takes over the key of a request that died finds the release that
    request created instead of deploying again."""
    ledger = wiring.store.request_ledger()
    try:
        kept, replayed = ledger.answer_once(
            key, fingerprint, lambda: answer().to_json(), _longest_run(request)
        )
    except IdempotencyKeyReused:
        raise InvalidValue(
            "this Idempotency-Key was already used for a different request; send a new key for a new request"
        ) from None
    except IdempotencyKeyBusy:
        raise ConflictingState(
            "a request with this Idempotency-Key is still being answered; retry in a few seconds"
        ) from None
    return Answer.from_json(kept, replayed)


def _longest_run(request: Request) -> timedelta:
    """How long this request can still run: the time this invocation has left (it has only just
    started). An in-progress Idempotency-Key claim older than that belongs to a request that died,
    and a retry may take it over."""
    lambda_context = getattr(request, "lambda_context", None)
    remaining_ms = getattr(lambda_context, "get_remaining_time_in_millis", None)
    # API Gateway's integration timeout bounds it too (the template sizes the function to it; a
    # local or test server's context may claim far longer): past it the caller has its 504 and
    # retries, and a takeover of a request still running only repeats idempotent work.
    if remaining_ms is None:
        return API_GATEWAY_TIMEOUT + CLOCK_SKEW
    return min(timedelta(milliseconds=int(remaining_ms())), API_GATEWAY_TIMEOUT) + CLOCK_SKEW


def _respond(run: Callable[[], Answer]) -> Response:
    try:
        answer = run()
    except Refused as refused:
        status, code = _refusal(refused)
        return error_response(status, code, str(refused))
    except ClientError as failed:
        return aws_error_response(failed)
    except ArtifactAccessDenied as denied:
        # S3 refused to show the bundle (403): the API's role lacks a grant. Like any AWS refusal,
        # a 502 naming AWS's code and what to grant.
        logger.error(
            "S3 denied reading the bundle a request names",
            extra={"aws_error": denied.code, "bucket": denied.bucket, "key": denied.key},
        )
        return _aws_refused(
            denied.code,
            f"{denied}; grant the API's role s3:GetObject and s3:GetObjectVersion on the bundles "
            "and s3:ListBucket on the bucket",
        )
    except BotoCoreError as unreachable:
        logger.exception("an AWS call failed before AWS answered")
        return _unavailable(type(unreachable).__name__, f"AWS could not be reached: {unreachable}")
    except ConflictPersisted as contended:
        logger.warning("a write kept losing races", extra={"why": str(contended)})
        return _unavailable(None, f"{contended}; retry in a few seconds")
    headers: dict[str, str | list[str]] = dict(answer.headers)
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body=dict(answer.body), status_code=answer.status, headers=headers)


def _refusal(refused: Refused) -> tuple[int, str]:
    """The status and code of the nearest kind of refusal the API knows."""
    return next(REFUSALS[kind] for kind in type(refused).__mro__ if kind in REFUSALS)


def error_response(status: int, code: str, message: str) -> Response:
    return Response(body={"Code": code, "Message": message}, status_code=status)


def aws_error_response(failed: ClientError) -> Response:
    """An AWS call refused or failed: its code and message, with the operation that failed
    (botocore's ``str()`` of the error names both)."""
    error = failed.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    http_status = int(failed.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    logger.error(
        "an AWS call failed",
        extra={"aws_error": code, "operation": failed.operation_name, "http_status": http_status},
    )
    if code in THROTTLING_CODES or http_status == 429 or http_status >= 500:
        return _unavailable(code, f"AWS is busy or failing; retry later: {failed}")
    return _aws_refused(code, str(failed))


def _aws_refused(aws_error: str, why: str) -> Response:
    body = {"Code": "BadGatewayError", "Message": f"AWS refused a call this request needs: {why}"}
    return Response(body={**body, "aws_error": aws_error}, status_code=502)


def _unavailable(aws_error: str | None, message: str) -> Response:
    body: dict[str, str] = {"Code": "ServiceUnavailableError", "Message": message}
    if aws_error is not None:
        body["aws_error"] = aws_error
    return Response(body=body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def _query(request: Request) -> dict[str, list[str]]:
    params = request.query_params
    if params is None:
        return {}
    return {str(name): [str(value) for value in params.getlist(name)] for name in params}


def _no_query(request: Request) -> None:
    if request.query_params:
        names = ", ".join(repr(str(name)[:64]) for name in list(request.query_params)[:5])
        raise Malformed(f"this route takes no query parameters; got {names}")

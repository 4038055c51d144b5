"""The HTTP API between API Gateway (through Chalice) and the use cases in
``chalicelib.service.api``: read and check the request, run the use case, shape the answer.
``app.py`` only routes here.

Errors are JSON in Chalice's own shape, ``{"Code": ..., "Message": ...}``, so an error this module
writes and one Chalice writes (405, 415) read the same.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalice.app import Request, Response

from chalicelib.domain.api_requests import (
    ApiError,
    DeployRequest,
    ListQuery,
    Malformed,
    derived_release_id,
    idempotency_key,
    parse_body,
    request_fingerprint,
    rollback_target,
)
from chalicelib.service import api as use_cases
from chalicelib.service.context import Context


@dataclass(frozen=True)
class Post:
    """A POST, checked: its JSON body, who sent it, and the id of a release it may create."""

    body: dict[str, Any]
    actor: str
    new_release_id: str


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


def list_releases(context: Context, request: Request) -> Response:
    return _respond(lambda: use_cases.list_releases(context, ListQuery.from_params(_query(request))))


def get_release(context: Context, request: Request, release_id: str) -> Response:
    def run() -> use_cases.Answer:
        _no_query(request)
        return use_cases.release_detail(context, release_id)

    return _respond(run)


def create_release(context: Context, request: Request) -> Response:
    def run(post: Post) -> use_cases.Answer:
        return use_cases.deploy(context, DeployRequest.from_body(post.body), post.actor, post.new_release_id)

    return _post(context, request, DeployRequest.FIELDS, run)


def redeploy(context: Context, request: Request, release_id: str) -> Response:
    def run(post: Post) -> use_cases.Answer:
        return use_cases.redeploy(context, release_id, post.actor, post.new_release_id)

    return _post(context, request, frozenset(), run)


def cancel(context: Context, request: Request, release_id: str) -> Response:
    def run(post: Post) -> use_cases.Answer:
        return use_cases.cancel(context, release_id, post.actor)

    return _post(context, request, frozenset(), run)


def roll_back(context: Context, request: Request, name: str) -> Response:
    def run(post: Post) -> use_cases.Answer:
        target = rollback_target(post.body)
        return use_cases.roll_back(context, name, target, post.actor, post.new_release_id)

    return _post(context, request, frozenset({"to"}), run)


def list_pipelines(context: Context, request: Request) -> Response:
    def run() -> use_cases.Answer:
        _no_query(request)
        return use_cases.list_pipelines(context)

    return _respond(run)


def get_pipeline(context: Context, request: Request, name: str) -> Response:
    def run() -> use_cases.Answer:
        _no_query(request)
        return use_cases.pipeline_detail(context, name)

    return _respond(run)


def _post(
    context: Context, request: Request, fields: frozenset[str], use_case: Callable[[Post], use_cases.Answer]
) -> Response:
    def run() -> use_cases.Answer:
        _no_query(request)
        key = idempotency_key(request.headers.get("idempotency-key"))
        body = parse_body(request.raw_body, fields)
        route = json.dumps([request.path, request.uri_params or {}], sort_keys=True)
        fingerprint = request_fingerprint(request.method, route, body)
        release_id = derived_release_id(key, fingerprint, uuid.uuid4().hex[:20])
        post = Post(body=body, actor=caller(request), new_release_id=release_id)
        return use_cases.answer_once(context, key, fingerprint, lambda: use_case(post))

    return _respond(run)


def _respond(run: Callable[[], use_cases.Answer]) -> Response:
    try:
        answer = run()
    except ApiError as refused:
        return error_response(refused.status, refused.code, str(refused))
    headers: dict[str, str | list[str]] = dict(answer.headers)
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body=dict(answer.body), status_code=answer.status, headers=headers)


def error_response(status: int, code: str, message: str) -> Response:
    return Response(body={"Code": code, "Message": message}, status_code=status)


def _query(request: Request) -> dict[str, list[str]]:
    params = request.query_params
    if params is None:
        return {}
    return {str(name): [str(value) for value in params.getlist(name)] for name in params}


def _no_query(request: Request) -> None:
    if request.query_params:
        names = ", ".join(repr(str(name)[:64]) for name in list(request.query_params)[:5])
        raise Malformed(f"this route takes no query parameters; got {names}")

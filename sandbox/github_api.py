"""A local look-alike of GitHub's REST API for deployments, for tests and the offline sandbox.

``GithubApi().start()`` listens on 127.0.0.1; its ``api_url`` stands where a route's ``api_url``
would name ``https://api.github.com`` (or GitHub Enterprise Server's ``https://HOST/api/v3``).
It answers what the coordinator calls, as GitHub's REST docs ("REST API endpoints for
deployments", "... for deployment statuses", "Rate limits for the REST API") describe them:

* ``POST /repos/{owner}/{repo}/deployments``: ``ref`` required; ``environment`` defaults to
  ``production``; ``payload`` an object or a JSON string; 201 with the deployment.
* ``GET /repos/{owner}/{repo}/deployments``: filters ``sha``, ``ref``, ``task``, ``environment``;
  newest first; ``per_page`` (default 30, at most 100) and ``page``.
* ``POST /repos/{owner}/{repo}/deployments/{id}/statuses``: ``state`` one of error, failure,
  inactive, in_progress, queued, pending, success (422 otherwise); 201 with the status. A
  ``success`` marks the earlier successful deployments of the same environment ``inactive``
  unless ``auto_inactive`` is false or the environment is a production one, as GitHub does.
* ``GET /repos/{owner}/{repo}/deployments/{id}/statuses``: newest first.

Every answer carries the ``x-ratelimit-*`` headers. A call without a known token gets 401, one to
a repository it does not hold 404, a malformed body 400 and a missing or invalid field 422 (a
``message`` and ``errors``, as GitHub answers).

Faults, by operation (``create_deployment``, ``list_deployments``, ``create_status``,
``list_statuses``): :meth:`GithubApi.rate_limit_next` answers GitHub's secondary limit (403 or
429 with ``retry-after``) or its primary one (403, ``x-ratelimit-remaining: 0`` and
``x-ratelimit-reset``); :meth:`GithubApi.fail_next` answers a 5xx, before or after the call took
effect (GitHub can fail after creating a deployment: a client that blindly retries creates two).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_log = logging.getLogger(__name__)

DEFAULT_TOKENS = ("ghp_sandbox",)
DEFAULT_REPOSITORIES = ("acme/shop",)
# GitHub's documented deployment status states.
STATES = frozenset({"error", "failure", "inactive", "in_progress", "queued", "pending", "success"})
RATE_LIMIT = 5000
_DEPLOYMENTS = re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/deployments")
_STATUSES = re.compile(r"/repos/(?P<repo>[^/]+/[^/]+)/deployments/(?P<id>\d+)/statuses")


@dataclass
class Deployment:
    id: int
    repository: str
    sha: str
    ref: str
    environment: str
    payload: Any
    description: str
    production_environment: bool
    transient_environment: bool
    created_at: str
    statuses: list[dict[str, Any]] = field(default_factory=list)  # oldest first

    @property
    def states(self) -> list[str]:
        return [status["state"] for status in self.statuses]


@dataclass(frozen=True)
class Call:
    operation: str
    status: int


@dataclass(frozen=True)
class _Fault:
    status: int
    headers: Mapping[str, str]
    message: str
    takes_effect: bool  # the call is carried out before the fault is answered


class _Refused(Exception):
    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class GithubApi:
    """The look-alike server: ``start()``/``stop()`` or use it as a context manager."""

    def __init__(
        self,
        valid_tokens: Iterable[str] = DEFAULT_TOKENS,
        repositories: Iterable[str] = DEFAULT_REPOSITORIES,
        port: int = 0,
    ) -> None:
        self._valid_tokens = frozenset(valid_tokens)
        self._repositories = frozenset(repositories)
        self._port = port
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._deployments: dict[int, Deployment] = {}
        self._ids = itertools.count(1001)
        self._status_ids = itertools.count(5001)
        self._calls: list[Call] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._used = 0

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> GithubApi:
        if self._server is not None:
            raise RuntimeError("GithubApi is already started")
        self._server = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="github-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> GithubApi:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        if self._server is None:
            raise RuntimeError("GithubApi is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- fault injection -------------------------------------------------------------------------------

    def rate_limit_next(
        self,
        operation: str,
        *,
        status: int = 403,
        retry_after_s: int | None = None,
        reset_in_s: int | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``operation`` are refused for a rate limit: with
        ``retry_after_s`` a secondary limit's ``retry-after``; with ``reset_in_s`` the primary
        limit (``x-ratelimit-remaining: 0``, ``x-ratelimit-reset`` that far ahead); with neither
        a secondary limit that says only so in its message."""
        if status not in (403, 429):
            raise ValueError("GitHub answers a rate limit with 403 or 429")
        headers: dict[str, str] = {}
        if retry_after_s is not None:
            headers["retry-after"] = str(retry_after_s)
        if reset_in_s is not None:
            headers["x-ratelimit-remaining"] = "0"
            headers["x-ratelimit-reset"] = str(int(time.time()) + reset_in_s)
        message = (
            "API rate limit exceeded"
            if reset_in_s is not None
            else "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
        )
        self._add_faults(operation, _Fault(status, headers, message, takes_effect=False), times)

    def fail_next(
        self, operation: str, status: int = 502, *, takes_effect: bool = False, times: int = 1
    ) -> None:
        """The next ``times`` calls of ``operation`` answer HTTP ``status``; with ``takes_effect``
        the call is carried out first (a deployment created, a status posted)."""
        if not 500 <= status <= 599:
            raise ValueError("fail_next injects server errors (5xx)")
        self._add_faults(operation, _Fault(status, {}, "Server Error", takes_effect), times)

    def _add_faults(self, operation: str, fault: _Fault, times: int) -> None:
        if operation not in _OPERATIONS:
            raise ValueError(f"unknown operation {operation!r} (known: {', '.join(sorted(_OPERATIONS))})")
        with self._lock:
            self._faults.setdefault(operation, deque()).extend([fault] * times)

    # -- inspection ------------------------------------------------------------------------------------

    def deployments(self, repository: str | None = None) -> list[Deployment]:
        """Every deployment made, oldest first (copies), optionally of one repository."""
        with self._lock:
            return [
                _copy(deployment)
                for deployment in self._deployments.values()
                if repository is None or deployment.repository == repository
            ]

    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def reset(self) -> None:
        """Forget every deployment, call and pending fault (a fresh repository behind the server)."""
        with self._lock:
            self._deployments.clear()
            self._calls.clear()
            self._faults.clear()

    # -- serving ---------------------------------------------------------------------------------------

    def _handle(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        operation, repository, deployment_id = _route(method, path)
        if operation is None:
            return self._reply(404, {"message": "Not Found"})
        with self._lock:
            fault = _take(self._faults, operation)
            try:
                if fault is not None and not fault.takes_effect:
                    return self._answer(operation, fault.status, {"message": fault.message}, fault.headers)
                self._authorize(headers, repository)
                params = {key: values[-1] for key, values in parse_qs(query).items()}
                status, answer = self._run(operation, repository, deployment_id, params, _json_body(body))
            except _Refused as refused:
                answer_body: dict[str, Any] = {"message": refused.message}
                if refused.errors is not None:
                    answer_body["errors"] = refused.errors
                return self._answer(operation, refused.status, answer_body)
            if fault is not None:
                return self._answer(operation, fault.status, {"message": fault.message}, fault.headers)
            return self._answer(operation, status, answer)

    def _answer(
        self, operation: str, status: int, body: Any, headers: Mapping[str, str] | None = None
    ) -> _Reply:
        self._calls.append(Call(operation, status))
        self._used += 1
        rate = {
            "x-ratelimit-limit": str(RATE_LIMIT),
            "x-ratelimit-remaining": str(max(0, RATE_LIMIT - self._used)),
            "x-ratelimit-reset": str(int(time.time()) + 3600),
            "x-ratelimit-used": str(self._used),
            "x-ratelimit-resource": "core",
        }
        return self._reply(status, body, {**rate, **(headers or {})})

    @staticmethod
    def _reply(status: int, body: Any, headers: Mapping[str, str] | None = None) -> _Reply:
        return _Reply(status, json.dumps(body).encode(), dict(headers or {}))

    def _authorize(self, headers: Mapping[str, str], repository: str) -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or token not in self._valid_tokens:
            raise _Refused(401, "Bad credentials")
        if repository not in self._repositories:
            raise _Refused(404, "Not Found")

    def _run(
        self, operation: str, repository: str, deployment_id: int | None, params: Mapping[str, str], body: Any
    ) -> tuple[int, Any]:
        if operation == "create_deployment":
            return 201, self._deployment_json(self._create_deployment(repository, body))
        if operation == "list_deployments":
            return 200, [self._deployment_json(d) for d in self._list_deployments(repository, params)]
        deployment = self._deployments.get(deployment_id or 0)
        if deployment is None or deployment.repository != repository:
            raise _Refused(404, "Not Found")
        if operation == "create_status":
            return 201, self._create_status(deployment, body)
        return 200, _page(list(reversed(deployment.statuses)), params)

    def _create_deployment(self, repository: str, body: Any) -> Deployment:
        if not isinstance(body, dict):
            raise _Refused(400, "Problems parsing JSON")
        ref = body.get("ref")
        if not isinstance(ref, str) or not ref:
            raise _Refused(
                422, "Invalid request.", [{"resource": "Deployment", "field": "ref", "code": "missing_field"}]
            )
        payload = body.get("payload", {})
        if isinstance(payload, str):
            try:
                payload = json.loads(payload) if payload else {}
            except ValueError:
                raise _Refused(422, "Invalid request.", [{"field": "payload", "code": "invalid"}]) from None
        if not isinstance(payload, dict):
            raise _Refused(422, "Invalid request.", [{"field": "payload", "code": "invalid"}])
        environment = body.get("environment", "production")
        required_contexts = body.get("required_contexts")
        if required_contexts not in (None, []):
            # No commit statuses exist here: any required context is one that has not passed.
            raise _Refused(409, "Conflict: Commit status checks failed for " + ref + ".")
        deployment = Deployment(
            id=next(self._ids),
            repository=repository,
            sha=ref,
            ref=ref,
            environment=str(environment),
            payload=payload,
            description=str(body.get("description") or ""),
            production_environment=bool(body.get("production_environment", environment == "production")),
            transient_environment=bool(body.get("transient_environment", False)),
            created_at=_now(),
        )
        self._deployments[deployment.id] = deployment
        return deployment

    def _list_deployments(self, repository: str, params: Mapping[str, str]) -> list[Deployment]:
        matching = [
            deployment
            for deployment in reversed(self._deployments.values())
            if deployment.repository == repository
            and all(
                params.get(name) in (None, getattr(deployment, name))
                for name in ("sha", "ref", "environment")
            )
            and params.get("task") in (None, "deploy")
        ]
        return _page(matching, params)

    def _create_status(self, deployment: Deployment, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Refused(400, "Problems parsing JSON")
        state = body.get("state")
        if state not in STATES:
            raise _Refused(
                422,
                "Validation Failed",
                [{"resource": "DeploymentStatus", "field": "state", "code": "invalid", "value": state}],
            )
        status = self._status(deployment, str(state), body)
        deployment.statuses.append(status)
        if state == "success" and body.get("auto_inactive", True):
            for earlier in self._deployments.values():
                if (
                    earlier.id != deployment.id
                    and earlier.repository == deployment.repository
                    and earlier.environment == deployment.environment
                    and not earlier.production_environment
                    and not earlier.transient_environment
                    and earlier.states[-1:] == ["success"]
                ):
                    earlier.statuses.append(self._status(earlier, "inactive", {}))
        return status

    def _status(self, deployment: Deployment, state: str, body: Mapping[str, Any]) -> dict[str, Any]:
        log_url = str(body.get("log_url") or body.get("target_url") or "")
        status_id = next(self._status_ids)
        deployment_url = f"{self.api_url}/repos/{deployment.repository}/deployments/{deployment.id}"
        now = _now()
        return {
            "url": f"{deployment_url}/statuses/{status_id}",
            "id": status_id,
            "node_id": f"DES_{status_id}",
            "state": state,
            "creator": _CREATOR,
            "description": str(body.get("description") or ""),
            "environment": str(body.get("environment") or deployment.environment),
            "target_url": log_url,
            "log_url": log_url,
            "environment_url": str(body.get("environment_url") or ""),
            "created_at": now,
            "updated_at": now,
            "deployment_url": deployment_url,
            "repository_url": f"{self.api_url}/repos/{deployment.repository}",
        }

    def _deployment_json(self, deployment: Deployment) -> dict[str, Any]:
        url = f"{self.api_url}/repos/{deployment.repository}/deployments/{deployment.id}"
        return {
            "url": url,
            "id": deployment.id,
            "node_id": f"DE_{deployment.id}",
            "sha": deployment.sha,
            "ref": deployment.ref,
            "task": "deploy",
            "payload": deployment.payload,
            "original_environment": deployment.environment,
            "environment": deployment.environment,
            "description": deployment.description,
            "creator": _CREATOR,
            "created_at": deployment.created_at,
            "updated_at": deployment.created_at,
            "statuses_url": f"{url}/statuses",
            "repository_url": f"{self.api_url}/repos/{deployment.repository}",
            "transient_environment": deployment.transient_environment,
            "production_environment": deployment.production_environment,
        }


_OPERATIONS = frozenset({"create_deployment", "list_deployments", "create_status", "list_statuses"})
_CREATOR = {"login": "relco-bot", "id": 1, "type": "Bot"}


def _route(method: str, path: str) -> tuple[str | None, str, int | None]:
    statuses = _STATUSES.fullmatch(path)
    if statuses:
        operation = {"POST": "create_status", "GET": "list_statuses"}.get(method)
        return operation, statuses["repo"], int(statuses["id"])
    deployments = _DEPLOYMENTS.fullmatch(path)
    if deployments:
        return {"POST": "create_deployment", "GET": "list_deployments"}.get(method), deployments["repo"], None
    return None, "", None


def _page(items: list[Any], params: Mapping[str, str]) -> list[Any]:
    per_page = min(100, int(params.get("per_page") or 30))
    page = max(1, int(params.get("page") or 1))
    return items[(page - 1) * per_page : page * per_page]


def _json_body(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _take(faults: dict[str, deque[_Fault]], operation: str) -> _Fault | None:
    queue = faults.get(operation)
    return queue.popleft() if queue else None


def _copy(deployment: Deployment) -> Deployment:
    return Deployment(**{**deployment.__dict__, "statuses": [dict(status) for status in deployment.statuses]})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], app: GithubApi) -> None:
        super().__init__(address, _Handler)
        self.app = app


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.app._handle(method, url.path, url.query, headers, body)
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

"""GitHub's REST API for deployments, with the standard library's ``urllib`` (no new dependency):
create a deployment, find one an earlier attempt created, post its statuses.

Failures are sorted for the delivery use case, as GitHub's "Rate limits for the REST API" says to
treat them:

* A rate limit (403 or 429): wait ``retry-after`` seconds when it is given; else, when
  ``x-ratelimit-remaining`` is 0, until ``x-ratelimit-reset`` (UTC epoch seconds); else (a
  secondary limit without either header) at least a minute. A wait of at most
  ``INLINE_WAIT_S`` is slept here and the call made once more; a longer one, or a second limit,
  raises ``DeliveryDeferred`` so the message comes back after it, without holding the Lambda.
* HTTP 5xx, timeouts and connection errors propagate as transient (the queue retries with
  backoff). No inline retry: GitHub may have created the deployment before it failed, and
  creating one has no idempotency key; the retry looks for it first (the channel's job).
* Other 4xx (a bad token, a token without "Deployments: write", an unknown repository or
  commit, a refused value) raise ``DeliveryRejected``.

The token never reaches a log or an error.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.service.notification_ports import DeliveryDeferred, DeliveryRejected, GithubRepository

TIMEOUT_S = 10
# The longest rate-limit wait slept inside a call: longer ones come back through the queue.
INLINE_WAIT_S = 2
# GitHub: a secondary rate limit without retry-after or x-ratelimit-reset, "wait for at least
# one minute before retrying".
SECONDARY_LIMIT_WAIT_S = 60
API_VERSION = "2022-11-28"
# The most deployments one page of "List deployments" holds.
PAGE_SIZE = 100
# The key of a deployment's payload that names the release it stands for.
RELEASE_ID_KEY = "release_id"


class GithubRateLimited(Exception):
    """GitHub refused the call for its rate limit; wait ``wait_s`` before the next."""

    def __init__(self, wait_s: int) -> None:
        super().__init__(f"GitHub rate limited: retry after {wait_s}s")
        self.wait_s = wait_s


def rate_limit_wait_s(status: int, headers: Mapping[str, str], message: str, now: float) -> int | None:
    """How long GitHub asks to wait before the next call, or None when the answer is not a rate
    limit (a 403 without any sign of one is a permission refusal)."""
    if status not in (403, 429):
        return None
    retry_after = headers.get("retry-after", "")
    if retry_after.isdigit():
        return int(retry_after)
    reset = headers.get("x-ratelimit-reset", "")
    if headers.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return max(1, int(reset) - int(now))
    if status == 429 or "rate limit" in message.lower():
        return SECONDARY_LIMIT_WAIT_S
    return None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST arrives as a GET: a redirect is an answer here, not a place to follow
    (GitHub answers a renamed repository's API calls with 301/307; the route names the new one)."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:  # noqa: ARG002 - urllib's signature
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class GithubRestApi:
    def __init__(
        self,
        timeout_s: int = TIMEOUT_S,
        inline_wait_s: int = INLINE_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        epoch_s: Callable[[], float] = time.time,
    ) -> None:
        self._timeout_s = timeout_s
        self._inline_wait_s = inline_wait_s
        self._sleep = sleep
        self._epoch_s = epoch_s

    def find_deployment(
        self, repository: GithubRepository, sha: str, environment: str, release_id: str
    ) -> int | None:
        """The deployment of ``sha`` in ``environment`` whose payload names ``release_id``, among
        the newest page of them; None when there is none."""
        query = urllib.parse.urlencode({"sha": sha, "environment": environment, "per_page": PAGE_SIZE})
        listed = self._call(repository, "GET", f"deployments?{query}")
        for deployment in listed if isinstance(listed, list) else []:
            payload = deployment.get("payload")
            if isinstance(payload, str):  # GitHub hands back a payload given as a string as one
                try:
                    payload = json.loads(payload)
                except ValueError:
                    continue
            if isinstance(payload, Mapping) and payload.get(RELEASE_ID_KEY) == release_id:
                return int(deployment["id"])
        return None

    def create_deployment(
        self, repository: GithubRepository, sha: str, environment: str, release_id: str, description: str
    ) -> int:
        body = {
            "ref": sha,
            "environment": environment,
            # The commit is what was built: never merge the default branch into it, and never
            # wait for commit statuses (CI has passed by the time a bundle is uploaded).
            "auto_merge": False,
            "required_contexts": [],
            "payload": {RELEASE_ID_KEY: release_id},
            "description": description[:140],
        }
        created = self._call(repository, "POST", "deployments", body)
        if not isinstance(created, Mapping) or "id" not in created:
            # 202: GitHub merged the default branch instead of creating a deployment (only with
            # auto_merge, which is off): nothing was created.
            raise DeliveryRejected(f"GitHub created no deployment: {str(created)[:200]}")
        return int(created["id"])

    def post_status(
        self,
        repository: GithubRepository,
        deployment_id: int,
        state: str,
        description: str,
        *,
        log_url: str | None,
        environment_url: str | None,
    ) -> None:
        body: dict[str, Any] = {"state": state, "description": description[:140]}
        if log_url is not None:
            body["log_url"] = log_url
        if environment_url is not None:
            body["environment_url"] = environment_url
        self._call(repository, "POST", f"deployments/{deployment_id}/statuses", body)

    def _call(
        self, repository: GithubRepository, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> Any:
        """One call to ``path`` under the repository's API, a short rate limit waited out once."""
        try:
            return self._call_once(repository, method, path, body)
        except GithubRateLimited as limited:
            if limited.wait_s > self._inline_wait_s:
                raise DeliveryDeferred(str(limited), limited.wait_s) from None
            self._sleep(limited.wait_s)
        try:
            return self._call_once(repository, method, path, body)
        except GithubRateLimited as limited:
            raise DeliveryDeferred(str(limited), limited.wait_s) from None

    def _call_once(
        self, repository: GithubRepository, method: str, path: str, body: Mapping[str, Any] | None
    ) -> Any:
        request = urllib.request.Request(
            f"{repository.api_url}/repos/{repository.name}/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {repository.token}",
                "X-GitHub-Api-Version": API_VERSION,
                "Content-Type": "application/json",
                "User-Agent": "release-coordinator",
            },
        )
        what = f"GitHub {method} {repository.name}/{path.partition('?')[0]}"
        try:
            with _OPENER.open(request, timeout=self._timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            status = error.code
            message = _message(error.read())
            headers = {name.lower(): value for name, value in error.headers.items()}
            wait = rate_limit_wait_s(status, headers, message, self._epoch_s())
            if wait is not None:
                raise GithubRateLimited(wait) from None
            if status >= 500:
                raise RuntimeError(f"{what} answered HTTP {status}") from None
            raise DeliveryRejected(f"{what} answered HTTP {status}: {message}") from None
        except (urllib.error.URLError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectionError(f"{what} unreachable: {reason}") from None


def _message(body: bytes) -> str:
    """GitHub's error ``message`` (JSON), else the start of the body."""
    try:
        answered = json.loads(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    if isinstance(answered, Mapping):
        return str(answered.get("message", ""))[:200]
    return ""

"""The Release Coordinator API as the CLI calls it: JSON over HTTPS, signed with SigV4.

API Gateway's IAM authorization checks the signature: botocore signs with the default credential
chain (environment, profile, SSO, instance or container role), for service ``execute-api``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError

TIMEOUT_S = 30
# https://{api id}.execute-api.{region}.amazonaws.com/{stage}
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")


class ClientProblem(Exception):
    """The CLI cannot make the call: no URL, no credentials, the API unreachable."""


class ApiRefused(Exception):
    """The API answered with an error; the message is the API's own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ApiClient:
    def __init__(self, api_url: str | None, region: str | None = None) -> None:
        if not api_url:
            raise ClientProblem(
                "no API URL: pass --api-url or set RELCO_API_URL to the stack's EndpointURL output "
                "(e.g. https://abc123.execute-api.us-east-1.amazonaws.com/api/), or to the api_url "
                "`relco sandbox up` printed"
            )
        parsed = urllib.parse.urlsplit(api_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ClientProblem(f"API URL {api_url!r} is not an http(s) URL")
        self._base = api_url.rstrip("/")
        self._session = botocore.session.Session()
        host_region = _REGION_IN_HOST.search(parsed.hostname or "")
        # The signature must name the API's own region; the host says it for a real API.
        self._region = (
            region
            or (host_region.group(1) if host_region else None)
            or self._session.get_config_variable("region")
            or "us-east-1"
        )

    def get(self, path: str, query: Mapping[str, str | int | None] | None = None) -> Any:
        return self.call("GET", path, query=query)

    def post(
        self, path: str, body: Mapping[str, Any] | None = None, idempotency_key: str | None = None
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.call("POST", path, body=body or {}, headers=headers)

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | None] | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        url = self._base + path
        given = {name: str(value) for name, value in (query or {}).items() if value is not None}
        if given:
            url += "?" + urllib.parse.urlencode(given)
        data = json.dumps(body).encode() if body is not None else None
        signed = self.sign(method, url, data, {"Content-Type": "application/json", **(headers or {})})
        request = urllib.request.Request(url, data=data, headers=signed, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return _json(response.read())
        except urllib.error.HTTPError as error:
            raise ApiRefused(error.code, _message(error.read()) or error.reason) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ClientProblem(f"cannot reach the API at {self._base}: {reason}") from None

    def sign(self, method: str, url: str, data: bytes | None, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers of the request signed with SigV4 (Authorization, X-Amz-Date, and the
        session token for temporary credentials)."""
        try:
            credentials = self._session.get_credentials()
        except BotoCoreError as error:
            raise ClientProblem(f"could not load AWS credentials: {error}") from None
        if credentials is None:
            raise ClientProblem(
                "no AWS credentials found: set AWS_PROFILE (or run `aws sso login`), or "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the API accepts only signed requests"
            )
        request = AWSRequest(method=method, url=url, data=data, headers=dict(headers))
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self._region).add_auth(request)
        return {name: str(value) for name, value in request.headers.items()}


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise ClientProblem(f"the API answered something that is not JSON: {raw[:200]!r}") from None


def _message(raw: bytes) -> str:
    """The API's error message: ours say ``Message``, API Gateway's own say ``message``."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:500]
    if isinstance(body, dict):
        return str(body.get("Message") or body.get("message") or body)
    return str(body)

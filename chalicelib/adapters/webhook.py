"""Generic webhooks: a signed JSON POST with the standard library's ``urllib``.

The URL may be a secret: no error raised here names it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

from chalicelib.service.notification_ports import DeliveryDeferred, DeliveryRejected

TIMEOUT_S = 10
# 4xx answers that a later attempt may not get: timeout, too early, rate limited.
_TRANSIENT_CLIENT_ERRORS = frozenset({408, 425, 429})


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would arrive as a GET without body or signature while the delivery
    counted as done: a redirect is an answer, not a place to follow."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:  # noqa: ARG002 - urllib's signature
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class HttpWebhook:
    def __init__(self, timeout_s: int = TIMEOUT_S) -> None:
        self._timeout_s = timeout_s

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "release-coordinator", **headers},
        )
        try:
            with _OPENER.open(request, timeout=self._timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as error:
            status = error.code
            if status == 429:
                retry_after = error.headers.get("Retry-After", "")
                delay = int(retry_after) if retry_after.isdigit() else 30
                raise DeliveryDeferred(f"webhook rate limited: retry after {delay}s", delay) from None
            if 300 <= status < 400:
                raise DeliveryRejected(
                    f"webhook answered HTTP {status} (a redirect): point the route at the final URL"
                ) from None
            if 400 <= status < 500 and status not in _TRANSIENT_CLIENT_ERRORS:
                raise DeliveryRejected(f"webhook answered HTTP {status}") from None
            raise RuntimeError(f"webhook answered HTTP {status}") from None
        except (urllib.error.URLError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectionError(f"webhook unreachable: {reason}") from None

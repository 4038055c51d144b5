"""The slack_sdk retry handler that waits out a short rate limit. ``chalicelib.adapters.slack``
imports this module when it makes its first client: it loads slack_sdk, which the cold start
does without."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState


def retry_after_s(headers: Mapping[str, Any] | None) -> int | None:
    """A 429's ``Retry-After`` in whole seconds, as Slack sends it (slack_sdk hands headers over
    as strings or as lists of them); None when it is missing or not a whole number."""
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            written = value[0] if isinstance(value, list) and value else value
            return int(written) if isinstance(written, str) and written.isdigit() else None
    return None


class ShortRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's rate limit handler (it sleeps for the ``Retry-After`` plus up to a second of
    jitter, then calls again), once per call and only for a ``Retry-After`` of at most
    ``longest_wait_s``. Any other 429 reaches the adapter, which defers the message for as long
    as Slack asked: a Lambda must not sleep for minutes."""

    def __init__(self, longest_wait_s: int) -> None:
        super().__init__(max_retry_count=1)
        self.longest_wait_s = longest_wait_s

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        # Without a Retry-After this handler's own reading (int()) could trust, no inline wait.
        wait = retry_after_s(response.headers) if response is not None else None
        return wait is not None and wait <= self.longest_wait_s

"""Which 429s slack_sdk's rate limit handler waits out inside a Slack call: a short Retry-After,
once per call; everything else reaches the adapter, which defers the message."""

from __future__ import annotations

import pytest
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from chalicelib.adapters.slack import INLINE_RETRY_AFTER_S
from chalicelib.adapters.slack_retries import ShortRateLimitRetryHandler, retry_after_s

REQUEST = HttpRequest(method="POST", url="https://slack.com/api/chat.postMessage", headers={})


def rate_limited(headers: dict[str, str | list[str]], status: int = 429) -> HttpResponse:
    return HttpResponse(status_code=status, headers=headers)


@pytest.mark.parametrize(
    ("headers", "status", "attempt", "waits"),
    [
        ({"Retry-After": ["0"]}, 429, 0, True),
        ({"retry-after": [str(INLINE_RETRY_AFTER_S)]}, 429, 0, True),
        ({"Retry-After": [str(INLINE_RETRY_AFTER_S + 1)]}, 429, 0, False),
        ({"Retry-After": ["120"]}, 429, 0, False),
        ({"Retry-After": ["soon"]}, 429, 0, False),
        ({}, 429, 0, False),
        ({"Retry-After": ["1"]}, 429, 1, False),  # once per call
        ({"Retry-After": ["1"]}, 503, 0, False),
    ],
)
def test_only_a_short_rate_limit_is_waited_out_once(
    headers: dict[str, str | list[str]], status: int, attempt: int, waits: bool
) -> None:
    handler = ShortRateLimitRetryHandler(INLINE_RETRY_AFTER_S)
    state = RetryState(current_attempt=attempt)
    assert handler.can_retry(state=state, request=REQUEST, response=rate_limited(headers, status)) is waits


def test_retry_after_reads_the_forms_slack_sdk_hands_over() -> None:
    assert retry_after_s({"Retry-After": "7"}) == 7  # WebClient's error response: plain strings
    assert retry_after_s({"retry-after": ["3"]}) == 3  # retry handlers: lists of strings
    assert retry_after_s({"Retry-After": "-1"}) is None
    assert retry_after_s(None) is None

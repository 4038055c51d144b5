"""Slack through ``slack_sdk``: the Web API with a bot token (threads, edits) and incoming
webhooks. ``slack_sdk`` loads on first use (cold start budget).

Failures are sorted for the delivery use case:

* HTTP 429: a ``Retry-After`` of at most ``INLINE_RETRY_AFTER_S`` is waited out by slack_sdk's
  rate limit retry handler and the call made once more (keeps the thread in order at little
  cost); a longer one, or a second 429, raises ``DeliveryDeferred`` so the message comes back
  after it, without holding the Lambda.
* HTTP 5xx: retried here with backoff by slack_sdk's ``ServerErrorRetryHandler``; what still fails
  propagates and SQS retries with backoff.
* Timeouts and connection errors propagate without an inline retry: Slack may have posted
  already, and chat.postMessage has no idempotency key.
* Errors no retry can fix (``invalid_auth``, ``channel_not_found``...) raise ``DeliveryRejected``.

Every post carries a :class:`SlackPostMark` in its message metadata. A retry that may repeat an
earlier attempt finds that attempt's root card with ``conversations.history`` and its reply with
``conversations.replies`` (``include_all_metadata``; the bot needs ``channels:history``, and
``groups:history`` for a private channel). conversations.history takes a channel id: a channel
configured by name is resolved with ``conversations.list`` (``channels:read``/``groups:read``).
A lookup the token may not make is logged and treated as "not found": posting twice beats not
posting.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from chalicelib.domain.notifications import SlackPostMark, SlackThread
from chalicelib.log import logger
from chalicelib.service.notification_ports import DeliveryDeferred, DeliveryRejected

# The longest Retry-After waited out inside a call; slack_sdk adds up to a second of jitter.
INLINE_RETRY_AFTER_S = 2
TIMEOUT_S = 10
# Slack recommends pages of at most 200 for its cursor-paginated methods.
PAGE_SIZE = 200
# Conversation ids (C public, G private, D direct); names are lower case.
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{8,}")
PERMANENT_ERRORS = frozenset(
    {
        "account_inactive",
        "cant_update_message",
        "channel_not_found",
        "edit_window_closed",
        "invalid_auth",
        "invalid_blocks",
        "invalid_blocks_format",
        "is_archived",
        "message_not_found",
        "missing_scope",
        "msg_too_long",
        "no_permission",
        "no_text",
        "not_authed",
        "not_in_channel",
        "restricted_action",
        "thread_not_found",
        "token_expired",
        "token_revoked",
    }
)
# Incoming webhooks answer their errors as plain text with a 4xx status.
_WEBHOOK_TRANSIENT_STATUSES = frozenset({408, 429})
# slack_sdk logs request URLs (an incoming webhook's URL is its secret) and would log tokens at
# DEBUG: it gets a logger that says nothing. What matters is logged here, without secrets.
_SILENT = logging.getLogger("release-coordinator.slack-sdk")
_SILENT.disabled = True


def _server_error_retries() -> list[Any]:
    from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
    from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator

    return [
        ServerErrorRetryHandler(max_retry_count=2, interval_calculator=BackoffRetryIntervalCalculator(0.5))
    ]


def _retry_handlers() -> list[Any]:
    """Server errors retried with backoff; a short rate limit waited out once."""
    from chalicelib.adapters.slack_retries import ShortRateLimitRetryHandler

    return [*_server_error_retries(), ShortRateLimitRetryHandler(INLINE_RETRY_AFTER_S)]


def _deferred(headers: Mapping[str, Any] | None) -> DeliveryDeferred:
    """A 429 not waited out: the message comes back after Slack's Retry-After (1 s without one)."""
    from chalicelib.adapters.slack_retries import retry_after_s

    wait = retry_after_s(headers)
    retry_after = 1 if wait is None else wait
    return DeliveryDeferred(f"Slack rate limited: retry after {retry_after}s", retry_after)


class SlackWebApi:
    """chat.postMessage and chat.update with a bot token; ``base_url`` points at the sandbox's
    look-alike in tests (``SLACK_API_URL``)."""

    def __init__(self, base_url: str | None = None, timeout_s: int = TIMEOUT_S) -> None:
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._clients: dict[str, Any] = {}

    def _client(self, token: str) -> Any:
        client = self._clients.get(token)
        if client is None:
            from slack_sdk import WebClient

            client = WebClient(
                token=token,
                base_url=self._base_url or WebClient.BASE_URL,
                timeout=self._timeout_s,
                retry_handlers=_retry_handlers(),
                logger=_SILENT,
            )
            self._clients[token] = client
        return client

    def post(
        self,
        token: str,
        channel: str,
        text: str,
        blocks: Sequence[Mapping[str, object]],
        thread_ts: str | None,
        *,
        mark: SlackPostMark,
    ) -> SlackThread:
        response = self._call(
            "chat.postMessage",
            lambda: self._client(token).chat_postMessage(
                channel=channel,
                text=text,
                blocks=list(blocks) or None,
                thread_ts=thread_ts,
                unfurl_links=False,
                metadata=mark.to_metadata(),
            ),
        )
        return SlackThread(str(response["channel"]), str(response["ts"]))

    def find_card(self, token: str, channel: str, mark: SlackPostMark, since: datetime) -> SlackThread | None:
        try:
            channel_id = channel if _CHANNEL_ID.fullmatch(channel) else self._channel_id(token, channel)
            if channel_id is None:
                return None
            client = self._client(token)
            for message in self._pages(
                "conversations.history",
                lambda cursor: client.conversations_history(
                    channel=channel_id,
                    oldest=_slack_ts(since),
                    limit=PAGE_SIZE,
                    include_all_metadata=True,
                    cursor=cursor,
                ),
                "messages",
            ):
                if SlackPostMark.from_metadata(message.get("metadata")) == mark:
                    return SlackThread(channel_id, str(message["ts"]))
        except DeliveryRejected as refused:
            _cannot_look(refused)
        return None

    def find_reply(self, token: str, thread: SlackThread, mark: SlackPostMark, since: datetime) -> bool:
        client = self._client(token)
        try:
            return any(
                SlackPostMark.from_metadata(message.get("metadata")) == mark
                for message in self._pages(
                    "conversations.replies",
                    lambda cursor: client.conversations_replies(
                        channel=thread.channel,
                        ts=thread.ts,
                        oldest=_slack_ts(since),
                        limit=PAGE_SIZE,
                        include_all_metadata=True,
                        cursor=cursor,
                    ),
                    "messages",
                )
            )
        except DeliveryRejected as refused:
            _cannot_look(refused)
            return False

    def _channel_id(self, token: str, name: str) -> str | None:
        client = self._client(token)
        wanted = name.lstrip("#")
        for channel in self._pages(
            "conversations.list",
            lambda cursor: client.conversations_list(
                types="public_channel,private_channel", exclude_archived=True, limit=PAGE_SIZE, cursor=cursor
            ),
            "channels",
        ):
            if channel.get("name") == wanted:
                return str(channel["id"])
        return None

    def _pages(
        self, method: str, fetch: Callable[[str | None], Any], items: str
    ) -> Iterator[Mapping[str, Any]]:
        """Every item of a cursor-paginated method: the next page's cursor is
        ``response_metadata.next_cursor``; empty or missing on the last page."""
        cursor: str | None = None
        while True:
            response = self._call(method, functools.partial(fetch, cursor))
            yield from response.get(items) or []
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return

    def update(
        self, token: str, thread: SlackThread, text: str, blocks: Sequence[Mapping[str, object]]
    ) -> None:
        self._call(
            "chat.update",
            lambda: self._client(token).chat_update(
                channel=thread.channel, ts=thread.ts, text=text, blocks=list(blocks) or None
            ),
        )

    def _call(self, method: str, call: Callable[[], Any]) -> Any:
        from slack_sdk.errors import SlackApiError

        try:
            return call()
        except SlackApiError as error:
            if error.response.status_code == 429:
                raise _deferred(error.response.headers) from None
            code = str(error.response.get("error") or "")
            if code in PERMANENT_ERRORS:
                raise DeliveryRejected(f"Slack {method}: {code}") from None
            raise


def _slack_ts(moment: datetime) -> str:
    return f"{moment.timestamp():.6f}"


def _cannot_look(refused: DeliveryRejected) -> None:
    logger.error(
        "cannot look for an earlier Slack post (grant the bot channels:history, groups:history, "
        "channels:read and groups:read); posting, which may repeat it",
        extra={"reason": refused.reason},
    )


class SlackIncomingWebhook:
    """One message per event to an incoming webhook URL (a secret: never logged)."""

    def __init__(self, timeout_s: int = TIMEOUT_S) -> None:
        self._timeout_s = timeout_s

    def send(self, url: str, text: str, blocks: Sequence[Mapping[str, object]]) -> None:
        from slack_sdk.webhook import WebhookClient

        client = WebhookClient(url, timeout=self._timeout_s, retry_handlers=_retry_handlers(), logger=_SILENT)
        response = client.send(text=text, blocks=[dict(block) for block in blocks] or None)
        status = response.status_code
        if status == 429:
            raise _deferred(response.headers)
        if 400 <= status < 500 and status not in _WEBHOOK_TRANSIENT_STATUSES:
            raise DeliveryRejected(f"Slack webhook: HTTP {status} {str(response.body)[:100]}")
        if status >= 300:
            raise RuntimeError(f"Slack webhook: HTTP {status}")

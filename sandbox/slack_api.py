"""A local look-alike of the Slack Web API and incoming webhooks, for tests and the offline sandbox.

``slack_sdk.WebClient(token=..., base_url=server.api_url)`` and
``slack_sdk.webhook.WebhookClient(server.webhook_url(...))`` run against it unchanged: slack_sdk joins
``base_url`` and the method name (``.../api/chat.postMessage``), sends the token as
``Authorization: Bearer``, and posts JSON for methods that take blocks and form fields for the rest.

Where the real service is loose the look-alike is strict on purpose, so that bugs show up here rather
than in a real workspace:

* ``chat.update`` takes the channel *id* (as returned by ``chat.postMessage``), not its name; Slack
  answers ``channel_not_found`` to a name there.
* A reply whose ``thread_ts`` is not a message in that channel is refused with ``thread_not_found``.
* A call delayed with :meth:`SlackApi.delay_next` takes effect at once and only its answer is late, as
  with a slow Slack: a client that times out and blindly retries posts twice.

Fields that ``chat.update`` does not name are kept; ``blocks=[]`` removes the blocks.

Reading back, as Slack documents it: ``conversations.history`` (a channel's root messages, newest
first; default page 100, at most 999), ``conversations.replies`` (a thread's parent and replies,
oldest first; default page 10, at most 1000) and ``conversations.list``. ``oldest``/``latest``
bound the messages exclusively unless ``inclusive``; a page with more after it says
``has_more: true`` and gives ``response_metadata.next_cursor`` (empty on the last page). Message
``metadata`` (``event_type``, ``event_payload``, set on ``chat.postMessage``) is returned only with
``include_all_metadata``. Both history methods take the channel *id*.

Buttons, as a Slack app with interactivity: :meth:`SlackApi.click` presses a button of a card
(only one the card shows), and POSTs the ``block_actions`` payload Slack would send to the
app's Interactivity Request URL: a form body ``payload=<json>`` signed with the app's signing
secret (``X-Slack-Signature: v0=<HMAC-SHA256 of "v0:<timestamp>:<body>">``,
``X-Slack-Request-Timestamp``), whose ``response_url`` points back here: what the app posts there
is kept (:meth:`SlackApi.responses`). ``usergroups.users.list`` answers from the groups given.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message as HttpHeaders
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_TOKENS = frozenset({"xoxb-test"})
DEFAULT_CHANNELS: Mapping[str, str] = MappingProxyType({"#deploys": "C0DEPLOYS"})

TEAM_ID = "T0SANDBOX"
BOT_USER_ID = "U0RELEASE"
BOT_ID = "B0RELEASE"

APP_ID = "A0RELEASE"
TEAM_DOMAIN = "sandbox"

_API_PREFIX = "/api/"
_WEBHOOK_PREFIX = f"/services/{TEAM_ID}/B0WEBHOOK/"
# A click's response_url, as Slack's https://hooks.slack.com/actions/<team>/<action>/<token>.
_RESPONSE_PREFIX = f"/actions/{TEAM_ID}/"
# Slack's ts is the time of posting, "<seconds>.<microseconds>", unique in a channel: the clock,
# stepped on where two posts would share one.
_TS_STEP_MICROS = 100
# Every parameter that is part of a message's content rather than an option of the call.
_CONTENT_PARAMS = frozenset({"channel", "text", "blocks", "thread_ts", "ts", "token", "metadata"})
# Page sizes of the reading methods: (default, largest), as Slack documents them.
_HISTORY_LIMITS = (100, 999)
_REPLIES_LIMITS = (10, 1000)
_LIST_LIMITS = (100, 1000)
_TEXT_OBJECT_TYPES = frozenset({"mrkdwn", "plain_text"})
# Slack answers webhook errors as plain text with these statuses; anything else is a 400.
_WEBHOOK_ERROR_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "no_service": 404,
        "channel_not_found": 404,
        "user_not_found": 404,
        "action_prohibited": 403,
        "invalid_token": 403,
        "posting_to_general_channel_denied": 403,
        "channel_is_archived": 410,
    }
)


@dataclass
class MessageVersion:
    """What a message looked like before one ``chat.update``."""

    text: str | None
    blocks: list[dict[str, Any]] | None


@dataclass
class Message:
    """A message as stored: a root (``thread_ts`` None) or a reply in the thread of ``thread_ts``."""

    channel: str
    ts: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None = None
    edits: list[MessageVersion] = field(default_factory=list)
    # Other arguments of the call, e.g. mrkdwn, unfurl_links, username.
    options: dict[str, Any] = field(default_factory=dict)
    # chat.postMessage's ``metadata``: {"event_type": ..., "event_payload": {...}}.
    metadata: dict[str, Any] | None = None


@dataclass
class WebhookMessage:
    webhook: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    payload: dict[str, Any]


@dataclass
class Call:
    """One request as the server answered it; ``method`` is ``"webhook"`` for incoming webhooks."""

    method: str
    params: dict[str, Any]
    token: str | None
    status: int
    error: str | None
    webhook: str | None = None


@dataclass(frozen=True)
class SignedRequest:
    """A request as Slack signs and sends it to the app: what :meth:`SlackApi.send` posts again."""

    url: str
    body: bytes
    headers: dict[str, str]

    @property
    def payload(self) -> dict[str, Any]:
        """The interaction payload the form body carries."""
        loaded: dict[str, Any] = json.loads(parse_qs(self.body.decode())["payload"][0])
        return loaded


@dataclass(frozen=True)
class Click:
    """A button pressed: the request Slack sent and the app's answer to it."""

    request: SignedRequest
    status: int
    answer: bytes


@dataclass(frozen=True)
class ResponsePost:
    """What the app posted to a click's ``response_url``."""

    action: str  # the click's number in the response_url
    payload: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.payload.get("text") or "")


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str
    error: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after_s: int
    error: str | None

    def api_reply(self) -> _Reply:
        if self.error is not None:
            return _json_reply(200, {"ok": False, "error": self.error})
        if self.status == 429:
            return _json_reply(429, {"ok": False, "error": "ratelimited"}, self._retry_after())
        return _json_reply(self.status, {"ok": False, "error": "fatal_error"})

    def webhook_reply(self) -> _Reply:
        if self.error is not None:
            return _text_reply(_WEBHOOK_ERROR_STATUS.get(self.error, 400), self.error)
        if self.status == 429:
            return _text_reply(429, "rate_limited", self._retry_after())
        return _text_reply(self.status, "internal_error")

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class _SlackError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class SlackApi:
    """The look-alike server: ``start()``/``stop()`` or use it as a context manager."""

    def __init__(
        self,
        valid_tokens: Iterable[str] = DEFAULT_TOKENS,
        channels: Mapping[str, str] = DEFAULT_CHANNELS,
        port: int = 0,
        *,
        signing_secret: str | None = None,
        interactions_url: str | None = None,
        usergroups: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self._valid_tokens = frozenset(valid_tokens)
        # Names are accepted with or without the leading "#", as Slack does.
        self._channel_ids = {name.lstrip("#"): channel_id for name, channel_id in channels.items()}
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._last_ts_micros = 0
        self._messages: list[Message] = []
        self._by_ts: dict[tuple[str, str], Message] = {}
        self._webhooks: dict[str, list[WebhookMessage]] = {}
        self._calls: list[Call] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._delays: dict[str, deque[float]] = {}
        # The app's interactivity: where clicks go and the secret they are signed with.
        self.signing_secret = signing_secret
        self.interactions_url = interactions_url
        self._usergroups = {group: list(users) for group, users in (usergroups or {}).items()}
        self._responses: list[ResponsePost] = []
        self._click_numbers = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> SlackApi:
        if self._server is not None:
            raise RuntimeError("SlackApi is already started")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self)
        # A short poll keeps stop() quick: shutdown() waits for the serve loop to look.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="slack-api", daemon=True
        )
        self._thread.start()
        _log.debug("Slack API look-alike listening on %s", self.api_url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        # Wakes handlers sleeping in delay_next so that server_close() can join them.
        self._stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> SlackApi:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        return f"{self._base_url()}{_API_PREFIX}"

    def webhook_url(self, name: str = "default") -> str:
        """Create (or return) the incoming webhook ``name``; posts to any other webhook get 404."""
        base_url = self._base_url()
        with self._lock:
            self._webhooks.setdefault(name, [])
        return f"{base_url}{_WEBHOOK_PREFIX}{quote(name, safe='')}"

    def _base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("SlackApi is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- fault injection -------------------------------------------------------------------------------

    def fail_next(
        self,
        method_or_webhook: str,
        status: int = 429,
        retry_after_s: int = 1,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of a Web API method, or posts to a webhook name, fail.

        With ``error`` the Web API answers HTTP 200 ``{"ok": false, "error": error}`` (a webhook answers
        the plain-text error with Slack's status for it); otherwise the answer is HTTP ``status``, and a
        429 carries ``Retry-After: retry_after_s`` (whole seconds, as Slack sends and slack_sdk parses).
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        if retry_after_s < 0:
            raise ValueError("retry_after_s must not be negative")
        if error is None and not 400 <= status <= 599:
            raise ValueError("without an error, status must be an HTTP error status")
        with self._lock:
            queue = self._faults.setdefault(method_or_webhook, deque())
            queue.extend([_Fault(status, retry_after_s, error)] * times)

    def delay_next(self, method_or_webhook: str, seconds: float) -> None:
        """Hold back the answer to the next such call by ``seconds``; the call itself takes effect."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._lock:
            self._delays.setdefault(method_or_webhook, deque()).append(seconds)

    # -- inspection ------------------------------------------------------------------------------------

    def messages(self, channel: str | None = None) -> list[Message]:
        """Roots and replies in posting order (copies), optionally of one channel (name or id)."""
        with self._lock:
            channel_id = None if channel is None else self._channel_id_for_inspection(channel)
            return [
                copy.deepcopy(message)
                for message in self._messages
                if channel_id is None or message.channel == channel_id
            ]

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The replies to the root message ``ts``, oldest first."""
        with self._lock:
            root = self._root_for_inspection(channel, ts)
            return [copy.deepcopy(m) for m in self._messages if m.thread_ts == root.ts]

    def calls(self) -> list[Call]:
        with self._lock:
            return copy.deepcopy(self._calls)

    def webhook_messages(self, name: str = "default") -> list[WebhookMessage]:
        with self._lock:
            return copy.deepcopy(self._webhooks.get(name, []))

    def responses(self) -> list[ResponsePost]:
        """What the app posted to its clicks' ``response_url``s, in order."""
        with self._lock:
            return list(self._responses)

    def render_thread_text(self, channel: str, ts: str) -> str:
        """The thread as a reader sees it: the root's final text, then one indented entry per reply."""
        with self._lock:
            root = self._root_for_inspection(channel, ts)
            replies = [m for m in self._messages if m.thread_ts == root.ts]
            lines = _display_text(root).splitlines() or [""]
            for reply in replies:
                first, *rest = _display_text(reply).splitlines() or [""]
                lines.append(f"  ↳ {first}")
                lines.extend(f"    {line}" for line in rest)
        return "\n".join(lines)

    def _channel_id_for_inspection(self, channel: str) -> str:
        try:
            return self._resolve_channel(channel)
        except _SlackError:
            raise LookupError(f"unknown channel {channel!r}") from None

    def _root_for_inspection(self, channel: str, ts: str) -> Message:
        message = self._by_ts.get((self._channel_id_for_inspection(channel), ts))
        if message is None or message.thread_ts is not None:
            raise LookupError(f"no root message {ts} in {channel!r}")
        return message

    # -- interactivity -----------------------------------------------------------------------------------

    def click(self, channel: str, ts: str, action_id: str, user_id: str, user_name: str) -> Click:
        """Press the button ``action_id`` on the root message ``ts`` as user ``user_id`` and send
        the request to the Interactivity Request URL: the request and the app's answer."""
        request = self.press(channel, ts, action_id, user_id, user_name)
        status, answer = self.send(request)
        return Click(request, status, answer)

    def press(
        self,
        channel: str,
        ts: str,
        action_id: str,
        user_id: str,
        user_name: str,
        *,
        timestamp: int | None = None,
    ) -> SignedRequest:
        """The signed ``block_actions`` request Slack sends when ``user_id`` presses the button
        ``action_id`` on the root message ``ts`` (not sent: :meth:`send` does). ``timestamp``
        (Unix seconds) signs as of another time, as a delayed request."""
        if self.signing_secret is None or self.interactions_url is None:
            raise RuntimeError(
                "the look-alike has no app to send clicks to: set signing_secret and interactions_url"
            )
        with self._lock:
            message = self._root_for_inspection(channel, ts)
            block, button = _button(message, action_id)
            number = next(self._click_numbers)
            now = time.time()
            clicked: dict[str, Any] = {
                "action_id": action_id,
                "block_id": block.get("block_id", ""),
                "text": copy.deepcopy(button.get("text")),
                "value": button.get("value", ""),
                "type": "button",
                "action_ts": f"{now:.6f}",
            }
            if button.get("style"):
                clicked["style"] = button["style"]
            payload = {
                "type": "block_actions",
                "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
                "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": TEAM_ID},
                "api_app_id": APP_ID,
                # The deprecated verification token; signed requests make it unnecessary.
                "token": "sandbox-verification-token",
                "container": {
                    "type": "message",
                    "message_ts": message.ts,
                    "channel_id": message.channel,
                    "is_ephemeral": False,
                },
                "trigger_id": f"{number}.{int(now)}.sandbox",
                "channel": {"id": message.channel, "name": self._channel_name(message.channel)},
                "message": _message_json(message),
                "response_url": f"{self._base_url()}{_RESPONSE_PREFIX}{number}/sandbox",
                "actions": [clicked],
            }
        return self.signed(urlencode({"payload": json.dumps(payload)}).encode(), timestamp)

    def signed(self, body: bytes, timestamp: int | None = None) -> SignedRequest:
        """``body`` as Slack signs it for the app (Slack's "Verifying requests from Slack")."""
        if self.signing_secret is None or self.interactions_url is None:
            raise RuntimeError(
                "the look-alike has no app to sign for: set signing_secret and interactions_url"
            )
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        digest = hmac.new(self.signing_secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": f"v0={digest.hexdigest()}",
        }
        return SignedRequest(self.interactions_url, body, headers)

    def send(self, request: SignedRequest) -> tuple[int, bytes]:
        """POST a signed request to the app (again, for a replay): its status and body."""
        outgoing = urllib.request.Request(
            request.url, data=request.body, headers=request.headers, method="POST"
        )
        try:
            with urllib.request.urlopen(outgoing, timeout=10) as answer:
                return int(answer.status), bytes(answer.read())
        except urllib.error.HTTPError as refused:
            return int(refused.code), bytes(refused.read())

    def _channel_name(self, channel_id: str) -> str:
        return next((name for name, known in self._channel_ids.items() if known == channel_id), channel_id)

    # -- request handling (called from the server's handler threads) -----------------------------------

    def _handle(self, path: str, query: str, headers: HttpHeaders, body: bytes) -> _Reply:
        if path.startswith(_API_PREFIX):
            reply, delay = self._api_call(path.removeprefix(_API_PREFIX), query, headers, body)
        elif path.startswith(_WEBHOOK_PREFIX):
            reply, delay = self._webhook_call(unquote(path.removeprefix(_WEBHOOK_PREFIX)), body)
        elif path.startswith(_RESPONSE_PREFIX):
            return self._response_post(path.removeprefix(_RESPONSE_PREFIX).split("/", 1)[0], body)
        else:
            return _text_reply(404, "no_service")
        if delay:
            self._stopping.wait(delay)
        return reply

    def _api_call(self, method: str, query: str, headers: HttpHeaders, body: bytes) -> tuple[_Reply, float]:
        parse_error = None
        try:
            params = _parse_params(headers.get("Content-Type", ""), body, query)
        except _SlackError as exc:
            params, parse_error = {}, exc.error
        token = _bearer_token(headers.get("Authorization")) or params.pop("token", None)
        with self._lock:
            fault = _take(self._faults, method)
            delay = _take(self._delays, method) or 0.0
            if fault is not None:
                reply = fault.api_reply()
            elif parse_error is not None:
                reply = _json_reply(200, {"ok": False, "error": parse_error})
            else:
                reply = _json_reply(200, self._run_method(method, token, params))
            self._calls.append(Call(method, copy.deepcopy(params), token, reply.status, reply.error))
        _log.debug("%s -> %s %s", method, reply.status, reply.error or "ok")
        return reply, delay

    def _run_method(self, method: str, token: str | None, params: dict[str, Any]) -> dict[str, Any]:
        handlers = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "conversations.list": self._list_channels,
            "usergroups.users.list": self._usergroup_users,
        }
        try:
            handler = handlers.get(method)
            if handler is None:
                raise _SlackError("unknown_method")
            if not token:
                raise _SlackError("not_authed")
            if token not in self._valid_tokens:
                raise _SlackError("invalid_auth")
            return {"ok": True, **handler(params)}
        except _SlackError as exc:
            return {"ok": False, "error": exc.error}

    def _auth_test(self, _params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://sandbox.slack.com/",
            "team": "Sandbox",
            "user": "release-coordinator",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
        }

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(params.get("channel"))
        text = _optional_str(params.get("text"))
        blocks = _parse_blocks(params.get("blocks"))
        if not text and not blocks and not params.get("attachments"):
            raise _SlackError("no_text")
        thread_ts = _optional_str(params.get("thread_ts"))
        if thread_ts:
            parent = self._by_ts.get((channel, thread_ts))
            if parent is None:
                raise _SlackError("thread_not_found")
            # A reply to a reply lands in the root's thread, as in Slack.
            thread_ts = parent.thread_ts or parent.ts
        metadata = _parse_metadata(params.get("metadata"))
        micros = max(time.time_ns() // 1000, self._last_ts_micros + _TS_STEP_MICROS)
        self._last_ts_micros = micros
        ts = f"{micros // 1_000_000}.{micros % 1_000_000:06d}"
        message = Message(
            channel, ts, text, blocks, thread_ts or None, options=_options(params), metadata=metadata
        )
        self._messages.append(message)
        self._by_ts[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": _message_json(message)}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not isinstance(channel, str) or channel not in self._channel_ids.values():
            raise _SlackError("channel_not_found")
        message = self._by_ts.get((channel, str(params.get("ts"))))
        if message is None:
            raise _SlackError("message_not_found")
        if not any(params.get(name) is not None for name in ("text", "blocks", "attachments")):
            raise _SlackError("no_text")
        new_blocks = _parse_blocks(params.get("blocks"))
        message.edits.append(MessageVersion(message.text, copy.deepcopy(message.blocks)))
        if params.get("text") is not None:
            message.text = _optional_str(params["text"])
        if params.get("blocks") is not None:
            message.blocks = new_blocks
        message.options.update(_options(params))
        return {
            "channel": channel,
            "ts": message.ts,
            "text": message.text or "",
            "message": _message_json(message),
        }

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_by_id(params.get("channel"))
        roots = [m for m in self._messages if m.channel == channel and m.thread_ts is None]
        in_range = _in_time_range(roots, params)
        in_range.reverse()  # newest first
        return self._page_of_messages(in_range, params, _HISTORY_LIMITS)

    def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_by_id(params.get("channel"))
        parent = self._by_ts.get((channel, str(params.get("ts"))))
        if parent is None or parent.thread_ts is not None:
            raise _SlackError("thread_not_found")
        thread = [parent, *(m for m in self._messages if m.thread_ts == parent.ts)]
        return self._page_of_messages(_in_time_range(thread, params), params, _REPLIES_LIMITS)

    def _list_channels(self, params: dict[str, Any]) -> dict[str, Any]:
        channels = [
            {"id": channel_id, "name": name, "is_channel": True, "is_private": False, "is_archived": False}
            for name, channel_id in sorted(self._channel_ids.items())
        ]
        page, cursor = _page(channels, params, _LIST_LIMITS)
        return {"channels": page, "response_metadata": {"next_cursor": cursor}}

    def _usergroup_users(self, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("usergroup")
        if not group:
            raise _SlackError("invalid_arguments")
        users = self._usergroups.get(str(group))
        if users is None:
            raise _SlackError("no_such_subteam")
        return {"users": list(users)}

    def _response_post(self, action: str, body: bytes) -> _Reply:
        """A post to a click's response_url: JSON with ``text`` (and ``response_type``)."""
        try:
            payload = json.loads(body)
        except ValueError:
            return _text_reply(400, "invalid_payload")
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            return _text_reply(400, "no_text")
        with self._lock:
            self._responses.append(ResponsePost(action, payload))
        return _json_reply(200, {"ok": True})

    def _page_of_messages(
        self, messages: list[Message], params: dict[str, Any], limits: tuple[int, int]
    ) -> dict[str, Any]:
        page, cursor = _page(messages, params, limits)
        with_metadata = _flag(params.get("include_all_metadata"))
        return {
            "messages": [self._listed_json(m, with_metadata) for m in page],
            "has_more": bool(cursor),
            "response_metadata": {"next_cursor": cursor},
        }

    def _listed_json(self, message: Message, with_metadata: bool) -> dict[str, Any]:
        result = _message_json(message)
        if message.thread_ts is None:
            replies = [
                m for m in self._messages if m.thread_ts == message.ts and m.channel == message.channel
            ]
            if replies:
                result.update(thread_ts=message.ts, reply_count=len(replies), latest_reply=replies[-1].ts)
        if with_metadata and message.metadata is not None:
            result["metadata"] = copy.deepcopy(message.metadata)
        return result

    def _channel_by_id(self, channel: object) -> str:
        if not isinstance(channel, str) or channel not in self._channel_ids.values():
            raise _SlackError("channel_not_found")
        return channel

    def _resolve_channel(self, channel: object) -> str:
        if isinstance(channel, str):
            if channel in self._channel_ids.values():
                return channel
            channel_id = self._channel_ids.get(channel.lstrip("#"))
            if channel_id is not None:
                return channel_id
        raise _SlackError("channel_not_found")

    def _webhook_call(self, name: str, body: bytes) -> tuple[_Reply, float]:
        payload: dict[str, Any] = {}
        with self._lock:
            if name not in self._webhooks:
                reply, delay = _text_reply(404, "no_service"), 0.0
            else:
                fault = _take(self._faults, name)
                delay = _take(self._delays, name) or 0.0
                if fault is not None:
                    reply = fault.webhook_reply()
                else:
                    reply, payload = self._store_webhook_post(name, body)
            self._calls.append(Call("webhook", payload, None, reply.status, reply.error, webhook=name))
        _log.debug("webhook %s -> %s %s", name, reply.status, reply.error or "ok")
        return reply, delay

    def _store_webhook_post(self, name: str, body: bytes) -> tuple[_Reply, dict[str, Any]]:
        try:
            payload = json.loads(body)
        except ValueError:
            return _text_reply(400, "invalid_payload"), {}
        if not isinstance(payload, dict):
            return _text_reply(400, "invalid_payload"), {}
        try:
            blocks = _parse_blocks(payload.get("blocks"))
        except _SlackError:
            return _text_reply(400, "invalid_blocks"), payload
        text = _optional_str(payload.get("text"))
        if not text and not blocks and not payload.get("attachments"):
            return _text_reply(400, "no_text"), payload
        self._webhooks[name].append(WebhookMessage(name, text, blocks, copy.deepcopy(payload)))
        return _text_reply(200, "ok"), payload


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close (the stop event cuts delays short), so nothing outlives stop().
    daemon_threads = False
    # Room for a burst of concurrent clients without SYN retries.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], app: SlackApi) -> None:
        super().__init__(address, _Handler)
        self.app = app

    def handle_error(self, request: object, client_address: object) -> None:  # noqa: ARG002 - socketserver API
        _log.warning("Slack API look-alike: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # A client that connects and sends nothing must not keep stop() waiting.
    timeout = 5

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.app._handle(url.path, url.query, self.headers, body)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # Expected after delay_next: the client has given up waiting.
            _log.debug("client left before the answer to %s", url.path)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


def _button(message: Message, action_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The actions block and button ``action_id`` of the message: a person can press only a
    button the message shows."""
    for block in message.blocks or []:
        if block.get("type") != "actions":
            continue
        for element in block.get("elements") or []:
            if (
                isinstance(element, dict)
                and element.get("type") == "button"
                and element.get("action_id") == action_id
            ):
                return block, element
    raise LookupError(f"message {message.ts} shows no button {action_id!r}")


def _json_reply(status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None) -> _Reply:
    error = None if payload.get("ok") else str(payload.get("error"))
    body = json.dumps(payload).encode()
    return _Reply(status, body, "application/json; charset=utf-8", error, headers or {})


def _text_reply(status: int, text: str, headers: Mapping[str, str] | None = None) -> _Reply:
    error = None if status == 200 else text
    return _Reply(status, text.encode(), "text/plain; charset=utf-8", error, headers or {})


def _take(queues: dict[str, deque[_T]], key: str) -> _T | None:
    queue = queues.get(key)
    return queue.popleft() if queue else None


def _parse_params(content_type: str, body: bytes, query: str) -> dict[str, Any]:
    params: dict[str, Any] = {key: values[-1] for key, values in parse_qs(query).items()}
    if not body:
        return params
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        try:
            parsed = json.loads(body)
        except ValueError:
            raise _SlackError("invalid_json") from None
        if not isinstance(parsed, dict):
            raise _SlackError("invalid_json")
        params.update(parsed)
    elif media_type == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode(), keep_blank_values=True)
        params.update({key: values[-1] for key, values in form.items()})
    else:
        raise _SlackError("invalid_post_type")
    return params


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _parse_blocks(value: object) -> list[dict[str, Any]] | None:
    """Blocks arrive as a list in a JSON body and as a JSON string in a form body."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _SlackError("invalid_blocks_format") from None
    if not isinstance(value, list) or not all(isinstance(block, dict) for block in value):
        raise _SlackError("invalid_blocks_format")
    return value or None


def _parse_metadata(value: object) -> dict[str, Any] | None:
    """``metadata`` arrives as an object in a JSON body and as a JSON string in a form body; it
    needs a string ``event_type`` and an object ``event_payload``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _SlackError("invalid_metadata_format") from None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("event_type"), str)
        or not isinstance(value.get("event_payload"), dict)
    ):
        raise _SlackError("invalid_metadata_format")
    return {"event_type": value["event_type"], "event_payload": value["event_payload"]}


def _flag(value: object) -> bool:
    """Slack's boolean arguments: slack_sdk sends "1"/"0"; "true"/"false" work too."""
    return value is True or str(value).lower() in ("1", "true")


def _in_time_range(messages: list[Message], params: Mapping[str, Any]) -> list[Message]:
    """Messages between ``oldest`` and ``latest``, each bound excluded unless ``inclusive``."""
    try:
        oldest = float(params["oldest"]) if params.get("oldest") not in (None, "") else None
        latest = float(params["latest"]) if params.get("latest") not in (None, "") else None
    except ValueError:
        raise _SlackError("invalid_ts_oldest") from None
    inclusive = _flag(params.get("inclusive"))

    def inside(message: Message) -> bool:
        ts = float(message.ts)
        after = oldest is None or ts > oldest or (inclusive and ts == oldest)
        before = latest is None or ts < latest or (inclusive and ts == latest)
        return after and before

    return [message for message in messages if inside(message)]


def _page(items: list[_T], params: Mapping[str, Any], limits: tuple[int, int]) -> tuple[list[_T], str]:
    """One page from the cursor on, and the next page's cursor ("" when this is the last)."""
    default, largest = limits
    try:
        limit = int(params.get("limit") or default)
        start = (
            int(base64.b64decode(params["cursor"]).decode().removeprefix("next:"))
            if params.get("cursor")
            else 0
        )
    except ValueError:
        raise _SlackError("invalid_cursor") from None
    limit = max(1, min(limit, largest))
    end = start + limit
    next_cursor = base64.b64encode(f"next:{end}".encode()).decode() if end < len(items) else ""
    return items[start:end], next_cursor


def _options(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key not in _CONTENT_PARAMS}


def _message_json(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "team": TEAM_ID,
        "text": message.text or "",
        "ts": message.ts,
    }
    if message.blocks:
        result["blocks"] = message.blocks
    if message.thread_ts:
        result["thread_ts"] = message.thread_ts
    if message.edits:
        result["edited"] = {"user": BOT_USER_ID, "ts": message.ts}
    return result


def _display_text(message: Message) -> str:
    text = message.text or "\n".join(_block_texts(message.blocks or []))
    # Slack shows the three mrkdwn escapes as the characters they stand for.
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _block_texts(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        text = node.get("text")
        if isinstance(text, str) and node.get("type") in _TEXT_OBJECT_TYPES:
            yield text
        for value in node.values():
            yield from _block_texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _block_texts(item)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with SlackApi(port=args.port) as server, contextlib.suppress(KeyboardInterrupt):
        print(
            f"Slack API look-alike: api_url={server.api_url} webhook_url={server.webhook_url()}", flush=True
        )
        threading.Event().wait()


if __name__ == "__main__":
    main()

"""The Slack look-alike driven by the real slack_sdk clients, as the product and the sandbox use it."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.webhook import WebhookClient

from sandbox.slack_api import SlackApi

TS_PATTERN = re.compile(r"^\d{10}\.\d{6}$")
# slack_sdk warns when a message has no top-level text; some tests leave it out on purpose.
no_text_warning = pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")


@pytest.fixture
def server() -> Iterator[SlackApi]:
    with SlackApi() as api:
        yield api


@pytest.fixture
def client(server: SlackApi) -> WebClient:
    # No retry handlers: each test sees exactly what the server answered.
    return WebClient(token="xoxb-test", base_url=server.api_url, retry_handlers=[])


def slack_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as raised:
        call()
    return raised.value


def test_api_url_is_what_webclient_expects(server: SlackApi) -> None:
    assert server.api_url.startswith("http://127.0.0.1:")
    assert server.api_url.endswith("/api/")


def test_release_thread_lifecycle(server: SlackApi, client: WebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*v1.2.3* to prod: started"}}]
    root = client.chat_postMessage(channel="#deploys", text="v1.2.3 started", blocks=blocks, mrkdwn=True)
    channel, ts = root["channel"], root["ts"]
    assert channel == "C0DEPLOYS"
    assert TS_PATTERN.match(ts)
    assert root["message"]["text"] == "v1.2.3 started"

    client.chat_update(channel=channel, ts=ts, text="v1.2.3 deploying")
    updated = client.chat_update(channel=channel, ts=ts, text="v1.2.3 succeeded")
    assert updated["ts"] == ts
    assert updated["message"]["text"] == "v1.2.3 succeeded"

    first = client.chat_postMessage(channel=channel, thread_ts=ts, text="canary healthy")
    second = client.chat_postMessage(channel=channel, thread_ts=ts, text="traffic shifted")
    assert float(first["ts"]) < float(second["ts"])

    [root_message, *replies] = server.messages("#deploys")
    assert root_message.ts == ts
    assert root_message.thread_ts is None
    assert root_message.text == "v1.2.3 succeeded"
    # blocks were not named in the updates, so they are kept
    assert root_message.blocks == blocks
    assert [edit.text for edit in root_message.edits] == ["v1.2.3 started", "v1.2.3 deploying"]
    assert root_message.options["mrkdwn"] is True
    assert [(r.text, r.thread_ts) for r in replies] == [("canary healthy", ts), ("traffic shifted", ts)]
    assert [r.text for r in server.thread(channel, ts)] == ["canary healthy", "traffic shifted"]
    assert [call.method for call in server.calls()] == ["chat.postMessage"] + ["chat.update"] * 2 + [
        "chat.postMessage"
    ] * 2


def test_reply_to_a_reply_joins_the_root_thread(server: SlackApi, client: WebClient) -> None:
    root = client.chat_postMessage(channel="deploys", text="root")
    reply = client.chat_postMessage(channel="C0DEPLOYS", thread_ts=root["ts"], text="reply")
    client.chat_postMessage(channel="C0DEPLOYS", thread_ts=reply["ts"], text="reply to reply")

    assert [m.text for m in server.thread("C0DEPLOYS", root["ts"])] == ["reply", "reply to reply"]


def test_reply_to_unknown_thread_is_refused(client: WebClient) -> None:
    error = slack_error(lambda: client.chat_postMessage(channel="#deploys", thread_ts="1.000001", text="x"))
    assert error.response["error"] == "thread_not_found"


def test_inspection_copies_do_not_change_the_server(server: SlackApi, client: WebClient) -> None:
    client.chat_postMessage(channel="#deploys", text="original")
    server.messages()[0].text = "changed"
    assert server.messages()[0].text == "original"


def test_form_encoded_call_with_blocks_as_json_string(server: SlackApi, client: WebClient) -> None:
    blocks = '[{"type": "section", "text": {"type": "plain_text", "text": "from a form"}}]'
    response = client.api_call("chat.postMessage", params={"channel": "#deploys", "blocks": blocks})
    assert response["ok"] is True
    [message] = server.messages()
    assert message.text is None
    assert message.blocks == [{"type": "section", "text": {"type": "plain_text", "text": "from a form"}}]


def test_auth_test(client: WebClient) -> None:
    response = client.auth_test()
    assert response["ok"] is True
    assert response["bot_id"]


def test_invalid_token(server: SlackApi) -> None:
    bad = WebClient(token="xoxb-wrong", base_url=server.api_url, retry_handlers=[])
    error = slack_error(lambda: bad.chat_postMessage(channel="#deploys", text="x"))
    assert error.response.status_code == 200
    assert error.response["error"] == "invalid_auth"
    assert server.messages() == []
    assert server.calls()[0].token == "xoxb-wrong"


def test_missing_token(server: SlackApi) -> None:
    anonymous = WebClient(base_url=server.api_url, retry_handlers=[])
    error = slack_error(lambda: anonymous.chat_postMessage(channel="#deploys", text="x"))
    assert error.response["error"] == "not_authed"


def test_unknown_channel(client: WebClient) -> None:
    error = slack_error(lambda: client.chat_postMessage(channel="#nope", text="x"))
    assert error.response["error"] == "channel_not_found"


def test_update_needs_channel_id_not_name(client: WebClient) -> None:
    ts = client.chat_postMessage(channel="#deploys", text="x")["ts"]
    error = slack_error(lambda: client.chat_update(channel="#deploys", ts=ts, text="y"))
    assert error.response["error"] == "channel_not_found"


def test_update_of_unknown_message(client: WebClient) -> None:
    error = slack_error(lambda: client.chat_update(channel="C0DEPLOYS", ts="1700000000.999999", text="y"))
    assert error.response["error"] == "message_not_found"


@no_text_warning
def test_message_without_content(client: WebClient) -> None:
    error = slack_error(lambda: client.chat_postMessage(channel="#deploys", text=""))
    assert error.response["error"] == "no_text"


def test_unknown_method(client: WebClient) -> None:
    error = slack_error(lambda: client.api_call("chat.nope", json={"channel": "#deploys"}))
    assert error.response["error"] == "unknown_method"


def test_rate_limit_surfaces_with_retry_after(server: SlackApi, client: WebClient) -> None:
    server.fail_next("chat.postMessage", status=429, retry_after_s=7)

    error = slack_error(lambda: client.chat_postMessage(channel="#deploys", text="x"))
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert error.response["error"] == "ratelimited"
    assert server.messages() == []

    assert client.chat_postMessage(channel="#deploys", text="x")["ok"] is True
    assert [call.status for call in server.calls()] == [429, 200]


def test_rate_limit_retry_handler_of_slack_sdk_retries(server: SlackApi) -> None:
    retrying = WebClient(
        token="xoxb-test",
        base_url=server.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    server.fail_next("chat.postMessage", status=429, retry_after_s=0)

    assert retrying.chat_postMessage(channel="#deploys", text="x")["ok"] is True
    assert [(call.method, call.status) for call in server.calls()] == [
        ("chat.postMessage", 429),
        ("chat.postMessage", 200),
    ]
    assert len(server.messages()) == 1


def test_server_error(server: SlackApi, client: WebClient) -> None:
    server.fail_next("chat.update", status=500)
    ts = client.chat_postMessage(channel="#deploys", text="x")["ts"]

    error = slack_error(lambda: client.chat_update(channel="C0DEPLOYS", ts=ts, text="y"))
    assert error.response.status_code == 500
    assert server.messages()[0].text == "x"


def test_server_error_retry_handler_of_slack_sdk_retries(server: SlackApi) -> None:
    no_wait = FixedValueRetryIntervalCalculator(fixed_internal=0)
    retrying = WebClient(
        token="xoxb-test",
        base_url=server.api_url,
        retry_handlers=[ServerErrorRetryHandler(max_retry_count=2, interval_calculator=no_wait)],
    )
    server.fail_next("chat.postMessage", status=503, times=2)

    assert retrying.chat_postMessage(channel="#deploys", text="x")["ok"] is True
    assert [call.status for call in server.calls()] == [503, 503, 200]


def test_injected_slack_error_is_http_200(server: SlackApi, client: WebClient) -> None:
    server.fail_next("chat.postMessage", error="channel_not_found", times=2)

    for _ in range(2):
        error = slack_error(lambda: client.chat_postMessage(channel="#deploys", text="x"))
        assert error.response.status_code == 200
        assert error.response["error"] == "channel_not_found"
    assert client.chat_postMessage(channel="#deploys", text="x")["ok"] is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"times": 0}, "times"),
        ({"status": 200}, "status"),
        ({"retry_after_s": -1}, "retry_after_s"),
    ],
)
def test_fail_next_rejects_nonsense(server: SlackApi, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server.fail_next("chat.postMessage", **kwargs)


def test_delayed_answer_times_out_but_the_post_took_effect(server: SlackApi) -> None:
    impatient = WebClient(token="xoxb-test", base_url=server.api_url, timeout=1, retry_handlers=[])
    server.delay_next("chat.postMessage", 5)

    with pytest.raises(TimeoutError):
        impatient.chat_postMessage(channel="#deploys", text="x")
    # The reason a blind retry after a timeout double-posts.
    assert [m.text for m in server.messages()] == ["x"]
    assert impatient.chat_postMessage(channel="#deploys", text="y")["ok"] is True


def test_webhook_post_is_stored(server: SlackApi) -> None:
    webhook = WebhookClient(server.webhook_url("releases"))
    response = webhook.send(text="v1.2.3 succeeded", blocks=[{"type": "divider"}])

    assert (response.status_code, response.body) == (200, "ok")
    [message] = server.webhook_messages("releases")
    assert message.text == "v1.2.3 succeeded"
    assert message.blocks == [{"type": "divider"}]
    assert server.messages() == []
    assert server.calls()[0].webhook == "releases"


def test_unknown_webhook(server: SlackApi) -> None:
    url = server.webhook_url("known").replace("/known", "/unknown")
    response = WebhookClient(url).send(text="x")
    assert (response.status_code, response.body) == (404, "no_service")


def test_webhook_without_text(server: SlackApi) -> None:
    response = WebhookClient(server.webhook_url()).send_dict({"username": "bot"})
    assert (response.status_code, response.body) == (400, "no_text")
    assert server.webhook_messages() == []


def test_webhook_rate_limit_and_retry_handler(server: SlackApi) -> None:
    url = server.webhook_url()
    server.fail_next("default", status=429, retry_after_s=3)
    response = WebhookClient(url).send(text="x")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"

    server.fail_next("default", status=429, retry_after_s=0)
    retrying = WebhookClient(url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    assert retrying.send(text="y").status_code == 200
    assert [m.text for m in server.webhook_messages()] == ["y"]


def test_webhook_injected_error_uses_slack_status(server: SlackApi) -> None:
    url = server.webhook_url()
    server.fail_next("default", error="channel_is_archived")
    response = WebhookClient(url).send(text="x")
    assert (response.status_code, response.body) == (410, "channel_is_archived")


@no_text_warning
def test_render_thread_text(server: SlackApi, client: WebClient) -> None:
    header = {"type": "header", "text": {"type": "plain_text", "text": "Release v1.2.3"}}
    section = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "status: started"},
        "fields": [{"type": "mrkdwn", "text": "env: prod"}],
    }
    ts = client.chat_postMessage(channel="#deploys", text="v1.2.3 started")["ts"]
    client.chat_update(channel="C0DEPLOYS", ts=ts, text="", blocks=[header, section])
    client.chat_postMessage(channel="#deploys", thread_ts=ts, text="canary &lt;1%&gt; healthy &amp; fine")
    client.chat_postMessage(channel="#deploys", thread_ts=ts, text="rolled back\nreason: 5xx")

    assert server.render_thread_text("#deploys", ts) == (
        "Release v1.2.3\n"
        "status: started\n"
        "env: prod\n"
        "  ↳ canary <1%> healthy & fine\n"
        "  ↳ rolled back\n"
        "    reason: 5xx"
    )


def test_render_thread_text_needs_a_root(server: SlackApi, client: WebClient) -> None:
    root = client.chat_postMessage(channel="#deploys", text="root")
    reply = client.chat_postMessage(channel="#deploys", thread_ts=root["ts"], text="reply")
    with pytest.raises(LookupError):
        server.render_thread_text("#deploys", reply["ts"])
    with pytest.raises(LookupError):
        server.render_thread_text("#elsewhere", root["ts"])


def test_concurrent_posts_get_distinct_increasing_ts(server: SlackApi, client: WebClient) -> None:
    start = threading.Barrier(20)

    def post(n: int) -> str:
        start.wait()
        ts: str = client.chat_postMessage(channel="#deploys", text=f"message {n}")["ts"]
        return ts

    with ThreadPoolExecutor(max_workers=20) as pool:
        stamps = list(pool.map(post, range(20)))

    assert len(set(stamps)) == 20
    stored = [m.ts for m in server.messages()]
    assert sorted(stamps) == stored
    assert stored == sorted(stored, key=float)


def test_stop_releases_the_port() -> None:
    api = SlackApi()
    with pytest.raises(RuntimeError):
        _ = api.api_url
    with api:
        port = int(api.api_url.split(":")[2].split("/")[0])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


# --- Reading back: conversations.history / conversations.replies / conversations.list, as
# documented on docs.slack.dev/reference/methods/<method> and api.slack.com/metadata/using.

MARK = {"event_type": "release_coordinator_post", "event_payload": {"release_id": "rel-1", "part": "card"}}


def test_metadata_is_returned_only_with_include_all_metadata(server: SlackApi, client: WebClient) -> None:
    root = client.chat_postMessage(channel="#deploys", text="card", metadata=MARK)
    reply = client.chat_postMessage(
        channel=root["channel"], text="reply", thread_ts=root["ts"], metadata={**MARK, "event_type": "r"}
    )

    plain = client.conversations_history(channel=root["channel"])
    assert [m["text"] for m in plain["messages"]] == ["card"]  # roots only
    assert "metadata" not in plain["messages"][0]
    listed = client.conversations_history(channel=root["channel"], include_all_metadata=True)
    assert listed["messages"][0]["metadata"] == MARK
    assert listed["messages"][0]["reply_count"] == 1
    assert listed["messages"][0]["thread_ts"] == root["ts"]

    thread = client.conversations_replies(channel=root["channel"], ts=root["ts"], include_all_metadata=True)
    assert [m["ts"] for m in thread["messages"]] == [root["ts"], reply["ts"]]  # parent first
    assert thread["messages"][1]["metadata"]["event_type"] == "r"
    assert thread["messages"][1]["thread_ts"] == root["ts"]
    bare = client.conversations_replies(channel=root["channel"], ts=root["ts"])
    assert all("metadata" not in m for m in bare["messages"])

    # slack_sdk sends both reading methods as GET with query parameters, booleans as "1".
    history_call = [c for c in server.calls() if c.method == "conversations.history"][-1]
    assert history_call.params == {"channel": root["channel"], "include_all_metadata": "1"}


def test_history_is_newest_first_and_pages_with_a_cursor(server: SlackApi, client: WebClient) -> None:
    posted = [client.chat_postMessage(channel="#deploys", text=f"m{n}")["ts"] for n in range(5)]

    first = client.conversations_history(channel="C0DEPLOYS", limit=2)
    assert [m["ts"] for m in first["messages"]] == posted[::-1][:2]
    assert first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    assert cursor
    seen = [m["ts"] for m in first["messages"]]
    while cursor:
        page = client.conversations_history(channel="C0DEPLOYS", limit=2, cursor=cursor)
        seen += [m["ts"] for m in page["messages"]]
        cursor = page["response_metadata"]["next_cursor"]
    assert seen == posted[::-1]
    assert page["has_more"] is False
    assert client.conversations_history(channel="C0DEPLOYS")["has_more"] is False  # default page: 100


def test_oldest_and_latest_bound_exclusively_unless_inclusive(client: WebClient) -> None:
    posted = [client.chat_postMessage(channel="#deploys", text=f"m{n}")["ts"] for n in range(4)]

    def history(**bounds: Any) -> list[str]:
        return [m["ts"] for m in client.conversations_history(channel="C0DEPLOYS", **bounds)["messages"]]

    assert history(oldest=posted[0], latest=posted[3]) == [posted[2], posted[1]]
    assert history(oldest=posted[0], latest=posted[3], inclusive=True) == posted[::-1]
    assert history(oldest=posted[2]) == [posted[3]]
    root = posted[0]
    replies = [
        client.chat_postMessage(channel="C0DEPLOYS", text=f"r{n}", thread_ts=root)["ts"] for n in range(3)
    ]
    thread = client.conversations_replies(channel="C0DEPLOYS", ts=root, oldest=replies[0], limit=1)
    assert [m["ts"] for m in thread["messages"]] == [replies[1]]  # oldest first, after the bound
    assert thread["has_more"] is True


def test_reading_methods_take_a_channel_id_and_an_existing_thread(client: WebClient) -> None:
    root = client.chat_postMessage(channel="#deploys", text="card")
    assert slack_error(lambda: client.conversations_history(channel="#deploys")).response["error"] == (
        "channel_not_found"
    )
    missing = slack_error(lambda: client.conversations_replies(channel=root["channel"], ts="1.000001"))
    assert missing.response["error"] == "thread_not_found"
    bad = slack_error(lambda: client.chat_postMessage(channel="#deploys", text="x", metadata={"a": 1}))
    assert bad.response["error"] == "invalid_metadata_format"


def test_conversations_list_pages_the_channels() -> None:
    channels = {"#deploys": "C0DEPLOYS", "#ops": "C0OPSXXXX", "#web": "C0WEBXXXX"}
    with SlackApi(channels=channels) as api:
        client = WebClient(token="xoxb-test", base_url=api.api_url, retry_handlers=[])
        names: dict[str, str] = {}
        cursor = None
        while True:
            page = client.conversations_list(types="public_channel,private_channel", limit=2, cursor=cursor)
            names.update({c["name"]: c["id"] for c in page["channels"]})
            cursor = page["response_metadata"]["next_cursor"]
            if not cursor:
                break
    assert names == {"deploys": "C0DEPLOYS", "ops": "C0OPSXXXX", "web": "C0WEBXXXX"}

"""The Slack look-alike's button clicks: the ``block_actions`` payload it sends has, in every field
the coordinator reads, what Slack's documented example has; the request is signed as Slack signs;
only a button the card shows can be pressed; response_url posts are kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from chalicelib.domain.slack_interactions import parse_click
from sandbox.slack_api import SlackApi

# Slack's example block_actions payload, from
# https://api.slack.com/reference/interaction-payloads/block-actions (its "..." in ``message``
# left out).
SLACK_DOCUMENTED_PAYLOAD: dict[str, Any] = {
    "type": "block_actions",
    "team": {"id": "T9TK3CUKW", "domain": "example"},
    "user": {"id": "UA8RXUSPL", "username": "jtorrance", "team_id": "T9TK3CUKW"},
    "api_app_id": "AABA1ABCD",
    "token": "9s8d9as89d8as9d8as989",
    "container": {
        "type": "message_attachment",
        "message_ts": "1548261231.000200",
        "attachment_id": 1,
        "channel_id": "CBR2V3XEX",
        "is_ephemeral": False,
        "is_app_unfurl": False,
    },
    "trigger_id": "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
    "channel": {"id": "CBR2V3XEX", "name": "review-updates"},
    "message": {
        "bot_id": "BAH5CA16Z",
        "type": "message",
        "text": "This content can't be displayed.",
        "user": "UAJ2RU415",
        "ts": "1548261231.000200",
    },
    "response_url": "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209",
    "actions": [
        {
            "action_id": "WaXA",
            "block_id": "=qXel",
            "text": {"type": "plain_text", "text": "View", "emoji": True},
            "value": "click_me_123",
            "type": "button",
            "action_ts": "1548426417.840180",
        }
    ],
}
# Every field chalicelib/domain/slack_interactions.py parse_click reads, as a path.
FIELDS_READ = [
    ("type",),
    ("actions", 0, "action_id"),
    ("actions", 0, "value"),
    ("user", "id"),
    ("user", "username"),
    ("response_url",),
    ("channel", "id"),
    ("container", "channel_id"),
    ("container", "message_ts"),
]
SECRET = "look-alike-signing-secret"


def at(payload: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        payload = payload[step]
    return payload


@pytest.fixture
def slack() -> Iterator[SlackApi]:
    with SlackApi(
        signing_secret=SECRET,
        interactions_url="http://app.invalid/slack/interactions",
        usergroups={"S0OPS": ["U0A"]},
    ) as api:
        yield api


def card(slack: SlackApi) -> str:
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "release rel-1"}},
        {
            "type": "actions",
            "block_id": "release_actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "cancel",
                    "text": {"type": "plain_text", "text": "Cancel"},
                    "value": "rel-1",
                    "style": "danger",
                }
            ],
        },
    ]
    posted = WebClient(token="xoxb-test", base_url=slack.api_url).chat_postMessage(
        channel="#deploys", text="card", blocks=blocks
    )
    return str(posted["ts"])


def test_the_payload_has_what_slack_documents_in_every_field_read(slack: SlackApi) -> None:
    payload = slack.press("#deploys", card(slack), "cancel", "U0ALICE", "alice").payload

    for path in FIELDS_READ:
        documented, sent = at(SLACK_DOCUMENTED_PAYLOAD, path), at(payload, path)
        assert type(sent) is type(documented), path
    # Beyond the fields read, the same top-level fields and the same fields of the clicked button.
    assert set(SLACK_DOCUMENTED_PAYLOAD) <= set(payload)
    assert set(SLACK_DOCUMENTED_PAYLOAD["actions"][0]) <= set(payload["actions"][0])
    assert payload["actions"][0]["value"] == "rel-1"
    assert payload["container"]["message_ts"] == payload["message"]["ts"]
    # Both read the same way (the documented example's button is no action of ours).
    documented = {
        **SLACK_DOCUMENTED_PAYLOAD,
        "actions": [{**SLACK_DOCUMENTED_PAYLOAD["actions"][0], "action_id": "cancel", "value": "rel-1"}],
    }
    ours, theirs = (parse_click(f"payload={json.dumps(p)}", "r") for p in (payload, documented))
    assert (ours.action, ours.release_id) == (theirs.action, theirs.release_id)


def test_the_request_is_signed_as_slack_signs(slack: SlackApi) -> None:
    request = slack.press("#deploys", card(slack), "cancel", "U0ALICE", "alice")

    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.body.startswith(b"payload=")
    assert SignatureVerifier(SECRET).is_valid_request(request.body, request.headers)
    assert not SignatureVerifier("another-secret").is_valid_request(request.body, request.headers)


def test_only_a_button_the_card_shows_can_be_pressed(slack: SlackApi) -> None:
    ts = card(slack)
    with pytest.raises(LookupError, match="no button 'approve'"):
        slack.press("#deploys", ts, "approve", "U0ALICE", "alice")


def test_response_url_posts_are_kept_and_user_groups_listed(slack: SlackApi) -> None:
    payload = slack.press("#deploys", card(slack), "cancel", "U0ALICE", "alice").payload

    answer = WebhookClient(payload["response_url"]).send(text="done", response_type="ephemeral")

    assert answer.status_code == 200
    (kept,) = slack.responses()
    assert (kept.text, kept.payload["response_type"]) == ("done", "ephemeral")
    client = WebClient(token="xoxb-test", base_url=slack.api_url)
    assert client.usergroups_users_list(usergroup="S0OPS")["users"] == ["U0A"]
    with pytest.raises(SlackApiError, match="no_such_subteam"):
        client.usergroups_users_list(usergroup="S0NONE")

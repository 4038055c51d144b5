"""The release card's buttons (checked against slack_sdk's Block Kit models, so a shape Slack
would refuse fails here) and the reading of Slack's ``block_actions`` payload."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject

from chalicelib.domain.api_requests import Malformed
from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.notification_content import build_notice, card_blocks
from chalicelib.domain.notify_routes import Notification
from chalicelib.domain.release import EventType, HistoryEvent, Release, ReleaseState, Revision, Trigger
from chalicelib.domain.slack_interactions import (
    ActionRequest,
    SlackAction,
    actions_block,
    actions_for,
    parse_click,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
EXPECTED_BUTTONS = {
    ReleaseState.RECEIVED: [],
    ReleaseState.AWAITING_APPROVAL: ["approve", "reject", "cancel"],
    ReleaseState.QUEUED: ["cancel"],
    ReleaseState.DEPLOYING: ["cancel"],
    ReleaseState.VERIFYING: ["cancel"],
    ReleaseState.SUCCEEDED: ["roll_back", "redeploy"],
    ReleaseState.FAILED: ["roll_back", "redeploy"],
    ReleaseState.STOPPED: ["redeploy"],
    ReleaseState.SUPERSEDED: ["redeploy"],
}


def release(state: ReleaseState, release_id: str = "rel-0123456789abcdef0123") -> Release:
    return Release(
        id=release_id,
        pipeline="api-prod",
        application="api",
        deployment_group="api-prod",
        revision=Revision("acme-artifacts", "api/prod/app-1.zip", "v1", "etag"),
        trigger=Trigger.UPLOAD,
        state=state,
        reason="",
        created_at=NOW,
        updated_at=NOW,
    )


def test_every_state_offers_its_buttons() -> None:
    assert set(EXPECTED_BUTTONS) == set(ReleaseState)
    for state, expected in EXPECTED_BUTTONS.items():
        assert [action.value for action in actions_for(state)] == expected, state


@pytest.mark.parametrize("state", [state for state, buttons in EXPECTED_BUTTONS.items() if buttons])
def test_the_actions_block_is_one_slack_accepts(state: ReleaseState) -> None:
    """slack_sdk's models parse the block back into ActionsBlock, ButtonElement and ConfirmObject,
    and ``to_dict`` validates every limit (text lengths, styles, values): a difference or an error
    is a shape Slack would refuse or change."""
    block = actions_block(release(state, "rel-" + "x" * 156))  # the longest release id
    assert block is not None
    parsed = Block.parse(block)
    assert isinstance(parsed, ActionsBlock)
    buttons = [element for element in parsed.elements if isinstance(element, ButtonElement)]
    assert len(buttons) == len(parsed.elements)
    assert all(isinstance(button.confirm, ConfirmObject) for button in buttons)
    assert parsed.to_dict() == block
    for element in block["elements"]:
        assert element["value"] == "rel-" + "x" * 156
        assert SlackAction(element["action_id"]) in actions_for(state)


def test_the_card_shows_buttons_only_when_asked() -> None:
    succeeded = release(ReleaseState.SUCCEEDED)
    event = HistoryEvent(1, 0, NOW, EventType.EXECUTION_SUCCEEDED, ReleaseState.SUCCEEDED, {})
    notice = build_notice(succeeded, event, Notification.SUCCEEDED)

    plain = card_blocks(notice)
    with_actions = card_blocks(notice, with_actions=True)

    assert [block["type"] for block in plain] == ["header", "section", "context"]
    assert [block["type"] for block in with_actions] == ["header", "section", "actions", "context"]
    assert [e["action_id"] for e in with_actions[2]["elements"]] == ["roll_back", "redeploy"]


def click_body(payload: Any) -> str:
    return urlencode({"payload": json.dumps(payload)})


def test_a_click_is_read_into_the_queued_request() -> None:
    payload = {
        "type": "block_actions",
        "user": {"id": "U0ALICE", "username": "alice", "team_id": "T0"},
        "container": {"type": "message", "message_ts": "1.000100", "channel_id": "C0DEPLOYS"},
        "channel": {"id": "C0DEPLOYS", "name": "deploys"},
        "response_url": "https://hooks.slack.com/actions/T0/1/abc",
        "actions": [
            {"type": "button", "action_id": "cancel", "value": "rel-1", "block_id": "release_actions"}
        ],
    }

    request = parse_click(click_body(payload), "f" * 64)

    assert request == ActionRequest(
        action=SlackAction.CANCEL,
        release_id="rel-1",
        user_id="U0ALICE",
        user_name="alice",
        response_url="https://hooks.slack.com/actions/T0/1/abc",
        request_id="f" * 64,
        channel="C0DEPLOYS",
        message_ts="1.000100",
    )
    assert request.new_release_id == "slack-" + "f" * 20
    assert ActionRequest.from_message(json.loads(json.dumps(request.to_message()))) == request
    with pytest.raises(Malformed, match="unknown action_id"):
        parse_click(click_body({**payload, "actions": [{"action_id": "deploy", "value": "rel-1"}]}), "f")
    with pytest.raises(Malformed, match=r"user\.id"):
        parse_click(click_body({**payload, "user": {"username": "alice"}}), "f")
    with pytest.raises(MalformedEvent, match="without release_id"):
        ActionRequest.from_message({**request.to_message(), "release_id": None})

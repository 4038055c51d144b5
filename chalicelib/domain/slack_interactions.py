"""Buttons on a release's Slack card and the clicks Slack sends back for them.

The card's ``actions`` block offers what the release's state allows (:func:`actions_block`); a
click reaches ``POST /slack/interactions`` as Slack's ``block_actions`` payload (a form field
``payload`` holding JSON, https://api.slack.com/reference/interaction-payloads/block-actions),
which :func:`parse_click` reads into an :class:`ActionRequest`: the queue message the worker acts
on. Everything here is pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs

from chalicelib.domain.api_requests import RELEASE_ID, ConflictingState, Malformed, NotFound, Refused
from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.release import Release, ReleaseState

# The block holding the buttons, so a click names where it came from.
ACTIONS_BLOCK_ID = "release_actions"
# Slack's limits: a button's text 75 characters, a confirm dialog's title 100, its text 300, its
# buttons 30; a button's value 2,000 (Block Kit reference: button element, confirmation dialog).
_CONFIRM_TEXT_LIMIT = 300
# The longest string read from a payload: a button's value is at most 2,000 characters.
_MAX_FIELD = 2000


class SlackAction(StrEnum):
    """A button's ``action_id``: what the click asks for."""

    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"
    ROLL_BACK = "roll_back"
    REDEPLOY = "redeploy"

    @property
    def verb(self) -> str:
        """As in "you may not <verb> releases of api-prod"."""
        return "roll back" if self is SlackAction.ROLL_BACK else self.value


@dataclass(frozen=True)
class _Button:
    label: str
    style: str | None  # Block Kit's "primary" (green), "danger" (red), or the default
    confirm_title: str
    confirm_text: str  # "{release}" and "{pipeline}" are filled in
    confirm_button: str


_BUTTONS: Mapping[SlackAction, _Button] = {
    SlackAction.APPROVE: _Button(
        "Approve",
        "primary",
        "Approve this release?",
        "Release {release} of {pipeline} may deploy.",
        "Approve",
    ),
    SlackAction.REJECT: _Button(
        "Reject",
        "danger",
        "Reject this release?",
        "Release {release} of {pipeline} will not deploy.",
        "Reject",
    ),
    SlackAction.CANCEL: _Button(
        "Cancel",
        "danger",
        "Cancel this release?",
        "Release {release} of {pipeline} stops: a waiting release leaves the line, a deployment "
        "in progress is stopped.",
        "Cancel release",
    ),
    SlackAction.ROLL_BACK: _Button(
        "Roll back",
        "danger",
        "Roll back the pipeline?",
        "{pipeline} goes back to the release that succeeded before {release}, ahead of every "
        "waiting release.",
        "Roll back",
    ),
    SlackAction.REDEPLOY: _Button(
        "Redeploy",
        None,
        "Redeploy this release?",
        "The bundle of release {release} deploys again to {pipeline}, as a new release.",
        "Redeploy",
    ),
}
# What a release in each state offers; terminal states add Redeploy (see actions_for).
_BY_STATE: Mapping[ReleaseState, tuple[SlackAction, ...]] = {
    ReleaseState.AWAITING_APPROVAL: (SlackAction.APPROVE, SlackAction.REJECT, SlackAction.CANCEL),
    ReleaseState.QUEUED: (SlackAction.CANCEL,),
    ReleaseState.DEPLOYING: (SlackAction.CANCEL,),
    ReleaseState.VERIFYING: (SlackAction.CANCEL,),
    ReleaseState.SUCCEEDED: (SlackAction.ROLL_BACK,),
    ReleaseState.FAILED: (SlackAction.ROLL_BACK,),
}


def actions_for(state: ReleaseState) -> tuple[SlackAction, ...]:
    """The buttons a release in ``state`` shows, in the order they appear."""
    offered = _BY_STATE.get(state, ())
    return (*offered, SlackAction.REDEPLOY) if state.is_terminal else offered


def actions_block(release: Release) -> dict[str, Any] | None:
    """The card's ``actions`` block for the release as it is now; None when it offers nothing.
    Each button confirms first (a misclick on a phone must not stop a deployment)."""
    actions = actions_for(release.state)
    if not actions:
        return None
    elements = []
    for action in actions:
        button = _BUTTONS[action]
        text = button.confirm_text.format(release=release.id, pipeline=release.pipeline)
        confirm: dict[str, Any] = {
            "title": {"type": "plain_text", "text": button.confirm_title},
            "text": {"type": "plain_text", "text": text[:_CONFIRM_TEXT_LIMIT]},
            "confirm": {"type": "plain_text", "text": button.confirm_button},
            "deny": {"type": "plain_text", "text": "Keep it"},
        }
        element: dict[str, Any] = {
            "type": "button",
            "action_id": action.value,
            "text": {"type": "plain_text", "text": button.label},
            "value": release.id,
            "confirm": confirm,
        }
        if button.style is not None:
            element["style"] = button.style
            confirm["style"] = button.style
        elements.append(element)
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": elements}


class BadSignature(Refused):
    """The request is not signed by Slack with the app's signing secret, or not within five
    minutes (HTTP 401): nothing is done."""


class SlackNotConfigured(NotFound):
    """The pipelines file has no ``[slack]`` app: no request can be verified (HTTP 404)."""


class SlackActionsUnavailable(RuntimeError):
    """The deployment cannot take clicks now: the signing secret cannot be read, or the actions
    queue is not configured (HTTP 503, like any other failure a retry or a fix may cure)."""


class Replayed(ConflictingState):
    """This signed request was received before (HTTP 409): a replay has no effect."""


@dataclass(frozen=True)
class ActionRequest:
    """A verified click, as the route queues it for the worker."""

    action: SlackAction
    release_id: str
    user_id: str
    user_name: str | None
    # Where the answer to the clicking user goes (ephemeral: only they see it).
    response_url: str
    # The digest of the request's signature and timestamp (the replay guard's key), so a release
    # the click creates has an id that a redelivered message finds again.
    request_id: str
    channel: str | None = None
    message_ts: str | None = None

    @property
    def new_release_id(self) -> str:
        return f"slack-{self.request_id[:20]}"

    def to_message(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "release_id": self.release_id,
            "user_id": self.user_id,
            "user_name": self.user_name,
            "response_url": self.response_url,
            "request_id": self.request_id,
            "channel": self.channel,
            "message_ts": self.message_ts,
        }

    @classmethod
    def from_message(cls, message: Any) -> ActionRequest:
        """Raises ``MalformedEvent`` for anything the route would not have queued."""
        if not isinstance(message, dict):
            raise MalformedEvent(
                f"a Slack action message must be a JSON object, got {type(message).__name__}"
            )
        try:
            action = SlackAction(str(message.get("action")))
        except ValueError:
            raise MalformedEvent(f"unknown Slack action {str(message.get('action'))[:64]!r}") from None
        fields = {}
        for name in ("release_id", "user_id", "response_url", "request_id"):
            value = message.get(name)
            if not isinstance(value, str) or not value:
                raise MalformedEvent(f"Slack action message without {name}")
            fields[name] = value
        return cls(
            action=action,
            user_name=_optional(message.get("user_name")),
            channel=_optional(message.get("channel")),
            message_ts=_optional(message.get("message_ts")),
            **fields,
        )


def _optional(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_click(body: str, request_id: str) -> ActionRequest:
    """The first button click of a ``block_actions`` payload (Slack sends one action per click).
    Raises ``Malformed`` (HTTP 400) for anything else: another payload type, an action no card
    offers, a field missing or not a string."""
    form = parse_qs(body, keep_blank_values=True)
    raw = form.get("payload")
    if not raw or len(raw) != 1:
        raise Malformed("the form body must hold exactly one 'payload' field")
    try:
        payload = json.loads(raw[0])
    except ValueError:
        raise Malformed("field 'payload' is not JSON") from None
    if not isinstance(payload, dict):
        raise Malformed("field 'payload' must be a JSON object")
    if payload.get("type") != "block_actions":
        raise Malformed(f"payload type {str(payload.get('type'))[:64]!r} is not handled; only block_actions")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise Malformed("payload 'actions' must be a list holding the clicked button")
    clicked = actions[0]
    try:
        action = SlackAction(str(clicked.get("action_id")))
    except ValueError:
        raise Malformed(f"unknown action_id {str(clicked.get('action_id'))[:64]!r}") from None
    release_id = _required(clicked, "value", "actions[0].value")
    if not RELEASE_ID.fullmatch(release_id):
        raise Malformed(f"actions[0].value is not a release id: {release_id[:64]!r}")
    user = payload.get("user")
    if not isinstance(user, dict):
        raise Malformed("payload 'user' must be an object")
    container = _table(payload, "container")
    channel = _table(payload, "channel")
    return ActionRequest(
        action=action,
        release_id=release_id,
        user_id=_required(user, "id", "user.id"),
        # Slack sends the handle as ``username`` (``name`` in older payloads).
        user_name=_optional(user.get("username")) or _optional(user.get("name")),
        response_url=_required(payload, "response_url", "response_url"),
        request_id=request_id,
        channel=_optional(channel.get("id")) or _optional(container.get("channel_id")),
        message_ts=_optional(container.get("message_ts")),
    )


def _table(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = payload.get(name)
    return value if isinstance(value, dict) else {}


def _required(table: Mapping[str, Any], name: str, where: str) -> str:
    value = table.get(name)
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
        raise Malformed(f"payload field {where} must be a non-empty string")
    return value

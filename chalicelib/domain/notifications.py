"""Which history events become notifications, and which routes of a pipeline receive them.

The history event written with each transition is the outbox: the table's stream hands every new
event to :func:`plan_messages`, and each message it returns is one delivery to one route.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.notify_routes import Notification, NotifyKind
from chalicelib.domain.pipelines import NotifyRoute, Pipeline
from chalicelib.domain.release import EventType, HistoryEvent, ReleaseState, Trigger


@dataclass(frozen=True)
class StreamedEvent:
    """A history event as the table's stream delivers it, with what routing needs of its release."""

    release_id: str
    pipeline: str
    trigger: Trigger | None
    event: HistoryEvent


def is_promotion_link(event: HistoryEvent) -> bool:
    """The event a promoted release's history gets: where it was promoted, as which release."""
    return event.type is EventType.TASK_SUCCEEDED and event.detail.get("task") == "Promotion"


def is_mixed_fleet(event: HistoryEvent) -> bool:
    """The event a release's history gets when the fleet runs mixed revisions after it ended."""
    return event.type is EventType.TASK_FAILED and event.detail.get("task") == "FleetCheck"


def notification_for(event: HistoryEvent, trigger: Trigger | None) -> Notification | None:
    """The notification a history event stands for, or None when it stands for none.

    ==========================================  ==============================================
    history event (state after it)              notification
    ==========================================  ==============================================
    StateEntered DEPLOYING                      ``started`` (a rollback release too: the card
                                                says it is a rollback)
    StateEntered QUEUED                         ``queued``
    StateEntered AWAITING_APPROVAL              ``awaiting_approval``
    StateEntered VERIFYING                      ``progress`` (Slack threads only)
    TaskSucceeded, detail task "Promotion"      ``progress`` (Slack threads only): the release
                                                was promoted to another pipeline
    TaskFailed, detail task "FleetCheck"        ``progress`` (Slack threads only): the fleet
                                                runs mixed revisions after the release ended
    ExecutionSucceeded SUCCEEDED                ``succeeded``; ``rolled_back`` for a release
                                                whose trigger is rollback or auto_rollback: the
                                                service is back on the last good revision
    ExecutionFailed FAILED, detail failure      ``verify_failed``
    "verify_failed"
    ExecutionFailed FAILED, otherwise           ``failed``
    ExecutionAborted STOPPED                    ``stopped``
    ExecutionAborted SUPERSEDED                 ``superseded``
    ==========================================  ==============================================

    Everything else (ExecutionStarted in RECEIVED, task and health-check events) is not a
    notification of its own: the diagnostics a failure needs are read from the history when the
    failure is delivered, so a thread gets one reply per transition and no chatter.
    """
    state, kind = event.state, event.type
    if is_promotion_link(event) or is_mixed_fleet(event):
        return Notification.PROGRESS
    if kind is EventType.STATE_ENTERED:
        return {
            ReleaseState.DEPLOYING: Notification.STARTED,
            ReleaseState.QUEUED: Notification.QUEUED,
            ReleaseState.AWAITING_APPROVAL: Notification.AWAITING_APPROVAL,
            ReleaseState.VERIFYING: Notification.PROGRESS,
        }.get(state)
    if kind is EventType.EXECUTION_SUCCEEDED:
        rollback = trigger is not None and trigger.is_rollback
        return Notification.ROLLED_BACK if rollback else Notification.SUCCEEDED
    if kind is EventType.EXECUTION_FAILED:
        verify_failed = event.detail.get("failure") == "verify_failed"
        return Notification.VERIFY_FAILED if verify_failed else Notification.FAILED
    if kind is EventType.EXECUTION_ABORTED:
        return {
            ReleaseState.STOPPED: Notification.STOPPED,
            ReleaseState.SUPERSEDED: Notification.SUPERSEDED,
        }.get(state)
    return None


def route_key(route: NotifyRoute) -> str:
    """A route's stable name: its kind and a digest of its settings, so reordering the pipelines
    file neither re-sends deliveries nor orphans Slack threads (changing a route's settings makes
    it a new route)."""
    settings = json.dumps(
        {"kind": route.kind, **route.settings}, sort_keys=True, separators=(",", ":"), default=str
    )
    return f"{route.kind}-{hashlib.sha256(settings.encode()).hexdigest()[:10]}"


def opens_thread(route: NotifyRoute, notification: Notification) -> bool:
    """Whether an event may post to a route where nothing was posted for the release yet."""
    return notification in route.on


def receives(route: NotifyRoute, notification: Notification) -> bool:
    """A Slack bot route receives every transition, so that a thread once opened follows the
    release to its end (its card never shows a stale state); ``on`` chooses which events open the
    thread. Every other route (it cannot edit) receives just the events in its ``on``."""
    if route.kind is NotifyKind.SLACK:
        return True
    if route.kind is NotifyKind.GITHUB:
        # Likewise a GitHub deployment follows its release to its end (it has no status for a
        # step inside a release).
        return notification is not Notification.PROGRESS
    return notification in route.on


@dataclass(frozen=True)
class NotifyMessage:
    """One delivery: a history event of a release, for one route of its pipeline."""

    release_id: str
    pipeline: str
    route: str
    notification: Notification
    event: HistoryEvent

    @property
    def delivery_id(self) -> str:
        """What makes a delivery unique: the release, the history event and the route."""
        return f"{self.release_id}#{self.event.id}#{self.route}"

    @property
    def group_id(self) -> str:
        """The FIFO group: one release on one route is delivered in order and one at a time (a
        Slack thread's root is posted before its replies), while other routes are not held up."""
        return f"{self.release_id}#{self.route}"

    @property
    def deduplication_id(self) -> str:
        # SQS allows 128 characters; a release id and a route key may be longer together.
        return hashlib.sha256(self.delivery_id.encode()).hexdigest()

    def to_message(self) -> dict[str, Any]:
        return {
            "release_id": self.release_id,
            "pipeline": self.pipeline,
            "route": self.route,
            "notification": self.notification,
            "event": self.event.to_dict(),
        }

    @classmethod
    def from_message(cls, raw: Any) -> NotifyMessage:
        if not isinstance(raw, Mapping):
            raise MalformedEvent(f"notify message must be a JSON object, got {type(raw).__name__}")
        strings = {}
        for name in ("release_id", "pipeline", "route", "notification"):
            value = raw.get(name)
            if not isinstance(value, str) or not value:
                raise MalformedEvent(f"notify message: {name} must be a non-empty string, got {value!r}")
            strings[name] = value
        notification_written = strings.pop("notification")
        try:
            notification = Notification(notification_written)
        except ValueError:
            raise MalformedEvent(
                f"notify message: notification {notification_written!r} is not one this coordinator sends"
            ) from None
        event = raw.get("event")
        if not isinstance(event, Mapping):
            raise MalformedEvent("notify message: event must be an object")
        try:
            history_event = HistoryEvent(
                id=int(event["id"]),
                previous_event_id=int(event["previous_event_id"]),
                timestamp=datetime.fromisoformat(event["timestamp"]),
                type=EventType(event["type"]),
                state=ReleaseState(event["state"]),
                detail=dict(event.get("detail") or {}),
            )
        except (KeyError, TypeError, ValueError) as problem:
            raise MalformedEvent(f"notify message: event is not a history event: {problem!r}") from None
        return cls(notification=notification, event=history_event, **strings)


def plan_messages(pipeline: Pipeline | None, streamed: StreamedEvent) -> list[NotifyMessage]:
    """The deliveries one new history event asks for: one per route that receives it."""
    if pipeline is None:
        return []
    notification = notification_for(streamed.event, streamed.trigger)
    if notification is None:
        return []
    return [
        NotifyMessage(
            release_id=streamed.release_id,
            pipeline=streamed.pipeline,
            route=route_key(route),
            notification=notification,
            event=streamed.event,
        )
        for route in pipeline.notify
        if receives(route, notification)
    ]


def find_route(pipeline: Pipeline | None, key: str) -> NotifyRoute | None:
    if pipeline is None:
        return None
    return next((route for route in pipeline.notify if route_key(route) == key), None)


@dataclass(frozen=True)
class SlackThread:
    """Where a release's thread lives on one Slack route: the root message's channel id and ts,
    and the history event whose delivery posted it (a retry of that delivery, after its card was
    stored, must neither edit the card nor reply to itself)."""

    channel: str
    ts: str
    opened_by: int | None = None  # None in threads stored before it was recorded

    def to_stored(self) -> str:
        stored = f"{self.channel}/{self.ts}"
        return stored if self.opened_by is None else f"{stored}@{self.opened_by}"

    @classmethod
    def from_stored(cls, value: str) -> SlackThread:
        where, _, opened_by = value.partition("@")
        channel, _, ts = where.partition("/")
        return cls(channel, ts, int(opened_by) if opened_by.isdigit() else None)


# Slack message metadata (``metadata.event_type``) of every post the coordinator makes.
SLACK_POST_EVENT_TYPE = "release_coordinator_post"
CARD = "card"
REPLY = "reply"
# A pipeline's weekly DORA digest (chalicelib/service/digest.py): no release's, so its mark's
# release_id names the pipeline and week instead ("<pipeline>@<iso week>").
DIGEST = "digest"


@dataclass(frozen=True)
class SlackPostMark:
    """What a Slack post says about itself in its message metadata, so that a retry whose
    earlier attempt may have posted can find that post instead of posting again: the root card
    of a release's thread on a route, or the reply reporting one of its history events."""

    release_id: str
    route: str
    part: str  # CARD | REPLY | DIGEST
    event_id: int | None = None  # replies only: the history event they report

    @classmethod
    def card(cls, message: NotifyMessage) -> SlackPostMark:
        return cls(message.release_id, message.route, CARD)

    @classmethod
    def reply(cls, message: NotifyMessage) -> SlackPostMark:
        return cls(message.release_id, message.route, REPLY, message.event.id)

    @classmethod
    def digest(cls, pipeline: str, week: str, channel: str) -> SlackPostMark:
        return cls(f"{pipeline}@{week}", channel, DIGEST)

    def to_metadata(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"release_id": self.release_id, "route": self.route, "part": self.part}
        if self.event_id is not None:
            payload["event_id"] = self.event_id
        return {"event_type": SLACK_POST_EVENT_TYPE, "event_payload": payload}

    @classmethod
    def from_metadata(cls, metadata: Any) -> SlackPostMark | None:
        """The mark of a message as Slack returns its metadata; None for anyone else's."""
        if not isinstance(metadata, Mapping) or metadata.get("event_type") != SLACK_POST_EVENT_TYPE:
            return None
        payload = metadata.get("event_payload")
        if not isinstance(payload, Mapping):
            return None
        release_id, route, part = payload.get("release_id"), payload.get("route"), payload.get("part")
        event_id = payload.get("event_id")
        if not (isinstance(release_id, str) and isinstance(route, str) and part in (CARD, REPLY, DIGEST)):
            return None
        if event_id is not None and not isinstance(event_id, int):
            return None
        return cls(release_id, route, str(part), event_id)

"""The releases table's DynamoDB stream: new history event items, as notification routing needs
them. Everything else on the stream (release, slot, link and delivery items) is not an event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.adapters.dynamodb_store import event_from_item
from chalicelib.domain.notifications import StreamedEvent
from chalicelib.domain.release import Trigger


def streamed_event(image: Mapping[str, Any]) -> StreamedEvent | None:
    """The history event in a stream record's new image (already deserialised), or None when the
    item is not a history event. Raises ``KeyError``/``ValueError`` for a malformed one."""
    if image.get("kind") != "event":
        return None
    trigger = image.get("release_trigger")
    return StreamedEvent(
        release_id=str(image["release_id"]),
        pipeline=str(image["event_pipeline"]),
        trigger=Trigger(trigger) if trigger else None,
        event=event_from_item(image),
    )

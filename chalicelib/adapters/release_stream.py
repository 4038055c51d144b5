"""The releases table's DynamoDB stream: new history event items, as notification routing needs
them, and release items, as the metrics of a release that ended need them. Everything else on the
stream (slot, link and delivery items) is neither."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.adapters.dynamodb_store import event_from_item, release_from_item
from chalicelib.domain.notifications import StreamedEvent
from chalicelib.domain.release import Release, Trigger


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


class ReleaseImages:
    """The release items of one stream batch, each as the batch last wrote it; read (parsed) only
    when asked for."""

    def __init__(self) -> None:
        self._images: dict[str, Mapping[str, Any]] = {}

    def remember(self, image: Mapping[str, Any]) -> None:
        if image.get("sk") == "META" and str(image.get("pk", "")).startswith("REL#") and "id" in image:
            self._images[str(image["id"])] = image

    def get(self, release_id: str) -> Release | None:
        image = self._images.get(release_id)
        if image is None:
            return None
        try:
            return release_from_item(image)
        except (KeyError, TypeError, ValueError):
            # Not as the store writes it: the caller reads the release from the table instead.
            return None

"""Wake-ups: when a pipeline's lane must next be looked at although no event will come for it,
and the verify queue message that looks at it then.

A lane moves when something happens to it (an upload, a CodeDeploy event, a health check, a
command), but some moves are due at a time instead: a release held by a freeze starts when the
freeze ends, a pending approval expires, and a verified release is promoted downstream once it
has soaked. ``next_wake`` says when the first is due; the use
case that commits a lane change sends a ``WakeUp`` on the verify queue for it (SQS delays a
message at most ``MAX_DELAY_S``: a wake-up further away sends itself on when it arrives early),
and the wake-up repairs the lane as the reconciler does. The reconciler stays the safety net
for a wake-up that was never sent.

The verify queue carries two kinds of message: health checks (``VerifyRequest``, whose format
predates kinds and has no ``kind``) and wake-ups (``kind = "wake"``, with a ``version`` of their
format). ``verify_queue_message`` tells them apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain.freeze import current_freeze
from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.slot import PipelineSlot
from chalicelib.domain.verification import MAX_DELAY_S, VerifyRequest

WAKE_KIND = "wake"
# The wake-up message format this coordinator writes and reads. A change that older code could
# not read gets a new version; a message of a version this code does not know is malformed.
WAKE_VERSION = 1


def next_wake(pipeline: Pipeline, slot: PipelineSlot, now: datetime) -> datetime | None:
    """When the lane must next be looked at, or None when no time will move it: the earliest
    time any of its reasons gives."""
    reasons = (
        _freeze_end(pipeline, slot, now),
        _first_approval_expiry(slot),
        _promotion_due(pipeline, slot, now),
    )
    return min((moment for moment in reasons if moment is not None), default=None)


def _promotion_due(pipeline: Pipeline, slot: PipelineSlot, now: datetime) -> datetime | None:
    """The last good release is due in a pipeline that promotes from this one when that
    pipeline's soak has passed since it succeeded (now, with no soak). Times already past are
    not a reason: the wake-up that came then promoted it, and sent itself on to the next."""
    return min((moment for moment in soak_ends(pipeline, slot.last_good_at) if moment >= now), default=None)


def soak_ends(pipeline: Pipeline, last_good_at: datetime | None) -> tuple[datetime, ...]:
    """When the last good release (verified at ``last_good_at``) has soaked for each pipeline
    that promotes from this one."""
    if last_good_at is None:
        return ()
    return tuple(last_good_at + soak for soak in pipeline.downstream_soaks)


def _first_approval_expiry(slot: PipelineSlot) -> datetime | None:
    """A release awaiting approval expires (STOPPED) at the repair after its expiry."""
    return min((mark.expires_at for mark in slot.awaiting_approval), default=None)


def _freeze_end(pipeline: Pipeline, slot: PipelineSlot, now: datetime) -> datetime | None:
    """A freeze holds a free slot from the release waiting for it: the freeze's end.

    Only a free slot: a release holding the slot hands it on when it ends, and if the freeze is
    still on then, that write frees the slot and so asks for the wake-up. And a waiting release
    at the head of a free slot is never a rollback (rollbacks are exempt from freezes: the lane
    gives a rollback a free slot at once). An alarm in ALARM can hold it too; reconcile looks
    at those (no time is known at which an alarm clears).
    """
    if slot.active is not None or not slot.waiting:
        return None
    freeze = current_freeze(pipeline.freeze, now)
    return freeze.ends_at if freeze is not None else None


@dataclass(frozen=True)
class WakeUp:
    """The verify queue's message that looks at a pipeline's lane when it is due."""

    pipeline: str
    due_at: datetime

    def delay_s(self, now: datetime) -> int:
        """The SQS delay to send this message with: the seconds until it is due (rounded up, so
        it never arrives early by a fraction), at most what SQS allows; 0 once it is due."""
        remaining = math.ceil((self.due_at - now).total_seconds())
        return max(0, min(remaining, MAX_DELAY_S))

    def to_message(self) -> dict[str, Any]:
        return {
            "kind": WAKE_KIND,
            "version": WAKE_VERSION,
            "pipeline": self.pipeline,
            "due_at": self.due_at.isoformat(),
        }

    @classmethod
    def from_message(cls, raw: Mapping[str, Any]) -> WakeUp:
        version = raw.get("version")
        if type(version) is not int or version != WAKE_VERSION:
            raise MalformedEvent(
                f"wake message: version {version!r} is not one this coordinator reads ({WAKE_VERSION})"
            )
        pipeline = raw.get("pipeline")
        if not isinstance(pipeline, str) or not pipeline:
            raise MalformedEvent(f"wake message: pipeline must be a non-empty string, got {pipeline!r}")
        written = raw.get("due_at")
        try:
            due_at = datetime.fromisoformat(written) if isinstance(written, str) else None
        except ValueError:
            due_at = None
        if due_at is None or due_at.tzinfo is None:
            raise MalformedEvent(
                f"wake message: due_at must be an ISO 8601 time with a zone, got {written!r}"
            )
        return cls(pipeline, due_at)


def verify_queue_message(raw: Any) -> VerifyRequest | WakeUp:
    """A verify queue message body (parsed JSON): a wake-up or a health check. Raises
    ``MalformedEvent`` saying what is wrong."""
    if isinstance(raw, Mapping) and "kind" in raw:
        if raw["kind"] != WAKE_KIND:
            raise MalformedEvent(
                f"verify queue message: kind {raw['kind']!r} is not one this coordinator sends"
            )
        return WakeUp.from_message(raw)
    return VerifyRequest.from_message(raw)

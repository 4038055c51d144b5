"""Notifications: the table's stream publishes each new history event to the routes that receive
it (the outbox, DESIGN.md section 5), and the notify queue delivers each (release, history event,
route) once.

Retries: a refusal no retry can fix goes to the dead-letter queue at once with its reason; a
channel's Retry-After delays the message by exactly that; anything else comes back with
exponential backoff, and after the queue's ``maxReceiveCount`` SQS moves it to the dead-letter
queue itself. A channel that fails never holds up another: each route is its own message.

Once: the delivery log's claim keeps two live attempts apart, but an attempt can die between its
post and its confirm, and its retry then comes back after the lease. Slack posts carry a mark in
their message metadata, and a retry that took over an earlier attempt (``Claim.RETAKEN``) looks
for its own card and reply before posting; the first attempt never looks, so the normal path
costs no extra call. Email, SNS and webhooks offer no way to look: a retry after a death between
the send and the confirm sends again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from chalicelib.domain.lane import Change
from chalicelib.domain.notification_content import build_notice, needs_history
from chalicelib.domain.notifications import (
    NotifyMessage,
    SlackThread,
    StreamedEvent,
    find_route,
    opens_thread,
    plan_messages,
)
from chalicelib.domain.pipelines import NotifyRoute
from chalicelib.domain.release import Release
from chalicelib.log import logger
from chalicelib.service.aws_errors import aws_error_code
from chalicelib.service.notification_ports import (
    Claim,
    DeliveryDeferred,
    DeliveryLog,
    DeliveryRejected,
    NotificationAdapters,
    NotQueued,
    Outgoing,
    Receipt,
)
from chalicelib.service.slot_flow import on_release
from chalicelib.service.wiring import Wiring

# Transient failures come back after 5 s, 10 s, 20 s... (by receive count), at most 15 minutes.
RETRY_BASE_S = 5
RETRY_MAX_S = 900
# Another attempt holds the delivery's claim: look again after this long.
BUSY_RETRY_S = 30
# Tries at storing a posted Slack card's thread before giving up (about 3 s in all).
REMEMBER_ATTEMPTS = 5


class NotificationsNotConfigured(RuntimeError):
    """The function has no notify queue (``NOTIFY_QUEUE_URL``) to publish to or deliver from."""


class DeliveryBusy(RuntimeError):
    """Another attempt is delivering this message right now; retried later, never posted twice."""


def _adapters(wiring: Wiring) -> NotificationAdapters:
    if wiring.notifications is None:
        raise NotificationsNotConfigured("NOTIFY_QUEUE_URL is not set: notifications are not wired")
    return wiring.notifications


def publish(wiring: Wiring, streamed: Sequence[StreamedEvent]) -> int:
    """Enqueue one message per route that receives each of these history events (in the stream's
    order), all in as few calls as the queue takes. Returns how many of the events, from the
    first, have every message queued: the caller hands the rest back to be retried."""
    planned = [
        (number, message)
        for number, event in enumerate(streamed)
        for message in plan_messages(wiring.pipelines.named(event.pipeline), event)
    ]
    if not planned:
        return len(streamed)
    try:
        _adapters(wiring).queue.send([message for _, message in planned])
    except NotQueued as problem:
        number, message = planned[problem.first]
        logger.warning(
            "notify messages not queued; their history events are retried from this one",
            extra={"release_id": message.release_id, "event_id": message.event.id, "reason": problem.reason},
        )
        return number
    logger.info(
        "notifications queued",
        extra={"deliveries": [message.delivery_id for _, message in planned]},
    )
    return len(streamed)


def retry_delay_s(receive_count: int) -> int:
    return int(min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, receive_count - 1)))


class DeliveryBatch:
    """The messages of one notify-queue batch, each delivered once, in the queue's order. What
    they share costs one call for all instead of one each:

    * A release is read once for all its messages. The FIFO queue hands out a release's messages
      on a route one batch at a time, in order, so a change after the read comes as a later
      message of its own, after these; the batch's own thread writes keep the copy current.
    * A delivery is confirmed in the write that claims the next one (``confirm_and_claim``);
      ``finish`` confirms the last. Either way the confirm is the first write after the send, so
      a death between them leaves the same window as a confirm of its own: Slack looks for its
      post, email, SNS and webhooks may send again.
    """

    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._releases: dict[str, Release | None] = {}
        # Sent (or found to need no sending) and not yet recorded as delivered, with its log keys.
        self._unconfirmed: tuple[NotifyMessage, dict[str, Any]] | None = None

    def deliver(self, message: NotifyMessage, receipt: Receipt | None = None) -> str:
        """Deliver one message to its route, once. Returns ``delivered``, ``duplicate``,
        ``skipped`` or ``dead_lettered``; raises when the message should come back later
        (``receipt`` then sets when)."""
        wiring = self._wiring
        adapters = _adapters(wiring)
        route = find_route(wiring.pipelines.named(message.pipeline), message.route)
        log_keys = {
            "route": message.route,
            "notification": message.notification,
            "event_id": message.event.id,
        }
        if route is None:
            logger.warning("notify route no longer configured; message dropped", extra=log_keys)
            return "skipped"
        claim = self._claim(adapters.deliveries, message)
        if claim is Claim.DELIVERED:
            logger.info("already delivered; duplicate dropped", extra=log_keys)
            return "duplicate"
        if claim is Claim.BUSY:
            if receipt is not None:
                adapters.queue.retry_after(receipt, BUSY_RETRY_S)
            raise DeliveryBusy(f"delivery {message.delivery_id} is in progress elsewhere")
        log_keys["kind"] = route.kind
        try:
            sent = self._send(adapters, route, message, retaken=claim is Claim.RETAKEN)
        except DeliveryRejected as rejected:
            adapters.deliveries.release(message)
            logger.error(
                "notification refused for good; sent to the dead-letter queue",
                extra={**log_keys, "reason": rejected.reason},
            )
            adapters.queue.dead_letter(message, rejected.reason)
            return "dead_lettered"
        except DeliveryDeferred as deferred:
            adapters.deliveries.release(message)
            logger.warning(
                "channel asked to retry later", extra={**log_keys, "retry_after_s": deferred.retry_after_s}
            )
            if receipt is not None:
                adapters.queue.retry_after(receipt, deferred.retry_after_s)
            raise
        except Exception as error:
            adapters.deliveries.release(message)
            delay = retry_delay_s(receipt.receive_count) if receipt else RETRY_BASE_S
            logger.warning(
                "delivery failed; will be retried",
                extra={**log_keys, "error": type(error).__name__, "retry_in_s": delay},
            )
            if receipt is not None:
                adapters.queue.retry_after(receipt, delay)
            raise
        # A skipped message (nothing to post) is recorded too: its duplicates need no second look.
        self._unconfirmed = (message, log_keys)
        outcome = "delivered" if sent else "skipped"
        logger.info(f"notification {outcome}", extra=log_keys)
        return outcome

    def finish(self) -> None:
        """Confirm the batch's last delivery (the others were confirmed by the next claim)."""
        unconfirmed, self._unconfirmed = self._unconfirmed, None
        if unconfirmed is not None:
            self._confirm(_adapters(self._wiring).deliveries, *unconfirmed)

    def _claim(self, deliveries: DeliveryLog, message: NotifyMessage) -> Claim:
        now = self._wiring.clock.now()
        unconfirmed, self._unconfirmed = self._unconfirmed, None
        if unconfirmed is not None:
            claim = deliveries.confirm_and_claim(unconfirmed[0], message, now)
            if claim is not None:
                return claim
            self._confirm(deliveries, *unconfirmed)
        return deliveries.claim(message, now)

    def _confirm(self, deliveries: DeliveryLog, message: NotifyMessage, log_keys: dict[str, Any]) -> None:
        try:
            deliveries.confirm(message, self._wiring.clock.now())
        except Exception as error:
            # Sent but not recorded: a retry sends again where the channel offers no way to look
            # (email, SNS, webhooks). Say why, so the duplicate is explained.
            logger.warning(
                "notification sent but its delivery could not be recorded; a retry may send it again",
                extra={**log_keys, "aws_error": aws_error_code(error)},
            )
            raise

    def _release(self, release_id: str) -> Release | None:
        if release_id not in self._releases:
            self._releases[release_id] = self._wiring.store.get_release(release_id)
        return self._releases[release_id]

    def _send(
        self, adapters: NotificationAdapters, route: NotifyRoute, message: NotifyMessage, *, retaken: bool
    ) -> bool:
        """Render the notice and hand it to the route's channel; False when there was nothing to
        send. ``retaken``: an earlier attempt may have sent part of it."""
        wiring = self._wiring
        release = self._release(message.release_id)
        if release is None:
            logger.warning(
                "notification for a release that does not exist; dropped", extra={"route": message.route}
            )
            return False
        channel = adapters.channels.get(route.kind)
        if channel is None:
            raise DeliveryRejected(f"unknown notify kind {route.kind!r}")
        history = wiring.store.history(release.id) if needs_history(message.notification) else []
        pipeline = wiring.pipelines.named(message.pipeline)
        approval = pipeline.approval if pipeline is not None else None
        outgoing = Outgoing(
            message=message,
            notice=build_notice(release, message.event, message.notification, history, approval),
            retaken=retaken,
            opens_thread=opens_thread(route, message.notification),
            sent_at=wiring.clock.now(),
            remember_thread=functools.partial(self._remember_posted_thread, release, message.route),
        )
        return channel.send(route.channel, outgoing)

    def _remember_posted_thread(self, release: Release, route: str, thread: SlackThread) -> None:
        """The root card is out: if its thread were not stored, the retry would post a second
        card. Transient store errors are waited out here rather than handed to the queue's retry.
        The batch's copy of the release becomes the one stored (dropped when nothing was written:
        the next message reads it again)."""
        for attempt in range(REMEMBER_ATTEMPTS):
            try:
                stored = _remember_thread(self._wiring, release, route, thread)
            except Exception:
                if attempt == REMEMBER_ATTEMPTS - 1:
                    logger.exception(
                        "Slack card posted but its thread could not be stored; a retry may post it again",
                        extra={"release_id": release.id, "route": route},
                    )
                    raise
                time.sleep(0.2 * 2**attempt)
                continue
            if stored is None:
                self._releases.pop(release.id, None)
            else:
                self._releases[release.id] = stored
            return


def _remember_thread(wiring: Wiring, release: Release, route: str, thread: SlackThread) -> Release | None:
    """Store the thread on the release through the versioned write, first on the release the
    card was rendered from: a transition racing with it fails the write, and the retry reads
    afresh (and keeps the transition) instead of erasing it."""

    def remember(current: Release, now: datetime) -> Change | None:  # noqa: ARG001
        if current.notification_threads.get(route) == thread.to_stored():
            return None
        threads = {**current.notification_threads, route: thread.to_stored()}
        return Change(releases=[replace(current, notification_threads=threads)])

    return on_release(wiring, release.id, remember, known=release)

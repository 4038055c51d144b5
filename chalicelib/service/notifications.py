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

import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.lane import Change
from chalicelib.domain.notification_content import (
    FAILURES,
    Notice,
    build_notice,
    email,
    mentions,
    needs_history,
    payload_json,
    slack_card,
    slack_reply,
    slack_webhook_message,
    sns_subject,
)
from chalicelib.domain.notification_signature import SIGNATURE_HEADER, sign
from chalicelib.domain.notifications import (
    NotifyMessage,
    SlackPostMark,
    SlackThread,
    StreamedEvent,
    find_route,
    opens_thread,
    plan_messages,
    secret_ref,
)
from chalicelib.domain.pipelines import NotifyRoute
from chalicelib.domain.release import Release
from chalicelib.log import logger
from chalicelib.service.aws_errors import aws_error_code
from chalicelib.service.notification_ports import (
    Claim,
    DeliveryDeferred,
    DeliveryRejected,
    NotificationAdapters,
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
# A retry looks for its earlier post from this long before the history event: every post for an
# event is made after the event was written, give or take the clocks of Lambda and Slack.
LOOK_BACK = timedelta(minutes=5)


class NotificationsNotConfigured(RuntimeError):
    """The function has no notify queue (``NOTIFY_QUEUE_URL``) to publish to or deliver from."""


class DeliveryBusy(RuntimeError):
    """Another attempt is delivering this message right now; retried later, never posted twice."""


def _adapters(wiring: Wiring) -> NotificationAdapters:
    if wiring.notifications is None:
        raise NotificationsNotConfigured("NOTIFY_QUEUE_URL is not set: notifications are not wired")
    return wiring.notifications


def publish(wiring: Wiring, streamed: StreamedEvent) -> int:
    """Enqueue one message per route that receives this history event; returns how many."""
    messages = plan_messages(wiring.pipelines.named(streamed.pipeline), streamed)
    if messages:
        _adapters(wiring).queue.send(messages)
        logger.info(
            "notifications queued",
            extra={"event_id": streamed.event.id, "routes": [message.route for message in messages]},
        )
    return len(messages)


def retry_delay_s(receive_count: int) -> int:
    return int(min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, receive_count - 1)))


def deliver(wiring: Wiring, message: NotifyMessage, receipt: Receipt | None = None) -> str:
    """Deliver one message to its route, once. Returns ``delivered``, ``duplicate``, ``skipped``
    or ``dead_lettered``; raises when the message should come back later (``receipt`` then sets
    when)."""
    adapters = _adapters(wiring)
    route = find_route(wiring.pipelines.named(message.pipeline), message.route)
    log_keys = {"route": message.route, "notification": message.notification, "event_id": message.event.id}
    if route is None:
        logger.warning("notify route no longer configured; message dropped", extra=log_keys)
        return "skipped"
    claim = adapters.deliveries.claim(message, wiring.clock.now())
    if claim is Claim.DELIVERED:
        logger.info("already delivered; duplicate dropped", extra=log_keys)
        return "duplicate"
    if claim is Claim.BUSY:
        if receipt is not None:
            adapters.queue.retry_after(receipt, BUSY_RETRY_S)
        raise DeliveryBusy(f"delivery {message.delivery_id} is in progress elsewhere")
    try:
        sent = _send(wiring, adapters, route, message, retaken=claim is Claim.RETAKEN)
    except DeliveryRejected as rejected:
        adapters.deliveries.release(message)
        logger.error(
            "notification refused for good; sent to the dead-letter queue",
            extra={**log_keys, "kind": route.kind, "reason": rejected.reason},
        )
        adapters.queue.dead_letter(message, rejected.reason)
        return "dead_lettered"
    except DeliveryDeferred as deferred:
        adapters.deliveries.release(message)
        logger.warning(
            "channel asked to retry later",
            extra={**log_keys, "kind": route.kind, "retry_after_s": deferred.retry_after_s},
        )
        if receipt is not None:
            adapters.queue.retry_after(receipt, deferred.retry_after_s)
        raise
    except Exception as error:
        adapters.deliveries.release(message)
        delay = retry_delay_s(receipt.receive_count) if receipt else RETRY_BASE_S
        logger.warning(
            "delivery failed; will be retried",
            extra={**log_keys, "kind": route.kind, "error": type(error).__name__, "retry_in_s": delay},
        )
        if receipt is not None:
            adapters.queue.retry_after(receipt, delay)
        raise
    # A skipped message (nothing to post) is recorded too: its duplicates need no second look.
    try:
        adapters.deliveries.confirm(message, wiring.clock.now())
    except Exception as error:
        # Sent but not recorded: the retry sends again where the channel offers no way to look
        # (email, SNS, webhooks). Say why, so the duplicate is explained.
        logger.warning(
            "notification sent but its delivery could not be recorded; the retry may send it again",
            extra={**log_keys, "kind": route.kind, "aws_error": aws_error_code(error)},
        )
        raise
    outcome = "delivered" if sent else "skipped"
    logger.info(f"notification {outcome}", extra={**log_keys, "kind": route.kind})
    return outcome


def _secret(adapters: NotificationAdapters, settings: Mapping[str, Any], name: str) -> str:
    ref = secret_ref(settings, name)
    if ref is None:  # the pipelines file is validated at load; a hand-made route may still lack it
        raise DeliveryRejected(f"route has no {name}_parameter or {name}_secret")
    return adapters.secrets.get(ref)


def _send(
    wiring: Wiring,
    adapters: NotificationAdapters,
    route: NotifyRoute,
    message: NotifyMessage,
    *,
    retaken: bool,
) -> bool:
    """Render and send; False when there was nothing to send. ``retaken``: an earlier attempt
    may have sent part of it."""
    release = wiring.store.get_release(message.release_id)
    if release is None:
        logger.warning(
            "notification for a release that does not exist; dropped", extra={"route": message.route}
        )
        return False
    history = wiring.store.history(release.id) if needs_history(message.notification) else []
    notice = build_notice(release, message.event, message.notification, history)
    settings = route.settings
    if route.kind == "slack":
        return _post_to_thread(wiring, adapters, route, message, notice, retaken=retaken)
    if route.kind == "slack_webhook":
        content = slack_webhook_message(notice, mentions(settings, notice))
        adapters.slack_webhook.send(_secret(adapters, settings, "url"), content.text, content.blocks)
    elif route.kind == "email":
        mail = email(notice)
        adapters.email.send(settings["sender"], list(settings["to"]), mail.subject, mail.text, mail.html)
    elif route.kind == "sns":
        attributes = {
            "notification": notice.notification,
            "pipeline": release.pipeline,
            "state": release.state.value,
        }
        adapters.sns.publish(
            settings["topic_arn"], sns_subject(notice), payload_json(notice).decode(), attributes
        )
    elif route.kind == "webhook":
        url = settings.get("url") or _secret(adapters, settings, "url")
        key = _secret(adapters, settings, "signing_key")
        body = payload_json(notice)
        signature = sign(body, key.encode(), int(wiring.clock.now().timestamp()))
        adapters.webhook.post(url, body, {SIGNATURE_HEADER: signature})
    else:
        raise DeliveryRejected(f"unknown notify kind {route.kind!r}")
    return True


def _post_to_thread(
    wiring: Wiring,
    adapters: NotificationAdapters,
    route: NotifyRoute,
    message: NotifyMessage,
    notice: Notice,
    *,
    retaken: bool,
) -> bool:
    """The release's thread on this route: the first event posts the root card (and, for a
    failure, the reply with its details); each later one edits the card to the release's current
    state and replies with what happened. The card is edited before the reply so that a retry
    after a failed reply repeats only an idempotent edit; a retry that took over an earlier
    attempt looks for that attempt's card and reply before posting them."""
    settings = route.settings
    token = _secret(adapters, settings, "token")
    card = slack_card(notice)
    since = message.event.timestamp - LOOK_BACK
    stored = notice.release.notification_threads.get(message.route)
    if stored is None:
        if not opens_thread(route, message.notification):
            return False
        card_mark = SlackPostMark.card(message)
        found = adapters.slack.find_card(token, settings["channel"], card_mark, since) if retaken else None
        if found is not None:
            logger.info("found the card an earlier attempt posted", extra={"route": message.route})
        posted = found or adapters.slack.post(
            token, settings["channel"], card.text, card.blocks, None, mark=card_mark
        )
        thread = replace(posted, opened_by=message.event.id)
        _remember_posted_thread(wiring, notice.release, message.route, thread)
        if message.notification not in FAILURES:
            return True
    else:
        thread = SlackThread.from_stored(stored)
        if thread.opened_by == message.event.id:
            # A retry of the delivery that posted the card, after the card was stored: what may
            # be left is a failure's details reply, never an edit or a reply for the card itself.
            if message.notification not in FAILURES:
                return True
        else:
            adapters.slack.update(token, thread, card.text, card.blocks)
    reply_mark = SlackPostMark.reply(message)
    if retaken and adapters.slack.find_reply(token, thread, reply_mark, since):
        logger.info("found the reply an earlier attempt posted", extra={"route": message.route})
        return True
    reply = slack_reply(notice, mentions(settings, notice))
    adapters.slack.post(token, thread.channel, reply.text, reply.blocks, thread.ts, mark=reply_mark)
    return True


def _remember_posted_thread(wiring: Wiring, release: Release, route: str, thread: SlackThread) -> None:
    """The root card is out: if its thread were not stored, the retry would post a second card.
    Transient store errors are waited out here rather than handed to the queue's retry."""
    release_id = release.id
    for attempt in range(REMEMBER_ATTEMPTS):
        try:
            _remember_thread(wiring, release, route, thread)
            return
        except Exception:
            if attempt == REMEMBER_ATTEMPTS - 1:
                logger.exception(
                    "Slack card posted but its thread could not be stored; a retry may post it again",
                    extra={"release_id": release_id, "route": route},
                )
                raise
            time.sleep(0.2 * 2**attempt)


def _remember_thread(wiring: Wiring, release: Release, route: str, thread: SlackThread) -> None:
    """Store the thread on the release through the versioned write, first on the release the
    card was rendered from: a transition racing with it fails the write, and the retry reads
    afresh (and keeps the transition) instead of erasing it."""

    def remember(current: Release, now: datetime) -> Change | None:  # noqa: ARG001
        if current.notification_threads.get(route) == thread.to_stored():
            return None
        threads = {**current.notification_threads, route: thread.to_stored()}
        return Change(releases=[replace(current, notification_threads=threads)])

    on_release(wiring, release.id, remember, known=release)

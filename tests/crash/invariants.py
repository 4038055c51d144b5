"""What must hold after every run, however the handlers died: read from moto, the table and the
Slack look-alike, and judged against the scenario's ground truth (which uploads are good)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID

from chalicelib.adapters.codedeploy import release_id_in_description
from chalicelib.adapters.dynamodb_store import DynamoReleaseStore, release_from_item
from chalicelib.domain.notification_content import FAILURES, LABELS
from chalicelib.domain.notifications import notification_for, opens_thread, receives
from chalicelib.domain.notify_routes import Notification
from chalicelib.domain.pipelines import NotifyRoute
from chalicelib.domain.release import HistoryEvent, Release, ReleaseState
from sandbox import moto_extensions
from sandbox.slack_api import Message
from tests.crash.harness import Run, Violation, is_read
from tests.crash.world import REGION, SLACK_CHANNEL, TABLE

_RELEASE_IN_CARD = re.compile(r"Release `([^`]+)`")
_RELEASE_IN_MAIL = re.compile(r"<th align='left'>Release</th><td>([^<]+)</td>")
_deserializer = TypeDeserializer()


@dataclass
class FinalState:
    releases: dict[str, Release]
    histories: dict[str, list[HistoryEvent]]
    deployments: list[Any]


def final_state(run: Run) -> FinalState:
    client = run.world.dynamodb
    items: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {"TableName": TABLE}
    while True:
        page = client.scan(**arguments)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            break
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    releases = {}
    for item in items:
        if item["sk"]["S"] == "META" and item["pk"]["S"].startswith("REL#"):
            release = release_from_item(
                {name: _deserializer.deserialize(value) for name, value in item.items()}
            )
            releases[release.id] = release
    store = DynamoReleaseStore(client, TABLE)
    histories = {release_id: store.history(release_id) for release_id in releases}
    deployments = list(moto_extensions.backend(REGION).deployments.values())
    return FinalState(releases, histories, deployments)


def check(run: Run) -> list[Violation]:
    state = final_state(run)
    found = list(run.violations)
    found += _deployments(state)
    found += _ended(run, state)
    found += _histories(state)
    found += _uploads(run, state)
    found += _served(run, state)
    found += _notifications(run, state)
    return found


def _deployments(state: FinalState) -> list[Violation]:
    """One CodeDeploy deployment per release that deploys."""
    found = []
    per_release = Counter(release_id_in_description(d.description) for d in state.deployments)
    for release_id, count in per_release.items():
        if release_id is not None and count > 1:
            found.append(
                Violation("deployed_twice", f"release {release_id} has {count} CodeDeploy deployments")
            )
    for release in state.releases.values():
        if (
            release.deployment_id is not None
            and per_release.get(release.id, 0) == 0
            and release.trigger.value != "external"
        ):
            found.append(
                Violation(
                    "deployment_unknown",
                    f"release {release.id} names {release.deployment_id}, not one of its own",
                )
            )
    return found


def _ended(run: Run, state: FinalState) -> list[Violation]:
    """Every release terminal and every slot free at the end."""
    found = [
        Violation("not_terminal", f"release {r.id} ({r.revision.key}) still {r.state.value}: {r.reason}")
        for r in state.releases.values()
        if not r.state.is_terminal
    ]
    store = DynamoReleaseStore(run.world.dynamodb, TABLE)
    for pipeline in run.world.pipelines.pipelines:
        slot = store.get_slot(pipeline.name)
        if slot.active is not None or slot.waiting:
            found.append(
                Violation(
                    "slot_held", f"{pipeline.name}'s slot: active {slot.active}, waiting {list(slot.waiting)}"
                )
            )
    return found


def _histories(state: FinalState) -> list[Violation]:
    found = []
    for release_id, history in state.histories.items():
        ids = [event.id for event in history]
        chained = all(event.previous_event_id == event.id - 1 for event in history)
        if ids != list(range(1, len(ids) + 1)) or not chained:
            found.append(Violation("history_gap", f"release {release_id}: history ids {ids}"))
        elif history and history[-1].state is not state.releases[release_id].state:
            found.append(
                Violation(
                    "history_state",
                    f"release {release_id} is {state.releases[release_id].state.value} but its last "
                    f"event says {history[-1].state.value}",
                )
            )
    return found


def _uploads(run: Run, state: FinalState) -> list[Violation]:
    return [
        Violation("upload_lost", f"upload {upload.key} has no release {upload.release_id}")
        for upload in run.uploads
        if upload.release_id not in state.releases
    ]


def _served(run: Run, state: FinalState) -> list[Violation]:
    """What the fleet runs and the slot's last good release are the newest upload that passed
    (good by the scenario, and not cancelled or superseded by someone's decision); a release
    whose targets were healthy is never failed by its verification."""
    found = []
    for release in state.releases.values():
        if release.state is ReleaseState.FAILED and release.reason.startswith("verify_failed"):
            found.append(
                Violation(
                    "healthy_failed_verification",
                    f"release {release.id} ({release.revision.key}) FAILED although its targets were "
                    f"healthy throughout: {release.reason}",
                )
            )
    store = DynamoReleaseStore(run.world.dynamodb, TABLE)
    for pipeline in run.world.pipelines.pipelines:
        uploads = [upload for upload in run.uploads if upload.pipeline == pipeline.name]
        if not uploads:
            continue
        passed = [
            upload
            for upload in uploads
            if upload.good
            and upload.release_id in state.releases
            and state.releases[upload.release_id].state not in (ReleaseState.STOPPED, ReleaseState.SUPERSEDED)
        ]
        expected = max(passed, key=lambda upload: upload.at_s).key if passed else None
        served = run.driver.served.get(pipeline.deployment_group)
        slot = store.get_slot(pipeline.name)
        last_good = state.releases.get(slot.last_good) if slot.last_good else None
        last_good_key = last_good.revision.key if last_good else None
        stopped = {
            upload.key
            for upload in uploads
            if upload.release_id in state.releases
            and state.releases[upload.release_id].state is ReleaseState.STOPPED
        }
        if expected is None and last_good_key is None and served in stopped:
            # Cancelled after CodeDeploy had already finished (a cancel retried late), with no
            # verified release to return to: the fleet keeps what it got, and its release says
            # STOPPED. With one to return to, this is a violation.
            continue
        if served != expected or last_good_key != expected:
            found.append(
                Violation(
                    "served_not_newest",
                    f"{pipeline.name}: the fleet runs {served} and the last good release is "
                    f"{last_good_key}, but the newest upload that passed is {expected}",
                )
            )
    return found


def _notifications(run: Run, state: FinalState) -> list[Violation]:
    """Each notification event posted once per route: a Slack thread's root card once and each
    reply once; each email once. SES offers no way to look for a mail already sent, so a crash
    right after SendEmail (before the delivery is confirmed) may mail that event twice: the
    channel's documented window, allowed here once per such crash and no more."""
    found = []
    slack_messages = run.world.slack_messages.messages(SLACK_CHANNEL)
    roots = [message for message in slack_messages if message.thread_ts is None]
    mails = list(get_backend("ses")[DEFAULT_ACCOUNT_ID][REGION].sent_messages)
    ses_window = sum(
        1 for inv in run.invocations if inv.outcome == "crashed" and _last_write(inv.calls) == "ses.SendEmail"
    )
    mailed = Counter((_mail_release(mail), mail.subject.split("]", 1)[0] + "]") for mail in mails)
    expected_mail: Counter[tuple[str | None, str]] = Counter()
    for release in state.releases.values():
        pipeline = run.world.pipelines.named(release.pipeline)
        if pipeline is None:
            continue
        notifications = [
            n
            for n in (notification_for(event, release.trigger) for event in state.histories[release.id])
            if n
        ]
        for route in pipeline.notify:
            if route.kind == "slack":
                found += _slack_thread(run, release, route, notifications, roots)
            elif route.kind == "email":
                for notification in notifications:
                    if receives(route, notification):
                        expected_mail[(release.id, f"[{LABELS[notification]}]")] += 1
    for key in sorted(set(mailed) | set(expected_mail), key=str):
        sent, wanted = mailed[key], expected_mail[key]
        if sent < wanted:
            found.append(
                Violation("email_missing", f"release {key[0]}: {key[1]} mailed {sent}x, expected {wanted}")
            )
        elif sent > wanted:
            extra = sent - wanted
            if extra <= ses_window:
                ses_window -= extra
            else:
                found.append(
                    Violation(
                        "email_duplicate", f"release {key[0]}: {key[1]} mailed {sent}x, expected {wanted}"
                    )
                )
    return found


def _last_write(calls: list[str]) -> str | None:
    return next((call for call in reversed(calls) if not is_read(call)), None)


def _mail_release(mail: Any) -> str | None:
    match = _RELEASE_IN_MAIL.search(str(mail.body))
    return match.group(1) if match else None


def _slack_thread(
    run: Run, release: Release, route: NotifyRoute, notifications: list[Notification], roots: list[Message]
) -> list[Violation]:
    opening = next((i for i, n in enumerate(notifications) if opens_thread(route, n)), None)
    cards = [root for root in roots if _card_release(root) == release.id]
    if opening is None:
        if cards:
            return [
                Violation("slack_unexpected", f"release {release.id}: {len(cards)} card(s) nobody asked for")
            ]
        return []
    expected_replies = notifications[opening + 1 :]
    if notifications[opening] in FAILURES:
        expected_replies = [notifications[opening], *expected_replies]
    found = []
    if len(cards) != 1:
        kind = "slack_root_duplicate" if len(cards) > 1 else "slack_missing"
        found.append(
            Violation(
                kind, f"release {release.id} ({release.revision.key}): {len(cards)} root cards, expected 1"
            )
        )
    replies = [reply for card in cards for reply in run.world.slack_messages.thread(SLACK_CHANNEL, card.ts)]
    texts = Counter(reply.text for reply in replies)
    doubled = sorted(text.splitlines()[0][:80] for text, count in texts.items() if text and count > 1)
    if doubled or len(replies) > len(expected_replies):
        found.append(
            Violation(
                "slack_reply_duplicate",
                f"release {release.id}: {len(replies)} replies for {len(expected_replies)} events "
                f"{expected_replies}; posted more than once: {doubled}",
            )
        )
    elif len(replies) < len(expected_replies):
        found.append(
            Violation(
                "slack_missing",
                f"release {release.id}: {len(replies)} replies for {len(expected_replies)} events "
                f"{expected_replies}",
            )
        )
    return found


def _card_release(message: Message) -> str | None:
    for block in message.blocks or []:
        if block.get("type") == "context":
            for element in block.get("elements", []):
                match = _RELEASE_IN_CARD.search(str(element.get("text", "")))
                if match:
                    return match.group(1)
    return None

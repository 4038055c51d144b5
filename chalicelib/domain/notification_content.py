"""What a notification says, for each kind of channel: the Slack card and thread reply (Block
Kit), the email (text and HTML), the SNS message and the webhook's JSON.

Everything here is pure: it renders a :class:`Notice` (the release as it is now, the history event
being notified and the diagnostics recorded before it) and never talks to anything.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from chalicelib.domain.notifications import is_mixed_fleet, is_promotion_link
from chalicelib.domain.notify_routes import Notification, SlackMentions
from chalicelib.domain.permissions import ApprovalPolicy
from chalicelib.domain.release import (
    PROMOTED_FROM,
    PROMOTED_FROM_PIPELINE,
    EventType,
    HistoryEvent,
    Release,
    ReleaseState,
    Trigger,
)
from chalicelib.domain.slack_interactions import actions_block

LABELS: Mapping[Notification, str] = {
    Notification.STARTED: "STARTED",
    Notification.QUEUED: "QUEUED",
    Notification.AWAITING_APPROVAL: "AWAITING APPROVAL",
    Notification.SUPERSEDED: "SUPERSEDED",
    Notification.SUCCEEDED: "SUCCEEDED",
    Notification.FAILED: "FAILED",
    Notification.VERIFY_FAILED: "VERIFY FAILED",
    Notification.ROLLED_BACK: "ROLLED BACK",
    Notification.STOPPED: "STOPPED",
    Notification.PROGRESS: "VERIFYING",
}
FAILURES = frozenset(notification for notification in Notification if notification.is_failure)
_CARD_STATES: Mapping[ReleaseState, tuple[str, str]] = {
    ReleaseState.RECEIVED: (":inbox_tray:", "Received"),
    ReleaseState.AWAITING_APPROVAL: (":raised_hand:", "Awaiting approval"),
    ReleaseState.QUEUED: (":hourglass_flowing_sand:", "Queued"),
    ReleaseState.DEPLOYING: (":rocket:", "Deploying"),
    ReleaseState.VERIFYING: (":mag:", "Verifying"),
    ReleaseState.SUCCEEDED: (":white_check_mark:", "Succeeded"),
    ReleaseState.FAILED: (":x:", "Failed"),
    ReleaseState.STOPPED: (":black_square_for_stop:", "Stopped"),
    ReleaseState.SUPERSEDED: (":fast_forward:", "Superseded"),
}
_REPLY_EMOJI: Mapping[Notification, str] = {
    Notification.STARTED: ":rocket:",
    Notification.QUEUED: ":hourglass_flowing_sand:",
    Notification.AWAITING_APPROVAL: ":raised_hand:",
    Notification.SUPERSEDED: ":fast_forward:",
    Notification.SUCCEEDED: ":white_check_mark:",
    Notification.FAILED: ":x:",
    Notification.VERIFY_FAILED: ":x:",
    Notification.ROLLED_BACK: ":leftwards_arrow_with_hook:",
    Notification.STOPPED: ":black_square_for_stop:",
    Notification.PROGRESS: ":mag:",
}
# Block Kit limits: header 150 characters, section text 3000, a field 2000.
_HEADER_LIMIT = 150
_SECTION_LIMIT = 2900
_FIELD_LIMIT = 1900
# Slack truncates a message's text beyond 40,000 characters; stay clear of it.
_MESSAGE_LIMIT = 39_000
# A reply shows this much of each failed instance's log, for at most this many instances.
_REPLY_LOG_TAIL = 1500
_REPLY_INSTANCES = 3
_REPLY_TARGETS = 10
_COMMIT_SHOWN = 12


@dataclass(frozen=True)
class Notice:
    release: Release
    event: HistoryEvent
    notification: Notification
    # Diagnostics recorded with a failure: per failed instance (hook, script, log tail), and the
    # targets the last health check found not healthy.
    failed_instances: tuple[Mapping[str, Any], ...] = ()
    not_healthy: tuple[Mapping[str, Any], ...] = ()
    # The pipeline's approval rules: who may approve a release awaiting approval.
    approval: ApprovalPolicy | None = None

    @property
    def label(self) -> str:
        return LABELS[self.notification]

    @property
    def title(self) -> str:
        return f"{self.release.pipeline} {version_label(self.release)}"


@dataclass(frozen=True)
class SlackMessage:
    text: str  # the plain fallback shown in push notifications
    blocks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Email:
    subject: str
    text: str
    html: str


def needs_history(notification: Notification) -> bool:
    """Only a failure's notice carries diagnostics, which live in earlier history events."""
    return notification.is_failure


def build_notice(
    release: Release,
    event: HistoryEvent,
    notification: Notification,
    history: Sequence[HistoryEvent] = (),
    approval: ApprovalPolicy | None = None,
) -> Notice:
    """The notice for ``event``, with the diagnostics the history recorded up to it: the last
    CodeDeploy failure's instances and the last health check's unhealthy targets. ``approval``:
    the pipeline's approval rules, which a notice of a release awaiting approval names."""
    failed_instances: tuple[Mapping[str, Any], ...] = ()
    not_healthy: tuple[Mapping[str, Any], ...] = ()
    for earlier in history:
        if earlier.id > event.id or earlier.type is not EventType.TASK_FAILED:
            continue
        task = earlier.detail.get("task")
        if task == "CodeDeploy":
            failed_instances = tuple(earlier.detail.get("failed_instances") or ())
        elif task == "HealthCheck":
            not_healthy = tuple(earlier.detail.get("not_healthy") or ())
    if notification is Notification.VERIFY_FAILED:
        failed_instances = ()
    elif notification is Notification.FAILED:
        not_healthy = ()
    return Notice(release, event, notification, failed_instances, not_healthy, approval)


def escape(text: object) -> str:
    """Slack mrkdwn's three control characters; everything user-supplied goes through here."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def version_label(release: Release) -> str:
    """CI's ``version-label`` metadata, else the bundle's file name."""
    return release.metadata.get("version_label") or PurePosixPath(release.revision.key).name or release.id


def duration(release: Release) -> str:
    seconds = max(0, int((release.updated_at - release.created_at).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def mentions(route: SlackMentions, notice: Notice) -> list[str]:
    """Who a failure pings: the route's ``mention_on_failure`` ids and the upload's author, when
    the route's ``authors`` map knows them. User groups (``S...``) use the subteam syntax."""
    if not notice.notification.is_failure:
        return []
    ids = list(route.mention_on_failure or ())
    author = notice.release.metadata.get("author") or notice.release.actor
    mapped = (route.authors or {}).get(author) if author else None
    if mapped:
        ids.append(mapped)
    return [slack_mention(i) for i in dict.fromkeys(ids)]


def slack_mention(slack_id: str) -> str:
    """A user (``U...``, ``W...``) or a user group (``S...``, the subteam syntax) in mrkdwn."""
    return f"<!subteam^{slack_id}>" if slack_id.startswith("S") else f"<@{slack_id}>"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _commit(release: Release) -> str:
    commit = release.metadata.get("commit", "")
    message = (release.metadata.get("message") or "").strip().splitlines()
    shown = f"`{escape(commit[:_COMMIT_SHOWN])}`" if commit else "—"
    return f"{shown} {escape(message[0])}" if message else shown


def _trigger(release: Release) -> str:
    trigger = release.trigger.value
    promoted_from = release.metadata.get(PROMOTED_FROM)
    if release.trigger is Trigger.PROMOTION and promoted_from:
        upstream = release.metadata.get(PROMOTED_FROM_PIPELINE, "upstream")
        return f"{trigger} of {escape(upstream)} release `{escape(promoted_from)}`"
    if release.rollback_of:
        return f"{trigger} of `{escape(release.rollback_of)}`"
    if release.actor and release.trigger.value != "upload":
        return f"{trigger} by {escape(release.actor)}"
    return trigger


def _instances(notice: Notice) -> str:
    release = notice.release
    verification = release.verification
    parts = []
    if verification is not None:
        count = len(verification.instance_ids)
        if release.state is ReleaseState.SUCCEEDED:
            parts.append(f"{count} deployed, healthy")
        else:
            parts.append(
                f"{count} deployed; {verification.streak}/{verification.healthy_checks} healthy checks"
            )
    if notice.failed_instances:
        parts.append(f"{len(notice.failed_instances)} failed")
    if notice.not_healthy:
        parts.append(f"{len({t.get('target') for t in notice.not_healthy})} not healthy")
    return "; ".join(parts) or "—"


def _card_label(release: Release) -> tuple[str, str]:
    emoji, label = _CARD_STATES[release.state]
    if release.trigger.is_rollback:
        if release.state is ReleaseState.SUCCEEDED:
            return ":leftwards_arrow_with_hook:", "Rolled back"
        if release.state in (ReleaseState.DEPLOYING, ReleaseState.VERIFYING):
            return ":leftwards_arrow_with_hook:", f"Rolling back ({label.lower()})"
    return emoji, label


# -- gates: what held a release or let it through (freezes, approvals, break-glass) ---------------
# The history event's detail keys are the lane's contract: a QUEUED event's ``freeze`` (reason,
# ends_at); an AWAITING_APPROVAL event's ``approval`` (expires_at); ``approved_by`` and
# ``comment`` on the event an approved release moves on with; ``rejected_by`` and ``comment``, or
# ``approval_expired``, on its STOPPED event. Break-glass is the release's own record:
# ``metadata["break_glass"]`` (the reason) and ``actor``.


def _when(written: object) -> str:
    """A time from a history event's detail (ISO 8601), as people read it: to the minute, in UTC."""
    try:
        moment = datetime.fromisoformat(written) if isinstance(written, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        return str(written)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def freeze_line(event: HistoryEvent) -> str | None:
    """A release queued by a freeze: until when and why (plain text), instead of its reason."""
    freeze = event.detail.get("freeze")
    if event.state is not ReleaseState.QUEUED or not isinstance(freeze, Mapping):
        return None
    return f"Frozen until {_when(freeze.get('ends_at'))}: {freeze.get('reason', '')}"


def receipt_line(event: HistoryEvent) -> str | None:
    """The zero-downtime receipt of the event that ended a release (its detail's ``receipt``,
    chalicelib/domain/traffic.py), in one line: "Receipt: 0 load-balancer errors in 14,210
    requests during rollout (baseline 0.00%)"."""
    receipt = event.detail.get("receipt")
    summary = receipt.get("summary") if isinstance(receipt, Mapping) else None
    return f"Receipt: {summary}" if summary else None


def break_glass(release: Release) -> dict[str, str] | None:
    """Who started the release during a freeze by break-glass, and why; None for any other."""
    reason = release.metadata.get("break_glass")
    if not reason:
        return None
    return {"actor": release.actor or "unknown", "reason": reason}


def break_glass_line(release: Release) -> str | None:
    glass = break_glass(release)
    return f"Break-glass by {glass['actor']}: {glass['reason']}" if glass else None


def approval_lines(notice: Notice, *, slack: bool = False) -> list[str]:
    """What the notified event says about the release's approval: who may approve it and until
    when, or who approved or rejected it, or that it expired. ``slack``: mrkdwn (user text
    escaped, approvers mentioned by their ids), else plain text."""
    text: Callable[[object], str] = escape if slack else str
    detail, lines = notice.event.detail, []
    if notice.event.state is ReleaseState.AWAITING_APPROVAL:
        approval = detail.get("approval")
        expires = approval.get("expires_at") if isinstance(approval, Mapping) else None
        who = _approvers(notice.approval, slack=slack)
        lines.append(
            "Needs approval"
            + (f" by {who}" if who else "")
            + (f"; expires {text(_when(expires))}" if expires else "")
        )
    if detail.get("approved_by"):
        lines.append(f"Approved by {text(detail['approved_by'])}" + _comment(detail, text))
    if detail.get("rejected_by"):
        lines.append(f"Rejected by {text(detail['rejected_by'])}" + _comment(detail, text))
    if detail.get("approval_expired"):
        expired = text(_when(detail["approval_expired"]))
        lines.append(f"Approval expired at {expired}: nobody approved in time")
    return lines


def _comment(detail: Mapping[str, Any], text: Callable[[object], str]) -> str:
    comment = detail.get("comment")
    return f": {text(comment)}" if comment else ""


def _approvers(policy: ApprovalPolicy | None, *, slack: bool) -> str:
    """Who may approve: Slack users and user groups (mentioned on Slack), then IAM principals
    (through the API or ``relco approve``)."""
    if policy is None:
        return ""
    if slack:
        people = [slack_mention(i) for i in policy.slack_approvers]
        principals = [f"`{escape(arn)}`" for arn in policy.approvers]
    else:
        people = [f"Slack {i}" for i in policy.slack_approvers]
        principals = list(policy.approvers)
    parts = [", ".join(people)] if people else []
    if principals:
        parts.append(", ".join(principals) + " (API)")
    return " or ".join(parts)


def card_blocks(notice: Notice, with_actions: bool = False) -> list[dict[str, Any]]:
    """The release's card: header with its current state, the facts as fields, the reason, the
    buttons its state offers (``with_actions``: only where a Slack app receives the clicks), and a
    context line with the ids an operator searches for."""
    release = notice.release
    emoji, label = _card_label(release)
    fields = {
        "Pipeline": escape(release.pipeline),
        "Version": escape(version_label(release)),
        "Commit": _commit(release),
        "Author": escape(release.metadata.get("author") or release.actor or "—"),
        "Trigger": _trigger(release),
        "Duration": duration(release),
        "Instances": _instances(notice),
    }
    context = [f"Release `{escape(release.id)}`"]
    if release.deployment_id:
        context.append(f"deployment `{escape(release.deployment_id)}`")
    context.append(f"updated {release.updated_at.strftime('%Y-%m-%d %H:%M:%S UTC')}")
    glass = break_glass_line(release)
    if glass:
        context.append(f":rotating_light: {escape(glass)}")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _truncate(f"{emoji} {label}: {notice.title}", _HEADER_LIMIT),
                "emoji": True,
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _truncate(f"*{name}*\n{value}", _FIELD_LIMIT)}
                for name, value in fields.items()
            ],
        },
    ]
    # The card shows the release as it is now: the notified event's gate lines only while the
    # release is still in the state that event entered (a late delivery must not show a stale one).
    current = notice.event.state is release.state
    frozen = freeze_line(notice.event) if current else None
    reason = [escape(frozen or release.reason)] if frozen or release.reason else []
    reason += approval_lines(notice, slack=True) if current else []
    receipt = receipt_line(notice.event) if current else None
    if receipt:
        reason.append(f":bar_chart: {escape(receipt)}")
    if reason:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _truncate("\n".join(reason), _SECTION_LIMIT)},
            }
        )
    actions = actions_block(release) if with_actions else None
    if actions is not None:
        blocks.append(actions)
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    return blocks


def slack_card(notice: Notice, with_actions: bool = False) -> SlackMessage:
    _, label = _card_label(notice.release)
    # Slack reads the fallback text as mrkdwn too: a version label like "<!channel>" must not ping.
    return SlackMessage(text=f"{label}: {escape(notice.title)}", blocks=card_blocks(notice, with_actions))


def _code_block(text: str) -> str:
    # A run of three backticks inside would end the block early.
    return "```\n" + escape(text).replace("```", "`\u200b``") + "\n```"


def _failure_lines(notice: Notice) -> list[str]:
    lines = []
    for failed in notice.failed_instances[:_REPLY_INSTANCES]:
        hook = failed.get("lifecycle_event")
        instance = f"`{escape(failed.get('instance', '?'))}`"
        where = (
            f"*{escape(hook)}* failed on {instance}"
            if hook
            else f"{instance}: {escape(failed.get('status'))}"
        )
        script = ", ".join(escape(part) for part in (failed.get("script"), failed.get("error_code")) if part)
        lines.append(where + (f" ({script})" if script else ""))
        if failed.get("message"):
            lines.append(f">{escape(failed['message'])}")
        tail = str(failed.get("log_tail") or "")
        if tail:
            lines.append(_code_block(tail[-_REPLY_LOG_TAIL:]))
    hidden = len(notice.failed_instances) - _REPLY_INSTANCES
    if hidden > 0:
        lines.append(f"…and {hidden} more failed instance(s)")
    for target in notice.not_healthy[:_REPLY_TARGETS]:
        reason = ": ".join(escape(part) for part in (target.get("reason"), target.get("description")) if part)
        lines.append(
            f"`{escape(target.get('target', '?'))}` {escape(target.get('state', '?'))}"
            + (f" ({reason})" if reason else "")
        )
    return lines


def _mixed_fleet_line(detail: Mapping[str, Any]) -> str:
    """``fleet mixed: 1.0.0 on i-1; 2.0.0 on 2 instances; healing as heal-…``"""
    parts = []
    for entry in detail.get("revisions") or ():
        label = entry.get("version_label") or (entry.get("revision") or {}).get("key") or "unknown revision"
        count = int(entry.get("count") or 0)
        instances = entry.get("instances") or []
        where = ", ".join(str(i) for i in instances) if count == len(instances) == 1 else f"{count} instances"
        parts.append(f"{escape(label)} on {escape(where)}")
    line = "Fleet runs mixed revisions: " + "; ".join(parts)
    healing = detail.get("heal_release_id")
    return line + (f"; healing as release `{escape(healing)}`" if healing else "")


def _progress_line(event: HistoryEvent) -> str:
    detail = event.detail
    if is_mixed_fleet(event):
        return _mixed_fleet_line(detail)
    if is_promotion_link(event):
        return (
            f"Promoted to {escape(detail.get('pipeline'))} as release `{escape(detail.get('release_id'))}` "
            "(its own thread follows it there)"
        )
    instances = detail.get("instances") or []
    return (
        f"Verifying target health of {len(instances)} instance(s): "
        f"{detail.get('healthy_checks', '?')} healthy checks in a row, every {detail.get('interval_s', '?')}s"
    )


def _event_reason(notice: Notice) -> str:
    """Why the notified event happened: a freeze's line for a release it queued, else the
    event's reason, else the release's."""
    return freeze_line(notice.event) or str(notice.event.detail.get("reason") or notice.release.reason)


def slack_reply(notice: Notice, pings: Sequence[str] = ()) -> SlackMessage:
    """The thread reply for one transition: what happened and why, with a failure's details."""
    emoji = _REPLY_EMOJI[notice.notification]
    if is_promotion_link(notice.event):
        emoji = ":arrow_double_up:"
    elif is_mixed_fleet(notice.event):
        emoji = ":warning:"
    if notice.notification is Notification.PROGRESS:
        headline = _progress_line(notice.event)
    else:
        headline = f"*{notice.label.capitalize()}*: {escape(_event_reason(notice))}"
    lines = [" ".join([*pings, emoji, headline])]
    lines.extend(approval_lines(notice, slack=True))
    receipt = receipt_line(notice.event)
    if receipt:
        lines.append(f":bar_chart: {escape(receipt)}")
    glass = break_glass_line(notice.release)
    if glass and notice.notification is Notification.STARTED:
        lines.append(f":rotating_light: {escape(glass)}")
    lines.extend(_failure_lines(notice))
    text = _truncate("\n".join(lines), _MESSAGE_LIMIT)
    return SlackMessage(text=text)


def slack_webhook_message(notice: Notice, pings: Sequence[str] = ()) -> SlackMessage:
    """An incoming webhook posts once per event and cannot edit: the card as it is now, with the
    event's reply under it."""
    reply = slack_reply(notice, pings)
    blocks = card_blocks(notice)
    blocks.insert(
        -1, {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(reply.text, _SECTION_LIMIT)}}
    )
    return SlackMessage(text=f"{notice.label}: {escape(notice.title)}", blocks=blocks)


def subject(notice: Notice) -> str:
    return f"[{notice.label}] {notice.title}"


def _facts(notice: Notice) -> list[tuple[str, str]]:
    release = notice.release
    glass = break_glass(release)
    facts = [
        ("Pipeline", release.pipeline),
        ("Version", version_label(release)),
        ("Commit", " ".join(filter(None, (release.metadata.get("commit"), release.metadata.get("message"))))),
        ("Author", release.metadata.get("author") or release.actor or ""),
        ("Trigger", release.trigger.value + (f" of {release.rollback_of}" if release.rollback_of else "")),
        ("State", release.state.value),
        ("Duration", duration(release)),
        ("Release", release.id),
        ("Deployment", release.deployment_id or ""),
        ("Bundle", f"s3://{release.revision.bucket}/{release.revision.key}"),
        ("Break-glass", f"by {glass['actor']}: {glass['reason']}" if glass else ""),
    ]
    return [(name, value) for name, value in facts if value]


def email(notice: Notice) -> Email:
    reason = _event_reason(notice)
    receipt = receipt_line(notice.event)
    gates = [*approval_lines(notice), *([receipt] if receipt else [])]
    text = [f"{notice.label}: {notice.title}", "", reason, *gates, ""]
    text += [f"{name}: {value}" for name, value in _facts(notice)]
    rows = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in _facts(notice)
    )
    parts = [
        f"<h2>{html.escape(notice.label)}: {html.escape(notice.title)}</h2>",
        f"<p>{html.escape(reason)}</p>",
        *(f"<p>{html.escape(line)}</p>" for line in gates),
        f"<table>{rows}</table>",
    ]
    for failed in notice.failed_instances:
        step = failed.get("lifecycle_event") or failed.get("status", "")
        summary = f"{failed.get('instance', '?')}: {step} failed" + (
            f" ({failed.get('script')}, {failed.get('error_code')})" if failed.get("script") else ""
        )
        text += ["", summary, str(failed.get("message") or ""), str(failed.get("log_tail") or "")]
        parts.append(f"<h3>{html.escape(summary)}</h3>")
        if failed.get("message"):
            parts.append(f"<p>{html.escape(str(failed['message']))}</p>")
        if failed.get("log_tail"):
            parts.append(f"<pre>{html.escape(str(failed['log_tail']))}</pre>")
    if notice.not_healthy:
        text += ["", "Targets not healthy:"]
        items = []
        for target in notice.not_healthy:
            line = " ".join(
                str(target.get(name) or "") for name in ("target", "state", "reason", "description")
            ).strip()
            text.append(f"  {line}")
            items.append(f"<li>{html.escape(line)}</li>")
        parts.append(f"<h3>Targets not healthy</h3><ul>{''.join(items)}</ul>")
    return Email(subject=subject(notice), text="\n".join(text).strip() + "\n", html="\n".join(parts))


def payload(notice: Notice) -> dict[str, Any]:
    """The machine-readable notification (generic webhook, SNS): the release and the event."""
    return {
        "notification": notice.notification,
        "release": notice.release.to_dict(),
        "event": notice.event.to_dict(),
        # Who started the release during a freeze by break-glass, and why; null for any other.
        "break_glass": break_glass(notice.release),
        "diagnostics": {
            "failed_instances": [dict(item) for item in notice.failed_instances],
            "not_healthy": [dict(item) for item in notice.not_healthy],
        },
    }


def payload_json(notice: Notice) -> bytes:
    return json.dumps(payload(notice), sort_keys=True, separators=(",", ":")).encode()


def sns_subject(notice: Notice) -> str:
    """SNS wants an ASCII subject under 100 characters, without line breaks."""
    ascii_only = subject(notice).encode("ascii", "replace").decode().replace("\n", " ").replace("\r", " ")
    return _truncate(ascii_only, 99).replace("…", "~")

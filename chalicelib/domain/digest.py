"""The weekly DORA digest of a pipeline (``[pipeline.digest]``): when it is due, the windows it
compares and the Slack message it posts. Pure: the use case (chalicelib/service/digest.py) reads
the releases, claims the week and posts.

A digest is due from its weekday and hour (UTC) of each ISO week on: the first reconcile at or
after that moment posts it, once for the week. Its window is the ``days`` before that moment, not
before the reconcile that posts it, so a late or retried post reports the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from chalicelib.domain.dora import Durations, PipelineStats
from chalicelib.domain.notification_content import SlackMessage
from chalicelib.domain.pipelines import DigestSettings


@dataclass(frozen=True)
class DigestWeek:
    """One ISO week's digest of a pipeline: ``label`` (``2026-W50``) names it in the table and in
    its Slack post's mark; ``due_at`` is when it became due and where its window ends."""

    label: str
    due_at: datetime


def due_week(settings: DigestSettings, now: datetime) -> DigestWeek | None:
    """The digest of ``now``'s ISO week (UTC) once its weekday and hour have come; None before.

    A digest due on Sunday at 23:00 is due only in that last hour of its week: the week after
    has its own."""
    moment = now.astimezone(UTC)
    year, week, weekday = moment.isocalendar()
    monday = moment.date() - timedelta(days=weekday - 1)
    due_at = datetime.combine(monday + timedelta(days=settings.weekday), time(settings.hour), UTC)
    if moment < due_at:
        return None
    return DigestWeek(f"{year}-W{week:02d}", due_at)


@dataclass(frozen=True)
class DigestWindows:
    """The window the digest reports (``days`` up to its due time) and the one before it."""

    since: datetime
    until: datetime
    previous_since: datetime

    @classmethod
    def of(cls, settings: DigestSettings, week: DigestWeek) -> DigestWindows:
        span = timedelta(days=settings.days)
        return cls(since=week.due_at - span, until=week.due_at, previous_since=week.due_at - 2 * span)


def digest_message(current: PipelineStats, previous: PipelineStats) -> SlackMessage:
    """The digest as Slack shows it: the four keys of the window, each with the window before."""
    days = round((current.until - current.since) / timedelta(days=1))
    heading = (
        f"DORA digest for {current.pipeline}: the {days} days to "
        f"{current.until:%a %d %b %Y %H:%M} UTC, compared with the {days} days before"
    )
    lines = [
        "*Deployment frequency*: " + _frequency(current) + f" (before: {_frequency(previous)})",
        "*Lead time for changes*: "
        + _durations(current.lead_time, "change")
        + f" (before: {_durations(previous.lead_time, 'change')})",
        "*Change failure rate*: " + _failure_rate(current) + f" (before: {_failure_rate(previous)})",
        "*Time to restore*: " + _restores(current) + f" (before: {_restores(previous)})",
    ]
    body = "\n".join(f"• {line}" for line in lines)
    return SlackMessage(
        text=f"{heading}\n{body}",
        blocks=[
            {"type": "header", "text": {"type": "plain_text", "text": f"DORA digest: {current.pipeline}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": heading}]},
            {"type": "section", "text": {"type": "mrkdwn", "text": body}},
        ],
    )


def _frequency(stats: PipelineStats) -> str:
    return f"{stats.deployments} verified ({stats.deployments_per_day:.2f}/day)"


def _durations(durations: Durations, what: str) -> str:
    if durations.count == 0:
        return f"no {what}s"
    plural = "" if durations.count == 1 else "s"
    return (
        f"median {span_text(durations.median_s)}, p90 {span_text(durations.p90_s)} "
        f"({durations.count} {what}{plural})"
    )


def _failure_rate(stats: PipelineStats) -> str:
    if stats.change_failure_rate is None:
        return "nothing deployed"
    return f"{stats.change_failure_rate:.0%} ({stats.change_failures} of {stats.reached_deployment})"


def _restores(stats: PipelineStats) -> str:
    restored = _durations(stats.time_to_restore, "restore")
    if stats.unrestored_failures:
        return f"{restored}, {stats.unrestored_failures} not restored yet"
    return restored


def span_text(seconds: float | None) -> str:
    """A duration as people read it: ``45s``, ``12m``, ``3.5h``, ``2.1d``."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"

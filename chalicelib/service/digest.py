"""The weekly DORA digest (``[pipeline.digest]``), driven by reconcile: once a pipeline's digest
is due (chalicelib/domain/digest.py), the week is claimed in the table, the pipeline's figures
for the window and the one before are computed as ``GET /stats`` computes them, and one Slack
message is posted through the digest's slack route.

Exactly once per pipeline and week: a reconcile that dies after the claim leaves it to lapse and
a later reconcile posts; one that dies after the post and before recording its ts leaves a claim
that a later reconcile takes over, and that one looks for the post (its mark in the message
metadata, as a notification's retry does) before posting. Only a bot that may not read the
channel's history (``channels:history``) posts a second time then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain.digest import DigestWindows, digest_message, due_week
from chalicelib.domain.dora import pipeline_stats
from chalicelib.domain.notifications import SlackPostMark, SlackThread
from chalicelib.domain.pipelines import Pipeline
from chalicelib.log import logger
from chalicelib.service.notification_ports import Claim, Secrets, SlackThreads
from chalicelib.service.stats import releases_since
from chalicelib.service.wiring import Wiring


class DigestLog(Protocol):
    """One record per (pipeline, ISO week), written conditionally."""

    def claim(self, pipeline: str, week: str, now: datetime) -> Claim | None:
        """CLAIMED (the first attempt), RETAKEN (an earlier attempt gave up or died, and may have
        posted), or None: posted already, or being posted."""
        ...

    def record(self, pipeline: str, week: str, posted: SlackThread, now: datetime) -> None: ...

    def release(self, pipeline: str, week: str) -> None:
        """Give up this attempt's claim: the next reconcile takes it at once."""
        ...


@dataclass(frozen=True)
class DigestAdapters:
    log: DigestLog
    slack: SlackThreads
    secrets: Secrets


def post_digest_if_due(wiring: Wiring, pipeline: Pipeline) -> dict[str, Any]:
    """Post the pipeline's digest of this week when it is due and nobody has. Returns what it did:
    ``{"digest": {"week", "channel", "ts"}}``, or nothing. A pipeline without a digest, or whose
    digest is not due yet, makes no AWS call."""
    settings, digests = pipeline.digest, wiring.digests
    if settings is None or digests is None:
        return {}
    now = wiring.clock.now()
    week = due_week(settings, now)
    if week is None:
        return {}
    claim = digests.log.claim(pipeline.name, week.label, now)
    if claim is None:
        return {}
    try:
        windows = DigestWindows.of(settings, week)
        releases = releases_since(wiring, pipeline.name, windows.previous_since)
        message = digest_message(
            pipeline_stats(pipeline.name, releases, windows.since, windows.until),
            pipeline_stats(pipeline.name, releases, windows.previous_since, windows.since),
        )
        token = digests.secrets.get(settings.token)
        mark = SlackPostMark.digest(pipeline.name, week.label, settings.channel)
        # Only a retaken claim can have an earlier post to find: it was made after the due time.
        found = (
            digests.slack.find_card(token, settings.channel, mark, week.due_at)
            if claim is Claim.RETAKEN
            else None
        )
        if found is not None:
            logger.info("found the digest an earlier reconcile posted", extra={"week": week.label})
        posted = found or digests.slack.post(
            token, settings.channel, message.text, message.blocks, None, mark=mark
        )
    except Exception:
        digests.log.release(pipeline.name, week.label)
        raise
    digests.log.record(pipeline.name, week.label, posted, now)
    logger.info(
        "weekly digest posted", extra={"week": week.label, "channel": posted.channel, "ts": posted.ts}
    )
    return {"digest": {"week": week.label, "channel": posted.channel, "ts": posted.ts}}

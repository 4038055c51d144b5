"""What every use case receives: its wiring (the adapters, the pipelines and a clock, built by
chalicelib/bootstrap.py), and the retry of a write that lost a race. Named ``Wiring``, not
``Context``, so it is never mistaken for the Lambda context a handler also receives."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from chalicelib.domain.pipelines import PipelinesConfig
from chalicelib.service.notification_ports import NotificationAdapters
from chalicelib.service.ports import (
    Alarms,
    ArtifactStore,
    Clock,
    Deployments,
    LoadBalancing,
    ReleaseStore,
    TrafficMetrics,
    VerifyQueue,
    WriteConflict,
)

if TYPE_CHECKING:
    # Only the Slack actions' functions and reconcile use them: not imported at every cold start.
    from chalicelib.service.digest import DigestAdapters
    from chalicelib.service.slack_actions import SlackActionAdapters

T = TypeVar("T")

# Twenty uploads racing for one slot each lose at most nineteen times; leave room beyond that.
MAX_WRITE_ATTEMPTS = 40


@dataclass(frozen=True)
class Wiring:
    store: ReleaseStore
    artifacts: ArtifactStore
    deployments: Deployments
    load_balancing: LoadBalancing
    verify_queue: VerifyQueue
    pipelines: PipelinesConfig
    clock: Clock
    # The releases table's name: the ``coordinator`` dimension of every metric (chalicelib.log).
    coordinator: str
    # None where the notify queue is not configured: nothing is published or delivered then.
    notifications: NotificationAdapters | None = None
    # None where no CloudWatch is wired: a pipeline that names alarms cannot be verified then.
    alarms: Alarms | None = None
    # None where no CloudWatch is wired: releases then end without a receipt, and a bake that
    # verify.compare judges counts as too quiet to judge.
    traffic: TrafficMetrics | None = None
    # None where the Slack actions queue is not configured: the release card's buttons then
    # cannot be taken (POST /slack/interactions answers 503).
    slack_actions: SlackActionAdapters | None = None
    # None where no pipeline has a weekly digest ([pipeline.digest]): reconcile posts none then.
    digests: DigestAdapters | None = None


class ConflictPersisted(RuntimeError):
    """A write kept losing races; raised so Lambda retries the event later."""


def retry_on_conflict(decide: Callable[[], T]) -> T:
    """Run read-decide-write until the conditional write wins.

    ``decide`` must re-read everything it writes: a loser re-reads and re-decides.
    """
    for attempt in range(MAX_WRITE_ATTEMPTS):
        try:
            return decide()
        except WriteConflict:
            # Full jitter keeps racing writers from colliding again in lockstep.
            time.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))
    raise ConflictPersisted(f"write still conflicting after {MAX_WRITE_ATTEMPTS} attempts")

"""What every use case receives: its adapters, the pipelines and a clock."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from chalicelib.domain.pipelines import PipelinesConfig
from chalicelib.service.notification_ports import NotificationAdapters
from chalicelib.service.ports import (
    ArtifactStore,
    Clock,
    Deployments,
    LoadBalancing,
    ReleaseStore,
    VerifyQueue,
    WriteConflict,
)

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
    # None where the notify queue is not configured: nothing is published or delivered then.
    notifications: NotificationAdapters | None = None


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

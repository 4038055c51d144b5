"""Submitting a revision as a release: the one way uploads, API deploys, redeploys and manual
rollbacks enter the pipeline's lane."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from chalicelib.domain.lane import Decision, Lane, Submission
from chalicelib.domain.release import Release, Step
from chalicelib.service.slot_flow import LaneRead, run_in_lane, start_next
from chalicelib.service.wiring import Wiring


def submit(
    wiring: Wiring,
    submission: Submission,
    *,
    known: LaneRead | None = None,
    with_new: Callable[[datetime], Step] | None = None,
) -> tuple[Release, bool]:
    """Record the release and start or queue it. Returns the release and whether this call
    created it (False: it existed already, and nothing new was done but a repair of the lane:
    a repeat picks up a start that was handed back or abandoned, else leaves it alone).
    ``known``: the pipeline's lane with the release, as the caller just read it. ``with_new``:
    a step of another release written in the same transaction as a new release (a promotion's
    link in its upstream release's history), so that both are written or neither."""

    def decide(lane: Lane, now: datetime) -> Decision:
        decision = lane.submit(submission, now)
        if with_new is None or not decision.created:
            return decision
        also = with_new(now)
        change = decision.change
        return dataclasses.replace(
            decision,
            change=dataclasses.replace(
                change,
                releases=[*change.releases, also.release],
                events={**change.events, also.release.id: also.events},
            ),
        )

    decision = run_in_lane(wiring, submission.pipeline.name, [submission.release_id], decide, known=known)
    start_next(wiring, decision)
    release = decision.subject
    assert release is not None  # a submission always names its release, new or recorded
    return release, decision.created

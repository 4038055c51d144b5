"""Submitting a revision as a release: the one way uploads, API deploys, redeploys and manual
rollbacks enter the pipeline's lane."""

from __future__ import annotations

from chalicelib.domain.lane import Submission
from chalicelib.domain.release import Release
from chalicelib.service.slot_flow import LaneRead, run_in_lane, start_next
from chalicelib.service.wiring import Wiring


def submit(wiring: Wiring, submission: Submission, *, known: LaneRead | None = None) -> tuple[Release, bool]:
    """Record the release and start or queue it. Returns the release and whether this call
    created it (False: it existed already, and nothing new was done but a repair of the lane:
    a repeat picks up a start that was handed back or abandoned, else leaves it alone).
    ``known``: the pipeline's lane with the release, as the caller just read it."""
    decision = run_in_lane(
        wiring,
        submission.pipeline.name,
        [submission.release_id],
        lambda lane, now: lane.submit(submission, now),
        known=known,
    )
    start_next(wiring, decision)
    release = decision.subject
    assert release is not None  # a submission always names its release, new or recorded
    return release, decision.created

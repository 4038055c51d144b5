"""Approve or reject a release awaiting approval, on behalf of a person the pipelines file
allows (``[pipeline.approval]``): through the signed API (an IAM principal) or the Slack card (a
Slack user). The lane decides; an approved release that takes the slot starts here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from chalicelib.domain.api_requests import ConflictingState, NotFound, known_release_id
from chalicelib.domain.lane import Decision, Lane
from chalicelib.domain.permissions import Person
from chalicelib.domain.release import Release, ReleaseState
from chalicelib.log import logger
from chalicelib.service.slot_flow import run_in_lane, start_next
from chalicelib.service.wiring import Wiring

_Ask = Callable[[Lane, datetime], Decision]


def approve(wiring: Wiring, release_id: str, person: Person, comment: str | None) -> Release:
    """The release takes the slot (and starts) or its place in line; freeze, ``on_busy`` and
    alarms apply as to a new release."""
    return _decide(
        wiring, release_id, person, lambda lane, now: lane.approve(release_id, person, comment, now)
    )


def reject(wiring: Wiring, release_id: str, person: Person, comment: str | None) -> Release:
    """The release stops, with who rejected it and why."""
    return _decide(
        wiring, release_id, person, lambda lane, now: lane.reject(release_id, person, comment, now)
    )


def _decide(wiring: Wiring, release_id: str, person: Person, ask: _Ask) -> Release:
    found = wiring.store.get_release(release_id) if known_release_id(release_id) else None
    if found is None:
        raise NotFound(f"no release {release_id[:200]!r}")
    with logger.append_context_keys(release_id=release_id, pipeline=found.pipeline, actor=person.name):
        decision = run_in_lane(wiring, found.pipeline, [release_id], ask)
        start_next(wiring, decision)
    release = decision.subject
    assert release is not None  # the lane refuses, or names the release it moved
    if release.state is ReleaseState.STOPPED and "approval_expired" in _last_detail(decision):
        raise ConflictingState(f"release {release.id}: {release.reason}")
    return wiring.store.get_release(release.id) or release


def _last_detail(decision: Decision) -> dict[str, object]:
    events = decision.change.events.get(decision.subject.id, ()) if decision.subject else ()
    return dict(events[-1].detail) if events else {}

"""When a lane must next be looked at (``next_wake``), and the wake-up message on the verify
queue (chalicelib/domain/wakeups.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from chalicelib.domain.freeze import FreezeWindow
from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.slot import ApprovalMark, PipelineSlot
from chalicelib.domain.verification import MAX_DELAY_S, VerifyRequest
from chalicelib.domain.wakeups import WakeUp, next_wake, verify_queue_message

BERLIN = ZoneInfo("Europe/Berlin")
HOLIDAY = FreezeWindow.one_off(
    "holiday freeze", "UTC", datetime(2026, 12, 24, 10), datetime(2026, 12, 24, 18)
)
# Every Friday 16:00 to Monday 08:00 Berlin time. Berlin moved to summer time on Sunday 30 March
# 2025 (02:00 -> 03:00) and back on Sunday 26 October 2025 (03:00 -> 02:00).
WEEKEND = FreezeWindow.recurring(
    "weekend", "Europe/Berlin", datetime(2025, 3, 21, 16), "FREQ=WEEKLY;BYDAY=FR", timedelta(hours=64)
)
PIPELINE = Pipeline("api-prod", "bucket", "api/", "api", "api-prod", freeze=(HOLIDAY,))
FROZEN = datetime(2026, 12, 24, 12, tzinfo=UTC)
FREE_WITH_A_WAITING_RELEASE = PipelineSlot("api-prod", active=None, waiting=("rel-waiting",))


def test_a_freeze_holding_a_waiting_release_wakes_the_lane_at_its_end() -> None:
    assert next_wake(PIPELINE, FREE_WITH_A_WAITING_RELEASE, FROZEN) == datetime(2026, 12, 24, 18, tzinfo=UTC)


@pytest.mark.parametrize(
    ("slot", "why"),
    [
        (PipelineSlot("api-prod"), "nothing waits"),
        (PipelineSlot("api-prod", last_good="rel-good"), "nothing waits, a release succeeded before"),
        (
            PipelineSlot("api-prod", active="rel-deploying", waiting=("rel-waiting",)),
            "the release holding the slot hands it on when it ends",
        ),
    ],
)
def test_a_frozen_lane_without_a_release_the_freeze_holds_is_not_woken(slot: PipelineSlot, why: str) -> None:
    assert next_wake(PIPELINE, slot, FROZEN) is None, why


def test_a_waiting_rollback_is_no_reason_to_wake() -> None:
    """Rollbacks are exempt from freezes: one waits only behind a release holding the slot (an
    external deployment), which hands the slot to it when it ends, freeze or not."""
    slot = PipelineSlot("api-prod", active="ext-d-1", waiting=("rb-rel-failed",))
    assert next_wake(PIPELINE, slot, FROZEN) is None


@pytest.mark.parametrize(
    "now",
    [datetime(2026, 12, 24, 9, 59, tzinfo=UTC), datetime(2026, 12, 24, 18, tzinfo=UTC)],
    ids=["before the freeze", "at its end"],
)
def test_no_freeze_no_wake(now: datetime) -> None:
    assert next_wake(PIPELINE, FREE_WITH_A_WAITING_RELEASE, now) is None


@pytest.mark.parametrize(
    ("now", "local_end"),
    [
        (datetime(2025, 3, 29, 12, tzinfo=UTC), datetime(2025, 3, 31, 8)),  # ends in summer time
        (datetime(2025, 10, 26, 1, 30, tzinfo=UTC), datetime(2025, 10, 27, 8)),  # ends in winter time
    ],
    ids=["spring change", "autumn change"],
)
def test_a_recurring_freeze_across_a_daylight_saving_change_wakes_at_its_local_end(
    now: datetime, local_end: datetime
) -> None:
    pipeline = dataclasses.replace(PIPELINE, freeze=(WEEKEND,))
    due = next_wake(pipeline, FREE_WITH_A_WAITING_RELEASE, now)
    assert due is not None
    assert due.astimezone(BERLIN).replace(tzinfo=None) == local_end
    assert due == local_end.replace(tzinfo=BERLIN).astimezone(UTC)


def test_overlapping_windows_wake_the_lane_at_the_end_of_the_chain() -> None:
    evening = FreezeWindow.one_off("evening", "UTC", datetime(2026, 12, 24, 17), datetime(2026, 12, 24, 22))
    pipeline = dataclasses.replace(PIPELINE, freeze=(HOLIDAY, evening))
    assert next_wake(pipeline, FREE_WITH_A_WAITING_RELEASE, FROZEN) == datetime(2026, 12, 24, 22, tzinfo=UTC)


def test_a_pending_approval_wakes_the_lane_when_it_expires_the_earliest_reason_first() -> None:
    soon, later = datetime(2026, 12, 24, 11, tzinfo=UTC), datetime(2026, 12, 24, 20, tzinfo=UTC)
    awaiting = PipelineSlot(
        "api-prod", awaiting_approval=(ApprovalMark("rel-late", later), ApprovalMark("rel-soon", soon))
    )
    assert next_wake(PIPELINE, awaiting, FROZEN) == soon
    assert next_wake(PIPELINE, dataclasses.replace(awaiting, active="rel-deploying"), FROZEN) == soon
    # Frozen with a release waiting for the freeze (ends 18:00) and one awaiting approval: the
    # earlier of the two.
    both = dataclasses.replace(FREE_WITH_A_WAITING_RELEASE, awaiting_approval=(ApprovalMark("rel-a", later),))
    assert next_wake(PIPELINE, both, FROZEN) == datetime(2026, 12, 24, 18, tzinfo=UTC)
    assert next_wake(PIPELINE, dataclasses.replace(both, waiting=()), FROZEN) == later


def test_a_wake_up_is_delayed_until_it_is_due_at_most_as_long_as_sqs_allows() -> None:
    wake = WakeUp("api-prod", datetime(2026, 12, 24, 18, tzinfo=UTC))
    assert wake.delay_s(wake.due_at - timedelta(seconds=90, milliseconds=500)) == 91  # never early
    assert wake.delay_s(wake.due_at - timedelta(hours=6)) == MAX_DELAY_S
    assert wake.delay_s(wake.due_at) == 0
    assert wake.delay_s(wake.due_at + timedelta(minutes=5)) == 0


def test_a_wake_up_round_trips_and_health_checks_still_read_as_health_checks() -> None:
    wake = WakeUp("api-prod", datetime(2026, 12, 24, 18, tzinfo=UTC))
    assert verify_queue_message(wake.to_message()) == wake
    check = VerifyRequest("rel-1", "d-1", 2, pipeline="api-prod")
    assert verify_queue_message(check.to_message()) == check


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"kind": "sleep", "version": 1}, "kind 'sleep' is not one this coordinator sends"),
        ({"kind": "wake", "pipeline": "api-prod", "due_at": "2026-12-24T18:00:00+00:00"}, "version None"),
        ({"kind": "wake", "version": 2, "pipeline": "p", "due_at": "2026-12-24T18:00:00+00:00"}, "version 2"),
        ({"kind": "wake", "version": True, "pipeline": "p", "due_at": "2026-12-24T18:00:00Z"}, "version"),
        ({"kind": "wake", "version": 1, "pipeline": "", "due_at": "2026-12-24T18:00:00+00:00"}, "pipeline"),
        ({"kind": "wake", "version": 1, "pipeline": 7, "due_at": "2026-12-24T18:00:00+00:00"}, "pipeline"),
        ({"kind": "wake", "version": 1, "pipeline": "p", "due_at": "2026-12-24T18:00:00"}, "with a zone"),
        ({"kind": "wake", "version": 1, "pipeline": "p", "due_at": "Christmas"}, "due_at"),
        ({"kind": "wake", "version": 1, "pipeline": "p", "due_at": 1766599200}, "due_at"),
    ],
)
def test_malformed_wake_messages_say_why(message: dict[str, Any], problem: str) -> None:
    with pytest.raises(MalformedEvent, match=problem):
        verify_queue_message(message)

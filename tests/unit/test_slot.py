from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.slot import BusyPolicy, PipelineSlot, UploadMark


def test_free_slot_is_taken() -> None:
    admission = PipelineSlot("p").admit("r1", BusyPolicy.QUEUE)
    assert admission.active
    assert admission.slot.active == "r1"


def test_queue_policy_waits_in_arrival_order() -> None:
    slot = PipelineSlot("p", active="r1")
    for release_id in ("r2", "r3"):
        admission = slot.admit(release_id, BusyPolicy.QUEUE)
        assert not admission.active
        slot = admission.slot
    assert slot.waiting == ("r2", "r3")
    slot = slot.free("r1").promote("r2")
    assert (slot.active, slot.waiting) == ("r2", ("r3",))


def test_supersede_policy_keeps_only_the_newest() -> None:
    admission = PipelineSlot("p", active="r1", waiting=("r2", "r3")).admit("r4", BusyPolicy.SUPERSEDE)
    assert admission.slot.waiting == ("r4",)
    assert admission.superseded == ("r2", "r3")


def test_a_waiting_slot_with_no_active_release_is_not_jumped() -> None:
    admission = PipelineSlot("p", waiting=("r1",)).admit("r2", BusyPolicy.QUEUE)
    assert not admission.active
    assert admission.slot.waiting == ("r1", "r2")


@given(st.lists(st.sampled_from(["admit", "admit_super", "finish"]), max_size=40))
def test_one_active_and_every_release_accounted_for(operations: list[str]) -> None:
    slot = PipelineSlot("p")
    admitted: list[str] = []
    gone: set[str] = set()
    for number, operation in enumerate(operations):
        if operation.startswith("admit"):
            policy = BusyPolicy.SUPERSEDE if operation == "admit_super" else BusyPolicy.QUEUE
            admission = slot.admit(f"r{number}", policy)
            slot = admission.slot
            admitted.append(f"r{number}")
            gone.update(admission.superseded)
        elif slot.active is not None:
            gone.add(slot.active)
            slot = slot.free(slot.active)
            if slot.waiting:
                slot = slot.promote(slot.waiting[0])
        held = [r for r in (slot.active, *slot.waiting) if r is not None]
        assert len(held) == len(set(held))
        assert set(held) | gone == set(admitted)
        assert not (set(held) & gone)
        assert slot.active is not None or not slot.waiting


T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def mark(release_id: str, second: float) -> UploadMark:
    return UploadMark(release_id, T0 + timedelta(seconds=second))


def test_an_upload_stored_before_one_that_started_is_turned_away() -> None:
    """S3's LastModified orders uploads, not event arrival (issue 12, fault 3)."""
    started = PipelineSlot("p").admit("v2", BusyPolicy.QUEUE, mark("v2", 1))
    assert started.active
    assert started.slot.newest_started == mark("v2", 1)
    done = started.slot.free("v2")

    late = done.admit("v1", BusyPolicy.QUEUE, mark("v1", 0))

    assert late.turned_away_by == mark("v2", 1)
    assert late.slot == done
    assert not late.active
    assert done.admit("v3", BusyPolicy.QUEUE, mark("v3", 2)).active
    assert done.admit("api-deploy", BusyPolicy.QUEUE).active  # an explicit deploy is not ordered


def test_queue_keeps_waiting_uploads_in_s3_order_and_promotion_moves_the_mark() -> None:
    slot = PipelineSlot("p").admit("v1", BusyPolicy.QUEUE, mark("v1", 0)).slot
    slot = slot.admit("api", BusyPolicy.QUEUE).slot
    slot = slot.admit("v3", BusyPolicy.QUEUE, mark("v3", 2)).slot
    slot = slot.admit("v2", BusyPolicy.QUEUE, mark("v2", 1)).slot
    assert slot.waiting == ("api", "v2", "v3")

    slot = slot.free("v1").promote("api")
    assert slot.newest_started == mark("v1", 0)
    slot = slot.free("api").promote("v2")
    assert (slot.newest_started, slot.waiting_uploads) == (mark("v2", 1), (mark("v3", 2),))
    assert slot.free("v3").waiting_uploads == ()


def test_supersede_never_replaces_a_newer_waiting_upload_with_an_older_one() -> None:
    slot = PipelineSlot("p", active="v1", newest_started=mark("v1", 0))
    slot = slot.admit("v3", BusyPolicy.SUPERSEDE, mark("v3", 2)).slot

    older = slot.admit("v2", BusyPolicy.SUPERSEDE, mark("v2", 1))
    assert older.turned_away_by == mark("v3", 2)
    newer = slot.admit("v4", BusyPolicy.SUPERSEDE, mark("v4", 3))
    assert (newer.superseded, newer.slot.waiting, newer.slot.waiting_uploads) == (
        ("v3",),
        ("v4",),
        (mark("v4", 3),),
    )


def test_uploads_stored_in_the_same_second_are_admitted_in_arrival_order() -> None:
    """LastModified has whole seconds: within one second S3's order is unknown, and no upload
    is turned away on a guess."""
    slot = PipelineSlot("p").admit("a", BusyPolicy.QUEUE, mark("a", 0.9)).slot.free("a")

    same_second = slot.admit("b", BusyPolicy.QUEUE, mark("b", 0.1))

    assert same_second.active
    assert same_second.slot.newest_started == mark("b", 0.1)


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=20))
def test_started_uploads_never_go_back_in_s3_order(seconds: list[int]) -> None:
    """Whatever order the events arrive in and however the slot drains, each upload that
    starts was stored no earlier than every upload that started before it."""
    slot = PipelineSlot("p")
    started: list[int] = []
    for number, second in enumerate(seconds):
        admission = slot.admit(f"r{number}", BusyPolicy.QUEUE, mark(f"r{number}", second))
        slot = admission.slot
        if admission.active:
            started.append(second)
        if number % 3 == 2 and slot.active is not None:  # now and then the active one ends
            slot = slot.free(slot.active)
            if slot.waiting:
                head = slot.waiting[0]
                slot = slot.promote(head)
                started.append(seconds[int(head.removeprefix("r"))])
    assert started == sorted(started)

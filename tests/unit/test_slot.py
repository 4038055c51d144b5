from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.slot import BusyPolicy, PipelineSlot


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
    slot, head = slot.free("r1").promote_next()
    assert (head, slot.active, slot.waiting) == ("r2", "r2", ("r3",))


def test_supersede_policy_keeps_only_the_newest() -> None:
    admission = PipelineSlot("p", active="r1", waiting=("r2", "r3")).admit("r4", BusyPolicy.SUPERSEDE)
    assert admission.slot.waiting == ("r4",)
    assert admission.superseded == ("r2", "r3")


def test_a_waiting_slot_with_no_active_release_is_not_jumped() -> None:
    admission = PipelineSlot("p", waiting=("r1",)).admit("r2", BusyPolicy.QUEUE)
    assert not admission.active
    assert admission.slot.waiting == ("r1", "r2")


def test_promote_needs_a_free_slot() -> None:
    slot = PipelineSlot("p", active="r1", waiting=("r2",))
    assert slot.promote_next() == (slot, None)


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
            slot, _ = slot.free(slot.active).promote_next()
        held = [r for r in (slot.active, *slot.waiting) if r is not None]
        assert len(held) == len(set(held))
        assert set(held) | gone == set(admitted)
        assert not (set(held) & gone)
        assert slot.active is not None or not slot.waiting

"""The gates of issue 14 in the lane, with no AWS: approvals (await, supersede, queue, approve,
reject, expire, who may), break-glass through a freeze, and an alarm in ALARM holding or failing a
start. Each case drives the lane as the use cases do (load, decide, commit), against
``MemoryStore`` from the lane's hypothesis suite."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.api_requests import Forbidden
from chalicelib.domain.freeze import FreezeWindow
from chalicelib.domain.lane import Decision, Finish, Lane, NeedsAlarms, NeedsReleases, Submission
from chalicelib.domain.permissions import ApprovalPolicy, OnNewer, Person
from chalicelib.domain.pipelines import AlarmAtStart, Pipeline, VerifySettings
from chalicelib.domain.release import BREAK_GLASS, ReleaseState, Revision, Trigger
from chalicelib.domain.verification import AlarmReading, AlarmState, AlarmStatus
from tests.unit.test_lane import MemoryStore

pytestmark = pytest.mark.timeout(60)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PIPELINE = "api-prod"
ROLE = "arn:aws:iam::123456789012:role/Releasers"
ALICE = Person(iam_arn="arn:aws:sts::123456789012:assumed-role/Releasers/alice")
MALLORY = Person(iam_arn="arn:aws:sts::123456789012:assumed-role/Developers/mallory")
SLACK_LEAD = Person(slack_user="U0LEAD", slack_name="lead")
APPROVAL = ApprovalPolicy(required=True, approvers=(ROLE,), slack_approvers=("U0LEAD",))


class Driver:
    """The use cases' loop over one lane: load the subjects, decide, load what the lane asks for,
    commit."""

    def __init__(self, pipeline: Pipeline, alarms: Sequence[AlarmStatus] = ()) -> None:
        self.pipeline = pipeline
        self.store = MemoryStore()
        self.now = T0
        self.alarms = tuple(alarms)
        self.alarm_reads = 0

    def run(self, subjects: Sequence[str], ask: Callable[[Lane, datetime], Decision]) -> Decision:
        lane = Lane(
            PIPELINE,
            self.pipeline,
            self.store.slot,
            {release_id: self.store.releases.get(release_id) for release_id in subjects},
        )
        while True:
            try:
                decision = ask(lane, self.now)
                break
            except NeedsReleases as needs:
                lane = lane.with_releases({i: self.store.releases.get(i) for i in needs.release_ids})
            except NeedsAlarms as needs:
                self.alarm_reads += 1
                lane = dataclasses.replace(lane, alarms=AlarmReading(needs.names, self.alarms))
        self.store.commit(decision.change)
        return decision

    def submit(
        self,
        release_id: str,
        trigger: Trigger = Trigger.UPLOAD,
        stored_at: datetime | None = None,
        break_glass: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Decision:
        submission = Submission(
            release_id,
            self.pipeline,
            Revision("bucket", f"api/{release_id}.zip", "v1", None),
            trigger,
            actor=ALICE.iam_arn,
            stored_at=stored_at or (self.now if trigger is Trigger.UPLOAD else None),
            break_glass=break_glass,
            metadata=metadata or {},
        )
        return self.run([release_id], lambda lane, now: lane.submit(submission, now))

    def state(self, release_id: str) -> ReleaseState:
        return self.store.releases[release_id].state

    def last_event(self, release_id: str) -> dict[str, object]:
        return self.store.history[release_id][-1][2]


def gated(**changes: Any) -> Pipeline:
    return dataclasses.replace(
        Pipeline(PIPELINE, "bucket", "api/", "api", "api-prod", approval=APPROVAL), **changes
    )


def test_a_release_that_needs_approval_waits_without_taking_the_slot() -> None:
    lane = Driver(gated())
    lane.submit("a")
    assert lane.state("a") is ReleaseState.AWAITING_APPROVAL
    assert lane.store.slot.active is None
    [mark] = lane.store.slot.awaiting_approval
    assert mark.expires_at == T0 + APPROVAL.expires_after
    assert lane.last_event("a")["approval"] == {"expires_at": mark.expires_at.isoformat()}


def test_a_newer_upload_supersedes_the_pending_approval() -> None:
    lane = Driver(gated())
    lane.submit("a")
    lane.now += timedelta(seconds=5)
    lane.submit("b")
    assert lane.state("a") is ReleaseState.SUPERSEDED
    assert lane.last_event("a")["superseded_by"] == "b"
    assert [mark.release_id for mark in lane.store.slot.awaiting_approval] == ["b"]


def test_an_upload_stored_before_the_pending_one_is_the_one_superseded() -> None:
    """S3's events are unordered: the late event of an older build never replaces a newer one."""
    lane = Driver(gated())
    lane.submit("new", stored_at=T0 + timedelta(seconds=10))
    lane.submit("old", stored_at=T0)
    assert lane.state("old") is ReleaseState.SUPERSEDED
    assert lane.state("new") is ReleaseState.AWAITING_APPROVAL


def test_with_on_newer_queue_each_release_awaits_its_own_approval() -> None:
    lane = Driver(gated(approval=dataclasses.replace(APPROVAL, on_newer=OnNewer.QUEUE)))
    lane.submit("a")
    lane.submit("b")
    assert (lane.state("a"), lane.state("b")) == (ReleaseState.AWAITING_APPROVAL,) * 2


def test_an_approver_starts_the_release_and_is_recorded() -> None:
    lane = Driver(gated())
    lane.submit("a")
    decision = lane.run(["a"], lambda it, now: it.approve("a", ALICE, "ship it", now))
    assert lane.state("a") is ReleaseState.DEPLOYING
    assert decision.start is not None
    assert decision.start.id == "a"
    assert lane.store.slot.active == "a"
    assert lane.store.slot.awaiting_approval == ()
    assert lane.last_event("a").items() >= {"approved_by": ALICE.name, "comment": "ship it"}.items()


def test_a_slack_approver_listed_by_id_or_group_may_approve() -> None:
    policy = dataclasses.replace(APPROVAL, slack_approvers=("S0LEADS",))
    assert policy.allows(Person(slack_user="U0ANY", slack_groups=frozenset({"S0LEADS"})))
    assert not policy.allows(Person(slack_user="U0ANY"))
    assert APPROVAL.allows(SLACK_LEAD)


def test_someone_the_pipeline_does_not_name_is_refused_and_nothing_changes() -> None:
    lane = Driver(gated())
    lane.submit("a")
    before = (lane.store.releases["a"], lane.store.slot)
    for ask in (
        lambda it, now: it.approve("a", MALLORY, None, now),
        lambda it, now: it.reject("a", MALLORY, None, now),
        lambda it, now: it.approve("a", Person(slack_user="U0OTHER"), None, now),
    ):
        with pytest.raises(Forbidden, match="may not approve"):
            lane.run(["a"], ask)
    assert (lane.store.releases["a"], lane.store.slot) == before


def test_an_approved_release_waits_its_turn_when_the_slot_is_busy() -> None:
    lane = Driver(gated())
    lane.submit("rb", Trigger.ROLLBACK)  # rollbacks need no approval: it holds the slot
    assert lane.state("rb") is ReleaseState.DEPLOYING
    lane.submit("a")
    lane.run(["a"], lambda it, now: it.approve("a", ALICE, None, now))
    assert lane.state("a") is ReleaseState.QUEUED
    assert lane.store.slot.waiting == ("a",)


def test_an_approval_during_a_freeze_waits_for_the_freeze() -> None:
    start = T0.replace(tzinfo=None)
    freeze = FreezeWindow.one_off("holidays", "UTC", start, start + timedelta(hours=2))
    lane = Driver(gated(freeze=(freeze,)))
    lane.submit("a")
    lane.run(["a"], lambda it, now: it.approve("a", ALICE, None, now))
    assert lane.state("a") is ReleaseState.QUEUED
    assert "frozen" in lane.store.releases["a"].reason


def test_a_rejection_stops_the_release_with_who_and_why() -> None:
    lane = Driver(gated())
    lane.submit("a")
    lane.run(["a"], lambda it, now: it.reject("a", SLACK_LEAD, "breaks checkout", now))
    assert lane.state("a") is ReleaseState.STOPPED
    rejected = {"rejected_by": "slack:U0LEAD (lead)", "comment": "breaks checkout"}
    assert lane.last_event("a").items() >= rejected.items()
    assert lane.store.slot.awaiting_approval == ()


def test_an_approval_expires_into_stopped_at_the_first_repair_after_its_time() -> None:
    lane = Driver(gated())
    lane.submit("a")
    lane.now = T0 + APPROVAL.expires_after - timedelta(seconds=1)
    lane.run([], lambda it, now: it.repair(now))
    assert lane.state("a") is ReleaseState.AWAITING_APPROVAL
    lane.now += timedelta(seconds=1)
    decision = lane.run([], lambda it, now: it.repair(now))
    assert lane.state("a") is ReleaseState.STOPPED
    assert "approval expired" in lane.store.releases["a"].reason
    assert lane.last_event("a")["approval_expired"] == (T0 + APPROVAL.expires_after).isoformat()
    assert decision.report["expired"] == "a"
    assert lane.store.slot.awaiting_approval == ()


def test_approving_too_late_expires_the_release_instead() -> None:
    lane = Driver(gated())
    lane.submit("a")
    lane.now = T0 + APPROVAL.expires_after
    decision = lane.run(["a"], lambda it, now: it.approve("a", ALICE, None, now))
    assert decision.subject is not None
    assert decision.subject.state is ReleaseState.STOPPED
    assert lane.state("a") is ReleaseState.STOPPED


def test_a_release_awaiting_approval_can_be_cancelled() -> None:
    lane = Driver(gated())
    lane.submit("a")
    lane.run(["a"], lambda it, now: it.cancel("a", "someone", now))
    assert lane.state("a") is ReleaseState.STOPPED
    assert lane.store.slot.awaiting_approval == ()


# -- break-glass -------------------------------------------------------------------------------


def frozen() -> Pipeline:
    start = T0.replace(tzinfo=None) - timedelta(minutes=1)
    window = FreezeWindow.one_off("holidays", "UTC", start, start + timedelta(hours=2))
    return Pipeline(PIPELINE, "bucket", "api/", "api", "api-prod", freeze=(window,))


def test_break_glass_starts_a_release_during_a_freeze_and_records_it() -> None:
    lane = Driver(frozen())
    lane.submit("a", Trigger.API, break_glass="hotfix for the outage")
    assert lane.state("a") is ReleaseState.DEPLOYING
    assert lane.store.releases["a"].metadata[BREAK_GLASS] == "hotfix for the outage"
    record = lane.last_event("a")[BREAK_GLASS]
    assert isinstance(record, dict)
    assert record["reason"] == "hotfix for the outage"
    assert record["actor"] == ALICE.iam_arn
    assert record["freeze"]["reason"] == "holidays"


def test_break_glass_cannot_come_from_an_objects_metadata() -> None:
    lane = Driver(frozen())
    lane.submit("a", metadata={BREAK_GLASS: "sneaky"})
    assert lane.state("a") is ReleaseState.QUEUED
    assert BREAK_GLASS not in lane.store.releases["a"].metadata


def test_a_break_glass_release_behind_another_starts_when_the_slot_frees_despite_the_freeze() -> None:
    lane = Driver(frozen())
    lane.submit("rb", Trigger.ROLLBACK)
    lane.submit("a", Trigger.API, break_glass="hotfix")
    assert lane.state("a") is ReleaseState.QUEUED
    lane.run(["rb"], lambda it, now: it.finish(Finish("rb", ReleaseState.SUCCEEDED, "verified"), now))
    assert lane.state("a") is ReleaseState.DEPLOYING


def test_a_rollback_runs_during_a_freeze() -> None:
    lane = Driver(frozen())
    lane.submit("rb", Trigger.ROLLBACK)
    assert lane.state("rb") is ReleaseState.DEPLOYING


# -- alarms at start ---------------------------------------------------------------------------


def alarmed(at_start: AlarmAtStart) -> Pipeline:
    verify = VerifySettings(alarms=("api-5xx",), alarm_at_start=at_start)
    return Pipeline(PIPELINE, "bucket", "api/", "api", "api-prod", verify=verify)


FIRING = AlarmStatus("api-5xx", AlarmState.ALARM, "Threshold Crossed: 5xx > 10", T0)
OK = AlarmStatus("api-5xx", AlarmState.OK, "Threshold not crossed", T0)


def test_an_alarm_in_alarm_holds_the_start_with_the_alarm_named_until_it_clears() -> None:
    lane = Driver(alarmed(AlarmAtStart.WAIT), [FIRING])
    lane.submit("a", Trigger.API)
    assert lane.state("a") is ReleaseState.QUEUED
    assert "api-5xx in ALARM" in lane.store.releases["a"].reason
    assert lane.store.slot.waiting == ("a",)
    assert lane.store.slot.active is None
    lane.run([], lambda it, now: it.repair(now))
    assert lane.state("a") is ReleaseState.QUEUED
    lane.alarms = (OK,)
    decision = lane.run([], lambda it, now: it.repair(now))
    assert lane.state("a") is ReleaseState.DEPLOYING
    assert decision.start is not None
    assert decision.start.id == "a"


def test_an_alarm_in_alarm_fails_the_start_when_the_pipeline_says_fail() -> None:
    lane = Driver(alarmed(AlarmAtStart.FAIL), [FIRING])
    lane.submit("a", Trigger.API)
    assert lane.state("a") is ReleaseState.FAILED
    assert "api-5xx in ALARM" in lane.store.releases["a"].reason
    assert lane.last_event("a")["alarms"] == [FIRING.to_dict()]
    assert lane.store.slot.active is None


def test_a_waiting_release_whose_turn_comes_during_an_alarm_fails_and_the_next_is_judged_too() -> None:
    lane = Driver(alarmed(AlarmAtStart.FAIL), [OK])
    lane.submit("a", Trigger.API)
    lane.submit("b", Trigger.API)
    lane.submit("c", Trigger.API)
    assert list(lane.store.slot.waiting) == ["b", "c"]
    lane.alarms = (FIRING,)
    lane.run(["a"], lambda it, now: it.finish(Finish("a", ReleaseState.SUCCEEDED, "verified"), now))
    assert (lane.state("b"), lane.state("c")) == (ReleaseState.FAILED, ReleaseState.FAILED)
    assert lane.store.slot.active is None
    assert lane.store.slot.waiting == ()


def test_rollbacks_and_break_glass_are_not_held_by_alarms_and_quiet_pipelines_read_none() -> None:
    lane = Driver(alarmed(AlarmAtStart.WAIT), [FIRING])
    lane.submit("rb", Trigger.ROLLBACK)
    assert lane.state("rb") is ReleaseState.DEPLOYING
    lane.run(["rb"], lambda it, now: it.finish(Finish("rb", ReleaseState.SUCCEEDED, "ok"), now))
    lane.submit("bg", Trigger.API, break_glass="the alarm is the bug this fixes")
    assert lane.state("bg") is ReleaseState.DEPLOYING
    assert lane.alarm_reads == 0
    quiet = Driver(Pipeline(PIPELINE, "bucket", "api/", "api", "api-prod"))
    quiet.submit("a", Trigger.API)
    assert quiet.alarm_reads == 0


def test_a_busy_slot_reads_no_alarm() -> None:
    lane = Driver(alarmed(AlarmAtStart.WAIT), [OK])
    lane.submit("a", Trigger.API)
    reads = lane.alarm_reads
    lane.submit("b", Trigger.API)
    assert lane.alarm_reads == reads
    assert lane.state("b") is ReleaseState.QUEUED


# -- promotion ---------------------------------------------------------------------------------


def test_a_promotion_whose_upstream_release_was_rolled_back_never_starts() -> None:
    """The rollback upstream marked the release in its own write; the cancel after it was lost:
    the lane stops the promotion when its turn comes (or when someone approves it)."""
    downstream = Pipeline(PIPELINE, "bucket", "api/", "api", "api-prod", promote_from="api-stg")
    lane = Driver(downstream)
    lane.submit("rb", Trigger.ROLLBACK)  # holds the slot
    upstream = dataclasses.replace(
        lane.submit("up-1", Trigger.API).change.releases[0], pipeline="api-stg", id="up-1"
    )
    del lane.store.releases["up-1"]
    lane.store.slot = dataclasses.replace(lane.store.slot, waiting=())
    lane.store.releases["up-1"] = dataclasses.replace(upstream, metadata={"rolled_back_by": "rb-up"})
    submission = Submission(
        "promo-1",
        downstream,
        Revision("bucket", "api/up-1.zip", "v1", "e1"),
        Trigger.PROMOTION,
        metadata={"promoted_from": "up-1"},
    )
    lane.run(["promo-1"], lambda it, now: it.submit(submission, now))
    assert lane.state("promo-1") is ReleaseState.QUEUED

    lane.run(["rb"], lambda it, now: it.finish(Finish("rb", ReleaseState.SUCCEEDED, "verified"), now))

    assert lane.state("promo-1") is ReleaseState.STOPPED
    assert lane.store.releases["promo-1"].reason == "cancelled: api-stg rolled back up-1 (release rb-up)"
    assert lane.store.slot.active is None
    assert lane.store.slot.waiting == ()


def test_an_upload_to_a_pipeline_that_promotes_is_refused() -> None:
    lane = Driver(Pipeline(PIPELINE, "bucket", "api/", "api", "api-prod", promote_from="api-stg"))
    lane.submit("a")
    assert lane.state("a") is ReleaseState.FAILED
    assert "deploys only what pipeline 'api-stg' verified" in lane.store.releases["a"].reason

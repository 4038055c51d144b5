"""The lane's rules over generated sequences of commands, with no AWS at all.

A state machine plays the use cases against an in-memory store: it loads the lane with only the
command's releases (so every ``NeedsReleases`` round is exercised), commits the decision's change
with the store's version conditions, and plays CreateDeployment after the commit (created,
handed back, or lost with the Lambda that made it). After every step it checks the invariants of
issue 13: never two active, rollbacks first, nothing lost, positions right, last good only ever a
SUCCEEDED release, a rollback never causes another, uploads never started out of S3's order.
The pipeline may have a freeze window (issue 14): no release but a rollback or a break-glass one
starts during it, rollbacks start during it, and once it is over a repair leaves no release
waiting for a free slot. It may require approval: a release awaits it outside the line, nothing
but a rollback starts unapproved, a pending approval is superseded (or not, with ``queue``),
rejected, or expires. It may promote from another pipeline (issue 15): its uploads are refused,
promotions arrive (automatically, or awaiting approval), and an upstream rollback leaves no
promotion of the release it rolled back waiting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chalicelib.domain.api_requests import ConflictingState, Forbidden, InvalidValue, NotFound
from chalicelib.domain.freeze import Freeze, FreezeWindow, current_freeze
from chalicelib.domain.lane import (
    Annotation,
    Change,
    Decision,
    ExternalDeployment,
    Finish,
    Lane,
    NeedsReleases,
    Submission,
)
from chalicelib.domain.leases import CLAIM_LEASE
from chalicelib.domain.permissions import ApprovalPolicy, OnNewer, Person
from chalicelib.domain.pipelines import Pipeline, PromoteMode, RollbackSettings
from chalicelib.domain.release import (
    BREAK_GLASS,
    PROMOTED_FROM,
    EventType,
    Release,
    ReleaseState,
    Revision,
    Step,
    Trigger,
    external_release_id,
    record,
    transition,
    update,
)
from chalicelib.domain.slot import BusyPolicy, PipelineSlot

T = TypeVar("T")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
RECONCILE_PERIOD = timedelta(minutes=5)
APPROVER = Person(iam_arn="arn:aws:sts::123456789012:assumed-role/Releasers/ana")
STRANGER = Person(iam_arn="arn:aws:sts::123456789012:assumed-role/Developers/bob")
PIPELINE = "api-prod"
# Read by tests/unit/conftest.py for the run's summary line.
RUN_STATS = {"examples": 0, "steps": 0}


class WriteConflict(Exception):
    pass


class MemoryStore:
    """The table as the lane sees it: releases and the slot, each written on its version."""

    def __init__(self) -> None:
        self.slot = PipelineSlot(PIPELINE)
        self.releases: dict[str, Release] = {}
        self.history: dict[str, list[tuple[EventType, ReleaseState, dict[str, object]]]] = {}

    def commit(self, change: Change) -> dict[str, Release]:
        for release in change.releases:
            held = self.releases.get(release.id)
            if (held.version if held else 0) != release.version:
                raise WriteConflict(release.id)
        if change.slot is not None and change.slot.version != self.slot.version:
            raise WriteConflict("slot")
        stored = {r.id: dataclasses.replace(r, version=r.version + 1) for r in change.releases}
        self.releases.update(stored)
        for release_id, events in change.events.items():
            self.history.setdefault(release_id, []).extend(
                (event.type, event.state, dict(event.detail)) for event in events
            )
        if change.slot is not None:
            self.slot = dataclasses.replace(change.slot, version=change.slot.version + 1)
        return stored


class LaneMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        RUN_STATS["examples"] += 1
        self.store = MemoryStore()
        self.now = T0
        self.pipeline = Pipeline(PIPELINE, "bucket", "api/", "api", "api-prod")
        self.submitted: list[str] = []
        self.adopted: set[str] = set()
        self.started_uploads: list[datetime] = []  # stored time of each upload that got the slot
        self.stored_at: dict[str, datetime] = {}  # when S3 stored each upload (LastModified)
        self.approved: set[str] = set()
        self.counter = 0

    @initialize(
        policy=st.sampled_from(BusyPolicy),
        on_deploy_failure=st.booleans(),
        on_verify_failure=st.booleans(),
        # A one-off freeze: seconds after T0 it starts, seconds it lasts (each step moves the
        # clock a second, so a short one ends between repairs; a repair's wait of a reconcile
        # period ends a long one).
        freeze=st.one_of(st.none(), st.tuples(st.integers(0, 15), st.integers(1, 600))),
        # No approval, or approval with each on_newer; it expires after a few steps or a repair's wait.
        approval=st.sampled_from([None, OnNewer.SUPERSEDE, OnNewer.QUEUE]),
        # Issue 15: the pipeline may promote from another (its uploads are refused; promotions
        # arrive, automatically or awaiting approval).
        promotes=st.sampled_from([None, PromoteMode.AUTO, PromoteMode.APPROVAL]),
    )
    def configure(
        self,
        policy: BusyPolicy,
        on_deploy_failure: bool,
        on_verify_failure: bool,
        freeze: tuple[int, int] | None,
        approval: OnNewer | None,
        promotes: PromoteMode | None,
    ) -> None:
        windows: tuple[FreezeWindow, ...] = ()
        if freeze is not None:
            start = (T0 + timedelta(seconds=freeze[0])).replace(tzinfo=None)
            end = start + timedelta(seconds=freeze[1])
            windows = (FreezeWindow.one_off("release week", "UTC", start, end),)
        self.pipeline = dataclasses.replace(
            self.pipeline,
            on_busy=policy,
            rollback=RollbackSettings(on_deploy_failure, on_verify_failure),
            freeze=windows,
            approval=ApprovalPolicy(
                # Only the promotions await approval when the pipeline says promote = "approval".
                required=approval is not None,
                approvers=("arn:aws:iam::123456789012:role/Releasers",),
                expires_after=timedelta(seconds=30),
                on_newer=approval or OnNewer.SUPERSEDE,
            )
            if approval is not None or promotes is PromoteMode.APPROVAL
            else ApprovalPolicy(),
            promote_from="upstream" if promotes is not None else None,
            promote=promotes or PromoteMode.AUTO,
        )

    def needs_approval(self, trigger: Trigger) -> bool:
        if trigger.is_rollback:
            return False
        if trigger is Trigger.PROMOTION:
            return self.pipeline.promote is PromoteMode.APPROVAL
        return self.pipeline.approval.required

    # -- the use cases, played against the store --------------------------------------------

    def decide(self, subjects: Sequence[str], ask: Callable[[Lane], T]) -> T:
        """As the service loads the lane: the slot and the subjects, then what the lane asks for."""
        lane = Lane(
            PIPELINE,
            self.pipeline,
            self.store.slot,
            {release_id: self.store.releases.get(release_id) for release_id in subjects},
        )
        for _ in range(10):
            try:
                return ask(lane)
            except NeedsReleases as needs:
                asked = set(needs.release_ids)
            assert not asked & set(lane.releases), "asked again for a loaded release"
            lane = lane.with_releases({i: self.store.releases.get(i) for i in asked})
        raise AssertionError("the lane keeps asking")

    def run(self, subjects: Sequence[str], ask: Callable[[Lane], Decision], outcome: str) -> Decision:
        RUN_STATS["steps"] += 1
        self.now += timedelta(seconds=1)
        decision = self.decide(subjects, ask)
        before = dict(self.store.releases)
        claimed = [r.id for r in decision.change.releases if r.start_claimed_at == self.now]
        started = [decision.start.id] if decision.start is not None else []
        assert claimed == started, f"claimed the start of {claimed}, handed over {started}"
        stored = self.store.commit(decision.change)
        self.check_queued_positions(decision.change)
        self.note_started(before)
        if decision.start is not None:
            self.play_start(stored.get(decision.start.id, decision.start), outcome)
        return decision

    def play_start(self, release: Release, outcome: str) -> None:
        """CreateDeployment after the commit: created and linked, refused for now and handed
        back, or lost with a Lambda that died (its claim then runs out)."""
        if outcome == "lost":
            return
        if outcome == "created":
            step = record(
                update(
                    Step(release, ()), now=self.now, deployment_id=f"d-{release.id}", start_claimed_at=None
                ),
                EventType.TASK_STARTED,
                now=self.now,
            )
        else:
            step = record(
                update(Step(release, ()), now=self.now, start_claimed_at=None),
                EventType.TASK_FAILED,
                now=self.now,
            )
        self.store.commit(Change([step.release], {release.id: step.events}))

    def submission(
        self, trigger: Trigger, stored_second: int | None = None, break_glass: bool = False
    ) -> Submission:
        self.counter += 1
        release_id = f"{trigger.value}-{self.counter}"
        key = f"api/app-{self.counter}.zip"
        stored_at = T0 + timedelta(seconds=stored_second) if stored_second is not None else None
        return Submission(
            release_id,
            self.pipeline,
            Revision("bucket", key, f"v{self.counter}", None),
            trigger,
            stored_at=stored_at,
            break_glass="on fire" if break_glass else None,
        )

    def submit(self, submission: Submission, outcome: str) -> None:
        if submission.stored_at is not None:
            self.stored_at[submission.release_id] = submission.stored_at.replace(microsecond=0)
        slot_was_free = self.store.slot.active is None
        decision = self.run([submission.release_id], lambda lane: lane.submit(submission, self.now), outcome)
        assert decision.created
        assert decision.subject is not None
        assert decision.subject.id == submission.release_id
        self.submitted.append(submission.release_id)
        if submission.trigger.is_rollback and slot_was_free:
            assert decision.subject.state is ReleaseState.DEPLOYING, "a freeze blocked a rollback"
        freeze = self.frozen()
        if self.pipeline.promote_from is not None and submission.trigger is Trigger.UPLOAD:
            assert decision.subject.state is ReleaseState.FAILED, "a downstream pipeline took an upload"
        elif self.needs_approval(submission.trigger):
            assert decision.subject.state in (ReleaseState.AWAITING_APPROVAL, ReleaseState.SUPERSEDED)
        elif freeze is not None and not submission.trigger.is_rollback and submission.break_glass is None:
            waiting = self.store.releases[submission.release_id]
            if waiting.state is ReleaseState.QUEUED:
                assert self.store.history[waiting.id][-1][2]["freeze"] == freeze.to_dict()
                waiting_not_rollbacks = [
                    w for w in self.store.slot.waiting if not self.exempt(self.store.releases[w])
                ]
                assert waiting_not_rollbacks == [waiting.id], "more than the newest waits out a freeze"
        self.check_nothing_waits_for_a_free_slot()

    # -- rules -------------------------------------------------------------------------------

    starts = st.sampled_from(["created", "created", "created", "handed_back", "lost"])

    @rule(stored_second=st.integers(min_value=0, max_value=40), outcome=starts)
    def upload(self, stored_second: int, outcome: str) -> None:
        self.submit(self.submission(Trigger.UPLOAD, stored_second), outcome)

    @rule(outcome=starts, break_glass=st.booleans())
    def api_deploy(self, outcome: str, break_glass: bool) -> None:
        self.submit(self.submission(Trigger.API, break_glass=break_glass), outcome)

    @precondition(lambda self: self.pipeline.promote_from is not None)
    @rule(upstream=st.integers(1, 3), outcome=starts)
    def promotion(self, upstream: int, outcome: str) -> None:
        """A release of the upstream pipeline, verified, arrives as a promotion."""
        self.counter += 1
        submission = Submission(
            f"promotion-{self.counter}",
            self.pipeline,
            Revision("bucket", f"api/up-{upstream}.zip", f"v{upstream}", f"e{upstream}"),
            Trigger.PROMOTION,
            metadata={PROMOTED_FROM: f"up-{upstream}"},
        )
        self.submit(submission, outcome)

    @precondition(lambda self: self.pipeline.promote_from is not None)
    @rule(upstream=st.integers(1, 3), outcome=starts)
    def upstream_rolls_back(self, upstream: int, outcome: str) -> None:
        """The upstream pipeline rolled ``up-<n>`` back: its promotions still waiting here stop.
        A rollback waiting here is kept even when it restores a promotion of ``up-<n>`` (and so
        carries its revision and its ``promoted_from``): it restores this pipeline's last verified
        release, and rollbacks are never stopped by another pipeline."""
        promoted_from = f"up-{upstream}"
        waiting_before = self.waiting_and_awaiting()
        self.run([], lambda lane: lane.cancel_promotions(promoted_from, "rolled back", self.now), outcome)
        waiting = [self.store.releases[w] for w in self.waiting_and_awaiting()]
        assert not any(
            release.trigger is Trigger.PROMOTION and release.metadata.get(PROMOTED_FROM) == promoted_from
            for release in waiting
        ), "a promotion of a release rolled back upstream still waits"
        kept = [w for w in waiting_before if self.store.releases[w].trigger.is_rollback]
        assert set(kept) <= {release.id for release in waiting}, "a waiting rollback was stopped"

    def waiting_and_awaiting(self) -> list[str]:
        return [mark.release_id for mark in self.store.slot.awaiting_approval] + list(self.store.slot.waiting)

    @precondition(lambda self: self.store.slot.awaiting_approval)
    @rule(data=st.data(), allowed=st.booleans(), outcome=starts)
    def approve(self, data: st.DataObject, allowed: bool, outcome: str) -> None:
        mark = data.draw(st.sampled_from(self.store.slot.awaiting_approval))
        person = APPROVER if allowed else STRANGER
        before = self.store.releases[mark.release_id]
        if allowed:
            self.approved.add(mark.release_id)  # before the run: it may start the release
        try:
            decision = self.run(
                [mark.release_id], lambda lane: lane.approve(mark.release_id, person, None, self.now), outcome
            )
        except Forbidden:
            assert not allowed
            assert self.store.releases[mark.release_id] == before
            return
        assert allowed
        after = self.store.releases[mark.release_id]
        if self.now >= mark.expires_at:
            assert after.state is ReleaseState.STOPPED, "a late approval did not expire the release"
        else:
            assert after.state is not ReleaseState.AWAITING_APPROVAL
        assert decision.subject is not None
        self.check_nothing_waits_for_a_free_slot()

    @precondition(lambda self: self.store.slot.awaiting_approval)
    @rule(data=st.data(), outcome=starts)
    def reject(self, data: st.DataObject, outcome: str) -> None:
        mark = data.draw(st.sampled_from(self.store.slot.awaiting_approval))
        self.run(
            [mark.release_id], lambda lane: lane.reject(mark.release_id, APPROVER, "no", self.now), outcome
        )
        assert self.store.releases[mark.release_id].state is ReleaseState.STOPPED

    @rule(outcome=starts)
    def manual_rollback(self, outcome: str) -> None:
        self.submit(self.submission(Trigger.ROLLBACK), outcome)

    @precondition(lambda self: self.submitted)
    @rule(data=st.data(), outcome=starts)
    def resubmit(self, data: st.DataObject, outcome: str) -> None:
        """S3's duplicate delivery or Lambda's retry: nothing new, but a handed-back or
        abandoned start of the active release is picked up again."""
        release = self.store.releases[data.draw(st.sampled_from(self.submitted))]
        again = Submission(release.id, self.pipeline, release.revision, release.trigger)
        decision = self.run([release.id], lambda lane: lane.submit(again, self.now), outcome)
        assert not decision.created

    @precondition(lambda self: self.deploying())
    @rule(
        data=st.data(),
        ending=st.sampled_from([ReleaseState.SUCCEEDED, ReleaseState.FAILED, ReleaseState.STOPPED]),
        outcome=starts,
    )
    def codedeploy_ends(self, data: st.DataObject, ending: ReleaseState, outcome: str) -> None:
        release = data.draw(st.sampled_from(self.deploying()))
        roll_back = ending is ReleaseState.FAILED and self.pipeline.rollback.on_deploy_failure
        diagnostics = Annotation(EventType.TASK_FAILED, {"task": "CodeDeploy"})
        finish = Finish(release.id, ending, f"CodeDeploy {ending.value}", {}, roll_back, diagnostics)
        self.finish(finish, outcome)

    @precondition(lambda self: self.deploying())
    @rule(data=st.data())
    def verification_begins(self, data: st.DataObject) -> None:
        release = data.draw(st.sampled_from(self.deploying()))
        moved = transition(Step(release, ()), ReleaseState.VERIFYING, now=self.now, reason="verifying")
        assert isinstance(moved, Step)
        self.store.commit(Change([moved.release], {release.id: moved.events}))

    @precondition(lambda self: self.in_state(ReleaseState.VERIFYING))
    @rule(data=st.data(), healthy=st.booleans(), outcome=starts)
    def verification_ends(self, data: st.DataObject, healthy: bool, outcome: str) -> None:
        release = data.draw(st.sampled_from(self.in_state(ReleaseState.VERIFYING)))
        target = ReleaseState.SUCCEEDED if healthy else ReleaseState.FAILED
        roll_back = not healthy and self.pipeline.rollback.on_verify_failure
        self.finish(
            Finish(release.id, target, "verified" if healthy else "verify_failed", {}, roll_back), outcome
        )

    def finish(self, command: Finish, outcome: str) -> None:
        before = self.store.releases[command.release_id]
        decision = self.run([command.release_id], lambda lane: lane.finish(command, self.now), outcome)
        finished = self.store.releases[command.release_id]
        assert decision.subject is not None
        assert finished.state is command.target
        rollback_id = dict(self.store.history[finished.id][-1][2]).get("rollback_release_id")
        if rollback_id is not None:
            assert command.roll_back
            assert not before.trigger.is_rollback, "a rollback caused another"
            assert self.store.releases[str(rollback_id)].trigger is Trigger.AUTO_ROLLBACK
            self.submitted.append(str(rollback_id))
        self.check_nothing_waits_for_a_free_slot()

    @precondition(lambda self: self.submitted)
    @rule(data=st.data(), outcome=starts)
    def cancel(self, data: st.DataObject, outcome: str) -> None:
        release = self.store.releases[data.draw(st.sampled_from(self.submitted))]
        try:
            decision = self.run([release.id], lambda lane: lane.cancel(release.id, "ana", self.now), outcome)
        except ConflictingState:
            assert release.state.is_terminal or (
                release.state is ReleaseState.DEPLOYING and release.deployment_id is None
            )
            return
        if release.state in (ReleaseState.AWAITING_APPROVAL, ReleaseState.QUEUED, ReleaseState.VERIFYING):
            assert self.store.releases[release.id].state is ReleaseState.STOPPED
        else:  # deploying: the caller asks CodeDeploy to stop; nothing is written
            assert decision.change == Change()

    @rule(
        outcome=starts,
        wait=st.sampled_from([timedelta(0), CLAIM_LEASE + timedelta(seconds=1), RECONCILE_PERIOD]),
    )
    def repair(self, outcome: str, wait: timedelta) -> None:
        """The reconciler, now, after a start's lease ran out, or a reconcile period later."""
        self.now += wait
        decision = self.run([], lambda lane: lane.repair(self.now), outcome)
        if "restarted" in decision.report:
            assert decision.look_first, "a restart looks for the earlier attempt's deployment"
        for mark in self.store.slot.awaiting_approval:
            assert mark.expires_at > self.now, "a repair left an expired approval pending"
        self.check_nothing_waits_for_a_free_slot()

    @rule(rollback_of_ours=st.booleans())
    def external_deployment(self, rollback_of_ours: bool) -> None:
        self.counter += 1
        failed = [r.id for r in self.store.releases.values() if r.state is ReleaseState.FAILED]
        rollback_of = failed[-1] if rollback_of_ours and failed else None
        external = ExternalDeployment(
            external_release_id(f"d-ext-{self.counter}"),
            f"d-ext-{self.counter}",
            "api",
            "api-prod",
            Revision("bucket", "api/console.zip", None, None),
            "console",
            rollback_of,
        )
        self.run([external.release_id], lambda lane: lane.adopt(external, self.now), "created")
        self.adopted.add(external.release_id)
        self.submitted.append(external.release_id)

    @precondition(lambda self: self.store.slot.last_good is not None or self.submitted)
    @rule(data=st.data(), newest=st.booleans())
    def choose_rollback(self, data: st.DataObject, newest: bool) -> None:
        to = data.draw(st.sampled_from([None, *self.submitted]))
        newest_id = self.submitted[-1] if newest and self.submitted else None
        try:
            choice = self.decide([to] if to else [], lambda lane: lane.choose_rollback(to, newest_id))
        except (ConflictingState, InvalidValue, NotFound):
            return
        assert choice.target.state is ReleaseState.SUCCEEDED
        assert choice.current != choice.target.id

    # -- invariants --------------------------------------------------------------------------

    def deploying(self) -> list[Release]:
        return [r for r in self.in_state(ReleaseState.DEPLOYING) if r.deployment_id is not None]

    def in_state(self, state: ReleaseState) -> list[Release]:
        return sorted((r for r in self.store.releases.values() if r.state is state), key=lambda r: r.id)

    def check_queued_positions(self, change: Change) -> None:
        for release_id, events in change.events.items():
            for event in events:
                if event.state is ReleaseState.QUEUED and event.type is EventType.STATE_ENTERED:
                    assert event.detail["position"] == self.store.slot.waiting.index(release_id) + 1

    def exempt(self, release: Release) -> bool:
        """Not held by a freeze: a rollback, or a break-glass release."""
        return release.trigger.is_rollback or BREAK_GLASS in release.metadata

    def frozen(self) -> Freeze | None:
        return current_freeze(self.pipeline.freeze, self.now)

    def check_nothing_waits_for_a_free_slot(self) -> None:
        """After a decision that hands the slot on (a submission too: a freeze may have ended
        since the last repair), a waiting release is left behind a free slot only during a
        freeze, and never a rollback."""
        slot = self.store.slot
        if slot.active is None and slot.waiting:
            assert self.frozen() is not None, "a waiting release was not started after the freeze"
            held = [self.store.releases[w] for w in slot.waiting]
            assert not any(self.exempt(r) for r in held), "a freeze held a rollback or a break-glass release"

    def note_started(self, before: dict[str, Release]) -> None:
        for release in self.store.releases.values():
            was = before.get(release.id)
            started = release.state is ReleaseState.DEPLOYING and (
                was is None or was.state is not ReleaseState.DEPLOYING
            )
            if started and release.trigger in (Trigger.UPLOAD, Trigger.API, Trigger.PROMOTION):
                assert self.frozen() is None or BREAK_GLASS in release.metadata, (
                    f"{release.id} ({release.trigger.value}) started during a freeze"
                )
                if self.needs_approval(release.trigger):
                    assert release.id in self.approved, f"{release.id} started without approval"
                assert self.pipeline.promote_from is None or release.trigger is not Trigger.UPLOAD
            if started and release.trigger is Trigger.UPLOAD:
                stored_at = self.stored_at[release.id]
                assert not self.started_uploads or stored_at >= self.started_uploads[-1], "out of S3 order"
                self.started_uploads.append(stored_at)

    @invariant()
    def one_active_and_nothing_lost(self) -> None:
        slot = self.store.slot
        awaiting = [mark.release_id for mark in slot.awaiting_approval]
        held = [
            release_id for release_id in (slot.active, *slot.waiting, *awaiting) if release_id is not None
        ]
        assert len(held) == len(set(held)), f"a release holds two places: {held}"
        for release in self.store.releases.values():
            in_slot = release.id in held
            if release.id in self.adopted and not in_slot:
                continue  # an external deployment that found the slot busy runs beside it
            assert in_slot != release.state.is_terminal, f"{release.id} {release.state} in slot: {in_slot}"
        running = [
            r.id
            for r in self.store.releases.values()
            if r.state in (ReleaseState.DEPLOYING, ReleaseState.VERIFYING) and r.id not in self.adopted
        ]
        assert set(running) <= {slot.active}, f"two active: {running}"
        assert all(self.store.releases[w].state is ReleaseState.QUEUED for w in slot.waiting)
        pending = {r.id for r in self.store.releases.values() if r.state is ReleaseState.AWAITING_APPROVAL}
        assert pending == set(awaiting), f"awaiting approval {pending}, listed {awaiting}"
        if self.pipeline.approval.on_newer is OnNewer.SUPERSEDE:
            assert len(awaiting) <= 1, "more than the newest awaits approval"

    @invariant()
    def rollbacks_first(self) -> None:
        triggers = [self.store.releases[w].trigger.is_rollback for w in self.store.slot.waiting]
        assert triggers == sorted(triggers, reverse=True), "a waiting rollback is behind another release"

    @invariant()
    def last_good_succeeded(self) -> None:
        last_good = self.store.slot.last_good
        assert last_good is None or self.store.releases[last_good].state is ReleaseState.SUCCEEDED

    @invariant()
    def a_rollback_never_causes_another(self) -> None:
        for release in self.store.releases.values():
            if release.trigger is Trigger.AUTO_ROLLBACK and release.id not in self.adopted:
                assert release.rollback_of is not None
                assert not self.store.releases[release.rollback_of].trigger.is_rollback


LaneMachine.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLane = LaneMachine.TestCase
pytestmark = pytest.mark.timeout(120)


# -- named cases -------------------------------------------------------------------------------


def _stored(release: Release) -> Release:
    return dataclasses.replace(release, version=release.version + 1)


def _lane(policy: BusyPolicy = BusyPolicy.QUEUE, slot: PipelineSlot | None = None, *known: Release) -> Lane:
    pipeline = Pipeline(PIPELINE, "bucket", "api/", "api", "api-prod", on_busy=policy)
    return Lane(PIPELINE, pipeline, slot or PipelineSlot(PIPELINE), {r.id: r for r in known})


def _submit(lane: Lane, release_id: str, trigger: Trigger) -> Decision:
    assert lane.config is not None
    submission = Submission(
        release_id, lane.config, Revision("bucket", f"api/{release_id}.zip", "v", None), trigger
    )
    return lane.with_releases({release_id: None}).submit(submission, T0)


class _Drawn:
    """Stands in for hypothesis' ``data`` in a replayed sequence: draws the release it is given."""

    def __init__(self, release: Release) -> None:
        self.release = release

    def draw(self, strategy: object) -> Release:
        return self.release


def test_a_rollback_that_restores_a_promotion_keeps_waiting_when_upstream_rolls_that_release_back() -> None:
    """The sequence hypothesis found (make test, 2026-12-07): production's last good release is a
    promotion of up-3; a console deployment fails and its automatic rollback (to that promotion,
    carrying its ``promoted_from``) waits behind a manual rollback; staging then rolls up-3 back.
    The waiting automatic rollback is kept: only promotions stop."""
    machine = LaneMachine()
    machine.configure(
        policy=BusyPolicy.QUEUE,
        on_deploy_failure=True,
        on_verify_failure=False,
        freeze=None,
        approval=None,
        promotes=PromoteMode.AUTO,
    )
    machine.promotion(upstream=3, outcome="created")
    [promotion] = machine.deploying()
    machine.codedeploy_ends(_Drawn(promotion), ReleaseState.SUCCEEDED, "created")
    machine.manual_rollback(outcome="handed_back")
    machine.external_deployment(rollback_of_ours=False)
    external = next(r for r in machine.deploying() if r.trigger is Trigger.EXTERNAL)
    machine.codedeploy_ends(_Drawn(external), ReleaseState.FAILED, "created")
    [waiting_rollback] = [
        machine.store.releases[w]
        for w in machine.store.slot.waiting
        if machine.store.releases[w].trigger is Trigger.AUTO_ROLLBACK
    ]
    assert waiting_rollback.metadata[PROMOTED_FROM] == "up-3"

    machine.upstream_rolls_back(upstream=3, outcome="created")

    assert waiting_rollback.id in machine.store.slot.waiting
    assert machine.store.releases[waiting_rollback.id].state is ReleaseState.QUEUED


def test_a_release_queued_behind_a_kept_rollback_is_told_its_real_place() -> None:
    """Issue 13's position bug, in the lane: supersede keeps the waiting rollback in front."""
    rollback = _stored(_submit(_lane(BusyPolicy.SUPERSEDE), "rb", Trigger.ROLLBACK).change.releases[0])
    lane = _lane(BusyPolicy.SUPERSEDE, PipelineSlot(PIPELINE, active="a", waiting=("rb",)), rollback)

    decision = _submit(lane, "b", Trigger.API)

    assert decision.change.slot is not None
    assert decision.change.slot.waiting == ("rb", "b")
    [queued] = [e for e in decision.change.events["b"] if e.state is ReleaseState.QUEUED]
    assert queued.detail["position"] == 2


def test_a_supersede_asks_for_the_waiting_releases_it_replaces_all_at_once() -> None:
    lane = _lane(BusyPolicy.SUPERSEDE, PipelineSlot(PIPELINE, active="a", waiting=("w1", "w2")))
    with pytest.raises(NeedsReleases) as needs:
        _submit(lane, "b", Trigger.API)
    assert needs.value.release_ids == ("w1", "w2")


def test_finishing_the_active_release_asks_only_for_the_head_of_the_line() -> None:
    active = _stored(_submit(_lane(), "a", Trigger.API).change.releases[0])
    lane = _lane(BusyPolicy.QUEUE, PipelineSlot(PIPELINE, active="a", waiting=("w1", "w2")), active)
    finish = Finish("a", ReleaseState.SUCCEEDED, "verified")
    with pytest.raises(NeedsReleases) as needs:
        lane.finish(finish, T0)
    assert needs.value.release_ids == ("w1",)


def test_an_automatic_rollback_that_finds_the_slot_taken_waits_queued_at_the_head() -> None:
    """The failed release ran beside the slot (an external deployment): the slot's own release
    keeps it, and the rollback waits first in line instead of being written DEPLOYING there."""
    good = dataclasses.replace(_stored(_submit(_lane(), "good", Trigger.API).change.releases[0]), version=5)
    external = ExternalDeployment(
        "ext-d1", "d1", "api", "api-prod", Revision("b", "k.zip", None, None), "console"
    )
    adopted = _lane(slot=PipelineSlot(PIPELINE, active="a", last_good="good")).with_releases({"ext-d1": None})
    failing = _stored(adopted.adopt(external, T0).change.releases[0])
    active = _stored(_submit(_lane(), "a", Trigger.API).change.releases[0])
    lane = _lane(
        BusyPolicy.QUEUE, PipelineSlot(PIPELINE, active="a", last_good="good"), failing, good, active
    )

    decision = lane.finish(Finish("ext-d1", ReleaseState.FAILED, "failed", roll_back=True), T0)

    rollback = decision.change.releases[1]
    assert (rollback.id, rollback.state, rollback.trigger) == (
        "rb-ext-d1",
        ReleaseState.QUEUED,
        Trigger.AUTO_ROLLBACK,
    )
    assert decision.change.slot is not None
    assert decision.change.slot.waiting == ("rb-ext-d1",)
    assert decision.start is None


def test_rolling_back_to_the_current_release_is_refused() -> None:
    good = dataclasses.replace(_stored(_submit(_lane(), "good", Trigger.API).change.releases[0]), version=5)
    succeeded = transition(Step(good, ()), ReleaseState.SUCCEEDED, now=T0, reason="ok")
    assert isinstance(succeeded, Step)
    lane = _lane(BusyPolicy.QUEUE, PipelineSlot(PIPELINE, last_good="good"), succeeded.release)
    with pytest.raises(ConflictingState, match="already the current release"):
        lane.choose_rollback(None, "good")
    assert lane.choose_rollback(None, "newer").current == "newer"
    with pytest.raises(ConflictingState, match="nothing to roll back to"):
        _lane().choose_rollback(None, None)


def test_an_upload_after_a_freeze_ended_starts_the_waiting_one_even_when_it_is_turned_away() -> None:
    """The freeze is over but no repair has run: the upload that waited for it takes the slot in
    the same write as a late upload S3 stored before it, which ends SUPERSEDED."""
    start = T0.replace(tzinfo=None)
    window = FreezeWindow.one_off("release week", "UTC", start, start + timedelta(minutes=10))
    lane = _lane()
    assert lane.config is not None
    pipeline = dataclasses.replace(lane.config, freeze=(window,))
    lane = dataclasses.replace(lane, config=pipeline)

    def upload(release_id: str, stored_second: int) -> Submission:
        revision = Revision("bucket", f"api/{release_id}.zip", "v", None)
        stored_at = T0 + timedelta(seconds=stored_second)
        return Submission(release_id, pipeline, revision, Trigger.UPLOAD, stored_at=stored_at)

    waited = lane.with_releases({"later": None}).submit(upload("later", 60), T0 + timedelta(minutes=1))
    assert waited.subject is not None
    assert waited.subject.state is ReleaseState.QUEUED
    assert waited.start is None
    assert waited.change.slot is not None
    thawed = dataclasses.replace(
        lane, slot=_stored_slot(waited.change.slot), releases={"later": _stored(waited.subject)}
    )

    late = thawed.with_releases({"earlier": None}).submit(upload("earlier", 30), T0 + timedelta(minutes=10))

    assert late.subject is not None
    assert late.subject.state is ReleaseState.SUPERSEDED
    assert late.start is not None
    assert late.start.id == "later"
    assert late.start.state is ReleaseState.DEPLOYING
    assert late.change.slot is not None
    assert late.change.slot.active == "later"
    assert {release.id for release in late.change.releases} == {"earlier", "later"}


def _stored_slot(slot: PipelineSlot) -> PipelineSlot:
    return dataclasses.replace(slot, version=slot.version + 1)

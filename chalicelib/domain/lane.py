"""The lane of one pipeline: its slot together with the releases the slot names, the consistency
boundary of the coordinator.

Every rule of who deploys next lives here: a free slot is taken, a busy one queues or supersedes
per the pipeline, uploads keep S3's order (``domain/slot.py``), rollbacks go first and are never
superseded, a rollback never causes another, last good is only ever a SUCCEEDED release, a
finished or missing active release is let go, and an abandoned start is restarted after its lease.
During a freeze (``domain/freeze.py``) no release but a rollback (or a break-glass one) takes the
slot: the newest one waits, superseding those waiting before it, and takes the slot at the repair
the lane's wake-up runs at the end (``domain/wakeups.py``). A pipeline with ``[pipeline.approval]``
holds each release (rollbacks aside) AWAITING_APPROVAL outside the line until a person approves
it; a named alarm in ALARM holds or fails a start (``verify.alarm_at_start``).

A use case loads the lane (the slot and the releases its command names), asks it to decide, and
commits the one ``Change`` the ``Decision`` holds before it calls AWS. When a decision needs a
release the lane was not given (a waiting head to promote, the last good release, the waiting
releases a supersede replaces), the lane raises ``NeedsReleases`` naming them: the use case loads
them and asks again, so the domain stays pure and the reads stay minimal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from chalicelib.domain.api_requests import ConflictingState, Forbidden, InvalidValue, NotFound
from chalicelib.domain.freeze import Freeze, current_freeze
from chalicelib.domain.leases import CLAIM_LEASE
from chalicelib.domain.permissions import OnNewer, Person
from chalicelib.domain.pipelines import AlarmAtStart, Pipeline, PromoteMode
from chalicelib.domain.release import (
    BREAK_GLASS,
    PROMOTED_FROM,
    ROLLED_BACK_BY,
    Detail,
    EventType,
    HistoryEvent,
    Refused,
    Release,
    ReleaseState,
    Revision,
    Step,
    Trigger,
    can_transition,
    new_release,
    record,
    rollback_release_id,
    transition,
    update,
)
from chalicelib.domain.slot import ApprovalMark, BusyPolicy, PipelineSlot, UploadMark
from chalicelib.domain.verification import AlarmReading, AlarmStatus, Verification


@dataclass(frozen=True)
class Change:
    """Everything one decision writes, committed atomically or not at all.

    Each release carries the version it was read at (0: must not exist yet); the slot likewise.
    """

    releases: Sequence[Release] = ()
    events: Mapping[str, Sequence[HistoryEvent]] = field(default_factory=dict)
    slot: PipelineSlot | None = None
    # deployment id -> release id, written once.
    deployment_links: Mapping[str, str] = field(default_factory=dict)


def change_of(
    steps: Sequence[Step], slot: PipelineSlot | None = None, links: Mapping[str, str] | None = None
) -> Change:
    """The change that writes these steps (releases with their new history events)."""
    return Change(
        releases=[step.release for step in steps],
        events={step.release.id: step.events for step in steps},
        slot=slot,
        deployment_links=dict(links or {}),
    )


@dataclass(frozen=True)
class LogLine:
    """What the use case logs for a decision, after the decision is committed."""

    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    level: Literal["info", "warning"] = "info"


def refused_line(refused: Refused) -> LogLine:
    return LogLine(refused.message, {"release_id": refused.release_id})


@dataclass(frozen=True)
class Decision:
    """One command's outcome: the write to commit, then what to do after it."""

    change: Change = field(default_factory=Change)
    # The command's release as the change leaves it (None: there is none, or it did not move).
    subject: Release | None = None
    # A release that holds the slot with a fresh start claim: create its CodeDeploy deployment
    # after the commit; ``look_first`` for an earlier attempt's deployment before creating one.
    start: Release | None = None
    look_first: bool = False
    logs: tuple[LogLine, ...] = ()
    # What a repair did, for the reconciler's report: restarted / freed / promoted -> release id.
    report: Mapping[str, str] = field(default_factory=dict)
    # Submit: the command recorded a new release (False: it existed already).
    created: bool = False


class NeedsAlarms(Exception):
    """The lane is about to start a release of a pipeline that names alarms: read their states
    (``verify.alarms``) and ask again."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        super().__init__(f"read alarms {', '.join(self.names)}")


class NeedsReleases(Exception):
    """The lane needs these releases to decide: load them and ask again."""

    def __init__(self, release_ids: Iterable[str]) -> None:
        self.release_ids = tuple(dict.fromkeys(release_ids))
        super().__init__(f"load releases {', '.join(self.release_ids)}")


@dataclass(frozen=True)
class Submission:
    """A revision submitted as a release: an upload, an API deploy or redeploy, a rollback."""

    release_id: str  # derived from what is submitted, so a repeat finds the same release
    pipeline: Pipeline
    revision: Revision
    trigger: Trigger
    actor: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    rollback_of: str | None = None
    # When S3 stored the uploaded object (LastModified): orders automatic uploads.
    stored_at: datetime | None = None
    # Break-glass: start during a freeze (and past an alarm), for this reason (recorded).
    break_glass: str | None = None

    @property
    def upload_mark(self) -> UploadMark | None:
        """Where an automatic upload stands in S3's order; an API deploy of any revision, a
        redeploy or a rollback is not ordered against uploads."""
        if self.trigger is not Trigger.UPLOAD or self.stored_at is None:
            return None
        return UploadMark(self.release_id, self.stored_at)


@dataclass(frozen=True)
class Annotation:
    """A history event written just before a release's terminal one, in the same write: failure
    diagnostics, or the health check that decided it (with the verification it updates)."""

    type: EventType
    detail: Detail
    verification: Verification | None = None


def annotate(step: Step, annotation: Annotation, now: datetime) -> Step:
    if annotation.verification is not None:
        step = update(step, now=now, verification=annotation.verification)
    return record(step, annotation.type, now=now, detail=annotation.detail)


@dataclass(frozen=True)
class Finish:
    """Move a release to a terminal state. ``roll_back`` (failures only) starts the automatic
    rollback to the last good release ahead of every waiting one."""

    release_id: str
    target: ReleaseState
    reason: str
    detail: Detail = field(default_factory=dict)
    roll_back: bool = False
    annotation: Annotation | None = None


@dataclass(frozen=True)
class ExternalDeployment:
    """A deployment CodeDeploy runs that the coordinator did not start (the console, Auto
    Scaling, or CodeDeploy's own automatic rollback of ``rollback_of``)."""

    release_id: str
    deployment_id: str
    application: str
    deployment_group: str
    revision: Revision
    creator: str
    rollback_of: str | None = None


@dataclass(frozen=True)
class RollbackChoice:
    """What a manual rollback deploys (``target``) and which release it rolls back (``current``)."""

    target: Release
    current: str


@dataclass(frozen=True)
class Lane:
    name: str
    config: Pipeline | None  # None when the pipeline is no longer configured
    slot: PipelineSlot
    # Every release looked up: the release, or None when the store has no such release.
    releases: Mapping[str, Release | None] = field(default_factory=dict)
    # The pipeline's alarms, read when a start needs them (``NeedsAlarms``).
    alarms: AlarmReading | None = None

    def with_releases(self, found: Mapping[str, Release | None]) -> Lane:
        return dataclasses.replace(self, releases={**self.releases, **found})

    def _release(self, release_id: str) -> Release | None:
        if release_id not in self.releases:
            raise NeedsReleases([release_id])
        return self.releases[release_id]

    def _require(self, release_ids: Iterable[str]) -> None:
        missing = [release_id for release_id in release_ids if release_id not in self.releases]
        if missing:
            raise NeedsReleases(missing)

    # -- submit ------------------------------------------------------------------------------

    def submit(self, submission: Submission, now: datetime) -> Decision:
        """Record the release and take the slot, queue, await approval, or end it at once. A
        repeat of a recorded release writes nothing, unless its start was handed back or
        abandoned: then the lane is repaired (Lambda's retry after a failed CreateDeployment,
        S3's duplicate)."""
        existing = self._release(submission.release_id)
        if existing is not None:
            if existing.awaiting_deployment:
                return dataclasses.replace(self.repair(now), subject=existing)
            return Decision(
                subject=existing,
                logs=(LogLine("release already recorded; nothing to do", {"state": existing.state.value}),),
            )
        # Only the command itself breaks the glass: never an object's S3 metadata, nor the
        # metadata a redeploy or rollback copies from an earlier release.
        # Nor does a copy carry over a rollback's mark (``_mark_rolled_back``).
        metadata = {
            name: value
            for name, value in submission.metadata.items()
            if name not in (BREAK_GLASS, ROLLED_BACK_BY)
        }
        if submission.break_glass is not None:
            metadata[BREAK_GLASS] = submission.break_glass
        step = new_release(
            release_id=submission.release_id,
            pipeline=self.name,
            application=submission.pipeline.application,
            deployment_group=submission.pipeline.deployment_group,
            revision=submission.revision,
            trigger=submission.trigger,
            now=now,
            actor=submission.actor,
            rollback_of=submission.rollback_of,
            metadata=metadata,
        )
        key = submission.revision.key
        if submission.revision.bundle_type is None:
            failed = _moved(
                transition(
                    step,
                    ReleaseState.FAILED,
                    now=now,
                    reason=(
                        f"{key!r} is not a CodeDeploy bundle: the key must end in .zip, .tar, .tar.gz or .tgz"
                    ),
                )
            )
            return Decision(change_of([failed]), subject=failed.release, created=True)
        pipeline = submission.pipeline
        if pipeline.promote_from is not None and submission.trigger is Trigger.UPLOAD:
            refused = _moved(
                transition(
                    step,
                    ReleaseState.FAILED,
                    now=now,
                    reason=(
                        f"pipeline {self.name!r} deploys only what pipeline {pipeline.promote_from!r} "
                        f"verified, never an upload: upload to {pipeline.promote_from!r} instead, or "
                        f"promote one of its releases (relco promote {self.name})"
                    ),
                )
            )
            return Decision(change_of([refused]), subject=refused.release, created=True)
        if _needs_approval(pipeline, submission.trigger):
            return self._await_approval(step, pipeline, submission.upload_mark, now)
        entered = self._enter(step, pipeline, submission.upload_mark, self.slot, now)
        if submission.trigger is Trigger.ROLLBACK and submission.rollback_of and pipeline.downstream_soaks:
            entered = self._mark_rolled_back(entered, submission.rollback_of, submission.release_id, now)
        return dataclasses.replace(entered, created=True)

    def _mark_rolled_back(
        self, decision: Decision, rolled_back: str, rollback_id: str, now: datetime
    ) -> Decision:
        """A manual rollback of a pipeline others promote from marks the release it rolls back, in
        the same write: its promotions still pending downstream are cancelled (at once by the use
        case, or by reconcile should that be lost), and it is never promoted again."""
        release = self._release(rolled_back)
        if release is None or release.id in {written.id for written in decision.change.releases}:
            return decision
        marked = update(
            Step(release, ()), now=now, metadata={**release.metadata, ROLLED_BACK_BY: rollback_id}
        )
        change = decision.change
        return dataclasses.replace(
            decision,
            change=dataclasses.replace(change, releases=[*change.releases, marked.release]),
        )

    def _withdrawn_promotion(self, release: Release, now: datetime) -> Step | None:
        """A promotion about to take the slot (or be approved) whose upstream release was rolled
        back since stops instead: the rollback's own write marked that release, so this holds
        even when the cancel that follows the rollback was lost."""
        upstream_id = release.metadata.get(PROMOTED_FROM) if release.trigger is Trigger.PROMOTION else None
        upstream = self._release(upstream_id) if upstream_id else None
        if upstream is None or ROLLED_BACK_BY not in upstream.metadata:
            return None
        stopped = transition(
            Step(release, ()),
            ReleaseState.STOPPED,
            now=now,
            reason=(
                f"cancelled: {upstream.pipeline} rolled back {upstream.id} "
                f"(release {upstream.metadata[ROLLED_BACK_BY]})"
            ),
            detail={"cancelled_promotion_of": upstream.id},
        )
        return None if isinstance(stopped, Refused) else stopped

    def cancel_promotions(self, upstream_release_id: str, reason: str, now: datetime) -> Decision:
        """Promotions of ``upstream_release_id`` still waiting here (for approval or for the
        slot) stop: the upstream pipeline rolled that release back."""
        pending = [mark.release_id for mark in self.slot.awaiting_approval] + list(self.slot.waiting)
        self._require(pending)
        steps: list[Step] = []
        logs: list[LogLine] = []
        slot = self.slot
        for release in map(self.releases.get, pending):
            if (
                release is None
                or release.trigger is not Trigger.PROMOTION
                or release.metadata.get(PROMOTED_FROM) != upstream_release_id
            ):
                continue
            stopped = transition(
                Step(release, ()),
                ReleaseState.STOPPED,
                now=now,
                reason=reason,
                detail={"cancelled_promotion_of": upstream_release_id},
            )
            if isinstance(stopped, Refused):
                logs.append(refused_line(stopped))
                continue
            steps.append(stopped)
            slot = slot.free(release.id)
            logs.append(LogLine("pending promotion cancelled", {"release_id": release.id}))
        return Decision(change_of(steps, slot if slot != self.slot else None), logs=tuple(logs))

    def _enter(
        self,
        step: Step,
        pipeline: Pipeline,
        upload: UploadMark | None,
        before: PipelineSlot,
        now: datetime,
        *,
        detail: Detail | None = None,
    ) -> Decision:
        """A release (RECEIVED, or just approved) takes the slot, waits in line, or is turned
        away; ``detail`` goes into the history event of its move."""
        release = step.release
        release_id = release.id
        superseded: tuple[str, ...] = ()
        freeze: Freeze | None = None
        firing: tuple[AlarmStatus, ...] = ()
        logs: list[LogLine] = []
        moved_detail: dict[str, Any] = dict(detail or {})
        # A release that waited out a freeze and takes the slot before this one (below).
        thawed_steps: list[Step] = []
        thawed: Release | None = None
        break_glass = release.metadata.get(BREAK_GLASS)
        frozen = None if release.trigger.is_rollback else current_freeze(pipeline.freeze, now)
        if break_glass is not None:
            # Recorded whether or not a freeze is on: who broke the glass, why, and what it broke.
            moved_detail[BREAK_GLASS] = {
                "reason": break_glass,
                "actor": release.actor,
                "freeze": frozen.to_dict() if frozen else None,
            }
        if release.trigger.is_rollback or (
            break_glass is not None and frozen is not None and before.active is None
        ):
            # A freeze never blocks recovery, and break-glass goes past it to a free slot (the
            # releases the freeze holds stay held).
            slot = before.give_first(release_id)
            took_slot = slot.active == release_id
        else:
            # During a freeze the release waits even for a free slot, and only the newest waits
            # (whatever ``on_busy`` says): the end of the freeze starts the build that is current
            # then, not a backlog of builds that were never reviewed in order. Break-glass waits
            # for a busy slot as ``on_busy`` says, and is the one the freeze lets start next.
            freeze = None if break_glass is not None else frozen
            if freeze is None and before.active is None and before.waiting:
                # A freeze has ended and no repair has run since: the release that waited for it
                # takes the slot first, as that repair would have given it.
                before, thawed = self._promote(before, now, thawed_steps, logs)
            admission = before.admit(
                release_id,
                BusyPolicy.SUPERSEDE if freeze is not None else pipeline.on_busy,
                upload,
                may_start=freeze is None,
            )
            newer = admission.turned_away_by
            if upload is not None and newer is not None:
                turned_away = _superseded_as_older(step, upload, newer, now)
                return Decision(
                    change_of([turned_away, *thawed_steps], before if before != self.slot else None),
                    subject=turned_away.release,
                    start=thawed,
                    logs=(
                        *logs,
                        LogLine("release superseded by a newer upload", {"newer": newer.release_id}),
                    ),
                )
            slot, took_slot, superseded = admission.slot, admission.active, admission.superseded
            firing = self._alarms_firing(release, pipeline) if took_slot else ()
            if firing and pipeline.verify.alarm_at_start is AlarmAtStart.FAIL:
                failed = _moved(
                    transition(
                        step,
                        ReleaseState.FAILED,
                        now=now,
                        reason=f"not started: {_alarm_names(firing)} in ALARM (verify.alarm_at_start = fail)",
                        detail={**moved_detail, "alarms": [alarm.to_dict() for alarm in firing]},
                    )
                )
                return Decision(
                    change_of([failed, *thawed_steps], before if before != self.slot else None),
                    subject=failed.release,
                    start=thawed,
                    logs=(
                        *logs,
                        LogLine("release failed: an alarm is in ALARM", {"alarms": _alarm_names(firing)}),
                    ),
                )
            if firing:
                # It waits at the head of the line, its start checked again at every repair.
                admission = before.admit(release_id, pipeline.on_busy, upload, may_start=False)
                slot, took_slot = admission.slot, False
                moved_detail["alarms"] = [alarm.to_dict() for alarm in firing]
        # Rollbacks and break-glass releases a supersede would replace keep their place in front
        # of the newcomer: a person asked for each, and a build from CI never replaces them.
        self._require(superseded)
        replaced = [older for older in map(self.releases.get, superseded) if older is not None]
        kept = tuple(older.id for older in replaced if _never_superseded(older))
        slot = dataclasses.replace(slot, waiting=(*kept, *slot.waiting))
        if took_slot:
            moved = transition(
                step,
                ReleaseState.DEPLOYING,
                now=now,
                reason="slot free: starting CodeDeploy",
                detail=moved_detail,
                start_claimed_at=now,
            )
        elif freeze is not None:
            moved = transition(
                step,
                ReleaseState.QUEUED,
                now=now,
                reason=f"pipeline frozen until {_second(freeze.ends_at)}: {freeze.reason}",
                detail={
                    **moved_detail,
                    "position": slot.waiting.index(release_id) + 1,
                    "freeze": freeze.to_dict(),
                },
            )
        elif "alarms" in moved_detail:
            moved = transition(
                step,
                ReleaseState.QUEUED,
                now=now,
                reason=f"waiting: {_alarm_names(firing)} in ALARM (verify.alarm_at_start = wait)",
                detail={**moved_detail, "position": slot.waiting.index(release_id) + 1},
            )
        else:
            moved = transition(
                step,
                ReleaseState.QUEUED,
                now=now,
                reason=f"pipeline busy with {before.active or before.waiting[0]}",
                detail={**moved_detail, "position": slot.waiting.index(release_id) + 1},
            )
        steps = [_moved(moved)]
        superseded_by = [older for older in replaced if not _never_superseded(older)]
        _supersede(superseded_by, release_id, f"superseded by {release_id}", now, steps=steps, logs=logs)
        entered = steps[0].release
        logs.append(LogLine(f"release {entered.state.value.lower()}", {"key": entered.revision.key}))
        return Decision(
            change_of([*steps, *thawed_steps], slot),
            subject=entered,
            start=entered if took_slot else thawed,
            logs=tuple(logs),
        )

    def _alarms_firing(self, release: Release, pipeline: Pipeline) -> tuple[AlarmStatus, ...]:
        """The pipeline's alarms in ALARM, which hold the start of ``release`` (``verify.alarms``).
        A rollback and a break-glass release are not held. An alarm that cannot be read, or does
        not exist, does not hold a start: the health checks judge those, as they judge any
        release."""
        if not pipeline.verify.alarms or release.trigger.is_rollback or BREAK_GLASS in release.metadata:
            return ()
        if self.alarms is None:
            raise NeedsAlarms(pipeline.verify.alarms)
        return self.alarms.firing

    # -- approvals ---------------------------------------------------------------------------

    def _await_approval(
        self, step: Step, pipeline: Pipeline, upload: UploadMark | None, now: datetime
    ) -> Decision:
        """The release waits for a person's approval before it takes a place in line. Under
        ``on_newer = "supersede"`` it replaces the releases awaiting approval before it (an upload
        S3 stored before one of those is the one replaced): nobody approves a stale build."""
        policy = pipeline.approval
        release_id = step.release.id
        logs: list[LogLine] = []
        # A freeze has ended and no repair has run since: the release that waited for it takes the
        # slot in this write, as in ``_enter``.
        thawed_steps: list[Step] = []
        thawed: Release | None = None
        base = self.slot
        if base.active is None and base.waiting and current_freeze(pipeline.freeze, now) is None:
            base, thawed = self._promote(base, now, thawed_steps, logs)

        def turned_away(newer: UploadMark) -> Decision:
            assert upload is not None
            older = _superseded_as_older(step, upload, newer, now)
            return Decision(
                change_of([older, *thawed_steps], base if base != self.slot else None),
                subject=older.release,
                start=thawed,
                logs=(*logs, LogLine("release superseded by a newer upload", {"newer": newer.release_id})),
                created=True,
            )

        slot = base
        replaced: tuple[str, ...] = ()
        if policy.on_newer is OnNewer.SUPERSEDE and slot.awaiting_approval:
            newer = next(
                (
                    mark.upload
                    for mark in slot.awaiting_approval
                    if upload is not None and mark.upload is not None and upload.stored_before(mark.upload)
                ),
                None,
            )
            if newer is not None:
                return turned_away(newer)
            replaced = tuple(mark.release_id for mark in slot.awaiting_approval)
            slot = dataclasses.replace(slot, awaiting_approval=())
        if (
            upload is not None
            and slot.newest_started is not None
            and upload.stored_before(slot.newest_started)
        ):
            return turned_away(slot.newest_started)
        self._require(replaced)
        expires_at = now + policy.expires_after
        slot = dataclasses.replace(
            slot, awaiting_approval=(*slot.awaiting_approval, ApprovalMark(release_id, expires_at, upload))
        )
        waiting = _moved(
            transition(
                step,
                ReleaseState.AWAITING_APPROVAL,
                now=now,
                reason=f"awaiting approval until {_second(expires_at)}",
                detail={"approval": {"expires_at": expires_at.isoformat()}},
            )
        )
        steps = [waiting]
        logs.append(LogLine("release awaiting approval", {"expires_at": expires_at.isoformat()}))
        pending = [older for older in map(self.releases.get, replaced) if older is not None]
        reason = f"superseded by {release_id}, which awaits approval in its place"
        _supersede(pending, release_id, reason, now, steps=steps, logs=logs)
        return Decision(
            change_of([*steps, *thawed_steps], slot),
            subject=waiting.release,
            start=thawed,
            logs=tuple(logs),
            created=True,
        )

    def approve(self, release_id: str, person: Person, comment: str | None, now: datetime) -> Decision:
        """A person the pipeline allows approves: the release takes the slot or its place in
        line as a new release would (freeze, ``on_busy`` and alarms apply). An approval that has
        expired is refused, and the release ends as expired."""
        release, mark, pipeline = self._awaiting(release_id, person)
        if now >= mark.expires_at:
            return self._expired(release_id, now)
        withdrawn = self._withdrawn_promotion(release, now)
        if withdrawn is not None:
            return Decision(change_of([withdrawn], self.slot.free(release_id)), subject=withdrawn.release)
        detail: dict[str, Any] = {"approved_by": person.name}
        if comment:
            detail["comment"] = comment
        return self._enter(
            Step(release, ()), pipeline, mark.upload, self.slot.free(release_id), now, detail=detail
        )

    def reject(self, release_id: str, person: Person, comment: str | None, now: datetime) -> Decision:
        """A person the pipeline allows rejects: the release stops, with who and why."""
        release, mark, _pipeline = self._awaiting(release_id, person)
        if now >= mark.expires_at:
            return self._expired(release_id, now)
        detail: dict[str, Any] = {"rejected_by": person.name}
        if comment:
            detail["comment"] = comment
        reason = f"rejected by {person.name}" + (f": {comment}" if comment else "")
        return self.finish(Finish(release.id, ReleaseState.STOPPED, reason=reason, detail=detail), now)

    def _awaiting(self, release_id: str, person: Person) -> tuple[Release, ApprovalMark, Pipeline]:
        release = self._release(release_id)
        if release is None:
            raise NotFound(f"no release {release_id[:200]!r}")
        mark = self.slot.approval_mark(release_id)
        if release.state is not ReleaseState.AWAITING_APPROVAL or mark is None:
            raise ConflictingState(
                f"release {release.id} is {release.state.value}, not awaiting approval"
                + (f": {release.reason}" if release.reason else "")
            )
        if self.config is None:
            raise ConflictingState(f"pipeline {self.name!r} is no longer configured")
        if not self.config.approval.allows(person):
            raise Forbidden(
                f"{person.name} may not approve or reject releases of pipeline {self.name!r}: "
                "the pipelines file's [pipeline.approval] names who may"
            )
        return release, mark, self.config

    def _expired(self, release_id: str, now: datetime) -> Decision:
        """An approval or rejection that came too late: the repair that expires the release."""
        repaired = self.repair(now)
        ended = next(release for release in repaired.change.releases if release.id == release_id)
        return dataclasses.replace(repaired, subject=ended)

    def _expire_due(
        self, slot: PipelineSlot, now: datetime, steps: list[Step], logs: list[LogLine]
    ) -> PipelineSlot:
        """Releases whose approval has expired end STOPPED, with when it expired."""
        due = [mark for mark in slot.awaiting_approval if now >= mark.expires_at]
        self._require(mark.release_id for mark in due)
        for mark in due:
            slot = slot.free(mark.release_id)
            release = self.releases[mark.release_id]
            if release is None:
                continue
            ended = transition(
                Step(release, ()),
                ReleaseState.STOPPED,
                now=now,
                reason=f"approval expired at {_second(mark.expires_at)}: nobody approved it in time",
                detail={"approval_expired": mark.expires_at.isoformat()},
            )
            if isinstance(ended, Refused):
                logs.append(refused_line(ended))
            else:
                steps.append(ended)
                logs.append(LogLine("approval expired", {"release_id": release.id}))
        return slot

    # -- finish ------------------------------------------------------------------------------

    def finish(self, command: Finish, now: datetime) -> Decision:
        """Move a release to a terminal state, let go of its place in the slot and hand the slot
        on (to the automatic rollback first), all in one write. When the finished release did
        not hold the slot (an external deployment, a waiting release), the slot's own release is
        repaired too: it may have been waiting for CodeDeploy to be free."""
        release = self._release(command.release_id)
        if release is None:
            return Decision()
        if not can_transition(release.state, command.target):
            return Decision(logs=(refused_line(Refused(release.id, release.state, command.target)),))
        rollback, note = self._plan_rollback(release, now) if command.roll_back else (None, "")
        step = (
            annotate(Step(release, ()), command.annotation, now) if command.annotation else Step(release, ())
        )
        rollback_detail = {"rollback_release_id": rollback.release.id} if rollback else {}
        finished = _moved(
            transition(
                step,
                command.target,
                now=now,
                reason=command.reason + note,
                detail={**command.detail, **rollback_detail},
            )
        )
        steps = [finished]
        slot = self.slot.free(release.id)
        if command.target is ReleaseState.SUCCEEDED:
            slot = dataclasses.replace(slot, last_good=release.id, last_good_at=now)
        start: Release | None = None
        look_first = False
        promoted: Release | None = None
        logs: list[LogLine] = []
        report: dict[str, str] = {}
        if rollback is not None:
            rollback_id, busy_with = rollback.release.id, slot.active
            slot = slot.give_first(rollback_id)
            if slot.active == rollback_id:
                rollback = _moved(
                    transition(
                        rollback,
                        ReleaseState.DEPLOYING,
                        now=now,
                        reason=(
                            f"rolling back {release.id} to the last verified release "
                            f"{rollback.release.metadata['rolled_back_to']}"
                        ),
                        start_claimed_at=now,
                    )
                )
                start = promoted = rollback.release
            else:
                # Another release holds the slot (the one that failed ran beside it, as an
                # external deployment does): the rollback waits at the head of the line.
                rollback = _moved(
                    transition(
                        rollback,
                        ReleaseState.QUEUED,
                        now=now,
                        reason=f"pipeline busy with {busy_with}",
                        detail={"position": slot.waiting.index(rollback_id) + 1},
                    )
                )
            steps.append(rollback)
        if start is None:
            slot, start, look_first = self._repair(slot, now, steps, logs, report)
            promoted = start if "promoted" in report else None
        logs.append(
            LogLine(
                f"release {command.target.value.lower()}",
                {
                    "release_id": release.id,
                    "reason": finished.release.reason,
                    "next_release_id": promoted.id if promoted else None,
                },
            )
        )
        if self.config is None:
            logs.append(
                LogLine(
                    "pipeline no longer configured; not starting the next release",
                    {"pipeline": self.name},
                    "warning",
                )
            )
            start = None
        return Decision(
            change_of(steps, slot if slot != self.slot else None),
            subject=finished.release,
            start=start,
            look_first=look_first,
            logs=tuple(logs),
            report=report,
        )

    def _plan_rollback(self, failed: Release, now: datetime) -> tuple[Step | None, str]:
        """The automatic rollback of a failed release: a new release (RECEIVED) of the last
        verified revision, and the note appended to the failed release's reason. A rollback never causes
        another: when a rollback itself fails, the pipeline stops there for a person to look."""
        if failed.trigger.is_rollback:
            return None, "; this was a rollback, so no further rollback"
        last_good = self._release(self.slot.last_good) if self.slot.last_good else None
        if last_good is None:
            return None, "; nothing to roll back to: no release of this pipeline was verified yet"
        started = new_release(
            release_id=rollback_release_id(failed.id),
            pipeline=failed.pipeline,
            application=failed.application,
            deployment_group=failed.deployment_group,
            revision=last_good.revision,
            trigger=Trigger.AUTO_ROLLBACK,
            now=now,
            rollback_of=failed.id,
            metadata={
                **{name: value for name, value in last_good.metadata.items() if name != BREAK_GLASS},
                "rolled_back_to": last_good.id,
            },
        )
        return started, f"; rolling back to {last_good.id}"

    # -- repair ------------------------------------------------------------------------------

    def repair(self, now: datetime) -> Decision:
        """Free a finished or missing active release, promote the next waiting one, restart an
        active release whose start was abandoned (its lease ran out) or handed back."""
        steps: list[Step] = []
        logs: list[LogLine] = []
        report: dict[str, str] = {}
        slot = self._expire_due(self.slot, now, steps, logs)
        if steps:
            report["expired"] = ", ".join(step.release.id for step in steps)
        slot, start, look_first = self._repair(slot, now, steps, logs, report)
        return Decision(
            change_of(steps, slot if slot != self.slot else None),
            start=start if self.config is not None else None,
            look_first=look_first,
            logs=tuple(logs),
            report=report,
        )

    def _repair(
        self,
        slot: PipelineSlot,
        now: datetime,
        steps: list[Step],
        logs: list[LogLine],
        report: dict[str, str],
    ) -> tuple[PipelineSlot, Release | None, bool]:
        """The slot repaired, with the release to start and whether to look for an earlier
        attempt's deployment first. Adds the writes to ``steps``."""
        if slot.active is not None:
            active = self._release(slot.active)
            if active is not None and not active.state.is_terminal:
                if not active.awaiting_deployment or self.config is None:
                    return slot, None, False
                claimed = active.start_claimed_at
                if claimed is not None and now - claimed < CLAIM_LEASE:
                    return slot, None, False
                claim = update(Step(active, ()), now=now, start_claimed_at=now)
                steps.append(claim)
                report["restarted"] = active.id
                return slot, claim.release, True
            logs.append(
                LogLine(
                    "freeing a slot held by a finished or missing release",
                    {"release_id": slot.active},
                    "warning",
                )
            )
            report["freed"] = slot.active
            slot = slot.free(slot.active)
        slot, promoted = self._promote(slot, now, steps, logs)
        if promoted is not None:
            report["promoted"] = promoted.id
        return slot, promoted, False

    def _promote(
        self, slot: PipelineSlot, now: datetime, steps: list[Step], logs: list[LogLine]
    ) -> tuple[PipelineSlot, Release | None]:
        """If the slot is free, hand it to the first waiting release that can still deploy, unless
        the pipeline is frozen and that release is not a rollback (rollbacks wait at the head of
        the line, so a frozen head means nothing may start)."""
        while True:
            if slot.active is not None or not slot.waiting:
                return slot, None
            head = slot.waiting[0]
            waiting = self._release(head)
            if waiting is None or waiting.state.is_terminal:
                logs.append(
                    LogLine(
                        "dropping a waiting release that is gone or finished", {"release_id": head}, "warning"
                    )
                )
                slot = slot.free(head)
                continue
            withdrawn = self._withdrawn_promotion(waiting, now)
            if withdrawn is not None:
                steps.append(withdrawn)
                logs.append(
                    LogLine("a promotion of a release rolled back upstream stopped", {"release_id": head})
                )
                slot = slot.free(head)
                continue
            exempt = waiting.trigger.is_rollback or BREAK_GLASS in waiting.metadata
            if not exempt and self.config is not None:
                freeze = current_freeze(self.config.freeze, now)
                if freeze is not None:
                    # Rollbacks wait at the head, so only a break-glass release further back
                    # may start; the others wait for the end.
                    self._require(slot.waiting)
                    glass = next(
                        (
                            release
                            for release in map(self.releases.get, slot.waiting)
                            if release is not None
                            and not release.state.is_terminal
                            and BREAK_GLASS in release.metadata
                        ),
                        None,
                    )
                    if glass is None:
                        logs.append(
                            LogLine(
                                "pipeline frozen; the waiting release starts when the freeze ends",
                                {"release_id": head, "freeze": freeze.to_dict()},
                            )
                        )
                        return slot, None
                    head, waiting = glass.id, glass
                firing = self._alarms_firing(waiting, self.config)
                if firing and self.config.verify.alarm_at_start is AlarmAtStart.FAIL:
                    failed = transition(
                        Step(waiting, ()),
                        ReleaseState.FAILED,
                        now=now,
                        reason=f"not started: {_alarm_names(firing)} in ALARM (verify.alarm_at_start = fail)",
                        detail={"alarms": [alarm.to_dict() for alarm in firing]},
                    )
                    if isinstance(failed, Refused):
                        logs.append(refused_line(failed))
                    else:
                        steps.append(failed)
                    slot = slot.free(head)
                    continue
                if firing:
                    logs.append(
                        LogLine(
                            "alarm in ALARM; the waiting release starts when it is not",
                            {"release_id": head, "alarms": _alarm_names(firing)},
                        )
                    )
                    return slot, None
            slot = slot.promote(head)
            moved = transition(
                Step(waiting, ()),
                ReleaseState.DEPLOYING,
                now=now,
                reason="slot freed: starting CodeDeploy",
                start_claimed_at=now,
            )
            if isinstance(moved, Refused):
                logs.append(refused_line(moved))
                slot = slot.free(head)
                continue
            steps.append(moved)
            return slot, moved.release

    # -- external deployments ----------------------------------------------------------------

    def adopt(self, deployment: ExternalDeployment, now: datetime) -> Decision:
        """Record a deployment started outside the coordinator as an ``external`` release (or,
        for CodeDeploy's own rollback, an ``auto_rollback`` of the release whose failure caused
        it). It occupies CodeDeploy's one deployment per group: it holds the slot if the slot is
        free, so uploads queue behind it instead of failing against CodeDeploy's limit."""
        if self._release(deployment.release_id) is not None:
            return Decision()
        rollback_of = deployment.rollback_of
        if rollback_of:
            reason = f"CodeDeploy's automatic rollback {deployment.deployment_id} of {rollback_of}"
        else:
            reason = (
                f"deployment {deployment.deployment_id} started outside the coordinator "
                f"(creator: {deployment.creator or 'unknown'})"
            )
        step = new_release(
            release_id=deployment.release_id,
            pipeline=self.name,
            application=deployment.application,
            deployment_group=deployment.deployment_group,
            revision=deployment.revision,
            trigger=Trigger.AUTO_ROLLBACK if rollback_of else Trigger.EXTERNAL,
            now=now,
            rollback_of=rollback_of,
            actor=deployment.creator or None,
            metadata={"creator": deployment.creator} if deployment.creator else {},
            deployment_id=deployment.deployment_id,
        )
        moved = _moved(transition(step, ReleaseState.DEPLOYING, now=now, reason=reason))
        holds = self.slot.active is None and not self.slot.waiting
        slot = dataclasses.replace(self.slot, active=deployment.release_id) if holds else None
        return Decision(
            change_of([moved], slot, {deployment.deployment_id: deployment.release_id}),
            subject=moved.release,
            logs=(
                LogLine(
                    "recorded an external deployment",
                    {"release_id": deployment.release_id, "holds_slot": holds},
                ),
            ),
        )

    # -- commands of a person ----------------------------------------------------------------

    def cancel(self, release_id: str, actor: str, now: datetime) -> Decision:
        """A waiting or verifying release stops at once. A deploying one is left to the caller,
        who asks CodeDeploy to stop it (its STOP event then finishes it): the decision writes
        nothing and its subject is the release, still DEPLOYING."""
        release = self._release(release_id)
        if release is None:
            raise NotFound(f"no release {release_id[:200]!r}")
        if release.state.is_terminal:
            raise ConflictingState(
                f"release {release.id} already ended {release.state.value}: {release.reason}"
            )
        if release.state in (ReleaseState.AWAITING_APPROVAL, ReleaseState.QUEUED, ReleaseState.VERIFYING):
            return self.finish(
                Finish(
                    release.id, ReleaseState.STOPPED, reason=f"cancelled by {actor}", detail={"actor": actor}
                ),
                now,
            )
        if release.deployment_id is None:
            # RECEIVED, or DEPLOYING while CreateDeployment is in flight: stopping now could race
            # the deployment being created.
            raise ConflictingState(
                f"release {release.id} is being started; retry the cancel in a few seconds"
            )
        return Decision(subject=release)

    def choose_rollback(self, to: str | None, newest: str | None) -> RollbackChoice:
        """A manual rollback's target: ``to`` (a SUCCEEDED release of this pipeline) or the last
        good release; refused when the target is the current release (the active one, else the
        newest, ``newest``). The use case then submits a ``rollback`` release of it."""
        if to is None:
            if self.slot.last_good is None:
                raise ConflictingState(
                    f"no release of pipeline {self.name!r} has succeeded yet: "
                    "there is nothing to roll back to"
                )
            target = self._release(self.slot.last_good)
            if target is None:
                raise NotFound(f"no release {self.slot.last_good[:200]!r}")
        else:
            found = self._release(to)
            if found is None or found.pipeline != self.name:
                raise InvalidValue(f"field 'to': pipeline {self.name!r} has no release {to!r}")
            if found.state is not ReleaseState.SUCCEEDED:
                raise InvalidValue(
                    f"field 'to': release {to} is {found.state.value}; "
                    "only a SUCCEEDED release can be rolled back to"
                )
            target = found
        current = self.slot.active or newest
        if current is None or current == target.id:
            raise ConflictingState(
                f"release {target.id} is already the current release of {self.name!r}; "
                'name an earlier SUCCEEDED release with {"to": id}'
            )
        return RollbackChoice(target, current)


def _supersede(
    releases: Iterable[Release],
    newer: str,
    reason: str,
    now: datetime,
    *,
    steps: list[Step],
    logs: list[LogLine],
) -> None:
    """End each release SUPERSEDED by ``newer``; a release that cannot be is logged, not raised."""
    for older in releases:
        ended = transition(
            Step(older, ()), ReleaseState.SUPERSEDED, now=now, reason=reason, detail={"superseded_by": newer}
        )
        if isinstance(ended, Refused):
            logs.append(refused_line(ended))
        else:
            steps.append(ended)


def _needs_approval(pipeline: Pipeline, trigger: Trigger) -> bool:
    """A release of this trigger waits for approval before it takes the slot: a promotion when
    ``promote = "approval"``, anything else but a rollback when ``[pipeline.approval]`` requires
    it."""
    if trigger.is_rollback:
        return False
    if trigger is Trigger.PROMOTION:
        return pipeline.promote is PromoteMode.APPROVAL
    return pipeline.approval.required


def _never_superseded(release: Release) -> bool:
    return release.trigger.is_rollback or BREAK_GLASS in release.metadata


def _alarm_names(alarms: Sequence[AlarmStatus]) -> str:
    names = ", ".join(alarm.name for alarm in alarms)
    return f"alarm{'s' if len(alarms) > 1 else ''} {names}"


def _second(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat()


def _superseded_as_older(step: Step, upload: UploadMark, newer: UploadMark, now: datetime) -> Step:
    """An upload whose event came late (a retry after a crash, or S3's unordered delivery): the
    pipeline already took an upload S3 stored after it. The slot is not written for it: its marks
    only move forward, so a stale read can miss this decision but never make it wrongly."""
    return _moved(
        transition(
            step,
            ReleaseState.SUPERSEDED,
            now=now,
            reason=(
                f"superseded by the newer upload {newer.release_id}: S3 stored this one at "
                f"{_second(upload.stored_at)} and that one at {_second(newer.stored_at)}, which the "
                "pipeline already took (deploy this revision through the API to run it anyway)"
            ),
            detail={
                "superseded_by": newer.release_id,
                "stored_at": _second(upload.stored_at),
                "newer_stored_at": _second(newer.stored_at),
            },
        )
    )


def _moved(moved: Step | Refused) -> Step:
    """A transition out of RECEIVED, which the state machine always allows."""
    if isinstance(moved, Refused):
        raise AssertionError(moved.message)
    return moved

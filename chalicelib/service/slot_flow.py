"""Use cases over a pipeline's lane: load it, let it decide, commit the one write it returns, then
call AWS (create the deployment of the release it hands the slot to)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from chalicelib.domain.lane import (
    Annotation,
    Change,
    Decision,
    Finish,
    Lane,
    LogLine,
    NeedsAlarms,
    NeedsReleases,
    change_of,
    refused_line,
)
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import (
    Detail,
    EventType,
    Refused,
    Release,
    ReleaseState,
    Step,
    record,
    update,
)
from chalicelib.domain.slot import PipelineSlot
from chalicelib.domain.verification import AlarmReadError, AlarmReading
from chalicelib.domain.wakeups import WakeUp, next_wake
from chalicelib.log import logger
from chalicelib.service.ports import DeploymentBusy, RevisionRejected
from chalicelib.service.wiring import Wiring, retry_on_conflict

T = TypeVar("T")


class AlarmsNotWired(RuntimeError):
    """The pipeline names alarms but the wiring has no CloudWatch to read them from: the gate
    must not pass unchecked."""


def read_alarms(wiring: Wiring, names: tuple[str, ...]) -> AlarmReading | None:
    """The named alarms' states, or why they could not be read (None: the pipeline names none)."""
    if not names:
        return None
    if wiring.alarms is None:
        raise AlarmsNotWired(f"the pipeline names alarms ({', '.join(names)}) but no CloudWatch is wired")
    try:
        return AlarmReading(names, tuple(wiring.alarms.alarm_states(names)))
    except AlarmReadError as error:
        logger.warning("could not read the alarms", extra={"why": str(error), "permanent": error.permanent})
        return AlarmReading(names, error=error)


# The slot and releases of one lane as one read returned them (ReleaseStore.read_lane).
LaneRead = tuple[PipelineSlot, Mapping[str, Release]]


def decide_in_lane(
    wiring: Wiring,
    pipeline: str,
    subject_ids: Sequence[str],
    ask: Callable[[Lane], T],
    *,
    known: LaneRead | None = None,
    next_in_line: bool = False,
) -> T:
    """Load the lane (the slot and the command's releases in one read; ``known``: the caller
    just read them; ``next_in_line``: the command may hand the slot on, so the likely next
    release is read ahead), and ask it; when it needs releases it was not given, load those
    (in one more read) and ask again."""
    slot, found = (
        known
        if known is not None
        else wiring.store.read_lane(pipeline, subject_ids, next_in_line=next_in_line)
    )
    lane = Lane(
        name=pipeline,
        config=wiring.pipelines.named(pipeline),
        slot=slot,
        releases={**found, **{release_id: found.get(release_id) for release_id in subject_ids}},
    )
    while True:
        try:
            return ask(lane)
        except NeedsAlarms as needs:
            lane = replace(lane, alarms=read_alarms(wiring, needs.names))
        except NeedsReleases as needs:
            loaded = {release.id: release for release in wiring.store.get_releases(needs.release_ids)}
            lane = lane.with_releases(
                {release_id: loaded.get(release_id) for release_id in needs.release_ids}
            )


def run_in_lane(
    wiring: Wiring,
    pipeline: str,
    subject_ids: Sequence[str],
    ask: Callable[[Lane, datetime], Decision],
    *,
    known: LaneRead | None = None,
    next_in_line: bool = False,
) -> Decision:
    """Load, decide and commit until the conditional write wins (a loser loads and decides
    again). Returns the committed decision with its releases as stored. The first attempt may
    decide on ``known``, the lane as the caller just read it: a stale copy fails the write, and
    the retry reads afresh."""
    first = [known] if known is not None else []

    def attempt() -> Decision:
        now = wiring.clock.now()
        lane, decision = decide_in_lane(
            wiring,
            pipeline,
            subject_ids,
            lambda lane: (lane, ask(lane, now)),
            known=first.pop() if first else None,
            next_in_line=next_in_line,
        )
        stored = wiring.store.commit(decision.change)
        for line in decision.logs:
            log(line)
        if lane.config is not None and decision.change.slot is not None:
            _wake_when_due(wiring, lane.config, lane.slot, decision.change.slot, now)

        def as_stored(release: Release | None) -> Release | None:
            return stored.get(release.id, release) if release is not None else None

        return replace(decision, subject=as_stored(decision.subject), start=as_stored(decision.start))

    return retry_on_conflict(attempt)


def _wake_when_due(
    wiring: Wiring, pipeline: Pipeline, before: PipelineSlot, after: PipelineSlot, now: datetime
) -> None:
    """Send the lane a wake-up for the time the committed slot asks to be looked at (a freeze
    holding its waiting release ends), when that time is new: a write that leaves it as it was
    (another upload superseding the waiting one) sends nothing, so a busy frozen lane has one
    wake-up, not one per write.

    The change is committed already: a failed send is logged, not raised (a retry of the event
    would find nothing to write, so would not send it either, and the caller's CreateDeployment
    must still run). A lost wake-up, or a crash between the commit and the send, leaves the lane
    to the reconciler, which starts the waiting release at its first run after the freeze."""
    due = next_wake(pipeline, after, now)
    if due is None or due == next_wake(pipeline, before, now):
        return
    wake = WakeUp(pipeline.name, due)
    try:
        wiring.verify_queue.schedule_wake(wake, wake.delay_s(now))
    except Exception:
        logger.exception(
            "could not send the lane its wake-up; reconcile looks at it after the due time instead",
            extra={"pipeline": pipeline.name, "due_at": due.isoformat()},
        )
        return
    logger.info("lane wake-up sent", extra={"pipeline": pipeline.name, "due_at": due.isoformat()})


def on_release(
    wiring: Wiring,
    release_id: str,
    decide: Callable[[Release, datetime], Change | None],
    *,
    known: Release | None = None,
) -> Release | None:
    """Read, decide and commit on one release (no slot), until the conditional write wins.
    The first attempt may decide on ``known``, the release as the caller just read it: a stale
    copy fails the write, and the retry reads afresh. Returns the release as stored, or None
    when nothing was written (no such release, or ``decide`` wrote nothing)."""
    first = [known] if known is not None and known.id == release_id else []

    def attempt() -> Release | None:
        release = first.pop() if first else wiring.store.get_release(release_id)
        change = decide(release, wiring.clock.now()) if release is not None else None
        return wiring.store.commit(change).get(release_id) if change is not None else None

    return retry_on_conflict(attempt)


def log(line: LogLine) -> None:
    if line.level == "warning":
        logger.warning(line.message, extra=dict(line.extra))
    else:
        logger.info(line.message, extra=dict(line.extra))


def start_deployment(wiring: Wiring, release: Release, pipeline: Pipeline, *, look_first: bool) -> None:
    """Create the CodeDeploy deployment of a release that holds the slot and a fresh start claim.

    ``look_first`` checks CodeDeploy for a deployment an earlier attempt already created: any
    attempt after the first, because a crash may have come between create and store write.
    """
    log_keys = {"release_id": release.id, "pipeline": release.pipeline}
    if look_first:
        existing = wiring.deployments.find_for_release(release)
        if existing is not None:
            logger.info(
                "found the deployment an earlier attempt created",
                extra={**log_keys, "deployment_id": existing},
            )
            link_deployment(wiring, release.id, existing)
            return
    try:
        deployment_id = wiring.deployments.create(release, pipeline.deployment_config)
    except DeploymentBusy as busy:
        logger.warning(
            "deployment group busy with another deployment; waiting for it to end",
            extra={**log_keys, "active_deployment_id": busy.active_deployment_id},
        )
        _record_start_failure(
            wiring,
            release.id,
            {
                "error": "DeploymentLimitExceededException",
                "cause": str(busy),
                "active_deployment_id": busy.active_deployment_id,
                "retry": "when that deployment ends, or at the next reconcile",
            },
        )
        return
    except RevisionRejected as rejected:
        logger.warning("CodeDeploy rejected the release", extra={**log_keys, "error": str(rejected)})
        finish(
            wiring,
            release.id,
            ReleaseState.FAILED,
            reason=f"CodeDeploy refused the deployment: {rejected}",
            detail={"error": rejected.code},
            pipeline=release.pipeline,
        )
        return
    except Exception as error:
        # Throttling, 5xx, timeouts: hand the start back so the retry (Lambda's, or the
        # reconciler's) may claim it at once, then let the invocation fail and be retried.
        logger.warning("CreateDeployment failed; will be retried", extra={**log_keys, "error": repr(error)})
        _record_start_failure(
            wiring, release.id, {"error": type(error).__name__, "cause": str(error)[:500], "retry": "yes"}
        )
        raise
    logger.info("deployment created", extra={**log_keys, "deployment_id": deployment_id})
    link_deployment(wiring, release.id, deployment_id, known=release)


def _record_start_failure(wiring: Wiring, release_id: str, detail: Detail) -> None:
    def hand_back(release: Release, now: datetime) -> Change | None:
        if not release.awaiting_deployment:
            return None
        step = record(
            update(Step(release, ()), now=now, start_claimed_at=None),
            EventType.TASK_FAILED,
            now=now,
            detail={"task": "CreateDeployment", **detail},
        )
        return change_of([step])

    try:
        on_release(wiring, release_id, hand_back)
    except Exception:
        # The lease runs out by itself; the reconciler retries the start then.
        logger.exception("could not record the failed start", extra={"release_id": release_id})


def link_deployment(
    wiring: Wiring, release_id: str, deployment_id: str, *, known: Release | None = None
) -> Release | None:
    """Record which CodeDeploy deployment carries the release (and the index to find it).
    Returns the release as linked, or None when it was not written (already linked, or gone)."""

    def link(release: Release, now: datetime) -> Change | None:
        if release.deployment_id == deployment_id:
            return None
        if release.deployment_id is not None:
            logger.error(
                "release already linked to another deployment; leaving it",
                extra={
                    "release_id": release_id,
                    "deployment_id": deployment_id,
                    "linked": release.deployment_id,
                },
            )
            return None
        step = record(
            update(Step(release, ()), now=now, deployment_id=deployment_id, start_claimed_at=None),
            EventType.TASK_STARTED,
            now=now,
            detail={"task": "CreateDeployment", "deployment_id": deployment_id},
        )
        return change_of([step], links={deployment_id: release.id})

    return on_release(wiring, release_id, link, known=known)


def finish(
    wiring: Wiring,
    release_id: str,
    target: ReleaseState,
    *,
    reason: str,
    detail: Detail | None = None,
    roll_back: bool = False,
    annotation: Annotation | None = None,
    pipeline: str,
    known: LaneRead | None = None,
) -> Release | None:
    """Move a release to a terminal state, free its place in the slot and start the next one,
    all in one write. Returns the finished release, or None when the move was refused.

    ``annotation`` adds a history event (a last health check, failure diagnostics) to the same
    write. ``roll_back`` (failures only) creates the automatic rollback release to the last
    verified one and gives it the slot ahead of every waiting release. ``pipeline`` is the
    release's pipeline: its lane is read with the release in one call, unless the caller just
    read them (``known``).
    """
    command = Finish(release_id, target, reason, detail or {}, roll_back, annotation)
    decision = run_in_lane(
        wiring,
        pipeline,
        [release_id],
        lambda lane, now: lane.finish(command, now),
        known=known,
        next_in_line=True,
    )
    start_next(wiring, decision)
    return decision.subject


def advance(wiring: Wiring, pipeline: Pipeline) -> dict[str, Any]:
    """Repair and move the slot: free a finished or missing active release, promote the next
    waiting one, restart an active release whose start was abandoned. Returns what it did."""
    decision = run_in_lane(wiring, pipeline.name, [], lambda lane, now: lane.repair(now), next_in_line=True)
    start_next(wiring, decision)
    return dict(decision.report)


def start_next(wiring: Wiring, decision: Decision) -> None:
    if decision.start is None:
        return
    pipeline = wiring.pipelines.named(decision.start.pipeline)
    if pipeline is not None:  # the lane hands out no start for a pipeline no longer configured
        start_deployment(wiring, decision.start, pipeline, look_first=decision.look_first)


def log_refused(refused: Refused) -> None:
    log(refused_line(refused))

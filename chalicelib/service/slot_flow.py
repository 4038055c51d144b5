"""Starting, linking and finishing releases while keeping the pipeline slot consistent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import (
    Detail,
    EventType,
    HistoryEvent,
    Refused,
    Release,
    ReleaseState,
    Step,
    Trigger,
    new_release,
    record,
    rollback_release_id,
    transition,
    update,
)
from chalicelib.domain.slot import PipelineSlot
from chalicelib.log import logger
from chalicelib.service.context import Context, retry_on_conflict
from chalicelib.service.ports import Change, DeploymentBusy, RevisionRejected
from chalicelib.service.reads import FirstRead, stored

# A start claimed longer ago than this was abandoned (its Lambda died mid-way): it may be retried.
START_CLAIM_LEASE = timedelta(minutes=2)


@dataclass
class Batch:
    """The releases and history events one transaction writes."""

    releases: list[Release] = field(default_factory=list)
    events: dict[str, Sequence[HistoryEvent]] = field(default_factory=dict)

    def add(self, step: Step) -> None:
        self.releases.append(step.release)
        self.events[step.release.id] = step.events

    def change(self, slot: PipelineSlot | None, links: dict[str, str] | None = None) -> Change:
        return Change(releases=self.releases, events=self.events, slot=slot, deployment_links=links or {})


def log_refused(refused: Refused) -> None:
    logger.info(refused.message, extra={"release_id": refused.release_id})


def promote_waiting(
    context: Context, slot: PipelineSlot, batch: Batch
) -> tuple[PipelineSlot, Release | None]:
    """If the slot is free, hand it to the first waiting release (in the same transaction)."""
    now = context.clock.now()
    while True:
        slot, head = slot.promote_next()
        if head is None:
            return slot, None
        waiting = context.store.get_release(head)
        if waiting is None or waiting.state.is_terminal:
            logger.warning("dropping a waiting release that is gone or finished", extra={"release_id": head})
            slot = slot.free(head)
            continue
        moved = transition(
            Step(waiting, ()),
            ReleaseState.DEPLOYING,
            now=now,
            reason="slot freed: starting CodeDeploy",
            start_claimed_at=now,
        )
        if isinstance(moved, Refused):
            log_refused(moved)
            slot = slot.free(head)
            continue
        batch.add(moved)
        return slot, moved.release


def start_deployment(context: Context, release: Release, pipeline: Pipeline, *, look_first: bool) -> None:
    """Create the CodeDeploy deployment of a release that holds the slot and a fresh start claim.

    ``look_first`` checks CodeDeploy for a deployment an earlier attempt already created: any
    attempt after the first, because a crash may have come between create and store write.
    """
    log_keys = {"release_id": release.id, "pipeline": release.pipeline}
    if look_first:
        existing = context.deployments.find_for_release(release)
        if existing is not None:
            logger.info(
                "found the deployment an earlier attempt created",
                extra={**log_keys, "deployment_id": existing},
            )
            link_deployment(context, release.id, existing)
            return
    try:
        deployment_id = context.deployments.create(release, pipeline.deployment_config)
    except DeploymentBusy as busy:
        logger.warning(
            "deployment group busy with another deployment; waiting for it to end",
            extra={**log_keys, "active_deployment_id": busy.active_deployment_id},
        )
        _record_start_failure(
            context,
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
            context,
            release.id,
            ReleaseState.FAILED,
            reason=f"CodeDeploy refused the deployment: {rejected}",
            detail={"error": rejected.code},
        )
        return
    except Exception as error:
        # Throttling, 5xx, timeouts: hand the start back so the retry (Lambda's, or the
        # reconciler's) may claim it at once, then let the invocation fail and be retried.
        logger.warning("CreateDeployment failed; will be retried", extra={**log_keys, "error": repr(error)})
        _record_start_failure(
            context, release.id, {"error": type(error).__name__, "cause": str(error)[:500], "retry": "yes"}
        )
        raise
    logger.info("deployment created", extra={**log_keys, "deployment_id": deployment_id})
    link_deployment(context, release.id, deployment_id, known=release)


def _record_start_failure(context: Context, release_id: str, detail: Detail) -> None:
    def decide() -> None:
        release = context.store.get_release(release_id)
        if release is None or not release.awaiting_deployment:
            return
        now = context.clock.now()
        step = record(
            update(Step(release, ()), now=now, start_claimed_at=None),
            EventType.TASK_FAILED,
            now=now,
            detail={"task": "CreateDeployment", **detail},
        )
        context.store.commit(Change(releases=[step.release], events={release.id: step.events}))

    try:
        retry_on_conflict(decide)
    except Exception:
        # The lease runs out by itself; the reconciler retries the start then.
        logger.exception("could not record the failed start", extra={"release_id": release_id})


def link_deployment(
    context: Context, release_id: str, deployment_id: str, *, known: Release | None = None
) -> Release | None:
    """Record which CodeDeploy deployment carries the release (and the index to find it)."""
    read = FirstRead(context.store, release_id, known)

    def decide() -> Release | None:
        release = read()
        if release is None:
            return None
        if release.deployment_id == deployment_id:
            return release
        if release.deployment_id is not None:
            logger.error(
                "release already linked to another deployment; leaving it",
                extra={
                    "release_id": release_id,
                    "deployment_id": deployment_id,
                    "linked": release.deployment_id,
                },
            )
            return release
        now = context.clock.now()
        step = record(
            update(Step(release, ()), now=now, deployment_id=deployment_id, start_claimed_at=None),
            EventType.TASK_STARTED,
            now=now,
            detail={"task": "CreateDeployment", "deployment_id": deployment_id},
        )
        context.store.commit(
            Change(
                releases=[step.release],
                events={release.id: step.events},
                deployment_links={deployment_id: release.id},
            )
        )
        return step.release

    return retry_on_conflict(decide)


# Adds history events to a finishing write, stamped with that write's time.
Prelude = Callable[[Step, datetime], Step]


def finish(
    context: Context,
    release_id: str,
    target: ReleaseState,
    *,
    reason: str,
    detail: Detail | None = None,
    prelude: Prelude | None = None,
    roll_back: bool = False,
    known: Release | None = None,
) -> Release | None:
    """Move a release to a terminal state, free its place in the slot and start the next one,
    all in one write. Returns the finished release, or None when the move was refused.
    ``known`` is the release as the caller last read it (saves a read when it is current).

    ``prelude`` adds history events (a last health check, failure diagnostics) to the same
    write. ``roll_back`` (failures only) creates the auto-rollback release to the last verified
    one and gives it the slot ahead of every waiting release.
    """
    outcome: list[tuple[Release, Release | None, bool]] = []
    read = FirstRead(context.store, release_id, known)

    def decide() -> None:
        outcome.clear()
        release = read()
        if release is None:
            return
        now = context.clock.now()
        slot = context.store.get_slot(release.pipeline)
        rollback = plan_rollback(context, release, slot, now) if roll_back else None
        step = prelude(Step(release, ()), now) if prelude else Step(release, ())
        moved = transition(
            step,
            target,
            now=now,
            reason=reason + (rollback.note if rollback else ""),
            detail={**(detail or {}), **({"rollback_release_id": rollback.release_id} if rollback else {})},
        )
        if isinstance(moved, Refused):
            log_refused(moved)
            return
        batch = Batch()
        batch.add(moved)
        held_active = slot.active == release_id
        new_slot = slot.free(release_id)
        if target is ReleaseState.SUCCEEDED:
            new_slot = replace(new_slot, last_good=release_id)
        promoted: Release | None = None
        if rollback is not None and rollback.step is not None:
            batch.add(rollback.step)
            new_slot, promoted = new_slot.give_first(rollback.step.release.id), None
            if new_slot.active == rollback.step.release.id:
                promoted = rollback.step.release
        else:
            new_slot, promoted = promote_waiting(context, new_slot, batch)
        context.store.commit(batch.change(new_slot if new_slot != slot else None))
        logger.info(
            f"release {target.value.lower()}",
            extra={
                "release_id": release_id,
                "reason": moved.release.reason,
                "next_release_id": promoted.id if promoted else None,
            },
        )
        outcome.append((stored(moved.release), stored(promoted) if promoted else None, held_active))

    retry_on_conflict(decide)
    if not outcome:
        return None
    finished, promoted, held_active = outcome[-1]
    pipeline = context.pipelines.named(finished.pipeline)
    if pipeline is None:
        logger.warning(
            "pipeline no longer configured; not starting the next release",
            extra={"pipeline": finished.pipeline},
        )
        return finished
    if promoted is not None:
        start_deployment(context, promoted, pipeline, look_first=False)
    elif not held_active:
        # A release outside the slot (an external deployment) ended: the slot's own release may
        # have been waiting for CodeDeploy to be free.
        advance(context, pipeline)
    return finished


@dataclass(frozen=True)
class RollbackPlan:
    step: Step | None  # the auto-rollback release, ready to deploy; None when there is none
    note: str  # appended to the failed release's reason

    @property
    def release_id(self) -> str | None:
        return self.step.release.id if self.step else None


def plan_rollback(context: Context, failed: Release, slot: PipelineSlot, now: datetime) -> RollbackPlan:
    """The auto-rollback of a failed release: a new release of the last verified revision.

    A rollback never causes another: when a rollback itself fails, the pipeline stops there
    for a person to look.
    """
    if failed.trigger in (Trigger.ROLLBACK, Trigger.AUTO_ROLLBACK):
        return RollbackPlan(None, "; this was a rollback, so no further rollback")
    last_good = context.store.get_release(slot.last_good) if slot.last_good else None
    if last_good is None:
        return RollbackPlan(None, "; nothing to roll back to: no release of this pipeline was verified yet")
    started = new_release(
        release_id=rollback_release_id(failed.id),
        pipeline=failed.pipeline,
        application=failed.application,
        deployment_group=failed.deployment_group,
        revision=last_good.revision,
        trigger=Trigger.AUTO_ROLLBACK,
        now=now,
        rollback_of=failed.id,
        metadata={**last_good.metadata, "rolled_back_to": last_good.id},
    )
    moved = transition(
        started,
        ReleaseState.DEPLOYING,
        now=now,
        reason=f"rolling back {failed.id} to the last verified release {last_good.id}",
        start_claimed_at=now,
    )
    if isinstance(moved, Refused):  # RECEIVED -> DEPLOYING is always allowed
        raise AssertionError(moved.message)
    return RollbackPlan(moved, f"; rolling back to {last_good.id}")


def advance(context: Context, pipeline: Pipeline) -> dict[str, Any]:
    """Repair and move the slot: free a finished or missing active release, promote the next
    waiting one, restart an active release whose start was abandoned."""
    actions: dict[str, Any] = {}

    def decide() -> tuple[Release | None, bool]:
        slot = context.store.get_slot(pipeline.name)
        now = context.clock.now()
        batch = Batch()
        if slot.active is not None:
            active = context.store.get_release(slot.active)
            if active is not None and not active.state.is_terminal:
                if not active.awaiting_deployment:
                    return None, False
                claimed = active.start_claimed_at
                if claimed is not None and now - claimed < START_CLAIM_LEASE:
                    return None, False
                claim = update(Step(active, ()), now=now, start_claimed_at=now)
                context.store.commit(Change(releases=[claim.release]))
                actions["restarted"] = active.id
                return stored(claim.release), True
            logger.warning(
                "freeing a slot held by a finished or missing release", extra={"release_id": slot.active}
            )
            actions["freed"] = slot.active
            slot_after = slot.free(slot.active)
        else:
            slot_after = slot
        slot_after, promoted = promote_waiting(context, slot_after, batch)
        if slot_after == slot:
            return None, False
        context.store.commit(batch.change(slot_after))
        if promoted is not None:
            actions["promoted"] = promoted.id
        return (stored(promoted) if promoted else None), False

    to_start, look_first = retry_on_conflict(decide)
    if to_start is not None:
        start_deployment(context, to_start, pipeline, look_first=look_first)
    return actions

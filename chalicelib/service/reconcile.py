"""The reconciler: CodeDeploy's events are best effort, so a schedule repairs what a lost event
(or a Lambda that died mid-way) would leave behind. A lane's wake-up (``domain/wakeups.py``)
repairs one lane the same way when a time it waited for comes (a freeze ends)."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import ReleaseState
from chalicelib.domain.wakeups import WakeUp, next_wake, soak_ends
from chalicelib.log import logger
from chalicelib.service import fleet, promotions
from chalicelib.service.deployment_events import STATE_FOR_STATUS, apply_deployment_state
from chalicelib.service.digest import post_digest_if_due
from chalicelib.service.slot_flow import advance
from chalicelib.service.verification import resend_overdue_checks
from chalicelib.service.watchdog import watch_deployment
from chalicelib.service.wiring import Wiring


def reconcile(wiring: Wiring) -> dict[str, Any]:
    """Bring every pipeline's open releases and slot in line with CodeDeploy. Returns what it did.

    One pipeline's failure (throttling, a deleted application, a missing permission) is logged
    and reported, and never keeps the others from being repaired.
    """
    report: dict[str, Any] = {}
    for pipeline in wiring.pipelines.pipelines:
        actions: dict[str, Any] = {}
        try:
            _apply_missed_outcomes(wiring, pipeline, actions)
            actions.update(advance(wiring, pipeline))
            # What a lost wake-up or a lost cancel leaves behind between pipelines.
            if pipeline.downstream_soaks:
                actions.update(promotions.promote_due(wiring, pipeline))
            if pipeline.promote_from is not None:
                actions.update(promotions.repair_promotions(wiring, pipeline))
            # After the lane moved: a release it just started makes the check wait for that one.
            actions.update(fleet.check_after_release(wiring, pipeline))
        except Exception as error:
            logger.exception("reconcile of a pipeline failed; continuing", extra={"pipeline": pipeline.name})
            actions["error"] = f"{type(error).__name__}: {error}"[:500]
        # Apart from the lane's repair: a lane that keeps failing must not hold the week's digest.
        try:
            actions.update(post_digest_if_due(wiring, pipeline))
        except Exception as error:
            logger.exception(
                "weekly digest failed; the next reconcile retries", extra={"pipeline": pipeline.name}
            )
            actions["digest_error"] = f"{type(error).__name__}: {error}"[:500]
        if actions:
            report[pipeline.name] = actions
    return report


def _apply_missed_outcomes(wiring: Wiring, pipeline: Pipeline, actions: dict[str, Any]) -> None:
    for release in wiring.store.open_releases(pipeline.name):
        if release.state is ReleaseState.VERIFYING:
            if resend_overdue_checks(wiring, release):
                actions.setdefault("resent_checks", []).append(release.id)
            continue
        if release.state is not ReleaseState.DEPLOYING or release.deployment_id is None:
            continue
        with logger.append_context_keys(release_id=release.id, deployment_id=release.deployment_id):
            info = wiring.deployments.describe(release.deployment_id)
            missed = STATE_FOR_STATUS.get(info.status)
            if missed is None:
                watched = watch_deployment(wiring, pipeline, release)
                if watched:
                    actions.setdefault("watchdog", {})[release.id] = watched
                continue
            logger.info(
                "applying a CodeDeploy outcome whose event never arrived", extra={"status": info.status}
            )
            apply_deployment_state(wiring, release.id, release.deployment_id, missed, info)
        actions.setdefault("applied", []).append(release.id)


def wake_lane(wiring: Wiring, wake: WakeUp) -> dict[str, Any]:
    """A lane's wake-up arrived. Early (due later than SQS could delay it): sent on with the
    remaining delay. Due: the lane is repaired as reconcile repairs it, and the release the slot
    is handed to starts; a lane with nothing to do (the release started already, or the freeze
    was lengthened by a new pipelines file) is left as it is. Returns what it did."""
    now = wiring.clock.now()
    log_keys = {"pipeline": wake.pipeline, "due_at": wake.due_at.isoformat()}
    pipeline = wiring.pipelines.named(wake.pipeline)
    if pipeline is None:
        logger.info("wake-up for a pipeline no longer configured; dropped", extra=log_keys)
        return {}
    if wake.due_at > now:
        # Sent on only while the lane still has a reason to be looked at by then: an approval
        # given, a freeze's release started, leave nothing for a day-long chain of hops to do.
        reason_at = next_wake(pipeline, wiring.store.get_slot(pipeline.name), now)
        if reason_at is None or reason_at > wake.due_at:
            logger.info("early lane wake-up whose reason is gone; dropped", extra=log_keys)
            return {}
        delay_s = wake.delay_s(now)
        wiring.verify_queue.schedule_wake(wake, delay_s)
        logger.info("lane wake-up not due yet; sent on", extra={**log_keys, "delay_s": delay_s})
        return {"sent_on": delay_s}
    actions = advance(wiring, pipeline)
    if pipeline.downstream_soaks:
        actions.update(promotions.promote_due(wiring, pipeline))
        # The wake-up of one soak's end sends the next (another downstream pipeline's longer
        # soak): no commit of the lane would send it.
        last_good_at = wiring.store.get_slot(pipeline.name).last_good_at
        later = promotions.next_promotion_due(pipeline, last_good_at, now)
        if wake.due_at in soak_ends(pipeline, last_good_at) and later is not None:
            following = WakeUp(pipeline.name, later)
            wiring.verify_queue.schedule_wake(following, following.delay_s(now))
    logger.info("lane woken", extra={**log_keys, "actions": actions})
    return actions

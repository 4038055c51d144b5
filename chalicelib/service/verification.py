"""After CodeDeploy succeeds: verify ALB target health until a healthy streak, or fail and roll
back. Each check also reads the CloudWatch alarms the pipeline names (``verify.alarms``): one in
ALARM fails the release at once. Each check is a history event naming what was not healthy, or
which alarm fired, and why."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from chalicelib.domain.lane import Annotation, Change, annotate, change_of
from chalicelib.domain.release import (
    EventType,
    Refused,
    Release,
    ReleaseState,
    Step,
    transition,
)
from chalicelib.domain.traffic import (
    Comparison,
    Window,
    compare,
    figures,
)
from chalicelib.domain.verification import (
    MAX_DELAY_S,
    AlarmState,
    AlarmStatus,
    Judgement,
    LoadBalancerError,
    Outcome,
    TargetHealth,
    Verification,
    VerifyRequest,
    judge,
    judge_comparison,
    judge_error,
    next_request,
    plan_verification,
)
from chalicelib.log import logger
from chalicelib.service.ports import DeploymentInfo
from chalicelib.service.receipts import read_traffic, receipt_of_groups, rollout_receipt
from chalicelib.service.slot_flow import LaneRead, finish, log_refused, on_release, read_alarms
from chalicelib.service.wiring import Wiring

# A check's history event lists at most this many targets that were not healthy.
_LISTED_TARGETS = 20
# ... and at most this many alarms of each kind (an alarm's state reason runs to 1,023 characters).
_LISTED_ALARMS = 10
# A release's reason names at most this many alarms.
_NAMED_IN_REASON = 3


def begin_verification(
    wiring: Wiring, release: Release, info: DeploymentInfo, *, known: LaneRead | None = None
) -> Release | None:
    """CodeDeploy SUCCESS: verify when the group has a load balancer, else succeed with the reason.
    ``known``: the release's lane as the caller just read it with the release (a release that
    ends here frees the slot on that read)."""
    deployment_id = info.deployment_id
    pipeline = wiring.pipelines.named(release.pipeline)
    if pipeline is None or not info.target_group_names:
        return finish(
            wiring,
            release.id,
            ReleaseState.SUCCEEDED,
            reason=(
                f"CodeDeploy deployment {deployment_id} succeeded; the deployment group has no load "
                "balancer, so there is no target health to verify"
            ),
            detail={"deployment_id": deployment_id},
            pipeline=release.pipeline,
            known=known,
        )
    try:
        groups = wiring.load_balancing.target_groups(info.target_group_names)
    except LoadBalancerError as error:
        if not error.permanent:
            # The event's retry, or reconcile after it, asks again; the release stays DEPLOYING.
            logger.warning("could not read the target groups; retried", extra={"why": str(error)})
            raise
        why = f"cannot verify deployment {deployment_id}: {error}"
        return _fail_verification(wiring, release, deployment_id, why, aws_code=error.code, known=known)
    instances = wiring.deployments.instance_ids(deployment_id, "Succeeded")
    if not instances:
        why = (
            f"cannot verify deployment {deployment_id}: "
            "CodeDeploy reports no instance that deployed successfully"
        )
        traffic_receipt = receipt_of_groups(wiring, release.pipeline, groups, info.created_at)
        return _fail_verification(wiring, release, deployment_id, why, known=known, receipt=traffic_receipt)
    now = wiring.clock.now()
    verification = plan_verification(
        pipeline.verify, groups, instances, now, rollout_started_at=info.created_at
    )
    # The first check runs now, in the write that enters VERIFYING: AllowTraffic has just waited
    # for each instance to pass its target groups' health checks, so this is the moment to look,
    # and it saves a message, a read and a write per release.
    first = VerifyRequest(release.id, deployment_id, 1, pipeline=release.pipeline)
    judgement = _judge(wiring, verification, pipeline.verify.alarms, now)
    checked_in_same_write = judgement.outcome in (Outcome.CONTINUE, Outcome.BAKE)

    def enter_verifying(current: Release, now: datetime) -> Change | None:
        moved = transition(
            Step(current, ()),
            ReleaseState.VERIFYING,
            now=now,
            reason=f"CodeDeploy deployment {deployment_id} succeeded; verifying target health",
            detail={
                "deployment_id": deployment_id,
                "target_groups": list(info.target_group_names),
                "instances": list(verification.instance_ids),
                "healthy_checks": verification.healthy_checks,
                "interval_s": verification.interval_s,
                "deadline": verification.deadline.isoformat(),
            },
            verification=verification,
        )
        if isinstance(moved, Refused):
            log_refused(moved)
            return None
        if checked_in_same_write:
            moved = annotate(moved, _check_annotation(judgement, first.check), now)
        return change_of([moved])

    verifying = on_release(wiring, release.id, enter_verifying, known=release)
    if verifying is None:
        return None
    logger.info("verifying target health", extra={"release_id": release.id, **verification.to_dict()})
    if not checked_in_same_write:
        # The first check decided the release (verified, or unverifiable): end it as a check
        # from the queue would.
        return _apply(wiring, verifying, first, judgement, None)
    checked = judgement.verification
    wiring.verify_queue.schedule(
        *next_request(release.id, deployment_id, release.pipeline, checked, wiring.clock.now())
    )
    return verifying


def _fail_verification(
    wiring: Wiring,
    release: Release,
    deployment_id: str,
    why: str,
    *,
    aws_code: str | None = None,
    annotation: Annotation | None = None,
    known: LaneRead | None = None,
    receipt: dict[str, Any] | None = None,
) -> Release | None:
    """FAILED ``verify_failed``, rolled back as the pipeline says. ``known``: the lane as the
    caller just read it with the release; ``receipt``: the rollout's, for the history."""
    pipeline = wiring.pipelines.named(release.pipeline)
    detail: dict[str, Any] = {"failure": "verify_failed", "deployment_id": deployment_id}
    if aws_code:
        detail["error_code"] = aws_code
    if receipt is not None:
        detail["receipt"] = receipt
    return finish(
        wiring,
        release.id,
        ReleaseState.FAILED,
        reason=f"verify_failed: {why}",
        detail=detail,
        annotation=annotation,
        roll_back=pipeline.rollback.on_verify_failure if pipeline else False,
        pipeline=release.pipeline,
        known=known,
    )


def run_check(wiring: Wiring, request: VerifyRequest) -> Release | None:
    """One health check, from the verify queue. Duplicate and stale messages are dropped.

    The release is read with its lane (the message names the pipeline): a check that ends the
    release frees the slot on that same read."""
    lane: LaneRead | None = None
    if request.pipeline is None:
        release = wiring.store.get_release(request.release_id)
    else:
        lane = wiring.store.read_lane(request.pipeline, [request.release_id])
        release = lane[1].get(request.release_id)
        if release is not None and release.pipeline != request.pipeline:
            lane = None  # a message naming another pipeline: its slot is not this release's
    verification = release.verification if release else None
    if (
        release is None
        or verification is None
        or release.state is not ReleaseState.VERIFYING
        or release.deployment_id != request.deployment_id
    ):
        logger.info(
            "verify message for a release not verifying this deployment; dropped", extra=request.to_message()
        )
        return release
    if request.check != verification.checks_done + 1:
        logger.info(
            "verify message already handled or out of turn; dropped",
            extra={**request.to_message(), "checks_done": verification.checks_done},
        )
        return release
    now = wiring.clock.now()
    hop_s = request.hop_s(now)
    if hop_s:
        # Due later than SQS can delay a message: send it on until it is due.
        wiring.verify_queue.schedule(request, min(hop_s, MAX_DELAY_S))
        logger.info("health check not due yet; sent on", extra={**request.to_message(), "wait_s": hop_s})
        return release
    # The pipelines file as deployed now: an alarm added while a release bakes gates its next check.
    pipeline = wiring.pipelines.named(release.pipeline)
    alarm_names = pipeline.verify.alarms if pipeline else ()
    return _apply(wiring, release, request, _judge(wiring, verification, alarm_names, now), lane)


def _judge(
    wiring: Wiring, verification: Verification, alarm_names: tuple[str, ...], now: datetime
) -> Judgement:
    """Read the deployed targets' health in every target group and the named alarms' states,
    and judge them."""
    alarms = read_alarms(wiring, alarm_names)
    try:
        health = [
            entry
            for arn in verification.target_group_arns
            for entry in wiring.load_balancing.target_health(arn, verification.instance_ids)
        ]
    except LoadBalancerError as error:
        logger.warning(
            "could not read target health", extra={"why": str(error), "permanent": error.permanent}
        )
        return judge_error(verification, error, now, alarms)
    return judge(verification, health, now, alarms)


def _check_annotation(judgement: Judgement, check: int) -> Annotation:
    """The check's history event, with the verification it leaves behind."""
    verification = judgement.verification
    detail: dict[str, Any] = {
        "task": "HealthCheck",
        "check": check,
        "streak": verification.streak,
        "healthy_checks": verification.healthy_checks,
        "instances": len(verification.instance_ids),
        "outcome": judgement.outcome.value,
    }
    if judgement.late_s is not None:
        detail["late_s"] = judgement.late_s
    if judgement.past_deadline:
        detail["past_deadline"] = True
    failed = False
    alarms = judgement.alarms
    if alarms is not None:
        detail["alarms"] = len(alarms.named)
        waiting = [alarm.name for alarm in alarms.found if alarm.state is AlarmState.INSUFFICIENT_DATA]
        if waiting:
            detail["insufficient_data"] = waiting[:_LISTED_ALARMS]
        if alarms.firing:
            detail["in_alarm"] = [alarm.to_dict() for alarm in alarms.firing[:_LISTED_ALARMS]]
        if alarms.missing:
            detail["missing_alarms"] = list(alarms.missing[:_LISTED_ALARMS])
        if alarms.error is not None:
            detail["alarm_error"] = str(alarms.error)
        failed = bool(alarms.firing or alarms.missing or alarms.error)
    if judgement.error is not None:
        detail["error"] = str(judgement.error)
        failed = True
    if judgement.comparison is not None:
        detail["comparison"] = judgement.comparison.to_dict()
        if judgement.comparison_error is not None:
            detail["comparison"]["unavailable"] = judgement.comparison_error
        failed = failed or judgement.outcome is Outcome.REGRESSED
    if judgement.not_healthy:
        detail["not_healthy"] = [entry.to_dict() for entry in judgement.not_healthy[:_LISTED_TARGETS]]
        failed = True
    return Annotation(EventType.TASK_FAILED if failed else EventType.TASK_SUCCEEDED, detail, verification)


def _apply(
    wiring: Wiring, release: Release, request: VerifyRequest, judgement: Judgement, lane: LaneRead | None
) -> Release | None:
    traffic_receipt: dict[str, Any] | None = None
    if judgement.outcome not in (Outcome.CONTINUE, Outcome.BAKE):
        judgement, traffic_receipt = _at_end(wiring, release, judgement)
    receipt_detail = {"receipt": traffic_receipt} if traffic_receipt is not None else {}
    check = _check_annotation(judgement, request.check)
    verification = judgement.verification
    if judgement.outcome is Outcome.REGRESSED:
        assert judgement.comparison is not None  # only the comparison regresses
        why = f"the bake did worse than the baseline window: {judgement.comparison.reason}"
        return _fail_verification(
            wiring,
            release,
            request.deployment_id,
            why,
            annotation=check,
            known=lane,
            receipt=traffic_receipt,
        )
    if judgement.outcome is Outcome.VERIFIED:
        baked = f" and again after {verification.bake_s}s of baking" if verification.bake_s else ""
        return finish(
            wiring,
            release.id,
            ReleaseState.SUCCEEDED,
            reason=(
                f"verified: {len(verification.instance_ids)} instance(s) healthy in every target group "
                f"for {verification.healthy_checks} checks in a row{baked}"
            ),
            detail={
                "deployment_id": request.deployment_id,
                "checks": verification.checks_done,
                **receipt_detail,
            },
            annotation=check,
            pipeline=release.pipeline,
            known=lane,
        )
    alarm_error = judgement.alarms.error if judgement.alarms else None
    aws_error = judgement.error or alarm_error
    aws_code = aws_error.code if aws_error else None
    if judgement.outcome is Outcome.ALARM:
        assert judgement.alarms is not None  # only named alarms fire
        return _fail_verification(
            wiring,
            release,
            request.deployment_id,
            _describe_firing(judgement.alarms.firing),
            annotation=check,
            known=lane,
            receipt=traffic_receipt,
        )
    if judgement.outcome is Outcome.UNVERIFIABLE:
        if judgement.alarms is not None and judgement.alarms.missing:
            # Checked first: CloudWatch answered, so what it lacks is the cause, not an error.
            cause = f"CloudWatch has no alarm named {_names(judgement.alarms.missing)} (verify.alarms)"
            aws_code = None
        else:
            cause = str(aws_error)
        why = f"cannot verify deployment {request.deployment_id}: {cause}"
        return _fail_verification(
            wiring,
            release,
            request.deployment_id,
            why,
            aws_code=aws_code,
            annotation=check,
            known=lane,
            receipt=traffic_receipt,
        )
    if judgement.outcome is Outcome.TIMED_OUT:
        if judgement.error:
            why = f"target health still unreadable at the deadline: {judgement.error}"
        elif judgement.not_healthy:
            why = f"not healthy by the deadline: {_describe(judgement.not_healthy)}"
        else:
            why = f"alarm states still unreadable at the deadline: {alarm_error}"
        return _fail_verification(
            wiring,
            release,
            request.deployment_id,
            why,
            aws_code=aws_code,
            annotation=check,
            known=lane,
            receipt=traffic_receipt,
        )

    def record_check(current: Release, now: datetime) -> Change | None:
        if current.verification is None or current.verification.checks_done != request.check - 1:
            return None  # another copy of this message got there first
        return change_of([annotate(Step(current, ()), check, now)])

    # The release as this check read it: a copy stale by now fails the write and is read again.
    checked = on_release(wiring, release.id, record_check, known=release)
    if checked is not None:
        wiring.verify_queue.schedule(
            *next_request(
                release.id,
                request.deployment_id,
                release.pipeline,
                judgement.verification,
                wiring.clock.now(),
            )
        )
    return checked


def _at_end(
    wiring: Wiring, release: Release, judgement: Judgement
) -> tuple[Judgement, dict[str, Any] | None]:
    """A check that ends the release reads the load balancer's metrics once (one GetMetricData):
    for the receipt, and after a bake for the baseline comparison, which may turn a verified
    release into a regressed one. Returns the judgement and the receipt."""
    pipeline = wiring.pipelines.named(release.pipeline)
    verification = judgement.verification
    if pipeline is None or verification.traffic is None or not verification.traffic.pairs:
        return judgement, None
    # The bake's window is on the verification as this check found it (due bake_s after it began).
    bake_started_at = release.verification.bake_started_at if release.verification else None
    settings = pipeline.verify.compare
    comparing = settings is not None and bake_started_at is not None and judgement.outcome is Outcome.VERIFIED
    if not (comparing or pipeline.verify.receipt):
        return judgement, None
    now = wiring.clock.now()
    # The rollout ended when the release left DEPLOYING; a verification stored before that was
    # recorded ends it at this read.
    rollout_ended_at = verification.rollout_ended_at or now
    rollout = Window.around(verification.rollout_started_at or rollout_ended_at, rollout_ended_at)
    windows = [rollout, rollout.baseline(rollout.start)]
    if settings is not None and bake_started_at is not None and comparing:
        bake = Window.around(bake_started_at, now)
        windows += [bake, bake.baseline(rollout.start)]
    read = read_traffic(wiring, verification.traffic, windows)
    if settings is not None and comparing:
        bake, before = windows[2], windows[3]
        comparison: Comparison = compare(
            settings, figures(read.plan, read.series, bake), figures(read.plan, read.series, before)
        )
        judgement = judge_comparison(judgement, comparison, read.error)
    traffic_receipt = rollout_receipt(read, rollout, ended_at=rollout_ended_at, read_at=now)
    return judgement, traffic_receipt if pipeline.verify.receipt else None


def _describe(not_healthy: tuple[TargetHealth, ...]) -> str:
    shown = ", ".join(
        f"{entry.target_id} {entry.state}" + (f" ({entry.reason})" if entry.reason else "")
        for entry in not_healthy[:5]
    )
    more = f" and {len(not_healthy) - 5} more" if len(not_healthy) > 5 else ""
    return shown + more


def _describe_firing(firing: tuple[AlarmStatus, ...]) -> str:
    first = firing[0]
    since = f" since {first.updated_at.isoformat()}" if first.updated_at else ""
    others = f"; also in ALARM: {_names([alarm.name for alarm in firing[1:]])}" if firing[1:] else ""
    return f"alarm {first.name} is in ALARM{since}: {first.reason}{others}"


def _names(names: Sequence[str]) -> str:
    """Alarm names for a reason, the first few of up to 100 (255 characters each)."""
    more = f" and {len(names) - _NAMED_IN_REASON} more" if len(names) > _NAMED_IN_REASON else ""
    return ", ".join(names[:_NAMED_IN_REASON]) + more


def resend_overdue_checks(wiring: Wiring, release: Release) -> bool:
    """Reconcile: a VERIFYING release whose checks stopped arriving (its message was lost) gets
    its next check re-sent. A late original is dropped by its check number."""
    verification: Verification | None = release.verification
    if release.deployment_id is None or verification is None:
        return False
    now = wiring.clock.now()
    if not verification.overdue(now):
        return False
    request, delay_s = next_request(release.id, release.deployment_id, release.pipeline, verification, now)
    wiring.verify_queue.schedule(request, delay_s)
    logger.info("re-sent an overdue health check", extra=request.to_message())
    return True

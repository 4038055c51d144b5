"""CodeDeploy's state changes move the release that the deployment carries."""

from __future__ import annotations

from chalicelib.domain.inbound_events import DeploymentState, DeploymentStateChanged
from chalicelib.domain.lane import Annotation, ExternalDeployment
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import (
    EventType,
    Release,
    ReleaseState,
    Revision,
    external_release_id,
)
from chalicelib.domain.watchdog import stopped_by_watchdog
from chalicelib.log import logger
from chalicelib.service.ports import DeploymentInfo, DeploymentNotFound, InstanceTarget
from chalicelib.service.receipts import deployment_receipt
from chalicelib.service.slot_flow import LaneRead, finish, link_deployment, run_in_lane
from chalicelib.service.verification import begin_verification
from chalicelib.service.watchdog import end_stopped_release
from chalicelib.service.wiring import Wiring

# GetDeployment's terminal statuses, as the state-change event that a lost event would have said.
# History items stay far below DynamoDB's 400 KB: a few instances, the end of each log.
_LISTED_INSTANCES = 10
_LOG_TAIL_LIMIT = 2048
_MESSAGE_LIMIT = 500

STATE_FOR_STATUS = {
    "Succeeded": DeploymentState.SUCCESS,
    "Failed": DeploymentState.FAILURE,
    "Stopped": DeploymentState.STOP,
}


def handle_deployment_event(wiring: Wiring, event: DeploymentStateChanged) -> str | None:
    """Apply a state change to the release the deployment carries; returns that release's id."""
    # The rule sees every deployment in the account: another team's needs no call at all (and
    # the function may not be allowed to describe it).
    pipeline = wiring.pipelines.for_deployment_group(event.application, event.deployment_group)
    if pipeline is None:
        logger.info(
            "deployment of a group no pipeline owns; ignored",
            extra={"deployment_id": event.deployment_id, "application": event.application},
        )
        return None
    if event.state in (DeploymentState.START, DeploymentState.READY):
        try:
            release_id = wiring.store.release_for_deployment(event.deployment_id)
            if release_id is None:
                release_id = _adopt_unknown_deployment(
                    wiring, pipeline, wiring.deployments.describe(event.deployment_id)
                )
        except DeploymentNotFound:
            _log_unknown(event.deployment_id)
            return None
        # START says nothing the record does not (the link recorded TaskStarted); READY is
        # blue/green's, which the coordinator does not drive.
        logger.info(
            f"CodeDeploy {event.state.value}: no change",
            extra={"release_id": release_id, "deployment_id": event.deployment_id},
        )
        return release_id
    ended = wiring.store.ended_release_for_deployment(event.deployment_id)
    if ended is not None:
        # This container saw the release end: a repeated or late outcome has nothing to move.
        logger.info(
            f"CodeDeploy {event.state.value} for a release that already ended; ignored",
            extra={"release_id": ended, "deployment_id": event.deployment_id},
        )
        return ended
    # A deployment this container already linked or looked up names its release without a call,
    # and a repeated or late outcome for it is settled on the release alone. The release is read
    # with its lane: an outcome that ends it frees the slot on that same read.
    remembered = wiring.store.remembered_release_for_deployment(event.deployment_id)
    lane = _lane_with(wiring, pipeline, remembered) if remembered is not None else None
    release = lane[1].get(remembered) if lane is not None and remembered is not None else None
    info: DeploymentInfo | None = None
    if release is None:
        # An outcome needs the deployment's details anyway (target groups, error information),
        # and they name its release: the coordinator writes the release id into the deployment's
        # description, and a deployment started elsewhere has the id derived from its own.
        try:
            info = wiring.deployments.describe(event.deployment_id)
        except DeploymentNotFound:
            _log_unknown(event.deployment_id)
            return None
        named = info.release_id or external_release_id(info.deployment_id)
        lane = _lane_with(wiring, pipeline, named)
        release = lane[1].get(named)
        if release is None:
            # Started outside the coordinator (or by one whose table does not know it), and its
            # START event was lost: recorded now, so the history has no holes.
            lane = None
            release = wiring.store.get_release(_record_external(wiring, pipeline, info))
            if release is None:
                return None
    if release.pipeline != pipeline.name:
        lane = None  # read with another pipeline's slot: the finish reads its own
    with logger.append_context_keys(release_id=release.id, deployment_id=event.deployment_id):
        try:
            _apply_outcome(wiring, release, event.state, event.deployment_id, info, known=lane)
        except DeploymentNotFound:
            _log_unknown(event.deployment_id)
            return None
    return release.id


def _lane_with(wiring: Wiring, pipeline: Pipeline, release_id: str) -> LaneRead:
    """The pipeline's lane with the release, and the next in line a finish would start."""
    return wiring.store.read_lane(pipeline.name, [release_id], next_in_line=True)


def _log_unknown(deployment_id: str) -> None:
    logger.warning(
        "event for a deployment CodeDeploy does not know; skipped",
        extra={"deployment_id": deployment_id[:200]},
    )


def apply_deployment_state(
    wiring: Wiring,
    release_id: str,
    deployment_id: str,
    state: DeploymentState,
    info: DeploymentInfo | None = None,
) -> Release | None:
    """``info`` is the deployment as the caller just described it (else it is described when
    the outcome needs it)."""
    release = wiring.store.get_release(release_id)
    if release is None:
        logger.error("the release a deployment names is missing")
        return None
    return _apply_outcome(wiring, release, state, deployment_id, info)


def _apply_outcome(
    wiring: Wiring,
    release: Release,
    state: DeploymentState,
    deployment_id: str,
    info: DeploymentInfo | None,
    *,
    known: LaneRead | None = None,
) -> Release | None:
    """``info``: the deployment as the caller described it; None to describe it only when the
    outcome moves the release (a repeated or late event costs no call). ``known``: the release's
    lane as the caller just read it with the release."""
    if release.deployment_id is None and release.awaiting_deployment:
        # The write that links the deployment was lost (its Lambda died after CreateDeployment):
        # link it now, as the START event or reconcile would.
        release = link_deployment(wiring, release.id, deployment_id, known=release) or release
        known = None  # the link changed the release since the lane was read
    if release.deployment_id != deployment_id:
        logger.info("event for a deployment the release no longer follows; ignored")
        return release
    if state is DeploymentState.SUCCESS:
        if release.state is not ReleaseState.DEPLOYING:
            logger.info(
                "CodeDeploy SUCCESS for a release past deploying; ignored",
                extra={"state": release.state.value},
            )
            return release
        return begin_verification(
            wiring, release, info or wiring.deployments.describe(deployment_id), known=known
        )
    if release.state.is_terminal:
        logger.info(
            f"CodeDeploy {state.value} for a release that already ended; ignored",
            extra={"state": release.state.value},
        )
        return release
    if state is DeploymentState.FAILURE:
        return _deployment_failed(
            wiring, release, info or wiring.deployments.describe(deployment_id), known=known
        )
    if state is DeploymentState.STOP:
        stuck = stopped_by_watchdog(release.metadata)
        if stuck is not None:  # the watchdog stopped it: FAILED with its diagnosis
            return end_stopped_release(wiring, release, deployment_id, stuck, known=known)
        receipt = deployment_receipt(wiring, release, deployment_id, info)
        return finish(
            wiring,
            release.id,
            ReleaseState.STOPPED,
            reason=f"CodeDeploy deployment {deployment_id} was stopped",
            detail={"deployment_id": deployment_id, **({"receipt": receipt} if receipt else {})},
            pipeline=release.pipeline,
            known=known,
        )
    return release


def _deployment_failed(
    wiring: Wiring, release: Release, info: DeploymentInfo, *, known: LaneRead | None = None
) -> Release | None:
    """FAILED with CodeDeploy's error and, per failed instance, the failing hook, script, error
    code and log tail; then the auto-rollback, unless CodeDeploy rolls back by itself."""
    deployment_id = info.deployment_id
    cause = f"{info.error_code}: {info.error_message}" if info.error_code else "no error information"
    failed = wiring.deployments.instance_targets(deployment_id, "Failed")
    failed_instances = [diagnose(target) for target in failed]
    pipeline = wiring.pipelines.named(release.pipeline)
    roll_back = bool(pipeline and pipeline.rollback.on_deploy_failure) and not info.rolls_back_on_failure
    note = (
        "; CodeDeploy's own automatic rollback redeploys the previous revision"
        if info.rolls_back_on_failure
        else ""
    )

    diagnostics = Annotation(
        EventType.TASK_FAILED,
        {
            "task": "CodeDeploy",
            "deployment_id": deployment_id,
            "error": info.error_code or "",
            "cause": info.error_message or "",
            "failed_instances": failed_instances[:_LISTED_INSTANCES],
        },
    )

    receipt = deployment_receipt(wiring, release, deployment_id, info)
    first = failed_instances[0] if failed_instances else None
    where = (
        f"; {first['lifecycle_event']} failed on {first['instance']}"
        if first and first.get("lifecycle_event")
        else ""
    )
    return finish(
        wiring,
        release.id,
        ReleaseState.FAILED,
        reason=f"CodeDeploy deployment {deployment_id} failed ({cause}){where}{note}",
        detail={
            "deployment_id": deployment_id,
            "error": info.error_code or "",
            "cause": info.error_message or "",
            **({"receipt": receipt} if receipt else {}),
        },
        annotation=diagnostics,
        roll_back=roll_back,
        pipeline=release.pipeline,
        known=known,
    )


def diagnose(target: InstanceTarget) -> dict[str, str]:
    """The first failed lifecycle event of an instance, with the tail of its script's log."""
    failed = next((event for event in target.lifecycle_events if event.status == "Failed"), None)
    diagnosis = {"instance": target.instance_id, "status": target.status}
    if failed is not None:
        diagnosis.update(
            {
                "lifecycle_event": failed.name,
                "script": failed.script_name or "",
                "error_code": failed.error_code or "",
                "message": (failed.message or "")[:_MESSAGE_LIMIT],
                "log_tail": (failed.log_tail or "")[-_LOG_TAIL_LIMIT:],
            }
        )
    return diagnosis


def _adopt_unknown_deployment(wiring: Wiring, pipeline: Pipeline, info: DeploymentInfo) -> str:
    """A deployment the store does not know: ours whose link the event outran, or one started
    outside the coordinator, recorded as an ``external`` release so the history has no holes."""
    ours = wiring.store.get_release(info.release_id) if info.release_id is not None else None
    if ours is not None:
        link_deployment(wiring, ours.id, info.deployment_id, known=ours)
        return ours.id
    return _record_external(wiring, pipeline, info)


def _record_external(wiring: Wiring, pipeline: Pipeline, info: DeploymentInfo) -> str:
    # CodeDeploy's own automatic rollback is followed, linked to the release whose failure
    # triggered it, instead of the coordinator starting a second rollback.
    rollback_of = (
        wiring.store.release_for_deployment(info.rollback_of_deployment_id)
        if info.rollback_of_deployment_id
        else None
    )
    external = ExternalDeployment(
        release_id=external_release_id(info.deployment_id),
        deployment_id=info.deployment_id,
        application=info.application,
        deployment_group=info.deployment_group,
        revision=info.revision or Revision(bucket="", key="", version=None, etag=None),
        creator=info.creator,
        rollback_of=rollback_of,
    )
    run_in_lane(wiring, pipeline.name, [external.release_id], lambda lane, now: lane.adopt(external, now))
    return external.release_id

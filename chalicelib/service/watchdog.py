"""The stuck-deployment watchdog: a DEPLOYING release whose CodeDeploy deployment makes no progress
is stopped and ends FAILED with a diagnosis, instead of waiting out CodeDeploy's hour.

Reconcile drives it (every 5 minutes, for each DEPLOYING release whose deployment still runs);
the judgment is ``chalicelib.domain.watchdog``'s. Each step survives a crash and a repeat:

1. one write on the DEPLOYING release records the decision (a ``TaskScheduled`` StopDeployment
   event with the class and next step, and the same in the release's metadata), so a later run
   goes on from it without judging again;
2. StopDeployment, with CodeDeploy's automatic rollback as the pipeline's
   ``rollback.on_deploy_failure`` says (as a cancel asks for it);
3. the release ends FAILED with the class and next step in its reason. CodeDeploy's STOP event
   (or reconcile applying the Stopped status it missed) finds the decision in the metadata and
   ends the release the same way when it gets there first; whichever is second finds the
   release ended and does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from chalicelib.domain.lane import Change, change_of
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import EventType, Release, ReleaseState, Step, record, update
from chalicelib.domain.watchdog import (
    INSTANCES_ADDED,
    INSTANCES_AT_START,
    Finding,
    TargetProgress,
    Verdict,
    judge,
    stopped_by_watchdog,
)
from chalicelib.log import logger
from chalicelib.service.ports import DeploymentAlreadyEnded, DeploymentInfo
from chalicelib.service.receipts import deployment_receipt
from chalicelib.service.slot_flow import LaneRead, finish, on_release
from chalicelib.service.wiring import Wiring

_TASK = "Watchdog"


def watch_deployment(wiring: Wiring, pipeline: Pipeline, release: Release) -> dict[str, Any]:
    """Judge the running deployment of a DEPLOYING release; stop it and end the release when it is
    stuck. Returns what it did (for reconcile's report)."""
    deployment_id = release.deployment_id
    if not pipeline.watchdog.enabled or deployment_id is None:
        return {}
    actions: dict[str, Any] = {}
    finding = stopped_by_watchdog(release.metadata)
    if finding is None:
        targets = wiring.deployments.target_progress(deployment_id)
        verdict = judge(
            targets, pipeline.watchdog, wiring.clock.now(), known_instances=_known_instances(release)
        )
        recorded = on_release(
            wiring,
            release.id,
            lambda current, now: (
                _record(current, targets, verdict, pipeline, now=now)
                if current.deployment_id == deployment_id
                else None
            ),
            known=release,
        )
        if verdict.added is not None and recorded is not None:
            actions["instances_added"] = verdict.added.detail["instances"]
        if verdict.stop is None or recorded is None or stopped_by_watchdog(recorded.metadata) is None:
            return actions
        finding = verdict.stop
    logger.warning(
        "watchdog: deployment stuck; stopping it",
        extra={"release_id": release.id, "deployment_id": deployment_id, "class": finding.kind.value},
    )
    try:
        wiring.deployments.stop(deployment_id, auto_rollback=pipeline.rollback.on_deploy_failure)
    except DeploymentAlreadyEnded:
        # It ended by itself meanwhile: its event (or the next reconcile) applies the outcome,
        # and a Stopped one ends the release as the watchdog would.
        logger.info("watchdog: the deployment ended before the stop", extra={"release_id": release.id})
        return {**actions, "stuck": finding.kind.value}
    end_stopped_release(wiring, release, deployment_id, finding)
    return {**actions, "stopped": finding.kind.value}


def end_stopped_release(
    wiring: Wiring,
    release: Release,
    deployment_id: str,
    finding: Finding,
    *,
    info: DeploymentInfo | None = None,
    known: LaneRead | None = None,
) -> Release | None:
    """End a release whose deployment the watchdog stopped: FAILED, with the class, the next step
    and the receipt of the traffic while it ran (``info``: the deployment when the caller has it).
    The rollback is CodeDeploy's, asked for with the stop (a second one from the coordinator
    would only queue behind it)."""
    pipeline = wiring.pipelines.named(release.pipeline)
    rolled_back = bool(pipeline and pipeline.rollback.on_deploy_failure)
    receipt = deployment_receipt(wiring, release, deployment_id, info)
    note = (
        "; CodeDeploy's automatic rollback redeploys the previous revision to the instances already updated"
        if rolled_back
        else ""
    )
    return finish(
        wiring,
        release.id,
        ReleaseState.FAILED,
        reason=finding.reason(deployment_id) + note,
        detail={
            "deployment_id": deployment_id,
            "watchdog": finding.kind.value,
            "next_step": finding.next_step,
            **({"receipt": receipt} if receipt else {}),
        },
        pipeline=release.pipeline,
        known=known,
    )


def _known_instances(release: Release) -> frozenset[str] | None:
    """The instances seen in the deployment so far, or None before the watchdog's first look."""
    at_start = release.metadata.get(INSTANCES_AT_START)
    if at_start is None:
        return None
    added = release.metadata.get(INSTANCES_ADDED, "")
    return frozenset(filter(None, f"{at_start},{added}".split(",")))


def _record(
    release: Release,
    targets: Sequence[TargetProgress],
    verdict: Verdict,
    pipeline: Pipeline,
    *,
    now: datetime,
) -> Change | None:
    """One write: the instances at the first look, the instances added since (a history event),
    and the decision to stop (a history event, and the finding in the metadata). None when the
    release ended since it was judged."""
    deployment_id = release.deployment_id
    if release.state is not ReleaseState.DEPLOYING or deployment_id is None:
        return None
    metadata = dict(release.metadata)
    step = Step(release, ())
    if INSTANCES_AT_START not in metadata and targets:
        metadata[INSTANCES_AT_START] = ",".join(sorted(target.instance_id for target in targets))
    added = verdict.added
    if added is not None and INSTANCES_AT_START in release.metadata:
        already = metadata.get(INSTANCES_ADDED, "")
        metadata[INSTANCES_ADDED] = ",".join(filter(None, (already, added.detail["instances"])))
        step = record(
            step,
            EventType.TASK_SUCCEEDED,
            now=now,
            detail={"task": _TASK, "class": added.kind.value, "next_step": added.next_step, **added.detail},
        )
    stop = verdict.stop
    if stop is not None and stopped_by_watchdog(metadata) is None:
        metadata.update(stop.as_metadata())
        step = record(
            step,
            EventType.TASK_SCHEDULED,
            now=now,
            detail={
                "task": "StopDeployment",
                "deployment_id": deployment_id,
                "auto_rollback": pipeline.rollback.on_deploy_failure,
                "actor": _TASK,
                "class": stop.kind.value,
                "next_step": stop.next_step,
                **stop.detail,
            },
        )
    if metadata == release.metadata:
        return None
    return change_of([update(step, now=now, metadata=metadata)])

"""The fleet's real revisions: read for ``GET /pipelines/{name}/fleet`` and ``relco fleet``, and
checked once after each release ends (reconcile), healed when ``[pipeline.fleet] heal = true``.

The check runs from reconcile, not in the release's own flow, so a release's calls are unchanged.
Per ended release it costs one DescribeTargetHealth per target group when the fleet is uniform
(every registered target is an instance the release's deployment updated, which verification
recorded), and a metadata write marking the release checked. Only a release without that proof
(a FAILED one, one without a load balancer, or one with a target it did not update) pays for the
full read: ListDeployments, BatchGetDeployments, one ListDeploymentTargets per recent deployment,
DescribeTargetGroups, DescribeTargetHealth and one batch read of the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalicelib.domain.fleet import (
    FLEET_CHECKED,
    HEAL_OF,
    Fleet,
    ReleaseLabel,
    ServingCheck,
    build_fleet,
    heal_release_id,
)
from chalicelib.domain.lane import Change, Submission, change_of
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import EventType, Release, ReleaseState, Step, Trigger, record, update
from chalicelib.log import logger
from chalicelib.service.slot_flow import on_release
from chalicelib.service.submission import submit
from chalicelib.service.wiring import Wiring

# ListDeploymentTargets answers DeploymentNotStartedException for these: nothing was installed yet.
_NOT_STARTED = frozenset({"Created", "Queued"})
# The releases reconcile looks at per pipeline to find the one that ended last.
_RECENT_RELEASES = 5
# The outcomes after which the fleet is checked: a verified release, or a failed one (a partial
# success leaves part of the fleet on the new revision).
_CHECKED_AFTER = frozenset({ReleaseState.SUCCEEDED, ReleaseState.FAILED})
# Who a heal release names as its actor.
HEAL_ACTOR = "relco fleet heal"


def read_fleet(wiring: Wiring, pipeline: Pipeline) -> Fleet:
    """Each instance of the pipeline's deployment group with the revision it last received, its
    target health in the group's target groups, and whether the revisions are mixed. Raises
    ``ClientError`` (CodeDeploy, DynamoDB) and ``LoadBalancerError`` (ELBv2)."""
    deployments = wiring.deployments.group_deployments(
        pipeline.application, pipeline.deployment_group, pipeline.fleet.deployments
    )
    succeeded = {
        deployment.deployment_id: wiring.deployments.instance_ids(deployment.deployment_id, "Succeeded")
        for deployment in deployments
        if deployment.status not in _NOT_STARTED
    }
    # The newest deployment names the group's target groups as they are now.
    group_names = next((d.target_group_names for d in deployments if d.target_group_names), ())
    groups = wiring.load_balancing.target_groups(group_names) if group_names else []
    health = [entry for group in groups for entry in wiring.load_balancing.registered_targets(group.arn)]
    release_ids = sorted({d.release_id for d in deployments if d.release_id})
    labels = [
        ReleaseLabel(release.id, release.revision, release.metadata.get("version_label"))
        for release in (wiring.store.get_releases(release_ids) if release_ids else [])
    ]
    return build_fleet(
        pipeline=pipeline.name,
        application=pipeline.application,
        deployment_group=pipeline.deployment_group,
        deployments=deployments,
        succeeded=succeeded,
        health=health,
        releases=labels,
    )


def check_after_release(wiring: Wiring, pipeline: Pipeline) -> dict[str, Any]:
    """Reconcile: the release of the pipeline that ended last, checked once (when no release is
    open: an open one changes the fleet). Mixed: a history event on it naming the instances and
    their revisions (its notification follows from the event), and with ``heal`` a release of
    the last verified revision submitted like any other (the lane decides when it deploys).
    Returns what it did."""
    if not pipeline.fleet.check:
        return {}
    recent = wiring.store.list_releases(pipeline.name, _RECENT_RELEASES, None)
    if any(not release.state.is_terminal for release in recent):
        return {}
    ended = [release for release in recent if release.state in _CHECKED_AFTER and release.deployment_id]
    if not ended:
        return {}
    release = max(ended, key=lambda candidate: candidate.updated_at)
    if FLEET_CHECKED in release.metadata:
        return {}
    with logger.append_context_keys(release_id=release.id, pipeline=pipeline.name):
        if _serving_only_updated(wiring, release):
            _mark_checked(wiring, release, None, None)
            return {"fleet_uniform": release.id}
        fleet = read_fleet(wiring, pipeline)
        if not fleet.mixed:
            _mark_checked(wiring, release, None, None)
            return {"fleet_uniform": release.id}
        healed = _heal(wiring, pipeline, release) if pipeline.fleet.heal else None
        logger.warning(
            "the fleet runs mixed revisions after a release ended",
            extra={"revisions": len(fleet.revisions), "heal_release_id": healed},
        )
        _mark_checked(wiring, release, fleet, healed)
        return {"fleet_mixed": release.id, **({"fleet_heal": healed} if healed else {})}


def _serving_only_updated(wiring: Wiring, release: Release) -> bool:
    """The cheap proof of a uniform fleet: every target registered with the release's target
    groups is an instance its deployment updated (verification recorded them)."""
    verification = release.verification
    if release.state is not ReleaseState.SUCCEEDED or verification is None:
        return False
    registered = frozenset(
        entry.target_id
        for arn in verification.target_group_arns
        for entry in wiring.load_balancing.registered_targets(arn)
    )
    return ServingCheck(registered, frozenset(verification.instance_ids)).all_updated


def _heal(wiring: Wiring, pipeline: Pipeline, release: Release) -> str | None:
    """Submit the last verified revision to the whole group: a release with trigger ``api`` and
    the ``fleet_heal_of`` marker. None when there is nothing to heal with, or when the release is
    itself a heal (reported, never healed again)."""
    if HEAL_OF in release.metadata:
        return None
    last_good_id = wiring.store.get_slot(pipeline.name).last_good
    last_good = wiring.store.get_release(last_good_id) if last_good_id else None
    if last_good is None:
        return None
    metadata = {HEAL_OF: release.id}
    label = last_good.metadata.get("version_label")
    if label:
        metadata["version_label"] = label
    healing, _ = submit(
        wiring,
        Submission(
            release_id=heal_release_id(release.id),
            pipeline=pipeline,
            revision=last_good.revision,
            trigger=Trigger.API,
            actor=HEAL_ACTOR,
            metadata=metadata,
        ),
    )
    return healing.id


def _mark_checked(wiring: Wiring, release: Release, fleet: Fleet | None, healed: str | None) -> None:
    """Mark the release checked; a mixed fleet adds its history event in the same write."""

    def mark(current: Release, now: datetime) -> Change | None:
        if FLEET_CHECKED in current.metadata:
            return None
        metadata = {**current.metadata, FLEET_CHECKED: "mixed" if fleet else "uniform"}
        step = update(Step(current, ()), now=now, metadata=metadata)
        if fleet is not None:
            detail: dict[str, Any] = {
                "task": "FleetCheck",
                "mixed": True,
                "revisions": fleet.summary(),
                "heal_release_id": healed,
            }
            step = record(step, EventType.TASK_FAILED, now=now, detail=detail)
        return change_of([step])

    on_release(wiring, release.id, mark, known=release)

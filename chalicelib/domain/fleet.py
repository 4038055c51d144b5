"""The fleet's real revisions: which revision each instance of a deployment group last received
(CodeDeploy's per-instance targets of the group's recent deployments), its ALB target health, and
whether the fleet runs more than one revision (an instance Auto Scaling added during a deploy got
the previous revision; a partial success left some instances behind).

Pure: the service (chalicelib/service/fleet.py) reads CodeDeploy, ELBv2 and the store, and this
module decides what the fleet is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.domain.release import Revision
from chalicelib.domain.verification import TargetHealth

# Release metadata marking a release as a heal of a mixed fleet: the release it heals. A heal that
# ends mixed is reported, never healed again (no redeploy loop).
HEAL_OF = "fleet_heal_of"
# Release metadata recording that the fleet was checked after the release ended: "uniform" or
# "mixed". Reconcile checks each ended release once.
FLEET_CHECKED = "fleet_checked"
# A history event naming the instances lists at most this many.
LISTED_INSTANCES = 20


# One S3 object version, however a deployment spells it: CodeDeploy keeps the eTag only when the
# creator passed it (Auto Scaling's deployment of the same version may have none).
RevisionIdentity = tuple[str, str, str | None]


def revision_identity(revision: Revision) -> RevisionIdentity:
    return (revision.bucket, revision.key, revision.version or revision.etag)


@dataclass(frozen=True)
class GroupDeployment:
    """One of the group's deployments as BatchGetDeployments describes it."""

    deployment_id: str
    status: str
    created_at: datetime
    creator: str
    revision: Revision | None
    # The release the coordinator started it for (the marker in its description), if any.
    release_id: str | None = None
    target_group_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class FleetInstance:
    instance_id: str
    # The revision of the newest read deployment this instance succeeded in; None: none of them.
    revision: Revision | None
    deployment_id: str | None
    release_id: str | None
    version_label: str | None
    health: tuple[TargetHealth, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "revision": self.revision.to_dict() if self.revision else None,
            "deployment_id": self.deployment_id,
            "release_id": self.release_id,
            "version_label": self.version_label,
            "health": [
                {"target_group": entry.target_group, "state": entry.state, "reason": entry.reason}
                for entry in self.health
            ],
        }


@dataclass(frozen=True)
class Fleet:
    pipeline: str
    application: str
    deployment_group: str
    instances: tuple[FleetInstance, ...]
    deployments_read: tuple[str, ...] = ()

    @property
    def revisions(self) -> dict[RevisionIdentity | None, tuple[FleetInstance, ...]]:
        """Instances by the revision they run (None: not received in any deployment read)."""
        found: dict[RevisionIdentity | None, list[FleetInstance]] = {}
        for instance in self.instances:
            identity = revision_identity(instance.revision) if instance.revision else None
            found.setdefault(identity, []).append(instance)
        return {identity: tuple(instances) for identity, instances in found.items()}

    @property
    def mixed(self) -> bool:
        """More than one revision runs, or an instance serves traffic with none it received in
        the deployments read (it joined outside them)."""
        return len(self.revisions) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "application": self.application,
            "deployment_group": self.deployment_group,
            "mixed": self.mixed,
            "revisions": len(self.revisions),
            "instances": [instance.to_dict() for instance in self.instances],
            "deployments_read": list(self.deployments_read),
        }

    def summary(self) -> list[dict[str, Any]]:
        """Each revision with the instances that run it (at most ``LISTED_INSTANCES`` each):
        what a history event says of a mixed fleet."""
        return [
            {
                "revision": instances[0].revision.to_dict() if instances[0].revision else None,
                "release_id": instances[0].release_id,
                "version_label": instances[0].version_label,
                "instances": [instance.instance_id for instance in instances[:LISTED_INSTANCES]],
                "count": len(instances),
            }
            for instances in self.revisions.values()
        ]


@dataclass(frozen=True)
class ReleaseLabel:
    """What the store says of a release a deployment carried: its id and version label."""

    release_id: str
    revision: Revision
    version_label: str | None = None


def build_fleet(
    *,
    pipeline: str,
    application: str,
    deployment_group: str,
    deployments: Sequence[GroupDeployment],
    succeeded: Mapping[str, Sequence[str]],
    health: Sequence[TargetHealth],
    releases: Sequence[ReleaseLabel] = (),
) -> Fleet:
    """The fleet from the group's recent deployments (any order), the instances that succeeded
    in each (deployment id -> instance ids), the target health of the group's target groups
    (every registered target) and the releases the deployments carried.

    Each instance runs the revision of the newest deployment it succeeded in. An instance that is
    registered with a target group but succeeded in none of them is listed with no revision. A
    deployment the coordinator did not start (Auto Scaling's, a console one) is named after the
    release of the same revision, where there is one."""
    newest_first = sorted(deployments, key=lambda deployment: deployment.created_at, reverse=True)
    by_id = {label.release_id: label for label in releases}
    by_revision = {revision_identity(label.revision): label for label in releases}
    received: dict[str, GroupDeployment] = {}
    for deployment in newest_first:
        for instance_id in succeeded.get(deployment.deployment_id, ()):
            received.setdefault(instance_id, deployment)
    health_by_instance: dict[str, list[TargetHealth]] = {}
    for entry in health:
        health_by_instance.setdefault(entry.target_id, []).append(entry)
    instances = []
    for instance_id in sorted(set(received) | set(health_by_instance)):
        last = received.get(instance_id)
        label = _label(last, by_id, by_revision)
        instances.append(
            FleetInstance(
                instance_id=instance_id,
                revision=last.revision if last else None,
                deployment_id=last.deployment_id if last else None,
                release_id=label.release_id if label else None,
                version_label=label.version_label if label else None,
                health=tuple(health_by_instance.get(instance_id, ())),
            )
        )
    return Fleet(
        pipeline=pipeline,
        application=application,
        deployment_group=deployment_group,
        instances=tuple(instances),
        deployments_read=tuple(deployment.deployment_id for deployment in newest_first),
    )


def _label(
    deployment: GroupDeployment | None,
    by_id: Mapping[str, ReleaseLabel],
    by_revision: Mapping[RevisionIdentity, ReleaseLabel],
) -> ReleaseLabel | None:
    if deployment is None:
        return None
    if deployment.release_id is not None:
        return by_id.get(deployment.release_id) or _unlabelled(deployment)
    return by_revision.get(revision_identity(deployment.revision)) if deployment.revision else None


def _unlabelled(deployment: GroupDeployment) -> ReleaseLabel | None:
    """A release the description names that the store no longer has: its id, no label."""
    if deployment.release_id is None or deployment.revision is None:
        return None
    return ReleaseLabel(deployment.release_id, deployment.revision)


@dataclass(frozen=True)
class ServingCheck:
    """The cheap look after a release ends: the targets registered with its target groups, and
    which of them the release's deployment updated."""

    registered: frozenset[str]
    updated: frozenset[str] = field(default_factory=frozenset)

    @property
    def all_updated(self) -> bool:
        """Every instance serving traffic got the release's revision: the fleet is uniform
        without reading CodeDeploy."""
        return self.registered <= self.updated


def heal_release_id(release_id: str) -> str:
    """One heal per mixed release, however often reconcile finds it."""
    return f"heal-{release_id}"[:64]

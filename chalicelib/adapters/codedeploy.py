"""CodeDeploy: create, find and describe deployments of a release's revision."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.domain.fleet import GroupDeployment
from chalicelib.domain.release import Release, Revision
from chalicelib.domain.watchdog import HookProgress, TargetProgress
from chalicelib.service.ports import (
    DeploymentAlreadyEnded,
    DeploymentBusy,
    DeploymentInfo,
    DeploymentNotFound,
    InstanceTarget,
    LifecycleEvent,
    RevisionRejected,
)

# CreateDeployment takes no client token, so the release id rides in the description: a retry
# can find the deployment it already created, and an event for a deployment the store does not
# know yet (it raced the store write) still finds its release.
_MARKER = "relco release "
_MARKER_PATTERN = re.compile(r"relco release (\S+)")
_ACTIVE_ID_PATTERN = re.compile(r"active Deployment '([^']+)'")
_BATCH_GET_LIMIT = 25
# Deployments never predate their release, but clocks differ: look a little further back.
_CLOCK_SKEW = timedelta(minutes=5)
# ListDeployments does not document its order: the fleet read lists at most this many of the
# group's deployments (a page or two) and keeps the newest of them by createTime.
_LISTED_FOR_FLEET = 100

# Worth retrying: everything else CodeDeploy answers with a 4xx is a refusal the same request
# can never get past (a missing group, a bad revision, an ECS group, a missing permission), so
# the release fails with CodeDeploy's reason instead of holding the slot forever.
_UNKNOWN_DEPLOYMENT_CODES = frozenset({"DeploymentDoesNotExistException", "InvalidDeploymentIdException"})
_TRANSIENT_CODES = frozenset({"ThrottlingException", "Throttling", "RequestLimitExceeded"})
# ListDeploymentTargets' answer for a deployment CodeDeploy has not started (Created, Queued):
# no instance has anything to show yet.
_NOT_STARTED_CODE = "DeploymentNotStartedException"


def _is_transient(error: ClientError) -> bool:
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status >= 500 or error.response.get("Error", {}).get("Code") in _TRANSIENT_CODES


def release_id_in_description(description: str | None) -> str | None:
    match = _MARKER_PATTERN.search(description or "")
    return match.group(1) if match else None


def _description(release: Release) -> str:
    label = release.metadata.get("version_label") or release.revision.key.rsplit("/", 1)[-1]
    # CodeDeploy caps descriptions at 512 characters; the marker comes first so it always fits.
    return f"{_MARKER}{release.id} ({release.trigger.value}): {label}"[:512]


class CodeDeployDeployments:
    def __init__(self, client: Any) -> None:
        self._client = client

    def create(self, release: Release, deployment_config: str) -> str:
        revision = release.revision
        s3_location: dict[str, str] = {
            "bucket": revision.bucket,
            "key": revision.key,
            "bundleType": revision.bundle_type or "zip",
        }
        # Pin the exact object version; without it CodeDeploy takes the newest one.
        if revision.version:
            s3_location["version"] = revision.version
        if revision.etag:
            s3_location["eTag"] = revision.etag
        try:
            response = self._client.create_deployment(
                applicationName=release.application,
                deploymentGroupName=release.deployment_group,
                revision={"revisionType": "S3", "s3Location": s3_location},
                deploymentConfigName=deployment_config,
                description=_description(release),
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            message = error.response.get("Error", {}).get("Message", "")
            if code == "DeploymentLimitExceededException":
                active = _ACTIVE_ID_PATTERN.search(message)
                raise DeploymentBusy(message, active.group(1) if active else None) from error
            if _is_transient(error):
                raise
            raise RevisionRejected(code, message) from error
        return str(response["deploymentId"])

    def find_for_release(self, release: Release) -> str | None:
        paginator = self._client.get_paginator("list_deployments")
        pages = paginator.paginate(
            applicationName=release.application,
            deploymentGroupName=release.deployment_group,
            createTimeRange={"start": release.created_at - _CLOCK_SKEW},
        )
        deployment_ids = [dep_id for page in pages for dep_id in page.get("deployments", [])]
        for start in range(0, len(deployment_ids), _BATCH_GET_LIMIT):
            response = self._client.batch_get_deployments(
                deploymentIds=deployment_ids[start : start + _BATCH_GET_LIMIT]
            )
            for info in response.get("deploymentsInfo", []):
                if release_id_in_description(info.get("description")) == release.id:
                    return str(info["deploymentId"])
        return None

    def describe(self, deployment_id: str) -> DeploymentInfo:
        try:
            info = self._client.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _UNKNOWN_DEPLOYMENT_CODES:
                raise DeploymentNotFound(deployment_id) from error
            raise
        return _deployment_info(info)

    def stop(self, deployment_id: str, auto_rollback: bool) -> None:
        try:
            self._client.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=auto_rollback)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "DeploymentAlreadyCompletedException":
                raise DeploymentAlreadyEnded(deployment_id) from error
            raise

    def instance_ids(self, deployment_id: str, status: str) -> list[str]:
        # For EC2/on-premises deployments a target id is the instance id.
        target_ids: list[str] = []
        paginator = self._client.get_paginator("list_deployment_targets")
        for page in paginator.paginate(deploymentId=deployment_id, targetFilters={"TargetStatus": [status]}):
            target_ids.extend(page.get("targetIds", []))
        return target_ids

    def instance_targets(self, deployment_id: str, status: str) -> list[InstanceTarget]:
        return [
            _instance_target(instance)
            for instance in self._instances(deployment_id, self.instance_ids(deployment_id, status))
        ]

    def _instances(self, deployment_id: str, target_ids: list[str]) -> list[dict[str, Any]]:
        """The ``instanceTarget`` of each target, BatchGetDeploymentTargets 25 at a time."""
        instances: list[dict[str, Any]] = []
        for start in range(0, len(target_ids), _BATCH_GET_LIMIT):
            response = self._client.batch_get_deployment_targets(
                deploymentId=deployment_id, targetIds=target_ids[start : start + _BATCH_GET_LIMIT]
            )
            instances.extend(
                target["instanceTarget"]
                for target in response.get("deploymentTargets", [])
                if target.get("instanceTarget")
            )
        return instances

    def group_deployments(self, application: str, group: str, count: int) -> list[GroupDeployment]:
        """The group's ``count`` newest deployments, newest first, from at most
        ``_LISTED_FOR_FLEET`` listed (ListDeployments, then BatchGetDeployments 25 at a time).
        AWS errors propagate as ``ClientError``."""
        deployment_ids: list[str] = []
        paginator = self._client.get_paginator("list_deployments")
        for page in paginator.paginate(applicationName=application, deploymentGroupName=group):
            deployment_ids.extend(page.get("deployments", []))
            if len(deployment_ids) >= _LISTED_FOR_FLEET:
                break
        deployment_ids = deployment_ids[:_LISTED_FOR_FLEET]
        found: list[GroupDeployment] = []
        for start in range(0, len(deployment_ids), _BATCH_GET_LIMIT):
            response = self._client.batch_get_deployments(
                deploymentIds=deployment_ids[start : start + _BATCH_GET_LIMIT]
            )
            for info in response.get("deploymentsInfo", []):
                described = _deployment_info(info)
                found.append(
                    GroupDeployment(
                        deployment_id=described.deployment_id,
                        status=described.status,
                        created_at=info["createTime"],
                        creator=described.creator,
                        revision=described.revision,
                        release_id=described.release_id,
                        target_group_names=described.target_group_names,
                    )
                )
        found.sort(key=lambda deployment: deployment.created_at, reverse=True)
        return found[:count]

    def target_progress(self, deployment_id: str) -> list[TargetProgress]:
        """Every instance of the deployment with its lifecycle events and their start times (what
        the watchdog judges): ListDeploymentTargets, then BatchGetDeploymentTargets per 25."""
        target_ids: list[str] = []
        try:
            pages = self._client.get_paginator("list_deployment_targets").paginate(deploymentId=deployment_id)
            for page in pages:
                target_ids.extend(page.get("targetIds", []))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == _NOT_STARTED_CODE:
                return []
            raise
        return [_target_progress(instance) for instance in self._instances(deployment_id, target_ids)]


def _target_progress(instance: dict[str, Any]) -> TargetProgress:
    return TargetProgress(
        instance_id=instance.get("targetId", ""),
        status=instance.get("status", ""),
        last_updated_at=instance.get("lastUpdatedAt"),
        hooks=tuple(
            HookProgress(
                name=event.get("lifecycleEventName", ""),
                status=event.get("status", ""),
                started_at=event.get("startTime"),
                message=(event.get("diagnostics") or {}).get("message"),
            )
            for event in instance.get("lifecycleEvents") or []
        ),
    )


def _instance_target(instance: dict[str, Any]) -> InstanceTarget:
    events = []
    for event in instance.get("lifecycleEvents") or []:
        diagnostics = event.get("diagnostics") or {}
        events.append(
            LifecycleEvent(
                name=event.get("lifecycleEventName", ""),
                status=event.get("status", ""),
                error_code=diagnostics.get("errorCode"),
                script_name=diagnostics.get("scriptName"),
                message=diagnostics.get("message"),
                log_tail=diagnostics.get("logTail"),
            )
        )
    return InstanceTarget(
        instance_id=instance.get("targetId", ""),
        status=instance.get("status", ""),
        lifecycle_events=tuple(events),
    )


def _deployment_info(info: dict[str, Any]) -> DeploymentInfo:
    location = (info.get("revision") or {}).get("s3Location") or {}
    revision = (
        Revision(
            bucket=location["bucket"],
            key=location["key"],
            version=location.get("version"),
            etag=location.get("eTag"),
        )
        if location.get("bucket") and location.get("key")
        else None
    )
    error = info.get("errorInformation") or {}
    target_groups = ((info.get("loadBalancerInfo") or {}).get("targetGroupInfoList")) or []
    auto_rollback = info.get("autoRollbackConfiguration") or {}
    rollback_info = info.get("rollbackInfo") or {}
    return DeploymentInfo(
        deployment_id=info["deploymentId"],
        application=info.get("applicationName", ""),
        deployment_group=info.get("deploymentGroupName", ""),
        status=info.get("status", ""),
        revision=revision,
        creator=info.get("creator", ""),
        created_at=info.get("createTime"),
        release_id=release_id_in_description(info.get("description")),
        error_code=error.get("code"),
        error_message=error.get("message"),
        target_group_names=tuple(group["name"] for group in target_groups if group.get("name")),
        rolls_back_on_failure=bool(auto_rollback.get("enabled"))
        and "DEPLOYMENT_FAILURE" in (auto_rollback.get("events") or []),
        rollback_of_deployment_id=rollback_info.get("rollbackTriggeringDeploymentId"),
        instance_counts={
            status: int(count)
            for status, count in (info.get("deploymentOverview") or {}).items()
            if isinstance(count, int)
        },
    )

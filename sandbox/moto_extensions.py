"""Where moto 5.2.5's CodeDeploy stops short of AWS, and the sandbox and tests need it not to.

moto lets any number of deployments run per group and never moves them out of ``Created``.
AWS allows one active deployment per group (``DeploymentLimitExceededException``) and reports
``errorInformation`` on failure. ``install()`` adds exactly that, and ``complete()`` plays
CodeDeploy finishing a deployment. moto's CloudWatch answers no percentile statistic (``p90``)
in GetMetricData or GetMetricStatistics: ``install()`` adds them over the raw values published
(``Value``, ``Values``/``Counts``), as CloudWatch computes them; the sandbox's load balancer
publishes its response times so. Each extension has a regression test in
``tests/integration/test_moto_extensions.py``.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from datetime import UTC, datetime
from typing import Any

from moto.cloudwatch import models as cloudwatch_models
from moto.codedeploy import models as codedeploy_models
from moto.codedeploy import responses as codedeploy_responses
from moto.core.exceptions import JsonRESTError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.dynamodb import models as dynamodb_models
from moto.elbv2 import models as elbv2_models
from moto.events import utils as events_utils

TERMINAL_STATUSES = frozenset({"Succeeded", "Failed", "Stopped"})

# CloudWatch's percentile statistics: p0.0 to p100 (botocore's cloudwatch model, Stat).
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$")

_lock = threading.Lock()
_installed = False
# Re-entrant: a transaction's item writes call other locked operations.
_dynamodb_lock = threading.RLock()
# (target group ARN, target id) -> (state, reason, description)
_target_health: dict[tuple[str, str], tuple[str, str, str]] = {}
_DYNAMODB_ITEM_OPERATIONS = (
    "put_item",
    "update_item",
    "delete_item",
    "get_item",
    "transact_write_items",
    "transact_get_items",
    "batch_write_item",
    "batch_get_item",
    "query",
    "scan",
)


class DeploymentLimitExceededException(JsonRESTError):
    def __init__(self, group: str, active_id: str) -> None:
        # AWS's own wording: the active id is only in the message text.
        super().__init__(
            "DeploymentLimitExceededException",
            f"The Deployment Group '{group}' already has an active Deployment '{active_id}'",
        )


def install() -> None:
    """Patch moto's CodeDeploy in this process (idempotent)."""
    global _installed  # noqa: PLW0603 - one process-wide patch, applied once
    with _lock:
        if _installed:
            return
        original_create = codedeploy_models.CodeDeployBackend.create_deployment
        original_info = codedeploy_responses._deployment_info

        def create_deployment(self: Any, *args: Any, **kwargs: Any) -> str:
            application = kwargs.get("application_name", args[0] if args else None)
            group = kwargs.get("deployment_group_name", args[1] if len(args) > 1 else None)
            # The check and the create happen under one lock: the moto server is threaded.
            with _lock:
                for deployment in self.deployments.values():
                    if (
                        deployment.application_name == application
                        and deployment.deployment_group_name == group
                        and deployment.status not in TERMINAL_STATUSES
                    ):
                        raise DeploymentLimitExceededException(str(group), deployment.deployment_id)
                deployment_id: str = original_create(self, *args, **kwargs)
                return deployment_id

        def deployment_info(deployment: Any) -> dict[str, Any]:
            info: dict[str, Any] = original_info(deployment)
            info["errorInformation"] = getattr(deployment, "error_information", None) or {}
            info["rollbackInfo"] = getattr(deployment, "rollback_info", None) or {}
            return info

        codedeploy_models.CodeDeployBackend.create_deployment = create_deployment  # type: ignore[method-assign]
        codedeploy_responses._deployment_info = deployment_info
        codedeploy_responses.CodeDeployResponse.list_deployment_targets = _list_deployment_targets  # type: ignore[attr-defined]
        codedeploy_responses.CodeDeployResponse.batch_get_deployment_targets = _batch_get_deployment_targets  # type: ignore[attr-defined]
        codedeploy_responses.CodeDeployResponse.stop_deployment = _stop_deployment  # type: ignore[attr-defined]
        original_health_for = elbv2_models.FakeTargetGroup.health_for

        def health_for(self: Any, target: dict[str, Any], ec2_backend: Any) -> Any:
            override = _target_health.get((self.arn, target["Id"]))
            if override is None:
                return original_health_for(self, target, ec2_backend)
            state, reason, description = override
            port = target.get("Port", self.port)
            return elbv2_models.FakeHealthStatus(
                target["Id"], port, self.health_check_port, state, reason, description
            )

        elbv2_models.FakeTargetGroup.health_for = health_for  # type: ignore[method-assign]
        original_statistic = cloudwatch_models.Statistics.get_statistics_for_type

        def statistic(self: Any, stat: str) -> Any:
            matched = _PERCENTILE.match(stat)
            if matched is None:
                return original_statistic(self, stat)
            return percentile(self.metric_single_values_list, float(matched.group(1)))

        cloudwatch_models.Statistics.get_statistics_for_type = statistic  # type: ignore[method-assign]
        events_utils.EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = (
            '{"id": "<id>", "time": <time>, "version": "0", "detail-type": "<detail-type>", '
            '"source": "<source>", "account": "<account>", "region": "<region>", "resources": <resources>, '
            '"detail": <detail>}'
        )
        for name in _DYNAMODB_ITEM_OPERATIONS:
            setattr(
                dynamodb_models.DynamoDBBackend,
                name,
                _serialised(getattr(dynamodb_models.DynamoDBBackend, name)),
            )
        _installed = True


def _serialised(operation: Any) -> Any:
    @functools.wraps(operation)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _dynamodb_lock:
            return operation(*args, **kwargs)

    return locked


def backend(region: str = "us-east-1", account_id: str = DEFAULT_ACCOUNT_ID) -> Any:
    return codedeploy_models.codedeploy_backends[account_id][region]


def complete(
    deployment_id: str,
    status: str,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
    region: str = "us-east-1",
) -> None:
    """Finish a deployment as CodeDeploy would: terminal status, times, error information."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"status must be one of {sorted(TERMINAL_STATUSES)}, got {status!r}")
    deployment = backend(region).deployments[deployment_id]
    now = datetime.now(UTC)
    deployment.start_time = deployment.start_time or now
    deployment.complete_time = now
    deployment.status = status
    if error_code:
        deployment.error_information = {"code": error_code, "message": error_message or ""}


def mark_codedeploy_rollback(deployment_id: str, *, triggered_by: str, region: str = "us-east-1") -> None:
    """Make a deployment look like CodeDeploy's own automatic rollback of ``triggered_by``."""
    deployment = backend(region).deployments[deployment_id]
    deployment.creator = "codeDeployRollback"
    deployment.rollback_info = {
        "rollbackTriggeringDeploymentId": triggered_by,
        "rollbackMessage": f"Automatic rollback of {triggered_by}",
    }
    backend(region).deployments[triggered_by].rollback_info = {"rollbackDeploymentId": deployment_id}


def start(deployment_id: str, region: str = "us-east-1") -> None:
    deployment = backend(region).deployments[deployment_id]
    deployment.status = "InProgress"
    deployment.start_time = datetime.now(UTC)


def active_deployments(application: str, group: str, region: str = "us-east-1") -> list[str]:
    return [
        deployment.deployment_id
        for deployment in backend(region).deployments.values()
        if deployment.application_name == application
        and deployment.deployment_group_name == group
        and deployment.status not in TERMINAL_STATUSES
    ]


def set_instance_targets(
    deployment_id: str, targets: dict[str, dict[str, Any]], region: str = "us-east-1"
) -> None:
    """Record the instances a deployment touched: instance id -> ``instanceTarget`` fields
    (``status``, ``lifecycleEvents``...), as BatchGetDeploymentTargets answers them."""
    deployment = backend(region).deployments[deployment_id]
    deployment.instance_targets = {
        instance_id: {
            "deploymentId": deployment_id,
            "targetId": instance_id,
            "targetArn": f"arn:aws:ec2:{region}:{DEFAULT_ACCOUNT_ID}:instance/{instance_id}",
            "status": "Succeeded",
            "lifecycleEvents": [],
            "lastUpdatedAt": datetime.now(UTC),
            **fields,
        }
        for instance_id, fields in targets.items()
    }


def set_target_health(
    target_group_arn: str, target_id: str, state: str, reason: str = "", description: str = ""
) -> None:
    _target_health[(target_group_arn, target_id)] = (state, reason, description)


def clear_target_health() -> None:
    _target_health.clear()


def _instance_targets(response: Any, deployment_id: str) -> dict[str, dict[str, Any]]:
    deployment = response.codedeploy_backend.get_deployment(deployment_id=deployment_id)
    targets: dict[str, dict[str, Any]] = getattr(deployment, "instance_targets", {})
    return targets


# ListDeploymentTargets' ``targetFilters`` keys and the instance target field each one matches
# (botocore's ``TargetFilterName`` enum; AWS answers InvalidTargetFilterNameException for others).
_TARGET_FILTER_FIELDS = {"TargetStatus": "status", "ServerInstanceLabel": "instanceLabel"}


def _list_deployment_targets(self: Any) -> ActionResult:
    targets = _instance_targets(self, self._get_param("deploymentId"))
    filters: dict[str, list[str]] = self._get_param("targetFilters") or {}
    unknown = sorted(set(filters) - set(_TARGET_FILTER_FIELDS))
    if unknown:
        raise JsonRESTError(
            "InvalidTargetFilterNameException", f"The target filter name is invalid: {unknown}"
        )
    return ActionResult(
        {
            "targetIds": sorted(
                target_id
                for target_id, target in targets.items()
                if all(target.get(_TARGET_FILTER_FIELDS[name]) in values for name, values in filters.items())
            )
        }
    )


def _batch_get_deployment_targets(self: Any) -> ActionResult:
    targets = _instance_targets(self, self._get_param("deploymentId"))
    wanted = self._get_param("targetIds") or []
    return ActionResult(
        {
            "deploymentTargets": [
                {"deploymentTargetType": "InstanceTarget", "instanceTarget": targets[target_id]}
                for target_id in wanted
                if target_id in targets
            ]
        }
    )


# StopDeployment, and the claim/stop handshake with the local CodeDeploy agent
# (sandbox/codedeploy_agent.py). moto 5.2.5 answers HTTP 500 for StopDeployment. As on AWS, a stop
# is a request: the answer is "Pending", and whoever runs the deployment (the agent) ends it as
# ``Stopped`` at its next safe point. ``_lock`` orders a stop request against the agent claiming a
# ``Created`` deployment, so neither can overwrite the other's status.

# AWS's answer while the stop is being carried out.
STOP_PENDING_MESSAGE = "Stopping Pending. Stopping to schedule commands in the deployment instances"


class DeploymentAlreadyCompletedException(JsonRESTError):
    def __init__(self, deployment_id: str) -> None:
        super().__init__(
            "DeploymentAlreadyCompletedException", f"The deployment {deployment_id} has already completed."
        )


def claim(deployment_id: str, region: str = "us-east-1") -> bool:
    """Move a ``Created`` deployment to ``InProgress`` for exactly one runner; False if it was
    already claimed, has ended, or does not exist."""
    with _lock:
        deployment = backend(region).deployments.get(deployment_id)
        if deployment is None or deployment.status != "Created":
            return False
        start(deployment_id, region)
        return True


def request_stop(deployment_id: str, *, auto_rollback: bool = False, region: str = "us-east-1") -> None:
    """Ask the runner of a deployment to stop it (what StopDeployment does)."""
    with _lock:
        deployment = backend(region).get_deployment(deployment_id=deployment_id)
        if deployment.status in TERMINAL_STATUSES:
            raise DeploymentAlreadyCompletedException(deployment_id)
        deployment.stop_requested = True
        deployment.stop_auto_rollback = auto_rollback


def stop_requested(deployment_id: str, region: str = "us-east-1") -> bool:
    deployment = backend(region).deployments.get(deployment_id)
    return bool(getattr(deployment, "stop_requested", False))


def set_deployment_overview(deployment_id: str, counts: dict[str, int], region: str = "us-east-1") -> None:
    """Instance counts by status, as GetDeployment's ``deploymentOverview`` answers them."""
    overview = dict.fromkeys(("Pending", "InProgress", "Succeeded", "Failed", "Skipped", "Ready"), 0)
    overview.update(counts)
    backend(region).deployments[deployment_id].deployment_overview = overview


def _stop_deployment(self: Any) -> ActionResult:
    request_stop(
        self._get_param("deploymentId"),
        auto_rollback=bool(self._get_param("autoRollbackEnabled")),
        region=self.region,
    )
    return ActionResult({"status": "Pending", "statusMessage": STOP_PENDING_MESSAGE})


def percentile(values: list[float], rank: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least ``rank`` percent of the
    values at or below it (None without values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(rank / 100 * len(ordered)) - 1)]

"""ELBv2: target group settings and the health of deployed instances in them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from chalicelib.domain.verification import LoadBalancerError, TargetGroupSettings, TargetHealth

# ELBv2's throttling code (query protocol; botocore's standard retry mode retries it before it
# gets here). Everything else ELBv2 answers with a 4xx is a refusal the same request never gets
# past: the modeled TargetGroupNotFound, LoadBalancerNotFound and InvalidTarget, a missing
# permission. HealthUnavailable is modeled with HTTP 500, like every server error: transient.
_THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded"})


def _is_transient(error: ClientError) -> bool:
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status >= 500 or error.response.get("Error", {}).get("Code") in _THROTTLING_CODES


@contextmanager
def _load_balancer_errors(context: Callable[[], str]) -> Iterator[None]:
    """ELBv2's errors as ``LoadBalancerError``, naming AWS's code and what was asked."""
    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code") or "Unknown")
        message = str(error.response.get("Error", {}).get("Message") or "")
        raise LoadBalancerError(
            code, f"{message} ({context()})", permanent=not _is_transient(error)
        ) from error
    except (ConnectionError, HTTPClientError) as error:
        # No answer at all (connect or read timeout, reset): worth another try.
        raise LoadBalancerError(type(error).__name__, f"{error} ({context()})", permanent=False) from error


class Elbv2LoadBalancing:
    def __init__(self, client: Any) -> None:
        self._client = client
        # Target group settings rarely change: kept for the warm container's life.
        self._groups: dict[str, TargetGroupSettings] = {}

    def target_groups(self, names: Sequence[str]) -> list[TargetGroupSettings]:
        """Every named group's settings. Raises ``LoadBalancerError``; a name that does not
        exist makes DescribeTargetGroups fail as a whole with TargetGroupNotFound."""
        missing = [name for name in names if name not in self._groups]
        if missing:
            with _load_balancer_errors(lambda: f"target groups {', '.join(missing)}"):
                response = self._client.describe_target_groups(Names=missing)
                for group in response.get("TargetGroups", []):
                    self._groups[group["TargetGroupName"]] = TargetGroupSettings(
                        arn=group["TargetGroupArn"],
                        name=group["TargetGroupName"],
                        interval_s=int(group.get("HealthCheckIntervalSeconds") or 30),
                        healthy_threshold=int(group.get("HealthyThresholdCount") or 5),
                        load_balancer_arns=tuple(group.get("LoadBalancerArns") or ()),
                    )
        return [self._groups[name] for name in names if name in self._groups]

    def target_health(self, target_group_arn: str, target_ids: Sequence[str]) -> list[TargetHealth]:
        """Raises ``LoadBalancerError``: permanent for a group that is gone (TargetGroupNotFound)
        or a target that does not exist (InvalidTarget), transient for HealthUnavailable,
        throttling and server errors."""
        with _load_balancer_errors(lambda: f"target group {target_group_arn}"):
            response = self._client.describe_target_health(
                TargetGroupArn=target_group_arn, Targets=[{"Id": target_id} for target_id in target_ids]
            )
        return [
            _target_health(target_group_arn, description)
            for description in response.get("TargetHealthDescriptions", [])
        ]

    def registered_targets(self, target_group_arn: str) -> list[TargetHealth]:
        """Every target registered with the group and its health (DescribeTargetHealth without
        ``Targets``): the instances serving, or about to serve, its traffic. Raises
        ``LoadBalancerError`` as ``target_health`` does."""
        with _load_balancer_errors(lambda: f"target group {target_group_arn}"):
            response = self._client.describe_target_health(TargetGroupArn=target_group_arn)
        return [
            _target_health(target_group_arn, description)
            for description in response.get("TargetHealthDescriptions", [])
        ]


def _target_health(target_group_arn: str, description: dict[str, Any]) -> TargetHealth:
    health = description.get("TargetHealth", {})
    return TargetHealth(
        target_group=target_group_arn,
        target_id=description["Target"]["Id"],
        state=health.get("State", "unavailable"),
        reason=health.get("Reason", ""),
        description=health.get("Description", ""),
    )

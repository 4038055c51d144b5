"""ELBv2: target group settings and the health of deployed instances in them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.domain.verification import TargetGroupSettings, TargetHealth

# AWS's default when a target group does not say (deregistration_delay.timeout_seconds).
_DEFAULT_DEREGISTRATION_DELAY_S = 300


class Elbv2LoadBalancing:
    def __init__(self, client: Any) -> None:
        self._client = client
        # Target group settings rarely change: kept for the warm container's life.
        self._groups: dict[str, TargetGroupSettings] = {}

    def target_groups(self, names: Sequence[str]) -> list[TargetGroupSettings]:
        missing = [name for name in names if name not in self._groups]
        if missing:
            response = self._client.describe_target_groups(Names=missing)
            for group in response.get("TargetGroups", []):
                self._groups[group["TargetGroupName"]] = TargetGroupSettings(
                    arn=group["TargetGroupArn"],
                    name=group["TargetGroupName"],
                    interval_s=int(group.get("HealthCheckIntervalSeconds") or 30),
                    healthy_threshold=int(group.get("HealthyThresholdCount") or 5),
                    deregistration_delay_s=self._deregistration_delay(group["TargetGroupArn"]),
                )
        return [self._groups[name] for name in names if name in self._groups]

    def _deregistration_delay(self, arn: str) -> int:
        attributes = self._client.describe_target_group_attributes(TargetGroupArn=arn).get("Attributes", [])
        for attribute in attributes:
            if attribute.get("Key") == "deregistration_delay.timeout_seconds":
                return int(attribute.get("Value") or _DEFAULT_DEREGISTRATION_DELAY_S)
        return _DEFAULT_DEREGISTRATION_DELAY_S

    def target_health(self, target_group_arn: str, target_ids: Sequence[str]) -> list[TargetHealth]:
        response = self._client.describe_target_health(
            TargetGroupArn=target_group_arn, Targets=[{"Id": target_id} for target_id in target_ids]
        )
        return [
            TargetHealth(
                target_group=target_group_arn,
                target_id=description["Target"]["Id"],
                state=description.get("TargetHealth", {}).get("State", "unavailable"),
                reason=description.get("TargetHealth", {}).get("Reason", ""),
                description=description.get("TargetHealth", {}).get("Description", ""),
            )
            for description in response.get("TargetHealthDescriptions", [])
        ]

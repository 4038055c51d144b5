"""Verification after CodeDeploy reports success: every deployed instance must be ``healthy`` in
every target group for N checks in a row before the release counts as good.

CodeDeploy's SUCCESS is not proof: an ALB fails open, and OneAtATime reports success even when
the last instance failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.pipelines import VerifySettings

# Beyond the time targets need to turn healthy and old ones to drain: scheduling slack.
DEADLINE_MARGIN_S = 60
# SQS's largest DelaySeconds.
MAX_DELAY_S = 900


@dataclass(frozen=True)
class TargetGroupSettings:
    arn: str
    name: str
    interval_s: int
    healthy_threshold: int
    deregistration_delay_s: int


@dataclass(frozen=True)
class TargetHealth:
    target_group: str
    target_id: str
    state: str  # initial | healthy | unhealthy | unused | draining | unavailable
    reason: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "target_group": self.target_group,
            "target": self.target_id,
            "state": self.state,
            "reason": self.reason,
            "description": self.description,
        }


@dataclass(frozen=True)
class Verification:
    """A release's verification, stored on the release so a lost check message can be re-sent."""

    target_group_arns: tuple[str, ...]
    instance_ids: tuple[str, ...]
    healthy_checks: int
    interval_s: int
    bake_s: int
    deadline: datetime
    checks_done: int = 0
    streak: int = 0
    baked: bool = False
    last_checked_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_group_arns": list(self.target_group_arns),
            "instance_ids": list(self.instance_ids),
            "healthy_checks": self.healthy_checks,
            "interval_s": self.interval_s,
            "bake_s": self.bake_s,
            "deadline": self.deadline.isoformat(),
            "checks_done": self.checks_done,
            "streak": self.streak,
            "baked": self.baked,
            "last_checked_at": self.last_checked_at.isoformat() if self.last_checked_at else None,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Verification:
        last = raw.get("last_checked_at")
        return cls(
            target_group_arns=tuple(raw["target_group_arns"]),
            instance_ids=tuple(raw["instance_ids"]),
            healthy_checks=int(raw["healthy_checks"]),
            interval_s=int(raw["interval_s"]),
            bake_s=int(raw["bake_s"]),
            deadline=datetime.fromisoformat(raw["deadline"]),
            checks_done=int(raw.get("checks_done", 0)),
            streak=int(raw.get("streak", 0)),
            baked=bool(raw.get("baked", False)),
            last_checked_at=datetime.fromisoformat(last) if last else None,
        )

    def overdue(self, now: datetime) -> bool:
        """No check has come for two intervals (plus slack): its message was lost."""
        since = self.last_checked_at
        if since is None:
            return False
        return now - since > timedelta(seconds=2 * self.interval_s + DEADLINE_MARGIN_S)


def plan_verification(
    settings: VerifySettings,
    groups: Sequence[TargetGroupSettings],
    instance_ids: Sequence[str],
    now: datetime,
) -> Verification:
    """Interval from the target groups' own health-check interval; deadline long enough for a
    target to pass its healthy threshold, plus the deregistration delay, plus a margin."""
    interval = settings.interval_s or max(group.interval_s for group in groups)
    if settings.deadline_s is not None:
        deadline_s = settings.deadline_s
    else:
        threshold = max(group.healthy_threshold for group in groups)
        draining = max(group.deregistration_delay_s for group in groups)
        deadline_s = (threshold + 1) * interval + draining + DEADLINE_MARGIN_S + settings.bake_s
    return Verification(
        target_group_arns=tuple(group.arn for group in groups),
        instance_ids=tuple(sorted(instance_ids)),
        healthy_checks=settings.healthy_checks,
        interval_s=interval,
        bake_s=settings.bake_s,
        deadline=now + timedelta(seconds=deadline_s),
        last_checked_at=now,
    )


class Outcome(StrEnum):
    VERIFIED = "verified"  # the streak (and bake) is done
    CONTINUE = "continue"  # check again after the interval
    BAKE = "bake"  # streak done: wait bake_s, then check once more
    TIMED_OUT = "timed_out"  # the deadline passed without a streak


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    verification: Verification
    not_healthy: tuple[TargetHealth, ...] = field(default_factory=tuple)

    @property
    def next_delay_s(self) -> int:
        delay = self.verification.bake_s if self.outcome is Outcome.BAKE else self.verification.interval_s
        return min(delay, MAX_DELAY_S)


def judge(verification: Verification, health: Sequence[TargetHealth], now: datetime) -> Judgement:
    """One check: every deployed instance healthy in every target group, or the streak restarts."""
    reported = {(entry.target_group, entry.target_id) for entry in health}
    missing = tuple(
        TargetHealth(group, instance, "unused", "Target.NotRegistered", "not registered in the target group")
        for group in verification.target_group_arns
        for instance in verification.instance_ids
        if (group, instance) not in reported
    )
    not_healthy = tuple(entry for entry in health if entry.state != "healthy") + missing
    streak = 0 if not_healthy else verification.streak + 1
    checked = replace(
        verification,
        checks_done=verification.checks_done + 1,
        streak=streak,
        last_checked_at=now,
    )
    if streak >= verification.healthy_checks:
        if verification.bake_s and not verification.baked:
            return Judgement(Outcome.BAKE, replace(checked, baked=True), not_healthy)
        return Judgement(Outcome.VERIFIED, checked, not_healthy)
    if verification.baked and not_healthy:
        # Unhealthy after baking: the bake is void and the streak starts again.
        checked = replace(checked, baked=False)
    if now >= verification.deadline:
        return Judgement(Outcome.TIMED_OUT, checked, not_healthy)
    return Judgement(Outcome.CONTINUE, checked, not_healthy)


@dataclass(frozen=True)
class VerifyRequest:
    """The verify queue's message: which check of which release is due."""

    release_id: str
    deployment_id: str
    check: int

    def to_message(self) -> dict[str, Any]:
        return {"release_id": self.release_id, "deployment_id": self.deployment_id, "check": self.check}

    @classmethod
    def from_message(cls, raw: Any) -> VerifyRequest:
        if not isinstance(raw, Mapping):
            raise MalformedEvent(f"verify message must be a JSON object, got {type(raw).__name__}")
        release_id, deployment_id, check = raw.get("release_id"), raw.get("deployment_id"), raw.get("check")
        if not isinstance(release_id, str) or not release_id:
            raise MalformedEvent(f"verify message: release_id must be a non-empty string, got {release_id!r}")
        if not isinstance(deployment_id, str) or not deployment_id:
            raise MalformedEvent(
                f"verify message: deployment_id must be a non-empty string, got {deployment_id!r}"
            )
        if isinstance(check, bool) or not isinstance(check, int) or check < 1:
            raise MalformedEvent(f"verify message: check must be a whole number >= 1, got {check!r}")
        return cls(release_id, deployment_id, check)

"""Verification after CodeDeploy reports success: every deployed instance must be ``healthy`` in
every target group for N checks in a row before the release counts as good, and no CloudWatch
alarm the pipeline names (``verify.alarms``) may be in ALARM at any check.

CodeDeploy's SUCCESS is not proof: an ALB fails open, and OneAtATime reports success even when
the last instance failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.pipelines import VerifySettings
from chalicelib.domain.traffic import Comparison, MetricsReadError, TrafficSource

# Beyond the time targets need to turn healthy: scheduling slack.
DEADLINE_MARGIN_S = 60
# SQS's largest DelaySeconds (SendMessage: "Valid values: 0 to 900"): a longer wait is made of
# hops, messages that only send themselves on until the check is due.
MAX_DELAY_S = 900
# SQS and Lambda's poller hand over a due message within seconds; a check later than this was
# held up by the coordinator itself (a handler that died and waited out the visibility timeout,
# a lost message that reconcile re-sent), and its history event says so.
LATE_AFTER_S = 10


class LoadBalancerError(Exception):
    """ELBv2 answered an error instead of target groups or target health. ``permanent``: the
    same request can never succeed (a target group that does not exist, an invalid target), so
    verification fails now; otherwise (throttling, a 5xx, no connection) it is tried again."""

    def __init__(self, code: str, message: str, *, permanent: bool) -> None:
        super().__init__(f"ELBv2 {code}: {message}")
        self.code = code
        self.permanent = permanent


class AlarmReadError(Exception):
    """CloudWatch answered an error instead of the alarms' states. ``permanent``: the same
    request can never succeed (access denied, a request CloudWatch finds invalid), so
    verification fails now; otherwise (throttling, a 5xx, no connection) it is tried again, as
    after ELBv2's transient errors."""

    def __init__(self, code: str, message: str, *, permanent: bool) -> None:
        super().__init__(f"CloudWatch {code}: {message}")
        self.code = code
        self.permanent = permanent


class AlarmState(StrEnum):
    """CloudWatch's StateValue."""

    OK = "OK"
    ALARM = "ALARM"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


@dataclass(frozen=True)
class AlarmStatus:
    """One alarm as DescribeAlarms shows it."""

    name: str
    state: AlarmState
    reason: str
    # StateUpdatedTimestamp: when the alarm last changed state.
    updated_at: datetime | None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "alarm": self.name,
            "state": self.state.value,
            "reason": self.reason,
            "since": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True)
class AlarmReading:
    """What one check read of the alarms its pipeline names: the alarms CloudWatch has, or why
    their states could not be read."""

    named: tuple[str, ...]
    found: tuple[AlarmStatus, ...] = ()
    error: AlarmReadError | None = None

    @property
    def firing(self) -> tuple[AlarmStatus, ...]:
        return tuple(alarm for alarm in self.found if alarm.state is AlarmState.ALARM)

    @property
    def missing(self) -> tuple[str, ...]:
        """Named alarms CloudWatch does not have (a typo, a deleted alarm): they could never
        fire, so the gate they stand for cannot be checked."""
        if self.error is not None:
            return ()
        found = {alarm.name for alarm in self.found}
        return tuple(name for name in self.named if name not in found)


@dataclass(frozen=True)
class TargetGroupSettings:
    arn: str
    name: str
    interval_s: int
    healthy_threshold: int
    # The load balancers that forward to the group (its CloudWatch metrics are per load balancer).
    load_balancer_arns: tuple[str, ...] = ()


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
    # When check number checks_done + 1 is due.
    next_check_at: datetime
    checks_done: int = 0
    streak: int = 0
    baked: bool = False
    # When CodeDeploy created the deployment: the rollout window of the receipt starts there.
    rollout_started_at: datetime | None = None
    # When the release left DEPLOYING (CodeDeploy's success): the rollout window ends there.
    rollout_ended_at: datetime | None = None
    # The ALB dimensions of the deployment's traffic, for the receipt and the baseline comparison.
    traffic: TrafficSource | None = None

    @property
    def bake_started_at(self) -> datetime | None:
        """When the bake began (the streak was done): its check is due ``bake_s`` later."""
        return self.next_check_at - timedelta(seconds=self.bake_s) if self.baked and self.bake_s else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_group_arns": list(self.target_group_arns),
            "instance_ids": list(self.instance_ids),
            "healthy_checks": self.healthy_checks,
            "interval_s": self.interval_s,
            "bake_s": self.bake_s,
            "deadline": self.deadline.isoformat(),
            "next_check_at": self.next_check_at.isoformat(),
            "checks_done": self.checks_done,
            "streak": self.streak,
            "baked": self.baked,
            "rollout_started_at": self.rollout_started_at.isoformat() if self.rollout_started_at else None,
            "rollout_ended_at": self.rollout_ended_at.isoformat() if self.rollout_ended_at else None,
            "traffic": self.traffic.to_list() if self.traffic else None,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Verification:
        interval_s = int(raw["interval_s"])
        due = raw.get("next_check_at")
        next_check_at = (
            datetime.fromisoformat(due)
            if due
            # Stored before the due time was: the next check was due an interval after the last.
            else datetime.fromisoformat(raw["last_checked_at"]) + timedelta(seconds=interval_s)
        )
        return cls(
            target_group_arns=tuple(raw["target_group_arns"]),
            instance_ids=tuple(raw["instance_ids"]),
            healthy_checks=int(raw["healthy_checks"]),
            interval_s=interval_s,
            bake_s=int(raw["bake_s"]),
            deadline=datetime.fromisoformat(raw["deadline"]),
            next_check_at=next_check_at,
            checks_done=int(raw.get("checks_done", 0)),
            streak=int(raw.get("streak", 0)),
            baked=bool(raw.get("baked", False)),
            # Absent from a verification stored before the receipt: no receipt for that release.
            rollout_started_at=datetime.fromisoformat(started)
            if (started := raw.get("rollout_started_at"))
            else None,
            # Absent from a verification stored before it: that receipt's rollout ends at its read.
            rollout_ended_at=datetime.fromisoformat(ended)
            if (ended := raw.get("rollout_ended_at"))
            else None,
            traffic=TrafficSource.from_list(raw["traffic"]) if raw.get("traffic") is not None else None,
        )

    def overdue(self, now: datetime) -> bool:
        """The next check is an interval (plus slack) past its due time and has not run: its
        message was lost, or its handler died and SQS has not given it back yet. Judged from the
        planned due time, so a long bake (many hops) is never taken for a lost check."""
        return now > self.next_check_at + timedelta(seconds=self.interval_s + DEADLINE_MARGIN_S)


def plan_verification(
    settings: VerifySettings,
    groups: Sequence[TargetGroupSettings],
    instance_ids: Sequence[str],
    now: datetime,
    *,
    rollout_started_at: datetime | None = None,
) -> Verification:
    """Interval from the target groups' own health-check interval; deadline long enough for a
    target to pass its healthy threshold, plus a margin and the bake.

    The deregistration delay plays no part: verification starts at CodeDeploy's success, when
    every deployed instance has been re-registered (AllowTraffic) and nothing of this deployment
    is draining any more; draining happened in BlockTraffic, before that."""
    interval = settings.interval_s or max(group.interval_s for group in groups)
    if settings.deadline_s is not None:
        deadline_s = settings.deadline_s
    else:
        threshold = max(group.healthy_threshold for group in groups)
        deadline_s = (threshold + 1) * interval + DEADLINE_MARGIN_S + settings.bake_s
    return Verification(
        target_group_arns=tuple(group.arn for group in groups),
        instance_ids=tuple(sorted(instance_ids)),
        healthy_checks=settings.healthy_checks,
        interval_s=interval,
        bake_s=settings.bake_s,
        deadline=now + timedelta(seconds=deadline_s),
        # The first check is due at once: CodeDeploy's AllowTraffic has just waited for every
        # instance to pass the target groups' health checks.
        next_check_at=now,
        rollout_started_at=rollout_started_at or now,
        # Verification is planned as the release leaves DEPLOYING: the rollout is over.
        rollout_ended_at=now,
        traffic=TrafficSource.of([(group.arn, group.load_balancer_arns) for group in groups]),
    )


class Outcome(StrEnum):
    VERIFIED = "verified"  # the streak (and bake) is done
    CONTINUE = "continue"  # check again after the interval
    BAKE = "bake"  # streak done: wait bake_s, then check once more
    TIMED_OUT = "timed_out"  # targets seen not healthy (or health unreadable) at or past the deadline
    # ELBv2 or CloudWatch refused for good (target group gone, target invalid, access denied), or
    # a named alarm does not exist
    UNVERIFIABLE = "unverifiable"
    ALARM = "alarm"  # a named alarm is in ALARM: the release fails at once
    # healthy after the bake, but the bake's error rate or p90 exceeded the baseline's by more
    # than verify.compare allows
    REGRESSED = "regressed"


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    verification: Verification
    not_healthy: tuple[TargetHealth, ...] = field(default_factory=tuple)
    # Why target health could not be read, when it could not.
    error: LoadBalancerError | None = None
    # How long after its due time the check ran, when it ran late (LATE_AFTER_S).
    late_s: int | None = None
    past_deadline: bool = False
    # The pipeline's alarms as this check read them; None when it names none.
    alarms: AlarmReading | None = None
    # The bake against the baseline window (verify.compare), at the check after the bake.
    comparison: Comparison | None = None
    # Why the comparison's figures could not be read, when they could not.
    comparison_error: str | None = None


def judge_comparison(
    judgement: Judgement, comparison: Comparison | None, error: MetricsReadError | None
) -> Judgement:
    """The check after the bake found every target healthy: the baseline comparison has the last
    word. Figures CloudWatch did not give count as too little traffic to judge (``comparison``
    is then the verdict on empty windows), so ``verify.compare.not_enough_traffic`` decides;
    but when that verdict would fail the release and the read may succeed later (throttled, a
    5xx, no answer), the check is tried again after the interval, as a transient alarm or target
    health read error is, until the deadline. At the deadline the verdict stands, and its reason
    says the figures were still unreadable."""
    why = str(error) if error is not None else None
    if comparison is None or comparison.passes:
        return replace(judgement, outcome=Outcome.VERIFIED, comparison=comparison, comparison_error=why)
    if error is not None and not error.permanent:
        if not judgement.past_deadline:
            return replace(judgement, outcome=Outcome.CONTINUE, comparison=comparison, comparison_error=why)
        comparison = replace(
            comparison,
            reason=f"{comparison.reason}; CloudWatch's figures were still unreadable at the deadline",
        )
    return replace(judgement, outcome=Outcome.REGRESSED, comparison=comparison, comparison_error=why)


def judge(
    verification: Verification,
    health: Sequence[TargetHealth],
    now: datetime,
    alarms: AlarmReading | None = None,
) -> Judgement:
    """One check: every deployed instance healthy in every target group and no named alarm in
    ALARM, or the streak restarts (an alarm in ALARM ends it: see ``_alarm_verdict``)."""
    reported = {(entry.target_group, entry.target_id) for entry in health}
    missing = tuple(
        TargetHealth(group, instance, "unused", "Target.NotRegistered", "not registered in the target group")
        for group in verification.target_group_arns
        for instance in verification.instance_ids
        if (group, instance) not in reported
    )
    not_healthy = tuple(entry for entry in health if entry.state != "healthy") + missing
    verdict = _alarm_verdict(verification, alarms, now, not_healthy=not_healthy, error=None)
    return verdict or _judged(verification, now, not_healthy=not_healthy, error=None, alarms=alarms)


def judge_error(
    verification: Verification,
    error: LoadBalancerError,
    now: datetime,
    alarms: AlarmReading | None = None,
) -> Judgement:
    """ELBv2 answered an error instead of target health. Refused for good (the target group is
    gone, a deployed target is invalid): no retry can verify the deployment. Otherwise
    (throttled, unavailable, a 5xx) nothing was seen healthy, so the streak restarts as after a
    target seen not healthy, the check is tried again after the interval, and at or past the
    deadline the release fails with the error. An alarm in ALARM still fails the release."""
    verdict = _alarm_verdict(verification, alarms, now, not_healthy=(), error=error)
    if verdict is not None:
        return verdict
    if error.permanent:
        return _ended(Outcome.UNVERIFIABLE, verification, now, not_healthy=(), error=error, alarms=alarms)
    return _judged(verification, now, not_healthy=(), error=error, alarms=alarms)


def _alarm_verdict(
    verification: Verification,
    alarms: AlarmReading | None,
    now: datetime,
    *,
    not_healthy: tuple[TargetHealth, ...],
    error: LoadBalancerError | None,
) -> Judgement | None:
    """The alarms decide the check before target health does: one in ALARM fails the release
    at once, whatever the targets say (CodeDeploy's own alarm gate stops a deployment the same
    way). A named alarm CloudWatch does not have, or a refusal for good to show the alarms,
    leaves the gate unchecked: unverifiable. INSUFFICIENT_DATA does not fail (an alarm on a
    metric the new release has not emitted yet, or one treating missing data so), and neither
    does a transient read error: the check is tried again (``_judged``)."""
    if alarms is None:
        return None
    if alarms.firing:
        outcome = Outcome.ALARM
    elif alarms.missing or (alarms.error is not None and alarms.error.permanent):
        outcome = Outcome.UNVERIFIABLE
    else:
        return None
    return _ended(outcome, verification, now, not_healthy=not_healthy, error=error, alarms=alarms)


def _ended(
    outcome: Outcome,
    verification: Verification,
    now: datetime,
    *,
    not_healthy: tuple[TargetHealth, ...],
    error: LoadBalancerError | None,
    alarms: AlarmReading | None,
) -> Judgement:
    """A check that ends verification whatever the streak: the streak is void."""
    checked = replace(verification, checks_done=verification.checks_done + 1, streak=0)
    return Judgement(
        outcome,
        checked,
        not_healthy,
        error,
        _late_s(verification, now),
        now >= verification.deadline,
        alarms,
    )


def _late_s(verification: Verification, now: datetime) -> int | None:
    late = math.floor((now - verification.next_check_at).total_seconds())
    return late if late > LATE_AFTER_S else None


def _judged(
    verification: Verification,
    now: datetime,
    *,
    not_healthy: tuple[TargetHealth, ...],
    error: LoadBalancerError | None,
    alarms: AlarmReading | None,
) -> Judgement:
    """The deadline judges the targets, not the coordinator's timing: a check that runs past it
    (late because a handler died or a message was lost) still counts when every target is
    healthy, and the release fails only when a check at or past the deadline does not see every
    target healthy. So the release ends within ``healthy_checks`` checks after the deadline.
    Alarms that could not be read (a transient error) count as not seen good, like targets."""
    alarms_read = alarms is None or alarms.error is None
    seen_healthy = not not_healthy and error is None and alarms_read
    streak = verification.streak + 1 if seen_healthy else 0
    checked = replace(verification, checks_done=verification.checks_done + 1, streak=streak)
    past_deadline = now >= verification.deadline
    if streak >= verification.healthy_checks:
        if verification.bake_s and not verification.baked:
            outcome, checked = Outcome.BAKE, replace(checked, baked=True)
        else:
            outcome = Outcome.VERIFIED
    elif not seen_healthy and past_deadline:
        outcome = Outcome.TIMED_OUT
    else:
        outcome = Outcome.CONTINUE
        if verification.baked and not seen_healthy:
            # Not healthy after baking: the bake is void and the streak starts again.
            checked = replace(checked, baked=False)
    wait_s = verification.bake_s if outcome is Outcome.BAKE else verification.interval_s
    checked = replace(checked, next_check_at=now + timedelta(seconds=wait_s))
    return Judgement(outcome, checked, not_healthy, error, _late_s(verification, now), past_deadline, alarms)


@dataclass(frozen=True)
class VerifyRequest:
    """The verify queue's message: which check of which release is due. ``not_before`` is set on
    a hop: the check is due later than SQS can delay a message, so until then the message only
    sends itself on."""

    release_id: str
    deployment_id: str
    check: int
    not_before: datetime | None = None
    # The release's pipeline, so the check reads the release with its lane in one call (a check
    # that decides the release needs the slot too). None in a message sent before messages named
    # it: that check reads the release alone first.
    pipeline: str | None = None

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "release_id": self.release_id,
            "deployment_id": self.deployment_id,
            "check": self.check,
        }
        if self.not_before is not None:
            message["not_before"] = self.not_before.isoformat()
        if self.pipeline is not None:
            message["pipeline"] = self.pipeline
        return message

    def hop_s(self, now: datetime) -> int:
        """Seconds to wait before this message may run its check; 0 once it is due."""
        if self.not_before is None:
            return 0
        return max(0, math.ceil((self.not_before - now).total_seconds()))

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
        pipeline = raw.get("pipeline")
        if pipeline is not None and (not isinstance(pipeline, str) or not pipeline):
            raise MalformedEvent(f"verify message: pipeline must be a non-empty string, got {pipeline!r}")
        return cls(release_id, deployment_id, check, _not_before(raw.get("not_before")), pipeline)


def next_request(
    release_id: str, deployment_id: str, pipeline: str, verification: Verification, now: datetime
) -> tuple[VerifyRequest, int]:
    """The message for the next check and its delay. A check due later than SQS can delay a
    message goes out as a hop carrying its due time."""
    wait_s = max(0, math.ceil((verification.next_check_at - now).total_seconds()))
    not_before = verification.next_check_at if wait_s > MAX_DELAY_S else None
    request = VerifyRequest(release_id, deployment_id, verification.checks_done + 1, not_before, pipeline)
    return request, min(wait_s, MAX_DELAY_S)


def _not_before(raw: Any) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise MalformedEvent(f"verify message: not_before must be an ISO 8601 time with a zone, got {raw!r}")
    return moment

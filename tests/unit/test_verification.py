from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest

from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.pipelines import CompareSettings, NotEnoughTraffic, VerifySettings
from chalicelib.domain.traffic import MetricsReadError, WindowFigures, compare
from chalicelib.domain.verification import (
    DEADLINE_MARGIN_S,
    LATE_AFTER_S,
    MAX_DELAY_S,
    AlarmReadError,
    AlarmReading,
    AlarmState,
    AlarmStatus,
    LoadBalancerError,
    Outcome,
    TargetGroupSettings,
    TargetHealth,
    Verification,
    VerifyRequest,
    judge,
    judge_comparison,
    judge_error,
    next_request,
    plan_verification,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
GROUP = TargetGroupSettings("arn:tg/a", "a", interval_s=10, healthy_threshold=3)


def sqs_max_delay_s() -> int:
    """From the model's documentation of SendMessage's DelaySeconds: "Valid values: 0 to 900"."""
    model = botocore.session.get_session().get_service_model("sqs")
    documentation = model.operation_model("SendMessage").input_shape.members["DelaySeconds"].documentation
    match = re.search(r"Valid values: 0 to (\d+)", documentation)
    assert match, documentation
    return int(match.group(1))


def test_a_message_is_delayed_at_most_as_long_as_sqs_allows() -> None:
    assert sqs_max_delay_s() == MAX_DELAY_S


def plan(**settings: Any) -> Verification:
    return plan_verification(VerifySettings(**settings), [GROUP], ["i-2", "i-1"], NOW)


def healthy(*instances: str) -> list[TargetHealth]:
    return [TargetHealth("arn:tg/a", instance, "healthy") for instance in instances]


def test_defaults_come_from_the_target_group() -> None:
    verification = plan()
    assert verification.interval_s == 10
    assert verification.deadline == NOW + timedelta(seconds=(3 + 1) * 10 + DEADLINE_MARGIN_S)
    assert verification.instance_ids == ("i-1", "i-2")


def test_pipeline_settings_override_the_defaults() -> None:
    verification = plan(interval_s=3, deadline_s=100, healthy_checks=4)
    assert (verification.interval_s, verification.healthy_checks) == (3, 4)
    assert verification.deadline == NOW + timedelta(seconds=100)


def test_streak_of_healthy_checks_verifies() -> None:
    first = judge(plan(), healthy("i-1", "i-2"), NOW)
    assert (first.outcome, first.verification.streak) == (Outcome.CONTINUE, 1)
    second = judge(first.verification, healthy("i-1", "i-2"), NOW)
    assert (second.outcome, second.verification.checks_done) == (Outcome.VERIFIED, 2)


def test_any_target_not_healthy_restarts_the_streak_and_is_named() -> None:
    started = replace(plan(), streak=1)
    sick = TargetHealth("arn:tg/a", "i-2", "unhealthy", "Target.Timeout", "Request timed out")
    judgement = judge(started, [*healthy("i-1"), sick], NOW)
    assert judgement.verification.streak == 0
    assert judgement.not_healthy == (sick,)


def test_an_instance_missing_from_the_target_group_is_not_healthy() -> None:
    judgement = judge(plan(), healthy("i-1"), NOW)
    assert [(t.target_id, t.state, t.reason) for t in judgement.not_healthy] == [
        ("i-2", "unused", "Target.NotRegistered")
    ]


def test_deadline_times_out_unless_the_streak_is_reached() -> None:
    late = plan().deadline + timedelta(seconds=1)
    assert judge(plan(), healthy("i-1"), late).outcome is Outcome.TIMED_OUT
    assert judge(replace(plan(), streak=1), healthy("i-1", "i-2"), late).outcome is Outcome.VERIFIED


def test_bake_waits_then_checks_once_more() -> None:
    streaked = replace(plan(bake_s=120), streak=1)
    baking = judge(streaked, healthy("i-1", "i-2"), NOW)
    assert baking.outcome is Outcome.BAKE
    assert next_request("r", "d", "p", baking.verification, NOW) == (
        VerifyRequest("r", "d", 2, pipeline="p"),
        120,
    )
    after = NOW + timedelta(seconds=120)
    assert judge(baking.verification, healthy("i-1", "i-2"), after).outcome is Outcome.VERIFIED
    unhealthy_after_bake = judge(baking.verification, healthy("i-1"), after)
    assert unhealthy_after_bake.outcome is Outcome.CONTINUE
    assert not unhealthy_after_bake.verification.baked


def test_the_bake_knows_when_it_began_and_the_comparison_has_the_last_word() -> None:
    assert plan(bake_s=120).bake_started_at is None
    baking = judge(replace(plan(bake_s=120), streak=1), healthy("i-1", "i-2"), NOW)
    assert baking.verification.bake_started_at == NOW
    after = judge(baking.verification, healthy("i-1", "i-2"), NOW + timedelta(seconds=120))
    quiet, busy = (
        WindowFigures(0, 0, 0, 0, 0, 0, 0, None, None),
        WindowFigures(500, 0, 0, 500, 0, 0, 0, 9.0, 9.0),
    )
    worse = WindowFigures(500, 0, 0, 500, 50, 0, 0, 9.0, 9.0)
    regressed = judge_comparison(after, compare(CompareSettings(), worse, busy), None)
    assert regressed.outcome is Outcome.REGRESSED
    within = judge_comparison(after, compare(CompareSettings(), busy, busy), None)
    assert within.outcome is Outcome.VERIFIED
    assert within.comparison is not None
    # No figures (CloudWatch refused): too little traffic to judge, as verify.compare says.
    refused = CompareSettings(not_enough_traffic=NotEnoughTraffic.FAIL)
    denied = MetricsReadError("AccessDenied", "no", permanent=True)
    unread = judge_comparison(after, compare(refused, quiet, quiet), denied)
    assert (unread.outcome, unread.comparison_error) == (Outcome.REGRESSED, "AccessDenied: no")


def test_a_throttled_comparison_read_is_tried_again_until_the_deadline() -> None:
    baking = judge(replace(plan(bake_s=240), streak=1), healthy("i-1", "i-2"), NOW)
    after = judge(baking.verification, healthy("i-1", "i-2"), NOW + timedelta(seconds=240))
    quiet = WindowFigures(0, 0, 0, 0, 0, 0, 0, None, None)
    failing = compare(CompareSettings(not_enough_traffic=NotEnoughTraffic.FAIL), quiet, quiet)
    throttled = MetricsReadError("Throttling", "Rate exceeded", permanent=False)

    retried = judge_comparison(after, failing, throttled)
    assert (retried.outcome, retried.comparison_error) == (Outcome.CONTINUE, "Throttling: Rate exceeded")
    # The next check comes after the interval and, healthy, compares again.
    again = judge(retried.verification, healthy("i-1", "i-2"), retried.verification.next_check_at)
    assert again.outcome is Outcome.VERIFIED

    at_deadline = judge(baking.verification, healthy("i-1", "i-2"), baking.verification.deadline)
    judged = judge_comparison(at_deadline, failing, throttled)
    assert judged.outcome is Outcome.REGRESSED
    assert judged.comparison is not None
    assert judged.comparison.reason.endswith("CloudWatch's figures were still unreadable at the deadline")
    # A verdict that passes does not wait for figures.
    passing = compare(CompareSettings(), quiet, quiet)
    assert judge_comparison(after, passing, throttled).outcome is Outcome.VERIFIED


def test_the_rollout_ends_when_verification_is_planned() -> None:
    planned = plan()
    assert planned.rollout_ended_at == NOW
    assert Verification.from_dict(planned.to_dict()) == planned


def test_a_verification_stored_before_the_receipt_reads_without_its_traffic() -> None:
    stored = plan().to_dict()
    del stored["rollout_started_at"], stored["rollout_ended_at"], stored["traffic"]
    restored = Verification.from_dict(stored)
    assert (restored.rollout_started_at, restored.rollout_ended_at, restored.traffic) == (None, None, None)


def test_a_bake_longer_than_sqs_can_delay_hops_to_its_due_time() -> None:
    baking = judge(replace(plan(bake_s=3600), streak=1), healthy("i-1", "i-2"), NOW)
    due = NOW + timedelta(seconds=3600)
    request, delay_s = next_request("r", "d", "p", baking.verification, NOW)
    assert (request.not_before, delay_s) == (due, MAX_DELAY_S)
    # Each hop waits at most SQS's maximum, until the check is due.
    assert request.hop_s(NOW + timedelta(seconds=900)) == 2700
    assert request.hop_s(due - timedelta(milliseconds=500)) == 1
    assert request.hop_s(due) == 0
    # The planned due time, not the last check, tells whether the check is overdue.
    assert not baking.verification.overdue(due)
    assert not baking.verification.overdue(due + timedelta(seconds=10 + DEADLINE_MARGIN_S))
    assert baking.verification.overdue(due + timedelta(seconds=10 + DEADLINE_MARGIN_S + 1))


def test_the_first_check_is_due_at_codedeploys_success() -> None:
    assert plan().next_check_at == NOW


def test_overdue_an_interval_and_the_margin_after_the_check_was_due() -> None:
    verification = plan()
    assert not verification.overdue(NOW + timedelta(seconds=10 + DEADLINE_MARGIN_S))
    assert verification.overdue(NOW + timedelta(seconds=10 + DEADLINE_MARGIN_S + 1))


def test_a_late_check_past_the_deadline_still_counts_healthy_targets() -> None:
    """Issue 12 fault 4: the deadline judges the targets, not the coordinator's timing."""
    verification = plan()
    late = verification.deadline + timedelta(seconds=360)
    first = judge(verification, healthy("i-1", "i-2"), late)
    assert (first.outcome, first.verification.streak, first.past_deadline) == (Outcome.CONTINUE, 1, True)
    assert first.late_s == (late - verification.next_check_at).total_seconds()
    second = judge(first.verification, healthy("i-1", "i-2"), late + timedelta(seconds=10))
    assert (second.outcome, second.late_s) == (Outcome.VERIFIED, None)


def test_past_the_deadline_any_target_not_healthy_fails_at_once() -> None:
    verification = plan()
    first = judge(verification, healthy("i-1", "i-2"), verification.deadline)
    assert first.outcome is Outcome.CONTINUE
    second = judge(first.verification, healthy("i-1"), verification.deadline + timedelta(seconds=10))
    assert second.outcome is Outcome.TIMED_OUT
    assert [t.target_id for t in second.not_healthy] == ["i-2"]


def test_a_check_on_time_is_not_marked_late() -> None:
    verification = plan()
    on_time = judge(
        verification, healthy("i-1", "i-2"), verification.next_check_at + timedelta(seconds=LATE_AFTER_S)
    )
    assert on_time.late_s is None


def test_unreadable_health_restarts_the_streak_and_fails_only_past_the_deadline() -> None:
    started = replace(plan(bake_s=30), streak=1, baked=True)
    unavailable = LoadBalancerError("HealthUnavailable", "try later", permanent=False)
    before = judge_error(started, unavailable, NOW)
    assert (before.outcome, before.verification.streak) == (Outcome.CONTINUE, 0)
    assert not before.verification.baked
    assert before.verification.next_check_at == NOW + timedelta(seconds=10)
    throttled = LoadBalancerError("Throttling", "Rate exceeded", permanent=False)
    past = judge_error(started, throttled, started.deadline)
    assert (past.outcome, past.error) == (Outcome.TIMED_OUT, throttled)
    assert str(throttled) == "ELBv2 Throttling: Rate exceeded"


def test_a_refusal_for_good_is_unverifiable_at_once() -> None:
    gone = LoadBalancerError("TargetGroupNotFound", "gone", permanent=True)
    judgement = judge_error(replace(plan(), streak=1), gone, plan().deadline + timedelta(seconds=1))
    assert (judgement.outcome, judgement.verification.checks_done) == (Outcome.UNVERIFIABLE, 1)
    assert judgement.verification.streak == 0


def test_verification_round_trips_through_a_dict() -> None:
    verification = replace(plan(bake_s=5), checks_done=3, streak=2, baked=True)
    assert Verification.from_dict(verification.to_dict()) == verification


def test_a_verification_stored_before_due_times_is_due_an_interval_after_its_last_check() -> None:
    stored = {key: value for key, value in plan().to_dict().items() if key != "next_check_at"}
    stored["last_checked_at"] = NOW.isoformat()
    assert Verification.from_dict(stored).next_check_at == NOW + timedelta(seconds=10)


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ([], "must be a JSON object"),
        ({"deployment_id": "d", "check": 1}, "release_id"),
        ({"release_id": "r", "check": 1}, "deployment_id"),
        ({"release_id": "r", "deployment_id": "d", "check": 0}, "check must be"),
        ({"release_id": "r", "deployment_id": "d", "check": True}, "check must be"),
        ({"release_id": "r", "deployment_id": "d", "check": 1, "not_before": "soon"}, "not_before must be"),
        (
            {"release_id": "r", "deployment_id": "d", "check": 1, "not_before": "2026-11-26T12:00:00"},
            "not_before must be",
        ),
        ({"release_id": "r", "deployment_id": "d", "check": 1, "pipeline": ""}, "pipeline must be"),
        ({"release_id": "r", "deployment_id": "d", "check": 1, "pipeline": 7}, "pipeline must be"),
    ],
)
def test_malformed_verify_messages_say_why(message: object, problem: str) -> None:
    with pytest.raises(MalformedEvent, match=problem):
        VerifyRequest.from_message(message)


@pytest.mark.parametrize("not_before", [None, NOW])
@pytest.mark.parametrize("pipeline", [None, "shop-prod"])
def test_verify_request_round_trips(not_before: datetime | None, pipeline: str | None) -> None:
    request = VerifyRequest("r", "d", 3, not_before, pipeline)
    assert VerifyRequest.from_message(request.to_message()) == request


def alarm(name: str, state: AlarmState, reason: str = "") -> AlarmStatus:
    return AlarmStatus(name, state, reason, NOW - timedelta(minutes=1))


def test_an_alarm_in_alarm_fails_the_check_whatever_the_targets_say() -> None:
    started = replace(plan(bake_s=30), streak=1, baked=True)
    reading = AlarmReading(
        ("api-5xx", "p99"), (alarm("api-5xx", AlarmState.OK), alarm("p99", AlarmState.ALARM, "p99 > 2s"))
    )
    judgement = judge(started, healthy("i-1", "i-2"), NOW, reading)
    assert (judgement.outcome, judgement.verification.streak) == (Outcome.ALARM, 0)
    assert judgement.alarms is not None
    assert [a.name for a in judgement.alarms.firing] == ["p99"]
    # Target health unreadable changes nothing: the alarm decides.
    unavailable = LoadBalancerError("HealthUnavailable", "try later", permanent=False)
    assert judge_error(started, unavailable, NOW, reading).outcome is Outcome.ALARM


def test_ok_and_insufficient_data_alarms_let_the_streak_count() -> None:
    reading = AlarmReading(
        ("api-5xx", "p99"), (alarm("api-5xx", AlarmState.OK), alarm("p99", AlarmState.INSUFFICIENT_DATA))
    )
    first = judge(plan(), healthy("i-1", "i-2"), NOW, reading)
    assert (first.outcome, first.verification.streak) == (Outcome.CONTINUE, 1)
    assert judge(first.verification, healthy("i-1", "i-2"), NOW, reading).outcome is Outcome.VERIFIED


def test_a_named_alarm_cloudwatch_does_not_have_is_unverifiable() -> None:
    reading = AlarmReading(("api-5xx", "typo"), (alarm("api-5xx", AlarmState.OK),))
    judgement = judge(replace(plan(), streak=1), healthy("i-1", "i-2"), NOW, reading)
    assert (judgement.outcome, judgement.verification.streak) == (Outcome.UNVERIFIABLE, 0)
    assert reading.missing == ("typo",)


def test_unreadable_alarms_restart_the_streak_and_fail_only_past_the_deadline() -> None:
    throttled = AlarmReading(
        ("api-5xx",), error=AlarmReadError("Throttling", "Rate exceeded", permanent=False)
    )
    assert throttled.missing == ()  # nothing is known missing when nothing was read
    started = replace(plan(), streak=1)
    before = judge(started, healthy("i-1", "i-2"), NOW, throttled)
    assert (before.outcome, before.verification.streak) == (Outcome.CONTINUE, 0)
    past = judge(started, healthy("i-1", "i-2"), started.deadline, throttled)
    assert past.outcome is Outcome.TIMED_OUT
    denied = AlarmReading(("api-5xx",), error=AlarmReadError("AccessDenied", "not allowed", permanent=True))
    assert judge(started, healthy("i-1", "i-2"), NOW, denied).outcome is Outcome.UNVERIFIABLE

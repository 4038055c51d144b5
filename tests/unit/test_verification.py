from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.pipelines import VerifySettings
from chalicelib.domain.verification import (
    DEADLINE_MARGIN_S,
    Outcome,
    TargetGroupSettings,
    TargetHealth,
    Verification,
    VerifyRequest,
    judge,
    plan_verification,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
GROUP = TargetGroupSettings("arn:tg/a", "a", interval_s=10, healthy_threshold=3, deregistration_delay_s=30)


def plan(**settings: int) -> Verification:
    return plan_verification(VerifySettings(**settings), [GROUP], ["i-2", "i-1"], NOW)


def healthy(*instances: str) -> list[TargetHealth]:
    return [TargetHealth("arn:tg/a", instance, "healthy") for instance in instances]


def test_defaults_come_from_the_target_group() -> None:
    verification = plan()
    assert verification.interval_s == 10
    assert verification.deadline == NOW + timedelta(seconds=(3 + 1) * 10 + 30 + DEADLINE_MARGIN_S)
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
    assert (baking.outcome, baking.next_delay_s) == (Outcome.BAKE, 120)
    assert judge(baking.verification, healthy("i-1", "i-2"), NOW).outcome is Outcome.VERIFIED
    unhealthy_after_bake = judge(baking.verification, healthy("i-1"), NOW)
    assert unhealthy_after_bake.outcome is Outcome.CONTINUE
    assert not unhealthy_after_bake.verification.baked


def test_overdue_after_two_intervals_and_the_margin() -> None:
    verification = plan()
    assert not verification.overdue(NOW + timedelta(seconds=2 * 10 + DEADLINE_MARGIN_S))
    assert verification.overdue(NOW + timedelta(seconds=2 * 10 + DEADLINE_MARGIN_S + 1))


def test_verification_round_trips_through_a_dict() -> None:
    verification = replace(plan(bake_s=5), checks_done=3, streak=2, baked=True)
    assert Verification.from_dict(verification.to_dict()) == verification


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ([], "must be a JSON object"),
        ({"deployment_id": "d", "check": 1}, "release_id"),
        ({"release_id": "r", "check": 1}, "deployment_id"),
        ({"release_id": "r", "deployment_id": "d", "check": 0}, "check must be"),
        ({"release_id": "r", "deployment_id": "d", "check": True}, "check must be"),
    ],
)
def test_malformed_verify_messages_say_why(message: object, problem: str) -> None:
    with pytest.raises(MalformedEvent, match=problem):
        VerifyRequest.from_message(message)


def test_verify_request_round_trips() -> None:
    request = VerifyRequest("r", "d", 3)
    assert VerifyRequest.from_message(request.to_message()) == request

"""CloudWatch alarm gates during verification (``verify.alarms``), on moto's CloudWatch: an alarm
in ALARM at any health check fails the release at once and rolls back; OK and INSUFFICIENT_DATA
alarms let it verify; a named alarm that does not exist fails it as unverifiable. moto cannot
throttle or refuse: botocore's Stubber plays CloudWatch's errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from chalicelib import bootstrap
from chalicelib.adapters.cloudwatch import CloudWatchAlarms
from chalicelib.domain.inbound_events import DeploymentState
from chalicelib.domain.release import ReleaseState, rollback_release_id
from chalicelib.domain.verification import VerifyRequest
from chalicelib.service.deployment_events import apply_deployment_state
from chalicelib.service.verification import run_check
from chalicelib.service.wiring import Wiring
from sandbox import moto_extensions
from tests.integration import conftest
from tests.integration.conftest import LOAD_BALANCED, World
from tests.integration.test_recovery import ManualClock, direct_wiring
from tests.integration.test_verification import (
    health_checks,
    run_checks,
    succeed,
    upload_and_deploy,
    verified,
)

ERRORS_5XX = "shop-5xx"
LATENCY = "shop-p99"
ALARMS = (ERRORS_5XX, LATENCY)


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    """The shared pipelines file, with the load-balanced pipeline naming two alarms."""
    text = conftest.PIPELINES_TOML.replace(
        "deadline_s = 60\n", f"deadline_s = 60\nalarms = {list(ALARMS)!r}\n"
    )
    assert text != conftest.PIPELINES_TOML
    path = tmp_path / "pipelines.toml"
    path.write_text(text, encoding="utf-8")
    return path


def create_alarm(world: World, name: str) -> None:
    world.aws("cloudwatch").put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/ApplicationELB",
        MetricName="HTTPCode_Target_5XX_Count",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )


def set_state(world: World, name: str, state: str, reason: str) -> None:
    world.aws("cloudwatch").set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)


def state_changed_at(world: World, name: str) -> str:
    [alarm] = world.aws("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return str(alarm["StateUpdatedTimestamp"].isoformat())


@pytest.mark.timeout(120)
def test_ok_and_insufficient_data_alarms_let_the_release_verify(world: World) -> None:
    for name in ALARMS:
        create_alarm(world, name)
    set_state(world, LATENCY, "INSUFFICIENT_DATA", "no requests yet")
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    succeed(world, deployment_id)
    run_checks(world, 1)

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    checks = health_checks(world, release_id)
    assert [(c["outcome"], c["alarms"], c["insufficient_data"]) for c in checks] == [
        ("continue", 2, [LATENCY]),
        ("verified", 2, [LATENCY]),
    ]


@pytest.mark.timeout(120)
def test_an_alarm_going_to_alarm_during_verification_fails_and_rolls_back(world: World) -> None:
    for name in ALARMS:
        create_alarm(world, name)
    good = verified(world, "1.0.0")
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    succeed(world, deployment_id)
    assert world.release(release_id).state is ReleaseState.VERIFYING
    reason = "Threshold Crossed: 1 datapoint [12.0] was greater than or equal to the threshold (1.0)."
    set_state(world, ERRORS_5XX, "ALARM", reason)
    changed_at = state_changed_at(world, ERRORS_5XX)

    run_checks(world, 1)

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(
        f"verify_failed: alarm {ERRORS_5XX} is in ALARM since {changed_at}: {reason}"
    )
    check = health_checks(world, release_id)[-1]
    assert (check["check"], check["outcome"], check["streak"]) == (2, "alarm", 0)
    assert check["in_alarm"] == [
        {"alarm": ERRORS_5XX, "state": "ALARM", "reason": reason, "since": changed_at}
    ]
    assert world.history(release_id)[-1].detail["failure"] == "verify_failed"
    rollback = world.release(rollback_release_id(release_id))
    assert rollback.state is ReleaseState.DEPLOYING
    assert rollback.revision == world.release(good).revision
    assert world.verify_messages(wait_s=0) == []


@pytest.mark.timeout(120)
def test_an_alarm_in_alarm_at_the_first_check_fails_at_once(world: World) -> None:
    for name in ALARMS:
        create_alarm(world, name)
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    set_state(world, LATENCY, "ALARM", "p99 above 2 s")  # while CodeDeploy deploys
    succeed(world, deployment_id)

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(f"verify_failed: alarm {LATENCY} is in ALARM since ")
    assert "p99 above 2 s" in failed.reason
    [check] = health_checks(world, release_id)
    assert (check["check"], check["outcome"]) == (1, "alarm")
    assert world.verify_messages(wait_s=0) == []
    assert world.store.get_slot(LOAD_BALANCED).active is None


@pytest.mark.timeout(120)
def test_a_named_alarm_that_does_not_exist_fails_verification_naming_it(world: World) -> None:
    create_alarm(world, ERRORS_5XX)
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    succeed(world, deployment_id)

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(
        f"verify_failed: cannot verify deployment {deployment_id}: "
        f"CloudWatch has no alarm named {LATENCY} (verify.alarms)"
    )
    [check] = health_checks(world, release_id)
    assert (check["outcome"], check["missing_alarms"]) == ("unverifiable", [LATENCY])


def stubbed_wiring(world: World, clock: ManualClock) -> tuple[Wiring, Any]:
    """The use cases wired by hand, CloudWatch through a client the test stubs."""
    client = world.session.client("cloudwatch")
    return replace(direct_wiring(world, clock), alarms=CloudWatchAlarms(lambda: client)), client


def verifying(world: World) -> tuple[str, str, ManualClock, Wiring, Any]:
    for name in ALARMS:
        create_alarm(world, name)
    verified(world, "1.0.0")
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    clock = ManualClock()
    clock.current = world.release(release_id).updated_at
    wiring, client = stubbed_wiring(world, clock)
    moto_extensions.complete(deployment_id, "Succeeded")
    apply_deployment_state(wiring, release_id, deployment_id, DeploymentState.SUCCESS)
    assert world.release(release_id).state is ReleaseState.VERIFYING
    assert [m["check"] for m in world.verify_messages()] == [2]
    return release_id, deployment_id, clock, wiring, client


@pytest.mark.timeout(120)
def test_throttled_describe_alarms_is_retried_and_past_the_deadline_fails(world: World) -> None:
    release_id, deployment_id, clock, wiring, client = verifying(world)
    with Stubber(client) as stub:
        stub.add_client_error("describe_alarms", "Throttling", "Rate exceeded", 400)
        run_check(wiring, VerifyRequest(release_id, deployment_id, 2))

    release = world.release(release_id)
    assert release.state is ReleaseState.VERIFYING
    check = health_checks(world, release_id)[-1]
    assert (check["outcome"], check["streak"]) == ("continue", 0)
    assert check["alarm_error"].startswith("CloudWatch Throttling: Rate exceeded (alarms shop-5xx, shop-p99)")
    assert [m["check"] for m in world.verify_messages()] == [3]

    # Still throttled at the deadline: the release ends, naming the code, and rolls back.
    assert release.verification is not None
    clock.current = release.verification.deadline
    with Stubber(client) as stub:
        stub.add_client_error("describe_alarms", "Throttling", "Rate exceeded", 400)
        run_check(wiring, VerifyRequest(release_id, deployment_id, 3))
    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(
        "verify_failed: alarm states still unreadable at the deadline: CloudWatch Throttling: Rate exceeded"
    )
    assert world.history(release_id)[-1].detail["error_code"] == "Throttling"
    assert world.release(rollback_release_id(release_id)).state is ReleaseState.DEPLOYING


@pytest.mark.timeout(120)
def test_a_throttled_check_then_readable_alarms_verifies(world: World) -> None:
    release_id, deployment_id, clock, wiring, client = verifying(world)
    with Stubber(client) as stub:
        stub.add_client_error("describe_alarms", "Throttling", "Rate exceeded", 400)
        run_check(wiring, VerifyRequest(release_id, deployment_id, 2))
    for check in (3, 4):
        clock.advance(timedelta(seconds=1))
        run_check(wiring, VerifyRequest(release_id, deployment_id, check))

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    assert [(c["outcome"], c["streak"]) for c in health_checks(world, release_id)] == [
        ("continue", 1),
        ("continue", 0),
        ("continue", 1),
        ("verified", 2),
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("code", "status"), [("AccessDenied", 403), ("InvalidParameterValue", 400)])
def test_a_refusal_to_describe_alarms_fails_verification_at_once(
    world: World, code: str, status: int
) -> None:
    release_id, deployment_id, _, wiring, client = verifying(world)
    with Stubber(client) as stub:
        stub.add_client_error("describe_alarms", code, "from the test", status)
        run_check(wiring, VerifyRequest(release_id, deployment_id, 2))

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(
        f"verify_failed: cannot verify deployment {deployment_id}: CloudWatch {code}: from the test"
    )
    assert world.history(release_id)[-1].detail["error_code"] == code
    assert world.release(rollback_release_id(release_id)).state is ReleaseState.DEPLOYING


@pytest.mark.timeout(120)
def test_reconcile_applying_a_lost_success_reads_the_alarms_too(world: World) -> None:
    """CodeDeploy's SUCCESS event never arrived: reconcile applies it, first check included."""
    for name in ALARMS:
        create_alarm(world, name)
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    set_state(world, ERRORS_5XX, "ALARM", "5xx above 1 a minute")  # while CodeDeploy deploys
    moto_extensions.complete(deployment_id, "Succeeded")

    world.reconcile()

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(f"verify_failed: alarm {ERRORS_5XX} is in ALARM since ")


@pytest.mark.timeout(120)
def test_an_alarm_already_in_alarm_holds_the_start_until_it_clears(world: World) -> None:
    """``verify.alarm_at_start = "wait"`` (the default): the upload waits QUEUED, the alarm named,
    no deployment is created; once the alarm is OK, reconcile starts it."""
    for name in ALARMS:
        create_alarm(world, name)
    reason = "Threshold Crossed: 1 datapoint [40.0] was greater than or equal to the threshold (1.0)."
    set_state(world, ERRORS_5XX, "ALARM", reason)
    upload = world.upload("shop/prod/shop-1.0.0.zip")
    release_id = str(world.deliver_upload(upload.eventbridge)["releases"][0]["id"])

    held = world.release(release_id)
    assert held.state is ReleaseState.QUEUED
    assert held.reason == f"waiting: alarm {ERRORS_5XX} in ALARM (verify.alarm_at_start = wait)"
    [firing] = world.history(release_id)[-1].detail["alarms"]
    assert (firing["alarm"], firing["reason"]) == (ERRORS_5XX, reason)
    assert world.deployments("shop", "shop-prod") == []
    world.reconcile()
    assert world.release(release_id).state is ReleaseState.QUEUED

    set_state(world, ERRORS_5XX, "OK", "Threshold not crossed")
    world.reconcile()
    started = world.release(release_id)
    assert started.state is ReleaseState.DEPLOYING
    assert started.deployment_id is not None


@pytest.mark.timeout(120)
def test_an_alarm_already_in_alarm_fails_the_start_when_the_pipeline_says_so(
    world: World, pipelines_file: Path
) -> None:
    text = pipelines_file.read_text(encoding="utf-8")
    pipelines_file.write_text(
        text.replace("alarms = ", 'alarm_at_start = "fail"\nalarms = '), encoding="utf-8"
    )
    bootstrap.reset()  # the functions read the pipelines file again
    for name in ALARMS:
        create_alarm(world, name)
    set_state(world, LATENCY, "ALARM", "p99 above 2 s")
    upload = world.upload("shop/prod/shop-1.0.0.zip")
    release_id = str(world.deliver_upload(upload.eventbridge)["releases"][0]["id"])

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason == f"not started: alarm {LATENCY} in ALARM (verify.alarm_at_start = fail)"
    assert world.deployments("shop", "shop-prod") == []
    assert world.store.get_slot("shop-prod").active is None


@pytest.mark.timeout(120)
def test_an_alarm_going_to_alarm_during_the_bake_fails_and_rolls_back(
    world: World, pipelines_file: Path
) -> None:
    text = pipelines_file.read_text(encoding="utf-8")
    pipelines_file.write_text(text.replace("alarms = ", "bake_s = 1\nalarms = "), encoding="utf-8")
    bootstrap.reset()  # the functions read the pipelines file again
    for name in ALARMS:
        create_alarm(world, name)
    good, good_deployment = upload_and_deploy(world, "1.0.0")
    succeed(world, good_deployment)
    run_checks(world, 2)  # the streak's second check, then the one after the bake
    assert world.release(good).state is ReleaseState.SUCCEEDED

    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    succeed(world, deployment_id)
    run_checks(world, 1)  # the streak is complete: the release bakes
    assert world.release(release_id).state is ReleaseState.VERIFYING
    assert health_checks(world, release_id)[-1]["outcome"] == "bake"
    set_state(world, ERRORS_5XX, "ALARM", "5xx above 1 a minute")

    run_checks(world, 1)  # the check after the bake

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(f"verify_failed: alarm {ERRORS_5XX} is in ALARM since ")
    rollback = world.release(rollback_release_id(release_id))
    assert rollback.metadata["rolled_back_to"] == good

"""After CodeDeploy succeeds: ALB target health is verified, and failures roll back.

moto never reports a target ``unhealthy`` or ``initial`` and lacks the deployment-target calls:
``sandbox.moto_extensions`` (``set_target_health``, ``set_instance_targets``) adds both, and
each use below says so.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from botocore.stub import Stubber

from chalicelib import bootstrap
from chalicelib.domain.inbound_events import DeploymentState
from chalicelib.domain.pipelines import PipelinesConfig, VerifySettings
from chalicelib.domain.release import EventType, ReleaseState, Trigger, rollback_release_id
from chalicelib.domain.verification import VerifyRequest
from chalicelib.service.deployment_events import apply_deployment_state
from chalicelib.service.reconcile import reconcile
from chalicelib.service.verification import run_check
from sandbox import moto_extensions
from tests.integration.conftest import INSTANCES, LOAD_BALANCED, World
from tests.integration.test_recovery import ManualClock, direct_wiring


def upload_and_deploy(world: World, version: str) -> tuple[str, str]:
    """Upload a bundle to the load-balanced pipeline; CodeDeploy deploys it to every instance
    (recorded through moto_extensions.set_instance_targets) and reports SUCCESS."""
    upload = world.upload(f"shop/prod/shop-{version}.zip", metadata={"version-label": version})
    release_id = str(world.deliver_upload(upload.eventbridge)["releases"][0]["id"])
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    instances = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids
    moto_extensions.set_instance_targets(deployment_id, {i: {"status": "Succeeded"} for i in instances})
    return release_id, deployment_id


def succeed(world: World, deployment_id: str) -> None:
    moto_extensions.complete(deployment_id, "Succeeded")
    world.codedeploy_event(deployment_id, "SUCCESS", "shop", "shop-prod")


def fail(world: World, deployment_id: str, instance: str) -> None:
    """CodeDeploy fails ValidateService on one instance (moto_extensions: targets and error)."""
    moto_extensions.set_instance_targets(
        deployment_id,
        {
            instance: {
                "status": "Failed",
                "lifecycleEvents": [
                    {"lifecycleEventName": "ApplicationStart", "status": "Succeeded"},
                    {
                        "lifecycleEventName": "ValidateService",
                        "status": "Failed",
                        "diagnostics": {
                            "errorCode": "ScriptFailed",
                            "scriptName": "scripts/validate_service.sh",
                            "message": "Script at specified location: scripts/validate_service.sh failed",
                            "logTail": "x" * 5000 + "\nhealth check failed: HTTP 500",
                        },
                    },
                ],
            }
        },
    )
    moto_extensions.complete(
        deployment_id,
        "Failed",
        error_code="HEALTH_CONSTRAINTS",
        error_message="The overall deployment failed because too many individual instances failed deployment",
    )
    world.codedeploy_event(deployment_id, "FAILURE", "shop", "shop-prod")


def run_checks(world: World, count: int) -> None:
    for _ in range(count):
        messages = world.verify_messages()
        assert messages, "no health check was scheduled"
        world.deliver_verify(messages)


def verified(world: World, version: str) -> str:
    release_id, deployment_id = upload_and_deploy(world, version)
    succeed(world, deployment_id)
    run_checks(world, 2)
    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    return release_id


def health_checks(world: World, release_id: str) -> list[dict[str, Any]]:
    return [dict(e.detail) for e in world.history(release_id) if e.detail.get("task") == "HealthCheck"]


def test_healthy_streak_verifies_the_release_and_the_history_tells_it(world: World) -> None:
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    succeed(world, deployment_id)

    verifying = world.release(release_id)
    assert verifying.state is ReleaseState.VERIFYING
    assert verifying.verification is not None
    assert verifying.verification.instance_ids == world.provisioned.load_balanced[LOAD_BALANCED].instance_ids
    assert verifying.verification.interval_s == 1  # the pipeline's verify.interval_s

    run_checks(world, 2)

    release = world.release(release_id)
    assert release.state is ReleaseState.SUCCEEDED
    assert (
        release.reason
        == f"verified: {INSTANCES} instance(s) healthy in every target group for 2 checks in a row"
    )
    assert world.store.get_slot("shop-prod").last_good == release_id
    story = [(e.type, e.state, e.detail.get("task")) for e in world.history(release_id)]
    assert story == [
        (EventType.EXECUTION_STARTED, ReleaseState.RECEIVED, None),
        (EventType.STATE_ENTERED, ReleaseState.DEPLOYING, None),
        (EventType.TASK_STARTED, ReleaseState.DEPLOYING, "CreateDeployment"),
        (EventType.STATE_ENTERED, ReleaseState.VERIFYING, None),
        (EventType.TASK_SUCCEEDED, ReleaseState.VERIFYING, "HealthCheck"),
        (EventType.TASK_SUCCEEDED, ReleaseState.VERIFYING, "HealthCheck"),
        (EventType.EXECUTION_SUCCEEDED, ReleaseState.SUCCEEDED, None),
    ]


def test_a_target_turning_unhealthy_mid_streak_restarts_it(world: World) -> None:
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    succeed(world, deployment_id)
    arn = world.provisioned.load_balanced[LOAD_BALANCED].target_group_arn
    sick = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0]

    run_checks(world, 1)
    # moto_extensions: moto itself never reports a target unhealthy.
    moto_extensions.set_target_health(
        arn, sick, "unhealthy", "Target.ResponseCodeMismatch", "Health checks failed with these codes: [500]"
    )
    try:
        run_checks(world, 1)
        assert world.release(release_id).state is ReleaseState.VERIFYING
    finally:
        moto_extensions.clear_target_health()
    run_checks(world, 2)

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    checks = health_checks(world, release_id)
    assert [c["streak"] for c in checks] == [1, 0, 1, 2]
    assert checks[1]["not_healthy"] == [
        {
            "target_group": arn,
            "target": sick,
            "state": "unhealthy",
            "reason": "Target.ResponseCodeMismatch",
            "description": "Health checks failed with these codes: [500]",
        }
    ]


def test_deadline_fails_verification_and_rolls_back_to_the_last_verified_release(world: World) -> None:
    good = verified(world, "1.0.0")
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    succeed(world, deployment_id)
    clock = ManualClock()
    clock.current = world.release(release_id).updated_at
    context = direct_wiring(world, clock)
    arn = world.provisioned.load_balanced[LOAD_BALANCED].target_group_arn
    sick = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[1]
    # moto_extensions: an instance stuck in "initial" (never passes its health checks).
    moto_extensions.set_target_health(arn, sick, "initial", "Elb.InitialHealthChecking")
    try:
        for check in (1, 2):
            world.verify_messages()
            run_check(context, VerifyRequest(release_id, deployment_id, check))
        clock.advance(timedelta(seconds=61))  # past the pipeline's verify.deadline_s
        world.verify_messages()
        run_check(context, VerifyRequest(release_id, deployment_id, 3))
    finally:
        moto_extensions.clear_target_health()

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.startswith(
        f"verify_failed: not healthy by the deadline: {sick} initial (Elb.InitialHealthChecking)"
    )
    rollback = world.release(rollback_release_id(release_id))
    assert rollback.trigger is Trigger.AUTO_ROLLBACK
    assert rollback.rollback_of == release_id
    assert rollback.revision == world.release(good).revision
    assert rollback.state is ReleaseState.DEPLOYING
    assert world.store.get_slot("shop-prod").active == rollback.id
    [deployment] = [
        d for d in world.deployments("shop", "shop-prod") if d["deploymentId"] == rollback.deployment_id
    ]
    assert deployment["revision"]["s3Location"]["key"] == "shop/prod/shop-1.0.0.zip"
    assert deployment["revision"]["s3Location"]["version"] == world.release(good).revision.version


def test_bake_time_checks_once_more_after_the_streak(world: World) -> None:
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    clock = ManualClock()
    base = direct_wiring(world, clock)
    [shop] = [p for p in base.pipelines.pipelines if p.name == LOAD_BALANCED]
    baking = replace(shop, verify=VerifySettings(healthy_checks=2, interval_s=1, deadline_s=600, bake_s=30))
    context = replace(
        base, pipelines=PipelinesConfig(tuple(baking if p is shop else p for p in base.pipelines.pipelines))
    )
    moto_extensions.complete(deployment_id, "Succeeded")
    apply_deployment_state(context, release_id, deployment_id, DeploymentState.SUCCESS)
    for check in (1, 2):
        run_check(context, VerifyRequest(release_id, deployment_id, check))
    assert world.release(release_id).state is ReleaseState.VERIFYING  # baking
    run_check(context, VerifyRequest(release_id, deployment_id, 3))

    release = world.release(release_id)
    assert release.state is ReleaseState.SUCCEEDED
    assert "and again after 30s of baking" in release.reason
    assert [c["outcome"] for c in health_checks(world, release_id)] == ["continue", "bake", "verified"]


def test_no_load_balancer_succeeds_with_the_reason(world: World) -> None:
    upload = world.upload("api/prod/app-1.zip")
    release_id = world.deliver_upload(upload.eventbridge)["releases"][0]["id"]
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Succeeded")
    world.codedeploy_event(deployment_id, "SUCCESS")

    release = world.release(release_id)
    assert release.state is ReleaseState.SUCCEEDED
    assert "no load balancer" in release.reason
    assert world.verify_messages(wait_s=0) == []


def test_failure_records_diagnostics_and_the_rollback_succeeds(world: World) -> None:
    good = verified(world, "1.0.0")
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    broken = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0]

    fail(world, deployment_id, broken)

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert f"ValidateService failed on {broken}" in failed.reason
    assert f"rolling back to {good}" in failed.reason
    diagnostics = next(e for e in world.history(release_id) if e.detail.get("task") == "CodeDeploy")
    [instance] = diagnostics.detail["failed_instances"]
    assert instance["lifecycle_event"] == "ValidateService"
    assert instance["script"] == "scripts/validate_service.sh"
    assert instance["error_code"] == "ScriptFailed"
    assert instance["log_tail"].endswith("health check failed: HTTP 500")
    assert len(instance["log_tail"]) == 2048  # trimmed

    rollback_id = rollback_release_id(release_id)
    rollback_deployment = world.release(rollback_id).deployment_id
    assert rollback_deployment is not None
    instances = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids
    moto_extensions.set_instance_targets(rollback_deployment, {i: {"status": "Succeeded"} for i in instances})
    succeed(world, rollback_deployment)
    run_checks(world, 2)

    assert world.release(rollback_id).state is ReleaseState.SUCCEEDED
    assert world.store.get_slot("shop-prod").last_good == rollback_id


def test_a_failing_rollback_does_not_roll_back_again(world: World) -> None:
    verified(world, "1.0.0")
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    instance = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0]
    fail(world, deployment_id, instance)
    rollback_id = rollback_release_id(release_id)
    rollback_deployment = world.release(rollback_id).deployment_id
    assert rollback_deployment is not None

    fail(world, rollback_deployment, instance)

    rollback = world.release(rollback_id)
    assert rollback.state is ReleaseState.FAILED
    assert rollback.reason.endswith("this was a rollback, so no further rollback")
    assert world.store.get_release(rollback_release_id(rollback_id)) is None
    assert moto_extensions.active_deployments("shop", "shop-prod") == []
    assert world.store.get_slot("shop-prod").active is None


def test_failure_with_nothing_verified_says_so(world: World) -> None:
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    fail(world, deployment_id, world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0])

    failed = world.release(release_id)
    assert failed.state is ReleaseState.FAILED
    assert failed.reason.endswith("nothing to roll back to: no release of this pipeline was verified yet")


def test_codedeploy_own_rollback_is_followed_not_doubled(world: World) -> None:
    verified(world, "1.0.0")
    release_id, deployment_id = upload_and_deploy(world, "2.0.0")
    # The deployment group rolls back by itself on failure (moto keeps it on the deployment).
    moto_extensions.backend().deployments[deployment_id].auto_rollback_configuration = {
        "enabled": True,
        "events": ["DEPLOYMENT_FAILURE"],
    }
    fail(world, deployment_id, world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0])

    failed = world.release(release_id)
    assert "CodeDeploy's own automatic rollback" in failed.reason
    assert world.store.get_release(rollback_release_id(release_id)) is None

    # CodeDeploy starts its rollback deployment; the coordinator links it to the failed release.
    codedeploy = world.session.client("codedeploy")
    rollback_deployment = codedeploy.create_deployment(
        applicationName="shop",
        deploymentGroupName="shop-prod",
        revision=world.deployments("shop", "shop-prod")[0]["revision"],
    )["deploymentId"]
    moto_extensions.mark_codedeploy_rollback(rollback_deployment, triggered_by=deployment_id)
    world.codedeploy_event(rollback_deployment, "START", "shop", "shop-prod")

    followed = world.release(f"ext-{rollback_deployment}")
    assert followed.trigger is Trigger.AUTO_ROLLBACK
    assert followed.rollback_of == release_id


def test_reconcile_resends_a_lost_check(world: World) -> None:
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    succeed(world, deployment_id)
    world.verify_messages()  # the first check's message is lost
    clock = ManualClock()
    clock.current = world.release(release_id).updated_at
    context = direct_wiring(world, clock)

    assert reconcile(context) == {}  # not overdue yet
    clock.advance(timedelta(seconds=2 * 1 + 61))
    assert reconcile(context) == {"shop-prod": {"resent_checks": [release_id]}}

    [message] = world.verify_messages()
    assert message == {
        "release_id": release_id,
        "deployment_id": deployment_id,
        "check": 1,
        "pipeline": LOAD_BALANCED,
    }


def test_duplicate_and_malformed_verify_messages_are_dropped(world: World) -> None:
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    succeed(world, deployment_id)
    [first] = world.verify_messages()

    result = world.deliver_verify([first, first, {"release_id": 7}, {"hello": "world"}])

    assert result == {"batchItemFailures": []}
    assert len(health_checks(world, release_id)) == 1


def test_a_check_sent_before_messages_named_the_pipeline_still_runs(world: World) -> None:
    """A message already on the queue when the coordinator is upgraded names no pipeline: its
    check reads the release alone, and the next message names the pipeline again."""
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    succeed(world, deployment_id)
    [first] = world.verify_messages()
    del first["pipeline"]

    world.deliver_verify([first])

    assert [check["outcome"] for check in health_checks(world, release_id)] == ["continue"]
    [second] = world.verify_messages()
    assert (second["check"], second["pipeline"]) == (2, LOAD_BALANCED)
    world.deliver_verify([second])
    assert world.release(release_id).state is ReleaseState.SUCCEEDED


def test_a_check_that_fails_on_aws_is_retried_alone(world: World) -> None:
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    succeed(world, deployment_id)
    [message] = world.verify_messages()
    context = bootstrap.wiring()
    dynamodb = context.store._client  # type: ignore[attr-defined]
    # A second, malformed record is dropped (handled); only the failing check is reported back.
    event = world.client.events.generate_sqs_event(message_bodies=[json.dumps(message), "{not json"])

    # moto cannot throttle: botocore's Stubber answers the release read with DynamoDB's error.
    with Stubber(dynamodb) as stub:
        stub.add_client_error(
            "batch_get_item", "ProvisionedThroughputExceededException", "Rate exceeded", 400
        )
        result = world.invoke("on_verify_message", event)

    assert len(result["batchItemFailures"]) == 1
    assert health_checks(world, release_id) == []

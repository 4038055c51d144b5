"""Regression tests for sandbox/moto_extensions.py: moto behaves as AWS does where we rely on it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from sandbox import moto_extensions
from tests.integration.conftest import BUCKET, World

REVISION = {
    "revisionType": "S3",
    "s3Location": {"bucket": "acme-artifacts", "key": "a.zip", "bundleType": "zip"},
}


def test_one_active_deployment_per_group_as_aws_enforces(world: World) -> None:
    codedeploy = world.session.client("codedeploy")
    first = codedeploy.create_deployment(
        applicationName="api", deploymentGroupName="api-prod", revision=REVISION
    )

    with pytest.raises(ClientError) as refused:
        codedeploy.create_deployment(applicationName="api", deploymentGroupName="api-prod", revision=REVISION)

    error = refused.value.response["Error"]
    assert error["Code"] == "DeploymentLimitExceededException"
    assert (
        error["Message"]
        == f"The Deployment Group 'api-prod' already has an active Deployment '{first['deploymentId']}'"
    )
    # Another group is unaffected, and the group frees up when its deployment ends.
    codedeploy.create_deployment(applicationName="web", deploymentGroupName="web-prod", revision=REVISION)
    moto_extensions.complete(first["deploymentId"], "Succeeded")
    codedeploy.create_deployment(applicationName="api", deploymentGroupName="api-prod", revision=REVISION)


def test_completed_deployment_reports_status_times_and_error(world: World) -> None:
    codedeploy = world.session.client("codedeploy")
    deployment_id = codedeploy.create_deployment(
        applicationName="api", deploymentGroupName="api-prod", revision=REVISION
    )["deploymentId"]

    moto_extensions.complete(
        deployment_id, "Failed", error_code="HOOK_EXECUTION_FAILURE", error_message="boom"
    )

    info = codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
    assert info["status"] == "Failed"
    assert info["errorInformation"] == {"code": "HOOK_EXECUTION_FAILURE", "message": "boom"}
    assert info["completeTime"] >= info["startTime"]


def test_completing_with_a_non_terminal_status_is_refused(world: World) -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        moto_extensions.complete("any", "InProgress")


@pytest.mark.timeout(60)
def test_concurrent_conditional_writes_on_the_server_have_one_winner(served_world: World) -> None:
    dynamodb = served_world.session.client("dynamodb")

    def claim(contender: int) -> bool:
        try:
            dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": served_world.provisioned.table,
                            "Item": {"pk": {"S": "RACE"}, "sk": {"S": "X"}, "owner": {"N": str(contender)}},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                ]
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            return False
        return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        winners = sum(pool.map(claim, range(32)))

    assert winners == 1


def test_deployment_targets_answer_what_the_sandbox_recorded(world: World) -> None:
    codedeploy = world.session.client("codedeploy")
    deployment_id = codedeploy.create_deployment(
        applicationName="api", deploymentGroupName="api-prod", revision=REVISION
    )["deploymentId"]
    failed_hook = {
        "lifecycleEventName": "ValidateService",
        "status": "Failed",
        "diagnostics": {"errorCode": "ScriptFailed", "scriptName": "scripts/validate.sh", "logTail": "boom"},
    }
    moto_extensions.set_instance_targets(
        deployment_id,
        {"i-1": {"status": "Succeeded"}, "i-2": {"status": "Failed", "lifecycleEvents": [failed_hook]}},
    )

    target_ids = codedeploy.list_deployment_targets(deploymentId=deployment_id)["targetIds"]
    targets = codedeploy.batch_get_deployment_targets(deploymentId=deployment_id, targetIds=target_ids)

    assert target_ids == ["i-1", "i-2"]
    by_id = {t["instanceTarget"]["targetId"]: t["instanceTarget"] for t in targets["deploymentTargets"]}
    assert by_id["i-1"]["status"] == "Succeeded"
    assert by_id["i-2"]["lifecycleEvents"][0]["diagnostics"]["errorCode"] == "ScriptFailed"


def test_deployment_targets_filter_by_status_as_the_model_documents(world: World) -> None:
    """ListDeploymentTargets' ``targetFilters``: the keys botocore's model names, matched against
    each target; a key the model does not name is the modeled InvalidTargetFilterNameException."""
    codedeploy = world.session.client("codedeploy")
    model = codedeploy.meta.service_model
    operation = model.operation_model("ListDeploymentTargets")
    filter_names = operation.input_shape.members["targetFilters"].key.enum
    assert set(filter_names) == set(moto_extensions._TARGET_FILTER_FIELDS)
    assert "InvalidTargetFilterNameException" in {error.name for error in operation.error_shapes}
    deployment_id = codedeploy.create_deployment(
        applicationName="api", deploymentGroupName="api-prod", revision=REVISION
    )["deploymentId"]
    moto_extensions.set_instance_targets(
        deployment_id,
        {"i-1": {"status": "Succeeded"}, "i-2": {"status": "Failed"}, "i-3": {"status": "Succeeded"}},
    )

    def listed(filters: dict[str, list[str]]) -> list[str]:
        answer = codedeploy.list_deployment_targets(deploymentId=deployment_id, targetFilters=filters)
        return list(answer["targetIds"])

    assert listed({"TargetStatus": ["Succeeded"]}) == ["i-1", "i-3"]
    assert listed({"TargetStatus": ["Failed", "Pending"]}) == ["i-2"]
    assert listed({}) == ["i-1", "i-2", "i-3"]
    # In-place targets carry no blue/green label.
    assert listed({"ServerInstanceLabel": ["Blue"]}) == []
    with pytest.raises(ClientError) as refused:
        listed({"Color": ["Blue"]})
    assert refused.value.response["Error"]["Code"] == "InvalidTargetFilterNameException"


def test_target_health_can_be_unhealthy_or_initial(world: World) -> None:
    ec2 = world.session.client("ec2")
    elbv2 = world.session.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    [instance] = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"]
    group = elbv2.create_target_group(Name="api", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance")
    arn = group["TargetGroups"][0]["TargetGroupArn"]
    target = {"Id": instance["InstanceId"], "Port": 80}
    elbv2.register_targets(TargetGroupArn=arn, Targets=[target])

    def state() -> dict[str, str]:
        [description] = elbv2.describe_target_health(TargetGroupArn=arn, Targets=[target])[
            "TargetHealthDescriptions"
        ]
        return dict(description["TargetHealth"])

    assert state()["State"] == "healthy"
    moto_extensions.set_target_health(arn, target["Id"], "unhealthy", "Target.ResponseCodeMismatch", "503")
    try:
        assert state() == {
            "State": "unhealthy",
            "Reason": "Target.ResponseCodeMismatch",
            "Description": "503",
        }
        moto_extensions.set_target_health(arn, target["Id"], "initial", "Elb.InitialHealthChecking")
        assert state()["State"] == "initial"
    finally:
        moto_extensions.clear_target_health()
    assert state()["State"] == "healthy"


def test_stop_deployment_is_a_request_the_runner_honours(world: World) -> None:
    codedeploy = world.session.client("codedeploy")
    deployment_id = codedeploy.create_deployment(
        applicationName="api", deploymentGroupName="api-prod", revision=REVISION
    )["deploymentId"]
    assert moto_extensions.claim(deployment_id)
    assert not moto_extensions.claim(deployment_id)  # one runner only
    assert not moto_extensions.stop_requested(deployment_id)

    answer = codedeploy.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=False)

    assert answer["status"] == "Pending"
    assert answer["statusMessage"] == moto_extensions.STOP_PENDING_MESSAGE
    assert moto_extensions.stop_requested(deployment_id)
    info = codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
    assert info["status"] == "InProgress"  # the runner ends it, not the request
    moto_extensions.complete(deployment_id, "Stopped", error_code="MANUAL_STOP", error_message="stopped")
    with pytest.raises(ClientError) as refused:
        codedeploy.stop_deployment(deploymentId=deployment_id)
    assert refused.value.response["Error"]["Code"] == "DeploymentAlreadyCompletedException"
    with pytest.raises(ClientError) as unknown:
        codedeploy.stop_deployment(deploymentId="no-such-deployment")
    assert unknown.value.response["Error"]["Code"] == "DeploymentDoesNotExistException"


def test_deployment_overview_reports_the_recorded_counts(world: World) -> None:
    codedeploy = world.session.client("codedeploy")
    deployment_id = codedeploy.create_deployment(
        applicationName="api", deploymentGroupName="api-prod", revision=REVISION
    )["deploymentId"]

    moto_extensions.set_deployment_overview(deployment_id, {"Succeeded": 1, "InProgress": 1})

    overview = codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]["deploymentOverview"]
    assert overview == {"Pending": 0, "InProgress": 1, "Succeeded": 1, "Failed": 0, "Skipped": 0, "Ready": 0}


def test_events_delivered_to_sqs_keep_the_account(world: World) -> None:
    """Chalice's CloudWatchEvent needs ``account``; AWS always sends it."""
    events = world.session.client("events")
    # What the template's S3 rule matches: the artifact bucket, a bundle under a pipeline's prefix.
    detail = {"bucket": {"name": BUCKET}, "object": {"key": "api/prod/app-1.zip"}}
    events.put_events(
        Entries=[{"Source": "aws.s3", "DetailType": "Object Created", "Detail": json.dumps(detail)}]
    )

    [delivered] = world._drain(world.provisioned.eventbridge_queue_url)

    assert delivered["account"] == "123456789012"
    assert delivered["detail"] == detail


def test_codedeploy_rollback_deployments_report_their_trigger(world: World) -> None:
    codedeploy = world.session.client("codedeploy")
    failed = codedeploy.create_deployment(
        applicationName="api", deploymentGroupName="api-prod", revision=REVISION
    )
    moto_extensions.complete(failed["deploymentId"], "Failed")
    rollback = codedeploy.create_deployment(
        applicationName="api", deploymentGroupName="api-prod", revision=REVISION
    )

    moto_extensions.mark_codedeploy_rollback(rollback["deploymentId"], triggered_by=failed["deploymentId"])

    info = codedeploy.get_deployment(deploymentId=rollback["deploymentId"])["deploymentInfo"]
    assert info["creator"] == "codeDeployRollback"
    assert info["rollbackInfo"]["rollbackTriggeringDeploymentId"] == failed["deploymentId"]
    original = codedeploy.get_deployment(deploymentId=failed["deploymentId"])["deploymentInfo"]
    assert original["rollbackInfo"] == {"rollbackDeploymentId": rollback["deploymentId"]}


def test_get_metric_data_answers_percentiles_over_the_raw_values(world: World) -> None:
    """CloudWatch's pNN: the value at or below which NN percent of the period's raw values lie.
    moto alone answers None for any percentile."""
    cloudwatch = world.session.client("cloudwatch")
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    dimensions = [{"Name": "LoadBalancer", "Value": "app/shop/0123456789abcdef"}]
    cloudwatch.put_metric_data(
        Namespace="AWS/ApplicationELB",
        MetricData=[
            {
                "MetricName": "TargetResponseTime",
                "Dimensions": dimensions,
                "Timestamp": minute + timedelta(seconds=10),
                "Values": [0.001 * n for n in range(1, 11)],
                "Counts": [1.0] * 9 + [10.0],
            }
        ],
    )

    def stat(name: str) -> list[float]:
        answer = cloudwatch.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "latency",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/ApplicationELB",
                            "MetricName": "TargetResponseTime",
                            "Dimensions": dimensions,
                        },
                        "Period": 60,
                        "Stat": name,
                    },
                }
            ],
            StartTime=minute,
            EndTime=minute + timedelta(seconds=60),
        )
        return [round(value, 6) for value in answer["MetricDataResults"][0]["Values"]]

    # 19 values: 0.001 .. 0.009 once each, 0.010 ten times.
    assert stat("p90") == [0.01]
    assert stat("p40") == [0.008]
    assert stat("p10") == [0.002]
    assert stat("Maximum") == [0.01]

"""Creates what the coordinator needs in an AWS-compatible endpoint (moto here): the artifact
bucket with EventBridge and queue notifications, the releases table, the CodeDeploy
application and deployment group. Tests and the sandbox share it.

The queues (visibility, delay, FIFO, redrive), the table (keys, indexes, stream, TTL, point-in-time
recovery) and the S3 "Object Created" rules come from infra/stack.py, the definitions the
deployed template is rendered from, so the sandbox exercises what ships. Two differences stay,
because moto cannot do otherwise: the rules target a queue (``artifact-events``) that the event
pump delivers to ``on_artifact_event``, as EventBridge would invoke it; and the names carry no
stage (``release-coordinator-verify``, as app.py names its queues)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.pipelines import PipelinesConfig
from infra import stack
from infra.functions import APP_NAME, batch_sizes
from infra.sizing import Sizing, function_sizing

SERVICE_ROLE = "arn:aws:iam::123456789012:role/CodeDeployServiceRole"


@dataclass(frozen=True)
class LoadBalancedGroup:
    target_group_arn: str
    instance_ids: tuple[str, ...]


@dataclass(frozen=True)
class Provisioned:
    table: str
    verify_queue_url: str
    # pipeline name -> its ALB target group and the EC2 instances registered in it
    load_balanced: dict[str, LoadBalancedGroup]
    # Queues that receive the bucket's events: EventBridge "Object Created" (via a rule) and the
    # classic S3 notification, so both shapes come from the emulator itself.
    eventbridge_queue_url: str
    classic_queue_url: str
    # The FIFO notify queue (the outbox's delivery side) and its dead-letter queue.
    notify_queue_url: str
    notify_dlq_url: str
    # Every queue of infra/stack.py by its logical id, and the S3 rules' names.
    queue_urls: dict[str, str] = field(default_factory=dict)
    artifact_rules: tuple[str, ...] = ()


def provision(
    session: Any,
    pipelines: PipelinesConfig,
    *,
    table: str,
    load_balanced: Mapping[str, int] | None = None,
    health_check_interval_s: int = 5,
) -> Provisioned:
    """``load_balanced`` maps pipeline names to instance counts: those deployment groups get EC2
    instances in an ALB target group (named after the pipeline), with traffic control."""
    s3 = session.client("s3")
    sqs = session.client("sqs")
    events = session.client("events")
    codedeploy = session.client("codedeploy")
    dynamodb = session.client("dynamodb")

    _table(dynamodb, table)
    queues = _queues(sqs, _function_sizes())
    _verify_email_senders(session, pipelines)
    balanced = {
        name: _target_group(session, name, count, health_check_interval_s)
        for name, count in (load_balanced or {}).items()
    }
    eventbridge_queue = sqs.create_queue(QueueName="artifact-events")["QueueUrl"]
    classic_queue = sqs.create_queue(QueueName="artifact-notifications")["QueueUrl"]

    for bucket in sorted({pipeline.bucket for pipeline in pipelines.pipelines}):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": _queue_arn(sqs, classic_queue), "Events": ["s3:ObjectCreated:*"]}
                ],
                "EventBridgeConfiguration": {},
            },
        )
    rules = stack.artifact_rules(APP_NAME, stack.pipeline_buckets(pipelines))
    for rule in rules:
        events.put_rule(Name=rule.name, EventPattern=json.dumps(rule.pattern), Description=rule.description)
        events.put_targets(
            Rule=rule.name, Targets=[{"Id": "queue", "Arn": _queue_arn(sqs, eventbridge_queue)}]
        )

    for application in sorted({pipeline.application for pipeline in pipelines.pipelines}):
        codedeploy.create_application(applicationName=application, computePlatform="Server")
    for pipeline in pipelines.pipelines:
        extra: dict[str, Any] = {}
        if pipeline.name in balanced:
            extra["loadBalancerInfo"] = {"targetGroupInfoList": [{"name": pipeline.name}]}
            extra["ec2TagFilters"] = [{"Key": "pipeline", "Value": pipeline.name, "Type": "KEY_AND_VALUE"}]
        codedeploy.create_deployment_group(
            applicationName=pipeline.application,
            deploymentGroupName=pipeline.deployment_group,
            deploymentConfigName=pipeline.deployment_config,
            serviceRoleArn=SERVICE_ROLE,
            deploymentStyle={"deploymentType": "IN_PLACE", "deploymentOption": "WITH_TRAFFIC_CONTROL"},
            **extra,
        )
    return Provisioned(
        table=table,
        verify_queue_url=queues[stack.VERIFY_QUEUE],
        load_balanced=balanced,
        eventbridge_queue_url=eventbridge_queue,
        classic_queue_url=classic_queue,
        notify_queue_url=queues[stack.NOTIFY_QUEUE],
        notify_dlq_url=queues[stack.NOTIFY_DLQ],
        queue_urls=queues,
        artifact_rules=tuple(rule.name for rule in rules),
    )


def _function_sizes() -> dict[str, Sizing]:
    from app import app

    return function_sizing(batch_sizes(app))


def _queue_arn(sqs: Any, queue_url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def _table(dynamodb: Any, table: str) -> None:
    dynamodb.create_table(**stack.table_definition(table))
    dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"AttributeName": stack.TTL_ATTRIBUTE, "Enabled": True}
    )
    dynamodb.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )


def _queues(sqs: Any, sizes: Mapping[str, Sizing]) -> dict[str, str]:
    """Every queue of the stack, dead-letter queues first (QUEUES lists them before their sources)."""
    urls: dict[str, str] = {}
    for spec in stack.QUEUES:
        settings = stack.queue_settings(spec, sizes)
        dead_letter_arn = _queue_arn(sqs, urls[spec.dead_letters]) if spec.dead_letters else None
        urls[spec.logical_id] = str(
            sqs.create_queue(
                QueueName=stack.queue_name(APP_NAME, spec),
                Attributes=stack.queue_attributes(settings, dead_letter_arn),
            )["QueueUrl"]
        )
    return urls


def _verify_email_senders(session: Any, pipelines: PipelinesConfig) -> None:
    """SES sends only from verified identities: verify every sender an email route names."""
    from chalicelib.domain.notify_routes import EmailSettings

    senders = sorted(
        {
            route.channel.sender
            for pipeline in pipelines.pipelines
            for route in pipeline.notify
            if isinstance(route.channel, EmailSettings)
        }
    )
    if not senders:
        return
    ses = session.client("ses")
    for sender in senders:
        ses.verify_email_identity(EmailAddress=sender)


def _target_group(session: Any, name: str, instances: int, interval_s: int) -> LoadBalancedGroup:
    ec2 = session.client("ec2")
    elbv2 = session.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    reservation = ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=instances,
        MaxCount=instances,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "pipeline", "Value": name}]}],
    )
    instance_ids = tuple(sorted(instance["InstanceId"] for instance in reservation["Instances"]))
    group = elbv2.create_target_group(
        Name=name,
        Protocol="HTTP",
        Port=80,
        VpcId=vpc,
        TargetType="instance",
        HealthCheckPath="/health",
        HealthCheckIntervalSeconds=interval_s,
        HealthyThresholdCount=2,
        UnhealthyThresholdCount=2,
    )["TargetGroups"][0]
    arn = group["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id} for instance_id in instance_ids])
    return LoadBalancedGroup(target_group_arn=arn, instance_ids=instance_ids)

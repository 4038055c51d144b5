"""Creates what the coordinator needs in an AWS-compatible endpoint (moto here): the artifact
bucket with EventBridge and queue notifications, the releases table, the CodeDeploy
application and deployment group. Tests and the sandbox share it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.adapters.dynamodb_store import table_definition
from chalicelib.domain.pipelines import PipelinesConfig

SERVICE_ROLE = "arn:aws:iam::123456789012:role/CodeDeployServiceRole"


@dataclass(frozen=True)
class Provisioned:
    table: str
    # Queues that receive the bucket's events: EventBridge "Object Created" (via a rule) and the
    # classic S3 notification, so both shapes come from the emulator itself.
    eventbridge_queue_url: str
    classic_queue_url: str


def provision(session: Any, pipelines: PipelinesConfig, *, table: str) -> Provisioned:
    s3 = session.client("s3")
    sqs = session.client("sqs")
    events = session.client("events")
    codedeploy = session.client("codedeploy")
    dynamodb = session.client("dynamodb")

    dynamodb.create_table(**table_definition(table))
    eventbridge_queue = sqs.create_queue(QueueName="artifact-events")["QueueUrl"]
    classic_queue = sqs.create_queue(QueueName="artifact-notifications")["QueueUrl"]

    def arn(queue_url: str) -> str:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    for bucket in sorted({pipeline.bucket for pipeline in pipelines.pipelines}):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": arn(classic_queue), "Events": ["s3:ObjectCreated:*"]}],
                "EventBridgeConfiguration": {},
            },
        )
    events.put_rule(
        Name="artifact-object-created",
        EventPattern=json.dumps({"source": ["aws.s3"], "detail-type": ["Object Created"]}),
    )
    events.put_targets(
        Rule="artifact-object-created", Targets=[{"Id": "queue", "Arn": arn(eventbridge_queue)}]
    )

    for application in sorted({pipeline.application for pipeline in pipelines.pipelines}):
        codedeploy.create_application(applicationName=application, computePlatform="Server")
    for pipeline in pipelines.pipelines:
        codedeploy.create_deployment_group(
            applicationName=pipeline.application,
            deploymentGroupName=pipeline.deployment_group,
            deploymentConfigName=pipeline.deployment_config,
            serviceRoleArn=SERVICE_ROLE,
            deploymentStyle={"deploymentType": "IN_PLACE", "deploymentOption": "WITH_TRAFFIC_CONTROL"},
        )
    return Provisioned(table=table, eventbridge_queue_url=eventbridge_queue, classic_queue_url=classic_queue)

"""The merge template for ``chalice package --stage STAGE --merge-template FILE``.

Chalice generates the functions, their event sources, the CodeDeploy rule (``on_cw_event``), the
schedule and the API. This adds what Chalice cannot express and deep-merges it in (dicts merge,
lists and scalars replace):

- the releases table (its shape comes from ``table_definition()``), the verify and notify queues
  with their dead-letter queues, the stream's and the asynchronous invocations' failure queues;
- the EventBridge rules for S3 "Object Created", one per pipeline (bucket and prefix), targeting
  ``on_artifact_event`` (``on_s3_event`` cannot be packaged);
- on every function: its own role, its environment, and for the queue and stream sources
  ``ReportBatchItemFailures``, the real queue and stream, bisect-on-error and an on-failure queue;
- alarms on dead-letter depth, function errors and stream age.

Roles are defined here, one per function, not by Chalice: what a function may touch depends on
the pipelines file (buckets, prefixes, CodeDeploy groups, secrets), which a static policy file
cannot name. ``.chalice/config.json`` sets ``manage_iam_role: false`` so Chalice makes no role of
its own, and every function's ``Role`` is replaced with its role here. A function without an
entry in ``FUNCTION_GRANTS`` fails the render: a new handler cannot ship with no policy.

    python -m infra.render --stage dev --output build/infra/merge-dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "release-coordinator"
DEFAULT_PIPELINES_FILE = "chalicelib/pipelines.toml"

# Stages whose data must survive a mistaken stack deletion or replacement.
PROTECTED_STAGES = frozenset({"prod"})
LOG_RETENTION_DAYS = {"prod": 90}
DEFAULT_LOG_RETENTION_DAYS = 14

# Lambda polls a queue only if its visibility timeout is at least the function timeout (60 s by
# Chalice's default); AWS recommends six times it, so a throttled batch is not redelivered early.
QUEUE_VISIBILITY_S = 360
VERIFY_MAX_RECEIVES = 5
# As in the sandbox (sandbox/provision.py): transient failures that never pass move to the DLQ.
NOTIFY_MAX_RECEIVES = 8
DLQ_RETENTION_S = 14 * 24 * 3600
STREAM_MAX_RETRIES = 10
STREAM_MAX_RECORD_AGE_S = 24 * 3600
ALARM_PERIOD_S = 300
# A stream record this old means notifications are stuck behind a failing batch.
STREAM_AGE_ALARM_MS = 15 * 60 * 1000

TABLE = "ReleasesTable"
VERIFY_QUEUE = "VerifyQueue"
VERIFY_DLQ = "VerifyDeadLetterQueue"
NOTIFY_QUEUE = "NotifyQueue"
NOTIFY_DLQ = "NotifyDeadLetterQueue"
STREAM_FAILURES = "StreamFailureQueue"
EVENT_FAILURES = "EventFailureQueue"
DEAD_LETTER_QUEUES = (VERIFY_DLQ, NOTIFY_DLQ, STREAM_FAILURES, EVENT_FAILURES)
# Chalice's SQS handlers and the queue each consumes.
SQS_SOURCES = {"on_verify_message": VERIFY_QUEUE, "on_notify_message": NOTIFY_QUEUE}


class RenderError(RuntimeError):
    """The app or the pipelines file cannot be rendered; the message says what to fix."""


# --- the functions Chalice will package ---------------------------------------------------------


@dataclass(frozen=True)
class Function:
    name: str  # the Chalice function name: on_verify_message, api_handler, ...
    logical_id: str  # the AWS::Serverless::Function chalice package generates
    trigger: str  # api | eventbridge | schedule | sqs | dynamodb | invoke

    @property
    def invoked_asynchronously(self) -> bool:
        # EventBridge rules and schedules invoke asynchronously: Lambda retries twice, then drops
        # the event unless the function has a dead-letter queue.
        return self.trigger in ("eventbridge", "schedule", "invoke")


def app_functions(app: Any) -> list[Function]:
    """Every Lambda function of the Chalice app, with the logical id ``chalice package`` gives it."""
    from chalice.app import (
        CloudWatchEventConfig,
        DynamoDBEventConfig,
        ScheduledEventConfig,
        SQSEventConfig,
    )
    from chalice.utils import to_cfn_resource_name

    functions = [Function(f.name, to_cfn_resource_name(f.name), "invoke") for f in app.pure_lambda_functions]
    for source in app.event_sources:
        if isinstance(source, SQSEventConfig):
            trigger = "sqs"
        elif isinstance(source, DynamoDBEventConfig):
            trigger = "dynamodb"
        elif isinstance(source, ScheduledEventConfig):
            trigger = "schedule"
        elif isinstance(source, CloudWatchEventConfig):
            trigger = "eventbridge"
        else:
            raise RenderError(f"{source.name}: event source {type(source).__name__} is not supported here")
        functions.append(Function(source.name, to_cfn_resource_name(source.name), trigger))
    if app.routes:
        functions.append(Function("api_handler", "APIHandler", "api"))
    return functions


# --- what each function may do ------------------------------------------------------------------

Statement = dict[str, Any]


def _sub(template: str) -> dict[str, str]:
    return {"Fn::Sub": template}


def _literal(text: str) -> str:
    """A value from the pipelines file inside ``Fn::Sub``: ``${`` would start a substitution."""
    return text.replace("${", "${!")


def _arn(service: str, resource: str, *, regional: bool = True) -> dict[str, str]:
    where = "${AWS::Region}:${AWS::AccountId}" if regional else ":"
    return _sub(f"arn:${{AWS::Partition}}:{service}:{where}:{_literal(resource)}")


def _get_att(logical_id: str, attribute: str = "Arn") -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def _statement(sid: str, actions: Sequence[str], resources: Sequence[Any]) -> Statement:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": list(resources)}


@dataclass(frozen=True)
class Scope:
    """What the pipelines file names: everything a grant may be scoped to."""

    stage: str
    object_arns: tuple[dict[str, str], ...]
    deployment_groups: tuple[dict[str, str], ...]
    applications: tuple[dict[str, str], ...]
    deployment_configs: tuple[dict[str, str], ...]
    parameters: tuple[dict[str, str], ...]
    secrets: tuple[Any, ...]
    email_identities: tuple[dict[str, str], ...]
    topics: tuple[str, ...]


def function_name(stage: str, function: Function) -> str:
    """As ``chalice deploy`` names functions: predictable for operators, logs and alarms."""
    return f"{APP_NAME}-{stage}-{function.name}"


def log_group_name(stage: str, function: Function) -> str:
    return f"/aws/lambda/{function_name(stage, function)}"


def pipeline_scope(stage: str, pipelines: Any) -> Scope:
    from chalicelib.domain.notifications import secret_ref

    object_arns, groups, applications, configs = {}, {}, {}, {}
    parameters: dict[str, dict[str, str]] = {}
    secrets: dict[str, Any] = {}
    identities: dict[str, dict[str, str]] = {}
    topics: set[str] = set()
    for pipeline in pipelines.pipelines:
        # A key "api/prod/v1.zip" matches "api/prod/*"; an empty prefix matches the whole bucket.
        object_arns[(pipeline.bucket, pipeline.prefix)] = _arn(
            "s3", f"{pipeline.bucket}/{pipeline.prefix}*", regional=False
        )
        groups[(pipeline.application, pipeline.deployment_group)] = _arn(
            "codedeploy", f"deploymentgroup:{pipeline.application}/{pipeline.deployment_group}"
        )
        applications[pipeline.application] = _arn("codedeploy", f"application:{pipeline.application}")
        configs[pipeline.deployment_config] = _arn(
            "codedeploy", f"deploymentconfig:{pipeline.deployment_config}"
        )
        for route in pipeline.notify:
            for name in route.settings:
                for suffix in ("_parameter", "_secret"):
                    if not name.endswith(suffix):
                        continue
                    ref = secret_ref(route.settings, name.removesuffix(suffix))
                    if ref is None:
                        continue
                    if ref.source == "ssm":
                        # Names with a path start with "/", which the ARN does not repeat.
                        parameters[ref.name] = _arn("ssm", f"parameter/{ref.name.lstrip('/')}")
                    elif ref.name.startswith("arn:"):
                        secrets[ref.name] = ref.name
                    else:
                        # Secrets Manager appends six random characters to a secret's ARN.
                        secrets[ref.name] = _arn("secretsmanager", f"secret:{ref.name}-??????")
            if route.kind == "email":
                sender = str(route.settings["sender"])
                # SES authorizes against the identity that verified the sender: the address
                # itself, or its domain.
                identities[sender] = _arn("ses", f"identity/{sender}")
                domain = sender.rsplit("@", 1)[-1]
                identities[domain] = _arn("ses", f"identity/{domain}")
            if route.kind == "sns":
                topics.add(str(route.settings["topic_arn"]))
    return Scope(
        stage=stage,
        object_arns=tuple(object_arns[key] for key in sorted(object_arns)),
        deployment_groups=tuple(groups[key] for key in sorted(groups)),
        applications=tuple(applications[key] for key in sorted(applications)),
        deployment_configs=tuple(configs[key] for key in sorted(configs)),
        parameters=tuple(parameters[key] for key in sorted(parameters)),
        secrets=tuple(secrets[key] for key in sorted(secrets)),
        email_identities=tuple(identities[key] for key in sorted(identities)),
        topics=tuple(sorted(topics)),
    )


TABLE_ARN = _get_att(TABLE)
TABLE_INDEXES = _sub(f"${{{TABLE}.Arn}}/index/*")

# Resource "*" where AWS offers nothing narrower: (actions, AWS's reason). docs/deploy.md lists them.
UNSCOPED_ACTIONS: Mapping[str, str] = {
    "elasticloadbalancing:DescribeTargetGroups": (
        "Elastic Load Balancing's Describe* actions support no resource-level permissions "
        "(Service Authorization Reference: no resource type)"
    ),
    "elasticloadbalancing:DescribeTargetGroupAttributes": (
        "Elastic Load Balancing's Describe* actions support no resource-level permissions"
    ),
    "elasticloadbalancing:DescribeTargetHealth": (
        "Elastic Load Balancing's Describe* actions support no resource-level permissions"
    ),
    "codedeploy:ListDeploymentTargets": (
        "takes a deployment id, not a group; the Service Authorization Reference lists no resource type"
    ),
    "codedeploy:BatchGetDeploymentTargets": (
        "takes a deployment id, not a group; the Service Authorization Reference lists no resource type"
    ),
    "dynamodb:ListStreams": (
        "an account-level listing used by Lambda's stream poller; no resource type to scope it to"
    ),
}

Grant = Callable[[Function, Scope], list[Statement]]


def _logs(function: Function, scope: Scope) -> list[Statement]:
    # The log group is created by the template (with retention), so no logs:CreateLogGroup. Its
    # name is spelled out, not taken from the log group: that would be a dependency cycle.
    return [
        _statement(
            "WriteOwnLogs",
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [_arn("logs", f"log-group:{log_group_name(scope.stage, function)}:*")],
        )
    ]


def _table_read(_function: Function, _scope: Scope) -> list[Statement]:
    return [
        _statement(
            "ReadReleases",
            ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"],
            [TABLE_ARN, TABLE_INDEXES],
        )
    ]


def _table_write(_function: Function, _scope: Scope) -> list[Statement]:
    # TransactWriteItems is authorized per item as PutItem, UpdateItem, DeleteItem or
    # ConditionCheckItem: there is no action of its own.
    return [
        _statement(
            "WriteReleases",
            ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"],
            [TABLE_ARN],
        )
    ]


def _stream_read(_function: Function, _scope: Scope) -> list[Statement]:
    # What Lambda's event source mapping does with the function's role.
    return [
        _statement(
            "PollReleaseStream",
            ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
            [_get_att(TABLE, "StreamArn")],
        ),
        _statement("ListStreams", ["dynamodb:ListStreams"], ["*"]),
        _statement("SendFailedBatches", ["sqs:SendMessage"], [_get_att(STREAM_FAILURES)]),
    ]


def _verify_send(_function: Function, _scope: Scope) -> list[Statement]:
    return [_statement("ScheduleHealthChecks", ["sqs:SendMessage"], [_get_att(VERIFY_QUEUE)])]


def _verify_consume(_function: Function, _scope: Scope) -> list[Statement]:
    return [
        _statement(
            "ConsumeHealthChecks",
            ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            [_get_att(VERIFY_QUEUE)],
        )
    ]


def _notify_send(_function: Function, _scope: Scope) -> list[Statement]:
    # SendMessageBatch is authorized as sqs:SendMessage.
    return [_statement("QueueNotifications", ["sqs:SendMessage"], [_get_att(NOTIFY_QUEUE)])]


def _notify_consume(_function: Function, _scope: Scope) -> list[Statement]:
    return [
        _statement(
            "ConsumeNotifications",
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                # A failed delivery sets its own retry delay.
                "sqs:ChangeMessageVisibility",
            ],
            [_get_att(NOTIFY_QUEUE)],
        ),
        # Refusals that no retry can fix go straight to the dead-letter queue.
        _statement("DeadLetterRefusedNotifications", ["sqs:SendMessage"], [_get_att(NOTIFY_DLQ)]),
    ]


def _event_failures(_function: Function, _scope: Scope) -> list[Statement]:
    # Lambda sends an asynchronous event that failed every retry to the function's DLQ.
    return [_statement("DeadLetterFailedEvents", ["sqs:SendMessage"], [_get_att(EVENT_FAILURES)])]


def _artifacts(_function: Function, scope: Scope) -> list[Statement]:
    if not scope.object_arns:
        return []
    # HeadObject is authorized as s3:GetObject, or s3:GetObjectVersion with a VersionId.
    return [
        _statement("ReadUploadedBundles", ["s3:GetObject", "s3:GetObjectVersion"], list(scope.object_arns))
    ]


def _deploy_read(_function: Function, scope: Scope) -> list[Statement]:
    return [
        _statement(
            "ReadDeployments",
            ["codedeploy:GetDeployment", "codedeploy:ListDeployments", "codedeploy:BatchGetDeployments"],
            list(scope.deployment_groups),
        )
    ]


def _deploy_start(_function: Function, scope: Scope) -> list[Statement]:
    # CreateDeployment also checks the deployment config and registers the revision with the
    # application (CodeDeploy permissions reference).
    return [
        _statement("StartDeployments", ["codedeploy:CreateDeployment"], list(scope.deployment_groups)),
        _statement(
            "UseDeploymentConfigs", ["codedeploy:GetDeploymentConfig"], list(scope.deployment_configs)
        ),
        _statement(
            "RegisterRevisions",
            ["codedeploy:GetApplicationRevision", "codedeploy:RegisterApplicationRevision"],
            list(scope.applications),
        ),
    ]


def _deploy_stop(_function: Function, scope: Scope) -> list[Statement]:
    return [_statement("StopDeployments", ["codedeploy:StopDeployment"], list(scope.deployment_groups))]


def _deploy_targets(_function: Function, _scope: Scope) -> list[Statement]:
    return [
        _statement(
            "ReadDeploymentTargets",
            ["codedeploy:ListDeploymentTargets", "codedeploy:BatchGetDeploymentTargets"],
            ["*"],
        )
    ]


def _target_groups(_function: Function, _scope: Scope) -> list[Statement]:
    # Starting verification: the deployment's target groups and their health-check settings.
    return [
        _statement(
            "ReadTargetGroups",
            [
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetGroupAttributes",
            ],
            ["*"],
        )
    ]


def _target_health(_function: Function, _scope: Scope) -> list[Statement]:
    return [_statement("ReadTargetHealth", ["elasticloadbalancing:DescribeTargetHealth"], ["*"])]


def _channels(_function: Function, scope: Scope) -> list[Statement]:
    statements = []
    if scope.parameters:
        statements.append(_statement("ReadNamedParameters", ["ssm:GetParameter"], list(scope.parameters)))
    if scope.secrets:
        statements.append(
            _statement("ReadNamedSecrets", ["secretsmanager:GetSecretValue"], list(scope.secrets))
        )
    if scope.email_identities:
        statements.append(_statement("SendEmail", ["ses:SendEmail"], list(scope.email_identities)))
    if scope.topics:
        statements.append(_statement("PublishToTopics", ["sns:Publish"], list(scope.topics)))
    return statements


# Every function's grants, by what its code calls (checked by tests/integration/test_permissions.py
# against every AWS call the integration suite makes inside each handler). A release that ends
# frees its pipeline's slot and starts the next one (or an automatic rollback): every function
# that can end a release may start a deployment, and look for one it already started.
_RELEASES: tuple[Grant, ...] = (_table_read, _table_write)
_STARTS: tuple[Grant, ...] = (_deploy_read, _deploy_start)
FUNCTION_GRANTS: Mapping[str, tuple[Grant, ...]] = {
    "on_artifact_event": (*_RELEASES, _artifacts, *_STARTS, _event_failures),
    # SUCCESS starts verification (target groups, deployed instances, first check); FAILURE
    # reads the lifecycle diagnostics of each instance.
    "on_codedeploy_event": (
        *_RELEASES,
        *_STARTS,
        _deploy_targets,
        _target_groups,
        _verify_send,
        _event_failures,
    ),
    "on_verify_message": (*_RELEASES, *_STARTS, _target_health, _verify_send, _verify_consume),
    # Applies CodeDeploy outcomes whose events were lost (as on_codedeploy_event) and re-sends
    # overdue checks.
    "reconcile": (*_RELEASES, *_STARTS, _deploy_targets, _target_groups, _verify_send, _event_failures),
    "on_release_stream": (_stream_read, _notify_send),
    "on_notify_message": (*_RELEASES, _notify_consume, _channels),
    # Deploys a stored revision (HeadObject), cancels (StopDeployment), shows deployment progress.
    "api_handler": (*_RELEASES, _artifacts, *_STARTS, _deploy_stop),
}


def function_policy(function: Function, scope: Scope) -> dict[str, Any]:
    grants = FUNCTION_GRANTS.get(function.name)
    if grants is None:
        raise RenderError(
            f"function {function.name!r} has no policy: add what it calls to FUNCTION_GRANTS in "
            f"{Path(__file__).relative_to(PROJECT_ROOT)}"
        )
    statements: list[Statement] = []
    for grant in (_logs, *grants):
        for statement in grant(function, scope):
            if statement["Resource"]:
                statements.append(statement)
    seen: dict[str, int] = {}
    for statement in statements:  # Sids are unique within a policy
        count = seen.get(statement["Sid"], 0)
        seen[statement["Sid"]] = count + 1
        if count:
            statement["Sid"] = f"{statement['Sid']}{count + 1}"
    return {"Version": "2012-10-17", "Statement": statements}


# --- the template -------------------------------------------------------------------------------


def _table(stage: str, name: str) -> dict[str, Any]:
    from chalicelib.adapters.dynamodb_store import table_definition

    definition = table_definition(name)
    protected = stage in PROTECTED_STAGES
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain" if protected else "Delete",
        "UpdateReplacePolicy": "Retain" if protected else "Delete",
        "Properties": {
            "TableName": definition["TableName"],
            "BillingMode": definition["BillingMode"],
            "AttributeDefinitions": definition["AttributeDefinitions"],
            "KeySchema": definition["KeySchema"],
            "GlobalSecondaryIndexes": definition["GlobalSecondaryIndexes"],
            "StreamSpecification": {"StreamViewType": definition["StreamSpecification"]["StreamViewType"]},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "DeletionProtectionEnabled": protected,
            # Idempotency records of the API carry their expiry in ``expires_at``.
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    }


def _queue(
    name: str, *, fifo: bool = False, dead_letters: str | None = None, max_receives: int = 0
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "QueueName": f"{name}.fifo" if fifo else name,
        "SqsManagedSseEnabled": True,
    }
    if fifo:
        properties["FifoQueue"] = True
    if dead_letters is None:
        properties["MessageRetentionPeriod"] = DLQ_RETENTION_S
    else:
        properties["VisibilityTimeout"] = QUEUE_VISIBILITY_S
        properties["RedrivePolicy"] = {
            "deadLetterTargetArn": _get_att(dead_letters),
            "maxReceiveCount": max_receives,
        }
    return {"Type": "AWS::SQS::Queue", "Properties": properties}


def _alarm_actions() -> dict[str, Any]:
    return {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def _alarm(
    description: str, namespace: str, metric: str, dimension: tuple[str, Any], **extra: Any
) -> dict[str, Any]:
    properties = {
        "AlarmDescription": description,
        "Namespace": namespace,
        "MetricName": metric,
        "Dimensions": [{"Name": dimension[0], "Value": dimension[1]}],
        "Statistic": "Sum",
        "Period": ALARM_PERIOD_S,
        "EvaluationPeriods": 1,
        "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        "AlarmActions": _alarm_actions(),
        "OKActions": _alarm_actions(),
    }
    properties.update(extra)
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": properties}


def _cfn_name(text: str) -> str:
    from chalice.utils import to_cfn_resource_name

    return to_cfn_resource_name("".join(c if c.isalnum() else "-" for c in text))


def _artifact_rules(pipelines: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    for pipeline in pipelines.pipelines:
        rule = f"ArtifactRule{_cfn_name(pipeline.name)}"
        if rule in resources:
            raise RenderError(
                f"pipeline {pipeline.name!r}: its rule name {rule} is taken by another pipeline"
            )
        detail: dict[str, Any] = {"bucket": {"name": [pipeline.bucket]}}
        if pipeline.prefix:
            detail["object"] = {"key": [{"prefix": pipeline.prefix}]}
        resources[rule] = {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": f"S3 Object Created under s3://{pipeline.bucket}/{pipeline.prefix} "
                f"(pipeline {pipeline.name})",
                "EventPattern": {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": detail},
                "State": "ENABLED",
                "Targets": [
                    {
                        "Id": "on-artifact-event",
                        "Arn": _get_att("OnArtifactEvent"),
                        # EventBridge keeps retrying a throttled Lambda for a day, then parks the
                        # event in the failure queue instead of dropping it.
                        "RetryPolicy": {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185},
                        "DeadLetterConfig": {"Arn": _get_att(EVENT_FAILURES)},
                    }
                ],
            },
        }
        resources[f"{rule}Permission"] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "FunctionName": {"Ref": "OnArtifactEvent"},
                "Action": "lambda:InvokeFunction",
                "Principal": "events.amazonaws.com",
                "SourceArn": _get_att(rule),
            },
        }
    return resources


def _event_failures_policy(rules: Iterable[str]) -> dict[str, Any]:
    # EventBridge needs the queue's permission to park events it could not deliver.
    return {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [{"Ref": EVENT_FAILURES}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "EventBridgeDeadLetters",
                        "Effect": "Allow",
                        "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": _get_att(EVENT_FAILURES),
                        "Condition": {"ArnEquals": {"aws:SourceArn": [_get_att(rule) for rule in rules]}},
                    }
                ],
            },
        },
    }


def _environment() -> dict[str, Any]:
    return {
        "RELEASES_TABLE": {"Ref": TABLE},
        "VERIFY_QUEUE_URL": {"Ref": VERIFY_QUEUE},
        "NOTIFY_QUEUE_URL": {"Ref": NOTIFY_QUEUE},
        "NOTIFY_DLQ_URL": {"Ref": NOTIFY_DLQ},
    }


def _function_resources(function: Function, scope: Scope, stage: str) -> dict[str, Any]:
    logical = function.logical_id
    properties: dict[str, Any] = {
        "FunctionName": function_name(stage, function),
        "Role": _get_att(f"{logical}Role"),
        "Environment": {"Variables": _environment()},
    }
    if function.invoked_asynchronously:
        properties["DeadLetterQueue"] = {"Type": "SQS", "TargetArn": _get_att(EVENT_FAILURES)}
    if function.trigger == "sqs":
        queue = SQS_SOURCES.get(function.name)
        if queue is None:
            raise RenderError(f"SQS handler {function.name!r} consumes no queue of this template: add it")
        properties["Events"] = {
            f"{logical}SqsEventSource": {
                "Properties": {
                    # Chalice writes {"Fn::Sub": <arn of the queue named in app.py>}: the deep
                    # merge can only replace that string, not swap the intrinsic.
                    "Queue": _sub(f"${{{queue}.Arn}}"),
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                }
            }
        }
    if function.trigger == "dynamodb":
        properties["Events"] = {
            f"{logical}DynamodbEventSource": {
                "Properties": {
                    "Stream": _get_att(TABLE, "StreamArn"),
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                    "BisectBatchOnFunctionError": True,
                    "MaximumRetryAttempts": STREAM_MAX_RETRIES,
                    "MaximumRecordAgeInSeconds": STREAM_MAX_RECORD_AGE_S,
                    "DestinationConfig": {"OnFailure": {"Destination": _get_att(STREAM_FAILURES)}},
                }
            }
        }
    resources: dict[str, Any] = {
        # The log group exists before the function can write to it (Lambda may not create it).
        logical: {"DependsOn": [f"{logical}LogGroup"], "Properties": properties},
        f"{logical}Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": f"{APP_NAME} {stage}: {function.name} (only what it calls)",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                "Policies": [
                    {"PolicyName": function.name, "PolicyDocument": function_policy(function, scope)}
                ],
            },
        },
        f"{logical}LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {
                "LogGroupName": log_group_name(stage, function),
                "RetentionInDays": LOG_RETENTION_DAYS.get(stage, DEFAULT_LOG_RETENTION_DAYS),
            },
        },
        f"{logical}ErrorsAlarm": _alarm(
            f"{APP_NAME} {stage}: {function.name} raised errors",
            "AWS/Lambda",
            "Errors",
            ("FunctionName", {"Ref": logical}),
        ),
    }
    if function.trigger == "dynamodb":
        resources[f"{logical}IteratorAgeAlarm"] = _alarm(
            f"{APP_NAME} {stage}: {function.name} is behind the release stream (notifications late)",
            "AWS/Lambda",
            "IteratorAge",
            ("FunctionName", {"Ref": logical}),
            Statistic="Maximum",
            Threshold=STREAM_AGE_ALARM_MS,
        )
    return resources


def render(stage: str, pipelines: Any, functions: Sequence[Function]) -> dict[str, Any]:
    """The merge template for ``stage`` from the pipelines config and the app's functions."""
    if not any(f.name == "on_artifact_event" for f in functions):
        raise RenderError("the app has no on_artifact_event function for the S3 rules to target")
    prefix = f"{APP_NAME}-{stage}"
    scope = pipeline_scope(stage, pipelines)
    rules = _artifact_rules(pipelines)
    resources: dict[str, Any] = {
        TABLE: _table(stage, prefix),
        VERIFY_DLQ: _queue(f"{prefix}-verify-dlq"),
        VERIFY_QUEUE: _queue(f"{prefix}-verify", dead_letters=VERIFY_DLQ, max_receives=VERIFY_MAX_RECEIVES),
        NOTIFY_DLQ: _queue(f"{prefix}-notify-dlq", fifo=True),
        NOTIFY_QUEUE: _queue(
            f"{prefix}-notify", fifo=True, dead_letters=NOTIFY_DLQ, max_receives=NOTIFY_MAX_RECEIVES
        ),
        STREAM_FAILURES: _queue(f"{prefix}-stream-failures"),
        EVENT_FAILURES: _queue(f"{prefix}-event-failures"),
        **rules,
        "EventFailureQueuePolicy": _event_failures_policy(
            [name for name, body in rules.items() if body["Type"] == "AWS::Events::Rule"]
        ),
    }
    for queue in DEAD_LETTER_QUEUES:
        resources[f"{queue}DepthAlarm"] = _alarm(
            f"{APP_NAME} {stage}: messages waiting in {queue}: see docs/deploy.md, 'Dead letters'",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            ("QueueName", _get_att(queue, "QueueName")),
            Statistic="Maximum",
        )
    for function in functions:
        resources.update(_function_resources(function, scope, stage))
    return {
        "Parameters": {
            "AlarmTopicArn": {
                "Type": "String",
                "Default": "",
                "Description": "SNS topic for alarm notifications (empty: alarms only show in CloudWatch)",
            }
        },
        "Conditions": {"HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}},
        "Resources": resources,
        "Outputs": {
            "ReleasesTableName": {"Value": {"Ref": TABLE}},
            "VerifyQueueUrl": {"Value": {"Ref": VERIFY_QUEUE}},
            "NotifyQueueUrl": {"Value": {"Ref": NOTIFY_QUEUE}},
            **{f"{queue}Url": {"Value": {"Ref": queue}} for queue in DEAD_LETTER_QUEUES},
        },
    }


def stage_pipelines_file(stage: str) -> Path:
    """The pipelines file the stage's functions read: ``PIPELINES_FILE`` in the stage's environment
    in .chalice/config.json, else the default (resolved as chalicelib/bootstrap.py does)."""
    config = json.loads((PROJECT_ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))
    stage_config = config.get("stages", {}).get(stage)
    if stage_config is None:
        raise RenderError(f"stage {stage!r} is not in .chalice/config.json")
    environment = {**config.get("environment_variables", {}), **stage_config.get("environment_variables", {})}
    path = Path(environment.get("PIPELINES_FILE") or DEFAULT_PIPELINES_FILE)
    return path if path.is_absolute() else PROJECT_ROOT / path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--pipelines",
        type=Path,
        default=None,
        help="pipelines file to scope the policies and rules to (default: the stage's PIPELINES_FILE)",
    )
    arguments = parser.parse_args(argv)
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    from chalicelib.domain.pipelines import PipelinesConfigError, load_pipelines

    try:
        pipelines = load_pipelines(arguments.pipelines or stage_pipelines_file(arguments.stage))
        # app.py reads its environment at import; packaging must not depend on the caller's.
        os.environ.pop("RELEASES_STREAM_ARN", None)
        from app import app

        template = render(arguments.stage, pipelines, app_functions(app))
    except (RenderError, PipelinesConfigError) as problem:
        print(f"infra.render: {problem}", file=sys.stderr)
        return 1
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(template, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

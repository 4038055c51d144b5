"""The merge template for ``chalice package --stage STAGE --merge-template FILE``.

Chalice generates the functions, their event sources, the CodeDeploy rule (``on_cw_event``), the
schedule and the API. This adds what Chalice cannot express and deep-merges it in (dicts merge,
lists and scalars replace):

- the releases table (its shape comes from ``table_definition()``), the verify and notify queues
  with their dead-letter queues, the stream's and the asynchronous invocations' failure queues;
- the EventBridge rules for S3 "Object Created" of a bundle, one per bucket with its pipelines'
  prefixes (infra/stack.py), targeting ``on_artifact_event`` (``on_s3_event`` cannot be packaged),
  and one Lambda permission for all of them;
- on every function: its own role, its environment, and for the queue and stream sources
  ``ReportBatchItemFailures``, the real queue and stream, bisect-on-error and an on-failure queue;
- each function's timeout, memory and concurrency (infra/sizing.py), the API's access log;
- alarms on dead-letter depth, function errors, stream age and artifacts the coordinator may not
  read; a CloudWatch dashboard of the DORA metrics the release stream prints (docs/stats.md).

Roles are defined here, one per function, not by Chalice: what a function may touch depends on
the pipelines file (buckets, prefixes, CodeDeploy groups, secrets), which a static policy file
cannot name. ``.chalice/config.json`` sets ``manage_iam_role: false`` so Chalice makes no role of
its own, and every function's ``Role`` is replaced with its role here, holding the policies of
infra/grants.py (what each function may do).

    python -m infra.render --stage dev --output build/infra/merge-dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chalicelib.log import COORDINATOR_DIMENSION, METRICS_NAMESPACE, SERVICE
from infra import sizing as function_sizes
from infra import stack
from infra.functions import (
    APP_NAME,
    Function,
    RenderError,
    app_functions,
    batch_sizes,
    function_name,
    log_group_name,
)
from infra.grants import ManagedPolicies, Scope, function_policy, pipeline_policies, pipeline_scope
from infra.intrinsics import arn, get_att, literal, sub

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PIPELINES_FILE = "chalicelib/pipelines.toml"

# Stages whose data must survive a mistaken stack deletion or replacement.
PROTECTED_STAGES = frozenset({"prod"})
LOG_RETENTION_DAYS = {"prod": 90}
DEFAULT_LOG_RETENTION_DAYS = 14

STREAM_MAX_RETRIES = 10
STREAM_MAX_RECORD_AGE_S = 24 * 3600
ALARM_PERIOD_S = 300
# A stream record this old means notifications are stuck behind a failing batch.
STREAM_AGE_ALARM_MS = 15 * 60 * 1000

TABLE = stack.TABLE
VERIFY_QUEUE = stack.VERIFY_QUEUE
VERIFY_DLQ = stack.VERIFY_DLQ
NOTIFY_QUEUE = stack.NOTIFY_QUEUE
NOTIFY_DLQ = stack.NOTIFY_DLQ
STREAM_FAILURES = stack.STREAM_FAILURES
EVENT_FAILURES = stack.EVENT_FAILURES
DEAD_LETTER_QUEUES = stack.DEAD_LETTER_QUEUES
DLQ_RETENTION_S = stack.DLQ_RETENTION_S
# Chalice's SQS handlers and the queue each consumes.
SQS_SOURCES = {spec.consumer: spec.logical_id for spec in stack.QUEUES if spec.consumer}
ARTIFACT_PERMISSION = "ArtifactRulesInvokePermission"
API_ACCESS_LOG = "ApiAccessLogGroup"

# The metric chalicelib emits (Powertools EMF, in chalicelib.log's METRICS_NAMESPACE with its
# SERVICE and the stack's table as dimensions) when S3 refuses to show an uploaded artifact: the
# role lacks a grant, or the bucket policy or KMS key refuses it. The upload is not deployed.
ACCESS_DENIED_METRIC = "ArtifactAccessDenied"


# DORA's metrics, printed by on_release_stream (chalicelib/service/release_metrics.py, EMF) with
# the dimensions pipeline, service and coordinator; docs/stats.md says what each measures.
DORA_DASHBOARD = "DoraDashboard"
DORA_PERIOD_S = 86400
_DORA_WIDTH = 12
_DORA_HEIGHT = 6


def _dora_dashboard(prefix: str, pipelines: Any) -> dict[str, Any]:
    """A CloudWatch dashboard of the DORA metrics, a line per pipeline in each widget: deployments
    and failures per day, the change failure rate (metric math over the two), the lead time and
    the time to restore (p50 and p90)."""
    # Inside Fn::Sub: a pipeline name's "${" must stay as written.
    names = [literal(pipeline.name) for pipeline in pipelines.pipelines]

    def metric(name: str, pipeline: str, options: Mapping[str, Any]) -> list[Any]:
        return [
            METRICS_NAMESPACE, name, "pipeline", pipeline, "service", SERVICE,
            COORDINATOR_DIMENSION, f"${{{TABLE}}}", dict(options),
        ]  # fmt: skip

    def widget(title: str, metrics: list[list[Any]], position: int, **extra: Any) -> dict[str, Any]:
        return {
            "type": "metric",
            "x": (position % 2) * _DORA_WIDTH,
            "y": (position // 2) * _DORA_HEIGHT,
            "width": _DORA_WIDTH,
            "height": _DORA_HEIGHT,
            "properties": {
                "title": title,
                "region": "${AWS::Region}",
                "period": DORA_PERIOD_S,
                "view": "timeSeries",
                "metrics": metrics,
                **extra,
            },
        }

    deployments = [
        metric(name, pipeline, {"stat": "Sum", "label": f"{pipeline} {label}"})
        for pipeline in names
        for name, label in (("DeploymentCount", "deployments"), ("DeploymentFailed", "failed"))
    ]
    failure_rate: list[list[Any]] = []
    for number, pipeline in enumerate(names):
        failure_rate += [
            [{"expression": f"100 * f{number} / c{number}", "label": f"{pipeline} %", "id": f"rate{number}"}],
            metric("DeploymentCount", pipeline, {"stat": "Sum", "id": f"c{number}", "visible": False}),
            metric("DeploymentFailed", pipeline, {"stat": "Sum", "id": f"f{number}", "visible": False}),
        ]

    def percentiles(name: str) -> list[list[Any]]:
        return [
            metric(name, pipeline, {"stat": stat, "label": f"{pipeline} {stat}"})
            for pipeline in names
            for stat in ("p50", "p90")
        ]

    seconds_axis = {"yAxis": {"left": {"label": "seconds", "min": 0}}}
    body = {
        "widgets": [
            widget("Deployments per day (verified or failed) and failures", deployments, 0, stat="Sum"),
            widget("Change failure rate, % per day", failure_rate, 1, yAxis={"left": {"min": 0, "max": 100}}),
            widget("Lead time for changes", percentiles("LeadTimeSeconds"), 2, **seconds_axis),
            widget("Time to restore (rollbacks)", percentiles("RestoreSeconds"), 3, **seconds_axis),
        ]
    }
    return {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {
            # Dashboards are global to the account: the region keeps two regions' stacks apart.
            "DashboardName": sub(f"{prefix}-dora-${{AWS::Region}}"),
            # A JSON string; Fn::Sub fills in the stack's region and its table's name (the
            # pipelines' names are escaped).
            "DashboardBody": sub(json.dumps(body, separators=(",", ":"))),
        },
    }


def _unique_per_stack(name: str) -> dict[str, Any]:
    """``name-<8 hex>``, the hex being the start of the stack id's UUID: new with every creation of
    the stack, the same for the stack's whole life."""
    stack_uuid = {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}
    return {"Fn::Join": ["-", [name, {"Fn::Select": [0, {"Fn::Split": ["-", stack_uuid]}]}]]}


def _table(stage: str, prefix: str) -> dict[str, Any]:
    definition = stack.table_definition(prefix)
    protected = stage in PROTECTED_STAGES
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain" if protected else "Delete",
        "UpdateReplacePolicy": "Retain" if protected else "Delete",
        "Properties": {
            # A protected table outlives its stack (Retain): with a fixed name, creating the stack
            # again fails on the table left behind ("already exists"). A name unique to each
            # creation of the stack lets it be created again next to the retained table, which
            # keeps its data (docs/deploy.md, "Removing the stack"). Functions and policies name
            # the table through Ref and GetAtt, never by this name.
            "TableName": _unique_per_stack(definition["TableName"]),
            "BillingMode": definition["BillingMode"],
            "AttributeDefinitions": definition["AttributeDefinitions"],
            "KeySchema": definition["KeySchema"],
            "GlobalSecondaryIndexes": definition["GlobalSecondaryIndexes"],
            "StreamSpecification": {"StreamViewType": definition["StreamSpecification"]["StreamViewType"]},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "DeletionProtectionEnabled": protected,
            "TimeToLiveSpecification": {"AttributeName": stack.TTL_ATTRIBUTE, "Enabled": True},
        },
    }


def _alarm_actions() -> dict[str, Any]:
    return {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def _alarm(
    description: str, namespace: str, metric: str, dimensions: Sequence[tuple[str, Any]], **extra: Any
) -> dict[str, Any]:
    properties = {
        "AlarmDescription": description,
        "Namespace": namespace,
        "MetricName": metric,
        "Dimensions": [{"Name": name, "Value": value} for name, value in dimensions],
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


def _rule_arn_pattern(prefix: str) -> dict[str, str]:
    return arn("events", f"rule/{stack.artifact_rule_name_prefix(prefix)}*")


def _artifact_rules(prefix: str, pipelines: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    try:
        rules = stack.artifact_rules(prefix, stack.pipeline_buckets(pipelines))
    except ValueError as problem:
        raise RenderError(str(problem)) from None
    for rule in rules:
        resources[rule.logical_id] = {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Name": rule.name,
                "Description": rule.description,
                "EventPattern": rule.pattern,
                "State": "ENABLED",
                "Targets": [
                    {
                        "Id": "on-artifact-event",
                        "Arn": get_att("OnArtifactEvent"),
                        # EventBridge keeps retrying a throttled Lambda for a day, then parks the
                        # event in the failure queue instead of dropping it.
                        "RetryPolicy": {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185},
                        "DeadLetterConfig": {"Arn": get_att(EVENT_FAILURES)},
                    }
                ],
            },
        }
    # One permission for every artifact rule, by their common name prefix: one statement per rule
    # would grow the function's resource-based policy past Lambda's 20 KB at about 50 rules.
    # Lambda compares SourceArn with StringLike (botocore lambda model, AddPermission SourceArn).
    resources[ARTIFACT_PERMISSION] = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {
            "FunctionName": {"Ref": "OnArtifactEvent"},
            "Action": "lambda:InvokeFunction",
            "Principal": "events.amazonaws.com",
            "SourceAccount": {"Ref": "AWS::AccountId"},
            "SourceArn": _rule_arn_pattern(prefix),
        },
    }
    return resources


def _event_failures_policy(prefix: str) -> dict[str, Any]:
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
                        "Resource": get_att(EVENT_FAILURES),
                        "Condition": {"ArnLike": {"aws:SourceArn": _rule_arn_pattern(prefix)}},
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
        "SLACK_ACTIONS_QUEUE_URL": {"Ref": stack.SLACK_ACTIONS_QUEUE},
    }


def _function_resources(
    function: Function,
    scope: Scope,
    stage: str,
    size: function_sizes.Sizing,
    policies: ManagedPolicies,
) -> dict[str, Any]:
    logical = function.logical_id
    variables = _environment()
    properties: dict[str, Any] = {
        "FunctionName": function_name(stage, function),
        "Role": get_att(f"{logical}Role"),
        "Environment": {"Variables": variables},
        # infra/sizing.py: the worst case each is sized from, and why.
        "Timeout": size.timeout_s,
        "MemorySize": size.memory_mb,
    }
    if size.reserved_concurrency is not None:
        properties["ReservedConcurrentExecutions"] = size.reserved_concurrency
    if function.invoked_asynchronously:
        properties["DeadLetterQueue"] = {"Type": "SQS", "TargetArn": get_att(EVENT_FAILURES)}
    if function.trigger == "sqs":
        queue = SQS_SOURCES.get(function.name)
        if queue is None:
            raise RenderError(f"SQS handler {function.name!r} consumes no queue of this template: add it")
        source: dict[str, Any] = {
            # Chalice writes {"Fn::Sub": <arn of the queue named in app.py>}: the deep merge can
            # only replace that string, not swap the intrinsic.
            "Queue": sub(f"${{{queue}.Arn}}"),
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        }
        if size.maximum_concurrency is not None:
            source["ScalingConfig"] = {"MaximumConcurrency": size.maximum_concurrency}
        properties["Events"] = {f"{logical}SqsEventSource": {"Properties": source}}
    if function.trigger == "dynamodb":
        properties["Events"] = {
            f"{logical}DynamodbEventSource": {
                "Properties": {
                    "Stream": get_att(TABLE, "StreamArn"),
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                    "BisectBatchOnFunctionError": True,
                    "MaximumRetryAttempts": STREAM_MAX_RETRIES,
                    "MaximumRecordAgeInSeconds": STREAM_MAX_RECORD_AGE_S,
                    "DestinationConfig": {"OnFailure": {"Destination": get_att(STREAM_FAILURES)}},
                }
            }
        }
    role_properties: dict[str, Any] = {
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
        "Policies": [{"PolicyName": function.name, "PolicyDocument": function_policy(function, scope)}],
    }
    managed = policies.by_function.get(function.name, [])
    if managed:
        role_properties["ManagedPolicyArns"] = [{"Ref": logical_id} for logical_id in managed]
    resources: dict[str, Any] = {
        # The log group exists before the function can write to it (Lambda may not create it).
        logical: {"DependsOn": [f"{logical}LogGroup"], "Properties": properties},
        f"{logical}Role": {"Type": "AWS::IAM::Role", "Properties": role_properties},
        f"{logical}LogGroup": _log_group(stage, log_group_name(stage, function)),
        f"{logical}ErrorsAlarm": _alarm(
            f"{APP_NAME} {stage}: {function.name} raised errors",
            "AWS/Lambda",
            "Errors",
            [("FunctionName", {"Ref": logical})],
        ),
    }
    if function.trigger == "dynamodb":
        resources[f"{logical}IteratorAgeAlarm"] = _alarm(
            f"{APP_NAME} {stage}: {function.name} is behind the release stream (notifications late)",
            "AWS/Lambda",
            "IteratorAge",
            [("FunctionName", {"Ref": logical})],
            Statistic="Maximum",
            Threshold=STREAM_AGE_ALARM_MS,
        )
    return resources


def _log_group(stage: str, name: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Logs::LogGroup",
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {
            "LogGroupName": name,
            "RetentionInDays": LOG_RETENTION_DAYS.get(stage, DEFAULT_LOG_RETENTION_DAYS),
        },
    }


# One JSON object per request: who called (the caller's IAM principal: every route needs SigV4),
# what (method, route, path), the outcome (status, latencies) and the request id that the
# function's own log lines carry ($context variables of API Gateway's access logging).
API_ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "principal": "$context.identity.userArn",
    "caller": "$context.identity.caller",
    "accountId": "$context.identity.accountId",
    "sourceIp": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "route": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "responseLength": "$context.responseLength",
    "error": "$context.error.message",
}


def api_access_log_group_name(stage: str) -> str:
    return f"/aws/apigateway/{APP_NAME}-{stage}-access"


def _api_resources(stage: str) -> dict[str, Any]:
    return {
        API_ACCESS_LOG: _log_group(stage, api_access_log_group_name(stage)),
        "RestAPI": {
            "Properties": {
                # Access logging needs the region's API Gateway account setting "CloudWatch log
                # role ARN" (once per account and region; docs/deploy.md).
                "AccessLogSetting": {
                    "DestinationArn": arn("logs", f"log-group:{api_access_log_group_name(stage)}"),
                    "Format": json.dumps(API_ACCESS_LOG_FORMAT, separators=(",", ":")),
                }
            },
            "DependsOn": [API_ACCESS_LOG],
        },
    }


def _queues(prefix: str, sizes: Mapping[str, function_sizes.Sizing]) -> dict[str, Any]:
    return {
        spec.logical_id: {
            "Type": "AWS::SQS::Queue",
            "Properties": stack.queue_properties(prefix, spec, stack.queue_settings(spec, sizes)),
        }
        for spec in stack.QUEUES
    }


def render(
    stage: str,
    pipelines: Any,
    functions: Sequence[Function],
    sizes: Mapping[str, function_sizes.Sizing] | None = None,
) -> dict[str, Any]:
    """The merge template for ``stage`` from the pipelines config and the app's functions;
    ``sizes`` default to infra/sizing.py for app.py's batch sizes."""
    if not any(f.name == "on_artifact_event" for f in functions):
        raise RenderError("the app has no on_artifact_event function for the S3 rules to target")
    if sizes is None:
        from app import app

        sizes = function_sizes.function_sizing(batch_sizes(app))
    prefix = f"{APP_NAME}-{stage}"
    scope = pipeline_scope(stage, pipelines)
    policies = pipeline_policies(stage, functions, scope)
    resources: dict[str, Any] = {
        TABLE: _table(stage, prefix),
        **_queues(prefix, sizes),
        **_artifact_rules(prefix, pipelines),
        "EventFailureQueuePolicy": _event_failures_policy(prefix),
        **policies.resources,
    }
    for queue in DEAD_LETTER_QUEUES:
        resources[f"{queue}DepthAlarm"] = _alarm(
            f"{APP_NAME} {stage}: messages waiting in {queue}: see docs/deploy.md, 'Dead letters'",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            [("QueueName", get_att(queue, "QueueName"))],
            Statistic="Maximum",
        )
    resources["ArtifactAccessDeniedAlarm"] = _alarm(
        f"{APP_NAME} {stage}: S3 refused to show an uploaded artifact (403): it was not deployed; "
        "check the bucket policy, the KMS key and the function's role",
        METRICS_NAMESPACE,
        ACCESS_DENIED_METRIC,
        [("service", SERVICE), (COORDINATOR_DIMENSION, {"Ref": TABLE})],
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    resources[DORA_DASHBOARD] = _dora_dashboard(prefix, pipelines)
    for function in functions:
        size = sizes.get(function.name)
        if size is None:
            raise RenderError(f"function {function.name!r} has no sizing: add it to infra/sizing.py")
        resources.update(_function_resources(function, scope, stage, size, policies))
    outputs: dict[str, Any] = {
        "ReleasesTableName": {"Value": {"Ref": TABLE}},
        "VerifyQueueUrl": {"Value": {"Ref": VERIFY_QUEUE}},
        "NotifyQueueUrl": {"Value": {"Ref": NOTIFY_QUEUE}},
        **{f"{queue}Url": {"Value": {"Ref": queue}} for queue in DEAD_LETTER_QUEUES},
    }
    if any(function.trigger == "api" for function in functions):
        resources.update(_api_resources(stage))
        outputs["ApiAccessLogGroup"] = {"Value": {"Ref": API_ACCESS_LOG}}
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
        "Outputs": outputs,
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

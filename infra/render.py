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
  read.

What a role may touch on the pipelines' resources (objects, deployment groups, secrets, ...) goes
into customer managed policies shared by the roles that need it, chunked to IAM's 6,144 characters;
what every role needs of the stack itself stays inline. An inline policy grows with the pipelines
file and passes IAM's 10,240 characters per role at about 20 pipelines; managed policies take
10 x 6,144 per role and are stored once for all roles (docs/quotas.md).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import sizing as function_sizes
from infra import stack

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "release-coordinator"
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

# The metric chalicelib emits (Powertools EMF) when S3 refuses to show an uploaded artifact: the
# role lacks a grant, or the bucket policy or KMS key refuses it. The upload is not deployed.
ACCESS_DENIED_NAMESPACE = "ReleaseCoordinator"
ACCESS_DENIED_METRIC = "ArtifactAccessDenied"
ACCESS_DENIED_SERVICE = APP_NAME

# IAM quotas (IAM user guide, "IAM and AWS STS quotas"): characters, white space not counted.
MANAGED_POLICY_MAX_CHARS = 6144
MANAGED_POLICIES_PER_ROLE = 10


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
    # bucket -> the pipelines' key prefixes in it
    bucket_prefixes: tuple[tuple[str, tuple[str, ...]], ...] = ()


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
        bucket_prefixes=tuple(
            (bucket, tuple(sorted(set(prefixes))))
            for bucket, prefixes in sorted(stack.pipeline_buckets(pipelines).items())
        ),
    )


TABLE_ARN = _get_att(TABLE)
TABLE_INDEXES = _sub(f"${{{TABLE}.Arn}}/index/*")

# Resource "*" where AWS offers nothing narrower: (actions, AWS's reason). docs/deploy.md lists them.
UNSCOPED_ACTIONS: Mapping[str, str] = {
    "elasticloadbalancing:DescribeTargetGroups": (
        "Elastic Load Balancing's Describe* actions support no resource-level permissions "
        "(Service Authorization Reference: no resource type)"
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
    "codedeploy:StopDeployment": (
        "takes a deployment id; the Service Authorization Reference lists no resource type, and a "
        "deployment-group ARN makes it AccessDenied"
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
    statements = [
        _statement("ReadUploadedBundles", ["s3:GetObject", "s3:GetObjectVersion"], list(scope.object_arns))
    ]
    # Without s3:ListBucket S3 answers a missing key with 403, which reads as "refused" (and is
    # alarmed); with it, a 404. Listing is limited to the pipelines' prefixes by s3:prefix (a
    # condition key of s3:ListBucket in the Service Authorization Reference). One statement for
    # all buckets keeps the policy small at 100 pipelines: a prefix of one bucket may then be
    # listed in another too (key names only; reading an object stays limited to its pipeline).
    scoped = [(bucket, prefixes) for bucket, prefixes in scope.bucket_prefixes if "" not in prefixes]
    whole = [bucket for bucket, prefixes in scope.bucket_prefixes if "" in prefixes]
    if scoped:
        statement = _statement(
            "ListBundleKeys", ["s3:ListBucket"], [_arn("s3", bucket, regional=False) for bucket, _ in scoped]
        )
        prefixes = sorted({f"{prefix}*" for _, listed in scoped for prefix in listed})
        statement["Condition"] = {"StringLike": {"s3:prefix": prefixes}}
        statements.append(statement)
    if whole:
        # A pipeline with the empty prefix takes the whole bucket.
        statements.append(
            _statement(
                "ListWholeBuckets",
                ["s3:ListBucket"],
                [_arn("s3", bucket, regional=False) for bucket in whole],
            )
        )
    return statements


def _deployments(_function: Function, scope: Scope) -> list[Statement]:
    # CreateDeployment also checks the deployment config and registers the revision with the
    # application (CodeDeploy permissions reference). A function that starts deployments also
    # looks for one it started already (GetDeployment, ListDeployments...).
    return [
        _statement(
            "StartAndReadDeployments",
            [
                "codedeploy:CreateDeployment",
                "codedeploy:GetDeployment",
                "codedeploy:ListDeployments",
                "codedeploy:BatchGetDeployments",
            ],
            list(scope.deployment_groups),
        ),
        _statement(
            "UseDeploymentConfigs", ["codedeploy:GetDeploymentConfig"], list(scope.deployment_configs)
        ),
        _statement(
            "RegisterRevisions",
            ["codedeploy:GetApplicationRevision", "codedeploy:RegisterApplicationRevision"],
            list(scope.applications),
        ),
    ]


def _deploy_stop(_function: Function, _scope: Scope) -> list[Statement]:
    # No resource type in the Service Authorization Reference: only "*" authorizes it.
    return [_statement("StopDeployments", ["codedeploy:StopDeployment"], ["*"])]


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
            ["elasticloadbalancing:DescribeTargetGroups"],
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
_STARTS: tuple[Grant, ...] = (_deployments,)
FUNCTION_GRANTS: Mapping[str, tuple[Grant, ...]] = {
    "on_artifact_event": (*_RELEASES, _artifacts, *_STARTS, _event_failures),
    # SUCCESS starts verification (target groups, deployed instances) and runs its first check
    # (target health); FAILURE reads the lifecycle diagnostics of each instance.
    "on_codedeploy_event": (
        *_RELEASES,
        *_STARTS,
        _deploy_targets,
        _target_groups,
        _target_health,
        _verify_send,
        _event_failures,
    ),
    "on_verify_message": (*_RELEASES, *_STARTS, _target_health, _verify_send, _verify_consume),
    # Applies CodeDeploy outcomes whose events were lost (as on_codedeploy_event, first check
    # included) and re-sends overdue checks.
    "reconcile": (
        *_RELEASES,
        *_STARTS,
        _deploy_targets,
        _target_groups,
        _target_health,
        _verify_send,
        _event_failures,
    ),
    "on_release_stream": (_stream_read, _notify_send),
    "on_notify_message": (*_RELEASES, _notify_consume, _channels),
    # Deploys a stored revision (HeadObject), cancels (StopDeployment), shows deployment progress.
    "api_handler": (*_RELEASES, _artifacts, *_STARTS, _deploy_stop),
}


# Grants whose resources come from the pipelines file: they grow with it, so they live in managed
# policies shared by every role that has the grant (``pipeline_policies``). The others name the
# stack's own resources and stay inline.
PIPELINE_GRANTS: Mapping[Grant, str] = {
    _artifacts: "Artifacts",
    _deployments: "Deployments",
    _channels: "Channels",
}


def _grants(function: Function) -> tuple[Grant, ...]:
    grants = FUNCTION_GRANTS.get(function.name)
    if grants is None:
        raise RenderError(
            f"function {function.name!r} has no policy: add what it calls to FUNCTION_GRANTS in "
            f"{Path(__file__).relative_to(PROJECT_ROOT)}"
        )
    return (_logs, *grants)


def _document(statements: Sequence[Statement]) -> dict[str, Any]:
    kept = [dict(statement) for statement in statements if statement["Resource"]]
    seen: dict[str, int] = {}
    for statement in kept:  # Sids are unique within a policy
        count = seen.get(statement["Sid"], 0)
        seen[statement["Sid"]] = count + 1
        if count:
            statement["Sid"] = f"{statement['Sid']}{count + 1}"
    return {"Version": "2012-10-17", "Statement": kept}


def function_policy(function: Function, scope: Scope) -> dict[str, Any]:
    """The role's inline policy: what the function needs of the stack's own resources."""
    return _document(
        [
            statement
            for grant in _grants(function)
            if grant not in PIPELINE_GRANTS
            for statement in grant(function, scope)
        ]
    )


def policy_chars(document: Mapping[str, Any]) -> int:
    """A policy's size as IAM counts it (white space not counted), with its ARNs as long as any
    region and partition make them."""
    from infra.quotas import policy_size

    return policy_size(document)


def _chunked(statements: Sequence[Statement], limit: int) -> list[list[Statement]]:
    """Statements packed into as few documents of at most ``limit`` characters as they fit in,
    splitting a statement's resources where one alone is too long."""
    documents: list[list[Statement]] = [[]]

    def fits(candidate: list[Statement]) -> bool:
        return policy_chars(_document(candidate)) <= limit

    for statement in statements:
        resources = list(statement["Resource"])
        part: list[Any] = []
        for resource in resources:
            piece = {**statement, "Resource": [*part, resource]}
            if fits([*documents[-1], piece]):
                part.append(resource)
                continue
            if part:
                documents[-1].append({**statement, "Resource": part})
            documents.append([])
            part = [resource]
            if not fits([{**statement, "Resource": part}]):
                raise RenderError(f"{statement['Sid']}: one resource makes a policy over {limit} characters")
        if part:
            documents[-1].append({**statement, "Resource": part})
    return [document for document in documents if document]


@dataclass(frozen=True)
class ManagedPolicies:
    resources: dict[str, Any]  # logical id -> AWS::IAM::ManagedPolicy
    by_function: dict[str, list[str]]  # function name -> the logical ids of its policies


def _pipeline_grants(function: Function) -> tuple[Grant, ...]:
    return tuple(grant for grant in _grants(function) if grant in PIPELINE_GRANTS)


def pipeline_policies(stage: str, functions: Sequence[Function], scope: Scope) -> ManagedPolicies:
    """One set of managed policies per combination of pipeline grants the roles have (the artifact
    and API functions read bundles and deploy, three others only deploy, the notifier only reaches
    channels), packed as full as IAM's size allows: the fewest policies per role."""
    resources: dict[str, Any] = {}
    by_combination: dict[tuple[Grant, ...], list[str]] = {}
    for function in functions:
        combination = _pipeline_grants(function)
        if not combination or combination in by_combination:
            continue
        # These grants do not depend on the function: one set of policies serves every role.
        statements = [s for grant in combination for s in grant(function, scope) if s["Resource"]]
        name = "Pipeline" + "".join(PIPELINE_GRANTS[grant] for grant in combination)
        by_combination[combination] = []
        for number, chunk in enumerate(_chunked(statements, MANAGED_POLICY_MAX_CHARS), start=1):
            logical_id = f"{name}Policy{number}"
            by_combination[combination].append(logical_id)
            resources[logical_id] = {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "Description": f"{APP_NAME} {stage}: {name} ({number}), from the pipelines file",
                    "PolicyDocument": _document(chunk),
                },
            }
    by_function = {}
    for function in functions:
        ids = by_combination.get(_pipeline_grants(function), [])
        if len(ids) > MANAGED_POLICIES_PER_ROLE:
            raise RenderError(
                f"{function.name}: {len(ids)} managed policies, over IAM's {MANAGED_POLICIES_PER_ROLE} "
                "per role: the pipelines file names too many resources (docs/quotas.md)"
            )
        by_function[function.name] = ids
    return ManagedPolicies(resources, by_function)


# --- the template -------------------------------------------------------------------------------


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


def _rule_arn_pattern(prefix: str) -> dict[str, str]:
    return _arn("events", f"rule/{stack.artifact_rule_name_prefix(prefix)}*")


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
                        "Arn": _get_att("OnArtifactEvent"),
                        # EventBridge keeps retrying a throttled Lambda for a day, then parks the
                        # event in the failure queue instead of dropping it.
                        "RetryPolicy": {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185},
                        "DeadLetterConfig": {"Arn": _get_att(EVENT_FAILURES)},
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
                        "Resource": _get_att(EVENT_FAILURES),
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
    }


def _function_resources(
    function: Function,
    scope: Scope,
    stage: str,
    size: function_sizes.Sizing,
    policies: ManagedPolicies,
) -> dict[str, Any]:
    logical = function.logical_id
    properties: dict[str, Any] = {
        "FunctionName": function_name(stage, function),
        "Role": _get_att(f"{logical}Role"),
        "Environment": {"Variables": _environment()},
        # infra/sizing.py: the worst case each is sized from, and why.
        "Timeout": size.timeout_s,
        "MemorySize": size.memory_mb,
    }
    if size.reserved_concurrency is not None:
        properties["ReservedConcurrentExecutions"] = size.reserved_concurrency
    if function.invoked_asynchronously:
        properties["DeadLetterQueue"] = {"Type": "SQS", "TargetArn": _get_att(EVENT_FAILURES)}
    if function.trigger == "sqs":
        queue = SQS_SOURCES.get(function.name)
        if queue is None:
            raise RenderError(f"SQS handler {function.name!r} consumes no queue of this template: add it")
        source: dict[str, Any] = {
            # Chalice writes {"Fn::Sub": <arn of the queue named in app.py>}: the deep merge can
            # only replace that string, not swap the intrinsic.
            "Queue": _sub(f"${{{queue}.Arn}}"),
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        }
        if size.maximum_concurrency is not None:
            source["ScalingConfig"] = {"MaximumConcurrency": size.maximum_concurrency}
        properties["Events"] = {f"{logical}SqsEventSource": {"Properties": source}}
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
                    "DestinationArn": _arn("logs", f"log-group:{api_access_log_group_name(stage)}"),
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


def batch_sizes(app: Any) -> dict[str, int]:
    """The batch size of each queue and stream handler, as app.py declares it."""
    from chalice.app import DynamoDBEventConfig, SQSEventConfig

    return {
        source.name: int(source.batch_size)
        for source in app.event_sources
        if isinstance(source, (SQSEventConfig, DynamoDBEventConfig))
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
            ("QueueName", _get_att(queue, "QueueName")),
            Statistic="Maximum",
        )
    resources["ArtifactAccessDeniedAlarm"] = _alarm(
        f"{APP_NAME} {stage}: S3 refused to show an uploaded artifact (403): it was not deployed; "
        "check the bucket policy, the KMS key and the function's role",
        ACCESS_DENIED_NAMESPACE,
        ACCESS_DENIED_METRIC,
        ("service", ACCESS_DENIED_SERVICE),
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
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

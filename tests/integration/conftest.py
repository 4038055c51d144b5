"""Integration fixtures: moto in process (``mock_aws``) provisioned like the real account, the
Chalice app invoked through ``chalice.test.Client``, and real-shaped events produced by moto
itself (S3 to EventBridge to SQS, S3 classic notification to SQS)."""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from app import app
from chalicelib import bootstrap
from chalicelib.adapters.dynamodb_store import DynamoReleaseStore
from chalicelib.domain.pipelines import load_pipelines
from chalicelib.domain.release import HistoryEvent, Release
from chalicelib.log import logger
from sandbox import moto_extensions
from sandbox.provision import Provisioned, provision

BUCKET = "acme-artifacts"
TABLE = "releases-test"
REGION = "us-east-1"
PIPELINES_TOML = f"""
[[pipeline]]
name = "api-prod"
bucket = "{BUCKET}"
prefix = "api/prod/"
application = "api"
deployment_group = "api-prod"

[[pipeline]]
name = "web-prod"
bucket = "{BUCKET}"
prefix = "web/prod/"
application = "web"
deployment_group = "web-prod"
on_busy = "supersede"

[[pipeline]]
name = "shop-prod"
bucket = "{BUCKET}"
prefix = "shop/prod/"
application = "shop"
deployment_group = "shop-prod"
[pipeline.verify]
healthy_checks = 2
interval_s = 1
deadline_s = 60
"""
# The pipeline whose deployment group sits behind an ALB target group.
LOAD_BALANCED = "shop-prod"
INSTANCES = 2
# A stage that config.json does not define: the test client then adds no stage environment,
# and the fixture's own RELEASES_TABLE and PIPELINES_FILE stay in force.
TEST_STAGE = "integration-test"


def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        # Fail fast on anything the emulator does not answer.
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@dataclass(frozen=True)
class Upload:
    key: str
    version_id: str
    etag: str
    # None when the template's S3 rule does not match the key (outside every prefix, not a bundle).
    eventbridge_event: dict[str, Any] | None
    classic: dict[str, Any]

    @property
    def eventbridge(self) -> dict[str, Any]:
        assert self.eventbridge_event is not None, f"{self.key} matched no EventBridge rule"
        return self.eventbridge_event


@dataclass
class World:
    session: Any
    provisioned: Provisioned
    client: Client
    s3_test_events: list[dict[str, Any]] = field(default_factory=list)
    _aws_clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def aws(self, service: str) -> Any:
        """The world's own boto3 client for ``service`` (what the tests read and upload with), made
        once: making a client costs more than most calls on moto. Tests that stub or hook a client
        make one of their own."""
        if service not in self._aws_clients:
            self._aws_clients[service] = self.session.client(service)
        return self._aws_clients[service]

    @property
    def store(self) -> DynamoReleaseStore:
        return DynamoReleaseStore(self.aws("dynamodb"), TABLE)

    def upload(self, key: str, body: bytes | None = None, metadata: dict[str, str] | None = None) -> Upload:
        response = self.aws("s3").put_object(
            Bucket=BUCKET, Key=key, Body=body or uuid.uuid4().bytes, Metadata=metadata or {}
        )
        eventbridge = self._drain(self.provisioned.eventbridge_queue_url)
        classic = self._drain(self.provisioned.classic_queue_url)
        assert len(eventbridge) <= 1, eventbridge
        assert len(classic) == 1, classic
        return Upload(
            key=key,
            version_id=response["VersionId"],
            etag=response["ETag"].strip('"'),
            eventbridge_event=eventbridge[0] if eventbridge else None,
            classic=classic[0],
        )

    def _drain(self, queue_url: str, wait_s: int = 0) -> list[dict[str, Any]]:
        sqs = self.aws("sqs")
        bodies: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0 if bodies else wait_s
            ).get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        return self.client.lambda_.invoke(function, event).payload

    def verify_messages(self, wait_s: int = 3) -> list[dict[str, Any]]:
        """The health checks due on the verify queue (waiting out their DelaySeconds)."""
        return self._drain(self.provisioned.verify_queue_url, wait_s)

    def deliver_verify(self, bodies: list[dict[str, Any]]) -> Any:
        event = self.client.events.generate_sqs_event(
            message_bodies=[json.dumps(body) for body in bodies], queue_name="release-coordinator-verify"
        )
        return self.invoke("on_verify_message", event)

    def reconcile(self) -> Any:
        event = self.client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        return self.invoke("reconcile", event)

    def deliver_upload(self, event: dict[str, Any]) -> Any:
        return self.invoke("on_artifact_event", event)

    def codedeploy_event(
        self, deployment_id: str, state: str, application: str = "api", group: str = "api-prod"
    ) -> Any:
        return self.invoke("on_codedeploy_event", codedeploy_event(deployment_id, state, application, group))

    def deployments(self, application: str = "api", group: str = "api-prod") -> list[dict[str, Any]]:
        codedeploy = self.aws("codedeploy")
        ids = codedeploy.list_deployments(applicationName=application, deploymentGroupName=group)[
            "deployments"
        ]
        if not ids:
            return []
        infos = codedeploy.batch_get_deployments(deploymentIds=ids)["deploymentsInfo"]
        return sorted(infos, key=lambda info: info["createTime"])

    def release(self, release_id: str) -> Release:
        release = self.store.get_release(release_id)
        assert release is not None, f"no release {release_id}"
        return release

    def history(self, release_id: str) -> list[HistoryEvent]:
        return self.store.history(release_id)


def codedeploy_event(deployment_id: str, state: str, application: str, group: str) -> dict[str, Any]:
    """The EventBridge event CodeDeploy sends (../shared/reference/aws-facts.md)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CodeDeploy Deployment State-change Notification",
        "source": "aws.codedeploy",
        "account": "123456789012",
        "time": "2026-11-26T10:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:codedeploy:{REGION}:123456789012:deploymentgroup:{application}/{group}"],
        "detail": {
            "region": REGION,
            "deploymentId": deployment_id,
            "instanceGroupId": str(uuid.uuid4()),
            "deploymentGroup": group,
            "state": state,
            "application": application,
        },
    }


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.toml"
    path.write_text(PIPELINES_TOML, encoding="utf-8")
    return path


def _build_world(monkeypatch: pytest.MonkeyPatch, pipelines_file: Path) -> World:
    aws_environment(monkeypatch)
    monkeypatch.setenv("RELEASES_TABLE", TABLE)
    monkeypatch.setenv("PIPELINES_FILE", str(pipelines_file))
    moto_extensions.install()
    bootstrap.reset()
    session = boto3.session.Session(region_name=REGION)
    provisioned = provision(
        session, load_pipelines(pipelines_file), table=TABLE, load_balanced={LOAD_BALANCED: INSTANCES}
    )
    monkeypatch.setenv("VERIFY_QUEUE_URL", provisioned.verify_queue_url)
    monkeypatch.setenv("NOTIFY_QUEUE_URL", provisioned.notify_queue_url)
    monkeypatch.setenv("NOTIFY_DLQ_URL", provisioned.notify_dlq_url)
    built = World(session=session, provisioned=provisioned, client=Client(app, stage_name=TEST_STAGE))
    built.s3_test_events = built._drain(provisioned.classic_queue_url)
    built._drain(provisioned.eventbridge_queue_url)
    return built


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, pipelines_file: Path) -> Iterator[World]:
    """moto in process."""
    with mock_aws():
        yield _build_world(monkeypatch, pipelines_file)
    bootstrap.reset()


@pytest.fixture
def served_world(monkeypatch: pytest.MonkeyPatch, pipelines_file: Path) -> Iterator[World]:
    """moto in server mode on 127.0.0.1: every call crosses HTTP, as in the sandbox."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    try:
        yield _build_world(monkeypatch, pipelines_file)
    finally:
        bootstrap.reset()
        server.stop()
        moto_api_backend.reset()  # the server shares this process's backends: leave them clean


# --- Every AWS call made inside a Lambda handler, by function (tests/integration/test_permissions.py) ---
# The handler being invoked is known from the test client (``lambda_.invoke(name, ...)``, or any HTTP
# request: the ``api_handler`` function); calls the tests make themselves (provisioning, assertions)
# happen outside any handler and are not recorded.
# (function name, text of the pipelines file it reads): the policies are scoped to that file.
_CURRENT_FUNCTION: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "handler", default=None
)


@dataclass(frozen=True)
class HandlerCall:
    function: str
    service: str  # botocore's service name: dynamodb, sqs, s3, codedeploy, elbv2, ssm, ...
    operation: str  # the API operation: GetItem, SendMessage, HeadObject, ...
    params: dict[str, Any]
    pipelines: str  # the text of the pipelines file in force (PIPELINES_FILE)


@contextlib.contextmanager
def _invoking(function: str) -> Iterator[None]:
    pipelines = bootstrap.pipelines_file().read_text(encoding="utf-8")
    token = _CURRENT_FUNCTION.set((function, pipelines))
    try:
        yield
    finally:
        _CURRENT_FUNCTION.reset(token)


@pytest.fixture(scope="session", autouse=True)
def handler_calls() -> Iterator[list[HandlerCall]]:
    """Installed for the whole session: a botocore ``before-parameter-build`` handler on every
    session created from here on (botocore copies ``BUILTIN_HANDLERS`` into each new session), and
    the test client's two entry points marking which function runs."""
    import botocore.handlers
    from chalice import test as chalice_test

    calls: list[HandlerCall] = []

    def record(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        current = _CURRENT_FUNCTION.get()
        if current is not None:
            function, pipelines = current
            service = str(model.service_model.service_name)
            calls.append(HandlerCall(function, service, str(model.name), dict(params), pipelines))

    original_invoke = chalice_test.TestLambdaClient.invoke
    original_request = chalice_test.TestHTTPClient.request

    def invoke(self: Any, function_name: str, payload: Any = None) -> Any:
        with _invoking(function_name):
            return original_invoke(self, function_name, payload)

    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _invoking("api_handler"):
            return original_request(self, *args, **kwargs)

    spec = ("before-parameter-build", record)
    botocore.handlers.BUILTIN_HANDLERS.append(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chalice_test.TestLambdaClient, "invoke", invoke)
        patch.setattr(chalice_test.TestHTTPClient, "request", request)
        try:
            yield calls
        finally:
            botocore.handlers.BUILTIN_HANDLERS.remove(spec)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The permission check reads what the whole suite recorded: it runs last."""
    last = [item for item in items if item.path.name.startswith("test_permissions")]
    items[:] = [item for item in items if item not in last] + last


class LogLines:
    """What the coordinator's log handler writes (where the EMF lines go: chalicelib.log's
    write_metrics), from a mark on."""

    def __init__(self, buffer: io.StringIO) -> None:
        self._buffer = buffer

    def take(self) -> str:
        """What was written since the last take."""
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    yield LogLines(buffer)
    handler.setStream(previous)

"""AWS errors injected into the calls the coordinator's handlers and routes make.

``aws_faults`` answers a chosen operation with an AWS error, as botocore's ``Stubber`` would: a
``before-call`` handler on every botocore session created while it is installed (the app's
clients are rebuilt for it), active only inside a Lambda handler or route, so the test's own
calls still reach moto.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3.session
import botocore.handlers
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID

from chalicelib import bootstrap
from chalicelib.adapters.codedeploy import release_id_in_description
from chalicelib.domain.leases import CLAIM_LEASE
from chalicelib.domain.release import Release, ReleaseState
from chalicelib.log import logger
from sandbox import moto_extensions
from sandbox.event_pump import lambda_sqs_record, lambda_stream_record
from tests.crash.world import reconcile_rate_s
from tests.integration import conftest
from tests.integration.conftest import LOAD_BALANCED, World, codedeploy_event
from tests.integration.test_receipt import attach_load_balancer


@dataclass
class Fault:
    service: str  # botocore's service name: codedeploy, dynamodb, s3, sqs, elbv2, ...
    operation: str  # the API operation: StopDeployment, TransactWriteItems, ...
    code: str
    http_status: int
    # Fail only this many calls (None: every one), after letting ``skip`` calls through.
    times: int | None = None
    skip: int = 0
    # Only in this Lambda function (None: in any).
    function: str | None = None
    seen: int = 0
    failed: int = 0
    # The handler invocation it first failed a call in (the driver numbers them).
    first_failed_in: int | None = None

    def applies(self, function: str, service: str, operation: str) -> bool:
        if (service, operation) != (self.service, self.operation):
            return False
        if self.function is not None and function != self.function:
            return False
        self.seen += 1
        if self.seen <= self.skip or (self.times is not None and self.failed >= self.times):
            return False
        self.failed += 1
        return True


@dataclass
class AwsFaults:
    faults: list[Fault] = field(default_factory=list)
    # Every call made inside a handler: (invocation, function, service, operation).
    calls: list[tuple[int, str, str, str]] = field(default_factory=list)
    # Which handler invocation runs: the driver counts them.
    invocation: int = 0

    def inject(
        self,
        service: str,
        operation: str,
        code: str,
        http_status: int = 400,
        *,
        times: int | None = None,
        skip: int = 0,
    ) -> Fault:
        fault = Fault(service, operation, code, http_status, times, skip)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def before_call(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        current = conftest._CURRENT_FUNCTION.get()
        if current is None:
            return None
        function, service, operation = current[0], str(model.service_model.service_name), str(model.name)
        self.calls.append((self.invocation, function, service, operation))
        for fault in self.faults:
            if fault.applies(function, service, operation):
                if fault.first_failed_in is None:
                    fault.first_failed_in = self.invocation
                return error_answer(fault.code, fault.http_status, operation)
        return None


_request_ids = itertools.count(1)


def error_answer(code: str, http_status: int, operation: str) -> tuple[AWSResponse, dict[str, Any]]:
    """What botocore hands the client for an AWS error answer: the HTTP response and the parsed
    error (the shape ``Stubber.add_client_error`` builds)."""
    request_id = f"injected-{next(_request_ids)}"
    http = AWSResponse("https://aws.invalid", http_status, {"x-amzn-requestid": request_id}, None)
    parsed = {
        "Error": {"Code": code, "Message": f"injected {code} on {operation}"},
        "ResponseMetadata": {"HTTPStatusCode": http_status, "RequestId": request_id, "HTTPHeaders": {}},
    }
    return http, parsed


@pytest.fixture
def aws_faults() -> Iterator[AwsFaults]:
    faults = AwsFaults()
    spec = ("before-call", faults.before_call)
    botocore.handlers.BUILTIN_HANDLERS.append(spec)
    bootstrap.reset()  # the app's clients come from a new session, with the handler
    try:
        yield faults
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(spec)
        bootstrap.reset()


# --- The sweep ----------------------------------------------------------------------------------
# Every scenario runs once cleanly, recording which AWS operations each handler and route calls.
# Then, for each (function, operation) and each error botocore's model lists for that operation
# (plus throttling, AccessDenied, a 500 and a 503), the scenario runs again from scratch with that
# call failing once, and AWS redelivering as it would (EventBridge's async retries, SQS receives,
# the CLI repeating a request with its Idempotency-Key, reconcile every 5 minutes). Afterwards:
# no 500 and no 5xx without a JSON body naming the AWS code; every release terminal; one CodeDeploy
# deployment per release; no upload lost; each release ends as in the clean run, or its reason,
# history or a log line names the AWS code. The notification path too: every history event
# reaches the notify queue, the queue ends empty, what was dead-lettered says why in the AWS
# code's name, and where the releases ended as in the clean run, each notification went out as
# often as in the clean run unless a log line names the code.
#
# A call that only a failure leads to (a claim dropped, a message delayed or dead-lettered, a
# lookup of a deployment whose start failed) is found in the run that made it: its errors are
# swept in turn, each with the faults of that run injected before it.
#
# Runs are shared: one world, emptied between runs (a new container each: new adapters and
# caches). A run fails each call at most once; calls of different functions, or of one function
# that no invocation ever made together, fail in the same run. A run that fails is repeated
# case by case, so each problem is pinned on its case.
#
# Errors the code cannot tell apart are run once: the code reads an error only by its code and
# HTTP status, so errors of one operation whose code appears nowhere under chalicelib/, which
# contain the same of the code-like strings the code looks for inside codes (secrets.py tells
# "AccessDenied" in "AccessDeniedException"), and whose HTTP status is alike (4xx, 429, 5xx) behave
# alike: one of them stands for all (each counted).

CHALICELIB = Path(__file__).resolve().parents[2] / "chalicelib"
SCENARIO_TIMEOUT_ROUNDS = 8
EVENTBRIDGE_ATTEMPTS = 3  # Lambda's asynchronous invocation: the first try and 2 retries
SQS_RECEIVES = 5  # the queues' maxReceiveCount before the dead-letter queue
CLI_ATTEMPTS = 3

# Known defects, each with what is wrong: (scenario, function, service, operation, error code or
# "*" for every error of the call) -> the defect. The sweep runs each alone and must see it fail
# (and then does not say "all handled"): once fixed, remove it from here. None is known.
KNOWN_DEFECTS: dict[tuple[str, str, str, str, str], str] = {}
# The reconcile schedule's period, as app.py declares it.
RECONCILE_PERIOD = timedelta(seconds=reconcile_rate_s())


# The modules that read a service's errors: its adapters, and the use cases and domain (which see
# only what adapters raise, but are scanned too in case they read a code). chalicelib/http_api.py reads
# codes of every service, but only to tell throttling from the rest (a class of its own below).
READERS = {
    "codedeploy": ["adapters/codedeploy.py"],
    "dynamodb": ["adapters/dynamodb_store.py", "adapters/delivery_log.py"],
    "elbv2": ["adapters/elbv2.py"],
    "cloudwatch": ["adapters/cloudwatch.py"],
    "s3": ["adapters/s3_artifacts.py"],
    "sqs": ["adapters/sqs_queues.py", "adapters/notify_queue.py"],
    "ses": ["adapters/email.py"],
    "sns": ["adapters/sns.py"],
    "ssm": ["adapters/secrets.py"],
    "secretsmanager": ["adapters/secrets.py"],
}


@functools.cache
def error_readers(service: str) -> str:
    """The source that could tell this service's errors apart (all of chalicelib/ but api.py for a
    service not listed)."""
    names = READERS.get(service)
    paths = (
        [CHALICELIB / name for name in names]
        + sorted((CHALICELIB / "service").rglob("*.py"))
        + sorted((CHALICELIB / "domain").rglob("*.py"))
        if names
        else [
            path
            for path in sorted(CHALICELIB.rglob("*.py"))
            if path.name != "api.py" or path.parent != CHALICELIB
        ]
    )
    return "\n".join(path.read_text(encoding="utf-8") for path in paths)


def generic_errors(service: str) -> list[tuple[str, int]]:
    """Throttling, AccessDenied, a 500 and a 503 as the service's protocol spells them."""
    protocol = botocore.session.get_session().get_service_model(service).protocol
    if service == "s3":
        return [("SlowDown", 503), ("AccessDenied", 403), ("InternalError", 500), ("ServiceUnavailable", 503)]
    if protocol == "query":
        return [
            ("Throttling", 400),
            ("AccessDenied", 403),
            ("InternalFailure", 500),
            ("ServiceUnavailable", 503),
        ]
    return [
        ("ThrottlingException", 400),
        ("AccessDeniedException", 400),
        ("InternalFailure", 500),
        ("ServiceUnavailable", 503),
    ]


def modeled_errors(service: str, operation: str) -> list[tuple[str, int]]:
    """The errors botocore's model lists for the operation: (the code AWS sends, HTTP status)."""
    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    errors = []
    for shape in model.error_shapes:
        trait = shape.metadata.get("error", {})
        errors.append((str(trait.get("code") or shape.name), int(trait.get("httpStatusCode") or 400)))
    return errors


@dataclass(frozen=True)
class Case:
    scenario: str
    function: str
    service: str
    operation: str
    code: str
    http_status: int
    # The errors of the operation this case stands for (itself included).
    stands_for: tuple[str, ...]
    # The faults injected with it: the call is made only on the path they lead to (a retry, a
    # dead-letter queue); empty for the calls of the clean runs.
    after: tuple[Case, ...] = ()

    @property
    def call(self) -> tuple[str, str, str]:
        return (self.function, self.service, self.operation)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.scenario, self.function, self.service, self.operation, self.code)

    def __str__(self) -> str:
        where = f"{self.function} {self.service}.{self.operation}"
        after = f" after [{'; '.join(f'{c.call} {c.code}' for c in self.after)}]" if self.after else ""
        return f"{self.scenario}: {where} {self.code} ({self.http_status}){after}"


def cases_for(
    scenario: str, function: str, service: str, operation: str, after: tuple[Case, ...] = ()
) -> list[Case]:
    from chalicelib.http_api import THROTTLING_CODES

    errors = dict.fromkeys([*modeled_errors(service, operation), *generic_errors(service)])
    readers = error_readers(service)
    # String literals spelled like an error code (or part of one) that the code may look for.
    literals = set(re.findall(r"[\"']([A-Z][A-Za-z0-9]{3,})[\"']", readers))
    classes: dict[Any, list[tuple[str, int]]] = {}
    for code, status in errors:
        told_apart = re.search(rf"\b{re.escape(code)}\b", readers) is not None
        throttled = function == "api_handler" and code in THROTTLING_CODES
        contains = frozenset(literal for literal in literals if literal in code)
        key = code if told_apart else ("alike", status >= 500, status == 429, throttled, contains)
        classes.setdefault(key, []).append((code, status))
    return [
        Case(
            scenario,
            function,
            service,
            operation,
            members[0][0],
            members[0][1],
            tuple(c for c, _ in members),
            after,
        )
        for members in classes.values()
    ]


def strip_delays(params: dict[str, Any], **_: Any) -> None:
    """Health checks are due at once: the sweep runs them without waiting out DelaySeconds."""
    params.pop("DelaySeconds", None)


STREAM_ATTEMPTS = 3  # a failing stream batch is retried (from its first failed record) this often
NOTIFY_BATCH = 5  # app.py's batch size for on_notify_message
NOTIFY_ROUNDS = 12  # receives of the notify queue before the sweep calls what is left stuck


@dataclass
class NotificationPump:
    """Lambda's two notification event sources: the table's stream into ``on_release_stream``
    (a failed batch retried from its first failed record), the FIFO notify queue into
    ``on_notify_message`` (what succeeded deleted; what failed comes back when its visibility
    ends, by SQS's own receive count and redrive)."""

    world: World
    notify_queue_url: str
    notify_queue_arn: str
    # Stream records no retry could hand over: their notifications were never queued.
    lost: list[dict[str, Any]] = field(default_factory=list)

    def _stream_records(self) -> list[dict[str, Any]]:
        """What the table wrote since the last poll, taken off moto's shard as Lambda's poller
        would read it: consumed records are trimmed (the shard's numbering goes on), because
        moto copies the whole table, stream included, on every TransactWriteItems."""
        table = releases_table()
        shard = table.stream_shard
        assert shard is not None, "the releases table has no stream"
        arn = f"{table.table_arn}/stream/{table.latest_stream_label}"
        records = [lambda_stream_record(record.to_json(), arn) for record in shard.items]
        shard.starting_sequence_number += len(shard.items)
        shard.items = []
        return records

    def _publish(self, driver: Driver) -> None:
        pending = self._stream_records()
        for _ in range(STREAM_ATTEMPTS):
            if not pending:
                return
            try:
                result = driver.lambda_invoke("on_release_stream", {"Records": pending})
            except Exception:
                continue
            failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
            numbers = [record["dynamodb"]["SequenceNumber"] for record in pending]
            pending = pending[min((numbers.index(n) for n in failed), default=len(pending)) :]
        self.lost.extend(pending)

    def pump(self, driver: Driver) -> None:
        """Everything new on the stream, then the notify queue until it is empty; when nothing is
        due, the time a message waits for (its visibility, a claim's lease) passes."""
        self._publish(driver)
        sqs = self.world.session.client("sqs")
        for _ in range(NOTIFY_ROUNDS):
            messages = sqs.receive_message(
                QueueUrl=self.notify_queue_url, MaxNumberOfMessages=NOTIFY_BATCH, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                if not queue_messages(self.notify_queue_url):
                    return
                driver.later += CLAIM_LEASE
                for message in queue_messages(self.notify_queue_url):
                    message.visible_at = 0.0
                continue
            records = [
                lambda_sqs_record(message, self.notify_queue_arn, conftest.REGION) for message in messages
            ]
            try:
                result = driver.lambda_invoke("on_notify_message", {"Records": records})
            except Exception:
                continue  # the whole batch comes back after its visibility timeout
            failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
            for record in records:
                if record["messageId"] not in failed:
                    sqs.delete_message(QueueUrl=self.notify_queue_url, ReceiptHandle=record["receiptHandle"])


def releases_table() -> Any:
    """moto's releases table."""
    return get_backend("dynamodb")[DEFAULT_ACCOUNT_ID][conftest.REGION].get_table(conftest.TABLE)


def queue_messages(queue_url: str) -> list[Any]:
    """moto's messages of a queue, visible or not."""
    queue = get_backend("sqs")[DEFAULT_ACCOUNT_ID][conftest.REGION].queues[queue_url.rsplit("/", 1)[1]]
    return list(queue._messages)


@dataclass
class Driver:
    """Runs a scenario's steps as AWS would deliver them, and settles what is left open."""

    world: World
    notifications: NotificationPump
    faults: AwsFaults
    http_answers: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    # How far the app's clock runs ahead of the wall clock: each reconcile round is the next run
    # of the 5-minute schedule, so what only reconcile repairs (an overdue check) is repaired.
    later: timedelta = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.later

    def lambda_invoke(self, function: str, event: dict[str, Any]) -> Any:
        """One invocation of a Lambda function (numbered: the faults record which made a call)."""
        self.faults.invocation += 1
        return self.world.invoke(function, event)

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        """An asynchronous invocation (EventBridge), retried by Lambda when it fails."""
        for _ in range(EVENTBRIDGE_ATTEMPTS):
            try:
                return self.lambda_invoke(function, event)
            except Exception:
                continue
        return None

    def deliver_queue(self, function: str, queue_name: str, bodies: list[dict[str, Any]]) -> None:
        pending = [json.dumps(body) for body in bodies]
        for _ in range(SQS_RECEIVES):
            if not pending:
                return
            event = self.world.client.events.generate_sqs_event(message_bodies=pending, queue_name=queue_name)
            try:
                result = self.lambda_invoke(function, event)
            except Exception:
                continue
            failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
            pending = [record["body"] for record in event["Records"] if record["messageId"] in failed]

    def http(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        headers = {"content-type": "application/json", **({"Idempotency-Key": key} if key else {})}
        raw = b"" if body is None else json.dumps(body).encode()
        response = None
        for _ in range(CLI_ATTEMPTS):
            self.faults.invocation += 1
            response = self.world.client.http.request(method, path, headers=headers, body=raw)
            self.http_answers.append((method, path, response.status_code, response.body))
            if response.status_code < 500:
                break
        return json.loads(response.body) if response is not None and response.body else None

    def upload(self, key: str) -> None:
        upload = self.world.upload(key)
        self.uploads.append(key)
        self.invoke("on_artifact_event", upload.eventbridge)

    def releases(self) -> list[Release]:
        found = [
            release
            for name in ("api-prod", "web-prod", "shop-prod")
            for release in self.world.store.list_releases(name, 100, None)
        ]
        return sorted(found, key=lambda release: (release.created_at, release.id))

    def settle(self) -> None:
        """CodeDeploy finishes what it runs (a key naming "broken" fails), health checks run, and
        reconcile runs every round, until nothing is open or the rounds run out."""
        for _ in range(SCENARIO_TIMEOUT_ROUNDS):
            self.notifications.pump(self)
            open_releases = [release for release in self.releases() if not release.state.is_terminal]
            if not open_releases:
                return
            for release in open_releases:
                if release.state is ReleaseState.DEPLOYING and release.deployment_id:
                    self._finish_deployment(release)
            checks = self.world.verify_messages(wait_s=0)
            self.deliver_queue("on_verify_message", "release-coordinator-verify", checks)
            if checks:
                continue
            # Nothing was due: what is still open waits for the next scheduled reconcile.
            self.later += RECONCILE_PERIOD
            self.invoke(
                "reconcile",
                self.world.client.events.generate_cw_event(
                    source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
                ),
            )
        self.notifications.pump(self)

    def _finish_deployment(self, release: Release) -> None:
        deployment_id = str(release.deployment_id)
        deployment = moto_extensions.backend().deployments.get(deployment_id)
        if deployment is None:
            return
        if deployment.status not in moto_extensions.TERMINAL_STATUSES:
            if moto_extensions.stop_requested(deployment_id):
                moto_extensions.complete(deployment_id, "Stopped")
            elif "stuck" in release.revision.key:
                # No agent picks it up: every instance Pending for an hour, long past the
                # watchdog's agent_timeout; reconcile's watchdog stops it.
                untouched = {"status": "Pending", "lastUpdatedAt": datetime.now(UTC) - timedelta(hours=1)}
                moto_extensions.set_instance_targets(deployment_id, dict.fromkeys(STUCK_INSTANCES, untouched))
                return
            elif "broken" in release.revision.key:
                moto_extensions.complete(
                    deployment_id, "Failed", error_code="HEALTH_CONSTRAINTS", error_message="too many failed"
                )
            else:
                if release.pipeline == LOAD_BALANCED:
                    instances = self.world.provisioned.load_balanced[LOAD_BALANCED].instance_ids
                    moto_extensions.set_instance_targets(
                        deployment_id, {i: {"status": "Succeeded"} for i in instances}
                    )
                moto_extensions.complete(deployment_id, "Succeeded")
        state = {"Stopped": "STOP", "Failed": "FAILURE"}.get(str(deployment.status), "SUCCESS")
        self.invoke(
            "on_codedeploy_event",
            codedeploy_event(deployment_id, state, release.application, release.deployment_group),
        )


def deploy_and_verify(driver: Driver) -> None:
    """An upload to a load-balanced pipeline, deployed and verified."""
    driver.upload("shop/prod/shop-1.zip")
    driver.settle()


def failure_and_rollback(driver: Driver) -> None:
    """A verified release, then a failing one rolled back to it automatically."""
    driver.upload("shop/prod/shop-1.zip")
    driver.settle()
    driver.upload("shop/prod/shop-2-broken.zip")
    driver.settle()


def through_the_api(driver: Driver) -> None:
    """Deploy, queue, read, and cancel a waiting and a deploying release."""
    for key in ("api/prod/app-1.zip", "api/prod/app-2.zip"):
        driver.world.upload(key)  # its S3 event is lost: the API deploys it
    first = driver.http("POST", "/releases", {"pipeline": "api-prod", "key": "api/prod/app-1.zip"}, "k-1")
    second = driver.http("POST", "/releases", {"pipeline": "api-prod", "key": "api/prod/app-2.zip"}, "k-2")
    for path in ("/releases", "/pipelines", "/pipelines/api-prod", "/pipelines/shop-prod/fleet"):
        driver.http("GET", path)
    for created in (second, first):
        if created and "id" in created:
            driver.http("GET", f"/releases/{created['id']}")
            driver.http("POST", f"/releases/{created['id']}/cancel", key=f"cancel-{created['id']}")
    driver.settle()


STUCK_INSTANCES = ("i-0stuck0000000001", "i-0stuck0000000002")


def stuck_deployment(driver: Driver) -> None:
    """An upload whose deployment no agent picks up: the watchdog (reconcile) stops it and the
    release fails with its diagnosis."""
    driver.upload("api/prod/app-stuck.zip")
    driver.settle()


SCENARIOS: dict[str, Callable[[Driver], None]] = {
    "deploy_and_verify": deploy_and_verify,
    "failure_and_rollback": failure_and_rollback,
    "through_the_api": through_the_api,
    "stuck_deployment": stuck_deployment,
}


@dataclass
class Run:
    driver: Driver
    log: str
    calls: list[tuple[int, str, str, str]]
    # The cases whose faults were injected (those they come after first), and their faults.
    injected: list[Case]
    faults: list[Fault]
    labels: dict[tuple[str, str, str, int], Release]
    histories: dict[str, str]
    deployments: dict[str, int]
    # What reached each channel: (channel, what identifies the notification) -> how many times.
    sent: Counter[tuple[str, ...]]
    # Notify messages still on the queue, and those on its dead-letter queue (with their reason).
    undelivered: list[str]
    dead_lettered: list[str]


SENDER = "relco@acme.example"
TOPIC_ARN = f"arn:aws:sns:{conftest.REGION}:{DEFAULT_ACCOUNT_ID}:relco-deploys"
WEBHOOK_URL_PARAMETER = "/relco/webhook/url"
SIGNING_KEY_SECRET = "relco/webhook-signing-key"
# shop-prod is the last [[pipeline]] of the shared file: its notify routes, one per AWS channel
# (Slack is not AWS): SES, SNS, and a webhook whose URL is in SSM and signing key in Secrets
# Manager. Every run's notifications go through the stream, the notify queue and these.
NOTIFY_ROUTES = f"""
[[pipeline.notify]]
kind = "email"
sender = "{SENDER}"
to = ["oncall@acme.example"]
on = ["started", "failed", "verify_failed", "rolled_back", "succeeded"]

[[pipeline.notify]]
kind = "sns"
topic_arn = "{TOPIC_ARN}"
on = ["failed", "rolled_back"]

[[pipeline.notify]]
kind = "webhook"
url_parameter = "{WEBHOOK_URL_PARAMETER}"
signing_key_secret = "{SIGNING_KEY_SECRET}"
"""


# shop-prod's verify.alarms: every health check reads them (DescribeAlarms), so the sweep fails
# that call too. Created OK, so the clean runs verify as before.
ALARMS = ("shop-5xx",)


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.toml"
    with_alarms = conftest.PIPELINES_TOML.replace(
        "deadline_s = 60\n", f"deadline_s = 60\nalarms = {list(ALARMS)!r}\n"
    )
    assert with_alarms != conftest.PIPELINES_TOML
    path.write_text(with_alarms + NOTIFY_ROUTES, encoding="utf-8")
    return path


def ses_backend() -> Any:
    return get_backend("ses")[DEFAULT_ACCOUNT_ID][conftest.REGION]


def sns_topic() -> Any:
    return get_backend("sns")[DEFAULT_ACCOUNT_ID][conftest.REGION].topics[TOPIC_ARN]


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1 that keeps the bodies it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/relco"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def shared_clients(make_client: Callable[..., Any]) -> Callable[..., Any]:
    """``Session.client`` handing out one client per service and configuration, whichever
    session asks (every session of the sweep has the same credentials, region and handlers)."""
    made: dict[str, Any] = {}

    def client(session: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
        options = {name: getattr(value, "_user_provided_options", value) for name, value in kwargs.items()}
        key = repr((service_name, args, options))
        if key not in made:
            made[key] = make_client(session, service_name, *args, **kwargs)
        return made[key]

    return client


class Sweep:
    """One moto world for every run (provisioning it costs more than a scenario): between runs the
    table, the queues and CodeDeploy's deployments are emptied, and the app keeps its clients, as
    a warm container would."""

    def __init__(self, pipelines_file: Path) -> None:
        self.pipelines_file = pipelines_file
        self.faults = AwsFaults()
        self._stack = contextlib.ExitStack()
        self.world: World | None = None
        self.log = io.StringIO()
        # By scenario: the pairs of calls some invocation of a run so far made together.
        self.together: dict[str, set[frozenset[Call]]] = {}

    def __enter__(self) -> Sweep:
        stack = self._stack
        specs: list[tuple[str, Callable[..., Any]]] = [
            ("before-call", self.faults.before_call),
            ("before-parameter-build.sqs.SendMessage", strip_delays),
        ]
        botocore.handlers.BUILTIN_HANDLERS.extend(specs)
        stack.callback(lambda: [botocore.handlers.BUILTIN_HANDLERS.remove(spec) for spec in specs])
        stack.callback(bootstrap.reset)
        handler = logger.registered_handler
        assert isinstance(handler, logging.StreamHandler)
        previous = handler.setStream(self.log)
        stack.callback(handler.setStream, previous)
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        # moto's EC2 otherwise loads a thousand AMIs; the sweep launches no instance of its own.
        patch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        stack.enter_context(mock_aws())
        # Each run is a new container (bootstrap.reset: new adapters, empty caches), but creating
        # a botocore client costs more than most runs' calls: clients, which keep no state the
        # runs could share, are made once per service and configuration for the whole sweep.
        patch.setattr(boto3.session.Session, "client", shared_clients(boto3.session.Session.client))
        self.world = conftest._build_world(patch, self.pipelines_file)
        self.webhook = stack.enter_context(WebhookReceiver())
        self._provision_routes(self.world)
        return self

    def _provision_routes(self, world: World) -> None:
        """What the notify routes of NOTIFY_ROUTES read and send to."""
        ssm = world.session.client("ssm")
        ssm.put_parameter(Name=WEBHOOK_URL_PARAMETER, Value=self.webhook.url, Type="SecureString")
        world.session.client("secretsmanager").create_secret(Name=SIGNING_KEY_SECRET, SecretString="whsec-k")
        world.session.client("sns").create_topic(Name=TOPIC_ARN.rsplit(":", 1)[1])
        world.session.client("ses").verify_email_identity(EmailAddress=SENDER)
        for alarm in ALARMS:
            world.session.client("cloudwatch").put_metric_alarm(
                AlarmName=alarm,
                Namespace="AWS/ApplicationELB",
                MetricName="HTTPCode_Target_5XX_Count",
                Statistic="Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=1,
                ComparisonOperator="GreaterThanOrEqualToThreshold",
            )
        # shop-prod's target group behind an ALB: a release that ends reads its metrics for the
        # receipt (GetMetricData), so the sweep fails that call too.
        attach_load_balancer(world)
        arn = world.session.client("sqs").get_queue_attributes(
            QueueUrl=world.provisioned.notify_queue_url, AttributeNames=["QueueArn"]
        )
        self.notify_queue_arn = arn["Attributes"]["QueueArn"]

    def _sent(self) -> Counter[tuple[str, ...]]:
        sent: Counter[tuple[str, ...]] = Counter()
        for mail in ses_backend().sent_messages:
            sent["email", mail.subject] += 1
        for notification in sns_topic().sent_notifications:
            sent["sns", str(notification[2])] += 1
        for body in self.webhook.bodies:
            payload = json.loads(body)
            release = payload["release"]
            sent["webhook", payload["notification"], release["revision"]["key"], release["trigger"]] += 1
        return sent

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _clear(self, world: World) -> None:
        # Emptied in moto itself, without calls: deleting item by item would also grow the table's
        # stream, which moto copies whole on every TransactWriteItems.
        table = releases_table()
        table.items.clear()
        assert table.stream_shard is not None, "the releases table has no stream"
        table.stream_shard.items.clear()
        for queue in get_backend("sqs")[DEFAULT_ACCOUNT_ID][conftest.REGION].queues.values():
            queue._messages.clear()
        moto_extensions.backend().deployments.clear()
        moto_extensions.clear_target_health()
        ses_backend().sent_messages.clear()
        sns_topic().sent_notifications.clear()
        self.webhook.bodies.clear()
        # A new container: a warm one's caches (target groups, secrets) would skip the calls.
        bootstrap.reset()
        self.faults.calls.clear()
        self.log.seek(0)
        self.log.truncate()

    def run(self, name: str, cases: list[Case]) -> Run:
        """The scenario with each case's call failing once, after the faults it comes after."""
        world = self.world
        assert world is not None
        self._clear(world)
        self.faults.faults = []
        faults = []
        # The faults leading to the cases' calls first, then the cases' own (the last ones).
        injected = [*dict.fromkeys(earlier for own in cases for earlier in own.after), *cases]
        for case in injected:
            fault = self.faults.inject(case.service, case.operation, case.code, case.http_status, times=1)
            fault.function = case.function
            faults.append(fault)
        notifications = NotificationPump(world, world.provisioned.notify_queue_url, self.notify_queue_arn)
        driver = Driver(world, notifications, self.faults)
        with pytest.MonkeyPatch.context() as clock:
            clock.setattr(bootstrap.SystemClock, "now", lambda _clock: driver.now())
            SCENARIOS[name](driver)
        self.faults.faults = []
        made: dict[int, set[Call]] = {}
        for invocation, function, service, operation in self.faults.calls:
            made.setdefault(invocation, set()).add((function, service, operation))
        self.together.setdefault(name, set()).update(
            frozenset((a, b)) for calls in made.values() for a in calls for b in calls
        )
        releases = driver.releases()
        labels: dict[tuple[str, str, str, int], Release] = {}
        for release in releases:
            base = (release.pipeline, release.revision.key, release.trigger.value)
            count = sum(1 for label in labels if label[:3] == base)
            labels[(*base, count)] = release
        histories = {
            release.id: json.dumps([event.to_dict() for event in world.store.history(release.id)])
            for release in releases
        }
        deployments: dict[str, int] = {}
        for deployment in moto_extensions.backend().deployments.values():
            owner = release_id_in_description(deployment.description) or "?"
            deployments[owner] = deployments.get(owner, 0) + 1
        undelivered = [message.body for message in queue_messages(world.provisioned.notify_queue_url)]
        dead_lettered = [
            f"{message.body} {message.message_attributes}"
            for message in queue_messages(world.provisioned.notify_dlq_url)
        ]
        return Run(
            driver,
            self.log.getvalue(),
            list(self.faults.calls),
            injected,
            faults,
            labels,
            histories,
            deployments,
            self._sent(),
            undelivered,
            dead_lettered,
        )


def problems(run: Run, baseline: Run, cases: list[Case]) -> list[str]:
    """What the run did that is not a defined outcome (``cases``: the errors injected)."""
    codes = {injected.code for case in cases for injected in (case, *case.after)}

    def named(text: str) -> bool:
        return any(code in text for code in codes)

    found: list[str] = []
    for method, path, status, body in run.driver.http_answers:
        if status < 500:
            continue
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if status == 500 or not isinstance(answer, dict) or not answer.get("Message"):
            found.append(f"{method} {path} answered {status} {body[:120]!r}")
        elif answer.get("aws_error") not in (*codes, None):
            found.append(f"{method} {path} answered {status} naming {answer.get('aws_error')}, not {codes}")
    for label, release in run.labels.items():
        if not release.state.is_terminal:
            found.append(f"release {label} left {release.state.value} with nothing to move it")
    for owner, count in run.deployments.items():
        if count > 1:
            found.append(f"release {owner} deployed {count} times")
    uploaded = {label[1] for label in run.labels if label[2] == "upload"}
    skips = [line for line in run.log.splitlines() if "skipped" in line or "ignored" in line]
    for key in run.driver.uploads:
        if key not in uploaded and not named(run.log) and not any(key in line for line in skips):
            found.append(f"upload {key} lost: no release, and no log line skipping it or naming {codes}")
    # A request refused with a 4xx (what to fix, or a state that forbids it) told the caller why
    # its release ended otherwise, or was never made.
    refused = [answer[:3] for answer in run.driver.http_answers if 400 <= answer[2] < 500] != [
        answer[:3] for answer in baseline.driver.http_answers if 400 <= answer[2] < 500
    ]
    if run.driver.notifications.lost and not named(run.log):
        found.append(f"{len(run.driver.notifications.lost)} history events never reached the notify queue")
    for message in run.undelivered:
        found.append(f"notify message left on the queue: {message[:160]}")
    for entry in run.dead_lettered:
        if not named(entry) and not named(run.log):
            found.append(f"notify message dead-lettered without naming {codes}: {entry[:160]}")
    # Where the releases ended as in the clean run, so did their notifications: each sent once,
    # or a dead-letter reason or log line names the AWS code.
    same_releases = {label: (r.state, r.trigger) for label, r in run.labels.items()} == {
        label: (r.state, r.trigger) for label, r in baseline.labels.items()
    }
    if same_releases:
        for sent in sorted(set(run.sent) | set(baseline.sent)):
            times, expected_times = run.sent[sent], baseline.sent[sent]
            # Fewer: dead-lettered or given up, saying why. More: sent again by a retry after a
            # failure between the send and its record in the delivery log, which the log names.
            excused = named(run.log) or (times < expected_times and any(map(named, run.dead_lettered)))
            if times != expected_times and not excused:
                found.append(f"notification {sent} sent {times} times, not {expected_times}")
    for label, expected in baseline.labels.items():
        got = run.labels.get(label)
        if got is not None and (got.state, got.trigger) == (expected.state, expected.trigger):
            continue
        if refused and label[2] in ("api", "rollback"):
            continue
        if got is not None and (named(got.reason) or named(run.histories.get(got.id, ""))):
            continue
        if named(run.log) or (got is None and label[1] in " ".join(skips)):
            continue
        state = got.state.value if got else "missing"
        found.append(f"release {label} ended {state}, not {expected.state.value}, and nothing names {codes}")
    return found


Call = tuple[str, str, str]  # (function, service, operation)


def fits(placed: Case, case: Case, together: dict[str, set[frozenset[Call]]]) -> bool:
    """Whether ``case`` may run beside ``placed``: another call, and of another function or of
    one no invocation of a run so far made together with it."""
    if placed.call == case.call:
        return False
    return (
        placed.function != case.function or frozenset((placed.call, case.call)) not in together[case.scenario]
    )


def rounds(cases: list[Case], together: dict[str, set[frozenset[Call]]]) -> list[list[Case]]:
    """Cases grouped into runs of their scenario. A run fails each call once at most, and two calls
    of one function only when no invocation of a run so far made both (``together``): each fault
    meets an invocation of its own, as faults of different functions do. The faults a case comes
    after count as its own here. Each operation's first error class is placed first."""
    seen: dict[Call, int] = {}
    ranked = []
    for case in cases:
        seen[case.call] = seen.get(case.call, -1) + 1
        ranked.append((seen[case.call], case))
    grouped: list[tuple[list[Case], set[Case]]] = []  # the cases, and every fault their run injects
    for _, case in sorted(ranked, key=lambda pair: pair[0]):
        mine = {*case.after, case}
        for group, injected in grouped:
            if group[0].scenario == case.scenario and all(
                theirs == own or fits(theirs, own, together) for theirs in injected for own in mine
            ):
                group.append(case)
                injected.update(mine)
                break
        else:
            grouped.append(([case], mine))
    return [group for group, _ in grouped]


class Summary:
    """Prints the sweep's line at the end of the session's terminal report (with or without -s)."""

    def __init__(self, line: str) -> None:
        self.line = line

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_line(self.line)


def all_cases(sweep: Sweep) -> tuple[dict[str, Run], list[Case]]:
    baselines = {name: sweep.run(name, []) for name in SCENARIOS}
    cases: list[Case] = []
    covered: set[tuple[str, str, str]] = set()
    for name, baseline in baselines.items():
        assert problems(baseline, baseline, []) == [], name
        # Each call of each function in the first scenario that makes it.
        for call in dict.fromkeys((function, service, op) for _, function, service, op in baseline.calls):
            if call not in covered:
                covered.add(call)
                cases.extend(cases_for(name, *call))
    return baselines, cases


def known_defect(case: Case) -> str | None:
    """The known defect this case shows (one of the errors it stands for is recorded), if any."""
    for (scenario, function, service, operation, code), why in KNOWN_DEFECTS.items():
        if case.key[:4] == (scenario, function, service, operation) and code in ("*", *case.stands_for):
            return why
    return None


@pytest.mark.timeout(600)
def test_every_aws_error_of_every_call_has_a_defined_outcome(
    pipelines_file: Path, request: pytest.FixtureRequest
) -> None:
    started, cpu_started = time.monotonic(), time.process_time()
    runs = 0
    with Sweep(pipelines_file) as sweep:
        baselines, cases = all_cases(sweep)
        covered = {case.call for case in cases}
        known = [case for case in cases if known_defect(case)]
        outcomes: dict[Case, list[str]] = {}
        pending = rounds([case for case in cases if case not in known], sweep.together)
        waiting: list[Case] = []  # cases found on the way, grouped once the runs before are done

        def sweep_run(scenario: str, injected: list[Case]) -> Run:
            """A run; the calls it made that no case covers yet become cases after its faults."""
            nonlocal runs
            run = sweep.run(scenario, injected)
            runs += 1
            discovered = []
            for invocation, *made in run.calls:
                call = (made[0], made[1], made[2])
                if call not in covered:
                    covered.add(call)
                    # What leads to it: the faults that had failed a call by then.
                    after = tuple(
                        case
                        for case, fault in zip(run.injected, run.faults, strict=True)
                        if fault.first_failed_in is not None and fault.first_failed_in <= invocation
                    )
                    discovered.extend(cases_for(scenario, *call, after=after))
            cases.extend(discovered)
            known.extend(case for case in discovered if known_defect(case))
            waiting.extend(case for case in discovered if case not in known)
            return run

        fixed: list[str] = []
        checked = 0  # known defects run so far (a run may discover calls, hence more cases)
        while pending or waiting or checked < len(known):
            if not pending and waiting:
                pending = rounds(waiting, sweep.together)
                waiting.clear()
                continue
            if not pending:
                # A known defect still ends badly, alone: once fixed, remove it from KNOWN_DEFECTS.
                case = known[checked]
                checked += 1
                alone = sweep_run(case.scenario, [case])
                if alone.faults[-1].failed == 0 or not problems(alone, baselines[case.scenario], [case]):
                    fixed.append(f"{case}: no longer fails ({known_defect(case)})")
                continue
            group = pending.pop(0)
            run = sweep_run(group[0].scenario, group)
            found = problems(run, baselines[group[0].scenario], group)
            # The cases' own faults are the last ones (those of the faults they come after lead
            # the way; a case's call failing may take another way afterwards).
            fired = [
                case for case, fault in zip(group, run.faults[-len(group) :], strict=True) if fault.failed
            ]
            if not found and fired:
                # A defined outcome with these calls failed: each of them ran and passed. Those
                # another fault kept from their call run again, in runs of their own making.
                outcomes.update({case: [] for case in fired})
                pending[:0] = rounds([case for case in group if case not in fired], sweep.together)
                continue
            # A failure to attribute, or no fault reached its call: one by one.
            for case in group:
                alone = sweep_run(case.scenario, [case])
                outcomes[case] = problems(alone, baselines[case.scenario], [case])
                if alone.faults[-1].failed == 0:
                    outcomes[case].append(f"{case}: the call was never made with this fault in place")
    unhandled = {str(case): found for case, found in outcomes.items() if found}
    operations = {(case.service, case.operation) for case in cases}
    errors = {(case.service, case.operation, code) for case in cases for code in case.stands_for}
    handled = len(outcomes) - len(unhandled)
    status = (
        "all handled"
        if handled == len(cases)
        else f"{handled} handled, {len(known)} known defects, {len(unhandled)} unhandled"
    )
    line = (
        f"error model: {len(operations)} operations, {len(errors)} errors, {len(cases)} cases, {status}"
        f" [{runs} runs, {time.monotonic() - started:.0f} s, {time.process_time() - cpu_started:.0f} s CPU]"
    )
    request.config.pluginmanager.register(Summary(line), "error-model-summary")
    # The receipt's read, made by every release that ends behind the ALB (_provision_routes).
    assert ("cloudwatch", "GetMetricData") in operations
    assert not unhandled, json.dumps(unhandled, indent=1)
    assert not fixed, fixed

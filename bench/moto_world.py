"""moto in process (``mock_aws``), provisioned as the integration tests provision it, with the
Chalice handlers invoked directly as Lambda invokes them, and every AWS call the coordinator's
own clients make recorded by botocore event hooks.

Events are the emulator's own where it produces them (S3 to EventBridge to SQS, the table's
stream); CodeDeploy's state-change events are built in the shape the integration tests use,
since moto emits none.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3

from sandbox.event_pump import lambda_sqs_record

REGION = "us-east-1"
TABLE = "releases-bench"
BUCKET = "bench-artifacts"
ACCOUNT = "123456789012"

# Names the integration fixture sets; the benchmark saves and restores each one.
_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_MAX_ATTEMPTS": "1",
    "POWERTOOLS_SERVICE_NAME": "release-coordinator",
}


def pipeline_toml(
    name: str,
    *,
    application: str | None = None,
    verify: Mapping[str, int] | None = None,
    webhook: bool = False,
    slack_token_parameter: str | None = None,
) -> str:
    """One ``[[pipeline]]`` whose prefix is ``<name>/``. ``webhook`` adds a notify route, so the
    stream handler has a message to publish (never delivered: the benchmarks that use it run no
    notify handler); ``slack_token_parameter`` adds a Slack route whose bot token is in SSM."""
    lines = [
        "[[pipeline]]",
        f'name = "{name}"',
        f'bucket = "{BUCKET}"',
        f'prefix = "{name}/"',
        f'application = "{application or name}"',
        f'deployment_group = "{name}"',
    ]
    if verify:
        lines.append("[pipeline.verify]")
        lines.extend(f"{key} = {value}" for key, value in verify.items())
    if slack_token_parameter:
        lines += [
            "[[pipeline.notify]]",
            'kind = "slack"',
            'channel = "#deploys"',
            f'token_parameter = "{slack_token_parameter}"',
        ]
    if webhook:
        lines += [
            "[[pipeline.notify]]",
            'kind = "webhook"',
            'url = "http://127.0.0.1:9/bench-hook"',
            'signing_key_parameter = "/relco/bench/webhook-signing-key"',
        ]
    return "\n".join(lines) + "\n"


class _NoTableCopies:
    """Stands in for the ``copy`` module inside moto's DynamoDB models during a transaction.

    moto 5.2.5 deep-copies every table a TransactWriteItems touches, once per item, to roll back
    on failure: a transaction's cost grows with everything the table and its stream hold, and a
    run of a thousand releases would measure moto's copying. ``install_transaction_undo`` keeps
    an undo log of the items the transaction touches instead, with the same all-or-nothing result.
    """

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        from moto.dynamodb.models.table import Table

        return value if isinstance(value, Table) else copy.deepcopy(value, memo)


_undo_installed = False


def install_transaction_undo() -> None:
    """Before ``sandbox.moto_extensions.install()``, which wraps the transaction in its lock."""
    global _undo_installed  # noqa: PLW0603 - one process-wide patch, applied once
    if _undo_installed:
        return
    from moto.dynamodb import models
    from moto.dynamodb.models.dynamo_type import DynamoType

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
        if any("Update" in entry for entry in transact_items):
            original(backend, transact_items)  # an update changes an item in place: copy it all
            return
        undo: list[tuple[Any, Any, Any, Any]] = []  # (table, hash, range, item before)
        streams: dict[int, tuple[Any, int]] = {}
        for entry in transact_items:
            kind, operation = next(iter(entry.items()))
            table = backend.tables.get(operation.get("TableName"))
            if table is None or kind == "ConditionCheck":
                continue
            key = operation["Key"] if kind == "Delete" else operation["Item"]
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            undo.append((table, hash_value, range_value, table.get_item(hash_value, range_value)))
            if table.stream_shard is not None:
                streams[id(table)] = (table.stream_shard, len(table.stream_shard.items))
        vars(models)["copy"] = _NoTableCopies
        try:
            original(backend, transact_items)
        except Exception:
            for table, hash_value, range_value, before in reversed(undo):
                if range_value is None:
                    table.items.pop(hash_value, None)
                    if before is not None:
                        table.items[hash_value] = before
                    continue
                table.items[hash_value].pop(range_value, None)
                if before is not None:
                    table.items[hash_value][range_value] = before
            for shard, length in streams.values():
                del shard.items[length:]
            raise
        finally:
            vars(models)["copy"] = copy

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[assignment]
    _undo_installed = True


@dataclass
class ApiCall:
    service: str
    operation: str
    params: dict[str, Any]
    # The parsed answer (DynamoDB reads are priced by the size of what they return).
    response: dict[str, Any] | None = None
    # From botocore's before-call (the request already serialised) to its parsed answer: signing,
    # the retry handler, the emulator's dispatch and work, and the parsing.
    seconds: float = 0.0


@dataclass
class CallRecorder:
    """Counts the calls of every client created from the sessions it watches: the hooks are
    registered on the session, so clients created later (lazily, on first use) are counted too."""

    calls: list[ApiCall] = field(default_factory=list)

    def before_parameter_build(self, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        # before-call sees the serialised request; the operation's own parameters are seen here.
        context["bench_params"] = dict(params)

    def before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        context["bench_call"] = len(self.calls)
        params = context.get("bench_params", {})
        self.calls.append(ApiCall(model.service_model.service_name, model.name, params))
        context["bench_sent"] = time.perf_counter()

    def after_call(self, parsed: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        index = context.get("bench_call")
        if index is None:
            return
        self.calls[index].seconds = time.perf_counter() - context["bench_sent"]
        if self.calls[index].service == "dynamodb":
            self.calls[index].response = dict(parsed)

    @contextmanager
    def watching_new_sessions(self) -> Iterator[None]:
        """Every boto3 session created inside the block gets the hooks (``bootstrap.wiring()``
        creates its own session, not ``boto3.DEFAULT_SESSION``)."""
        original = boto3.session.Session.__init__

        def hooked(session: Any, *args: Any, **kwargs: Any) -> None:
            original(session, *args, **kwargs)
            session.events.register("before-parameter-build", self.before_parameter_build)
            session.events.register("before-call", self.before_call)
            session.events.register("after-call", self.after_call)

        boto3.session.Session.__init__ = hooked
        try:
            yield
        finally:
            boto3.session.Session.__init__ = original

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> list[ApiCall]:
        return self.calls[mark:]


@dataclass(frozen=True)
class Upload:
    key: str
    release_id: str
    eventbridge: dict[str, Any]


class MotoWorld:
    """``with MotoWorld(toml, load_balanced={...}) as world:`` moto in process, the coordinator
    wired from the environment (its clients recorded in ``world.recorder``), and the handlers."""

    def __init__(
        self,
        pipelines: str,
        *,
        load_balanced: Mapping[str, int] | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.pipelines_text = pipelines
        self.environment = dict(environment or {})
        self.load_balanced = dict(load_balanced or {})
        self.recorder = CallRecorder()
        self._saved: dict[str, str | None] = {}
        self._workdir = tempfile.TemporaryDirectory(prefix="relco-bench-")
        self._mock: Any = None
        self._log_file: Any = None
        self._previous_stream: tuple[logging.StreamHandler[Any], Any] | None = None
        self.session: Any = None
        self.provisioned: Any = None
        self.app: Any = None
        self._wirings: dict[str, Any] = {}

    def __enter__(self) -> MotoWorld:
        from moto import mock_aws

        from chalicelib import bootstrap
        from chalicelib.domain.pipelines import load_pipelines
        from sandbox import moto_extensions
        from sandbox.provision import provision

        pipelines_file = Path(self._workdir.name) / "pipelines.toml"
        pipelines_file.write_text(self.pipelines_text, encoding="utf-8")
        self._set_environment(
            {
                **_ENVIRONMENT,
                "RELEASES_TABLE": TABLE,
                "PIPELINES_FILE": str(pipelines_file),
                **self.environment,
            }
        )
        self._mock = mock_aws()
        self._mock.start()
        install_transaction_undo()
        moto_extensions.install()
        bootstrap.reset()
        self.session = boto3.session.Session(region_name=REGION)
        self.provisioned = provision(
            self.session, load_pipelines(pipelines_file), table=TABLE, load_balanced=self.load_balanced
        )
        self._set_environment(
            {
                "VERIFY_QUEUE_URL": self.provisioned.verify_queue_url,
                "NOTIFY_QUEUE_URL": self.provisioned.notify_queue_url,
                "NOTIFY_DLQ_URL": self.provisioned.notify_dlq_url,
            }
        )
        self._quiet_logs()
        import app

        self.app = app
        # Provisioning itself produced S3 test events; the benchmark's uploads start clean.
        self.drain(self.provisioned.eventbridge_queue_url)
        self.drain(self.provisioned.classic_queue_url)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        from chalicelib import bootstrap

        bootstrap.reset()
        if self._mock is not None:
            self._mock.stop()
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self._previous_stream is not None:
            handler, stream = self._previous_stream
            handler.setStream(stream)
        if self._log_file is not None:
            self._log_file.close()
        self._workdir.cleanup()

    def _set_environment(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            self._saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _quiet_logs(self) -> None:
        """The handlers still log every event as in Lambda, but to a file: writing to the runner's
        pipe would measure the pipe."""
        from chalicelib.log import logger as coordinator_logger

        handler = coordinator_logger.registered_handler
        if isinstance(handler, logging.StreamHandler):
            self._log_file = (Path(self._workdir.name) / "coordinator.log").open("a", encoding="utf-8")
            self._previous_stream = (handler, handler.setStream(self._log_file))

    # uploads and their events

    def upload_many(self, keys: Sequence[str]) -> list[Upload]:
        """Put each object (versioned bucket), then collect the EventBridge events S3 sent for them."""
        from chalicelib.domain.release import Revision, upload_release_id

        s3 = self.session.client("s3")
        release_ids: dict[str, str] = {}
        events: list[dict[str, Any]] = []
        for number, key in enumerate(keys, start=1):
            answer = s3.put_object(Bucket=BUCKET, Key=key, Body=uuid.uuid4().bytes)
            revision = Revision(BUCKET, key, answer["VersionId"], answer["ETag"].strip('"'))
            release_ids[key] = upload_release_id(revision)
            # moto scans a queue's messages on every send: keep the queues short.
            if number % 25 == 0 or number == len(keys):
                events += self.drain(self.provisioned.eventbridge_queue_url)
                # The classic notification is the same upload again: EventBridge's shape is used.
                self.drain(self.provisioned.classic_queue_url)
        by_key = {event["detail"]["object"]["key"]: event for event in events}
        missing = sorted(set(keys) - set(by_key))
        if missing:
            raise RuntimeError(f"moto sent no EventBridge event for {missing[:3]}")
        return [Upload(key, release_ids[key], by_key[key]) for key in keys]

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        sqs = self.session.client("sqs")
        bodies: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return bodies
            bodies.extend(json.loads(message["Body"]) for message in messages)
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )

    # CodeDeploy, played by the benchmark as the integration tests play it

    def deployment_of(self, release_id: str) -> str:
        release = self.store().get_release(release_id)
        if release is None or release.deployment_id is None:
            raise RuntimeError(f"release {release_id} has no deployment")
        return str(release.deployment_id)

    def active_deployments(self) -> list[tuple[str, str, str]]:
        """(deployment id, application, group) of every deployment CodeDeploy has not finished."""
        from sandbox import moto_extensions

        return [
            (d.deployment_id, d.application_name, d.deployment_group_name)
            for d in moto_extensions.backend().deployments.values()
            if d.status not in moto_extensions.TERMINAL_STATUSES
        ]

    def store(self) -> Any:
        """A store on the benchmark's own session: its reads are not the coordinator's calls."""
        from chalicelib.adapters.dynamodb_store import DynamoReleaseStore

        return DynamoReleaseStore(self.session.client("dynamodb"), TABLE)

    def stream_records(self, batch_size: int = 100) -> Iterator[list[dict[str, Any]]]:
        """The table's stream from its oldest record, in the batches Lambda reads. In process, moto
        answers the DynamoDB Streams API with 404 (its URL is not routed under ``mock_aws``), so
        the records are read from moto's table as its GetRecords would answer them."""
        from moto.dynamodb.models import dynamodb_backends

        table = dynamodb_backends[ACCOUNT][REGION].get_table(TABLE)
        if table.stream_shard is None:
            return
        arn = f"{table.table_arn}/stream/{table.latest_stream_label}"
        records = [{**record.to_json(), "eventSourceARN": arn} for record in table.stream_shard.items]
        for start in range(0, len(records), batch_size):
            yield records[start : start + batch_size]

    def verify_bodies(self, wait_s: float = 5.0) -> list[dict[str, Any]]:
        """The health checks the coordinator scheduled, once their DelaySeconds has passed."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            bodies = self.drain(self.provisioned.verify_queue_url)
            if bodies:
                return bodies
            time.sleep(0.1)
        return []

    def notify_batches(self) -> Iterator[dict[str, Any]]:
        """The notify queue's messages as Lambda's event source mapping hands them over, FIFO
        attributes included; ``settle`` each batch before the next (a FIFO group waits)."""
        sqs = self.session.client("sqs")
        queue_url = self.provisioned.notify_queue_url
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_url.rsplit('/', 1)[-1]}"
        while True:
            messages = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                return
            records = [lambda_sqs_record(message, arn, REGION) for message in messages]
            yield {"Records": records}

    def settle(self, event: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        """What the event source mapping does after the function returns: delete every message
        not reported back as failed."""
        failed = {item["itemIdentifier"] for item in answer.get("batchItemFailures", [])}
        sqs = self.session.client("sqs")
        for record in event["Records"]:
            if record["messageId"] not in failed:
                sqs.delete_message(
                    QueueUrl=self.provisioned.notify_queue_url, ReceiptHandle=record["receiptHandle"]
                )

    # invoking the handlers as Lambda does

    def function(self, name: str) -> Callable[[dict[str, Any], Any], Any]:
        """The app's Lambda function ``name`` as AWS runs it: a process of its own, so its wiring
        (clients, and what a warm container remembers: target groups, deployment links) is its
        own, never shared with the other functions as it would be if all ran on one wiring."""
        from unittest import mock

        from chalicelib import bootstrap

        wiring = self._wirings.get(name)
        if wiring is None:
            with self.recorder.watching_new_sessions():
                wiring = self._wirings[name] = bootstrap.wiring.__wrapped__()
        entry = getattr(self.app, name)

        def invoke(event: dict[str, Any], lambda_context: Any) -> Any:
            with mock.patch.object(bootstrap, "wiring", return_value=wiring):
                return entry(event, lambda_context)

        return invoke

    def on_artifact_event(self, event: dict[str, Any]) -> Any:
        return self.function("on_artifact_event")(event, None)

    def on_codedeploy_event(self, deployment_id: str, state: str, application: str, group: str) -> Any:
        return self.function("on_codedeploy_event")(
            codedeploy_event(deployment_id, state, application, group), None
        )

    def on_verify_message(self, bodies: Sequence[Mapping[str, Any]]) -> Any:
        return self.function("on_verify_message")(sqs_event(bodies, "release-coordinator-verify"), None)

    def on_release_stream(self, records: list[dict[str, Any]]) -> Any:
        return self.function("on_release_stream")({"Records": records}, None)

    def on_notify_message(self, event: dict[str, Any]) -> Any:
        return self.function("on_notify_message")(event, None)

    def reconcile(self) -> Any:
        from bench.first_invocation import scheduled_event

        return self.function("reconcile")(scheduled_event(), None)


def codedeploy_event(deployment_id: str, state: str, application: str, group: str) -> dict[str, Any]:
    """CodeDeploy's EventBridge state-change event (the shape tests/integration/conftest.py uses)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CodeDeploy Deployment State-change Notification",
        "source": "aws.codedeploy",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [f"arn:aws:codedeploy:{REGION}:{ACCOUNT}:deploymentgroup:{application}/{group}"],
        "detail": {
            "region": REGION,
            "deploymentId": deployment_id,
            "instanceGroupId": str(uuid.uuid4()),
            "deploymentGroup": group,
            "state": state,
            "application": application,
        },
    }


def sqs_event(bodies: Sequence[Mapping[str, Any]], queue_name: str) -> dict[str, Any]:
    """An SQS event source mapping's batch, one record per body."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": uuid.uuid4().hex,
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_name}",
                "awsRegion": REGION,
            }
            for body in bodies
        ]
    }

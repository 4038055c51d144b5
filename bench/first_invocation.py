"""First invocation of each Lambda function, cold, against a bare handler making the same first
AWS call (DESIGN.md section 8: measured and recorded, no budget).

For each function of ``app.py``, a fresh interpreter (as Lambda's cold start) times from before
``import app`` to the return of the function's first invocation with a realistic event: the
import, the bootstrap wiring, the clients, and every AWS call of that event. Another fresh
interpreter times the bare handler: ``import boto3``, one client, the handler's first AWS call,
return. Interpreter start-up is the same for both and is left out, as in ``bench/cold_start.py``.

AWS is moto in server mode in this (the parent) process on 127.0.0.1, provisioned as the sandbox
provisions it (``sandbox/provision.py``); the children reach it through ``AWS_ENDPOINT_URL`` and
get the environment of DESIGN.md section 5. Each round takes a new release of one pipeline
(2 instances behind an ALB, 2 healthy checks, an email route) through every function in the order
AWS would invoke them, so every event does the work it does in production:

1. ``on_artifact_event``: moto's own EventBridge "Object Created" event for a new object
   (a new key each round) → a new release, CreateDeployment → DEPLOYING;
2. ``reconcile``: the schedule's event while that release is DEPLOYING and its deployment is
   still running: reconcile asks CodeDeploy about it and leaves it;
3. ``on_codedeploy_event``: SUCCESS for that deployment (finished by the benchmark as CodeDeploy
   would, targets healthy) → VERIFYING with the first health check done, the second queued;
4. ``on_verify_message``: the second health check as the verify queue delivers it → SUCCEEDED;
5. ``on_release_stream``: the table's stream records written since the previous round, as one
   batch → a notify message for the release's "succeeded" history event;
6. ``on_notify_message``: that message from the notify queue → an email through SES;
7. the API (``app.app``): ``GET /releases/{id}`` of that release, as API Gateway's proxy event.

Each function's first call is found once per function by an untimed recording round (botocore
``before-call`` hooks, ``bench.moto_world.CallRecorder``), which also counts the event's calls.
The bare handler replays that recorded call, parameters included; where the replayed call is a
conditional write whose item now exists, AWS refuses it, and the refusal is the call's answer.

    .venv/bin/python -m bench.first_invocation --out /tmp/first_invocation.json
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.measurement import Outcome, main
from bench.moto_world import codedeploy_event

if TYPE_CHECKING:
    from chalicelib.domain.release import Release

ROOT = Path(__file__).resolve().parent.parent
# Timed rounds; each runs every function's pair once (14 fresh processes).
ROUNDS = 9
REGION = "us-east-1"
ACCOUNT = "123456789012"
PIPELINE = "shop"
BUCKET = "relco-first-call-artifacts"
TABLE = "relco-first-call-releases"
INSTANCES = 2
EMAIL_SENDER = "relco@first-call.example"
PIPELINES_TOML = f"""
[[pipeline]]
name = "{PIPELINE}"
bucket = "{BUCKET}"
prefix = "{PIPELINE}/"
application = "{PIPELINE}"
deployment_group = "{PIPELINE}"

[pipeline.verify]
healthy_checks = 2
interval_s = 1

[[pipeline.notify]]
kind = "email"
sender = "{EMAIL_SENDER}"
to = ["oncall@first-call.example"]
on = ["succeeded"]
"""
# How long a child may take, and how long to wait for a message moto has queued.
CHILD_TIMEOUT_S = 60
QUEUE_WAIT_S = 10.0
RECEIVE_VISIBILITY_S = 120

# Read before the timer starts; the context has the attributes Lambda's has (Powertools' logger
# reads them). The child's stdout is the function's log, as in Lambda; its figures go to a file.
_PRELUDE = """
import json, sys, time
task = json.loads(open(sys.argv[1], encoding="utf-8").read())

class LambdaContext:
    def __init__(self, function_name, memory_mb):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + function_name
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = task["request_id"]
        self.log_group_name = "/aws/lambda/" + function_name
        self.log_stream_name = "first-invocation"

    def get_remaining_time_in_millis(self):
        return 60000

context = LambdaContext(task["function_name"], task["memory_mb"])
"""
_REAL = (
    _PRELUDE
    + """
started = time.perf_counter()
import app
answer = getattr(app, task["attribute"])(task["event"], context)
elapsed = time.perf_counter() - started
figures = {"seconds": elapsed, "answer": answer}
open(sys.argv[2], "w", encoding="utf-8").write(json.dumps(figures, default=str))
"""
)
# The same invocation, untimed, with every call of the coordinator's sessions recorded.
_RECORDING = (
    _PRELUDE
    + """
from bench.moto_world import CallRecorder
recorder = CallRecorder()
with recorder.watching_new_sessions():
    import app
    answer = getattr(app, task["attribute"])(task["event"], context)
calls = [{"service": call.service, "operation": call.operation} for call in recorder.calls]
first = recorder.calls[0] if recorder.calls else None
figures = {
    "answer": answer,
    "calls": calls,
    "first_params": first.params if first is not None else None,
}
open(sys.argv[2], "w", encoding="utf-8").write(json.dumps(figures, default=str))
"""
)
_BARE = """
import json, sys, time
task = json.loads(open(sys.argv[1], encoding="utf-8").read())
started = time.perf_counter()
import boto3
client = boto3.client(task["service"])
try:
    getattr(client, task["method"])(**task["params"])
    answer = "ok"
except client.exceptions.ClientError as refused:
    answer = refused.response["Error"]["Code"]
elapsed = time.perf_counter() - started
open(sys.argv[2], "w", encoding="utf-8").write(json.dumps({"seconds": elapsed, "answer": answer}))
"""


@dataclass(frozen=True)
class Function:
    """A Lambda function of app.py: its name, the attribute Lambda calls, and its test event."""

    name: str
    attribute: str
    event: str


FUNCTIONS = (
    Function("on_artifact_event", "on_artifact_event", "S3 Object Created (EventBridge), new key"),
    Function("reconcile", "reconcile", "schedule, one release DEPLOYING"),
    Function("on_codedeploy_event", "on_codedeploy_event", "CodeDeploy SUCCESS, ALB group"),
    Function("on_verify_message", "on_verify_message", "second health check, 2 healthy targets"),
    Function("on_release_stream", "on_release_stream", "one round's stream records"),
    Function("on_notify_message", "on_notify_message", "email route, one message"),
    Function("api_handler", "app", "GET /releases/{id}"),
)


@dataclass(frozen=True)
class FirstCall:
    service: str
    operation: str
    params: dict[str, Any]

    @property
    def method(self) -> str:
        from botocore import xform_name

        return str(xform_name(self.operation))

    def __str__(self) -> str:
        return f"{self.service} {self.operation}"


@dataclass
class Recorded:
    """What the recording round saw of one function: its first call and every call's operation."""

    first: FirstCall
    operations: list[str]
    answer: Any


@dataclass
class Samples:
    real_s: list[float] = field(default_factory=list)
    bare_s: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    # "ok", or the error code of an AWS refusal (a replayed conditional write).
    bare_answers: set[str] = field(default_factory=set)


def call_summary(operations: list[str]) -> str:
    """``dynamodb GetItem, sqs SendMessage x2``: each operation once, in first-call order."""
    counts = Counter(operations)
    return ", ".join(f"{operation} x{n}" if n > 1 else operation for operation, n in counts.items())


class Children:
    """Runs the fresh interpreters: task and figures go through files in a scratch directory,
    the functions' logs to one log file there."""

    def __init__(self, scratch: Path, environment: dict[str, str], memory_mb: dict[str, int]) -> None:
        self.scratch = scratch
        self.environment = environment
        self.memory_mb = memory_mb
        self.log = scratch / "functions.log"
        self._runs = 0

    def _run(self, script: str, task: dict[str, Any]) -> dict[str, Any]:
        self._runs += 1
        task_file = self.scratch / f"task-{self._runs}.json"
        figures_file = self.scratch / f"figures-{self._runs}.json"
        task_file.write_text(json.dumps(task), encoding="utf-8")
        with self.log.open("a", encoding="utf-8") as log:
            finished = subprocess.run(
                [sys.executable, "-c", script, str(task_file), str(figures_file)],
                cwd=ROOT,
                env=self.environment,
                stdout=log,
                stderr=subprocess.PIPE,
                text=True,
                timeout=CHILD_TIMEOUT_S,
                check=False,
            )
        if finished.returncode != 0:
            tail = "\n".join(finished.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"child for {task.get('function_name', task)} failed:\n{tail}")
        figures: dict[str, Any] = json.loads(figures_file.read_text(encoding="utf-8"))
        return figures

    def _function_task(self, function: Function, event: dict[str, Any]) -> dict[str, Any]:
        return {
            "function_name": function.name,
            "attribute": function.attribute,
            "memory_mb": self.memory_mb[function.name],
            "request_id": str(uuid.uuid4()),
            "event": event,
        }

    def record(self, function: Function, event: dict[str, Any]) -> Recorded:
        figures = self._run(_RECORDING, self._function_task(function, event))
        calls = figures["calls"]
        if not calls:
            raise RuntimeError(f"{function.name} made no AWS call on its first event")
        first = FirstCall(calls[0]["service"], calls[0]["operation"], figures["first_params"])
        operations = [f"{call['service']} {call['operation']}" for call in calls]
        return Recorded(first, operations, figures["answer"])

    def real(self, function: Function, event: dict[str, Any]) -> tuple[float, Any]:
        figures = self._run(_REAL, self._function_task(function, event))
        return float(figures["seconds"]), figures["answer"]

    def bare(self, call: FirstCall) -> tuple[float, str]:
        figures = self._run(
            _BARE,
            {
                "function_name": f"bare {call}",
                "service": call.service,
                "method": call.method,
                "params": call.params,
            },
        )
        return float(figures["seconds"]), str(figures["answer"])


class MotoServerWorld:
    """moto in server mode in this process, provisioned as the sandbox provisions it, and the
    benchmark's own view of it (its session's calls are never the coordinator's)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.session: Any = None
        self.provisioned: Any = None
        self.endpoint = ""
        self.stream_arn = ""
        self._server: Any = None
        self._stream_iterator: str | None = None
        self._uploads = 0

    def __enter__(self) -> MotoServerWorld:
        import boto3
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        from chalicelib.domain.pipelines import load_pipelines
        from sandbox import moto_extensions
        from sandbox.provision import provision

        moto_extensions.install()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # provision() builds its clients from the session alone: the endpoint comes from the
        # environment, as in the sandbox. This process exits when the benchmark ends.
        os.environ.update(self.aws_environment())
        pipelines_file = self.scratch / "pipelines.toml"
        pipelines_file.write_text(PIPELINES_TOML, encoding="utf-8")
        self.session = boto3.session.Session(region_name=REGION)
        self.provisioned = provision(
            self.session,
            load_pipelines(pipelines_file),
            table=TABLE,
            load_balanced={PIPELINE: INSTANCES},
        )
        self.stream_arn = self.session.client("dynamodb").describe_table(TableName=TABLE)["Table"][
            "LatestStreamArn"
        ]
        # Provisioning sent S3's test events; the rounds' uploads start from empty queues.
        self._receive(self.provisioned.eventbridge_queue_url, wait_s=0)
        self._receive(self.provisioned.classic_queue_url, wait_s=0)
        for target_group_arn, instance_id in self._targets():
            moto_extensions.set_target_health(target_group_arn, instance_id, "healthy")
        return self

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.stop()

    def aws_environment(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "first-call",
            "AWS_SECRET_ACCESS_KEY": "first-call",
            "AWS_SESSION_TOKEN": "first-call",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def function_environment(self) -> dict[str, str]:
        """The functions' environment (DESIGN.md section 5), and the children's."""
        return {
            **os.environ,
            **self.aws_environment(),
            "RELEASES_TABLE": TABLE,
            "VERIFY_QUEUE_URL": self.provisioned.verify_queue_url,
            "NOTIFY_QUEUE_URL": self.provisioned.notify_queue_url,
            "NOTIFY_DLQ_URL": self.provisioned.notify_dlq_url,
            "RELEASES_STREAM_ARN": self.stream_arn,
            "PIPELINES_FILE": str(self.scratch / "pipelines.toml"),
            "POWERTOOLS_SERVICE_NAME": "release-coordinator",
        }

    def _targets(self) -> Iterator[tuple[str, str]]:
        group = self.provisioned.load_balanced[PIPELINE]
        for instance_id in group.instance_ids:
            yield group.target_group_arn, instance_id

    # events, as AWS would deliver them

    def upload_event(self) -> dict[str, Any]:
        """A new object under the pipeline's prefix, and the EventBridge event S3 sent for it."""
        self._uploads += 1
        key = f"{PIPELINE}/{PIPELINE}-{self._uploads}-{uuid.uuid4().hex[:8]}.zip"
        self.session.client("s3").put_object(Bucket=BUCKET, Key=key, Body=uuid.uuid4().bytes)
        self._receive(self.provisioned.classic_queue_url, wait_s=0)  # the same upload, classic shape
        for message in self._receive(self.provisioned.eventbridge_queue_url):
            event: dict[str, Any] = json.loads(message["Body"])
            if event["detail"]["object"]["key"] == key:
                return event
        raise RuntimeError(f"moto sent no EventBridge event for {key}")

    def finish_deployment(self, release_id: str) -> str:
        """CodeDeploy finishes the release's deployment on both instances; returns its id."""
        from sandbox import moto_extensions

        deployment_id = self.release(release_id).deployment_id
        if not deployment_id:
            raise RuntimeError(f"release {release_id} has no deployment")
        instances = self.provisioned.load_balanced[PIPELINE].instance_ids
        moto_extensions.set_instance_targets(deployment_id, {i: {"status": "Succeeded"} for i in instances})
        moto_extensions.complete(deployment_id, "Succeeded")
        return str(deployment_id)

    def queued_messages(self, queue_url: str, release_id: str) -> tuple[dict[str, Any], list[str]]:
        """The queue's messages for the release as Lambda's SQS event source hands them over, and
        their receipt handles; other messages (a bare handler's replayed send) are deleted."""
        from sandbox.event_pump import lambda_sqs_record

        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_url.rsplit('/', 1)[-1]}"
        records = []
        for message in self._receive(queue_url, keep=True):
            if json.loads(message["Body"]).get("release_id") == release_id:
                records.append(lambda_sqs_record(message, arn, REGION))
            else:
                self.delete(queue_url, [message["ReceiptHandle"]])
        if not records:
            raise RuntimeError(f"no message for release {release_id} on {queue_url}")
        return {"Records": records}, [record["receiptHandle"] for record in records]

    def delete(self, queue_url: str, receipt_handles: list[str]) -> None:
        """What the event source mapping does after a batch succeeded."""
        sqs = self.session.client("sqs")
        for handle in receipt_handles:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=handle)

    def stream_event(self) -> dict[str, Any]:
        """The stream records written since the previous call, as one batch (at most the event
        source's 100)."""
        from sandbox.event_pump import lambda_stream_record

        streams = self.session.client("dynamodbstreams")
        if self._stream_iterator is None:
            [shard] = streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
            self._stream_iterator = streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
        answer = streams.get_records(ShardIterator=self._stream_iterator, Limit=100)
        self._stream_iterator = answer["NextShardIterator"]
        records = [lambda_stream_record(record, self.stream_arn) for record in answer["Records"]]
        if not records:
            raise RuntimeError("the table's stream has no new record")
        return {"Records": records}

    def release(self, release_id: str) -> Release:
        """The release as the coordinator's store reads it (most fields travel in a JSON body)."""
        from chalicelib.adapters.dynamodb_store import DynamoReleaseStore

        release = DynamoReleaseStore(self.session.client("dynamodb"), TABLE).get_release(release_id)
        if release is None:
            raise RuntimeError(f"release {release_id} is not in the table")
        return release

    def state(self, release_id: str) -> str:
        return self.release(release_id).state.value

    def emails_sent(self) -> int:
        from moto.ses.models import ses_backends

        return int(ses_backends[ACCOUNT][REGION].sent_message_count)

    def _receive(
        self, queue_url: str, *, wait_s: float = QUEUE_WAIT_S, keep: bool = False
    ) -> list[dict[str, Any]]:
        """Every message visible now, or the first ones to turn visible within ``wait_s`` (a
        delayed health check); deleted unless ``keep``."""
        sqs = self.session.client("sqs")
        deadline = time.monotonic() + wait_s
        messages: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=RECEIVE_VISIBILITY_S,
                AttributeNames=["All"],
            ).get("Messages", [])
            if not keep:
                self.delete(queue_url, [message["ReceiptHandle"] for message in batch])
            messages += batch
            if batch:
                continue
            if messages or time.monotonic() >= deadline:
                return messages
            time.sleep(0.1)


def scheduled_event() -> dict[str, Any]:
    """EventBridge Scheduler's classic scheduled event, as the ``reconcile`` rule sends it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/release-coordinator-reconcile"],
        "detail": {},
    }


def get_release_request(release_id: str) -> dict[str, Any]:
    """API Gateway's REST proxy event for ``GET /releases/{id}``, signed by an IAM user."""
    path = f"/releases/{release_id}"
    headers = {"accept": "application/json", "host": "abc123.execute-api.us-east-1.amazonaws.com"}
    return {
        "resource": "/releases/{release_id}",
        "path": path,
        "httpMethod": "GET",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"release_id": release_id},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/releases/{release_id}",
            "httpMethod": "GET",
            "path": f"/api{path}",
            "stage": "api",
            "accountId": ACCOUNT,
            "apiId": "abc123",
            "requestId": str(uuid.uuid4()),
            "identity": {
                "userArn": f"arn:aws:iam::{ACCOUNT}:user/release-engineer",
                "sourceIp": "192.0.2.10",
            },
        },
        "body": None,
        "isBase64Encoded": False,
    }


def _expect(holds: bool, what: str) -> None:
    if not holds:
        raise RuntimeError(f"the round did not do its work: {what}")


# Invokes one function with one event (recording it, or timing it against its bare handler) and
# returns what the function answered.
Invoke = Callable[[Function, dict[str, Any]], Any]


def release_round(world: MotoServerWorld, invoke: Invoke) -> None:
    """One new release through every function, checking after each that it did its work."""
    artifact, reconcile, codedeploy, verify, stream, notify, api = FUNCTIONS
    answer = invoke(artifact, world.upload_event())
    [created] = answer["releases"]
    release_id = created["id"]
    _expect(created["state"] == "DEPLOYING", f"upload gave {created}")

    report = invoke(reconcile, scheduled_event())
    _expect("error" not in report.get(PIPELINE, {}), f"reconcile reported {report}")
    _expect(world.state(release_id) == "DEPLOYING", "reconcile left the release DEPLOYING")

    deployment_id = world.finish_deployment(release_id)
    invoke(codedeploy, codedeploy_event(deployment_id, "SUCCESS", PIPELINE, PIPELINE))
    _expect(world.state(release_id) == "VERIFYING", "CodeDeploy SUCCESS → VERIFYING")

    verify_url = world.provisioned.verify_queue_url
    event, receipts = world.queued_messages(verify_url, release_id)
    answer = invoke(verify, event)
    _expect(not answer.get("batchItemFailures"), f"verify answered {answer}")
    _expect(world.state(release_id) == "SUCCEEDED", "the second healthy check → SUCCEEDED")
    world.delete(verify_url, receipts)

    answer = invoke(stream, world.stream_event())
    _expect(not answer.get("batchItemFailures"), f"stream answered {answer}")

    notify_url = world.provisioned.notify_queue_url
    event, receipts = world.queued_messages(notify_url, release_id)
    emails = world.emails_sent()
    answer = invoke(notify, event)
    _expect(not answer.get("batchItemFailures"), f"notify answered {answer}")
    _expect(world.emails_sent() == emails + len(receipts), "one email per notify message")
    world.delete(notify_url, receipts)

    answer = invoke(api, get_release_request(release_id))
    _expect(answer.get("statusCode") == 200, f"GET /releases/{release_id} answered {answer}")
    _expect(json.loads(answer["body"])["state"] == "SUCCEEDED", "the API shows the release SUCCEEDED")


def _memory_sizes() -> dict[str, int]:
    from app import app
    from infra.functions import batch_sizes
    from infra.sizing import function_sizing

    return {name: sizing.memory_mb for name, sizing in function_sizing(batch_sizes(app)).items()}


class Recording:
    """The untimed round: each function's calls recorded, its first call kept for the bare handler."""

    def __init__(self, children: Children) -> None:
        self.children = children
        self.recorded: dict[str, Recorded] = {}

    def __call__(self, function: Function, event: dict[str, Any]) -> Any:
        self.recorded[function.name] = self.children.record(function, event)
        return self.recorded[function.name].answer


class Pairs:
    """The timed rounds: each function, then its bare handler, or the other way round (set per
    round, so drift such as caches and CPU frequency hits both)."""

    def __init__(self, children: Children, recorded: dict[str, Recorded]) -> None:
        self.children = children
        self.recorded = recorded
        self.samples = {function.name: Samples() for function in FUNCTIONS}
        self.real_first = True

    def __call__(self, function: Function, event: dict[str, Any]) -> Any:
        first_call = self.recorded[function.name].first
        if not self.real_first:
            bare_s, bare_answer = self.children.bare(first_call)
        real_s, answer = self.children.real(function, event)
        if self.real_first:
            bare_s, bare_answer = self.children.bare(first_call)
        taken = self.samples[function.name]
        taken.real_s.append(real_s)
        taken.bare_s.append(bare_s)
        taken.ratios.append(real_s / bare_s)
        taken.bare_answers.add(bare_answer)
        return answer


def run() -> Outcome:
    # moto's server logs every request; the figures are what this benchmark prints.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="relco-first-call-") as directory:
        scratch = Path(directory)
        with MotoServerWorld(scratch) as world:
            children = Children(scratch, world.function_environment(), _memory_sizes())
            # Untimed: finds each first call, and writes the .pyc files, as a deployed package has them.
            recording = Recording(children)
            release_round(world, recording)
            pairs = Pairs(children, recording.recorded)
            for number in range(ROUNDS):
                pairs.real_first = number % 2 == 0
                release_round(world, pairs)
    return _outcome(recording.recorded, pairs.samples)


def _outcome(recorded: dict[str, Recorded], samples: dict[str, Samples]) -> Outcome:
    outcome = Outcome()
    rows = []
    for function in FUNCTIONS:
        seen, taken = recorded[function.name], samples[function.name]
        real_ms = statistics.median(taken.real_s) * 1000
        bare_ms = statistics.median(taken.bare_s) * 1000
        ratio = statistics.median(taken.ratios)
        refused = sorted(answer for answer in taken.bare_answers if answer != "ok")
        bare_note = f"; bare call refused: {', '.join(refused)}" if refused else ""
        rows.append((function, real_ms, bare_ms, ratio, seen, bare_note))
        calls = len(seen.operations)
        outcome.add(
            f"First invocation, cold: {function.name} ({function.event}) ÷ bare handler, "
            f"{ROUNDS} alternating pairs of fresh processes (median ratio)",
            f"{ratio:.2f} ({real_ms:.0f} ms vs bare {bare_ms:.0f} ms; first call {seen.first}{bare_note}; "
            f"{calls} AWS call{'s' if calls > 1 else ''}: {call_summary(seen.operations)})",
            "none (DESIGN.md §8: measured)",
            "recorded",
        )
    outcome.data = {
        function.name: {
            "real_s": samples[function.name].real_s,
            "bare_s": samples[function.name].bare_s,
            "ratios": samples[function.name].ratios,
            "first_call": str(recorded[function.name].first),
            "calls": recorded[function.name].operations,
        }
        for function in FUNCTIONS
    }
    _print_table(rows)
    return outcome


def _print_table(rows: list[tuple[Function, float, float, float, Recorded, str]]) -> None:
    print(f"First invocation, cold (median of {ROUNDS} alternating pairs of fresh processes)")
    header = f"{'function':<20} {'real ms':>8} {'bare ms':>8} {'ratio':>6} {'calls':>5}"
    print(f"{header}  first call (the bare handler replays it)")
    for function, real_ms, bare_ms, ratio, seen, bare_note in rows:
        print(
            f"{function.name:<20} {real_ms:>8.0f} {bare_ms:>8.0f} {ratio:>6.2f} "
            f"{len(seen.operations):>5}  {seen.first}{bare_note}"
        )


if __name__ == "__main__":
    main(run)

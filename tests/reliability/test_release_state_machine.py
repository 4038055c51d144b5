"""A hypothesis state machine that tries to lose a release: uploads, duplicated and reordered
deliveries, CodeDeploy outcomes whose events are duplicated, reordered or dropped, cancels and
redeploys through the HTTP API, the notification outbox (stream records and queue messages
delivered twice), and reconcile runs, in any order. moto in process is AWS;
sandbox.moto_extensions plays CodeDeploy finishing.

Invariants: at most one active deployment per group; no release leaves a terminal state; history
ids are contiguous; every upload is one release; each history event is mailed at most once per
route; once CodeDeploy has finished everything and reconcile has run, every release is terminal.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from chalice.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from moto import mock_aws
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID

import app as chalice_app
from chalicelib import bootstrap
from chalicelib.adapters.dynamodb_store import DynamoReleaseStore
from chalicelib.domain.pipelines import load_pipelines
from chalicelib.domain.release import ReleaseState, Trigger
from sandbox import moto_extensions
from sandbox.event_pump import lambda_sqs_record, lambda_stream_record
from sandbox.provision import provision
from tests.integration.conftest import BUCKET, codedeploy_event
from tests.integration.conftest import TABLE as INTEGRATION_TABLE

# The integration suite's table name: the permission check binds the packaged policies to it.
TABLE = INTEGRATION_TABLE
PIPELINES = {"api-prod": ("api", "api-prod", "api/prod/"), "web-prod": ("web", "web-prod", "web/prod/")}
SENDER = "relco@reliability.example"
EVERY_EVENT = (
    '["started", "queued", "superseded", "succeeded", "failed", "verify_failed", "rolled_back", "stopped"]'
)
PIPELINES_TOML = "\n".join(
    f'[[pipeline]]\nname = "{name}"\nbucket = "{BUCKET}"\nprefix = "{prefix}"\napplication = "{app}"\n'
    f'deployment_group = "{group}"\non_busy = "{"supersede" if name == "web-prod" else "queue"}"\n'
    f'[[pipeline.notify]]\nkind = "email"\nsender = "{SENDER}"\nto = ["oncall@reliability.example"]\n'
    f"on = {EVERY_EVENT}\n"
    for name, (app, group, prefix) in PIPELINES.items()
)
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "1",
    "RELEASES_TABLE": TABLE,
}
# Counted across all examples, to say how many generated cases ran.
RUN_STATS = {"examples": 0, "steps": 0}


class ReleaseMachine(RuleBasedStateMachine):
    @initialize()
    def start_aws(self) -> None:
        self._saved = {
            name: os.environ.get(name) for name in [*ENVIRONMENT, "PIPELINES_FILE", "VERIFY_QUEUE_URL"]
        }
        os.environ.update(ENVIRONMENT)
        self._directory = tempfile.TemporaryDirectory()
        pipelines_file = Path(self._directory.name) / "pipelines.toml"
        pipelines_file.write_text(PIPELINES_TOML, encoding="utf-8")
        os.environ["PIPELINES_FILE"] = str(pipelines_file)
        moto_extensions.install()
        self._mock = mock_aws()
        self._mock.start()
        self.session = boto3.session.Session(region_name="us-east-1")
        provisioned = provision(self.session, load_pipelines(pipelines_file), table=TABLE)
        os.environ["VERIFY_QUEUE_URL"] = provisioned.verify_queue_url
        os.environ["NOTIFY_QUEUE_URL"] = provisioned.notify_queue_url
        os.environ["NOTIFY_DLQ_URL"] = provisioned.notify_dlq_url
        self.notify_queue_url = provisioned.notify_queue_url
        bootstrap.reset()
        self.api = Client(chalice_app.app, stage_name="reliability")
        # botocore addresses a stream ARN's account endpoint, which moto in process does not serve.
        self.streams = self.session.client(
            "dynamodbstreams", config=Config(account_id_endpoint_mode="disabled")
        )
        # One client for the invariants' reads: they run after every step, and making a client
        # costs more than the reads.
        self.dynamodb = self.session.client("dynamodb")
        stream_arn = self.dynamodb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
        self.stream_arn = stream_arn
        self.shard_iterators = [
            self.streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for shard in self.streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
        ]
        self.store = DynamoReleaseStore(self.dynamodb, TABLE)
        self.s3 = self.session.client("s3")
        self.sqs = self.session.client("sqs")
        self.upload_events: list[dict[str, Any]] = []
        self.uploaded_keys: set[str] = set()
        # Events CodeDeploy "sent" but the network has not delivered yet (reordered, or lost).
        self.pending_events: list[dict[str, Any]] = []
        self.terminal_seen: dict[str, ReleaseState] = {}
        RUN_STATS["examples"] += 1

    def teardown(self) -> None:
        if hasattr(self, "_mock"):
            self._mock.stop()
            self._directory.cleanup()
            bootstrap.reset()
            for name, value in self._saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # rules

    @rule(pipeline=st.sampled_from(sorted(PIPELINES)), deliveries=st.integers(min_value=1, max_value=3))
    def upload(self, pipeline: str, deliveries: int) -> None:
        RUN_STATS["steps"] += 1
        _, _, prefix = PIPELINES[pipeline]
        key = f"{prefix}build-{uuid.uuid4().hex[:8]}.zip"
        version = self.s3.put_object(Bucket=BUCKET, Key=key, Body=b"bundle")["VersionId"]
        etag = self.s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2026-11-26T10:00:00Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{BUCKET}"],
            "detail": {
                "bucket": {"name": BUCKET},
                "object": {"key": key, "etag": etag, "version-id": version},
            },
        }
        self.upload_events.append(event)
        self.uploaded_keys.add(key)
        for _ in range(deliveries):
            chalice_app.on_artifact_event(json.loads(json.dumps(event)), None)

    @rule(index=st.integers(min_value=0))
    def redeliver_an_upload(self, index: int) -> None:
        RUN_STATS["steps"] += 1
        if self.upload_events:
            event = self.upload_events[index % len(self.upload_events)]
            chalice_app.on_artifact_event(json.loads(json.dumps(event)), None)

    @rule(
        pipeline=st.sampled_from(sorted(PIPELINES)),
        status=st.sampled_from(["Succeeded", "Succeeded", "Failed", "Stopped"]),
        fate=st.sampled_from(["deliver", "deliver_twice", "hold", "lose"]),
    )
    def codedeploy_finishes(self, pipeline: str, status: str, fate: str) -> None:
        """CodeDeploy ends the group's active deployment; its event is delivered (maybe twice),
        held back to arrive later out of order, or lost."""
        RUN_STATS["steps"] += 1
        application, group, _ = PIPELINES[pipeline]
        active = moto_extensions.active_deployments(application, group)
        if not active:
            return
        moto_extensions.complete(
            active[0], status, error_code="HEALTH_CONSTRAINTS" if status == "Failed" else None
        )
        state = {"Succeeded": "SUCCESS", "Failed": "FAILURE", "Stopped": "STOP"}[status]
        event = codedeploy_event(active[0], state, application, group)
        start = codedeploy_event(active[0], "START", application, group)
        if fate in ("deliver", "deliver_twice"):
            for _ in range(2 if fate == "deliver_twice" else 1):
                chalice_app.on_codedeploy_event(event, None)
            self.pending_events.append(start)  # a late START after the end
        elif fate == "hold":
            self.pending_events.append(event)

    @rule(seed=st.integers(min_value=0, max_value=2**16))
    def deliver_held_events(self, seed: int) -> None:
        RUN_STATS["steps"] += 1
        random.Random(seed).shuffle(self.pending_events)
        while self.pending_events:
            chalice_app.on_codedeploy_event(self.pending_events.pop(), None)

    @rule(index=st.integers(min_value=0), redeploy=st.booleans())
    def operator_acts(self, index: int, redeploy: bool) -> None:
        """Someone cancels a release, or redeploys one, through the HTTP API."""
        RUN_STATS["steps"] += 1
        releases = self._releases()
        if not releases:
            return
        release = releases[index % len(releases)]
        action = "redeploy" if redeploy else "cancel"
        response = self.api.http.post(
            f"/releases/{release.id}/{action}", headers={"Content-Type": "application/json"}, body="{}"
        )
        assert response.status_code < 500, response.body

    @rule(duplicate=st.booleans())
    def outbox_delivers(self, duplicate: bool) -> None:
        """The table stream and the notify queue deliver what is new, perhaps twice."""
        RUN_STATS["steps"] += 1
        records = self._stream_records()
        if records:
            for _ in range(2 if duplicate else 1):
                chalice_app.on_release_stream({"Records": records}, None)
        for _ in range(20):
            batch = self._notify_batch()
            if not batch:
                return
            answers = [
                chalice_app.on_notify_message({"Records": batch}, None) for _ in range(2 if duplicate else 1)
            ]
            failed = {item["itemIdentifier"] for answer in answers for item in answer["batchItemFailures"]}
            for record in batch:
                if record["messageId"] not in failed:
                    self.sqs.delete_message(
                        QueueUrl=self.notify_queue_url, ReceiptHandle=record["receiptHandle"]
                    )

    def _stream_records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for number, iterator in enumerate(self.shard_iterators):
            response = self.streams.get_records(ShardIterator=iterator)
            self.shard_iterators[number] = response["NextShardIterator"]
            records.extend(lambda_stream_record(record, self.stream_arn) for record in response["Records"])
        return records

    def _notify_batch(self) -> list[dict[str, Any]]:
        messages = self.sqs.receive_message(
            QueueUrl=self.notify_queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            VisibilityTimeout=0,
        ).get("Messages", [])
        queue_arn = "arn:aws:sqs:us-east-1:123456789012:release-coordinator-notify.fifo"
        return [lambda_sqs_record(message, queue_arn) for message in messages]

    @rule()
    def reconcile(self) -> None:
        RUN_STATS["steps"] += 1
        chalice_app.reconcile(codedeploy_event("x", "START", "a", "b") | {"source": "aws.events"}, None)

    # invariants

    def _releases(self) -> list[Any]:
        releases: list[Any] = []
        for pipeline in PIPELINES:
            response = self.dynamodb.query(
                TableName=TABLE,
                IndexName="by_pipeline",
                KeyConditionExpression="pipeline = :p",
                ExpressionAttributeValues={":p": {"S": pipeline}},
            )
            ids = [item["id"]["S"] for item in response["Items"]]
            releases.extend(self.store.get_releases(ids))
        return releases

    @invariant()
    def nothing_is_lost_or_doubled(self) -> None:
        if not hasattr(self, "store"):
            return
        for application, group, _ in PIPELINES.values():
            assert len(moto_extensions.active_deployments(application, group)) <= 1
        releases = self._releases()
        for release in releases:
            seen = self.terminal_seen.get(release.id)
            assert seen is None or release.state is seen, f"{release.id} left {seen} for {release.state}"
            if release.state.is_terminal:
                self.terminal_seen[release.id] = release.state
            history = self.store.history(release.id)
            assert [event.id for event in history] == list(range(1, len(history) + 1))
            assert history[-1].state is release.state
        self._mailed_once_per_event()
        # Every upload is exactly one release (rollbacks redeploy an earlier key: not counted).
        uploads = [release.revision.key for release in releases if release.trigger is Trigger.UPLOAD]
        assert sorted(uploads) == sorted(self.uploaded_keys)

    def _mailed_once_per_event(self) -> None:
        """SES sent exactly as many mails as the delivery log says were delivered: a duplicated
        stream record or queue message never mails twice."""
        delivered = self.dynamodb.scan(
            TableName=TABLE,
            FilterExpression="begins_with(sk, :dlv) AND #status = :delivered",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":dlv": {"S": "DLV#"}, ":delivered": {"S": "delivered"}},
        )["Items"]
        sent = get_backend("ses")[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
        assert len(sent) == len(delivered), (len(sent), len(delivered))

    def _every_release_was_mailed(self, releases: list[Any]) -> None:
        """The email route takes every event: once the outbox has drained, each release has mail."""
        mailed = {
            item["pk"]["S"].removeprefix("REL#")
            for item in self.dynamodb.scan(
                TableName=TABLE,
                FilterExpression="begins_with(sk, :dlv)",
                ExpressionAttributeValues={":dlv": {"S": "DLV#"}},
            )["Items"]
        }
        assert {release.id for release in releases} <= mailed

    def check_everything_ends(self) -> None:
        """Once CodeDeploy has finished every deployment and reconcile has run, nothing is open."""
        for _ in range(40):
            busy = False
            for application, group, _ in PIPELINES.values():
                for deployment_id in moto_extensions.active_deployments(application, group):
                    moto_extensions.complete(deployment_id, "Succeeded")  # all events lost
                    busy = True
            self.reconcile()
            self.outbox_delivers(duplicate=True)
            releases = self._releases()
            if not busy and all(r.state.is_terminal for r in releases):
                self._every_release_was_mailed(releases)
                return
        open_releases = [(r.id, r.state.value, r.reason) for r in self._releases() if not r.state.is_terminal]
        pytest.fail(f"releases still open after CodeDeploy finished and reconcile ran: {open_releases}")


class EndingReleaseMachine(ReleaseMachine):
    def teardown(self) -> None:
        try:
            if hasattr(self, "store"):
                self.check_everything_ends()
        finally:
            super().teardown()


TestReleaseStateMachine = EndingReleaseMachine.TestCase
TestReleaseStateMachine.settings = settings(
    max_examples=int(os.environ.get("RELIABILITY_EXAMPLES", "20")),
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

"""A hypothesis state machine that tries to lose a release: uploads, duplicated and reordered
deliveries, CodeDeploy outcomes whose events are duplicated, reordered or dropped, and reconcile
runs, in any order. moto in process is AWS; sandbox.moto_extensions plays CodeDeploy finishing.

Invariants: at most one active deployment per group; no release leaves a terminal state; history
ids are contiguous; every upload is one release; once CodeDeploy has finished everything and
reconcile has run, every release is terminal.
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
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from moto import mock_aws

import app as chalice_app
from chalicelib import bootstrap
from chalicelib.adapters.dynamodb_store import DynamoReleaseStore
from chalicelib.domain.pipelines import load_pipelines
from chalicelib.domain.release import ReleaseState, Trigger
from sandbox import moto_extensions
from sandbox.provision import provision
from tests.integration.conftest import BUCKET, codedeploy_event

TABLE = "reliability"
PIPELINES = {"api-prod": ("api", "api-prod", "api/prod/"), "web-prod": ("web", "web-prod", "web/prod/")}
PIPELINES_TOML = "\n".join(
    f'[[pipeline]]\nname = "{name}"\nbucket = "{BUCKET}"\nprefix = "{prefix}"\napplication = "{app}"\n'
    f'deployment_group = "{group}"\non_busy = "{"supersede" if name == "web-prod" else "queue"}"\n'
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
        bootstrap.reset()
        self.store = DynamoReleaseStore(self.session.client("dynamodb"), TABLE)
        self.s3 = self.session.client("s3")
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

    @rule()
    def reconcile(self) -> None:
        RUN_STATS["steps"] += 1
        chalice_app.reconcile(codedeploy_event("x", "START", "a", "b") | {"source": "aws.events"}, None)

    # invariants

    def _releases(self) -> list[Any]:
        releases: list[Any] = []
        for pipeline in PIPELINES:
            response = self.session.client("dynamodb").query(
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
        # Every upload is exactly one release (rollbacks redeploy an earlier key: not counted).
        uploads = [release.revision.key for release in releases if release.trigger is Trigger.UPLOAD]
        assert sorted(uploads) == sorted(self.uploaded_keys)

    def check_everything_ends(self) -> None:
        """Once CodeDeploy has finished every deployment and reconcile has run, nothing is open."""
        for _ in range(40):
            busy = False
            for application, group, _ in PIPELINES.values():
                for deployment_id in moto_extensions.active_deployments(application, group):
                    moto_extensions.complete(deployment_id, "Succeeded")  # all events lost
                    busy = True
            self.reconcile()
            if not busy and all(r.state.is_terminal for r in self._releases()):
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


def test_report_how_many_cases_ran() -> None:
    """Printed in CI's log (pytest -rA shows it): how many generated cases the suite ran."""
    print(f"reliability: {RUN_STATS['examples']} generated cases, {RUN_STATS['steps']} steps")

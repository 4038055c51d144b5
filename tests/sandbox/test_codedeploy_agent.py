"""The local CodeDeploy agent (sandbox/codedeploy_agent.py) running moto's deployments for real:
bundles from a versioned moto bucket, hook scripts run on local "instances" (the local-demo
bundle's HTTP service on free ports), progress and events recorded in moto as on AWS."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from appspec import LIFECYCLE_EVENTS
from sandbox import moto_extensions
from sandbox.codedeploy_agent import DOWNLOAD_DENIED_MESSAGE, CodeDeployAgent, Misbehaviour
from sandbox.local_instance import LocalInstance
from sandbox.processes import pid_alive

REGION = "us-east-1"
BUCKET = "agent-bundles"
APPLICATION = "demo"
GROUP = "demo-local"
LOCAL_DEMO = Path(__file__).resolve().parents[2] / "bundles" / "local-demo"
# The local-demo hooks' own waits, shortened so a broken release fails in seconds.
FAST_HOOKS = {
    "HEALTH_TIMEOUT_SECONDS": "2",
    "HEALTH_INTERVAL_SECONDS": "0.1",
    "STOP_TIMEOUT_SECONDS": "5",
    "PYTHON": sys.executable,
}
SCRIPT_HOOKS = ("BeforeInstall", "ApplicationStart", "ValidateService")


# --- moto ------------------------------------------------------------------------------------


@dataclass
class Cloud:
    """moto in process, with what the agent deploys from and reports to."""

    session: Any
    queue_url: str
    group_id: str

    @property
    def codedeploy(self) -> Any:
        return self.session.client("codedeploy")

    def upload(self, key: str, body: bytes, bundle_type: str = "zip") -> dict[str, Any]:
        response = self.session.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
        location = {
            "bucket": BUCKET,
            "key": key,
            "bundleType": bundle_type,
            "version": response["VersionId"],
            "eTag": response["ETag"].strip('"'),
        }
        return {"revisionType": "S3", "s3Location": location}

    def deploy(self, revision: dict[str, Any]) -> str:
        deployment_id: str = self.codedeploy.create_deployment(
            applicationName=APPLICATION, deploymentGroupName=GROUP, revision=revision
        )["deploymentId"]
        return deployment_id

    def wait(self, deployment_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info: dict[str, Any] = self.codedeploy.get_deployment(deploymentId=deployment_id)[
                "deploymentInfo"
            ]
            if info["status"] in moto_extensions.TERMINAL_STATUSES:
                return info
            assert time.monotonic() < deadline, f"deployment still {info['status']} after {timeout}s"
            time.sleep(0.05)

    def targets(self, deployment_id: str) -> dict[str, dict[str, Any]]:
        ids = self.codedeploy.list_deployment_targets(deploymentId=deployment_id)["targetIds"]
        answer = self.codedeploy.batch_get_deployment_targets(deploymentId=deployment_id, targetIds=ids)
        return {t["instanceTarget"]["targetId"]: t["instanceTarget"] for t in answer["deploymentTargets"]}

    def events(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The next ``count`` CodeDeploy events the EventBridge rule delivered to SQS."""
        sqs = self.session.client("sqs")
        bodies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(bodies) < count and time.monotonic() < deadline:
            for message in sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            ):
                bodies.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        assert len(bodies) == count, bodies
        return bodies


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        moto_extensions.install()
        session = boto3.session.Session(region_name=REGION)
        s3 = session.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        codedeploy = session.client("codedeploy")
        codedeploy.create_application(applicationName=APPLICATION, computePlatform="Server")
        group_id = codedeploy.create_deployment_group(
            applicationName=APPLICATION,
            deploymentGroupName=GROUP,
            deploymentConfigName="CodeDeployDefault.HalfAtATime",
            serviceRoleArn="arn:aws:iam::123456789012:role/CodeDeployServiceRole",
            deploymentStyle={"deploymentType": "IN_PLACE", "deploymentOption": "WITH_TRAFFIC_CONTROL"},
        )["deploymentGroupId"]
        sqs = session.client("sqs")
        queue_url = sqs.create_queue(QueueName="codedeploy-events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events = session.client("events")
        events.put_rule(
            Name="codedeploy-state",
            EventPattern=json.dumps(
                {
                    "source": ["aws.codedeploy"],
                    "detail-type": ["CodeDeploy Deployment State-change Notification"],
                }
            ),
        )
        events.put_targets(Rule="codedeploy-state", Targets=[{"Id": "queue", "Arn": queue_arn}])
        yield Cloud(session=session, queue_url=queue_url, group_id=group_id)


# --- bundles ---------------------------------------------------------------------------------


def demo_bundle(tmp_path: Path, version: str, name: str | None = None) -> Path:
    """A copy of bundles/local-demo reporting ``version``."""
    bundle = tmp_path / "bundles" / (name or version)
    shutil.copytree(LOCAL_DEMO, bundle, ignore=shutil.ignore_patterns(".instance"))
    (bundle / "VERSION").write_text(f"{version}\n", encoding="utf-8")
    return bundle


def custom_bundle(tmp_path: Path, name: str, scripts: dict[str, tuple[str, int, str]]) -> Path:
    """A bundle with one script per hook: {hook: (script name, timeout, bash body)}."""
    bundle = tmp_path / "bundles" / name
    (bundle / "scripts").mkdir(parents=True)
    hooks = []
    for hook, (script, timeout, body) in scripts.items():
        # No exec bit on purpose: the agent runs such scripts with bash.
        (bundle / "scripts" / script).write_text(f"#!/usr/bin/env bash\nset -eu\n{body}\n", encoding="utf-8")
        hooks.append(f"  {hook}:\n    - location: scripts/{script}\n      timeout: {timeout}\n")
    (bundle / "appspec.yml").write_text(
        "version: 0.0\nos: linux\nfiles:\n  - source: scripts\n    destination: /opt/custom\n"
        "file_exists_behavior: OVERWRITE\nhooks:\n" + "".join(hooks),
        encoding="utf-8",
    )
    return bundle


def zipped(bundle: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(bundle).as_posix())  # keeps the file modes
    return buffer.getvalue()


def tgz(bundle: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(bundle.iterdir()):
            archive.add(path, path.name)
    return buffer.getvalue()


# --- instances and traffic -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(port: int, path: str = "/") -> tuple[int, dict[str, Any]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            status: int = response.status
            payload: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    return status, payload


class RecordingTraffic:
    """TrafficControl fake: records (de)registrations; healthy means /health answers 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._ports: dict[str, int] = {}
        self._lock = threading.Lock()

    def register(self, target_id: str, port: int) -> None:
        with self._lock:
            self.calls.append(("register", target_id))
            self._ports[target_id] = port

    def deregister(self, target_id: str) -> None:
        with self._lock:
            self.calls.append(("deregister", target_id))

    def wait_drained(self, target_id: str, timeout: float) -> bool:
        return True

    def wait_healthy(self, target_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if get_json(self._ports[target_id], "/health")[0] == 200:
                    return True
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        return False


@dataclass
class Fleet:
    agent: CodeDeployAgent
    instances: list[LocalInstance]
    traffic: RecordingTraffic | None

    @property
    def ids(self) -> list[str]:
        return [instance.instance_id for instance in self.instances]

    def server_pids(self) -> set[int]:
        pid_files = (instance.app_dir / "server.pid" for instance in self.instances)
        return {int(path.read_text()) for path in pid_files if path.exists()}


@dataclass
class FleetFactory:
    cloud: Cloud
    tmp_path: Path
    fleets: list[Fleet] = field(default_factory=list)

    def __call__(self, count: int, *, traffic: bool = True) -> Fleet:
        instances = [
            LocalInstance(f"i-{len(self.fleets)}{n:016x}", free_port(), self.tmp_path / f"instance-{n}")
            for n in range(1, count + 1)
        ]
        recording = RecordingTraffic() if traffic else None
        agent = CodeDeployAgent(
            self.cloud.session,
            instances,
            recording,
            poll_interval_s=0.05,
            hook_timeout_cap_s=30,
            groups=[(APPLICATION, GROUP)],
            traffic_timeout_s=10,
            extra_env=FAST_HOOKS,
        )
        fleet = Fleet(agent, instances, recording)
        self.fleets.append(fleet)
        agent.start()
        return fleet


@pytest.fixture
def fleet_of(cloud: Cloud, tmp_path: Path) -> Iterator[FleetFactory]:
    factory = FleetFactory(cloud, tmp_path)
    try:
        yield factory
    finally:
        for fleet in factory.fleets:
            pids = fleet.server_pids()
            fleet.agent.stop()
            for pid in pids:  # only if the test failed before checking stop() itself
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


def by_name(target: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {event["lifecycleEventName"]: event for event in target["lifecycleEvents"]}


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_first_deploy_runs_the_hooks_in_order_one_instance_at_a_time(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    fleet = fleet_of(2)
    deployment_id = cloud.deploy(cloud.upload("demo/v1.zip", zipped(demo_bundle(tmp_path, "1.0.0"))))

    info = cloud.wait(deployment_id)

    assert info["status"] == "Succeeded", info
    assert info["errorInformation"] == {}
    assert info["deploymentOverview"]["Succeeded"] == 2
    for instance in fleet.instances:
        status, answer = get_json(instance.port)
        assert (status, answer["version"], answer["deployment_id"]) == (200, "1.0.0", deployment_id)
        installed = instance.install_root / "opt/release-coordinator/local-demo/VERSION"
        assert installed.read_text().strip() == "1.0.0"  # Install copied the appspec files
    targets = cloud.targets(deployment_id)
    assert sorted(targets) == sorted(fleet.ids)
    for target in targets.values():
        assert target["status"] == "Succeeded"
        assert [e["lifecycleEventName"] for e in target["lifecycleEvents"]] == list(LIFECYCLE_EVENTS)
        events = by_name(target)
        # A first deploy has no previous revision: its ApplicationStop (and block hooks) never run.
        for hook in ("BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop", "AfterInstall"):
            assert events[hook]["status"] == "Skipped"
            assert "diagnostics" not in events[hook]
        for hook in ("BlockTraffic", "DownloadBundle", "Install", *SCRIPT_HOOKS, "AllowTraffic"):
            assert events[hook]["status"] == "Succeeded", (hook, events[hook])
        validate = events["ValidateService"]["diagnostics"]
        assert validate["errorCode"] == "Success"
        assert validate["scriptName"] == "scripts/validate_service.sh"
        assert "healthy after" in validate["logTail"]
        started = [events[hook]["startTime"] for hook in SCRIPT_HOOKS]
        assert started == sorted(started)
    # HalfAtATime with two instances: one out of the load balancer at a time.
    first, second = fleet.ids
    assert fleet.traffic is not None
    assert fleet.traffic.calls == [
        ("deregister", first),
        ("register", first),
        ("deregister", second),
        ("register", second),
    ]
    start, success = cloud.events(2)
    assert start["source"] == "aws.codedeploy"
    assert start["detail-type"] == "CodeDeploy Deployment State-change Notification"
    assert start["region"] == REGION
    assert start["resources"] == [
        f"arn:aws:codedeploy:{REGION}:123456789012:application:{APPLICATION}",
        f"arn:aws:codedeploy:{REGION}:123456789012:deploymentgroup:{APPLICATION}/{GROUP}",
    ]
    assert start["detail"] == {
        "deploymentId": deployment_id,
        "state": "START",
        "application": APPLICATION,
        "deploymentGroup": GROUP,
        "instanceGroupId": cloud.group_id,
        "region": REGION,
    }
    assert success["detail"]["state"] == "SUCCESS"


@pytest.mark.timeout(90)
def test_four_instances_deploy_two_at_a_time(cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path) -> None:
    fleet = fleet_of(4)

    info = cloud.wait(cloud.deploy(cloud.upload("demo/v1.zip", zipped(demo_bundle(tmp_path, "1.0.0")))))

    assert info["status"] == "Succeeded", info
    assert all(get_json(instance.port)[1]["version"] == "1.0.0" for instance in fleet.instances)
    assert fleet.traffic is not None
    calls = fleet.traffic.calls
    first_half, second_half = set(fleet.ids[:2]), set(fleet.ids[2:])
    # Both instances of a batch leave the load balancer before either returns; the second batch
    # starts only once the first is back.
    assert {target for _, target in calls[:2]} == first_half
    assert [kind for kind, _ in calls] == ["deregister"] * 2 + ["register"] * 2 + ["deregister"] * 2 + [
        "register"
    ] * 2
    assert {target for _, target in calls[2:4]} == first_half
    assert {target for _, target in calls[4:]} == second_half


@pytest.mark.timeout(90)
def test_second_deploy_runs_the_previous_revisions_application_stop(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    bundles = [demo_bundle(tmp_path, version) for version in ("1.0.0", "2.0.0")]
    for bundle in bundles:  # each revision's stop script says whose it is and where it runs
        script = bundle / "scripts" / "application_stop.sh"
        shebang, rest = script.read_text().split("\n", 1)
        script.write_text(f'{shebang}\necho "ApplicationStop of $(cat VERSION) in $PWD"\n{rest}')
    fleet = fleet_of(2)
    assert cloud.wait(cloud.deploy(cloud.upload("demo/v1.zip", zipped(bundles[0]))))["status"] == "Succeeded"
    v1_pids = fleet.server_pids()
    v1_dirs = {i.instance_id: i.last_successful.bundle_dir for i in fleet.instances if i.last_successful}

    deployment_id = cloud.deploy(cloud.upload("demo/v2.zip", zipped(bundles[1])))
    info = cloud.wait(deployment_id)

    assert info["status"] == "Succeeded", info
    assert len(v1_pids) == 2
    assert not any(pid_alive(pid) for pid in v1_pids)
    for instance in fleet.instances:
        assert get_json(instance.port)[1]["version"] == "2.0.0"
    for instance_id, target in cloud.targets(deployment_id).items():
        stop = by_name(target)["ApplicationStop"]
        assert stop["status"] == "Succeeded"
        assert stop["diagnostics"]["scriptName"] == "scripts/application_stop.sh"
        assert f"ApplicationStop of 1.0.0 in {v1_dirs[instance_id]}" in stop["diagnostics"]["logTail"]
        assert "server stopped" in stop["diagnostics"]["logTail"]


@pytest.mark.timeout(90)
def test_broken_release_fails_validate_service_and_skips_the_later_batch(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    fleet = fleet_of(2)
    assert cloud.wait(cloud.deploy(cloud.upload("demo/v1.zip", zipped(demo_bundle(tmp_path, "1.0.0")))))[
        "status"
    ] == ("Succeeded")
    cloud.events(2)

    deployment_id = cloud.deploy(cloud.upload("demo/v3.zip", zipped(demo_bundle(tmp_path, "3.0.0-broken"))))
    info = cloud.wait(deployment_id)

    assert info["status"] == "Failed"
    assert info["errorInformation"]["code"] == "HEALTH_CONSTRAINTS"
    assert info["errorInformation"]["message"]
    assert (info["deploymentOverview"]["Failed"], info["deploymentOverview"]["Skipped"]) == (1, 1)
    first, second = fleet.instances
    targets = cloud.targets(deployment_id)
    failed = by_name(targets[first.instance_id])
    assert targets[first.instance_id]["status"] == "Failed"
    assert failed["ValidateService"]["status"] == "Failed"
    diagnostics = failed["ValidateService"]["diagnostics"]
    assert diagnostics["errorCode"] == "ScriptFailed"
    assert diagnostics["scriptName"] == "scripts/validate_service.sh"
    assert "failed with exit code 1" in diagnostics["message"]
    assert "not healthy" in diagnostics["logTail"]
    assert len(diagnostics["logTail"].encode()) <= 4096
    assert all(
        failed[hook]["status"] == "Skipped"
        for hook in LIFECYCLE_EVENTS[LIFECYCLE_EVENTS.index("ValidateService") + 1 :]
    )
    assert targets[second.instance_id]["status"] == "Skipped"
    assert {event["status"] for event in targets[second.instance_id]["lifecycleEvents"]} == {"Skipped"}
    # The later batch was never touched: it still serves the previous release.
    assert get_json(second.port)[1]["version"] == "1.0.0"
    assert fleet.traffic is not None
    assert fleet.traffic.calls[-1] == ("deregister", first.instance_id)
    assert [event["detail"]["state"] for event in cloud.events(2)] == ["START", "FAILURE"]


@pytest.mark.timeout(90)
def test_hooks_get_codedeploys_environment_from_a_tgz_bundle(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    dump = 'env > "$INSTANCE_DIR/env-$LIFECYCLE_EVENT.txt"; pwd > "$INSTANCE_DIR/cwd.txt"'
    bundle = custom_bundle(tmp_path, "env", {"BeforeInstall": ("dump_env.sh", 10, dump)})
    [instance] = fleet_of(1, traffic=False).instances
    revision = cloud.upload("custom/env.tgz", tgz(bundle), bundle_type="tgz")

    deployment_id = cloud.deploy(revision)

    assert cloud.wait(deployment_id)["status"] == "Succeeded"
    lines = (instance.app_dir / "env-BeforeInstall.txt").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    location = revision["s3Location"]
    assert {name: env.get(name) for name in EXPECTED_ENV} == {
        "LIFECYCLE_EVENT": "BeforeInstall",
        "DEPLOYMENT_ID": deployment_id,
        "APPLICATION_NAME": APPLICATION,
        "DEPLOYMENT_GROUP_NAME": GROUP,
        "DEPLOYMENT_GROUP_ID": cloud.group_id,
        "BUNDLE_BUCKET": BUCKET,
        "BUNDLE_KEY": "custom/env.tgz",
        "BUNDLE_VERSION": location["version"],
        "BUNDLE_ETAG": location["eTag"],
        "PORT": str(instance.port),
        "INSTANCE_DIR": str(instance.app_dir),
    }
    assert "AWS_SECRET_ACCESS_KEY" not in env  # the agent's own environment does not leak
    cwd = Path((instance.app_dir / "cwd.txt").read_text().strip())
    assert (cwd / "appspec.yml").is_file()  # hooks run from the unpacked bundle root
    assert (instance.install_root / "opt/custom/dump_env.sh").is_file()
    events = by_name(cloud.targets(deployment_id)[instance.instance_id])
    assert (events["BlockTraffic"]["status"], events["AllowTraffic"]["status"]) == ("Skipped", "Skipped")


EXPECTED_ENV = (
    "LIFECYCLE_EVENT",
    "DEPLOYMENT_ID",
    "APPLICATION_NAME",
    "DEPLOYMENT_GROUP_NAME",
    "DEPLOYMENT_GROUP_ID",
    "BUNDLE_BUCKET",
    "BUNDLE_KEY",
    "BUNDLE_VERSION",
    "BUNDLE_ETAG",
    "PORT",
    "INSTANCE_DIR",
)


@pytest.mark.timeout(90)
def test_a_hanging_hook_is_killed_with_its_children_at_its_timeout(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    hang = 'sleep 60 & echo $! > "$INSTANCE_DIR/child.pid"; echo "hanging now"; sleep 60'
    bundle = custom_bundle(tmp_path, "hang", {"BeforeInstall": ("hang.sh", 1, hang)})
    [instance] = fleet_of(1, traffic=False).instances
    began = time.monotonic()

    deployment_id = cloud.deploy(cloud.upload("custom/hang.zip", zipped(bundle)))
    info = cloud.wait(deployment_id)

    assert time.monotonic() - began < 15
    assert info["status"] == "Failed"
    before_install = by_name(cloud.targets(deployment_id)[instance.instance_id])["BeforeInstall"]
    assert before_install["status"] == "Failed"
    assert before_install["diagnostics"]["errorCode"] == "ScriptTimedOut"
    assert before_install["diagnostics"]["scriptName"] == "scripts/hang.sh"
    assert "failed to complete in 1 seconds" in before_install["diagnostics"]["message"]
    assert "hanging now" in before_install["diagnostics"]["logTail"]
    assert not pid_alive(int((instance.app_dir / "child.pid").read_text()))


@pytest.mark.timeout(90)
def test_stop_deployment_ends_it_stopped_at_the_next_lifecycle_event(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    bundle = custom_bundle(tmp_path, "slow", {"BeforeInstall": ("slow.sh", 10, "sleep 1")})
    fleet = fleet_of(2, traffic=False)
    first, second = fleet.ids
    deployment_id = cloud.deploy(cloud.upload("custom/slow.zip", zipped(bundle)))
    deadline = time.monotonic() + 20

    def first_in_before_install() -> bool:
        # The agent claims the deployment (no longer Created) a moment before it lists its targets.
        targets = cloud.targets(deployment_id)
        return first in targets and by_name(targets[first])["BeforeInstall"]["status"] == "InProgress"

    while moto_extensions.backend(REGION).deployments[deployment_id].status == "Created" or (
        not first_in_before_install()
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)

    answer = cloud.codedeploy.stop_deployment(deploymentId=deployment_id)
    info = cloud.wait(deployment_id)

    assert answer["status"] == "Pending"
    assert info["status"] == "Stopped"
    assert info["errorInformation"]["code"] == "MANUAL_STOP"
    targets = cloud.targets(deployment_id)
    events = by_name(targets[first])
    assert events["BeforeInstall"]["status"] == "Succeeded"  # the running script was let finish
    assert events["Install"]["status"] == "Skipped"
    assert targets[second]["status"] == "Skipped"
    assert [event["detail"]["state"] for event in cloud.events(2)] == ["START", "STOP"]


@pytest.mark.timeout(90)
def test_agent_stop_ends_its_deployment_and_leaves_no_process_running(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    fleet = fleet_of(2)
    assert cloud.wait(cloud.deploy(cloud.upload("demo/v1.zip", zipped(demo_bundle(tmp_path, "1.0.0")))))[
        "status"
    ] == ("Succeeded")
    servers = fleet.server_pids()
    # Next, a release whose BeforeInstall hangs (with a child) until the agent stops.
    hang = 'sleep 60 & echo $! > "$INSTANCE_DIR/child.pid"; sleep 60'
    bundle = demo_bundle(tmp_path, "2.0.0")
    (bundle / "scripts" / "before_install.sh").write_text(f"#!/usr/bin/env bash\n{hang}\n")
    deployment_id = cloud.deploy(cloud.upload("demo/v2.zip", zipped(bundle)))
    child_pid_file = fleet.instances[0].app_dir / "child.pid"
    deadline = time.monotonic() + 20
    while not child_pid_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sessions = {session for instance in fleet.instances for session in instance.sessions}
    began = time.monotonic()

    fleet.agent.stop()

    assert time.monotonic() - began < 20
    assert len(servers) == 2
    child = int(child_pid_file.read_text())
    assert not [pid for pid in {*servers, child, *sessions} if pid_alive(pid)]
    info = cloud.codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
    assert info["status"] == "Failed"
    assert info["errorInformation"]["code"] == "AGENT_ISSUE"
    for instance in fleet.instances:
        with pytest.raises(urllib.error.URLError):
            get_json(instance.port)


def _wait_until(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.timeout(90)
def test_an_agent_told_not_to_poll_leaves_every_instance_pending_until_stopped(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    fleet = fleet_of(2, traffic=False)
    fleet.agent.misbehave(Misbehaviour(not_polling=True))
    deployment_id = cloud.deploy(cloud.upload("demo/v1.zip", zipped(demo_bundle(tmp_path, "1.0.0"))))
    _wait_until(lambda: len(cloud.targets(deployment_id)) == 2)
    time.sleep(0.5)  # many polls later: still nothing started

    targets = cloud.targets(deployment_id)
    assert {target["status"] for target in targets.values()} == {"Pending"}
    assert {event["status"] for target in targets.values() for event in target["lifecycleEvents"]} == {
        "Pending"
    }
    cloud.codedeploy.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=True)
    info = cloud.wait(deployment_id)

    assert info["status"] == "Stopped"
    assert {target["status"] for target in cloud.targets(deployment_id).values()} == {"Skipped"}


@pytest.mark.timeout(90)
def test_an_agent_told_to_hang_in_a_hook_keeps_it_in_progress_until_stopped(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    fleet = fleet_of(2, traffic=False)
    first, second = fleet.ids
    fleet.agent.misbehave(Misbehaviour(hang_in="ValidateService"))
    deployment_id = cloud.deploy(cloud.upload("demo/v1.zip", zipped(demo_bundle(tmp_path, "1.0.0"))))
    _wait_until(
        lambda: (
            by_name(cloud.targets(deployment_id).get(first, {"lifecycleEvents": []}))
            .get("ValidateService", {})
            .get("status")
            == "InProgress"
        )
    )
    time.sleep(0.5)

    hanging = by_name(cloud.targets(deployment_id)[first])["ValidateService"]
    assert hanging["status"] == "InProgress"
    assert hanging["startTime"]
    cloud.codedeploy.stop_deployment(deploymentId=deployment_id)
    info = cloud.wait(deployment_id)

    assert info["status"] == "Stopped"
    targets = cloud.targets(deployment_id)
    assert by_name(targets[first])["ValidateService"]["status"] == "Failed"
    assert targets[second]["status"] == "Skipped"


@pytest.mark.timeout(90)
def test_an_agent_told_to_fail_the_download_fails_download_bundle(
    cloud: Cloud, fleet_of: FleetFactory, tmp_path: Path
) -> None:
    fleet = fleet_of(2, traffic=False)
    first = fleet.ids[0]
    fleet.agent.misbehave(Misbehaviour(fail_download_on=frozenset(fleet.ids)))
    deployment_id = cloud.deploy(cloud.upload("demo/v1.zip", zipped(demo_bundle(tmp_path, "1.0.0"))))

    info = cloud.wait(deployment_id)

    assert info["status"] == "Failed"
    download = by_name(cloud.targets(deployment_id)[first])["DownloadBundle"]
    assert download["status"] == "Failed"
    assert download["diagnostics"]["message"] == DOWNLOAD_DENIED_MESSAGE

"""Hook scripts of bundles/local-demo, run for real: they start and stop app/server.py on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sandbox.processes import pid_alive

from .helpers import BUNDLES_DIR, base_env, free_port, run_script

pytestmark = pytest.mark.timeout(30)

HOOK_SCRIPTS = {
    "ApplicationStop": "application_stop.sh",
    "BeforeInstall": "before_install.sh",
    "ApplicationStart": "application_start.sh",
    "ValidateService": "validate_service.sh",
}


def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            status: int = response.status
            payload: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    return status, payload


@dataclass
class Instance:
    """One local "instance": a port and an instance dir shared by the bundles deployed to it."""

    port: int
    instance_dir: Path
    base: dict[str, str]
    pids: set[int] = field(default_factory=set)

    @property
    def pid_file(self) -> Path:
        return self.instance_dir / "server.pid"

    def run(
        self, bundle: Path, hook: str, cwd: Path | None = None, **overrides: str
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.base, "LIFECYCLE_EVENT": hook, **overrides}
        result = run_script(bundle / "scripts" / HOOK_SCRIPTS[hook], env, cwd=cwd or bundle)
        if self.pid_file.exists():  # remembered so the fixture can kill whatever was started
            self.pids.add(int(self.pid_file.read_text()))
        return result

    def deploy(self, bundle: Path) -> subprocess.CompletedProcess[str]:
        """ApplicationStop .. ValidateService like the sandbox, stopping at the first failure."""
        for hook in HOOK_SCRIPTS:
            result = self.run(bundle, hook)
            if result.returncode != 0:
                break
        return result


def make_bundle(tmp_path: Path, name: str, version: str) -> Path:
    bundle = tmp_path / name
    shutil.copytree(BUNDLES_DIR / "local-demo", bundle, ignore=shutil.ignore_patterns(".instance"))
    (bundle / "VERSION").write_text(f"{version}\n")
    return bundle


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    base = {
        **base_env(),
        "PORT": str(free_port()),
        "INSTANCE_DIR": str(tmp_path / "instance-1"),
        "INSTANCE_NAME": "i-local-1",
        "PYTHON": sys.executable,
        "DEPLOYMENT_ID": "d-LOCAL0001",
        "APPLICATION_NAME": "release-coordinator-demo",
        "DEPLOYMENT_GROUP_NAME": "local",
        "DEPLOYMENT_GROUP_ID": "00000000-0000-0000-0000-000000000000",
        "HEALTH_TIMEOUT_SECONDS": "10",
        "HEALTH_INTERVAL_SECONDS": "0.1",
        "STOP_TIMEOUT_SECONDS": "5",
    }
    inst = Instance(port=int(base["PORT"]), instance_dir=tmp_path / "instance-1", base=base)
    try:
        yield inst
    finally:
        # Stop the way the sandbox would, then make sure: no server outlives the test.
        run_script(
            BUNDLES_DIR / "local-demo" / "scripts" / "application_stop.sh",
            {**base, "LIFECYCLE_EVENT": "ApplicationStop"},
            cwd=tmp_path,
        )
        for pid in inst.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_start_and_validate_serve_the_bundle_version(instance: Instance, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "bundle-v1", "3.1.4")

    for hook in ("BeforeInstall", "ApplicationStart", "ValidateService"):
        result = instance.run(bundle, hook)
        assert result.returncode == 0, output(result)
        assert f"[{hook}] [d-LOCAL0001] [i-local-1]" in result.stdout

    status, health = get_json(instance.port, "/health")
    assert status == 200
    assert health["status"] == "ok"
    assert health["version"] == "3.1.4"
    assert health["instance"] == "i-local-1"
    status, root = get_json(instance.port, "/")
    assert status == 200
    assert root["version"] == "3.1.4"
    assert root["deployment_id"] == "d-LOCAL0001"
    assert root["pid"] == int(instance.pid_file.read_text())


def test_stop_stops_the_server(instance: Instance, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "bundle", "1.0.0")
    assert instance.run(bundle, "ApplicationStart").returncode == 0
    pid = int(instance.pid_file.read_text())
    assert pid_alive(pid)

    result = instance.run(bundle, "ApplicationStop")

    assert result.returncode == 0, output(result)
    assert not pid_alive(pid)
    assert not instance.pid_file.exists()
    with pytest.raises(urllib.error.URLError):
        get_json(instance.port, "/health")
    assert "SIGTERM: shutting down" in (instance.instance_dir / "server.log").read_text()


def test_stop_with_nothing_running_exits_0(instance: Instance, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "bundle", "1.0.0")

    result = instance.run(bundle, "ApplicationStop")

    assert result.returncode == 0, output(result)
    assert "nothing to stop" in result.stdout


def test_stop_escalates_to_sigkill(instance: Instance, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "bundle", "1.0.0")
    (bundle / "app" / "server.py").write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    time.sleep(1)\n"
    )
    assert instance.run(bundle, "ApplicationStart").returncode == 0
    pid = int(instance.pid_file.read_text())

    result = instance.run(bundle, "ApplicationStop", STOP_TIMEOUT_SECONDS="1")

    assert result.returncode == 0, output(result)
    assert "sending SIGKILL" in result.stdout
    assert not pid_alive(pid)


@pytest.mark.parametrize("breakage", ["version", "fail_validate_file"])
def test_broken_release_fails_validate_quickly(instance: Instance, tmp_path: Path, breakage: str) -> None:
    bundle = make_bundle(tmp_path, "bundle", "2.0.0-broken" if breakage == "version" else "2.0.0")
    if breakage == "fail_validate_file":
        (bundle / "FAIL_VALIDATE").touch()
    assert instance.run(bundle, "ApplicationStart").returncode == 0
    started = time.monotonic()

    result = instance.run(
        bundle, "ValidateService", HEALTH_TIMEOUT_SECONDS="1", HEALTH_INTERVAL_SECONDS="0.2"
    )

    assert result.returncode == 1
    assert time.monotonic() - started < 5
    assert "not healthy" in result.stderr
    assert "HTTP 500" in result.stderr
    # The last server log lines: the failing health checks themselves.
    assert '"GET /health HTTP/1.1" 500' in result.stdout
    status, health = get_json(instance.port, "/health")
    assert status == 500
    assert health["status"] == "failing"


def test_redeploy_replaces_the_server_with_the_new_version(instance: Instance, tmp_path: Path) -> None:
    v1 = make_bundle(tmp_path, "bundle-v1", "1.0.0")
    v2 = make_bundle(tmp_path, "bundle-v2", "2.0.0")
    assert instance.deploy(v1).returncode == 0
    old_pid = int(instance.pid_file.read_text())

    # ApplicationStop from the previous bundle, the rest from the new one (CodeDeploy's order).
    assert instance.run(v1, "ApplicationStop", DEPLOYMENT_ID="d-LOCAL0002").returncode == 0
    for hook in ("BeforeInstall", "ApplicationStart", "ValidateService"):
        result = instance.run(v2, hook, DEPLOYMENT_ID="d-LOCAL0002")
        assert result.returncode == 0, output(result)

    assert not pid_alive(old_pid)
    status, health = get_json(instance.port, "/health")
    assert (status, health["version"], health["deployment_id"]) == (200, "2.0.0", "d-LOCAL0002")
    # BeforeInstall kept the previous revision's log apart.
    assert "1.0.0" in (instance.instance_dir / "server.log.1").read_text()
    assert "1.0.0" not in (instance.instance_dir / "server.log").read_text()


def test_start_replaces_a_server_left_running(instance: Instance, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "bundle", "1.0.0")
    assert instance.run(bundle, "ApplicationStart").returncode == 0
    old_pid = int(instance.pid_file.read_text())

    # Second start without ApplicationStop (skipped or its failure ignored), from another cwd.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = instance.run(bundle, "ApplicationStart", cwd=elsewhere)

    assert result.returncode == 0, output(result)
    assert not pid_alive(old_pid)
    assert instance.run(bundle, "ValidateService", cwd=elsewhere).returncode == 0


def test_start_fails_fast_when_the_port_is_taken(instance: Instance, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "bundle", "1.0.0")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", instance.port))
        squatter.listen()

        result = instance.run(bundle, "ApplicationStart")

    assert result.returncode == 1
    assert "exited right after start" in result.stderr
    assert "cannot listen" in result.stdout
    assert not instance.pid_file.exists()

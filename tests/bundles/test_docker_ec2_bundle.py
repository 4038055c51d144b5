"""Hook scripts of bundles/docker-ec2, run against a fake docker and a real local HTTP endpoint."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import BUNDLES_DIR, FakeDocker, HealthServer, base_env, free_port, run_script

pytestmark = pytest.mark.timeout(30)

DEPLOYMENT_ID = "d-TEST12345"
CONTAINER = "release-coordinator-app"
IMAGE = f"release-coordinator-app:{DEPLOYMENT_ID}"


@dataclass
class Ec2Host:
    bundle: Path
    app_root: Path
    env_file: Path
    env: dict[str, str]
    docker: FakeDocker

    def run(self, hook: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        script = {
            "ApplicationStop": "application_stop.sh",
            "BeforeInstall": "before_install.sh",
            "ApplicationStart": "application_start.sh",
            "ValidateService": "validate_service.sh",
        }[hook]
        env = {**self.env, "LIFECYCLE_EVENT": hook, **overrides}
        return run_script(self.bundle / "scripts" / script, env, cwd=self.bundle)


@pytest.fixture
def host(tmp_path: Path, fake_docker: FakeDocker) -> Ec2Host:
    """A copy of the bundle (tests add image.tar etc.) and settings pointing into tmp_path."""
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES_DIR / "docker-ec2", bundle)
    app_root = tmp_path / "opt-app"
    env_file = tmp_path / "app.env"
    env = {
        **base_env(fake_docker.bin_dir),
        **fake_docker.env,
        "APP_ROOT": str(app_root),
        "ENV_FILE": str(env_file),
        "DEPLOYMENT_ID": DEPLOYMENT_ID,
        "APPLICATION_NAME": "release-coordinator-test",
        "DEPLOYMENT_GROUP_NAME": "test-group",
    }
    return Ec2Host(bundle=bundle, app_root=app_root, env_file=env_file, env=env, docker=fake_docker)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


# --- ApplicationStop -------------------------------------------------------------------------


def test_stop_on_first_deploy_without_container_exits_0(host: Ec2Host) -> None:
    result = host.run("ApplicationStop", FAKE_DOCKER_CONTAINER="absent")

    assert result.returncode == 0, output(result)
    assert "[ApplicationStop]" in result.stdout
    assert "nothing to stop" in result.stdout
    assert host.docker.calls_to("stop") == []


def test_stop_with_exited_container_does_nothing(host: Ec2Host) -> None:
    result = host.run("ApplicationStop", FAKE_DOCKER_CONTAINER="exited")

    assert result.returncode == 0, output(result)
    assert host.docker.calls_to("stop") == []


def test_stop_without_docker_cli_exits_0(host: Ec2Host, tmp_path: Path) -> None:
    result = host.run("ApplicationStop", DOCKER=str(tmp_path / "no-such-docker"))

    assert result.returncode == 0, output(result)
    assert "not found" in result.stdout


@pytest.mark.parametrize(("grace_override", "expected_grace"), [(None, "30"), ("7", "7")])
def test_stop_running_container_with_grace_timeout(
    host: Ec2Host, grace_override: str | None, expected_grace: str
) -> None:
    overrides = {"FAKE_DOCKER_CONTAINER": "running"}
    if grace_override is not None:
        overrides["STOP_GRACE_SECONDS"] = grace_override

    result = host.run("ApplicationStop", **overrides)

    assert result.returncode == 0, output(result)
    assert host.docker.calls_to("stop") == [["stop", "--time", expected_grace, CONTAINER]]
    assert f"[ApplicationStop] [{DEPLOYMENT_ID}]" in result.stdout


def test_stop_fails_when_container_keeps_running(host: Ec2Host) -> None:
    result = host.run("ApplicationStop", FAKE_DOCKER_CONTAINER="running", FAKE_DOCKER_FAIL="stop")

    assert result.returncode == 1
    assert "still running" in result.stderr


# --- BeforeInstall ---------------------------------------------------------------------------


def test_before_install_empties_previous_install_and_prunes_old_images(host: Ec2Host) -> None:
    host.app_root.mkdir()
    (host.app_root / "appspec.yml").write_text("version: 0.0\n")
    (host.app_root / "scripts").mkdir()
    (host.app_root / "scripts" / "old.sh").write_text("#!/bin/sh\n")
    (host.app_root / ".hidden").write_text("x")

    result = host.run("BeforeInstall", FAKE_DOCKER_IMAGE_TAGS="d-5,d-4,<none>,d-3,d-2,d-1", KEEP_IMAGES="3")

    assert result.returncode == 0, output(result)
    assert host.app_root.is_dir()
    assert list(host.app_root.iterdir()) == []
    assert host.docker.calls_to("rmi") == [
        ["rmi", "release-coordinator-app:d-2"],
        ["rmi", "release-coordinator-app:d-1"],
    ]
    assert ["image", "prune", "--force"] in host.docker.calls()


def test_before_install_leaves_unknown_directory_alone(host: Ec2Host) -> None:
    host.app_root.mkdir()
    keep = host.app_root / "precious.txt"
    keep.write_text("not a bundle")

    result = host.run("BeforeInstall")

    assert result.returncode == 0, output(result)
    assert keep.exists()
    assert "left untouched" in result.stdout


def test_before_install_image_cleanup_is_best_effort(host: Ec2Host) -> None:
    result = host.run("BeforeInstall", FAKE_DOCKER_IMAGE_TAGS="a,b,c,d,e", FAKE_DOCKER_FAIL="rmi,image prune")

    assert result.returncode == 0, output(result)
    assert len(host.docker.calls_to("rmi")) == 2
    assert "WARNING" in result.stdout


# --- ApplicationStart ------------------------------------------------------------------------


def test_start_builds_tags_and_runs_with_configured_ports_and_env(host: Ec2Host) -> None:
    host.env_file.write_text("SPRING_PROFILES_ACTIVE=prod\n")

    result = host.run(
        "ApplicationStart", HOST_PORT="9090", CONTAINER_PORT="8081", DOCKER_RUN_EXTRA_ARGS="--memory 1g"
    )

    assert result.returncode == 0, output(result)
    assert host.docker.calls_to("build") == [
        [
            "build",
            "--tag",
            IMAGE,
            "--label",
            f"com.release-coordinator.deployment-id={DEPLOYMENT_ID}",
            str(host.bundle),
        ]
    ]
    assert host.docker.calls_to("load") == []
    assert host.docker.calls_to("rm") == []  # no leftover container
    [run] = host.docker.calls_to("run")
    assert run[:2] == ["run", "--detach"]
    assert run[run.index("--name") + 1] == CONTAINER
    assert run[run.index("--restart") + 1] == "unless-stopped"
    assert run[run.index("--publish") + 1] == "9090:8081"
    assert run[run.index("--env-file") + 1] == str(host.env_file)
    assert f"DEPLOYMENT_ID={DEPLOYMENT_ID}" in run
    assert run[-3:] == ["--memory", "1g", IMAGE]
    assert "[ApplicationStart]" in result.stdout


def test_start_loads_shipped_tarball_and_replaces_old_container(host: Ec2Host) -> None:
    (host.bundle / "image.tar").write_bytes(b"not really a tarball")

    result = host.run("ApplicationStart", FAKE_DOCKER_CONTAINER="exited")

    assert result.returncode == 0, output(result)
    calls = host.docker.calls()
    assert ["load", "--input", str(host.bundle / "image.tar")] in calls
    assert ["tag", "shipped/app:ci-build", IMAGE] in calls
    assert host.docker.calls_to("build") == []
    rm_index = calls.index(["rm", "--force", CONTAINER])
    run_index = next(i for i, call in enumerate(calls) if call[0] == "run")
    assert rm_index < run_index
    run = calls[run_index]
    assert run[run.index("--publish") + 1] == "8080:8080"  # config.env defaults
    assert "--env-file" not in run  # ENV_FILE does not exist
    assert run[-1] == IMAGE


def test_start_fails_when_tarball_holds_no_image(host: Ec2Host) -> None:
    (host.bundle / "image.tar").write_bytes(b"")

    result = host.run("ApplicationStart", FAKE_DOCKER_LOAD_OUTPUT="nothing useful")

    assert result.returncode != 0
    assert host.docker.calls_to("run") == []


def test_start_fails_without_dockerfile_or_tarball(host: Ec2Host) -> None:
    (host.bundle / "Dockerfile").unlink()

    result = host.run("ApplicationStart")

    assert result.returncode != 0
    assert "neither" in result.stderr
    assert host.docker.calls_to("run") == []


def test_start_fails_when_docker_run_fails(host: Ec2Host) -> None:
    result = host.run("ApplicationStart", FAKE_DOCKER_FAIL="run")

    assert result.returncode != 0
    assert "docker run failed" in result.stderr


def test_start_fails_when_build_fails(host: Ec2Host) -> None:
    result = host.run("ApplicationStart", FAKE_DOCKER_FAIL="build")

    assert result.returncode != 0
    assert host.docker.calls_to("run") == []


# --- ValidateService -------------------------------------------------------------------------


def test_validate_succeeds_when_healthy(host: Ec2Host, health_server: HealthServer) -> None:
    result = host.run("ValidateService", HOST_PORT=str(health_server.port), HEALTH_PATH="/actuator/health")

    assert result.returncode == 0, output(result)
    assert health_server.paths == ["/actuator/health"]
    assert "healthy after 1 attempt(s)" in result.stdout
    assert host.docker.calls_to("logs") == []


def test_validate_retries_until_healthy(host: Ec2Host, health_server: HealthServer) -> None:
    health_server.statuses = [503, 503]

    result = host.run(
        "ValidateService",
        HOST_PORT=str(health_server.port),
        HEALTH_TIMEOUT_SECONDS="10",
        HEALTH_INTERVAL_SECONDS="0.1",
    )

    assert result.returncode == 0, output(result)
    assert "healthy after 3 attempt(s)" in result.stdout


def test_validate_fails_with_container_logs_when_never_healthy(
    host: Ec2Host, health_server: HealthServer
) -> None:
    health_server.default_status = 503
    started = time.monotonic()

    result = host.run(
        "ValidateService",
        FAKE_DOCKER_CONTAINER="running",
        HOST_PORT=str(health_server.port),
        HEALTH_TIMEOUT_SECONDS="1",
        HEALTH_INTERVAL_SECONDS="0.2",
    )

    assert result.returncode == 1
    assert time.monotonic() - started < 6
    assert len(health_server.paths) >= 2
    assert host.docker.calls_to("logs") == [["logs", "--tail", "50", CONTAINER]]
    assert "fake log line 100" in result.stdout
    assert "fake log line 51" in result.stdout
    assert "fake log line 50\n" not in result.stdout
    assert "[ValidateService]" in result.stderr
    assert "503" in result.stderr


def test_validate_fails_when_nothing_listens(host: Ec2Host) -> None:
    # A port that was just free: connection refused on every attempt.
    result = host.run(
        "ValidateService",
        HOST_PORT=str(free_port()),
        HEALTH_TIMEOUT_SECONDS="1",
        HEALTH_INTERVAL_SECONDS="0.2",
    )

    assert result.returncode == 1
    assert "fake log line 100" in result.stdout

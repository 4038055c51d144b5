"""Fixtures for the CodeDeploy bundle tests: a fake docker CLI, a local health endpoint, ports."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLES_DIR = REPO_ROOT / "bundles"

# A stand-in for the docker CLI: logs each call's argv (one JSON list a line) and answers like
# docker would, as far as the hook scripts care. Driven by environment variables:
#   FAKE_DOCKER_LOG          file the calls are appended to (required)
#   FAKE_DOCKER_FAIL         comma-separated subcommands that exit 1 ("run", "stop", "image ls", ...)
#   FAKE_DOCKER_CONTAINER    state of the named container: absent (default) | running | exited
#   FAKE_DOCKER_LOAD_OUTPUT  what `docker load` prints
#   FAKE_DOCKER_IMAGE_TAGS   comma-separated tags `docker image ls` prints, newest first
FAKE_DOCKER = """\
import json
import os
import sys

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
command = " ".join(args[:2]) if args[:1] == ["image"] else (args[0] if args else "")
failing = {c.strip() for c in os.environ.get("FAKE_DOCKER_FAIL", "").split(",") if c.strip()}
if command in failing:
    print(f"fake docker: {command} failed on purpose", file=sys.stderr)
    sys.exit(1)
state = os.environ.get("FAKE_DOCKER_CONTAINER", "absent")
if command == "inspect":
    if state == "absent":
        print(f"Error: No such container: {args[-1]}", file=sys.stderr)
        sys.exit(1)
    fmt = args[args.index("--format") + 1] if "--format" in args else ""
    if fmt == "{{.State.Running}}":
        print("true" if state == "running" else "false")
    elif "{{.State.Status}}" in fmt:
        print(f"status={state} restarts=3 exit_code=1")
    else:
        print(json.dumps([{"State": {"Running": state == "running"}}]))
elif command == "load":
    print(os.environ.get("FAKE_DOCKER_LOAD_OUTPUT", "Loaded image: shipped/app:ci-build"))
elif command == "run":
    print("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
elif command == "stop":
    print(args[-1])
elif command == "logs":
    tail = int(args[args.index("--tail") + 1]) if "--tail" in args else 100
    for number in range(1, 101)[-tail:]:
        print(f"fake log line {number}")
elif command in ("image ls", "images"):
    for tag in os.environ.get("FAKE_DOCKER_IMAGE_TAGS", "").split(","):
        if tag:
            print(tag)
"""


@dataclass
class FakeDocker:
    path: Path
    bin_dir: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def calls_to(self, command: str) -> list[list[str]]:
        return [call for call in self.calls() if call[:1] == [command]]


@pytest.fixture
def fake_docker(tmp_path: Path) -> FakeDocker:
    """A fake `docker` first on PATH and in $DOCKER: the real CLI is never called."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    path = bin_dir / "docker"
    path.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "docker-calls.jsonl"
    env = {"DOCKER": str(path), "FAKE_DOCKER_LOG": str(log)}
    return FakeDocker(path=path, bin_dir=bin_dir, log=log, env=env)


def base_env(*path_prefixes: Path) -> dict[str, str]:
    """A minimal environment, so settings from the developer's shell cannot leak into the hooks."""
    path = os.pathsep.join([*(str(p) for p in path_prefixes), os.environ.get("PATH", "/usr/bin:/bin")])
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    return env


def run_script(
    script: Path, env: dict[str, str], cwd: Path, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class HealthServer:
    """A real HTTP endpoint on 127.0.0.1 answering every GET with the next queued status."""

    port: int
    statuses: list[int]
    default_status: int
    paths: list[str] = field(default_factory=list)

    def next_status(self, path: str) -> int:
        self.paths.append(path)
        return self.statuses.pop(0) if self.statuses else self.default_status


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    state = HealthServer(port=0, statuses=[], default_status=200)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = state.next_status(self.path)
            body = json.dumps({"status": "UP" if status == 200 else "DOWN"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

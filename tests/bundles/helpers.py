"""Helpers shared by the CodeDeploy bundle tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

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


def base_env(*path_prefixes: Path) -> dict[str, str]:
    """A minimal environment, so settings from the developer's shell cannot leak into the hooks."""
    path = os.pathsep.join([*(str(p) for p in path_prefixes), os.environ.get("PATH", "/usr/bin:/bin")])
    return {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


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

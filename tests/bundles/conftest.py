"""Fixtures for the CodeDeploy bundle tests: a fake docker CLI and a local health endpoint."""

from __future__ import annotations

import json
import stat
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .helpers import FAKE_DOCKER, FakeDocker, HealthServer


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
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

#!/usr/bin/env python3
"""Tiny demo service of the local-demo bundle (Python standard library only).

GET /        200 {"service", "version", "instance", "deployment_id", "pid", "healthy"}
GET /health  200 {"status": "ok", ...}, or 500 {"status": "failing", ...} when the release is
             broken on purpose: VERSION ends with "-broken" or the bundle holds a FAIL_VALIDATE file.

Environment: PORT (default 8000), INSTANCE_NAME, DEPLOYMENT_ID. Listens on 127.0.0.1 only.
SIGTERM/SIGINT: stop accepting, let in-flight requests finish, exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

# app/server.py -> the bundle root, wherever the bundle was unpacked.
BUNDLE_DIR = Path(__file__).resolve().parent.parent
SERVICE = "release-coordinator-local-demo"
BIND_HOST = "127.0.0.1"


def read_version(bundle_dir: Path) -> str:
    try:
        return (bundle_dir / "VERSION").read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def is_broken(bundle_dir: Path, version: str) -> bool:
    """A release that fails its health check on purpose, to demo a failing deployment."""
    return version.endswith("-broken") or (bundle_dir / "FAIL_VALIDATE").exists()


class Handler(BaseHTTPRequestHandler):
    server_version = "local-demo"
    # Set once in main(): the release does not change while the process runs.
    info: ClassVar[dict[str, Any]] = {}
    healthy: ClassVar[bool] = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, self.info)
        elif path == "/health":
            if self.healthy:
                self._send(200, {"status": "ok", **self.info})
            else:
                self._send(500, {"status": "failing", "reason": "broken release (demo)", **self.info})
        else:
            self._send(404, {"error": "not found", "path": path})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.log_date_time_string()} {self.info.get('instance')} {format % args}\n")


class _Stop(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    version = read_version(BUNDLE_DIR)
    Handler.healthy = not is_broken(BUNDLE_DIR, version)
    Handler.info = {
        "service": SERVICE,
        "version": version,
        "instance": os.environ.get("INSTANCE_NAME", f"local-{port}"),
        "deployment_id": os.environ.get("DEPLOYMENT_ID", ""),
        "pid": os.getpid(),
        "healthy": Handler.healthy,
    }
    try:
        server = ThreadingHTTPServer((BIND_HOST, port), Handler)
    except OSError as exc:
        print(f"cannot listen on {BIND_HOST}:{port}: {exc}", file=sys.stderr)
        return 1
    # Join request threads on close, so a request in flight at SIGTERM still gets its answer.
    server.daemon_threads = False
    server.block_on_close = True
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"listening on http://{BIND_HOST}:{port} {json.dumps(Handler.info)}", flush=True)
    try:
        server.serve_forever()
    except _Stop as stop:
        print(f"{stop}: shutting down", flush=True)
    finally:
        server.server_close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

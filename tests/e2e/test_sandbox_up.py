"""`relco sandbox up --json`: one ready line, the API and the load balancer serve, SIGTERM stops
everything it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_demo import processes_under

RELCO = Path(sys.executable).parent / "relco"


@pytest.mark.timeout(180)
def test_sandbox_up_prints_its_ready_line_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    environment = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [str(RELCO), "sandbox", "up", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environment,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert set(ready) >= {
            "aws_endpoint_url",
            "api_url",
            "lb_url",
            "slack_url",
            "github_url",
            "bucket",
            "pipelines",
            "log_file",
            "dashboard_url",
        }
        assert ready["pipelines"] == ["demo"]
        # The first release's INFO lines are in the coordinator's log, with their invocation (the
        # log also holds the metrics' EMF lines, as a function's CloudWatch Logs do).
        logged = [json.loads(line) for line in Path(ready["log_file"]).read_text().splitlines()]
        created = [line for line in logged if line.get("message") == "deployment created"]
        assert created, logged[-5:]
        assert created[0]["level"] == "INFO"
        assert created[0]["function_name"] == "on_artifact_event"
        assert created[0]["function_request_id"]
        assert isinstance(created[0]["cold_start"], bool)
        with urllib.request.urlopen(ready["api_url"] + "/pipelines", timeout=10) as response:
            assert json.loads(response.read())["pipelines"][0]["name"] == "demo"
        with urllib.request.urlopen(ready["lb_url"] + "/", timeout=10) as response:
            assert json.loads(response.read())["version"] == "1.0.0"
        # The dashboard (`relco ui`) serves beside it, its API calls forwarded to the sandbox's API.
        with urllib.request.urlopen(ready["dashboard_url"] + "api/pipelines", timeout=10) as response:
            assert json.loads(response.read())["pipelines"][0]["name"] == "demo"
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    assert exit_code == 0
    assert process.stdout.read() == ""  # the ready line was the only output
    assert processes_under(tmp_path) == []

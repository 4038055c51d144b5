"""Cold-start CPU per function, to choose each function's memory (infra/sizing.py).

Lambda gives a function CPU in proportion to its memory: "At 1,769 MB, a function has the
equivalent of one vCPU" (Lambda developer guide, "Configuring Lambda function memory"). A cold
start is mostly CPU: importing ``app`` and building the boto3 clients. This measures, for each
function, the CPU seconds (``time.process_time``, so waiting is not counted) of what its cold start
really does, in a fresh interpreter each time:

1. ``import app`` (what Lambda does in the init phase);
2. ``bootstrap.wiring()``: the clients every handler builds on its first event;
3. the function's first event, through the handler, with AWS pointed at a closed port so the first
   AWS call fails at once: this loads what the handler loads lazily (Powertools' batch processor,
   the stream's deserializer, Chalice's routing), without timing any network;
4. for ``on_notify_message``, a ``slack_sdk`` client as its first Slack delivery builds.

It then scales the local CPU seconds to each memory size (``seconds x 1769 / MB`` below one vCPU)
and prints the table the sizes in infra/sizing.py were chosen from:

    .venv/bin/python -m bench.memory
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7
ONE_VCPU_MB = 1769
SIZES_MB = (128, 256, 512, 1024, 1769)

_EVENTS = {
    "on_artifact_event": {
        "version": "0",
        "id": "bench",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-12-01T00:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:s3:::bench-bucket"],
        "detail": {
            "bucket": {"name": "bench-bucket"},
            "object": {"key": "bench/v1.zip", "size": 1, "etag": "e", "version-id": "v"},
        },
    },
    "on_codedeploy_event": {
        "version": "0",
        "id": "bench",
        "detail-type": "CodeDeploy Deployment State-change Notification",
        "source": "aws.codedeploy",
        "account": "123456789012",
        "time": "2026-12-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"deploymentId": "d-BENCH", "state": "SUCCESS", "application": "a", "deploymentGroup": "g"},
    },
    "on_verify_message": {"Records": []},
    "on_notify_message": {"Records": []},
    "on_release_stream": {"Records": []},
    "reconcile": {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
    "api_handler": {
        "resource": "/pipelines",
        "path": "/pipelines",
        "httpMethod": "GET",
        "headers": {},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"resourcePath": "/pipelines", "httpMethod": "GET", "stage": "api"},
        "body": None,
        "isBase64Encoded": False,
    },
}

_CHILD = """
import json, sys, time
started = time.process_time()
import app
imported = time.process_time()
from chalicelib import bootstrap
bootstrap.wiring()
wired = time.process_time()

class Context:
    function_name = {function!r}
    aws_request_id = "bench"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    def get_remaining_time_in_millis(self):
        return 60000

handler = app.app if {function!r} == "api_handler" else getattr(app, {function!r})
try:
    handler(json.loads({event!r}), Context())
except Exception:
    pass  # the first AWS call meets a closed port: only the loading before it counts
if {function!r} == "on_notify_message":
    from slack_sdk import WebClient
    WebClient(token="xoxb-bench", timeout=10)
first_event = time.process_time()
sys.stdout.write(json.dumps({{"import": imported - started, "clients": wired - imported,
                             "first_event": first_event - wired, "total": first_event - started}}))
"""


def _environment() -> dict[str, str]:
    return {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        # Nothing listens on the discard port: the first call fails without waiting.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
        "RELEASES_TABLE": "bench",
        "VERIFY_QUEUE_URL": "http://127.0.0.1:9/123456789012/bench-verify",
        "NOTIFY_QUEUE_URL": "http://127.0.0.1:9/123456789012/bench-notify.fifo",
        "NOTIFY_DLQ_URL": "http://127.0.0.1:9/123456789012/bench-notify-dlq.fifo",
        "POWERTOOLS_LOG_LEVEL": "CRITICAL",
    }


def measure(function: str) -> dict[str, float]:
    """Median CPU seconds of each cold-start phase of ``function`` over ``RUNS`` fresh processes."""
    runs: list[dict[str, float]] = []
    for _ in range(RUNS + 1):  # the first run writes the .pyc files, as a deployed package has them
        answer = subprocess.run(
            [sys.executable, "-c", _CHILD.format(function=function, event=json.dumps(_EVENTS[function]))],
            cwd=ROOT,
            env=_environment(),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        runs.append(json.loads(answer.stdout))
    return {phase: statistics.median(run[phase] for run in runs[1:]) for phase in runs[0]}


def at_memory(cpu_s: float, memory_mb: int) -> float:
    """The same CPU work at ``memory_mb``: a share of one vCPU below 1,769 MB."""
    return cpu_s * ONE_VCPU_MB / min(memory_mb, ONE_VCPU_MB)


def main() -> None:
    print(
        f"cold-start CPU per function (median of {RUNS} fresh processes; local CPU: {os.cpu_count()} cores)"
    )
    header = " ".join(f"{size:>7} MB" for size in SIZES_MB)
    print(f"{'function':<20} {'import':>7} {'clients':>7} {'1st evt':>7} {'total':>7}  at: {header}")
    for function in _EVENTS:
        phases = measure(function)
        scaled = " ".join(f"{at_memory(phases['total'], size):>8.2f} s" for size in SIZES_MB)
        print(
            f"{function:<20} {phases['import']:>6.3f}s {phases['clients']:>6.3f}s "
            f"{phases['first_event']:>6.3f}s {phases['total']:>6.3f}s      {scaled}"
        )


if __name__ == "__main__":
    main()

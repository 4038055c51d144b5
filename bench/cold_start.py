"""Cold start: the time to import ``app`` (what Lambda does before the first event) against the
time to import ``boto3`` alone, each in a fresh interpreter with the repository root as the
working directory, alternating which goes first so drift (caches, CPU frequency) hits both.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.measurement import Outcome, main, verdict

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 21
BUDGET = 1.15
# The child times only the import; interpreter start-up is the same for both and would dilute
# the ratio. It also says whether boto3 came along with the module.
_CHILD = (
    "import json, sys, time\n"
    "started = time.perf_counter()\n"
    "import {module}\n"
    "elapsed = time.perf_counter() - started\n"
    "sys.stdout.write(json.dumps({{'seconds': elapsed, 'boto3': 'boto3' in sys.modules, "
    "'modules': len(sys.modules)}}))\n"
)


def _import(module: str) -> tuple[dict[str, float], float]:
    """The child's own measurement, and the whole process's wall time."""
    environment = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    started = time.perf_counter()
    answer = subprocess.run(
        [sys.executable, "-c", _CHILD.format(module=module)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    wall = time.perf_counter() - started
    measured: dict[str, float] = json.loads(answer.stdout)
    return measured, wall


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.0f} ms"


def run() -> Outcome:
    # One untimed import of each first: the .pyc files are written once, as a deployed package has them.
    _import("app")
    _import("boto3")
    app_s: list[float] = []
    boto3_s: list[float] = []
    app_wall: list[float] = []
    boto3_wall: list[float] = []
    ratios: list[float] = []
    app_loads_boto3 = False
    modules = 0.0
    for pair in range(PAIRS):
        order = ("app", "boto3") if pair % 2 == 0 else ("boto3", "app")
        results = {module: _import(module) for module in order}
        (app, app_process), (boto3, boto3_process) = results["app"], results["boto3"]
        app_s.append(app["seconds"])
        boto3_s.append(boto3["seconds"])
        app_wall.append(app_process)
        boto3_wall.append(boto3_process)
        ratios.append(app["seconds"] / boto3["seconds"])
        app_loads_boto3 = app_loads_boto3 or bool(app["boto3"])
        modules = app["modules"]
    ratio = statistics.median(ratios)
    outcome = Outcome()
    outcome.add(
        f"Cold start: import app ÷ import boto3, fresh processes, {PAIRS} alternating pairs (median ratio)",
        f"{ratio:.2f} (import app {_ms(app_s)}, import boto3 {_ms(boto3_s)}; whole process "
        f"{_ms(app_wall)} vs {_ms(boto3_wall)}; app loads boto3: {'yes' if app_loads_boto3 else 'no'}, "
        f"{modules:.0f} modules)",
        f"≤ {BUDGET}",
        verdict(ratio <= BUDGET),
    )
    outcome.data = {
        "ratio": ratio,
        "app_s": app_s,
        "boto3_s": boto3_s,
        "ratios": ratios,
        "app_loads_boto3": app_loads_boto3,
    }
    return outcome


if __name__ == "__main__":
    main(run)

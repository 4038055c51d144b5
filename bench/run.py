"""``make bench``: every benchmark, each in its own process, then the cost estimate from their
figures; writes bench/results.md and prints it. A benchmark that fails is reported as such in
the table, and the others still run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import cost
from bench.measurement import OVER, Measurement, Outcome

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
README = ROOT / "README.md"
# The README's benchmark table follows this marker to the end of the file.
README_MARKER = "<!-- bench: make bench writes the measurement line and the table below; keep it last -->"
COMMAND = "make bench"
# (module, time limit in seconds): the whole run stays within about ten minutes on 2 cores.
BENCHMARKS = (
    ("cold_start", 180),
    ("first_invocation", 360),
    ("package_size", 300),
    ("api_calls", 180),
    ("handler_cost", 240),
    ("burst", 360),
    ("sandbox_latency", 420),
)
NOTES = """\
How these were measured:

- Each benchmark runs in a fresh process (`python -m bench.<name>`); figures are medians unless
  stated. Handler costs, call counts and the burst call the Chalice entry points of `app.py`
  directly, as Lambda does, against moto 5.2.5 in process (`mock_aws`), provisioned by
  `sandbox/provision.py` as in the integration tests; S3 events are moto's own (S3 → EventBridge
  → SQS), CodeDeploy events have the shape the integration tests use.
- First invocation: for each function of `app.py`, a fresh interpreter times `import app` through
  the return of the function's first invocation (the bootstrap wiring, the clients and every AWS
  call of the event), with a Lambda-shaped context; another fresh interpreter times a bare
  handler: `import boto3`, one client, the same first AWS call, return. Interpreter start-up is
  left out of both. AWS is moto 5.2.5 in server mode in the benchmark's parent process on
  127.0.0.1 (unpatched, as the sandbox runs it), provisioned by `sandbox/provision.py`; the
  children get `AWS_ENDPOINT_URL` and the environment of DESIGN.md section 5. Each round takes
  a new release of one pipeline (2 instances behind an ALB, 2 healthy checks, an email route)
  through the functions in order: moto's own S3 → EventBridge event for a new key (→ DEPLOYING);
  the schedule's event for reconcile while that deployment is still running (it asks CodeDeploy
  and leaves it); CodeDeploy SUCCESS after the benchmark finished the deployment with healthy
  targets (→ VERIFYING, its first check done); the second check from the verify queue
  (→ SUCCEEDED); the stream records written since the previous round as one batch (→ one
  notify message); that message
  from the notify queue (→ an email through SES); API Gateway's proxy event for
  `GET /releases/{{id}}`. Each step's outcome is checked. An untimed first round records each
  function's calls with botocore `before-call` hooks: the first call, parameters included, is
  what the bare handler replays, and the count of calls is that round's. The notify function's
  first call is its delivery claim, a conditional PutItem: the replay finds the item there and
  DynamoDB refuses it, which is the bare call's answer. Figures are the median of the per-pair
  ratios, real first and bare first alternating by round; no budget applies (DESIGN.md
  section 8: recorded).
- AWS calls are counted with botocore `before-call` hooks on the boto3 sessions that
  `chalicelib.bootstrap.wiring()` creates, so only the coordinator's own calls count (lazily
  created clients included), never the benchmark's set-up or checks. Each Lambda function runs
  on a wiring of its own, as each is its own process on AWS: what one function's warm container
  remembers (target groups, deployment links) never saves another function a call. The flows include the
  CodeDeploy START event AWS sends before the terminal one, and the table's stream. The Slack
  flow also delivers the notify queue's messages to the sandbox's Slack look-alike.
- moto 5.2.5 deep-copies a whole table for every item of a `TransactWriteItems` (its rollback),
  so each transaction costs more as the table grows: in a first handler-cost run without a fix,
  a new upload took 340 ms and a CodeDeploy SUCCESS 0.8-1.7 s (medians). `bench/moto_world.py`
  keeps an undo log of the touched items instead (same all-or-nothing result), so the figures
  measure the coordinator rather than that copy. The sandbox (moto server) runs unpatched.
- Burst: the handlers' AWS calls are also timed, each from botocore's `before-call` (the request
  already serialised) to its parsed answer: signing, the retry handler, moto's dispatch and work,
  and the parsing; serialising the request counts on the handler side. Dividing the events by that
  time alone gives the rate the calls would allow if no time at all were spent outside them: no
  change to the code around the calls can beat it, only fewer or cheaper calls can. Each upload
  makes a fresh lane read (a warm container's copy of the slot would be stale whenever another
  function moved the lane since, which on AWS is the common case, and a stale copy costs a failed
  transaction and the read anyway), one HeadObject (the upload's metadata and the LastModified the
  line is ordered by: the event carries neither) and one transaction; a CodeDeploy SUCCESS that
  hands the slot on makes a lane read, one GetDeployment (the deployment's own load balancer
  settings decide verification), the transaction that ends the release and claims the next,
  CreateDeployment, and the transaction that links the new deployment.
- In process, a call to moto costs a few milliseconds of boto3 serialisation and moto dispatch
  (see the GetItem baseline); on AWS it is a network round trip instead. Handler costs compare
  with each other, not with Lambda's billed duration.
- The sandbox figures come from `sandbox.runtime.Sandbox` with the real hooks of the local demo
  bundle; its pipeline's deployment config is swapped per run. Traffic is `SteadyTraffic` at
  20 requests/s through the local load balancer during the v2 deploy.
- Cost: prices are constants in `bench/cost.py` (us-east-1 list prices as of {prices}, not
  re-checked); Lambda duration is estimated as the measured handler time plus {round_trip_ms:.0f} ms
  per AWS call at {memory_mb:.0f} MB; DynamoDB units come from the sizes of the items written and
  read; free tiers are ignored; Lambda's own polling of the queues and reading of the stream is
  a fixed monthly cost, not per release.
"""


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores (nproc), {model}, Python {platform.python_version()} ({platform.system()})"
    )


def _run_benchmark(module: str, limit_s: int, scratch: Path) -> Outcome:
    out = scratch / f"{module}.json"
    try:
        subprocess.run(
            [sys.executable, "-m", f"bench.{module}", "--out", str(out)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=limit_s,
        )
    except subprocess.TimeoutExpired:
        return Outcome(
            [Measurement(f"bench.{module}", f"not measured: over its {limit_s} s limit", "", OVER)]
        )
    except subprocess.CalledProcessError as failure:
        last = (failure.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return Outcome([Measurement(f"bench.{module}", f"not measured: failed ({last[0][:200]})")])
    loaded: Outcome = Outcome.from_json(json.loads(out.read_text(encoding="utf-8")))
    return loaded


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(measurements: list[Measurement], when: datetime, machine: str) -> list[str]:
    """The measurement line and the table, as both bench/results.md and the README show them."""
    return [
        f"Measured {when:%Y-%m-%d %H:%M} UTC on {machine}. Reproduce: `{COMMAND}`.",
        "",
        "| what | measured | budget (DESIGN.md §8) | verdict |",
        "| --- | --- | --- | --- |",
        *(
            f"| {_cell(m.what)} | {_cell(m.figure)} | {_cell(m.budget)} | {_cell(m.verdict)} |"
            for m in measurements
        ),
    ]


def render(measurements: list[Measurement], when: datetime, machine: str) -> str:
    lines = ["# Benchmarks", "", *table(measurements, when, machine)]
    notes = NOTES.format(
        prices=cost.PRICES_AS_OF,
        round_trip_ms=cost.AWS_CALL_ROUND_TRIP_S * 1000,
        memory_mb=cost.LAMBDA_MEMORY_GB * 1024,
    )
    return "\n".join([*lines, "", notes])


def main() -> int:
    when = datetime.now(UTC)
    outcomes: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="relco-bench-") as scratch:
        for module, limit_s in BENCHMARKS:
            outcomes[module] = _run_benchmark(module, limit_s, Path(scratch))
    costs = cost.estimate(
        outcomes["api_calls"].data,
        outcomes["handler_cost"].data,
        outcomes["sandbox_latency"].data.get("release_seconds", []),
    )
    measurements = [m for outcome in outcomes.values() for m in outcome.measurements] + costs.measurements
    machine = _machine()
    report = render(measurements, when, machine)
    RESULTS.write_text(report, encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    kept = readme[: readme.index(README_MARKER) + len(README_MARKER)]
    README.write_text("\n".join([kept, *table(measurements, when, machine), ""]), encoding="utf-8")
    print(report)  # the runner's report is this command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())

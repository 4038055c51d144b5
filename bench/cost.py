"""Cost of one release on AWS, from the calls the coordinator made (bench/api_calls.py) and the
deploy duration the sandbox measured, beside what CodePipeline V2 charges for the same minutes.

Prices are public us-east-1 list prices, written down with the date they are from; they are not
fetched (benchmarks run offline). Free tiers are left out: a per-release figure should not depend
on what else the account runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from bench.measurement import Outcome

PRICES_AS_OF = "2025-01"  # the AWS pricing pages, us-east-1, as known then; not re-checked
LAMBDA_PER_REQUEST_USD = 0.20 / 1_000_000
LAMBDA_PER_GB_SECOND_USD = 0.0000166667  # x86
# On-demand, after the November 2024 price cut.
DYNAMODB_PER_WRITE_UNIT_USD = 0.625 / 1_000_000
DYNAMODB_PER_READ_UNIT_USD = 0.125 / 1_000_000
SQS_STANDARD_PER_REQUEST_USD = 0.40 / 1_000_000
SQS_FIFO_PER_REQUEST_USD = 0.50 / 1_000_000
# CodeDeploy in-place deployments to EC2 cost nothing; ELBv2 API calls are not billed per call;
# S3 GET/HEAD requests are.
S3_PER_GET_USD = 0.0004 / 1_000
CODEPIPELINE_V2_PER_ACTION_MINUTE_USD = 0.002

# Chalice's default memory size (.chalice/config.json sets none).
LAMBDA_MEMORY_GB = 128 / 1024
# Lambda bills each invocation's duration; in process the AWS calls answer in microseconds, on
# AWS each is a network round trip. This is the assumption that turns calls into billed time.
AWS_CALL_ROUND_TRIP_S = 0.015
# Lambda rounds each invocation up to the millisecond.
BILLING_GRANULARITY_S = 0.001

# DynamoDB item sizes: writes are billed per KB, strongly consistent reads per 4 KB.
_WRITE_UNIT_BYTES = 1024
_READ_UNIT_BYTES = 4096


def _value_size(value: Mapping[str, Any]) -> int:
    """DynamoDB's size rules for one typed attribute value, closely enough to price writes."""
    [(kind, content)] = value.items()
    if kind == "S":
        return len(str(content).encode())
    if kind == "N":
        return len(str(content).lstrip("-").replace(".", "")) // 2 + 1
    if kind == "B":
        return len(content)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_size(item) for item in content)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + _value_size(item) for name, item in content.items())
    if kind == "SS":
        return sum(len(item.encode()) for item in content)
    if kind == "NS":
        return sum(len(item) // 2 + 1 for item in content)
    if kind == "BS":
        return sum(len(item) for item in content)
    return len(str(content))


def item_size(item: Mapping[str, Any]) -> int:
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


def dynamodb_units(
    operation: str, params: Mapping[str, Any], response: Mapping[str, Any] | None
) -> tuple[float, float]:
    """(read units, write units) one call consumes. Writes are sized from the request; a write
    that only names a key (update, delete, condition check) is taken as 1 KB. Reads are sized
    from what they returned."""
    answer = response or {}
    if operation == "PutItem":
        return 0.0, float(_units(item_size(params["Item"]), _WRITE_UNIT_BYTES))
    if operation in ("UpdateItem", "DeleteItem"):
        return 0.0, 1.0
    if operation == "TransactWriteItems":
        # Transactions cost two units per unit of each item they touch.
        writes = 0
        for entry in params["TransactItems"]:
            put = entry.get("Put")
            writes += 2 * (_units(item_size(put["Item"]), _WRITE_UNIT_BYTES) if put else 1)
        return 0.0, float(writes)
    consistent = 1.0 if params.get("ConsistentRead") else 0.5
    if operation == "GetItem":
        item = answer.get("Item") or {}
        return consistent * _units(item_size(item), _READ_UNIT_BYTES), 0.0
    if operation == "Query":
        size = sum(item_size(item) for item in answer.get("Items", []))
        return consistent * _units(size, _READ_UNIT_BYTES), 0.0
    if operation == "BatchGetItem":
        items = [item for table in answer.get("Responses", {}).values() for item in table]
        return float(sum(0.5 * _units(item_size(item), _READ_UNIT_BYTES) for item in items) or 0.5), 0.0
    if operation == "TransactGetItems":
        items = [entry.get("Item") or {} for entry in answer.get("Responses", [])]
        return float(sum(2 * _units(item_size(item), _READ_UNIT_BYTES) for item in items)), 0.0
    return 0.0, 0.0


def release_cost(scenario: Mapping[str, Any], handler_cpu_s: Mapping[str, float]) -> dict[str, float]:
    """USD per release for one scenario of bench/api_calls.py: its calls, its invocations
    (handler -> count) and the measured in-process time of each handler."""
    calls: list[dict[str, Any]] = scenario["calls"]
    invocations: dict[str, int] = scenario["invocations"]
    read_units = sum(call["read_units"] for call in calls)
    write_units = sum(call["write_units"] for call in calls)
    sqs_requests = [call for call in calls if call["service"] == "sqs"]
    sqs = sum(
        SQS_FIFO_PER_REQUEST_USD if call.get("fifo") else SQS_STANDARD_PER_REQUEST_USD
        for call in sqs_requests
    )
    s3_gets = sum(1 for call in calls if call["service"] == "s3")
    calls_by_handler: dict[str, int] = {}
    for call in calls:
        calls_by_handler[call["handler"]] = calls_by_handler.get(call["handler"], 0) + 1
    gb_seconds = 0.0
    for handler, count in invocations.items():
        per_invocation = handler_cpu_s.get(handler, 0.005) + AWS_CALL_ROUND_TRIP_S * (
            calls_by_handler.get(handler, 0) / max(count, 1)
        )
        billed = math.ceil(per_invocation / BILLING_GRANULARITY_S) * BILLING_GRANULARITY_S
        gb_seconds += count * billed * LAMBDA_MEMORY_GB
    lambda_requests = sum(invocations.values())
    parts = {
        "lambda_requests": lambda_requests * LAMBDA_PER_REQUEST_USD,
        "lambda_compute": gb_seconds * LAMBDA_PER_GB_SECOND_USD,
        "dynamodb": read_units * DYNAMODB_PER_READ_UNIT_USD + write_units * DYNAMODB_PER_WRITE_UNIT_USD,
        "sqs": sqs,
        "s3": s3_gets * S3_PER_GET_USD,
    }
    return {
        **parts,
        "total": sum(parts.values()),
        "read_units": read_units,
        "write_units": write_units,
        "gb_seconds": gb_seconds,
        "lambda_invocations": float(lambda_requests),
    }


def codepipeline_cost(minutes: float, actions: int = 1) -> float:
    """CodePipeline V2 bills each action's execution time, rounded up to the minute."""
    return actions * math.ceil(minutes) * CODEPIPELINE_V2_PER_ACTION_MINUTE_USD


def _usd(value: float) -> str:
    return f"${value:.7f}" if value < 0.001 else f"${value:.4f}"


def estimate(
    api_calls: Mapping[str, Any], handler_cost: Mapping[str, Any] | None, release_seconds: Iterable[float]
) -> Outcome:
    """Rows for the table. ``release_seconds``: upload to SUCCEEDED in the sandbox, real hooks."""
    outcome = Outcome()
    handler_cpu_s = dict((handler_cost or {}).get("per_handler_s", {}))
    durations = sorted(release_seconds)
    for name, label in (
        ("success", "upload → SUCCEEDED"),
        ("notified", "upload → SUCCEEDED with a Slack route"),
        ("rollback", "failure + auto-rollback"),
    ):
        scenario = api_calls.get("scenarios", {}).get(name)
        if scenario is None:
            continue
        cost = release_cost(scenario, handler_cpu_s)
        outcome.data[name] = cost
        outcome.add(
            f"Cost per release on AWS, {label}",
            f"{_usd(cost['total'])} (Lambda {int(cost['lambda_invocations'])} requests "
            f"{_usd(cost['lambda_requests'])} + {cost['gb_seconds']:.4f} GB-s "
            f"{_usd(cost['lambda_compute'])}; "
            f"DynamoDB {cost['read_units']:g} RRU + {cost['write_units']:g} WRU {_usd(cost['dynamodb'])}; "
            f"SQS {_usd(cost['sqs'])}; S3 {_usd(cost['s3'])}; CodeDeploy EC2 in-place $0)",
        )
    if durations:
        # The same release as one CodePipeline V2 deploy action running as long as it took here
        # (the median sandbox release); a source action would add at least one more minute.
        longest = durations[len(durations) // 2]
        minutes = longest / 60
        outcome.data["codepipeline_usd"] = codepipeline_cost(minutes)
        outcome.add(
            "CodePipeline V2 for the same release (one deploy action, per action-minute)",
            f"{_usd(codepipeline_cost(minutes))} ({longest:.1f} s upload → SUCCEEDED in the sandbox, "
            f"billed as {math.ceil(minutes)} action-minute(s) at "
            f"${CODEPIPELINE_V2_PER_ACTION_MINUTE_USD}/min; each further minute a real deploy takes adds "
            f"${CODEPIPELINE_V2_PER_ACTION_MINUTE_USD}, while the coordinator's cost does not grow with it)",
        )
    outcome.data["assumptions"] = {
        "prices_as_of": PRICES_AS_OF,
        "lambda_memory_gb": LAMBDA_MEMORY_GB,
        "aws_call_round_trip_s": AWS_CALL_ROUND_TRIP_S,
    }
    return outcome

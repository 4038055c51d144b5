"""Handler cost per event, warm, with AWS answered in process (moto ``mock_aws``): the time from
the Lambda entry point in ``app.py`` being called to its return, for each kind of event.

moto answers in process, so this is the coordinator's own work (parsing, domain, boto3
serialisation, logging) plus moto's; on AWS each call adds a network round trip instead.
Every pipeline has a webhook route, so history events on the stream have a message to publish.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.measurement import Outcome, main
from bench.moto_world import TABLE, MotoWorld, pipeline_toml

PIPELINES = 50
DUPLICATES = 200
CHECKS = 200
WARM_UP = 5
VERIFIED = "shop"


def _timed(function: Callable[..., Any], *arguments: Any) -> float:
    started = time.perf_counter_ns()
    function(*arguments)
    return (time.perf_counter_ns() - started) / 1000


def _figure(samples: list[float]) -> str:
    if len(samples) < 2:
        return f"{samples[0]:,.0f} µs (n=1)" if samples else "no samples"
    p90 = statistics.quantiles(samples, n=10)[-1]
    return f"{statistics.median(samples):,.0f} µs median, p90 {p90:,.0f} µs (n={len(samples)})"


def _complete(world: MotoWorld, release_id: str) -> str:
    from sandbox import moto_extensions

    deployment_id = world.deployment_of(release_id)
    moto_extensions.complete(deployment_id, "Succeeded")
    return deployment_id


def run() -> Outcome:
    from sandbox import moto_extensions

    names = [f"p{number:02d}" for number in range(PIPELINES)]
    warm = [f"warm{number}" for number in range(WARM_UP)]
    toml = "".join(pipeline_toml(name, webhook=True) for name in [*names, *warm]) + pipeline_toml(
        VERIFIED, verify={"healthy_checks": 100_000, "interval_s": 1}, webhook=True
    )
    samples: dict[str, list[float]] = {}
    outcome = Outcome()
    with MotoWorld(toml, load_balanced={VERIFIED: 2}) as world:
        # Warm: every handler has run, its clients exist and its modules are imported.
        for upload in world.upload_many([f"{name}/warm.zip" for name in warm]):
            world.on_artifact_event(upload.eventbridge)
            deployment_id = _complete(world, upload.release_id)
            world.on_codedeploy_event(
                deployment_id, "SUCCESS", upload.key.split("/")[0], upload.key.split("/")[0]
            )

        first = world.upload_many([f"{name}/{name}-1.zip" for name in names])
        second = world.upload_many([f"{name}/{name}-2.zip" for name in names])
        samples["S3 event, new upload, slot free (→ CreateDeployment → DEPLOYING)"] = [
            _timed(world.on_artifact_event, u.eventbridge) for u in first
        ]
        samples["S3 event, new upload, slot busy (→ QUEUED)"] = [
            _timed(world.on_artifact_event, u.eventbridge) for u in second
        ]
        samples["S3 event, duplicate delivery of an existing upload"] = [
            _timed(world.on_artifact_event, first[i % PIPELINES].eventbridge) for i in range(DUPLICATES)
        ]
        started_next = []
        for upload, name in zip(first, names, strict=True):
            deployment_id = _complete(world, upload.release_id)
            started_next.append(_timed(world.on_codedeploy_event, deployment_id, "SUCCESS", name, name))
        samples["CodeDeploy SUCCESS, no ALB (→ SUCCEEDED, next queued release started)"] = started_next
        finished = []
        for upload, name in zip(second, names, strict=True):
            deployment_id = _complete(world, upload.release_id)
            finished.append(_timed(world.on_codedeploy_event, deployment_id, "SUCCESS", name, name))
        samples["CodeDeploy SUCCESS, no ALB (→ SUCCEEDED, nothing waiting)"] = finished
        finished_deployments = [world.deployment_of(upload.release_id) for upload in second]
        samples["CodeDeploy event, duplicate or late (release already terminal)"] = [
            _timed(
                world.on_codedeploy_event,
                finished_deployments[i % PIPELINES],
                "SUCCESS",
                names[i % PIPELINES],
                names[i % PIPELINES],
            )
            for i in range(DUPLICATES)
        ]

        # A release verifying 100,000 checks long: every message is a "continue" check.
        [verifying] = world.upload_many([f"{VERIFIED}/{VERIFIED}-1.zip"])
        world.on_artifact_event(verifying.eventbridge)
        deployment_id = world.deployment_of(verifying.release_id)
        instances = world.provisioned.load_balanced[VERIFIED].instance_ids
        moto_extensions.set_instance_targets(deployment_id, {i: {"status": "Succeeded"} for i in instances})
        moto_extensions.complete(deployment_id, "Succeeded")
        world.on_codedeploy_event(deployment_id, "SUCCESS", VERIFIED, VERIFIED)
        body = {"release_id": verifying.release_id, "deployment_id": deployment_id}
        samples["Verify message (one health check of 2 instances, next check scheduled)"] = [
            _timed(world.on_verify_message, [{**body, "check": check}]) for check in range(1, CHECKS + 1)
        ]

        # The unit everything above is made of: one call through boto3 to moto in process.
        dynamodb = world.session.client("dynamodb")
        key = {"pk": {"S": f"REL#{first[0].release_id}"}, "sk": {"S": "META"}}
        samples["Baseline: one DynamoDB GetItem through boto3 to moto in process"] = [
            _timed(partial(dynamodb.get_item, TableName=TABLE, Key=key, ConsistentRead=True))
            for _ in range(200)
        ]

        if hasattr(world.app, "on_release_stream"):
            publishing: list[float] = []
            silent: list[float] = []
            records = [record for batch in world.stream_records() for record in batch]
            for record in records:
                mark = world.recorder.mark()
                elapsed = _timed(world.on_release_stream, [record])
                (publishing if world.recorder.since(mark) else silent).append(elapsed)
            samples["Stream record, history event for a route (→ notify message queued)"] = publishing
            samples["Stream record, history event no route wants"] = silent
            batch = records[:100]
            samples["Stream batch of 100 records, per record"] = [
                _timed(world.on_release_stream, batch) / len(batch) for _ in range(5)
            ]
            outcome.data["stream"] = "measured"
        else:
            outcome.add("Handler cost: stream record", "on_release_stream is not built in app.py")

    for what, values in samples.items():
        outcome.add(f"Handler cost, warm, moto in process: {what}", _figure(values))
    per_handler = {
        "on_artifact_event": samples["S3 event, new upload, slot free (→ CreateDeployment → DEPLOYING)"],
        "on_codedeploy_event": samples["CodeDeploy SUCCESS, no ALB (→ SUCCEEDED, nothing waiting)"],
        "on_verify_message": samples[
            "Verify message (one health check of 2 instances, next check scheduled)"
        ],
        "on_release_stream": samples.get(
            "Stream record, history event for a route (→ notify message queued)", []
        ),
    }
    outcome.data["per_handler_s"] = {
        handler: statistics.median(values) / 1_000_000 for handler, values in per_handler.items() if values
    }
    return outcome


if __name__ == "__main__":
    main(run)

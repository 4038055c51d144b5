"""Burst: 1,000 uploads over 50 pipelines against moto in process, delivered as AWS may deliver
them: 10% of the S3 events twice, all shuffled; CodeDeploy's START and SUCCESS for every
deployment shuffled together (a START may come after its SUCCESS) and 20% of the SUCCESS
events delivered again a round later. The benchmark plays CodeDeploy: each round it finishes
every running deployment (``moto_extensions.complete``) and delivers the round's events; a
pipeline without a load balancer goes straight to SUCCEEDED and starts its next queued release.

Events per second counts only the time spent inside the handlers. The floor is the same moto's
raw rate of conditional PutItem, one call per write: the coordinator cannot go faster than the
writes it must make. The floor is measured three times (before the deliveries, between the S3
and the CodeDeploy events, after them) and the fastest counts: a moment the machine was busy
while the floor was measured would otherwise flatter the ratio.

The handlers' AWS calls are timed too (from botocore's before-call, the request serialised, to
its parsed answer: signing, the emulator's work and the parsing): the ratio the calls alone would allow, with
no time spent outside them, bounds what any change to the code around them can reach.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import datetime
from typing import Any

from bench.measurement import Outcome, main, verdict
from bench.moto_world import BUCKET, TABLE, ApiCall, CallRecorder, MotoWorld, codedeploy_event, pipeline_toml

PIPELINES = 50
UPLOADS = 1000
DUPLICATED_UPLOADS = 0.10
REPEATED_SUCCESS = 0.20
FLOOR_WRITES = 700
SEED = 8
# Issue 13: the burst reaches at least this share of the raw conditional-write rate.
RATIO_BUDGET = 0.3


class Clock:
    """Time spent inside the handlers only, and the AWS calls they made."""

    def __init__(self, recorder: CallRecorder) -> None:
        self.recorder = recorder
        self.seconds = 0.0
        self.events = 0
        self.calls: list[ApiCall] = []

    def deliver(self, handler: Any, event: dict[str, Any]) -> None:
        mark = self.recorder.mark()
        started = time.perf_counter()
        handler(event, None)
        self.seconds += time.perf_counter() - started
        self.events += 1
        self.calls.extend(self.recorder.since(mark))

    @property
    def call_seconds(self) -> float:
        return sum(call.seconds for call in self.calls)


def _floor(world: MotoWorld, when: str) -> float:
    """Conditional PutItems per second against the same moto and table."""
    dynamodb = world.session.client("dynamodb")
    started = time.perf_counter()
    for number in range(FLOOR_WRITES):
        dynamodb.put_item(
            TableName=TABLE,
            Item={"pk": {"S": f"FLOOR#{when}#{number}"}, "sk": {"S": "META"}, "version": {"N": "1"}},
            ConditionExpression="attribute_not_exists(pk)",
        )
    return FLOOR_WRITES / (time.perf_counter() - started)


def _newest_second_by_pipeline(world: MotoWorld) -> dict[str, datetime]:
    """The second S3 stored each pipeline's newest upload in (``LastModified``)."""
    newest: dict[str, datetime] = {}
    paginator = world.session.client("s3").get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=BUCKET):
        for version in page.get("Versions", []):
            pipeline = version["Key"].split("/", 1)[0]
            stored = version["LastModified"].replace(microsecond=0)
            newest[pipeline] = max(stored, newest.get(pipeline, stored))
    return newest


def _account(world: MotoWorld, release_ids: list[str]) -> dict[str, Any]:
    """Every upload is one release that ended SUCCEEDED, deployed exactly once, or SUPERSEDED,
    never deployed: the shuffled delivery brings some uploads after one S3 stored later had
    started, and those never start (they would replace a newer build). Each pipeline's last good
    release is one of its uploads S3 stored in the newest second, and every slot is free."""
    from sandbox import moto_extensions

    store = world.store()
    releases = store.get_releases(release_ids)
    states = Counter(release.state.value for release in releases)
    deployment_ids = [release.deployment_id for release in releases if release.deployment_id]
    deployments = moto_extensions.backend().deployments
    in_table = 0
    paginator = world.session.client("dynamodb").get_paginator("scan")
    for page in paginator.paginate(
        TableName=TABLE,
        FilterExpression="sk = :meta AND begins_with(pk, :release)",
        ExpressionAttributeValues={":meta": {"S": "META"}, ":release": {"S": "REL#"}},
        Select="COUNT",
    ):
        in_table += page["Count"]
    slots = {name: store.get_slot(name) for name in (f"b{number:02d}" for number in range(PIPELINES))}
    busy_slots = [name for name, slot in slots.items() if slot.active is not None or slot.waiting]
    by_id = {release.id: release for release in releases}
    newest = _newest_second_by_pipeline(world)
    stale_last_good = [
        name
        for name, slot in slots.items()
        if slot.newest_started is None
        or slot.newest_started.second != newest.get(name)
        or slot.last_good != slot.newest_started.release_id
        or slot.last_good not in by_id
    ]
    deployed_superseded = [
        release.id
        for release in releases
        if release.state.value == "SUPERSEDED" and release.deployment_id is not None
    ]
    return {
        "uploads": len(release_ids),
        "releases_found": len(releases),
        "releases_in_table": in_table,
        "states": dict(states),
        "deployments": len(deployments),
        "distinct_deployments_of_releases": len(set(deployment_ids)),
        "busy_slots": busy_slots,
        "stale_last_good": stale_last_good,
        "deployed_superseded": deployed_superseded,
    }


def run() -> Outcome:
    from sandbox import moto_extensions

    chooser = random.Random(SEED)
    names = [f"b{number:02d}" for number in range(PIPELINES)]
    keys = [f"{names[n % PIPELINES]}/{names[n % PIPELINES]}-{n // PIPELINES:03d}.zip" for n in range(UPLOADS)]
    chooser.shuffle(keys)
    outcome = Outcome()
    with MotoWorld("".join(pipeline_toml(name) for name in names)) as world:
        uploads = world.upload_many(keys)
        deliveries = [upload.eventbridge for upload in uploads]
        deliveries += chooser.sample(deliveries, int(UPLOADS * DUPLICATED_UPLOADS))
        chooser.shuffle(deliveries)
        clock = Clock(world.recorder)
        floors = {"before": _floor(world, "before")}
        began = time.perf_counter()
        for event in deliveries:
            clock.deliver(world.function("on_artifact_event"), event)
        s3_events = clock.events
        paused = time.perf_counter()
        floors["between"] = _floor(world, "between")
        began += time.perf_counter() - paused

        held_back: list[dict[str, Any]] = []
        rounds = 0
        while True:
            active = world.active_deployments()
            if not active and not held_back:
                break
            rounds += 1
            events = list(held_back)
            held_back = []
            for deployment_id, application, group in active:
                moto_extensions.complete(deployment_id, "Succeeded")
                events.append(codedeploy_event(deployment_id, "START", application, group))
                success = codedeploy_event(deployment_id, "SUCCESS", application, group)
                events.append(success)
                if chooser.random() < REPEATED_SUCCESS:
                    held_back.append({**success, "id": f"{success['id']}-again"})
            chooser.shuffle(events)
            for event in events:
                clock.deliver(world.function("on_codedeploy_event"), event)
        wall_s = time.perf_counter() - began
        accounted = _account(world, [upload.release_id for upload in uploads])
        floors["after"] = _floor(world, "after")
    floor = max(floors.values())

    rate = clock.events / clock.seconds
    calls_only_rate = clock.events / clock.call_seconds
    by_operation = Counter(f"{call.service}:{call.operation}" for call in clock.calls)
    seconds_by_operation: dict[str, float] = {}
    for call in clock.calls:
        operation = f"{call.service}:{call.operation}"
        seconds_by_operation[operation] = seconds_by_operation.get(operation, 0.0) + call.seconds
    succeeded = accounted["states"].get("SUCCEEDED", 0)
    all_accounted = (
        set(accounted["states"]) <= {"SUCCEEDED", "SUPERSEDED"}
        and sum(accounted["states"].values()) == UPLOADS
        and accounted["releases_in_table"] == UPLOADS
        and accounted["deployments"] == succeeded
        and accounted["distinct_deployments_of_releases"] == succeeded
        and not accounted["busy_slots"]
        and not accounted["stale_last_good"]
        and not accounted["deployed_superseded"]
    )
    outcome.data = {
        "events": clock.events,
        "s3_events": s3_events,
        "codedeploy_events": clock.events - s3_events,
        "handler_seconds": clock.seconds,
        "wall_seconds": wall_s,
        "rounds": rounds,
        "events_per_s": rate,
        "call_seconds": clock.call_seconds,
        "calls": dict(by_operation),
        "call_seconds_by_operation": dict(seconds_by_operation),
        "calls_only_events_per_s": calls_only_rate,
        "floor_writes_per_s": floor,
        "floor_writes_per_s_by_phase": floors,
        "accounted": accounted,
    }
    measured_floors = ", ".join(f"{writes:,.0f} {when}" for when, writes in floors.items())
    outcome.add(
        f"Burst: {UPLOADS:,} uploads over {PIPELINES} pipelines, 10% duplicated S3 events, shuffled "
        "START/SUCCESS with 20% SUCCESS repeated late (moto in process)",
        f"{rate:,.0f} events/s ({clock.events:,} events: {s3_events:,} S3 + {clock.events - s3_events:,} "
        f"CodeDeploy, {clock.seconds:.1f} s in handlers, {wall_s:.1f} s wall, {rounds} rounds)",
    )
    outcome.add(
        "Burst: floor = raw conditional PutItem rate on the same moto (measured before, between and "
        "after the deliveries); ratio events/s ÷ writes/s",
        f"{floor:,.0f} writes/s (the fastest of {measured_floors}); ratio {rate / floor:.3f}",
        f"≥ {RATIO_BUDGET}",
        verdict(rate / floor >= RATIO_BUDGET),
    )
    heaviest = ", ".join(
        f"{operation} {by_operation[operation]:,} × {seconds / by_operation[operation] * 1000:.1f} ms"
        for operation, seconds in sorted(seconds_by_operation.items(), key=lambda pair: -pair[1])
    )
    outcome.add(
        "Burst: the handlers' AWS calls alone (request serialised → answer parsed) and the ratio they "
        "would allow with no time spent outside them",
        f"{clock.call_seconds:.1f} s of {clock.seconds:.1f} s in handlers, {len(clock.calls):,} calls "
        f"({len(clock.calls) / clock.events:.2f} per event: {heaviest}); at most "
        f"{calls_only_rate:,.0f} events/s, ratio {calls_only_rate / floor:.3f}",
    )
    states = ", ".join(f"{state} {count}" for state, count in sorted(accounted["states"].items()))
    outcome.add(
        "Burst: every upload accounted for",
        f"{'yes' if all_accounted else 'NO'}: {accounted['releases_found']}/{UPLOADS} releases ({states}), "
        f"{accounted['releases_in_table']} release items in the table, {accounted['deployments']} "
        f"CodeDeploy deployments ({accounted['distinct_deployments_of_releases']} distinct, "
        "one per SUCCEEDED release), "
        f"{len(accounted['busy_slots'])} slots still busy",
    )
    return outcome


if __name__ == "__main__":
    main(run)

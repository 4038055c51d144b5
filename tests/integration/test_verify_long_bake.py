"""Issue 11 item 10: a bake longer than SQS can delay a message is waited out in full.

SQS's SendMessage takes ``DelaySeconds`` of at most 900 (read from botocore's sqs model below).
A longer wait goes out as hops: messages that only send themselves on until the check is due;
and reconcile, which re-sends a check it thinks lost, judges from the planned due time.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.adapters.sqs_queues import SqsVerifyQueue
from chalicelib.domain.inbound_events import DeploymentState
from chalicelib.domain.pipelines import PipelinesConfig, VerifySettings
from chalicelib.domain.release import ReleaseState
from chalicelib.domain.verification import VerifyRequest
from chalicelib.service.deployment_events import apply_deployment_state
from chalicelib.service.reconcile import reconcile
from chalicelib.service.verification import run_check
from sandbox import moto_extensions
from tests.integration.conftest import LOAD_BALANCED, World
from tests.integration.test_recovery import ManualClock, direct_wiring
from tests.integration.test_verification import health_checks, upload_and_deploy
from tests.unit.test_verification import sqs_max_delay_s

BAKE_S = 3600


@pytest.mark.timeout(120)
def test_a_bake_longer_than_sqs_can_delay_is_waited_out_in_hops(world: World) -> None:
    release_id, deployment_id = upload_and_deploy(world, "1.0.0")
    clock = ManualClock()
    sqs = world.session.client("sqs")
    sent: list[tuple[dict[str, Any], int]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append((json.loads(params["MessageBody"]), int(params["DelaySeconds"])))

    sqs.meta.events.register("provide-client-params.sqs.SendMessage", record)
    base = replace(
        direct_wiring(world, clock), verify_queue=SqsVerifyQueue(sqs, world.provisioned.verify_queue_url)
    )
    baking = VerifySettings(healthy_checks=2, interval_s=1, deadline_s=BAKE_S + 600, bake_s=BAKE_S)
    context = replace(
        base,
        pipelines=PipelinesConfig(
            tuple(
                replace(p, verify=baking) if p.name == LOAD_BALANCED else p for p in base.pipelines.pipelines
            )
        ),
    )
    moto_extensions.complete(deployment_id, "Succeeded")
    apply_deployment_state(context, release_id, deployment_id, DeploymentState.SUCCESS)
    for check in (1, 2):
        clock.advance(timedelta(seconds=1))
        run_check(context, VerifyRequest(release_id, deployment_id, check))
    baked_at = clock.current
    due = baked_at + timedelta(seconds=BAKE_S)
    body, delay_s = sent[-1]
    assert (body["check"], delay_s) == (3, sqs_max_delay_s())

    # Each hop arrives after SQS's delay and sends the check on, never past its due time.
    hops = 0
    while True:
        clock.advance(timedelta(seconds=sent[-1][1]))
        assert reconcile(context) == {}, "a baking release is not overdue"
        before = len(sent)
        run_check(context, VerifyRequest.from_message(sent[-1][0]))
        if len(sent) == before or world.release(release_id).state is not ReleaseState.VERIFYING:
            break
        hops += 1
        assert sent[-1][1] <= sqs_max_delay_s()
        assert world.release(release_id).state is ReleaseState.VERIFYING

    release = world.release(release_id)
    assert release.state is ReleaseState.SUCCEEDED, release.reason
    assert clock.current - baked_at >= timedelta(seconds=BAKE_S)
    assert hops == BAKE_S // sqs_max_delay_s() - 1
    hop_messages = [VerifyRequest.from_message(body) for body, _ in sent if body["check"] == 3]
    assert {request.not_before for request in hop_messages} == {due}
    assert f"and again after {BAKE_S}s of baking" in release.reason
    assert [c["outcome"] for c in health_checks(world, release_id)] == ["continue", "bake", "verified"]

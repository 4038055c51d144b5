"""Promotion between pipelines (issue 15) on moto, with a clock the test moves: the soak is
respected to the second, a newer verified release supersedes a pending promotion, uploads to a
downstream pipeline are refused, an upstream rollback cancels the pending promotion, a chain of
three and a fan-out of two carry the exact revision (version id and eTag) down, and an API deploy
downstream must name a revision that passed upstream."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.api_requests import DeployRequest, InvalidValue
from chalicelib.domain.inbound_events import DeploymentState, DeploymentStateChanged, parse_artifact_event
from chalicelib.domain.lane import Change
from chalicelib.domain.permissions import Person
from chalicelib.domain.pipelines import load_pipelines
from chalicelib.domain.release import Release, ReleaseState, Trigger, promotion_release_id
from chalicelib.domain.wakeups import WakeUp
from chalicelib.service import approvals
from chalicelib.service.deployment_events import handle_deployment_event
from chalicelib.service.lane_commands import roll_back_pipeline
from chalicelib.service.reconcile import reconcile, wake_lane
from chalicelib.service.release_commands import deploy, promote
from chalicelib.service.uploads import handle_upload
from chalicelib.service.wiring import Wiring
from sandbox import moto_extensions
from tests.integration import conftest, test_cli
from tests.integration.conftest import BUCKET, World
from tests.integration.test_api import call
from tests.integration.test_cli import relco
from tests.integration.test_freeze import SentMessages
from tests.integration.test_recovery import ManualClock, direct_wiring

pytestmark = pytest.mark.timeout(120)
# The app served on 127.0.0.1, as relco reaches it.
api_url = test_cli.api_url
APPROVER = "arn:aws:sts::123456789012:assumed-role/release-managers/ana"
CHAIN = f"""
[[pipeline]]
name = "dev"
bucket = "{BUCKET}"
prefix = "svc/dev/"
application = "svc"
deployment_group = "svc-dev"

[[pipeline]]
name = "stg"
bucket = "{BUCKET}"
prefix = "svc/stg/"
application = "svc"
deployment_group = "svc-stg"
promote_from = "dev"

[[pipeline]]
name = "prod-eu"
bucket = "{BUCKET}"
prefix = "svc/prod-eu/"
application = "svc"
deployment_group = "svc-prod-eu"
promote_from = "stg"
soak = "30s"

[[pipeline]]
name = "prod-us"
bucket = "{BUCKET}"
prefix = "svc/prod-us/"
application = "svc"
deployment_group = "svc-prod-us"
promote_from = "stg"
promote = "approval"
soak = "1m"
[pipeline.approval]
approvers = ["arn:aws:iam::123456789012:role/release-managers"]
"""


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    """The shared pipelines, and a chain: dev -> stg -> (prod-eu after 30 s, prod-us after a
    minute and an approval)."""
    path = tmp_path / "pipelines.toml"
    path.write_text(conftest.PIPELINES_TOML + CHAIN, encoding="utf-8")
    return path


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def wiring(world: World, clock: ManualClock) -> Wiring:
    return direct_wiring(world, clock)


def upload(world: World, wiring: Wiring, key: str) -> Release:
    [created] = parse_artifact_event(world.upload(key).eventbridge).uploads
    release = handle_upload(wiring, created)
    assert release is not None
    return release


def succeed(world: World, wiring: Wiring, release_id: str) -> Release:
    """CodeDeploy reports SUCCESS (these groups have no load balancer: the release succeeds)."""
    release = world.release(release_id)
    assert release.deployment_id is not None, release
    moto_extensions.complete(release.deployment_id, "Succeeded")
    handle_deployment_event(
        wiring,
        DeploymentStateChanged(
            release.deployment_id, DeploymentState.SUCCESS, release.application, release.deployment_group
        ),
    )
    done = world.release(release_id)
    assert done.state is ReleaseState.SUCCEEDED, done
    return done


def promotion_into(world: World, pipeline: str, upstream_id: str) -> Release | None:
    found = world.store.get_releases([promotion_release_id(pipeline, upstream_id)])
    return found[0] if found else None


def promoted_by(report: dict[str, Any]) -> dict[str, Any]:
    """What a reconcile report says each pipeline promoted (it also reports fleet checks)."""
    return {name: actions["promoted"] for name, actions in report.items() if "promoted" in actions}


def wake_ups(world: World) -> list[WakeUp]:
    sqs = world.aws("sqs")
    bodies = [
        json.loads(message["Body"])
        for message in sqs.receive_message(
            QueueUrl=world.provisioned.verify_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
    ]
    return [WakeUp.from_message(body) for body in bodies if body.get("kind") == "wake"]


def test_a_chain_of_three_and_a_fan_out_of_two_carry_the_exact_revision(
    world: World, wiring: Wiring, clock: ManualClock
) -> None:
    built = upload(world, wiring, "svc/dev/svc-1.zip")
    dev = succeed(world, wiring, built.id)
    # stg has no soak: dev's success sends the lane a wake-up due at once, which promotes.
    [wake] = wake_ups(world)
    assert (wake.pipeline, wake.due_at) == ("dev", clock.now())
    assert wake_lane(wiring, wake) == {"promoted": {"stg": promotion_release_id("stg", dev.id)}}
    stg = promotion_into(world, "stg", dev.id)
    assert stg is not None
    assert (stg.trigger, stg.state, stg.metadata["promoted_from"]) == (
        Trigger.PROMOTION,
        ReleaseState.DEPLOYING,
        dev.id,
    )
    assert stg.revision == dev.revision  # bucket, key, version id and eTag: nothing rebuilt
    assert stg.revision.version is not None
    assert stg.revision.etag is not None
    deployment = world.aws("codedeploy").get_deployment(deploymentId=stg.deployment_id)["deploymentInfo"]
    location = deployment["revision"]["s3Location"]
    assert (location["key"], location["version"]) == ("svc/dev/svc-1.zip", dev.revision.version)
    link = world.history(dev.id)[-1]
    assert link.detail == {"task": "Promotion", "pipeline": "stg", "release_id": stg.id}

    stg = succeed(world, wiring, stg.id)
    # Fan-out: prod-eu after 30 s, prod-us after a minute, each to the second.
    clock.advance(timedelta(seconds=29))
    assert promoted_by(reconcile(wiring)) == {}
    clock.advance(timedelta(seconds=1))
    assert promoted_by(reconcile(wiring)) == {"stg": {"prod-eu": promotion_release_id("prod-eu", stg.id)}}
    eu = promotion_into(world, "prod-eu", stg.id)
    assert eu is not None
    assert eu.revision == dev.revision
    assert eu.state is ReleaseState.DEPLOYING
    clock.advance(timedelta(seconds=29))
    assert promotion_into(world, "prod-us", stg.id) is None
    clock.advance(timedelta(seconds=1))
    reconcile(wiring)
    us = promotion_into(world, "prod-us", stg.id)
    assert us is not None
    assert us.state is ReleaseState.AWAITING_APPROVAL  # promote = "approval"
    assert us.revision == dev.revision
    # Asking again finds the promotions already there.
    assert promoted_by(reconcile(wiring)) == {}


def test_the_wake_up_promotes_at_the_end_of_the_soak_and_sends_on_the_next(
    world: World, clock: ManualClock
) -> None:
    queue = SentMessages(world, clock)
    wiring = queue.wiring
    dev = succeed(world, wiring, upload(world, wiring, "svc/dev/svc-1.zip").id)
    [(due_now, delay_s)] = queue.wake_ups()
    assert delay_s == 0
    queue.deliver(due_now)
    stg = succeed(world, wiring, promotion_release_id("stg", dev.id))
    soaked = stg.updated_at + timedelta(seconds=30)
    (first, first_delay), *_ = queue.wake_ups()[1:]
    assert (WakeUp.from_message(first).due_at, first_delay) == (soaked, 30)

    clock.advance(timedelta(seconds=29))
    queue.deliver(first)  # a second early: sent on
    assert queue.wake_ups()[-1][1] == 1
    assert promotion_into(world, "prod-eu", stg.id) is None
    clock.advance(timedelta(seconds=1))
    queue.deliver(first)
    eu = promotion_into(world, "prod-eu", stg.id)
    assert eu is not None
    # That wake-up sent the next: prod-us's minute.
    following, following_delay = queue.wake_ups()[-1]
    assert (WakeUp.from_message(following).due_at, following_delay) == (
        stg.updated_at + timedelta(minutes=1),
        30,
    )


def test_a_newer_verified_release_supersedes_a_pending_promotion(
    world: World, wiring: Wiring, clock: ManualClock
) -> None:
    dev1 = succeed(world, wiring, upload(world, wiring, "svc/dev/svc-1.zip").id)
    stg1 = succeed(world, wiring, promote(wiring, "stg", dev1.id, "ana").release.id)
    us1 = promote(wiring, "prod-us", stg1.id, "ana").release
    assert us1.state is ReleaseState.AWAITING_APPROVAL
    dev2 = succeed(world, wiring, upload(world, wiring, "svc/dev/svc-2.zip").id)
    stg2 = succeed(world, wiring, promote(wiring, "stg", dev2.id, "ana").release.id)
    us2 = promote(wiring, "prod-us", stg2.id, "ana").release

    assert world.release(us1.id).state is ReleaseState.SUPERSEDED
    assert world.history(us1.id)[-1].detail["superseded_by"] == us2.id
    approved = approvals.approve(wiring, us2.id, Person(iam_arn=APPROVER), "verified in stg")
    assert approved.state is ReleaseState.DEPLOYING
    assert approved.revision == dev2.revision


def test_an_upload_to_a_downstream_pipeline_is_refused(world: World, wiring: Wiring) -> None:
    refused = upload(world, wiring, "svc/stg/svc-hotfix.zip")
    assert refused.state is ReleaseState.FAILED
    assert refused.reason.startswith(
        "pipeline 'stg' deploys only what pipeline 'dev' verified, never an upload"
    )
    assert world.deployments("svc", "svc-stg") == []


def test_an_api_deploy_downstream_must_name_a_revision_that_passed_upstream(
    world: World, wiring: Wiring
) -> None:
    world.upload("svc/stg/svc-local.zip")
    with pytest.raises(InvalidValue, match="deploys only what pipeline 'dev' verified"):
        deploy(wiring, DeployRequest("stg", "svc/stg/svc-local.zip", None, None), "ana", "api-ana-1")
    glass = DeployRequest("stg", "svc/stg/svc-local.zip", None, None, break_glass="dev is down, hotfix")
    broken = deploy(wiring, glass, "ana", "api-ana-2").release
    assert broken.state is ReleaseState.DEPLOYING
    assert broken.metadata["break_glass"] == "dev is down, hotfix"


def test_an_upstream_rollback_cancels_the_pending_promotion(
    world: World, wiring: Wiring, clock: ManualClock
) -> None:
    dev1 = succeed(world, wiring, upload(world, wiring, "svc/dev/svc-1.zip").id)
    stg1 = succeed(world, wiring, promote(wiring, "stg", dev1.id, "ana").release.id)
    clock.advance(timedelta(minutes=1))
    dev2 = succeed(world, wiring, upload(world, wiring, "svc/dev/svc-2.zip").id)
    stg2 = succeed(world, wiring, promote(wiring, "stg", dev2.id, "ana").release.id)
    pending = promote(wiring, "prod-us", stg2.id, "ana").release
    assert pending.state is ReleaseState.AWAITING_APPROVAL
    stg = wiring.pipelines.named("stg")
    assert stg is not None

    rollback, _ = roll_back_pipeline(wiring, stg, stg1.id, "ana", "rollback-ana-1")

    assert rollback.rollback_of == stg2.id
    cancelled = world.release(pending.id)
    assert cancelled.state is ReleaseState.STOPPED
    assert cancelled.reason == f"cancelled: stg rolled back {stg2.id} (release {rollback.id})"
    assert world.release(stg2.id).metadata["rolled_back_by"] == rollback.id
    # The release rolled back is never promoted again.
    with pytest.raises(InvalidValue, match="cannot be promoted"):
        promote(wiring, "prod-eu", stg2.id, "ana")


def test_reconcile_cancels_a_pending_promotion_whose_cancel_was_lost(world: World, wiring: Wiring) -> None:
    dev1 = succeed(world, wiring, upload(world, wiring, "svc/dev/svc-1.zip").id)
    stg1 = succeed(world, wiring, promote(wiring, "stg", dev1.id, "ana").release.id)
    pending = promote(wiring, "prod-us", stg1.id, "ana").release
    # The rollback's write marked stg1, and the process died before the cancel downstream.
    store = world.store
    marked = store.get_release(stg1.id)
    assert marked is not None
    store.commit(Change(releases=[replace(marked, metadata={**marked.metadata, "rolled_back_by": "rb-x"})]))

    report = reconcile(wiring)

    assert report["prod-us"]["cancelled_promotions"] == [pending.id]
    assert world.release(pending.id).state is ReleaseState.STOPPED


def test_a_cycle_in_promote_from_fails_the_load_naming_the_pipelines(tmp_path: Path) -> None:
    path = tmp_path / "cycle.toml"
    path.write_text(
        CHAIN.replace('name = "dev"\nbucket', 'name = "dev"\npromote_from = "prod-eu"\nbucket'),
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"promote_from forms a cycle \(dev -> prod-eu -> stg -> dev"):
        load_pipelines(path)


def test_the_api_and_relco_promote_and_show_each_stage(world: World, wiring: Wiring, api_url: str) -> None:
    dev = succeed(world, wiring, upload(world, wiring, "svc/dev/svc-1.zip").id)

    answer = call(world, "POST", "/pipelines/stg/promote", {"release": dev.id})
    assert answer.status == 201, answer.json
    assert (answer.json["trigger"], answer.json["metadata"]["promoted_from"]) == ("promotion", dev.id)
    again = call(world, "POST", "/pipelines/stg/promote")  # the last good release: the same one
    assert (again.status, again.json["id"]) == (200, answer.json["id"])
    refused = call(world, "POST", "/pipelines/dev/promote")
    assert refused.status == 409
    assert "does not promote" in refused.message
    succeed(world, wiring, answer.json["id"])

    stages = {p["name"]: p["promotion"] for p in call(world, "GET", "/pipelines").json["pipelines"]}
    assert stages["stg"]["promote_from"] == "dev"
    assert stages["stg"]["running"]["release_id"] == answer.json["id"]
    assert stages["stg"]["running"]["revision"] == dev.revision.to_dict()
    assert stages["prod-us"] == {"promote_from": "stg", "promote": "approval", "soak_s": 60, "running": None}

    shown = relco(api_url, "env")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    dev_line = next(line for line in lines if line.startswith("dev: "))
    stg_line = next(line for line in lines if line.lstrip("└ ").startswith("stg: "))
    assert f"runs svc/dev/svc-1.zip ({dev.id}, version {dev.revision.version}" in dev_line
    assert "[promotes from dev: auto, soak 0s]" in stg_line
    assert lines.index(stg_line) > lines.index(dev_line)
    promoted = relco(api_url, "promote", "prod-eu", "--json")
    assert promoted.exit_code == 0, promoted.output
    assert json.loads(promoted.stdout)["trigger"] == "promotion"

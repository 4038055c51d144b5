"""The fleet's real revisions on moto: ``GET /pipelines/{name}/fleet``, the check reconcile runs
after a release ends, and the heal of a mixed fleet.

moto lacks the deployment-target calls and Auto Scaling's deployments: ``sandbox.moto_extensions``
records which instances a deployment updated (``set_instance_targets``), and an instance that
joins during a deploy is an EC2 instance registered with the target group plus the deployment
Auto Scaling would have made for it (the previous revision, creator ``autoscaling``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.fleet import FLEET_CHECKED, HEAL_OF, heal_release_id
from chalicelib.domain.release import EventType, ReleaseState, Trigger
from sandbox import moto_extensions
from tests.integration.conftest import LOAD_BALANCED, PIPELINES_TOML, World
from tests.integration.test_verification import run_checks, succeed, upload_and_deploy, verified
from tests.unit.test_api_openapi import check_answer


@pytest.fixture
def pipelines_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The suite's pipelines; with the parameter True, shop-prod (the last pipeline) heals."""
    heal = bool(getattr(request, "param", False))
    path = tmp_path / "pipelines.toml"
    path.write_text(PIPELINES_TOML + ("\n[pipeline.fleet]\nheal = true\n" if heal else ""), encoding="utf-8")
    return path


def fleet(world: World, name: str = LOAD_BALANCED) -> tuple[int, dict[str, Any]]:
    """The route's answer, checked against docs/openapi.yaml."""
    response = world.client.http.get(f"/pipelines/{name}/fleet")
    body = json.loads(response.body)
    check_answer("/pipelines/{name}/fleet", "get", response.status_code, body)
    return response.status_code, body


def by_instance(body: dict[str, Any]) -> dict[str, str | None]:
    """Instance id -> the key of the revision it runs."""
    return {
        instance["instance_id"]: (instance["revision"] or {}).get("key") for instance in body["instances"]
    }


def join_during_deploy(world: World, old_release_id: str) -> str:
    """An instance Auto Scaling launches while a deploy runs: registered with the target group,
    and given the last revision that had succeeded (the old one) by a deployment of its own."""
    ec2, elbv2 = world.aws("ec2"), world.aws("elbv2")
    instance_id = str(
        ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    )
    target_group = world.provisioned.load_balanced[LOAD_BALANCED].target_group_arn
    elbv2.register_targets(TargetGroupArn=target_group, Targets=[{"Id": instance_id}])
    old = world.release(old_release_id).revision
    deployment_id = world.aws("codedeploy").create_deployment(
        applicationName="shop",
        deploymentGroupName="shop-prod",
        revision={
            "revisionType": "S3",
            "s3Location": {"bucket": old.bucket, "key": old.key, "bundleType": "zip", "version": old.version},
        },
    )["deploymentId"]
    moto_extensions.backend().deployments[deployment_id].creator = "autoscaling"
    moto_extensions.set_instance_targets(deployment_id, {instance_id: {"status": "Succeeded"}})
    moto_extensions.complete(deployment_id, "Succeeded")
    return instance_id


def release_while_one_joins(world: World) -> tuple[str, str, str]:
    """Release 1.0.0 verified; 2.0.0 deploys to the two instances while a third joins with 1.0.0.
    Returns the two release ids and the joined instance."""
    first = verified(world, "1.0.0")
    second, deployment_id = upload_and_deploy(world, "2.0.0")
    moto_extensions.complete(deployment_id, "Succeeded")
    joined = join_during_deploy(world, first)
    world.codedeploy_event(deployment_id, "SUCCESS", "shop", "shop-prod")
    run_checks(world, 1)
    assert world.release(second).state is ReleaseState.SUCCEEDED
    return first, second, joined


def fleet_checks(world: World, release_id: str) -> list[dict[str, Any]]:
    return [dict(e.detail) for e in world.history(release_id) if e.detail.get("task") == "FleetCheck"]


def test_a_uniform_fleet_reads_one_revision_with_health_and_is_checked_once(world: World) -> None:
    release_id = verified(world, "1.0.0")
    instances = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids

    status, body = fleet(world)

    assert status == 200, body
    assert body["mixed"] is False
    assert body["revisions"] == 1
    assert by_instance(body) == dict.fromkeys(instances, "shop/prod/shop-1.0.0.zip")
    for instance in body["instances"]:
        assert instance["release_id"] == release_id
        assert instance["version_label"] == "1.0.0"
        assert [entry["state"] for entry in instance["health"]] == ["healthy"]

    report = world.reconcile()
    assert report[LOAD_BALANCED]["fleet_uniform"] == release_id
    assert world.release(release_id).metadata[FLEET_CHECKED] == "uniform"
    assert fleet_checks(world, release_id) == []
    # Checked once: the next run leaves it alone.
    assert "fleet_uniform" not in world.reconcile().get(LOAD_BALANCED, {})


def test_an_instance_that_joined_during_the_deploy_makes_the_fleet_mixed_and_the_history_says_so(
    world: World,
) -> None:
    first, second, joined = release_while_one_joins(world)

    status, body = fleet(world)
    assert status == 200, body
    assert body["mixed"] is True
    running = by_instance(body)
    assert running.pop(joined) == "shop/prod/shop-1.0.0.zip"
    assert set(running.values()) == {"shop/prod/shop-2.0.0.zip"}
    # Auto Scaling's deployment carries no release marker: named after the release of its revision.
    joined_entry = next(entry for entry in body["instances"] if entry["instance_id"] == joined)
    assert (joined_entry["release_id"], joined_entry["version_label"]) == (first, "1.0.0")

    report = world.reconcile()

    assert report[LOAD_BALANCED]["fleet_mixed"] == second
    assert "fleet_heal" not in report[LOAD_BALANCED]  # heal is off by default
    [check] = fleet_checks(world, second)
    assert check["mixed"] is True
    assert check["heal_release_id"] is None
    listed = {entry["revision"]["key"]: entry["instances"] for entry in check["revisions"]}
    assert listed["shop/prod/shop-1.0.0.zip"] == [joined]
    assert len(listed["shop/prod/shop-2.0.0.zip"]) == 2
    event = next(e for e in world.history(second) if e.detail.get("task") == "FleetCheck")
    assert (event.type, event.state) == (EventType.TASK_FAILED, ReleaseState.SUCCEEDED)
    assert world.release(second).metadata[FLEET_CHECKED] == "mixed"
    world.reconcile()
    assert len(fleet_checks(world, second)) == 1


@pytest.mark.parametrize("pipelines_file", [True], indirect=True)
def test_heal_redeploys_the_last_verified_revision_and_the_fleet_is_uniform_again(world: World) -> None:
    _, second, joined = release_while_one_joins(world)

    report = world.reconcile()

    healing_id = heal_release_id(second)
    assert report[LOAD_BALANCED] == {"fleet_mixed": second, "fleet_heal": healing_id}
    healing = world.release(healing_id)
    assert (healing.trigger, healing.actor, healing.metadata[HEAL_OF]) == (
        Trigger.API,
        "relco fleet heal",
        second,
    )
    assert healing.revision == world.release(second).revision
    assert healing.state is ReleaseState.DEPLOYING
    assert healing.deployment_id is not None
    [check] = fleet_checks(world, second)
    assert check["heal_release_id"] == healing_id
    # A second run while the heal deploys starts nothing more.
    world.reconcile()
    assert len(world.deployments("shop", "shop-prod")) == 4

    everyone = (*world.provisioned.load_balanced[LOAD_BALANCED].instance_ids, joined)
    moto_extensions.set_instance_targets(
        healing.deployment_id, {i: {"status": "Succeeded"} for i in everyone}
    )
    succeed(world, healing.deployment_id)
    run_checks(world, 1)
    assert world.release(healing_id).state is ReleaseState.SUCCEEDED

    status, body = fleet(world)
    assert status == 200
    assert body["mixed"] is False
    assert set(by_instance(body).values()) == {"shop/prod/shop-2.0.0.zip"}
    assert world.reconcile()[LOAD_BALANCED]["fleet_uniform"] == healing_id


def test_the_fleet_of_an_unknown_pipeline_is_404_and_an_elbv2_error_is_named(world: World) -> None:
    status, body = fleet(world, "nope")
    assert status == 404, body

    verified(world, "1.0.0")
    elbv2 = world.aws("elbv2")
    target_group = world.provisioned.load_balanced[LOAD_BALANCED].target_group_arn
    elbv2.deregister_targets(
        TargetGroupArn=target_group,
        Targets=[{"Id": i} for i in world.provisioned.load_balanced[LOAD_BALANCED].instance_ids],
    )
    elbv2.delete_target_group(TargetGroupArn=target_group)

    status, body = fleet(world)

    assert status == 502, body
    assert body["aws_error"] == "TargetGroupNotFound"
    assert "shop-prod" in body["Message"]

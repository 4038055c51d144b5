"""The sandbox's two fleets (``Sandbox(production=True)``): staging and production each have their
own instances, load balancer and target group, and each CodeDeploy agent runs only its own
group's deployments on only its own instances, so the two deploy at the same time without
touching each other, and neither runs the other's deployments."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sandbox import moto_extensions
from sandbox.runtime import BUCKET, PRODUCTION, PRODUCTION_PIPELINE, STAGING, Sandbox, demo_bundle
from tests.e2e.test_demo import processes_under


def revision_of(sandbox: Sandbox, version: str) -> dict[str, Any]:
    """The demo bundle reporting ``version``, uploaded under a key no pipeline watches, so only
    the deployment this test creates runs it."""
    key = f"by-hand/demo-{version}.zip"
    response = sandbox.session.client("s3").put_object(Bucket=BUCKET, Key=key, Body=demo_bundle(version))
    location = {
        "bucket": BUCKET,
        "key": key,
        "bundleType": "zip",
        "version": response["VersionId"],
        "eTag": response["ETag"].strip('"'),
    }
    return {"revisionType": "S3", "s3Location": location}


def finished(codedeploy: Any, deployment_id: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]["status"])
        if status in moto_extensions.TERMINAL_STATUSES:
            return status
        assert time.monotonic() < deadline, f"deployment {deployment_id} still {status}"
        time.sleep(0.1)


def served_version(url: str) -> str:
    with urllib.request.urlopen(url + "/", timeout=5) as response:
        return str(json.loads(response.read())["version"])


@pytest.mark.timeout(180)
def test_staging_and_production_deploy_at_once_each_to_its_own_instances(tmp_path: Path) -> None:
    with Sandbox(tmp_path, production=True) as sandbox:
        assert sandbox.endpoints is not None
        assert sandbox.provisioned is not None
        staging, production = sandbox.fleets[STAGING], sandbox.fleets[PRODUCTION]
        assert sandbox.endpoints.pipelines == ("demo", PRODUCTION_PIPELINE)
        assert sandbox.endpoints.to_dict()["production_lb_url"] == production.load_balancer.url
        assert sandbox.endpoints.lb_url == staging.load_balancer.url != production.load_balancer.url
        staging_ids = {instance.instance_id for instance in staging.instances}
        production_ids = {instance.instance_id for instance in production.instances}
        assert len(staging_ids) == len(production_ids) == 2
        assert not staging_ids & production_ids

        codedeploy = sandbox.session.client("codedeploy")
        assert (staging.deployment_group, production.deployment_group) == ("demo-fleet", "demo-prod-fleet")
        deployments = {
            fleet.name: codedeploy.create_deployment(
                applicationName="demo-app",
                deploymentGroupName=fleet.deployment_group,
                revision=revision_of(sandbox, version),
            )["deploymentId"]
            for fleet, version in ((staging, "1.0.0"), (production, "9.0.0"))
        }
        assert {fleet: finished(codedeploy, d) for fleet, d in deployments.items()} == {
            STAGING: "Succeeded",
            PRODUCTION: "Succeeded",
        }

        # Each load balancer serves what its own group got.
        assert served_version(staging.load_balancer.url) == "1.0.0"
        assert served_version(production.load_balancer.url) == "9.0.0"
        # CodeDeploy reports each deployment on its group's instances only, and each instance
        # ran its own group's deployment only.
        for fleet, instance_ids in ((staging, staging_ids), (production, production_ids)):
            targets = codedeploy.list_deployment_targets(deploymentId=deployments[fleet.name])["targetIds"]
            assert set(targets) == instance_ids
            group_id = codedeploy.get_deployment_group(
                applicationName="demo-app", deploymentGroupName=fleet.deployment_group
            )["deploymentGroupInfo"]["deploymentGroupId"]
            for instance in fleet.instances:
                assert [path.name for path in instance.deployment_root.iterdir()] == [group_id]
                runs = [path.name for path in (instance.deployment_root / group_id).iterdir()]
                assert runs == [deployments[fleet.name]]
        # moto's target groups: each fleet's instances are registered in its own, and healthy.
        elbv2 = sandbox.session.client("elbv2")
        for fleet, instance_ids in ((staging, staging_ids), (production, production_ids)):
            arn = sandbox.provisioned.load_balanced[fleet.pipeline].target_group_arn
            health = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
            assert {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in health} == dict.fromkeys(
                instance_ids, "healthy"
            )

        # With production's agent stopped, a production deployment waits: staging's agent runs
        # the staging deployment created after it, and leaves it alone.
        production.agent.stop()
        waiting = codedeploy.create_deployment(
            applicationName="demo-app",
            deploymentGroupName=production.deployment_group,
            revision=revision_of(sandbox, "9.1.0"),
        )["deploymentId"]
        second = codedeploy.create_deployment(
            applicationName="demo-app",
            deploymentGroupName=staging.deployment_group,
            revision=revision_of(sandbox, "2.0.0"),
        )["deploymentId"]
        assert finished(codedeploy, second) == "Succeeded"
        assert served_version(staging.load_balancer.url) == "2.0.0"
        assert codedeploy.get_deployment(deploymentId=waiting)["deploymentInfo"]["status"] == "Created"
    assert processes_under(tmp_path) == []

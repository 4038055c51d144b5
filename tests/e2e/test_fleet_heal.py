"""A mixed fleet in the sandbox, found and healed: Auto Scaling launches an instance while a
release deploys, the deployment (its instances fixed when it started) leaves it out, and after
the release ends reconcile's fleet check says "mixed" in its history; with
``[pipeline.fleet] heal = true`` the heal release redeploys the last verified revision to the whole
group, and GET /pipelines/demo/fleet shows one revision on every instance, each healthy."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.domain.fleet import FLEET_CHECKED, HEAL_OF, heal_release_id
from chalicelib.domain.release import EventType, ReleaseState
from sandbox.runtime import PIPELINE, STAGING, Sandbox
from tests.e2e.test_demo import processes_under


def deployment_status(sandbox: Sandbox, deployment_id: str | None) -> str | None:
    if deployment_id is None:
        return None
    codedeploy = sandbox.session.client("codedeploy")
    return str(codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]["status"])


def fleet_from_api(sandbox: Sandbox) -> dict[str, Any]:
    assert sandbox.endpoints is not None
    url = f"{sandbox.endpoints.api_url}/pipelines/{PIPELINE}/fleet"
    with urllib.request.urlopen(url, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


@pytest.mark.timeout(240)
def test_an_instance_launched_mid_deploy_makes_the_fleet_mixed_and_the_heal_makes_it_uniform(
    tmp_path: Path,
) -> None:
    with Sandbox(tmp_path, heal_fleet=True) as sandbox:
        release_id = sandbox.upload("1.0.0")
        sandbox.wait_for(
            release_id,
            lambda release: deployment_status(sandbox, release.deployment_id) == "InProgress",
            "deploying",
        )
        joined = sandbox.scale_out()
        deployed = {instance.instance_id for instance in sandbox.fleets[STAGING].instances} - {
            joined.instance_id
        }

        release = sandbox.wait_terminal(release_id)
        assert release.state is ReleaseState.SUCCEEDED, release.reason
        assert release.deployment_id is not None
        targets = sandbox.session.client("codedeploy").list_deployment_targets(
            deploymentId=release.deployment_id
        )["targetIds"]
        assert set(targets) == deployed  # the deployment left the joined instance out

        # Reconcile's fleet check after the release: mixed, said in its history, heal submitted.
        checked = sandbox.wait_for(
            release_id, lambda current: FLEET_CHECKED in current.metadata, "checked for a mixed fleet"
        )
        assert checked.metadata[FLEET_CHECKED] == "mixed"
        store = bootstrap.wiring().store
        [fleet_check] = [
            event
            for event in store.history(release_id)
            if event.type is EventType.TASK_FAILED and event.detail.get("task") == "FleetCheck"
        ]
        healing_id = heal_release_id(release_id)
        assert (fleet_check.detail["mixed"], fleet_check.detail["heal_release_id"]) == (True, healing_id)
        revisions = {
            (entry["release_id"], tuple(entry["instances"])) for entry in fleet_check.detail["revisions"]
        }
        # The joined instance runs nothing CodeDeploy gave it; the others run the release's revision.
        assert revisions == {(None, (joined.instance_id,)), (release_id, tuple(sorted(deployed)))}
        print(
            f"\nmixed fleet: said {(fleet_check.timestamp - release.updated_at).total_seconds():.1f} s "
            "after the release ended"
        )

        healed = sandbox.wait_terminal(healing_id)
        assert healed.state is ReleaseState.SUCCEEDED, healed.reason
        assert healed.metadata[HEAL_OF] == release_id
        assert healed.revision == release.revision  # the last verified revision, redeployed

        fleet = fleet_from_api(sandbox)
        assert fleet["mixed"] is False, fleet
        assert {instance["instance_id"] for instance in fleet["instances"]} == deployed | {joined.instance_id}
        for instance in fleet["instances"]:
            assert (instance["release_id"], instance["version_label"]) == (healing_id, "1.0.0"), instance
            assert [entry["state"] for entry in instance["health"]] == ["healthy"], instance
    assert processes_under(tmp_path) == []

"""Retries, crashes and lost events: nothing lost, nothing deployed twice."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from chalicelib import bootstrap
from chalicelib.adapters.codedeploy import CodeDeployDeployments
from chalicelib.adapters.dynamodb_store import DynamoReleaseStore
from chalicelib.adapters.elbv2 import Elbv2LoadBalancing
from chalicelib.adapters.s3_artifacts import S3Artifacts
from chalicelib.adapters.sqs_queues import SqsVerifyQueue
from chalicelib.domain.inbound_events import DeploymentState, DeploymentStateChanged, parse_artifact_event
from chalicelib.domain.lane import Change
from chalicelib.domain.leases import CLAIM_LEASE
from chalicelib.domain.release import EventType, ReleaseState
from chalicelib.service.deployment_events import handle_deployment_event
from chalicelib.service.reconcile import reconcile
from chalicelib.service.uploads import handle_upload
from chalicelib.service.wiring import Wiring
from sandbox import moto_extensions
from tests.integration.conftest import TABLE, World


class ManualClock:
    def __init__(self) -> None:
        self.current = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


def direct_wiring(world: World, clock: ManualClock, codedeploy: Any | None = None) -> Wiring:
    """The use cases wired by hand, with a clock the test moves."""
    return Wiring(
        store=DynamoReleaseStore(world.session.client("dynamodb"), TABLE),
        artifacts=S3Artifacts(world.session.client("s3")),
        deployments=CodeDeployDeployments(codedeploy or world.session.client("codedeploy")),
        load_balancing=Elbv2LoadBalancing(world.session.client("elbv2")),
        verify_queue=SqsVerifyQueue(world.session.client("sqs"), world.provisioned.verify_queue_url),
        pipelines=bootstrap.pipelines(),
        clock=clock,
        coordinator=TABLE,
    )


@pytest.mark.parametrize(("code", "status"), [("ThrottlingException", 400), ("InternalFailure", 500)])
def test_throttled_or_failing_create_is_retried_by_the_redelivery_without_a_second_deployment(
    world: World, code: str, status: int
) -> None:
    upload = world.upload("api/prod/app-1.zip")
    codedeploy = world.session.client("codedeploy")
    context = direct_wiring(world, ManualClock(), codedeploy)
    [created] = parse_artifact_event(upload.eventbridge).uploads

    # moto cannot throttle or fail: botocore's Stubber answers CreateDeployment with the error.
    with Stubber(codedeploy) as stub:
        stub.add_client_error("create_deployment", code, "Rate exceeded or internal failure", status)
        with pytest.raises(ClientError, match=code):
            handle_upload(context, created)
    release = handle_upload(context, created)  # Lambda's retry of the same event

    assert release is not None
    started = world.release(release.id)
    assert started.deployment_id is not None
    assert len(world.deployments()) == 1
    types = [event.type for event in world.history(release.id)]
    assert types.count(EventType.TASK_FAILED) == 1
    assert types[-1] is EventType.TASK_STARTED


def test_crash_after_create_is_found_not_deployed_again(world: World) -> None:
    """CreateDeployment succeeded but its answer was lost (a 5xx on the way back, a timeout):
    the retry finds the deployment by the release id in its description."""
    upload = world.upload("api/prod/app-1.zip")
    codedeploy = world.session.client("codedeploy")
    context = direct_wiring(world, ManualClock(), codedeploy)
    [created] = parse_artifact_event(upload.eventbridge).uploads

    def lose_answer(**_: Any) -> None:
        raise ConnectionError("connection reset after the request was sent")

    codedeploy.meta.events.register("after-call.codedeploy.CreateDeployment", lose_answer)
    with pytest.raises(ConnectionError):
        handle_upload(context, created)
    codedeploy.meta.events.unregister("after-call.codedeploy.CreateDeployment", lose_answer)
    assert len(world.deployments()) == 1  # CodeDeploy has it; the store does not know yet

    release = handle_upload(context, created)

    assert release is not None
    [deployment] = world.deployments()
    assert world.release(release.id).deployment_id == deployment["deploymentId"]


def test_reconcile_restarts_a_start_abandoned_by_a_dead_lambda(world: World) -> None:
    upload = world.upload("api/prod/app-1.zip")
    clock = ManualClock()
    codedeploy = world.session.client("codedeploy")
    context = direct_wiring(world, clock, codedeploy)
    [created] = parse_artifact_event(upload.eventbridge).uploads

    def die(**_: Any) -> None:
        raise SystemExit("Lambda timed out before CreateDeployment")  # no cleanup runs

    codedeploy.meta.events.register("before-call.codedeploy.CreateDeployment", die)
    with pytest.raises(SystemExit):
        handle_upload(context, created)
    codedeploy.meta.events.unregister("before-call.codedeploy.CreateDeployment", die)

    assert reconcile(context) == {}  # the claim is fresh: somebody may still be starting it
    clock.advance(CLAIM_LEASE + timedelta(seconds=1))
    report = reconcile(context)

    [deployment] = world.deployments()
    release_id = report["api-prod"]["restarted"]
    assert world.release(release_id).deployment_id == deployment["deploymentId"]


def test_reconcile_applies_a_lost_success_and_starts_the_next_release(world: World) -> None:
    first = world.deliver_upload(world.upload("api/prod/app-1.zip").eventbridge)["releases"][0]["id"]
    second = world.deliver_upload(world.upload("api/prod/app-2.zip").eventbridge)["releases"][0]["id"]
    deployment_id = world.release(first).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Succeeded")  # ...and its event is lost

    report = world.reconcile()

    assert report["api-prod"]["applied"] == [first]
    assert world.release(first).state is ReleaseState.SUCCEEDED
    assert world.release(second).state is ReleaseState.DEPLOYING
    assert world.reconcile() == {}  # nothing left to repair


def test_reconcile_frees_a_slot_held_by_a_finished_release(world: World) -> None:
    release_id = world.deliver_upload(world.upload("api/prod/app-1.zip").eventbridge)["releases"][0]["id"]
    store = world.store
    # Damage the slot the way a partial write elsewhere could: it names a finished release and
    # keeps a waiting one that never got its turn.
    finished = replace(world.release(release_id), state=ReleaseState.FAILED)
    store.commit(Change(releases=[finished]))
    assert finished.deployment_id is not None
    moto_extensions.complete(finished.deployment_id, "Failed")
    queued = world.deliver_upload(world.upload("api/prod/app-2.zip").eventbridge)["releases"][0]["id"]
    slot = store.get_slot("api-prod")
    assert (slot.active, slot.waiting) == (release_id, (queued,))

    report = world.reconcile()

    assert report["api-prod"] == {"freed": release_id, "promoted": queued}
    assert world.release(queued).deployment_id is not None


def test_permanent_refusal_fails_the_release_instead_of_holding_the_slot(world: World) -> None:
    upload = world.upload("api/prod/app-1.zip")
    codedeploy = world.session.client("codedeploy")
    context = direct_wiring(world, ManualClock(), codedeploy)
    [created] = parse_artifact_event(upload.eventbridge).uploads

    # A group CodeDeploy will never deploy to for us (here: no permission), injected by Stubber.
    with Stubber(codedeploy) as stub:
        stub.add_client_error("create_deployment", "AccessDeniedException", "not authorized", 400)
        release = handle_upload(context, created)

    assert release is not None
    failed = world.release(release.id)
    assert failed.state is ReleaseState.FAILED
    assert "AccessDeniedException: not authorized" in failed.reason
    assert world.store.get_slot("api-prod").active is None


def test_one_failing_pipeline_does_not_stop_reconcile_of_the_others(world: World) -> None:
    api = world.deliver_upload(world.upload("api/prod/app-1.zip").eventbridge)["releases"][0]["id"]
    web = world.deliver_upload(world.upload("web/prod/site-1.zip").eventbridge)["releases"][0]["id"]
    for release_id in (api, web):
        deployment_id = world.release(release_id).deployment_id
        assert deployment_id is not None
        moto_extensions.complete(deployment_id, "Succeeded")  # both events lost
    codedeploy = world.session.client("codedeploy")
    context = direct_wiring(world, ManualClock(), codedeploy)
    api_deployment = world.release(api).deployment_id

    def throttle_api(params: dict[str, Any], **_: Any) -> None:
        if params.get("deploymentId") == api_deployment:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "GetDeployment"
            )

    codedeploy.meta.events.register("provide-client-params.codedeploy.GetDeployment", throttle_api)
    report = reconcile(context)

    assert report["api-prod"]["error"].startswith("ClientError")
    assert report["web-prod"]["applied"] == [web]
    assert world.release(web).state is ReleaseState.SUCCEEDED
    assert world.release(api).state is ReleaseState.DEPLOYING  # repaired by the next run instead


def test_events_of_groups_no_pipeline_owns_are_ignored_without_a_call(world: World) -> None:
    codedeploy = world.session.client("codedeploy")
    calls: list[str] = []
    codedeploy.meta.events.register("before-call.codedeploy", lambda model, **_: calls.append(model.name))
    context = direct_wiring(world, ManualClock(), codedeploy)
    event = DeploymentStateChanged("d-other", DeploymentState.SUCCESS, "billing", "billing-prod")

    assert handle_deployment_event(context, event) is None
    assert calls == []


def test_forbidden_spelling_of_a_key_falls_through_to_the_next(world: World) -> None:
    """Without s3:ListBucket, HeadObject of a key that does not exist answers 403, not 404."""
    upload = world.upload("api/prod/red flower.zip")
    s3 = world.session.client("s3")
    context = replace(direct_wiring(world, ManualClock()), artifacts=S3Artifacts(s3))
    raw = replace(
        parse_artifact_event(upload.eventbridge).uploads[0],
        key_candidates=("api/prod/red+flower.zip", "api/prod/red flower.zip"),
    )

    with Stubber(s3) as stub:
        stub.add_client_error("head_object", "403", "Forbidden", 403)
        stub.add_response(
            "head_object",
            {"VersionId": upload.version_id, "ETag": f'"{upload.etag}"', "Metadata": {}},
            {"Bucket": "acme-artifacts", "Key": "api/prod/red flower.zip", "VersionId": upload.version_id},
        )
        release = handle_upload(context, raw)

    assert release is not None
    assert release.revision.key == "api/prod/red flower.zip"


def test_a_malformed_version_id_is_no_object_not_a_crash(world: World) -> None:
    """Real S3 answers HeadObject with 400 for a version id it never issued (botocore's Stubber
    plays it; moto answers 404)."""
    s3 = world.session.client("s3")
    artifacts = S3Artifacts(s3)

    with Stubber(s3) as stub:
        stub.add_client_error("head_object", "400", "Invalid version id specified", 400)
        assert artifacts.find("acme-artifacts", "api/prod/app.zip", "not-a-version") is None

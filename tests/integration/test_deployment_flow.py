"""CodeDeploy events drive the release; the slot admits one deployment per group at a time."""

from __future__ import annotations

from chalicelib import bootstrap
from chalicelib.domain.lane import Submission
from chalicelib.domain.release import EventType, ReleaseState, Trigger, external_release_id
from chalicelib.service.submission import submit
from sandbox import moto_extensions
from tests.integration.conftest import TABLE, HandlerCall, World


def deploy(world: World, key: str) -> str:
    upload = world.upload(key)
    return str(world.deliver_upload(upload.eventbridge)["releases"][0]["id"])


def finish_deployment(
    world: World, release_id: str, status: str = "Succeeded", state: str = "SUCCESS"
) -> str:
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, status)
    world.codedeploy_event(deployment_id, state)
    return deployment_id


def test_queue_policy_deploys_waiting_releases_in_order(world: World) -> None:
    first, second, third = (deploy(world, f"api/prod/app-{n}.zip") for n in (1, 2, 3))
    assert [world.release(r).state for r in (first, second, third)] == [
        ReleaseState.DEPLOYING,
        ReleaseState.QUEUED,
        ReleaseState.QUEUED,
    ]
    assert len(world.deployments()) == 1

    finish_deployment(world, first)
    assert world.release(first).state is ReleaseState.SUCCEEDED
    assert world.release(second).state is ReleaseState.DEPLOYING
    assert world.release(third).state is ReleaseState.QUEUED

    finish_deployment(world, second)
    finish_deployment(world, third)

    keys = [d["revision"]["s3Location"]["key"] for d in world.deployments()]
    assert keys == ["api/prod/app-1.zip", "api/prod/app-2.zip", "api/prod/app-3.zip"]
    slot = world.store.get_slot("api-prod")
    assert (slot.active, slot.waiting, slot.last_good) == (None, (), third)


def test_supersede_policy_keeps_only_the_newest_waiting_release(world: World) -> None:
    first, second, third = (deploy(world, f"web/prod/site-{n}.zip") for n in (1, 2, 3))

    assert world.release(second).state is ReleaseState.SUPERSEDED
    assert world.release(second).reason == f"superseded by {third}"
    assert world.release(third).state is ReleaseState.QUEUED

    deployment_id = world.release(first).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Succeeded")
    world.codedeploy_event(deployment_id, "SUCCESS", "web", "web-prod")
    assert world.release(third).state is ReleaseState.DEPLOYING
    assert len(world.deployments("web", "web-prod")) == 2


def test_duplicated_and_reordered_events_never_regress_a_release(world: World) -> None:
    release_id = deploy(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Succeeded")

    for state in ("SUCCESS", "START", "SUCCESS", "FAILURE", "STOP", "START"):
        world.codedeploy_event(deployment_id, state)

    release = world.release(release_id)
    assert release.state is ReleaseState.SUCCEEDED
    history = world.history(release_id)
    assert [event.id for event in history] == list(range(1, len(history) + 1))
    assert [event.previous_event_id for event in history] == list(range(len(history)))
    assert [event.type for event in history].count(EventType.EXECUTION_SUCCEEDED) == 1


def test_events_of_a_deployment_the_container_linked_need_no_lookup(
    world: World, handler_calls: list[HandlerCall]
) -> None:
    """A deployment's link never changes, so the warm container that wrote it remembers it: START
    makes no call. The release is read with its lane, so the SUCCESS that ends it (no load
    balancer) writes on that read: one BatchGetItem, GetDeployment, and the write. Nothing moves
    a release out of a terminal state, so the container that ended it settles a repeated or late
    outcome without a call."""
    release_id = deploy(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Succeeded")

    def operations_of(state: str) -> list[str]:
        before = len(handler_calls)
        world.codedeploy_event(deployment_id, state)
        return [call.operation for call in handler_calls[before:]]

    assert operations_of("START") == []
    assert operations_of("SUCCESS") == ["BatchGetItem", "GetDeployment", "TransactWriteItems"]
    assert operations_of("SUCCESS") == []
    assert operations_of("STOP") == []
    assert world.release(release_id).state is ReleaseState.SUCCEEDED


def test_a_finish_reads_the_next_release_with_its_lane(
    world: World, handler_calls: list[HandlerCall]
) -> None:
    """The container saw the line when the second upload queued: the finish of the first reads
    the slot, the release and the next in line in one BatchGetItem, and hands the slot on."""
    first, second = deploy(world, "api/prod/app-1.zip"), deploy(world, "api/prod/app-2.zip")
    before = len(handler_calls)

    finish_deployment(world, first)

    reads = [call for call in handler_calls[before:] if call.operation == "BatchGetItem"]
    assert len(reads) == 1
    keys = {key["pk"]["S"] for key in reads[0].params["RequestItems"][TABLE]["Keys"]}
    assert keys == {"PIPE#api-prod", f"REL#{first}", f"REL#{second}"}
    assert world.release(second).state is ReleaseState.DEPLOYING


def test_a_cold_container_looks_the_deployment_up(world: World, handler_calls: list[HandlerCall]) -> None:
    release_id = deploy(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Succeeded")
    bootstrap.reset()  # another container: it knows no link

    before = len(handler_calls)
    world.codedeploy_event(deployment_id, "SUCCESS")
    assert [call.operation for call in handler_calls[before:]] == [
        "GetDeployment",
        "BatchGetItem",
        "TransactWriteItems",
    ]
    bootstrap.reset()
    before = len(handler_calls)
    world.codedeploy_event(deployment_id, "START")
    world.codedeploy_event(deployment_id, "START")

    assert [call.operation for call in handler_calls[before:]] == ["GetItem"]  # the link, read once
    assert world.release(release_id).state is ReleaseState.SUCCEEDED


def test_a_container_that_read_a_release_ended_settles_its_deployment_s_later_events_without_a_call(
    world: World, handler_calls: list[HandlerCall]
) -> None:
    """A repeated SUCCESS is settled on the release read with its lane (no GetDeployment); once
    that read saw the release ended, the deployment's further events need no read at all."""
    release_id = deploy(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    finish_deployment(world, release_id)
    bootstrap.reset()  # another container: it knows no link and no ended release
    world.codedeploy_event(deployment_id, "START")  # the link, read

    before = len(handler_calls)
    world.codedeploy_event(deployment_id, "SUCCESS")
    world.codedeploy_event(deployment_id, "FAILURE")
    world.codedeploy_event(deployment_id, "SUCCESS")

    assert [call.operation for call in handler_calls[before:]] == ["BatchGetItem"]
    assert world.release(release_id).state is ReleaseState.SUCCEEDED


def test_failure_records_codedeploy_error_and_starts_the_next_release(world: World) -> None:
    first, second = deploy(world, "api/prod/app-1.zip"), deploy(world, "api/prod/app-2.zip")
    deployment_id = world.release(first).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(
        deployment_id, "Failed", error_code="HOOK_EXECUTION_FAILURE", error_message="ValidateService failed"
    )

    world.codedeploy_event(deployment_id, "FAILURE")

    failed = world.release(first)
    assert failed.state is ReleaseState.FAILED
    assert "HOOK_EXECUTION_FAILURE: ValidateService failed" in failed.reason
    assert world.release(second).state is ReleaseState.DEPLOYING
    assert world.store.get_slot("api-prod").last_good is None


def test_stop_event_stops_the_release(world: World) -> None:
    release_id = deploy(world, "api/prod/app-1.zip")
    finish_deployment(world, release_id, status="Stopped", state="STOP")

    assert world.release(release_id).state is ReleaseState.STOPPED
    assert world.store.get_slot("api-prod").active is None


def test_unknown_deployment_is_recorded_as_external_and_holds_the_slot(world: World) -> None:
    upload = world.upload("api/prod/console-deploy.zip")
    codedeploy = world.session.client("codedeploy")
    external_id = codedeploy.create_deployment(
        applicationName="api",
        deploymentGroupName="api-prod",
        revision={
            "revisionType": "S3",
            "s3Location": {"bucket": "acme-artifacts", "key": upload.key, "bundleType": "zip"},
        },
    )["deploymentId"]

    world.codedeploy_event(external_id, "START")

    external = world.release(external_release_id(external_id))
    assert external.trigger is Trigger.EXTERNAL
    assert external.state is ReleaseState.DEPLOYING
    assert external.revision.key == upload.key
    assert world.store.get_slot("api-prod").active == external.id

    queued = deploy(world, "api/prod/app-2.zip")
    assert world.release(queued).state is ReleaseState.QUEUED

    moto_extensions.complete(external_id, "Succeeded")
    world.codedeploy_event(external_id, "SUCCESS")
    assert world.release(external.id).state is ReleaseState.SUCCEEDED
    assert world.release(queued).state is ReleaseState.DEPLOYING


def test_deployment_started_outside_without_events_keeps_the_upload_waiting(world: World) -> None:
    codedeploy = world.session.client("codedeploy")
    blocker = codedeploy.create_deployment(
        applicationName="api",
        deploymentGroupName="api-prod",
        revision={
            "revisionType": "S3",
            "s3Location": {"bucket": "acme-artifacts", "key": "x.zip", "bundleType": "zip"},
        },
    )["deploymentId"]

    release_id = deploy(world, "api/prod/app-1.zip")

    waiting = world.release(release_id)
    assert waiting.state is ReleaseState.DEPLOYING
    assert waiting.deployment_id is None
    last = world.history(release_id)[-1]
    assert last.type is EventType.TASK_FAILED
    assert last.detail["error"] == "DeploymentLimitExceededException"
    assert last.detail["active_deployment_id"] == blocker

    # The blocker's own end (its first event the coordinator sees) lets the upload start.
    moto_extensions.complete(blocker, "Succeeded")
    world.codedeploy_event(blocker, "SUCCESS")

    started = world.release(release_id)
    assert started.deployment_id is not None
    assert world.release(external_release_id(blocker)).state is ReleaseState.SUCCEEDED
    assert moto_extensions.active_deployments("api", "api-prod") == [started.deployment_id]


def test_missing_deployment_group_fails_the_release_and_frees_the_slot(world: World) -> None:
    # moto has no DeleteDeploymentGroup: remove the group from its backend directly.
    del moto_extensions.backend().deployment_groups["api"]["api-prod"]

    release_id = deploy(world, "api/prod/app-1.zip")

    release = world.release(release_id)
    assert release.state is ReleaseState.FAILED
    assert "DeploymentGroupDoesNotExistException" in release.reason
    assert world.store.get_slot("api-prod").active is None


def test_event_that_outruns_the_store_write_finds_its_release(world: World) -> None:
    """CodeDeploy's START can arrive before the coordinator records the deployment id: the
    deployment's description names the release, so it is not mistaken for an external one."""
    release_id = deploy(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    # Drop the link to play the race: a second deployment id pointing nowhere cannot be made in
    # moto, so remove the index item the store wrote.
    world.session.client("dynamodb").delete_item(
        TableName=world.provisioned.table, Key={"pk": {"S": f"DEP#{deployment_id}"}, "sk": {"S": "REL"}}
    )

    moto_extensions.complete(deployment_id, "Succeeded")
    world.codedeploy_event(deployment_id, "SUCCESS")

    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    assert world.store.get_release(external_release_id(deployment_id)) is None


def test_a_waiting_rollback_goes_first_and_is_never_superseded(world: World) -> None:
    first = deploy(world, "web/prod/site-1.zip")
    queued = deploy(world, "web/prod/site-2.zip")
    web = bootstrap.pipelines().named("web-prod")
    assert web is not None
    rollback, created = submit(
        bootstrap.wiring(),
        Submission(
            release_id="rb-manual-1",
            pipeline=web,
            revision=world.release(first).revision,
            trigger=Trigger.ROLLBACK,
            actor="ana",
        ),
    )
    assert created
    assert world.store.get_slot("web-prod").waiting == (rollback.id, queued)

    newest = deploy(world, "web/prod/site-3.zip")  # supersedes the plain upload only

    assert world.store.get_slot("web-prod").waiting == (rollback.id, newest)
    assert world.release(queued).state is ReleaseState.SUPERSEDED
    assert world.release(rollback.id).state is ReleaseState.QUEUED


def test_a_queued_release_behind_a_waiting_rollback_is_told_its_real_place(world: World) -> None:
    """Under supersede a waiting rollback is kept in front of the newcomer: the newcomer's
    QUEUED event names the place it really has, behind the rollback."""
    first = deploy(world, "web/prod/site-1.zip")
    web = bootstrap.pipelines().named("web-prod")
    assert web is not None
    submit(
        bootstrap.wiring(),
        Submission(
            release_id="rb-manual-1",
            pipeline=web,
            revision=world.release(first).revision,
            trigger=Trigger.ROLLBACK,
            actor="ana",
        ),
    )

    newest = deploy(world, "web/prod/site-2.zip")

    assert world.store.get_slot("web-prod").waiting == ("rb-manual-1", newest)
    queued = [event for event in world.history(newest) if event.state is ReleaseState.QUEUED]
    assert [event.detail["position"] for event in queued] == [2]

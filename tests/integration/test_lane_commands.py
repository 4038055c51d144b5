"""The lane's commands a person gives (roll back, cancel), as use cases on moto: what the API is
switched over to (its own tests cover the HTTP answers)."""

from __future__ import annotations

import pytest

from chalicelib import bootstrap
from chalicelib.domain.api_requests import ConflictingState, InvalidValue, NotFound
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import ReleaseState, Trigger
from chalicelib.service.lane_commands import cancel_release, roll_back_pipeline
from sandbox import moto_extensions
from tests.integration.conftest import World


def _deploy(world: World, key: str) -> str:
    upload = world.upload(key)
    return str(world.deliver_upload(upload.eventbridge)["releases"][0]["id"])


def _succeed(world: World, release_id: str) -> None:
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Succeeded")
    world.codedeploy_event(deployment_id, "SUCCESS")


def _api_prod() -> Pipeline:
    pipeline = bootstrap.pipelines().named("api-prod")
    assert pipeline is not None
    return pipeline


def test_a_rollback_to_the_last_good_release_goes_first_and_repeats_as_itself(world: World) -> None:
    good = _deploy(world, "api/prod/app-1.zip")
    _succeed(world, good)
    bad = _deploy(world, "api/prod/app-2.zip")
    waiting = _deploy(world, "api/prod/app-3.zip")

    rollback, created = roll_back_pipeline(bootstrap.wiring(), _api_prod(), None, "ana", "rb-ana-1")
    again, created_again = roll_back_pipeline(bootstrap.wiring(), _api_prod(), None, "ana", "rb-ana-1")

    assert created
    assert not created_again
    assert again.id == rollback.id
    assert (rollback.trigger, rollback.rollback_of, rollback.state) == (
        Trigger.ROLLBACK,
        bad,
        ReleaseState.QUEUED,
    )
    assert rollback.revision == world.release(good).revision
    assert rollback.metadata["rolled_back_to"] == good
    assert world.store.get_slot("api-prod").waiting == (rollback.id, waiting)


def test_rollback_refusals(world: World) -> None:
    context = bootstrap.wiring()
    with pytest.raises(ConflictingState, match="nothing to roll back to"):
        roll_back_pipeline(context, _api_prod(), None, "ana", "rb-1")
    good = _deploy(world, "api/prod/app-1.zip")
    _succeed(world, good)
    with pytest.raises(ConflictingState, match="already the current release"):
        roll_back_pipeline(context, _api_prod(), None, "ana", "rb-2")
    with pytest.raises(InvalidValue, match="has no release"):
        roll_back_pipeline(context, _api_prod(), "rel-none", "ana", "rb-3")
    waiting_on = _deploy(world, "api/prod/app-2.zip")
    with pytest.raises(InvalidValue, match="only a SUCCEEDED release"):
        roll_back_pipeline(context, _api_prod(), waiting_on, "ana", "rb-4")


def test_cancel_stops_a_waiting_release_and_leaves_a_deploying_one_to_codedeploy(world: World) -> None:
    deploying = _deploy(world, "api/prod/app-1.zip")
    waiting = _deploy(world, "api/prod/app-2.zip")
    context = bootstrap.wiring()

    stopped = cancel_release(context, waiting, "ana")
    running = cancel_release(context, deploying, "ana")

    assert stopped.stopped
    assert (stopped.release.state, stopped.release.reason) == (ReleaseState.STOPPED, "cancelled by ana")
    assert world.history(waiting)[-1].detail["actor"] == "ana"
    assert not running.stopped
    assert running.release.state is ReleaseState.DEPLOYING
    assert world.store.get_slot("api-prod").waiting == ()
    with pytest.raises(ConflictingState, match="already ended STOPPED"):
        cancel_release(context, waiting, "ana")
    with pytest.raises(NotFound):
        cancel_release(context, "rel-none", "ana")

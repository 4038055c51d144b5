"""Approvals (issue 14) on moto, through the API as API Gateway hands it a request after IAM
authentication: an upload to a pipeline with ``[pipeline.approval]`` waits AWAITING_APPROVAL; an
approver named by role approves (it deploys) or rejects it; anyone else gets 403 and changes
nothing; a newer upload supersedes the pending one; an approval expires at its time."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app import app
from chalicelib.domain.api_requests import ConflictingState
from chalicelib.domain.permissions import Person
from chalicelib.domain.release import ReleaseState
from chalicelib.domain.wakeups import WakeUp
from chalicelib.service import approvals
from chalicelib.service.reconcile import reconcile, wake_lane
from tests.integration import conftest
from tests.integration.conftest import World
from tests.integration.test_api import call, uploaded_release
from tests.integration.test_recovery import ManualClock, direct_wiring
from tests.unit.test_api_openapi import check_answer

pytestmark = pytest.mark.timeout(120)
APPROVER = "arn:aws:sts::123456789012:assumed-role/release-managers/ana"
DEVELOPER = "arn:aws:sts::123456789012:assumed-role/ci-deployer/build-42"


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    """The shared pipelines file; api-prod's releases need the approval of a release manager."""
    text = conftest.PIPELINES_TOML.replace(
        'deployment_group = "api-prod"\n',
        'deployment_group = "api-prod"\n'
        "[pipeline.approval]\n"
        'approvers = ["arn:aws:iam::123456789012:role/release-managers"]\n'
        'expires_after = "1h"\n',
        1,
    )
    assert text != conftest.PIPELINES_TOML
    path = tmp_path / "pipelines.toml"
    path.write_text(text, encoding="utf-8")
    return path


def as_caller(user_arn: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """A POST as API Gateway hands it to the function once IAM has authenticated ``user_arn``."""
    template = path.rsplit("/", 2)[0] + "/{release_id}/" + path.rsplit("/", 1)[1]
    event = {
        "resource": template,
        "path": path,
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"release_id": path.split("/")[2]},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": template,
            "httpMethod": "POST",
            "path": f"/api{path}",
            "stage": "api",
            "identity": {"accountId": "123456789012", "userArn": user_arn, "sourceIp": "203.0.113.9"},
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }
    response = app(event, None)
    answer = json.loads(response["body"])
    check_answer(template, "POST", response["statusCode"], answer)
    return response["statusCode"], answer


def test_an_upload_awaits_approval_and_an_approver_starts_it(world: World) -> None:
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    assert world.release(release_id).state is ReleaseState.AWAITING_APPROVAL
    assert world.deployments() == []
    pipeline = call(world, "GET", "/pipelines/api-prod").json
    assert [entry["release_id"] for entry in pipeline["awaiting_approval"]] == [release_id]
    assert pipeline["awaiting_approval_releases"][0]["state"] == "AWAITING_APPROVAL"

    status, approved = as_caller(APPROVER, f"/releases/{release_id}/approve", {"comment": "reviewed"})

    assert status == 200
    assert approved["state"] == "DEPLOYING"
    assert approved["deployment_id"] == world.deployments()[0]["deploymentId"]
    [entered] = [event for event in world.history(release_id) if "approved_by" in event.detail]
    assert (entered.state, entered.detail["approved_by"], entered.detail["comment"]) == (
        ReleaseState.DEPLOYING,
        APPROVER,
        "reviewed",
    )


def test_callers_the_pipeline_does_not_name_are_refused_and_nothing_changes(world: World) -> None:
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    before = (world.release(release_id), world.history(release_id), world.store.get_slot("api-prod"))

    status, refused = as_caller(DEVELOPER, f"/releases/{release_id}/approve")
    assert status == 403
    assert "may not approve" in refused["Message"]
    assert as_caller(DEVELOPER, f"/releases/{release_id}/reject")[0] == 403
    # The local server and the test client verify no signature: their caller is never an approver.
    assert call(world, "POST", f"/releases/{release_id}/approve").status == 403

    assert (world.release(release_id), world.history(release_id), world.store.get_slot("api-prod")) == before
    assert world.deployments() == []


def test_a_rejection_stops_the_release_with_who_and_why(world: World) -> None:
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    status, rejected = as_caller(APPROVER, f"/releases/{release_id}/reject", {"comment": "breaks checkout"})
    assert status == 200
    assert rejected["state"] == "STOPPED"
    assert rejected["reason"] == f"rejected by {APPROVER}: breaks checkout"
    assert world.history(release_id)[-1].detail["rejected_by"] == APPROVER
    # Deciding twice is a conflict, not a second decision.
    status, again = as_caller(APPROVER, f"/releases/{release_id}/approve")
    assert status == 409
    assert "not awaiting approval" in again["Message"]


def test_a_newer_upload_supersedes_the_pending_approval(world: World) -> None:
    older = uploaded_release(world, "api/prod/app-1.zip")
    newer = uploaded_release(world, "api/prod/app-2.zip")
    assert world.release(older).state is ReleaseState.SUPERSEDED
    assert world.history(older)[-1].detail["superseded_by"] == newer
    assert world.release(newer).state is ReleaseState.AWAITING_APPROVAL
    assert as_caller(APPROVER, f"/releases/{older}/approve")[0] == 409


def test_an_approval_expires_at_its_time_and_a_late_approval_is_refused(world: World) -> None:
    clock = ManualClock()
    wiring = direct_wiring(world, clock)
    expiring = uploaded_release(world, "api/prod/app-1.zip")
    # The upload's function ran on the real clock: re-read the mark it wrote.
    [mark] = world.store.get_slot("api-prod").awaiting_approval
    clock.current = mark.expires_at - timedelta(seconds=1)
    assert reconcile(wiring) == {}
    assert world.release(expiring).state is ReleaseState.AWAITING_APPROVAL

    clock.current = mark.expires_at
    assert reconcile(wiring) == {"api-prod": {"expired": expiring}}
    expired = world.release(expiring)
    assert expired.state is ReleaseState.STOPPED
    assert expired.reason.startswith("approval expired at ")
    assert world.history(expiring)[-1].detail["approval_expired"] == mark.expires_at.isoformat()

    late = uploaded_release(world, "api/prod/app-2.zip")
    [mark] = world.store.get_slot("api-prod").awaiting_approval
    clock.current = mark.expires_at + timedelta(minutes=1)
    with pytest.raises(ConflictingState, match="approval expired"):
        approvals.approve(wiring, late, Person(iam_arn=APPROVER), None)
    assert world.release(late).state is ReleaseState.STOPPED
    assert world.deployments() == []


def test_an_expiry_wake_up_whose_approval_was_given_is_not_sent_on(world: World) -> None:
    """An approval's wake-up hops towards its expiry (SQS delays at most 15 minutes); once the
    approval is given, the next hop finds nothing due and is dropped instead of hopping for a day."""
    clock = ManualClock()
    wiring = direct_wiring(world, clock)
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    [mark] = world.store.get_slot("api-prod").awaiting_approval
    clock.current = mark.expires_at - timedelta(minutes=30)
    wake = WakeUp("api-prod", mark.expires_at)
    assert wake_lane(wiring, wake) == {"sent_on": 900}

    approvals.approve(wiring, release_id, Person(iam_arn=APPROVER), None)

    assert wake_lane(wiring, wake) == {}

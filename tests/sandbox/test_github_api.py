"""The GitHub look-alike against what GitHub's REST docs say, so that a route that passes here
does what it would do against api.github.com. The documented facts are written out below, with
where they come from; the look-alike is asked over HTTP, as the adapter asks it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.github_api import GithubApi

REPOSITORY = "acme/shop"
TOKEN = "ghp_sandbox"
SHA = "0f1e2d3c4b5a69788796a5b4c3d2e1f001234567"
# docs.github.com/rest/deployments/statuses, "Create a deployment status": state "Can be one of:
# error, failure, inactive, in_progress, queued, pending, success".
DOCUMENTED_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
# The "Deployment" and "Deployment Status" response schemas' required properties (same pages).
DEPLOYMENT_FIELDS = {
    "url",
    "id",
    "node_id",
    "sha",
    "ref",
    "task",
    "payload",
    "environment",
    "description",
    "creator",
    "created_at",
    "updated_at",
    "statuses_url",
    "repository_url",
}
STATUS_FIELDS = {
    "url",
    "id",
    "node_id",
    "state",
    "creator",
    "description",
    "environment",
    "target_url",
    "created_at",
    "updated_at",
    "deployment_url",
    "repository_url",
    "log_url",
    "environment_url",
}
# docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api: every answer says where
# the caller stands on the primary limit.
RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-used",
    "x-ratelimit-reset",
    "x-ratelimit-resource",
}


@pytest.fixture
def github() -> Iterator[GithubApi]:
    with GithubApi() as api:
        yield api


def call(
    github: GithubApi, method: str, path: str, body: Any = None, token: str = TOKEN
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        f"{github.api_url}/repos/{REPOSITORY}/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.load(error)


def create(github: GithubApi, **fields: Any) -> dict[str, Any]:
    status, _, deployment = call(github, "POST", "deployments", {"ref": SHA, **fields})
    assert status == 201, deployment
    return dict(deployment)


def test_a_deployment_and_its_statuses_have_every_documented_field(github: GithubApi) -> None:
    deployment = create(github, environment="shop-prod", payload={"release_id": "r1"})
    assert set(deployment) >= DEPLOYMENT_FIELDS
    assert (deployment["sha"], deployment["environment"], deployment["task"]) == (SHA, "shop-prod", "deploy")
    status, headers, posted = call(
        github, "POST", f"deployments/{deployment['id']}/statuses", {"state": "in_progress", "log_url": "u"}
    )
    assert status == 201
    assert set(posted) >= STATUS_FIELDS
    # "Setting log_url will automatically set target_url to the same value."
    assert posted["target_url"] == posted["log_url"] == "u"
    assert set(headers) >= RATE_LIMIT_HEADERS


def test_every_documented_state_is_taken_and_nothing_else(github: GithubApi) -> None:
    deployment = create(github)
    for state in sorted(DOCUMENTED_STATES):
        status, _, _ = call(github, "POST", f"deployments/{deployment['id']}/statuses", {"state": state})
        assert status == 201, state
    status, _, refused = call(github, "POST", f"deployments/{deployment['id']}/statuses", {"state": "done"})
    assert status == 422
    assert refused["message"] == "Validation Failed"


def test_ref_is_required_and_defaults_are_githubs(github: GithubApi) -> None:
    status, _, refused = call(github, "POST", "deployments", {"environment": "x"})
    assert status == 422
    assert "errors" in refused
    # environment defaults to "production"; a payload given as a JSON string comes back as one.
    deployment = create(github, payload=json.dumps({"release_id": "r2"}))
    assert deployment["environment"] == "production"
    assert deployment["payload"] == {"release_id": "r2"}


def test_list_filters_by_sha_and_environment_newest_first(github: GithubApi) -> None:
    first = create(github, environment="shop-prod")
    second = create(github, environment="shop-prod")
    create(github, environment="shop-stg")
    create(github, ref="1" * 40, environment="shop-prod")
    status, _, listed = call(github, "GET", f"deployments?sha={SHA}&environment=shop-prod")
    assert status == 200
    assert [deployment["id"] for deployment in listed] == [second["id"], first["id"]]


def test_success_makes_earlier_successes_of_a_non_production_environment_inactive(
    github: GithubApi,
) -> None:
    earlier, later = create(github, environment="staging"), create(github, environment="staging")
    for deployment in (earlier, later):
        call(github, "POST", f"deployments/{deployment['id']}/statuses", {"state": "success"})
    by_id = {deployment.id: deployment for deployment in github.deployments()}
    assert by_id[earlier["id"]].states == ["success", "inactive"]
    assert by_id[later["id"]].states == ["success"]


def test_credentials_and_unknown_repositories_are_refused(github: GithubApi) -> None:
    assert call(github, "GET", "deployments", token="wrong")[0] == 401
    assert call(github, "POST", "deployments/999/statuses", {"state": "success"})[0] == 404


def test_rate_limits_answer_with_the_headers_github_documents(github: GithubApi) -> None:
    # Secondary: 403 or 429 with retry-after. Primary: x-ratelimit-remaining 0 and the reset.
    github.rate_limit_next("create_deployment", status=429, retry_after_s=7)
    status, headers, _ = call(github, "POST", "deployments", {"ref": SHA})
    assert (status, headers["retry-after"]) == (429, "7")
    github.rate_limit_next("create_deployment", reset_in_s=30)
    status, headers, refused = call(github, "POST", "deployments", {"ref": SHA})
    assert (status, headers["x-ratelimit-remaining"]) == (403, "0")
    assert 25 <= int(headers["x-ratelimit-reset"]) - time.time() <= 31
    assert "rate limit" in refused["message"]
    assert github.deployments() == []


def test_a_server_error_may_come_after_the_deployment_was_made(github: GithubApi) -> None:
    github.fail_next("create_deployment", 502, takes_effect=True)
    status, _, _ = call(github, "POST", "deployments", {"ref": SHA})
    assert status == 502
    assert len(github.deployments()) == 1

"""The ``github`` notify route end to end on moto against the GitHub look-alike
(``sandbox/github_api.py``): the table's stream and the FIFO notify queue handed to the handlers as
Lambda would (``Pump``), one GitHub deployment per release with its statuses in order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib import bootstrap
from chalicelib.adapters.github import GithubRestApi
from chalicelib.domain.release import ReleaseState
from chalicelib.service.notification_ports import DeliveryDeferred, GithubRepository
from sandbox import moto_extensions
from sandbox.github_api import Deployment, GithubApi
from tests.integration.conftest import PIPELINES_TOML, World
from tests.integration.test_notifications import Pump, upload
from tests.integration.test_verification import fail, run_checks, succeed

REPOSITORY = "acme/shop"
TOKEN_SECRET = "relco/github-token"
# shop-prod's statuses link `relco ui` (its default port) and the app; web-prod's link nothing.
RELEASE_URL = "http://127.0.0.1:8765/#/release/{release_id}"
ENVIRONMENT_URL = "https://shop.acme.example/"
COMMIT = "0123456789abcdef0123"  # what tests.integration.test_notifications.upload attaches
GITHUB_ROUTE = f"""
[[pipeline.notify]]
kind = "github"
repository = "{REPOSITORY}"
token_secret = "{TOKEN_SECRET}"
api_url = "{{api_url}}"
{{links}}"""
SHOP_LINKS = f'release_url = "{RELEASE_URL}"\nenvironment_url = "{ENVIRONMENT_URL}"\n'


@pytest.fixture
def github() -> Iterator[GithubApi]:
    with GithubApi(repositories=[REPOSITORY]) as api:
        yield api


@pytest.fixture
def pipelines_file(tmp_path: Path, github: GithubApi) -> Path:
    """A GitHub route on shop-prod (load balanced: verified by health checks) and on web-prod
    (on_busy = "supersede")."""
    web_prod_route = GITHUB_ROUTE.format(api_url=github.api_url, links="")
    shop_prod_route = GITHUB_ROUTE.format(api_url=github.api_url, links=SHOP_LINKS)
    web_prod_end = 'on_busy = "supersede"\n'
    text = PIPELINES_TOML.replace(web_prod_end, web_prod_end + web_prod_route) + shop_prod_route
    path = tmp_path / "pipelines.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def pump(world: World) -> Pump:
    world.aws("secretsmanager").create_secret(Name=TOKEN_SECRET, SecretString="ghp_sandbox")
    bootstrap.reset()
    return Pump(world)


def deployment_of(github: GithubApi, release_id: str) -> Deployment:
    [deployment] = [d for d in github.deployments() if d.payload.get("release_id") == release_id]
    return deployment


def test_statuses_follow_the_release_in_order(world: World, pump: Pump, github: GithubApi) -> None:
    good, good_deployment = upload(world, "1.0.0")
    assert pump.run() == []
    succeed(world, good_deployment)
    run_checks(world, 1)
    assert world.release(good).state is ReleaseState.SUCCEEDED
    assert pump.run() == []

    bad, bad_deployment = upload(world, "2.0.0")
    assert pump.run() == []
    fail(world, bad_deployment, world.provisioned.load_balanced["shop-prod"].instance_ids[0])
    assert pump.run() == []

    deployment = deployment_of(github, good)
    assert (deployment.sha, deployment.environment) == (COMMIT, "shop-prod")
    assert deployment.states == ["in_progress", "success"]
    assert {(status["log_url"], status["environment_url"]) for status in deployment.statuses} == {
        (RELEASE_URL.replace("{release_id}", good), ENVIRONMENT_URL)
    }
    assert deployment_of(github, bad).states == ["in_progress", "failure"]
    # The automatic rollback redeploys 1.0.0's revision: a release (and deployment) of its own.
    assert len(github.deployments()) == 3


def test_a_release_superseded_while_it_waited_ends_inactive(
    world: World, pump: Pump, github: GithubApi
) -> None:
    releases = []
    for version in ("1", "2", "3"):
        uploaded = world.upload(f"web/prod/web-{version}.zip", metadata={"commit": f"{version * 40}"})
        releases.append(str(world.deliver_upload(uploaded.eventbridge)["releases"][0]["id"]))
    running, superseded, waiting = releases
    assert world.release(superseded).state is ReleaseState.SUPERSEDED
    assert pump.run() == []
    assert deployment_of(github, running).states == ["in_progress"]
    assert deployment_of(github, superseded).states == ["queued", "inactive"]
    assert deployment_of(github, waiting).states == ["queued"]
    # A route without release_url or environment_url sends no link.
    assert {
        (status["log_url"], status["environment_url"])
        for release_id in releases
        for status in deployment_of(github, release_id).statuses
    } == {("", "")}


def test_a_release_without_a_commit_gets_no_deployment(world: World, pump: Pump, github: GithubApi) -> None:
    uploaded = world.upload("web/prod/web-1.zip")
    world.deliver_upload(uploaded.eventbridge)
    assert pump.run() == []
    assert github.deployments() == []


def test_a_short_rate_limit_is_waited_out_and_a_long_one_defers(github: GithubApi) -> None:
    naps: list[float] = []
    api = GithubRestApi(sleep=naps.append)
    repository = GithubRepository(github.api_url, REPOSITORY, "ghp_sandbox")
    github.rate_limit_next("create_deployment", status=429, retry_after_s=1)
    api.create_deployment(repository, COMMIT, "shop-prod", "r1", "release r1")
    assert naps == [1]
    assert [call.status for call in github.calls()] == [429, 201]

    github.rate_limit_next("create_status", status=403, reset_in_s=120)
    with pytest.raises(DeliveryDeferred) as deferred:
        api.post_status(
            repository,
            github.deployments()[0].id,
            "in_progress",
            "deploying",
            log_url=None,
            environment_url=None,
        )
    assert 115 <= deferred.value.retry_after_s <= 121
    assert naps == [1]
    assert github.deployments()[0].states == []


def test_a_rate_limited_delivery_comes_back_when_github_says(
    world: World, pump: Pump, github: GithubApi
) -> None:
    github.rate_limit_next("create_deployment", status=403, retry_after_s=45)
    release, _ = upload(world, "1.0.0")
    pump.publish(pump.stream_records())
    batch = pump.receive()
    assert [r["messageId"] for r in batch] == pump.deliver(batch)
    assert pump.receive() == []  # due in 45 s, which the test does not wait for:
    pump.sqs.change_message_visibility(
        QueueUrl=world.provisioned.notify_queue_url,
        ReceiptHandle=batch[0]["receiptHandle"],
        VisibilityTimeout=0,
    )
    assert pump.run() == []
    assert deployment_of(github, release).states == ["in_progress"]


def test_a_server_error_after_the_deployment_was_made_does_not_make_a_second(
    world: World, pump: Pump, github: GithubApi
) -> None:
    github.fail_next("create_deployment", 502, takes_effect=True)
    release, deployment_id = upload(world, "1.0.0")
    pump.publish(pump.stream_records())
    batch = pump.receive()
    assert [r["messageId"] for r in batch] == pump.deliver(batch)
    assert len(github.deployments()) == 1  # GitHub made it, then answered 502
    pump.sqs.change_message_visibility(  # the retry's backoff, not waited for
        QueueUrl=world.provisioned.notify_queue_url,
        ReceiptHandle=batch[0]["receiptHandle"],
        VisibilityTimeout=0,
    )
    assert pump.run() == []
    succeed(world, deployment_id)
    run_checks(world, 1)
    moto_extensions.clear_target_health()
    assert pump.run() == []
    assert deployment_of(github, release).states == ["in_progress", "success"]
    operations = [call.operation for call in github.calls()]
    assert operations.count("create_deployment") == 1
    assert json.dumps(github.deployments()[0].payload) == json.dumps({"release_id": release})

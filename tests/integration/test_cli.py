"""``relco`` through click's CliRunner against the app served on 127.0.0.1 (Chalice's local
server, in a thread, on a free port) backed by moto in process.

The local server checks no signature (../shared/reference/aws-facts.md): the CLI's SigV4 signing
is checked on the request it builds, in ``test_requests_are_signed_for_execute_api``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.config import Config
from chalice.local import LocalDevServer
from click.testing import CliRunner, Result

from app import app
from infra import iam
from relco.api_client import ApiClient
from relco.cli import main
from sandbox import moto_extensions
from tests.integration.conftest import World
from tests.integration.deploy_guide import ci_policy
from tests.integration.test_release_filters import seed_releases

pytestmark = pytest.mark.filterwarnings("ignore:IAMAuthorizer is not a supported in local mode")

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.fixture
def api_url(world: World) -> Iterator[str]:
    """The app on a free port of 127.0.0.1 for the duration of one test."""
    server = LocalDevServer(app, Config.create(lambda_timeout=60, lambda_memory_size=128), "127.0.0.1", 0)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server.server_address[1]}/"
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def event_pump(world: World) -> Iterator[None]:
    """Delivers S3's Object Created events to on_artifact_event, as the EventBridge rule would."""
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            for body in world._drain(world.provisioned.eventbridge_queue_url):
                world.deliver_upload(body)
            stop.wait(0.2)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


def relco(api_url: str | None, *arguments: str) -> Result:
    prefix = ["--api-url", api_url] if api_url else []
    return CliRunner().invoke(main, [*prefix, *arguments], catch_exceptions=False)


def relco_json(api_url: str, *arguments: str) -> Any:
    result = relco(api_url, *arguments, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def uploaded_release(world: World, key: str) -> str:
    upload = world.upload(key)
    return str(world.deliver_upload(upload.eventbridge)["releases"][0]["id"])


def later(seconds: float, action: Callable[[], None]) -> threading.Thread:
    thread = threading.Timer(seconds, action)
    thread.start()
    return thread


# --- releases, show, deploy, redeploy, rollback, cancel ----------------------------------------


def test_list_and_show_releases(world: World, api_url: str) -> None:
    first = uploaded_release(world, "api/prod/app-1.zip")
    second = uploaded_release(world, "api/prod/app-2.zip")

    listed = relco_json(api_url, "releases", "--pipeline", "api-prod")
    assert [r["id"] for r in listed["releases"]] == [second, first]

    table = relco(api_url, "releases", "--limit", "1")
    assert table.exit_code == 0
    assert second in table.output
    assert "more: relco releases --limit 1 --next " in table.output

    card = relco(api_url, "show", first)
    assert card.exit_code == 0, card.output
    assert f"release     {first}" in card.output
    assert "ExecutionStarted" in card.output
    assert "RECEIVED -> DEPLOYING" in card.output
    assert relco_json(api_url, "show", second)["state"] == "QUEUED"

    pipelines = relco_json(api_url, "pipelines")
    assert {p["name"]: p["active"] for p in pipelines["pipelines"]}["api-prod"] == first


def test_deploy_cancel_redeploy_and_roll_back(world: World, api_url: str) -> None:
    world.upload("api/prod/app-1.zip")
    deployed = relco_json(api_url, "deploy", "api-prod", "api/prod/app-1.zip")
    assert deployed["state"] == "DEPLOYING"
    assert deployed["trigger"] == "api"

    deployment_id = deployed["deployment_id"]
    moto_extensions.complete(deployment_id, "Succeeded")
    world.codedeploy_event(deployment_id, "SUCCESS")

    again = relco(api_url, "redeploy", deployed["id"])
    assert again.exit_code == 0, again.output
    assert "DEPLOYING" in again.output
    assert "follow it: relco watch" in again.output
    redeployed = relco_json(api_url, "releases", "--limit", "1")["releases"][0]

    cancelled = relco(api_url, "cancel", redeployed["id"])
    assert cancelled.exit_code == 0, cancelled.output
    assert "CodeDeploy was asked to stop deployment" in cancelled.output
    moto_extensions.complete(redeployed["deployment_id"], "Stopped")
    world.codedeploy_event(redeployed["deployment_id"], "STOP")

    rollback = relco_json(api_url, "rollback", "api-prod", "--to", deployed["id"])
    assert rollback["trigger"] == "rollback"
    assert rollback["rollback_of"] == redeployed["id"]


def test_break_glass_approve_and_reject_reach_the_api(world: World, api_url: str) -> None:
    world.upload("api/prod/app-1.zip")
    deployed = relco_json(api_url, "deploy", "api-prod", "api/prod/app-1.zip", "--break-glass", "hotfix")
    assert deployed["metadata"]["break_glass"] == "hotfix"
    assert world.history(deployed["id"])[-2].detail["break_glass"]["reason"] == "hotfix"

    # api-prod needs no approval: the API says so, and relco prints it.
    refused = relco(api_url, "approve", deployed["id"], "--comment", "looks good")
    assert refused.exit_code == 1
    assert "HTTP 409" in refused.output
    assert "not awaiting approval" in refused.output
    assert "HTTP 409" in relco(api_url, "reject", deployed["id"]).output
    blank = relco(api_url, "deploy", "api-prod", "api/prod/app-1.zip", "--break-glass", " ")
    assert blank.exit_code == 1
    assert "'break_glass' must be a non-empty string" in blank.output


def test_api_refusals_print_the_api_message(world: World, api_url: str) -> None:
    missing = relco(api_url, "show", "rel-nope")
    assert missing.exit_code == 1
    assert "HTTP 404: no release 'rel-nope'" in missing.output

    outside = relco(api_url, "deploy", "api-prod", "web/prod/a.zip")
    assert outside.exit_code == 1
    assert "HTTP 422" in outside.output
    assert "not under s3://acme-artifacts/api/prod/" in outside.output


def test_fleet_prints_each_instance_with_its_revision_and_health(world: World, api_url: str) -> None:
    from tests.integration.test_verification import verified

    release_id = verified(world, "1.0.0")
    instances = world.provisioned.load_balanced["shop-prod"].instance_ids

    printed = relco(api_url, "fleet", "shop-prod")
    assert printed.exit_code == 0, printed.output
    # The local API server logs its requests to the same output: only the command's lines.
    lines = [line for line in printed.output.splitlines() if line.startswith(("shop-prod", "  "))]
    assert lines[0] == "shop-prod  shop/shop-prod  uniform"
    deployment_id = world.release(release_id).deployment_id
    assert sorted(lines[1:]) == sorted(
        f"  {instance}  1.0.0  release={release_id}  deployment={deployment_id}  healthy"
        for instance in instances
    )
    document = relco_json(api_url, "fleet", "shop-prod")
    assert document["mixed"] is False
    assert {entry["instance_id"] for entry in document["instances"]} == set(instances)

    unknown = relco(api_url, "fleet", "nope")
    assert unknown.exit_code == 1
    assert "HTTP 404" in unknown.output


# --- watch ------------------------------------------------------------------------------------


def test_watch_follows_a_release_to_the_end(world: World, api_url: str) -> None:
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.set_deployment_overview(deployment_id, {"Succeeded": 1, "InProgress": 1})

    def succeed() -> None:
        moto_extensions.set_deployment_overview(deployment_id, {"Succeeded": 2})
        moto_extensions.complete(deployment_id, "Succeeded")
        world.codedeploy_event(deployment_id, "SUCCESS")

    timer = later(0.6, succeed)
    result = relco(api_url, "watch", release_id, "--interval", "0.2", "--timeout", "30")
    timer.join()

    assert result.exit_code == 0, result.output
    assert "1/2 instances done" in result.output
    assert "ExecutionSucceeded" in result.output


def test_watch_exits_1_when_the_release_does_not_succeed(world: World, api_url: str) -> None:
    release_id = uploaded_release(world, "api/prod/app-1.zip")
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    moto_extensions.complete(deployment_id, "Stopped")
    world.codedeploy_event(deployment_id, "STOP")

    result = relco(api_url, "watch", release_id, "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["state"] == "STOPPED"


# --- configuration errors ---------------------------------------------------------------------


def test_releases_filtered_by_state_and_trigger_page_with_the_filters(world: World, api_url: str) -> None:
    seeded = seed_releases(world, "api-prod", 12, offset_s=0) + seed_releases(
        world, "web-prod", 12, offset_s=30
    )
    expected = [
        release.id
        for release in sorted(seeded, key=lambda release: release.created_key, reverse=True)
        if release.pipeline == "api-prod"
        and release.state in ("FAILED", "STOPPED")
        and release.trigger == "upload"
    ]
    assert len(expected) >= 2
    filters = ["--pipeline", "api-prod", "--state", "FAILED,STOPPED", "--trigger", "upload"]

    listed = relco_json(api_url, "releases", *filters)
    assert [release["id"] for release in listed["releases"]] == expected

    # Each "more:" hint repeats the filters: following the hints lists every match once.
    shown: list[str] = []
    arguments = ["releases", *filters, "--limit", "1"]
    while True:
        result = relco(api_url, *arguments)
        assert result.exit_code == 0, result.output
        shown.extend(re.findall(r"rel-[a-z]+-\d+", result.output))
        hint = re.search(r"^more: relco (.+)$", result.output, re.MULTILINE)
        if hint is None:
            break
        assert hint.group(1).startswith(
            "releases --pipeline api-prod --state FAILED,STOPPED --trigger upload --limit 1 "
        )
        arguments = shlex.split(hint.group(1))
    assert shown == expected

    refused = relco(api_url, "releases", "--state", "BROKEN")
    assert refused.exit_code == 1
    assert (
        "query parameter 'state' has an unknown value 'BROKEN'; allowed (case matters): RECEIVED,"
        in refused.output
    )


def test_a_missing_api_url_is_explained(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELCO_API_URL", raising=False)
    result = relco(None, "releases")
    assert result.exit_code == 1
    assert "no API URL: pass --api-url or set RELCO_API_URL" in result.output


def test_missing_credentials_are_explained(
    api_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    result = relco(api_url, "releases")

    assert result.exit_code == 1
    assert "no AWS credentials found" in result.output


def test_an_unreachable_api_is_explained(world: World) -> None:
    result = relco("http://127.0.0.1:9/", "releases")
    assert result.exit_code == 1
    assert "cannot reach the API at http://127.0.0.1:9" in result.output


def test_requests_are_signed_for_execute_api(world: World) -> None:
    client = ApiClient("https://abc123.execute-api.eu-west-1.amazonaws.com/api/")
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/api/releases"
    headers = client.sign("GET", url, None, {"Content-Type": "application/json"})
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "testing"
    assert "X-Amz-Date" in headers


# --- bundles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["local-demo", "docker-ec2"])
def test_bundle_build_zips_the_real_bundles(name: str, tmp_path: Path) -> None:
    output = tmp_path / f"{name}.zip"
    result = relco(None, "bundle", "build", str(BUNDLES / name), "-o", str(output), "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(output)
    with zipfile.ZipFile(output) as archive:
        names = archive.namelist()
        assert "appspec.yml" in names
        start = archive.getinfo("scripts/application_start.sh")
        assert (start.external_attr >> 16) & 0o111, "scripts stay executable"
    relco(None, "bundle", "build", str(BUNDLES / name), "-o", str(tmp_path / "again.zip"))
    assert (tmp_path / "again.zip").read_bytes() == output.read_bytes(), "same files, same zip"


def copied_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "local-demo"
    shutil.copytree(BUNDLES / "local-demo", bundle)
    return bundle


def test_bundle_build_names_a_missing_hook_script(tmp_path: Path) -> None:
    bundle = copied_bundle(tmp_path)
    (bundle / "scripts" / "validate_service.sh").unlink()

    result = relco(None, "bundle", "build", str(bundle), "-o", str(tmp_path / "out.zip"))

    assert result.exit_code == 1
    assert (
        "hook ValidateService: script scripts/validate_service.sh does not exist in the bundle"
        in result.output
    )
    assert not (tmp_path / "out.zip").exists()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda b: (b / "scripts" / "before_install.sh").chmod(0o644),
            "scripts/before_install.sh is not executable",
        ),
        (lambda b: (b / "appspec.yml").unlink(), "appspec.yml is missing"),
        (lambda b: _edit(b, "version: 0.0", "version: 1.0"), "version must be 0.0"),
        (lambda b: _edit(b, "os: linux", "os: windows"), "os must be linux"),
        (
            lambda b: _edit(b, "  BeforeInstall:", "  BeforeInstal:"),
            "hook BeforeInstal: not a lifecycle hook",
        ),
        (lambda b: _edit(b, "  BeforeInstall:", "  Install:"), "hook Install: CodeDeploy runs it itself"),
        (lambda b: _edit(b, "timeout: 120", "timeout: 7200"), "timeout must be 1 to 3600"),
        (lambda b: _edit(b, "hooks:", "hooks: [\n"), "not valid YAML"),
    ],
)
def test_bundle_build_rejects_invalid_bundles(
    tmp_path: Path, change: Callable[[Path], Any], says: str
) -> None:
    bundle = copied_bundle(tmp_path)
    change(bundle)
    result = relco(None, "bundle", "build", str(bundle), "-o", str(tmp_path / "out.zip"))
    assert result.exit_code == 1
    assert says in result.output


def _edit(bundle: Path, old: str, new: str) -> None:
    appspec = bundle / "appspec.yml"
    text = appspec.read_text()
    assert old in text
    appspec.write_text(text.replace(old, new, 1))


def test_bundle_push_uploads_with_git_metadata_and_prints_the_release(
    world: World, api_url: str, event_pump: None, tmp_path: Path
) -> None:
    bundle = copied_bundle(tmp_path)
    for command in (
        ["init", "-q"],
        [
            "-c",
            "user.name=Ada Lovelace",
            "-c",
            "user.email=ada@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "Ship it",
        ],
    ):
        subprocess.run(["git", "-C", str(bundle), *command], check=True, capture_output=True)
    commit = subprocess.run(
        ["git", "-C", str(bundle), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    )
    committed_at = subprocess.run(
        ["git", "-C", str(bundle), "log", "-1", "--format=%cI"], check=True, capture_output=True, text=True
    )

    started = time.monotonic()
    result = relco(
        api_url, "bundle", "push", str(bundle), "--pipeline", "api-prod", "--version-label", "v1.2", "--json"
    )

    assert result.exit_code == 0, result.output
    release = json.loads(result.stdout)
    assert release["revision"]["key"] == "api/prod/local-demo-v1.2.zip"
    assert release["trigger"] == "upload"
    assert release["metadata"] == {
        "commit": commit.stdout.strip(),
        "author": "Ada Lovelace <ada@example.com>",
        "message": "Ship it",
        "commit_time": committed_at.stdout.strip(),
        "version_label": "v1.2",
    }
    assert release["state"] == "DEPLOYING"
    assert "uploading s3://acme-artifacts/api/prod/local-demo-v1.2.zip" in result.stderr
    assert time.monotonic() - started < 30


def test_bundle_push_says_when_no_release_appears(world: World, api_url: str, tmp_path: Path) -> None:
    bundle = copied_bundle(tmp_path)
    result = relco(api_url, "bundle", "push", str(bundle), "--pipeline", "api-prod", "--wait", "1")
    assert result.exit_code == 1
    assert "no release of pipeline 'api-prod' appeared within 1 s" in result.output


# The API's ARN prefix as the guide's CI policy spells it (its placeholders for region, account, id).
GUIDE_API_ARN = "arn:aws:execute-api:eu-west-1:111122223333:API_ID/api"


def test_bundle_push_needs_only_what_the_deploy_guide_grants_ci(
    world: World, api_url: str, event_pump: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every S3 call and API request `relco bundle push` makes is allowed by exactly the policy
    docs/deploy.md gives CI (read from the guide), as IAM authorizes it (infra.iam: HeadObject is
    s3:GetObject, or s3:GetObjectVersion with a version id; an API request is execute-api:Invoke
    on .../<stage>/<METHOD>/<path>)."""
    s3_calls: list[tuple[str, dict[str, Any]]] = []
    session = boto3.session.Session()
    session.events.register(
        "before-parameter-build.s3",
        lambda params, model, **_: s3_calls.append((str(model.name), dict(params))),
    )
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    api_requests: list[iam.Request] = []
    original_call = ApiClient.call

    def recorded_call(self: ApiClient, method: str, path: str, **kwargs: Any) -> Any:
        api_requests.append(iam.Request("execute-api:Invoke", f"{GUIDE_API_ARN}/{method}{path}"))
        return original_call(self, method, path, **kwargs)

    monkeypatch.setattr(ApiClient, "call", recorded_call)

    result = relco(
        api_url, "bundle", "push", str(copied_bundle(tmp_path)), "--pipeline", "api-prod", "--json"
    )

    assert result.exit_code == 0, result.output
    release = json.loads(result.stdout)
    stored = world.session.client("s3").head_object(Bucket="acme-artifacts", Key=release["revision"]["key"])
    assert release["revision"]["version"] == stored["VersionId"], "the release is of the uploaded version"
    assert release["revision"]["etag"] == stored["ETag"].strip('"')
    requests = [r for op, params in s3_calls for r in iam.requests_for_call("s3", op, params)] + api_requests
    assert iam.denied(ci_policy()["Statement"], requests) == []
    assert {r.action for r in requests} == {"s3:PutObject", "execute-api:Invoke"}, requests

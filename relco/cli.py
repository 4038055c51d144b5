"""``relco``: releases from the terminal and from CI, through the Release Coordinator API.

Every command prints for people, or one JSON document with ``--json``. Errors (no API URL, no
credentials, an API refusal with the API's message, an invalid bundle) exit 1 with the reason.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import click

from appspec import check_bundle
from relco import timeline
from relco.api_client import ApiClient, ApiRefused, ClientProblem
from relco.bundle import InvalidBundle, build_bundle

TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED", "SUPERSEDED"})
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
idempotency_option = click.option(
    "--idempotency-key",
    default=None,
    help="Send this Idempotency-Key (default: a fresh one per command; reuse one to retry safely).",
)
break_glass_option = click.option(
    "--break-glass",
    "break_glass",
    metavar="REASON",
    default=None,
    help="Start even during a freeze or with an alarm in ALARM; the reason is recorded with you.",
)
# S3 user metadata travels in HTTP headers: ASCII only, and kept short.
_METADATA_LIMIT = 512


@click.group()
@click.option("--api-url", envvar="RELCO_API_URL", help="The API's URL (or set RELCO_API_URL).")
@click.option("--region", envvar="RELCO_REGION", help="Region to sign for (default: from the API URL).")
@click.pass_context
def main(ctx: click.Context, api_url: str | None, region: str | None) -> None:
    """Deploy, redeploy, roll back, cancel and watch releases."""
    ctx.obj = {"api_url": api_url, "region": region}


def _client(ctx: click.Context) -> ApiClient:
    obj = ctx.find_root().obj
    return ApiClient(obj["api_url"], obj["region"])


@contextmanager
def _errors() -> Iterator[None]:
    """The CLI's failures, said plainly: no traceback for a refusal or a missing setting."""
    try:
        yield
    except (ClientProblem, ApiRefused, InvalidBundle) as problem:
        raise click.ClickException(str(problem)) from None


def _emit(as_json: bool, document: Any, text: Callable[[], str]) -> None:
    click.echo(json.dumps(document, indent=2) if as_json else text())


def _path_id(value: str) -> str:
    return quote(value, safe="")


@main.command()
@click.option("--pipeline", help="Only this pipeline's releases.")
@click.option("--state", help="Only releases in these states, separated by commas: FAILED,STOPPED.")
@click.option(
    "--trigger", help="Only releases these triggers started, separated by commas: rollback,auto_rollback."
)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--next", "next_token", help="The token a previous page gave.")
@json_option
@click.pass_context
def releases(
    ctx: click.Context,
    *,
    pipeline: str | None,
    state: str | None,
    trigger: str | None,
    limit: int,
    next_token: str | None,
    as_json: bool,
) -> None:
    """Releases, newest first. With --state or --trigger the API filters and a page may hold fewer
    than --limit releases and still have a next one (a page examines at most 500 releases, or
    --limit + 1 of each pipeline when that is more)."""
    query = {"pipeline": pipeline, "state": state, "trigger": trigger}
    with _errors():
        page = _client(ctx).get("/releases", {**query, "limit": limit, "next": next_token})

    def text() -> str:
        if not page.get("next"):
            return timeline.release_table(page["releases"])
        # The token is a position only: the next page needs the same options to list the same kind.
        options = [f"--{name} {shlex.quote(value)}" for name, value in query.items() if value is not None]
        more = " ".join(["relco releases", *options, f"--limit {limit}", f"--next {page['next']}"])
        return timeline.release_table(page["releases"]) + f"\nmore: {more}"

    _emit(as_json, page, text)


@main.command()
@click.argument("pipeline", required=False)
@click.option(
    "--days", type=click.IntRange(1, 365), default=30, show_default=True, help="The window: the last N days."
)
@json_option
@click.pass_context
def stats(ctx: click.Context, pipeline: str | None, days: int, as_json: bool) -> None:
    """DORA metrics of PIPELINE (default: every pipeline) over the last --days days: deployment
    frequency, lead time for changes, change failure rate, time to restore (docs/stats.md)."""
    with _errors():
        found = _client(ctx).get("/stats", {"pipeline": pipeline, "days": days})

    def text() -> str:
        return "\n\n".join(
            _stats_text(figures, found["days"], one_pipeline=pipeline is not None)
            for figures in found["pipelines"]
        )

    _emit(as_json, found, text)


def _stats_text(figures: Mapping[str, Any], days: int, *, one_pipeline: bool) -> str:
    frequency = figures["deployment_frequency"]
    lead = figures["lead_time"]
    failures = figures["change_failure_rate"]
    restore = figures["time_to_restore"]
    rate = "-" if failures["rate"] is None else f"{failures['rate']:.0%}"
    return "\n".join(
        [
            f"{figures['pipeline']}: last {days} days, {figures['releases']} releases",
            *_partial_note(figures, one_pipeline=one_pipeline),
            f"  deployment frequency  {frequency['per_day']:.2f}/day ({frequency['deployments']} verified)",
            f"  lead time             median {_duration(lead['median_s'])}, p90 {_duration(lead['p90_s'])}"
            f" ({lead['count']} changes)",
            f"  change failure rate   {rate} ({failures['failures']} of {failures['reached_deployment']})",
            f"  time to restore       median {_duration(restore['median_s'])},"
            f" p90 {_duration(restore['p90_s'])}"
            f" ({restore['count']} restored, {restore['unrestored']} not yet)",
        ]
    )


def _partial_note(figures: Mapping[str, Any], *, one_pipeline: bool) -> list[str]:
    """A line when the API's bound on the releases one request reads stopped this pipeline's read
    before the window's start (docs/stats.md): its figures are then over the newest part only."""
    # A coordinator older than the bound answers no covered_since: its figures cover the window.
    if figures.get("covered_since", figures["since"]) == figures["since"]:
        return []
    covered = datetime.fromisoformat(figures["covered_since"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    narrower = "fewer --days" if one_pipeline else f"`relco stats {figures['pipeline']}` or fewer --days"
    return [f"  partial: the figures cover only since {covered}, the read was bounded; ask {narrower}"]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


@main.command()
@json_option
@click.pass_context
def pipelines(ctx: click.Context, as_json: bool) -> None:
    """Pipelines with their active, waiting and last good releases, and their freezes."""
    with _errors():
        listed = _client(ctx).get("/pipelines")

    def text() -> str:
        return "\n".join(
            f"{p['name']}  s3://{p['bucket']}/{p['prefix']}  active={p['active'] or '-'}  "
            f"waiting={len(p['waiting'])}  last_good={p['last_good'] or '-'}{_freeze_note(p.get('freeze'))}"
            for p in listed["pipelines"]
        )

    _emit(as_json, listed, text)


@main.command()
@click.argument("name")
@json_option
@click.pass_context
def fleet(ctx: click.Context, name: str, as_json: bool) -> None:
    """Each instance of pipeline NAME's deployment group with the revision it last received and
    its target health, and whether the fleet runs mixed revisions."""
    with _errors():
        found = _client(ctx).get(f"/pipelines/{_path_id(name)}/fleet")

    def text() -> str:
        lines = [
            f"{found['pipeline']}  {found['application']}/{found['deployment_group']}  "
            + (f"MIXED: {found['revisions']} revisions" if found["mixed"] else "uniform")
        ]
        for instance in found["instances"]:
            revision = instance["revision"]
            runs = instance["version_label"] or (revision["key"].rsplit("/", 1)[-1] if revision else "-")
            health = ",".join(entry["state"] for entry in instance["health"]) or "not registered"
            lines.append(
                f"  {instance['instance_id']}  {runs}  release={instance['release_id'] or '-'}  "
                f"deployment={instance['deployment_id'] or '-'}  {health}"
            )
        return "\n".join(lines)

    _emit(as_json, found, text)


@main.command()
@json_option
@click.pass_context
def env(ctx: click.Context, as_json: bool) -> None:
    """Each promotion chain, stage by stage: the revision each pipeline runs (its last good
    release), how long ago it was verified, and what is deploying there."""
    with _errors():
        listed = _client(ctx).get("/pipelines")
    stages = listed["pipelines"]

    def text() -> str:
        now = datetime.now(UTC)
        by_upstream: dict[str | None, list[Mapping[str, Any]]] = {}
        for stage in stages:
            by_upstream.setdefault(stage["promotion"]["promote_from"], []).append(stage)
        lines: list[str] = []

        def show(stage: Mapping[str, Any], depth: int) -> None:
            lines.append("  " * depth + ("└ " if depth else "") + _stage_line(stage, now))
            for child in by_upstream.get(stage["name"], []):
                show(child, depth + 1)

        for root in by_upstream.get(None, []):
            show(root, 0)
        return "\n".join(lines)

    _emit(as_json, {"stages": stages}, text)


def _stage_line(stage: Mapping[str, Any], now: datetime) -> str:
    promotion = stage["promotion"]
    running = promotion["running"]
    if running is None:
        runs = "runs nothing verified yet"
    else:
        label = running["version_label"] or running["revision"]["key"]
        verified = running["verified_at"]
        ago = f", verified {_ago(now - datetime.fromisoformat(verified))} ago" if verified else ""
        runs = f"runs {label} ({running['release_id']}, version {running['revision']['version']}{ago})"
    how = ""
    if promotion["promote_from"]:
        upstream, mode, soak = promotion["promote_from"], promotion["promote"], promotion["soak_s"]
        how = f"  [promotes from {upstream}: {mode}, soak {soak}s]"
    active = f"  deploying {stage['active']}" if stage["active"] else ""
    return f"{stage['name']}: {runs}{active}{how}"


def _ago(elapsed: timedelta) -> str:
    seconds = max(0, int(elapsed.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


@main.command()
@click.argument("pipeline")
@click.option(
    "--release", "release_id", help="A release the upstream pipeline verified (default: its last good one)."
)
@idempotency_option
@json_option
@click.pass_context
def promote(
    ctx: click.Context, pipeline: str, release_id: str | None, idempotency_key: str | None, as_json: bool
) -> None:
    """Promote the upstream pipeline's last good release (or --release) into PIPELINE now."""
    with _errors():
        release = _client(ctx).post(
            f"/pipelines/{_path_id(pipeline)}/promote",
            {"release": release_id} if release_id else None,
            idempotency_key or str(uuid.uuid4()),
        )
    _started(as_json, release)


def _freeze_note(freeze: Mapping[str, Any] | None) -> str:
    """`  frozen until <end> (<reason>)`, or the next freeze, or nothing."""
    if not freeze:
        return ""
    if freeze.get("current"):
        current = freeze["current"]
        return f"  frozen until {current['ends_at']} ({current['reason']})"
    if freeze.get("next"):
        upcoming = freeze["next"]
        return f"  next freeze {upcoming['starts_at']} to {upcoming['ends_at']} ({upcoming['reason']})"
    return ""


@main.command()
@click.argument("release_id")
@json_option
@click.pass_context
def show(ctx: click.Context, release_id: str, as_json: bool) -> None:
    """A release and its history as a timeline."""
    with _errors():
        release = _client(ctx).get(f"/releases/{_path_id(release_id)}")
    _emit(as_json, release, lambda: timeline.release_card(release))


def _started(as_json: bool, release: Mapping[str, Any]) -> None:
    _emit(
        as_json, release, lambda: timeline.release_line(release) + f"\nfollow it: relco watch {release['id']}"
    )


@main.command()
@click.argument("pipeline")
@click.argument("key")
@click.option("--version", "version_id", help="An S3 version id of the object (default: the current one).")
@break_glass_option
@idempotency_option
@json_option
@click.pass_context
def deploy(
    ctx: click.Context,
    *,
    pipeline: str,
    key: str,
    version_id: str | None,
    break_glass: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Deploy an object of PIPELINE that is already in S3."""
    body = {
        "pipeline": pipeline,
        "key": key,
        **({"version": version_id} if version_id else {}),
        **({"break_glass": break_glass} if break_glass is not None else {}),
    }
    with _errors():
        release = _client(ctx).post("/releases", body, idempotency_key or str(uuid.uuid4()))
    _started(as_json, release)


@main.command()
@click.argument("release_id")
@break_glass_option
@idempotency_option
@json_option
@click.pass_context
def redeploy(
    ctx: click.Context, release_id: str, break_glass: str | None, idempotency_key: str | None, as_json: bool
) -> None:
    """Deploy a finished release's revision again."""
    with _errors():
        release = _client(ctx).post(
            f"/releases/{_path_id(release_id)}/redeploy",
            {"break_glass": break_glass} if break_glass is not None else None,
            idempotency_key or str(uuid.uuid4()),
        )
    _started(as_json, release)


@main.command()
@click.argument("release_id")
@click.option("--comment", help="Why: recorded in the release's history with you as the approver.")
@json_option
@click.pass_context
def approve(ctx: click.Context, release_id: str, comment: str | None, as_json: bool) -> None:
    """Approve a release awaiting approval: it takes its pipeline's slot or its place in line."""
    _decide_approval(ctx, release_id, "approve", comment, as_json)


@main.command()
@click.argument("release_id")
@click.option("--comment", help="Why: recorded in the release's history with you as the rejecter.")
@json_option
@click.pass_context
def reject(ctx: click.Context, release_id: str, comment: str | None, as_json: bool) -> None:
    """Reject a release awaiting approval: it stops."""
    _decide_approval(ctx, release_id, "reject", comment, as_json)


def _decide_approval(
    ctx: click.Context, release_id: str, decision: str, comment: str | None, as_json: bool
) -> None:
    with _errors():
        release = _client(ctx).post(
            f"/releases/{_path_id(release_id)}/{decision}",
            {"comment": comment} if comment else None,
            str(uuid.uuid4()),
        )
    _emit(as_json, release, lambda: timeline.release_line(release) + f"\n{release['reason']}")


@main.command()
@click.argument("pipeline")
@click.option("--to", "target", help="A SUCCEEDED release to go back to (default: the last good one).")
@idempotency_option
@json_option
@click.pass_context
def rollback(
    ctx: click.Context, pipeline: str, target: str | None, idempotency_key: str | None, as_json: bool
) -> None:
    """Roll PIPELINE back to its last good release, or to --to."""
    with _errors():
        release = _client(ctx).post(
            f"/pipelines/{_path_id(pipeline)}/rollback",
            {"to": target} if target else None,
            idempotency_key or str(uuid.uuid4()),
        )
    _started(as_json, release)


@main.command()
@click.argument("release_id")
@json_option
@click.pass_context
def cancel(ctx: click.Context, release_id: str, as_json: bool) -> None:
    """Stop a waiting or verifying release; ask CodeDeploy to stop a deploying one."""
    with _errors():
        release = _client(ctx).post(f"/releases/{_path_id(release_id)}/cancel", None, str(uuid.uuid4()))

    def text() -> str:
        if release["state"] == "DEPLOYING":
            return f"{release['id']}: CodeDeploy was asked to stop deployment {release['deployment_id']}"
        return f"{release['id']}: {release['state']} ({release['reason']})"

    _emit(as_json, release, text)


@main.command()
@click.argument("release_id")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 60),
    default=5.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.option(
    "--timeout", type=click.FloatRange(1), default=3600.0, show_default=True, help="Give up after this long."
)
@json_option
@click.pass_context
def watch(ctx: click.Context, release_id: str, interval: float, timeout: float, as_json: bool) -> None:
    """Follow a release until it ends; exit 0 only if it SUCCEEDED."""
    with _errors():
        client = _client(ctx)
        deadline = time.monotonic() + timeout
        shown: set[str] = set()
        while True:
            release = client.get(f"/releases/{_path_id(release_id)}")
            if not as_json:
                for line in _news(release, shown):
                    click.echo(line)
            if release["state"] in TERMINAL_STATES:
                break
            if time.monotonic() >= deadline:
                raise click.ClickException(
                    f"release {release_id} is still {release['state']} after {timeout:.0f} s"
                )
            time.sleep(interval)
    if as_json:
        click.echo(json.dumps(release, indent=2))
    elif release["reason"]:
        click.echo(f"{release['id']} {release['state']}: {release['reason']}")
    ctx.exit(0 if release["state"] == "SUCCEEDED" else 1)


def _news(release: Mapping[str, Any], shown: set[str]) -> list[str]:
    """History events and progress not printed yet."""
    lines = []
    for event in release.get("history") or []:
        marker = f"event {event['id']}"
        if marker not in shown:
            shown.add(marker)
            lines.append(timeline.history_line(event))
    progress = timeline.progress_line(release)
    if progress and progress not in shown:
        shown.add(progress)
        lines.append(f"        {progress}")
    return lines


@main.group()
def bundle() -> None:
    """Build and upload CodeDeploy bundles."""


@bundle.command("build")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Zip to write (default: <directory name>.zip in the current directory).",
)
@json_option
def bundle_build(directory: Path, output: Path | None, as_json: bool) -> None:
    """Check DIRECTORY's appspec.yml (version, os, hooks, scripts present and executable), then zip it."""
    with _errors():
        built = build_bundle(directory, output or Path(f"{directory.resolve().name}.zip"))
    _emit(
        as_json,
        built.to_dict(),
        lambda: f"{built.path}: {built.files} files, {built.size} bytes, sha256 {built.sha256}",
    )


@bundle.command("push")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--pipeline", required=True, help="The pipeline to deploy with.")
@click.option("--bucket", help="Upload bucket (default: the pipeline's, from the API).")
@click.option("--prefix", help="Key prefix (default: the pipeline's, from the API).")
@click.option("--version-label", help="Label for this build (default: git describe, else a timestamp).")
@click.option(
    "--wait",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the release.",
)
@json_option
@click.pass_context
def bundle_push(
    ctx: click.Context,
    *,
    directory: Path,
    pipeline: str,
    bucket: str | None,
    prefix: str | None,
    version_label: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """Build DIRECTORY, upload it under the pipeline's prefix with git metadata, and print the
    release the upload started."""
    with _errors():
        problems = check_bundle(directory)
        if problems:
            raise InvalidBundle(directory, problems)
        client = _client(ctx)
        if bucket is None or prefix is None:
            configured = client.get(f"/pipelines/{_path_id(pipeline)}")
            bucket = bucket or configured["bucket"]
            prefix = configured["prefix"] if prefix is None else prefix
        git = _git_facts(directory)
        label = _label(version_label or git.get("describe") or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
        key = f"{prefix}{directory.resolve().name}-{label}.zip"
        metadata = {
            name: _ascii(value)
            for name, value in {**git, "version-label": label}.items()
            if name != "describe"
        }
        with tempfile.TemporaryDirectory() as scratch:
            built = build_bundle(directory, Path(scratch) / "bundle.zip")
            version, etag = _upload(built.path, str(bucket), key, metadata)
        release = _await_release(client, pipeline, key=key, version=version, etag=etag, wait=wait)
    _started(as_json, release)


def _git_facts(directory: Path) -> dict[str, str]:
    """Commit, author, subject and commit time of HEAD where DIRECTORY is in a git work tree
    (else nothing)."""

    def git(*arguments: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *arguments],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None

    facts = {
        "commit": git("rev-parse", "HEAD"),
        "author": git("log", "-1", "--format=%an <%ae>"),
        "message": git("log", "-1", "--format=%s"),
        # Where DORA's lead time for changes starts (strict ISO 8601 with its offset).
        "commit-time": git("log", "-1", "--format=%cI"),
        "describe": git("describe", "--always", "--dirty"),
    }
    return {name: value for name, value in facts.items() if value}


def _label(raw: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-")[:100] or "build"


def _ascii(value: str) -> str:
    return value.encode("ascii", "replace").decode("ascii").replace("\n", " ")[:_METADATA_LIMIT]


def _upload(path: Path, bucket: str, key: str, metadata: Mapping[str, str]) -> tuple[str | None, str]:
    """Upload with one PutObject (progress bar on stderr); the version and eTag are PutObject's own
    answer. Asking S3 again (HeadObject) would need s3:GetObject, or s3:GetObjectVersion with the
    version id, on top of the s3:PutObject that CI's policy in docs/deploy.md grants."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = boto3.client("s3")
    size = path.stat().st_size
    try:
        with (
            click.progressbar(length=size, label=f"uploading s3://{bucket}/{key}", file=sys.stderr) as bar,
            path.open("rb") as body,
        ):
            answer = s3.put_object(
                Bucket=bucket, Key=key, Body=_ReadProgress(body, bar.update), Metadata=dict(metadata)
            )
    except (BotoCoreError, ClientError) as error:
        raise ClientProblem(f"upload to s3://{bucket}/{key} failed: {error}") from None
    version = answer.get("VersionId")
    return (version if version and version != "null" else None), str(answer.get("ETag", "")).strip('"')


class _ReadProgress:
    """The bundle file, reporting how far into it the upload has read. The SDK may read it more than
    once (a checksum or payload signature before sending, a retry): progress is the furthest point."""

    def __init__(self, file: BinaryIO, advance: Callable[[int], None]) -> None:
        self._file = file
        self._advance = advance
        self._furthest = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        position = self._file.tell()
        if position > self._furthest:
            self._advance(position - self._furthest)
            self._furthest = position
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


def _await_release(
    client: ApiClient, pipeline: str, *, key: str, version: str | None, etag: str, wait: float
) -> Mapping[str, Any]:
    """The release the upload started, once the coordinator has recorded it."""
    deadline = time.monotonic() + wait
    while True:
        page = client.get("/releases", {"pipeline": pipeline, "limit": 20})
        for release in page["releases"]:
            revision = release["revision"]
            if revision["key"] == key and (
                revision["version"] == version if version else revision["etag"] == etag
            ):
                return dict(release)
        if time.monotonic() >= deadline:
            raise ClientProblem(
                f"uploaded {key}, but no release of pipeline {pipeline!r} appeared within {wait:.0f} s: "
                "check that the bucket sends Object Created events to the coordinator"
            )
        time.sleep(1)


@main.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
@click.pass_context
def ui(ctx: click.Context, port: int) -> None:
    """Serve the release dashboard on 127.0.0.1; its API calls go to the coordinator signed with
    your AWS credentials, which never reach the browser. Runs until Ctrl-C."""
    from relco.ui import DashboardServer

    with _errors():
        client = _client(ctx)
    try:
        server = DashboardServer(client, port)
    except OSError as error:
        raise click.ClickException(f"cannot serve on 127.0.0.1:{port}: {error.strerror}") from None
    click.echo(f"Release dashboard: {server.url} (Ctrl-C stops it)")
    with server, suppress(KeyboardInterrupt):
        server.serve_forever()


@main.command()
@click.option("--instances", type=click.IntRange(2, 8), default=2, show_default=True, help="Local instances.")
@json_option
def demo(instances: int, as_json: bool) -> None:
    """Run the release flow on the embedded sandbox: v1, v2 under steady traffic, a broken v3
    that fails and rolls back; then print what happened (no AWS account needed)."""
    from sandbox.demo import main as run_demo

    sys.exit(run_demo(as_json=as_json, instances=instances))


@main.group()
def sandbox() -> None:
    """The embedded default: the whole coordinator offline on this machine."""


@sandbox.command("up")
@click.option("--instances", type=click.IntRange(2, 8), default=2, show_default=True, help="Local instances.")
@json_option
def sandbox_up(instances: int, as_json: bool) -> None:
    """Start the sandbox, print its endpoints and the dashboard's URL (one JSON line with --json) and
    run until SIGINT or SIGTERM, then stop every process it started."""
    from relco.ui import DashboardServer
    from sandbox.serve import serve

    dashboards: list[DashboardServer] = []

    def open_dashboard(api_url: str) -> dict[str, str]:
        """`relco ui` beside the sandbox, on a free port: its URL joins the ready line."""
        dashboard = DashboardServer(ApiClient(api_url), 0).serve_in_thread()
        dashboards.append(dashboard)
        return {"dashboard_url": dashboard.url}

    try:
        sys.exit(serve(as_json=as_json, instances=instances, on_ready=open_dashboard))
    finally:
        for dashboard in dashboards:
            dashboard.stop()

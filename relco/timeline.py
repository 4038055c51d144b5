"""Releases as people read them in a terminal: one line per release, a history as a timeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

# History details worth a glance on the timeline; the rest is in --json.
_DETAIL_KEYS = (
    "reason",
    "trigger",
    "actor",
    "task",
    "deployment_id",
    "error",
    "cause",
    "position",
    "superseded_by",
    "rollback_release_id",
    "auto_rollback",
)
_BAR_WIDTH = 20


def _time(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def release_line(release: Mapping[str, Any]) -> str:
    revision = release.get("revision") or {}
    return "  ".join(
        [
            str(release["id"]),
            str(release["pipeline"]),
            f"{release['state']:<10}",
            f"{release['trigger']:<13}",
            _time(release.get("created_at")),
            f"s3://{revision.get('bucket')}/{revision.get('key')}",
        ]
    )


def release_table(releases: Sequence[Mapping[str, Any]]) -> str:
    if not releases:
        return "no releases"
    return "\n".join(release_line(release) for release in releases)


def release_card(release: Mapping[str, Any]) -> str:
    """A release's facts, then its history oldest first."""
    revision = release.get("revision") or {}
    lines = [
        f"release     {release['id']}",
        f"pipeline    {release['pipeline']} ({release['application']}/{release['deployment_group']})",
        f"state       {release['state']}" + (f": {release['reason']}" if release.get("reason") else ""),
        f"trigger     {release['trigger']}" + (f" by {release['actor']}" if release.get("actor") else ""),
        f"revision    s3://{revision.get('bucket')}/{revision.get('key')}"
        + (f" version {revision['version']}" if revision.get("version") else "")
        + (f" etag {revision['etag']}" if revision.get("etag") else ""),
    ]
    if release.get("deployment_id"):
        lines.append(f"deployment  {release['deployment_id']}")
    if release.get("rollback_of"):
        lines.append(f"rolls back  {release['rollback_of']}")
    for name, value in sorted((release.get("metadata") or {}).items()):
        lines.append(f"{name:<11} {value}")
    progress = progress_line(release)
    if progress:
        lines.append(f"progress    {progress}")
    history = release.get("history") or []
    if history:
        lines.append("")
        lines.append("history")
        lines.extend(history_line(event) for event in history)
    return "\n".join(lines)


def history_line(event: Mapping[str, Any]) -> str:
    detail = event.get("detail") or {}
    shown = [f"{key}={detail[key]}" for key in _DETAIL_KEYS if detail.get(key) not in (None, "", [])]
    if "from" in detail:
        shown.insert(0, f"{detail['from']} -> {event['state']}")
    return (
        f"  #{event['id']:<3} {_time(event.get('timestamp'))}  {event['type']:<19} {event['state']:<10} "
        + ", ".join(shown)
    )


def progress_line(release: Mapping[str, Any]) -> str | None:
    """``[#####.....] 1/2 instances`` while deploying, the healthy streak while verifying."""
    progress = release.get("progress") or {}
    if progress.get("phase") == "deploying" and progress.get("instances_total"):
        done, total = int(progress.get("instances_done", 0)), int(progress["instances_total"])
        return f"{_bar(done, total)} {done}/{total} instances done ({progress.get('deployment_status')})"
    if progress.get("phase") == "verifying":
        done, needed = int(progress.get("checks_done", 0)), int(progress.get("checks_needed", 1))
        return f"{_bar(done, needed)} {done}/{needed} healthy checks"
    return None


def _bar(done: int, total: int) -> str:
    filled = round(_BAR_WIDTH * min(done, total) / total) if total else 0
    return "[" + "#" * filled + "." * (_BAR_WIDTH - filled) + "]"

"""The CodeDeploy ``appspec.yml`` of an EC2/on-premises in-place deployment, and its lifecycle.

One home for what ``relco bundle`` checks before a bundle leaves the machine and what the
sandbox's CodeDeploy agent runs on the instances: the lifecycle events in CodeDeploy's order, the
hooks that take scripts, reading the appspec, where its ``files`` are copied, and the checks that
otherwise fail only on the instances, mid-deployment (a hook CodeDeploy does not know, a script
missing or not executable).
It depends on neither ``relco`` nor ``sandbox``, so both import it without importing each other.
"""

from __future__ import annotations

import importlib
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# CodeDeploy reads the appspec of an EC2/on-premises revision from this name at the bundle's root.
APPSPEC = "appspec.yml"
# The lifecycle of an EC2/on-premises in-place deployment behind a load balancer, in the order
# CodeDeploy runs it.
LIFECYCLE_EVENTS = (
    "BeforeBlockTraffic",
    "BlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AllowTraffic",
    "AfterAllowTraffic",
)
# CodeDeploy runs these itself; an appspec may not attach scripts to them.
RESERVED_HOOKS = ("DownloadBundle", "Install", "BlockTraffic", "AllowTraffic")
# The hooks that run the bundle's scripts, in order.
SCRIPT_HOOKS = tuple(event for event in LIFECYCLE_EVENTS if event not in RESERVED_HOOKS)
# These run the scripts of the last revision that succeeded on the instance (none on a first
# deploy); ignoreApplicationStopFailures applies to them.
PREVIOUS_REVISION_HOOKS = frozenset({"BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop"})
# A hook script's timeout in seconds: the default when the appspec names none, and the maximum.
MAX_HOOK_TIMEOUT_S = 3600
_TOP_LEVEL = ("version", "os", "files", "permissions", "hooks", "file_exists_behavior")
_FILE_EXISTS = ("DISALLOW", "OVERWRITE", "RETAIN")


class AppSpecError(ValueError):
    """The appspec cannot be read: missing, not YAML, or not shaped as CodeDeploy reads it."""


@dataclass(frozen=True)
class HookScript:
    location: str
    timeout_s: float
    runas: str


@dataclass(frozen=True)
class FileMapping:
    source: str
    destination: str


@dataclass(frozen=True)
class AppSpec:
    """What a deployment runs from an appspec: the hook scripts and the files to copy."""

    hooks: Mapping[str, tuple[HookScript, ...]]
    files: tuple[FileMapping, ...] = ()
    file_exists_behavior: str | None = None

    @classmethod
    def load(cls, bundle_dir: Path) -> AppSpec:
        document = _read_document(bundle_dir)
        return cls(
            hooks=_parse_hooks(document.get("hooks") or {}),
            files=tuple(
                FileMapping(str(entry["source"]), str(entry["destination"]))
                for entry in _entries(document.get("files"), "files", ("source", "destination"))
            ),
            file_exists_behavior=document.get("file_exists_behavior"),
        )


def file_copies(bundle_dir: Path, mapping: FileMapping, root: Path) -> Iterator[tuple[Path, Path]]:
    """(source, target) per file of one appspec ``files`` entry. A directory source is copied
    into the destination with its layout; a file source lands in the destination directory."""
    source = (bundle_dir / mapping.source.strip("/")).resolve()
    destination = root / mapping.destination.strip("/")
    if not source.is_relative_to(bundle_dir.resolve()):
        raise AppSpecError(f"appspec files source {mapping.source!r} is outside the revision")
    if source.is_file():
        yield source, destination / source.name
        return
    if not source.is_dir():
        raise AppSpecError(f"appspec files source {mapping.source!r} does not exist in the revision")
    for path in sorted(source.rglob("*")):
        if path.is_file():
            yield path, destination / path.relative_to(source)


def _read_document(bundle_dir: Path) -> dict[str, Any]:
    path = bundle_dir / APPSPEC
    if not path.is_file():
        raise AppSpecError(
            f"{APPSPEC} is missing: CodeDeploy looks for it at the root of the bundle ({bundle_dir})"
        )
    # PyYAML comes with Chalice but ships no type stubs.
    yaml = importlib.import_module("yaml")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise AppSpecError(f"{APPSPEC} is not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise AppSpecError(f"{APPSPEC} must be a mapping (version, os, files, hooks...)")
    return document


def _entries(value: Any, what: str, required: Sequence[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise AppSpecError(f"{APPSPEC}: {what} must be a list of mappings")
    for entry in value:
        missing = [key for key in required if key not in entry]
        if missing:
            raise AppSpecError(f"{APPSPEC}: an entry of {what} lacks {', '.join(missing)}")
    return value


def _parse_hooks(hooks: Any) -> dict[str, tuple[HookScript, ...]]:
    if not isinstance(hooks, dict):
        raise AppSpecError(f"{APPSPEC}: hooks must be a mapping of lifecycle event to scripts")
    return {
        str(name): tuple(
            HookScript(
                location=str(entry["location"]),
                timeout_s=float(entry.get("timeout", MAX_HOOK_TIMEOUT_S)),
                runas=str(entry.get("runas", "")),
            )
            for entry in _entries(entries, f"hooks.{name}", ("location",))
        )
        for name, entries in hooks.items()
    }


def check_bundle(directory: Path) -> list[str]:
    """Everything wrong with the bundle in ``directory``; empty when it is fine.

    Stricter than :meth:`AppSpec.load`, which reads what a deployment runs and leaves a missing
    or failing script to fail its hook, as on an instance: this names every problem up front.
    """
    if not directory.is_dir():
        return [f"{directory} is not a directory"]
    try:
        appspec = _read_document(directory)
    except AppSpecError as error:
        return [str(error)]
    problems = [
        f"{APPSPEC}: unknown key {key!r} (allowed: {', '.join(_TOP_LEVEL)})"
        for key in appspec
        if key not in _TOP_LEVEL
    ]
    if appspec.get("version") not in (0.0, "0.0"):
        problems.append(f"{APPSPEC}: version must be 0.0, got {appspec.get('version')!r}")
    if appspec.get("os") != "linux":
        problems.append(f"{APPSPEC}: os must be linux, got {appspec.get('os')!r}")
    behavior = appspec.get("file_exists_behavior", "DISALLOW")
    if behavior not in _FILE_EXISTS:
        problems.append(
            f"{APPSPEC}: file_exists_behavior must be one of {', '.join(_FILE_EXISTS)}, got {behavior!r}"
        )
    problems.extend(_check_files(directory, appspec.get("files", [])))
    problems.extend(_check_hooks(directory, appspec.get("hooks", {})))
    return problems


def _check_files(directory: Path, files: Any) -> list[str]:
    if not isinstance(files, list):
        return [f"{APPSPEC}: files must be a list of {{source, destination}}"]
    problems = []
    for number, entry in enumerate(files, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
            problems.append(f"{APPSPEC}: files[{number}] needs a source")
            continue
        if not isinstance(entry.get("destination"), str) or not entry["destination"].startswith("/"):
            problems.append(f"{APPSPEC}: files[{number}] needs an absolute destination")
        source = entry["source"].lstrip("/")
        if source and not (directory / source).exists():
            problems.append(
                f"{APPSPEC}: files[{number}]: source {entry['source']} does not exist in the bundle"
            )
    return problems


def _check_hooks(directory: Path, hooks: Any) -> list[str]:
    if hooks is None:
        return []
    if not isinstance(hooks, dict):
        return [f"{APPSPEC}: hooks must map hook names to lists of scripts"]
    problems = []
    for hook, entries in hooks.items():
        if hook in RESERVED_HOOKS:
            problems.append(f"hook {hook}: CodeDeploy runs it itself; it takes no scripts")
            continue
        if hook not in SCRIPT_HOOKS:
            problems.append(
                f"hook {hook}: not a lifecycle hook of an EC2 in-place deployment "
                f"(valid: {', '.join(SCRIPT_HOOKS)})"
            )
            continue
        if not isinstance(entries, list) or not entries:
            problems.append(f"hook {hook}: must be a list of scripts ({{location, timeout, runas}})")
            continue
        for entry in entries:
            problems.extend(_check_script(directory, hook, entry))
    return problems


def _check_script(directory: Path, hook: str, entry: Any) -> list[str]:
    if not isinstance(entry, dict) or not isinstance(entry.get("location"), str) or not entry["location"]:
        return [f"hook {hook}: every entry needs a location (the script's path in the bundle)"]
    location = entry["location"]
    problems = []
    script = directory / location.lstrip("/")
    if not script.is_file():
        problems.append(f"hook {hook}: script {location} does not exist in the bundle")
    elif not script.stat().st_mode & stat.S_IXUSR:
        problems.append(f"hook {hook}: script {location} is not executable (chmod +x {location})")
    timeout = entry.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_HOOK_TIMEOUT_S
    ):
        problems.append(
            f"hook {hook}: script {location}: timeout must be 1 to {MAX_HOOK_TIMEOUT_S} seconds, "
            f"got {timeout!r}"
        )
    runas = entry.get("runas")
    if runas is not None and not isinstance(runas, str):
        problems.append(f"hook {hook}: script {location}: runas must be a user name")
    return problems

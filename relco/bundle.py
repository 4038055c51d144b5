"""CodeDeploy bundles for EC2 in-place deployments: check ``appspec.yml`` and zip the directory.

The checks are the ones that otherwise surface only on the instances, mid-deployment: a hook
CodeDeploy does not know, a script missing from the bundle or not executable.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APPSPEC = "appspec.yml"
# The lifecycle of an EC2/on-premises in-place deployment behind a load balancer, in the order
# CodeDeploy runs it (the sandbox's agent runs it in this order too).
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
_TOP_LEVEL = ("version", "os", "files", "permissions", "hooks", "file_exists_behavior")
_FILE_EXISTS = ("DISALLOW", "OVERWRITE", "RETAIN")
_MAX_TIMEOUT_S = 3600
_SKIPPED_DIRECTORIES = frozenset({".git", "__pycache__", ".pytest_cache", ".mypy_cache"})
# Zip entries carry this date, so the same files always make the same bytes (and S3 eTag).
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


class InvalidBundle(Exception):
    def __init__(self, directory: Path, problems: list[str]) -> None:
        super().__init__(
            f"{directory} is not a valid CodeDeploy bundle:\n" + "\n".join(f"  - {p}" for p in problems)
        )
        self.problems = problems


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    size: int
    sha256: str
    files: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256, "files": self.files}


def check_bundle(directory: Path) -> list[str]:
    """Everything wrong with the bundle in ``directory``; empty when it is fine."""
    if not directory.is_dir():
        return [f"{directory} is not a directory"]
    appspec_path = directory / APPSPEC
    if not appspec_path.is_file():
        return [f"{APPSPEC} is missing: CodeDeploy looks for it at the root of the bundle"]
    # PyYAML comes with Chalice but ships no type stubs.
    yaml = importlib.import_module("yaml")
    try:
        appspec = yaml.safe_load(appspec_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        return [f"{APPSPEC} is not valid YAML: {error}"]
    if not isinstance(appspec, dict):
        return [f"{APPSPEC} must be a mapping (version, os, files, hooks...)"]
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
        isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= _MAX_TIMEOUT_S
    ):
        problems.append(
            f"hook {hook}: script {location}: timeout must be 1 to {_MAX_TIMEOUT_S} seconds, got {timeout!r}"
        )
    runas = entry.get("runas")
    if runas is not None and not isinstance(runas, str):
        problems.append(f"hook {hook}: script {location}: runas must be a user name")
    return problems


def build_bundle(directory: Path, output: Path) -> BuiltBundle:
    """Check the bundle, then zip it (file modes kept: the agent runs the scripts as they are)."""
    problems = check_bundle(directory)
    if problems:
        raise InvalidBundle(directory, problems)
    output.parent.mkdir(parents=True, exist_ok=True)
    skip = output.resolve()
    count = 0
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in _bundle_files(directory):
            if path.resolve() == skip:
                continue
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), date_time=_FIXED_DATE)
            info.create_system = 3  # Unix, so the mode bits below are honoured on extraction
            info.external_attr = (stat.S_IFREG | stat.S_IMODE(path.stat().st_mode)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
            count += 1
    data = output.read_bytes()
    return BuiltBundle(path=output, size=len(data), sha256=hashlib.sha256(data).hexdigest(), files=count)


def _bundle_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for root, directories, names in os.walk(directory):
        directories[:] = sorted(name for name in directories if name not in _SKIPPED_DIRECTORIES)
        found.extend(Path(root) / name for name in sorted(names))
    return [path for path in found if path.is_file()]

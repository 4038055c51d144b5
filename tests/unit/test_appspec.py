"""The appspec module that ``relco bundle`` and the sandbox's CodeDeploy agent share: reading an
appspec for a deployment, and checking a bundle before it leaves the machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appspec import (
    APPSPEC,
    LIFECYCLE_EVENTS,
    MAX_HOOK_TIMEOUT_S,
    PREVIOUS_REVISION_HOOKS,
    RESERVED_HOOKS,
    SCRIPT_HOOKS,
    AppSpec,
    AppSpecError,
    FileMapping,
    HookScript,
    check_bundle,
    file_copies,
)

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"


def bundle_with(tmp_path: Path, appspec: str, scripts: dict[str, int] | None = None) -> Path:
    """A bundle directory holding ``appspec`` and the given scripts ({path: mode})."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / APPSPEC).write_text(appspec, encoding="utf-8")
    for location, mode in (scripts or {}).items():
        script = bundle / location
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text("#!/usr/bin/env bash\n", encoding="utf-8")
        script.chmod(mode)
    return bundle


def test_script_hooks_are_the_lifecycle_without_codedeploys_own_steps_in_order() -> None:
    assert SCRIPT_HOOKS == (
        "BeforeBlockTraffic",
        "AfterBlockTraffic",
        "ApplicationStop",
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
        "BeforeAllowTraffic",
        "AfterAllowTraffic",
    )
    assert set(RESERVED_HOOKS) | set(SCRIPT_HOOKS) == set(LIFECYCLE_EVENTS)
    # The previous revision's scripts run before the new one is downloaded.
    download = LIFECYCLE_EVENTS.index("DownloadBundle")
    assert all(LIFECYCLE_EVENTS.index(hook) < download for hook in PREVIOUS_REVISION_HOOKS)


def test_load_reads_hooks_and_files_with_codedeploys_defaults(tmp_path: Path) -> None:
    bundle = bundle_with(
        tmp_path,
        "version: 0.0\nos: linux\n"
        "files:\n  - source: /\n    destination: /opt/app\n"
        "file_exists_behavior: OVERWRITE\n"
        "hooks:\n"
        "  BeforeInstall:\n    - location: scripts/a.sh\n      timeout: 30\n      runas: app\n"
        "  ApplicationStart:\n    - location: scripts/b.sh\n",
    )

    spec = AppSpec.load(bundle)

    assert spec.hooks == {
        "BeforeInstall": (HookScript("scripts/a.sh", 30.0, "app"),),
        "ApplicationStart": (HookScript("scripts/b.sh", float(MAX_HOOK_TIMEOUT_S), ""),),
    }
    assert spec.files == (FileMapping("/", "/opt/app"),)
    assert spec.file_exists_behavior == "OVERWRITE"


@pytest.mark.parametrize(
    ("appspec", "says"),
    [
        ("hooks: [\n", "is not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("hooks:\n  - BeforeInstall\n", "hooks must be a mapping"),
        ("hooks:\n  BeforeInstall:\n    - timeout: 5\n", "an entry of hooks.BeforeInstall lacks location"),
        ("files:\n  - source: /\n", "an entry of files lacks destination"),
    ],
)
def test_load_refuses_an_appspec_it_cannot_read(tmp_path: Path, appspec: str, says: str) -> None:
    with pytest.raises(AppSpecError, match=says):
        AppSpec.load(bundle_with(tmp_path, appspec))


def test_load_and_check_name_a_missing_appspec_alike(tmp_path: Path) -> None:
    """CodeDeploy reads only appspec.yml on EC2/on-premises, so appspec.yaml counts as missing."""
    bundle = bundle_with(tmp_path, "version: 0.0\n")
    (bundle / APPSPEC).rename(bundle / "appspec.yaml")

    with pytest.raises(AppSpecError) as raised:
        AppSpec.load(bundle)

    assert check_bundle(bundle) == [str(raised.value)]
    assert str(raised.value).startswith("appspec.yml is missing")


@pytest.mark.parametrize("name", ["local-demo", "docker-ec2"])
def test_the_repositorys_bundles_pass_the_check(name: str) -> None:
    assert check_bundle(BUNDLES_DIR / name) == []
    assert set(AppSpec.load(BUNDLES_DIR / name).hooks) <= set(SCRIPT_HOOKS)


def test_check_names_every_problem_a_deployment_would_only_find_on_the_instances(tmp_path: Path) -> None:
    bundle = bundle_with(
        tmp_path,
        "version: 0.0\nos: linux\nresources: []\n"
        "files:\n  - source: /missing\n    destination: /opt/app\n"
        "hooks:\n"
        "  Install:\n    - location: scripts/ok.sh\n"
        "  BeforeInstal:\n    - location: scripts/ok.sh\n"
        "  BeforeInstall:\n    - location: scripts/plain.sh\n      timeout: 7200\n"
        "  ApplicationStart:\n    - location: scripts/absent.sh\n",
        scripts={"scripts/ok.sh": 0o755, "scripts/plain.sh": 0o644},
    )

    problems = check_bundle(bundle)

    assert problems == [
        "appspec.yml: unknown key 'resources' (allowed: version, os, files, permissions, hooks, "
        "file_exists_behavior)",
        "appspec.yml: files[1]: source /missing does not exist in the bundle",
        "hook Install: CodeDeploy runs it itself; it takes no scripts",
        f"hook BeforeInstal: not a lifecycle hook of an EC2 in-place deployment "
        f"(valid: {', '.join(SCRIPT_HOOKS)})",
        "hook BeforeInstall: script scripts/plain.sh is not executable (chmod +x scripts/plain.sh)",
        "hook BeforeInstall: script scripts/plain.sh: timeout must be 1 to 3600 seconds, got 7200",
        "hook ApplicationStart: script scripts/absent.sh does not exist in the bundle",
    ]
    # What a deployment would run from it still reads: the agent fails those hooks on the instance.
    assert set(AppSpec.load(bundle).hooks) == {"Install", "BeforeInstal", "BeforeInstall", "ApplicationStart"}


def test_check_refuses_what_is_not_a_directory(tmp_path: Path) -> None:
    shutil.copy(BUNDLES_DIR / "local-demo" / APPSPEC, tmp_path / APPSPEC)
    assert check_bundle(tmp_path / APPSPEC) == [f"{tmp_path / APPSPEC} is not a directory"]


def test_files_copy_a_directory_with_its_layout_and_a_file_into_its_destination(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "site" / "static").mkdir(parents=True)
    (bundle / "site" / "index.html").write_text("index", encoding="utf-8")
    (bundle / "site" / "static" / "app.css").write_text("css", encoding="utf-8")
    (bundle / "app.conf").write_text("conf", encoding="utf-8")
    root = tmp_path / "fs"

    directory = list(file_copies(bundle, FileMapping("/site", "/var/www"), root))
    single = list(file_copies(bundle, FileMapping("app.conf", "/etc/app/"), root))

    assert directory == [
        ((bundle / "site" / "index.html").resolve(), root / "var" / "www" / "index.html"),
        ((bundle / "site" / "static" / "app.css").resolve(), root / "var" / "www" / "static" / "app.css"),
    ]
    assert single == [((bundle / "app.conf").resolve(), root / "etc" / "app" / "app.conf")]


@pytest.mark.parametrize(
    ("source", "problem"),
    [("../outside", "is outside the revision"), ("missing", "does not exist in the revision")],
)
def test_files_refuse_a_source_outside_the_revision_or_missing(
    tmp_path: Path, source: str, problem: str
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (tmp_path / "outside").write_text("secret", encoding="utf-8")

    with pytest.raises(AppSpecError, match=problem):
        list(file_copies(bundle, FileMapping(source, "/opt/app"), tmp_path / "fs"))

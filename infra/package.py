"""``make package``: render the merge template, run ``chalice package`` with it, translate the SAM
template to CloudFormation (infra/sam.py) and lint both with cfn-lint. cfn-lint 1.x checks a SAM
template against SAM's schema only; the translated template is what CloudFormation deploys, so it
is linted too, and a template that does not translate fails here instead of in the account.

    python -m infra.package --stage dev --output build/package/dev

writes ``sam.json`` (the template to deploy), ``cloudformation.json`` (its translation) and
``deployment.zip``, and prints what was checked. Tests call ``package()``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.render import PROJECT_ROOT
from infra.render import main as render_main

TRANSLATED = "cloudformation.json"


class PackageError(RuntimeError):
    """A step of packaging failed; the message names it and what it printed."""


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _environment() -> dict[str, str]:
    environment = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    # app.py reads its environment at import; packaging must not depend on the caller's.
    environment.pop("RELEASES_STREAM_ARN", None)
    return environment


def chalice_package(stage: str, merge: Path, output: Path) -> dict[str, Any]:
    """``chalice package`` with the merge template into ``output``; returns ``sam.json``."""
    result = subprocess.run(
        [_tool("chalice"), "package", "--stage", stage, "--merge-template", str(merge), str(output)],
        cwd=PROJECT_ROOT,
        env=_environment(),
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise PackageError(f"chalice package failed:\n{result.stdout}{result.stderr}")
    template: dict[str, Any] = json.loads((output / "sam.json").read_text(encoding="utf-8"))
    return template


def package(stage: str, output: Path, pipelines_file: Path | None = None) -> dict[str, Any]:
    """Render and ``chalice package`` into ``output/package``; returns the SAM template."""
    merge = output / "merge.json"
    arguments = ["--stage", stage, "--output", str(merge)]
    if pipelines_file is not None:
        arguments += ["--pipelines", str(pipelines_file)]
    if render_main(arguments) != 0:
        raise PackageError(f"infra.render failed for stage {stage}")
    return chalice_package(stage, merge, output / "package")


def cfn_lint(template: Path) -> str:
    """cfn-lint's findings for ``template``; raises when it reports any."""
    result = subprocess.run(
        [_tool("cfn-lint"), "--", str(template)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise PackageError(
            f"cfn-lint {template} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def translate_and_lint(package_dir: Path) -> Path:
    """Translate ``package_dir/sam.json`` next to it and lint both; returns the translation's path."""
    from infra.sam import TranslationError, translate

    sam = package_dir / "sam.json"
    cfn_lint(sam)
    try:
        translated = translate(json.loads(sam.read_text(encoding="utf-8")))
    except TranslationError as problem:
        raise PackageError(str(problem)) from None
    target = package_dir / TRANSLATED
    target.write_text(json.dumps(translated, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    cfn_lint(target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="chalice package, SAM translation and cfn-lint of both")
    parser.add_argument("--stage", required=True)
    parser.add_argument("--merge-template", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    arguments = parser.parse_args(argv)
    try:
        if render_main(["--stage", arguments.stage, "--output", str(arguments.merge_template)]) != 0:
            raise PackageError(f"infra.render failed for stage {arguments.stage}")
        sam = chalice_package(arguments.stage, arguments.merge_template, arguments.output)
        translated_path = translate_and_lint(arguments.output)
    except PackageError as problem:
        print(f"package: {problem}", file=sys.stderr)
        return 1
    translated = json.loads(translated_path.read_text(encoding="utf-8"))
    sam_path = arguments.output / "sam.json"
    print(
        f"package: cfn-lint passed on {sam_path} (SAM, {len(sam['Resources'])} resources, "
        f"{sam_path.stat().st_size} bytes)"
    )
    print(
        f"package: translated with aws-sam-translator {_sam_version()}, cfn-lint passed on {translated_path} "
        f"(CloudFormation, {len(translated['Resources'])} resources)"
    )
    return 0


def _sam_version() -> str:
    import samtranslator  # type: ignore[import-untyped]

    return str(samtranslator.__version__)


if __name__ == "__main__":
    raise SystemExit(main())

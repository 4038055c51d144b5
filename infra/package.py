"""``make package`` as a function, for the tests: render the merge template, run ``chalice package``
with it, return the packaged template (``sam.json``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from infra.render import PROJECT_ROOT, main


def package(stage: str, output: Path, pipelines_file: Path | None = None) -> dict[str, Any]:
    merge = output / "merge.json"
    arguments = ["--stage", stage, "--output", str(merge)]
    if pipelines_file is not None:
        arguments += ["--pipelines", str(pipelines_file)]
    if main(arguments) != 0:
        raise RuntimeError(f"infra.render failed for stage {stage}")
    chalice = Path(sys.executable).parent / "chalice"
    environment = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    environment.pop("RELEASES_STREAM_ARN", None)
    subprocess.run(
        [str(chalice), "package", "--stage", stage, "--merge-template", str(merge), str(output / "package")],
        cwd=PROJECT_ROOT,
        env=environment,
        check=True,
        capture_output=True,
        timeout=300,
    )
    template: dict[str, Any] = json.loads((output / "package" / "sam.json").read_text(encoding="utf-8"))
    return template

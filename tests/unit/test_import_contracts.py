"""The layering contracts in pyproject.toml (`make lint` runs them with ``lint-imports``) fail when
an import breaks them: each case copies the project's packages, adds one offending import and
expects exactly the contracts it breaks reported broken, naming that import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ROOT_PACKAGES = ("chalicelib", "appspec", "relco", "sandbox", "infra", "tests", "bench")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = (
    "The domain is pure: no AWS SDK, no use case, no adapter",
    "Adapters implement the service layer's ports and run no use case",
    "Use cases reach AWS only through the adapters they receive",
    "Only the API glue imports Chalice (app.py, not a package, is outside the graph)",
    "What runs in Lambda imports nothing of the tools around it",
    "The CLI may run the sandbox, never the reverse; both share appspec",
)


def project_copy(destination: Path) -> Path:
    for package in ROOT_PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(PROJECT_ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, ahead of the editable install of the real packages.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_contract_is_checked_and_kept() -> None:
    finished = lint_imports(PROJECT_ROOT)
    assert finished.returncode == 0, finished.stdout
    for contract in CONTRACTS:
        assert f"{contract} KEPT" in finished.stdout
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in finished.stdout


@pytest.mark.parametrize(
    ("module", "offending_import", "broken", "reported"),
    [
        (
            "chalicelib/domain/release.py",
            "import boto3",
            # Every use case imports the domain, so they now reach boto3 too.
            (CONTRACTS[0], CONTRACTS[2]),
            "chalicelib.domain.release -> boto3",
        ),
        (
            "chalicelib/adapters/sqs_queues.py",
            "from chalicelib.service import submission",
            (CONTRACTS[1],),
            "chalicelib.adapters.sqs_queues -> chalicelib.service.submission",
        ),
        (
            "chalicelib/service/reconcile.py",
            "from botocore.exceptions import ClientError",
            (CONTRACTS[2],),
            "chalicelib.service.reconcile -> botocore",
        ),
        (
            "chalicelib/lambda_handlers.py",
            "from chalice.app import Response",
            (CONTRACTS[3],),
            "chalicelib.lambda_handlers -> chalice",
        ),
        (
            "chalicelib/bootstrap.py",
            "from sandbox import moto_extensions",
            (CONTRACTS[4],),
            "chalicelib.bootstrap -> sandbox.moto_extensions",
        ),
        (
            "sandbox/codedeploy_agent.py",
            "from relco.bundle import build_bundle",
            (CONTRACTS[5],),
            "sandbox.codedeploy_agent -> relco.bundle",
        ),
    ],
)
def test_an_offending_import_breaks_its_contract(
    tmp_path: Path, module: str, offending_import: str, broken: tuple[str, ...], reported: str
) -> None:
    project = project_copy(tmp_path)
    with (project / module).open("a", encoding="utf-8") as source:
        source.write(f"\n{offending_import}\n")

    finished = lint_imports(project)

    assert finished.returncode == 1, finished.stdout
    for contract in CONTRACTS:
        assert f"{contract} {'BROKEN' if contract in broken else 'KEPT'}" in finished.stdout
    assert reported in finished.stdout

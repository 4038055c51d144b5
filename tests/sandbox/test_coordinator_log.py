"""The coordinator's INFO and WARNING lines reach its log wherever that log's handler writes
(the sandbox points it at coordinator.log before it imports the app): Chalice must not lower
the shared logger to ERROR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import io
from chalicelib.log import logger

log = io.StringIO()
logger.registered_handler.setStream(log)  # not stdout, as in the sandbox
import app

logger.info("upload skipped because it is not a bundle")
logger.warning("malformed event skipped")
print(log.getvalue(), end="")
"""


def test_info_and_warning_lines_survive_importing_the_app() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in finished.stdout.splitlines()]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("INFO", "upload skipped because it is not a bundle"),
        ("WARNING", "malformed event skipped"),
    ]

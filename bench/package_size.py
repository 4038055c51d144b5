"""The Lambda package: ``chalice package`` into a scratch directory (the repository's build/ is
left alone), the size of deployment.zip, and what takes the room in it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

from bench.measurement import Outcome, main, verdict

ROOT = Path(__file__).resolve().parent.parent
BUDGET_BYTES = 5_000_000
STAGE = "dev"


def run() -> Outcome:
    chalice = Path(sys.executable).parent / "chalice"
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="relco-bench-package-") as scratch:
        target = Path(scratch) / "package"
        subprocess.run(
            [str(chalice), "package", "--stage", STAGE, str(target)],
            cwd=ROOT,
            env={**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")},
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        archive = target / "deployment.zip"
        size = archive.stat().st_size
        with zipfile.ZipFile(archive) as opened:
            by_top = Counter[str]()
            for info in opened.infolist():
                by_top[info.filename.split("/")[0]] += info.compress_size
            unpacked = sum(info.file_size for info in opened.infolist())
    largest = ", ".join(f"{name} {bytes_ / 1e6:.2f} MB" for name, bytes_ in by_top.most_common(4))
    outcome.add(
        f"Lambda package: chalice package --stage {STAGE}, deployment.zip",
        f"{size:,} bytes ({size / 1e6:.2f} MB; {unpacked / 1e6:.1f} MB unpacked; largest: {largest})",
        "< 5 MB",
        verdict(size < BUDGET_BYTES),
    )
    outcome.data = {"bytes": size, "unpacked_bytes": unpacked, "by_top_level": dict(by_top)}
    return outcome


if __name__ == "__main__":
    main(run)

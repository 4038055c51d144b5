"""CodeDeploy bundles for EC2 in-place deployments: check the directory (``appspec.check_bundle``)
and zip it the same way every time."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appspec import check_bundle

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

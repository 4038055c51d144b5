"""A deployment's revision bundle for the local CodeDeploy agent: which S3 object it is, fetching
that exact version once for all instances, and unpacking it as the EC2 agent does (zip, tar,
tgz)."""

from __future__ import annotations

import tarfile
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class S3Revision:
    bucket: str
    key: str
    bundle_type: str
    version: str | None
    etag: str | None

    @classmethod
    def from_moto(cls, revision: Mapping[str, Any]) -> S3Revision | None:
        """None for revisions this agent cannot fetch (GitHub, AppSpecContent...)."""
        location = revision.get("s3Location") or {}
        if revision.get("revisionType") != "S3" or not location.get("bucket") or not location.get("key"):
            return None
        return cls(
            bucket=location["bucket"],
            key=location["key"],
            bundle_type=location.get("bundleType", "zip"),
            version=location.get("version"),
            etag=location.get("eTag"),
        )

    def environment(self) -> dict[str, str]:
        """The BUNDLE_* variables CodeDeploy sets for an S3 revision."""
        env = {"BUNDLE_BUCKET": self.bucket, "BUNDLE_KEY": self.key}
        if self.version:
            env["BUNDLE_VERSION"] = self.version
        if self.etag:
            env["BUNDLE_ETAG"] = self.etag
        return env


class BundleError(ValueError):
    pass


class RevisionDownload:
    """The revision's archive, fetched from S3 once per deployment for all its instances."""

    def __init__(self, s3: Any, revision: S3Revision) -> None:
        self._s3 = s3
        self._revision = revision
        self._lock = threading.Lock()
        self._data: bytes | None = None

    def fetch(self) -> bytes:
        with self._lock:
            if self._data is None:
                self._data = self._download()
            return self._data

    def _download(self) -> bytes:
        revision = self._revision
        request = {"Bucket": revision.bucket, "Key": revision.key}
        if revision.version:
            request["VersionId"] = revision.version  # never "the newest": the deployed one
        response = self._s3.get_object(**request)
        etag = str(response.get("ETag", "")).strip('"')
        if revision.etag and etag and etag != revision.etag.strip('"'):
            raise BundleError(f"s3://{revision.bucket}/{revision.key} has ETag {etag}, not {revision.etag}")
        data: bytes = response["Body"].read()
        return data


def unpack(archive: Path, bundle_type: str, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    if bundle_type == "zip":
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                # extract() drops absolute paths and "..": nothing lands outside destination.
                path = Path(bundle.extract(member, destination))
                mode = (member.external_attr >> 16) & 0o777
                if mode and not member.is_dir():
                    path.chmod(mode)
    elif bundle_type in ("tar", "tgz"):
        with tarfile.open(archive, "r:gz" if bundle_type == "tgz" else "r:") as bundle:
            bundle.extractall(destination, filter="data")
    else:
        raise BundleError(f"bundle type {bundle_type!r} is not supported on EC2 (zip, tar, tgz)")

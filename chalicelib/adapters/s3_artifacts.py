"""S3: resolve an uploaded bundle to the exact object version and its CI metadata."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from chalicelib.domain.release import Revision
from chalicelib.log import logger
from chalicelib.service.ports import ArtifactAccessDenied, StoredObject

# User metadata CI sets on the upload (``x-amz-meta-*``), as the release records it. S3 lower-
# cases metadata names, and CLIs differ on dashes and underscores, so both are accepted.
_METADATA_FIELDS = {
    "commit": "commit",
    "version-label": "version_label",
    "version_label": "version_label",
    "author": "author",
    "message": "message",
    "commit-time": "commit_time",
    "commit_time": "commit_time",
}
# S3 answers 400 for a version id that is not one of its own: no such object version either.
# (HeadObject has no response body: botocore's error code is the HTTP status, "404".)
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound", "400", "InvalidArgument"})
# A delete marker answers 405: this spelling of the key has no object to deploy.
_DELETED_CODES = frozenset({"405", "MethodNotAllowed"})
# With s3:ListBucket granted (the template does), a missing key is a 404: a 403 is a permission
# the role lacks, and the upload must not be dropped as if it did not exist.
_DENIED_CODES = frozenset({"403", "AccessDenied", "Forbidden"})
_METADATA_VALUE_LIMIT = 1024


class S3Artifacts:
    def __init__(self, client: Any) -> None:
        self._client = client

    def find(self, bucket: str, key: str, version_id: str | None) -> StoredObject | None:
        arguments: dict[str, str] = {"Bucket": bucket, "Key": key}
        if version_id:
            arguments["VersionId"] = version_id
        try:
            head = self._client.head_object(**arguments)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code"))
            if code in _MISSING_CODES:
                return None
            if code in _DELETED_CODES:
                logger.warning(
                    "the object's current version is a delete marker", extra={"bucket": bucket, "key": key}
                )
                return None
            if code in _DENIED_CODES:
                raise ArtifactAccessDenied(bucket, key, code) from error
            raise
        metadata = {
            field: str(value)[:_METADATA_VALUE_LIMIT]
            for name, value in (head.get("Metadata") or {}).items()
            if (field := _METADATA_FIELDS.get(name.lower()))
        }
        version = head.get("VersionId")
        return StoredObject(
            revision=Revision(
                bucket=bucket,
                key=key,
                # Unversioned buckets answer "null": the eTag identifies the object then.
                version=version if version and version != "null" else None,
                etag=str(head.get("ETag", "")).strip('"') or None,
            ),
            metadata=metadata,
            stored_at=head.get("LastModified"),
        )

"""Parsing of the events the coordinator receives: S3 uploads and CodeDeploy state changes.

Each parser returns plain values or raises ``MalformedEvent`` saying why, so the handler can log
the reason and skip the event instead of crashing its batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_plus


class MalformedEvent(ValueError):
    """The event does not have the shape AWS sends; the message says what is missing."""


@dataclass(frozen=True)
class ObjectCreated:
    """One S3 object written. ``key_candidates`` lists the spellings to resolve against S3, in
    order: EventBridge may deliver the key raw or URL-encoded, so both are tried."""

    bucket: str
    key_candidates: tuple[str, ...]
    version_id: str | None
    etag: str | None


@dataclass(frozen=True)
class ParsedUploads:
    uploads: list[ObjectCreated]
    # Why each unusable record (of a notification, an SQS batch) was skipped; the others still count.
    skipped: list[str]


# S3 -> SNS -> SQS -> Lambda is the deepest wiring AWS offers: two envelopes around the event.
_MAX_ENVELOPES = 2


def parse_artifact_event(event: Any) -> ParsedUploads:
    """An EventBridge ``Object Created`` event or a classic S3 notification (possibly several
    records), delivered to the function directly or in an envelope: each record of an SQS batch
    carries one in its ``body`` (S3 or EventBridge -> SQS -> Lambda), an SNS notification in its
    ``Message`` (S3 -> SNS -> Lambda, or SNS -> SQS without raw delivery). Each record is parsed
    on its own: an unusable one is skipped with why, the others still count. The S3 test event
    yields nothing."""
    return _parse_event(event, _MAX_ENVELOPES)


def _parse_event(event: Any, envelopes_left: int) -> ParsedUploads:
    if not isinstance(event, Mapping):
        raise MalformedEvent(f"expected a JSON object, got {type(event).__name__}")
    if event.get("Event") == "s3:TestEvent":
        return ParsedUploads([], [])
    if event.get("Type") == "Notification" and "Message" in event:
        return _unwrap(event["Message"], "SNS notification Message", envelopes_left)
    if "Records" in event:
        return _parse_records(event["Records"], envelopes_left)
    if event.get("source") == "aws.s3" or "detail" in event:
        return ParsedUploads([_parse_eventbridge(event)], [])
    raise MalformedEvent(
        "neither an EventBridge S3 event (source, detail), an S3 notification (Records), "
        "an SQS batch (Records[].body) nor an SNS notification (Message)"
    )


def _parse_records(records: Any, envelopes_left: int) -> ParsedUploads:
    if not isinstance(records, list):
        raise MalformedEvent(f"Records must be a list, got {type(records).__name__}")
    parsed = ParsedUploads([], [])
    for index, record in enumerate(records):
        try:
            found = _parse_record(record, f"Records[{index}]", envelopes_left)
        except MalformedEvent as problem:
            parsed.skipped.append(str(problem))
            continue
        parsed.uploads.extend(found.uploads)
        parsed.skipped.extend(found.skipped)
    return parsed


def _parse_record(record: Any, where: str, envelopes_left: int) -> ParsedUploads:
    if not isinstance(record, Mapping):
        raise MalformedEvent(f"{where} must be an object")
    if record.get("eventSource") == "aws:sqs":
        message = f"{where}.body (SQS message {record.get('messageId')})"
        return _unwrap(record.get("body"), message, envelopes_left)
    if record.get("EventSource") == "aws:sns":
        sns = _mapping(record, "Sns", where)
        return _unwrap(sns.get("Message"), f"{where}.Sns.Message", envelopes_left)
    upload = _parse_classic_record(record, where)
    return ParsedUploads([upload] if upload else [], [])


def _unwrap(text: Any, where: str, envelopes_left: int) -> ParsedUploads:
    """The event inside an SQS body or an SNS message; what is wrong inside says where."""
    if envelopes_left <= 0:
        raise MalformedEvent(f"{where}: more envelopes than S3 -> SNS -> SQS -> Lambda puts around an event")
    if not isinstance(text, str):
        raise MalformedEvent(f"{where} must be a JSON string, got {type(text).__name__}")
    try:
        inner = json.loads(text)
    except ValueError as error:
        raise MalformedEvent(f"{where} is not JSON: {error}") from None
    try:
        parsed = _parse_event(inner, envelopes_left - 1)
    except MalformedEvent as problem:
        raise MalformedEvent(f"{where}: {problem}") from None
    return ParsedUploads(parsed.uploads, [f"{where}: {why}" for why in parsed.skipped])


def _text(container: Mapping[str, Any], name: str, where: str) -> str:
    value = container.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{where}.{name} must be a non-empty string, got {value!r}")
    return value


def _optional_text(container: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = container.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _mapping(container: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = container.get(name)
    if not isinstance(value, Mapping):
        raise MalformedEvent(f"{where}.{name} must be an object, got {type(value).__name__}")
    return value


def _parse_eventbridge(event: Mapping[str, Any]) -> ObjectCreated:
    detail_type = event.get("detail-type")
    if detail_type != "Object Created":
        raise MalformedEvent(f"detail-type must be 'Object Created', got {detail_type!r}")
    detail = _mapping(event, "detail", "event")
    bucket = _text(_mapping(detail, "bucket", "detail"), "name", "detail.bucket")
    obj = _mapping(detail, "object", "detail")
    key = _text(obj, "key", "detail.object")
    decoded = unquote_plus(key)
    candidates = (key,) if decoded == key else (key, decoded)
    return ObjectCreated(
        bucket=bucket,
        key_candidates=candidates,
        version_id=_optional_text(obj, "version-id", "versionId"),
        etag=_normalise_etag(_optional_text(obj, "etag", "eTag")),
    )


def _parse_classic_record(record: Any, where: str) -> ObjectCreated | None:
    if not isinstance(record, Mapping):
        raise MalformedEvent(f"{where} must be an object")
    event_name = _text(record, "eventName", where)
    if not event_name.startswith("ObjectCreated:"):
        return None  # deletions and other S3 events carry nothing to deploy
    s3 = _mapping(record, "s3", where)
    bucket = _text(_mapping(s3, "bucket", f"{where}.s3"), "name", f"{where}.s3.bucket")
    obj = _mapping(s3, "object", f"{where}.s3")
    # Classic notifications always form-URL-encode the key ("red flower.zip" -> "red+flower.zip").
    key = unquote_plus(_text(obj, "key", f"{where}.s3.object"))
    return ObjectCreated(
        bucket=bucket,
        key_candidates=(key,),
        version_id=_optional_text(obj, "versionId"),
        etag=_normalise_etag(_optional_text(obj, "eTag", "etag")),
    )


def _normalise_etag(etag: str | None) -> str | None:
    return etag.strip('"').lower() if etag else None


class DeploymentState(StrEnum):
    START = "START"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    STOP = "STOP"
    READY = "READY"


@dataclass(frozen=True)
class DeploymentStateChanged:
    deployment_id: str
    state: DeploymentState
    application: str
    deployment_group: str


def parse_codedeploy_event(event: Any) -> DeploymentStateChanged | None:
    """A ``CodeDeploy Deployment State-change Notification``; None for instance-level events,
    which carry nothing the release record needs."""
    if not isinstance(event, Mapping):
        raise MalformedEvent(f"expected a JSON object, got {type(event).__name__}")
    detail_type = event.get("detail-type")
    if detail_type == "CodeDeploy Instance State-change Notification":
        return None
    if detail_type != "CodeDeploy Deployment State-change Notification":
        raise MalformedEvent(
            f"detail-type must be 'CodeDeploy Deployment State-change Notification', got {detail_type!r}"
        )
    detail = _mapping(event, "detail", "event")
    raw_state = _text(detail, "state", "detail")
    try:
        state = DeploymentState(raw_state)
    except ValueError:
        raise MalformedEvent(
            f"detail.state must be one of {', '.join(s.value for s in DeploymentState)}, got {raw_state!r}"
        ) from None
    return DeploymentStateChanged(
        deployment_id=_text(detail, "deploymentId", "detail"),
        state=state,
        application=_text(detail, "application", "detail"),
        deployment_group=_text(detail, "deploymentGroup", "detail"),
    )

"""What an API caller sends, checked before anything is looked up: JSON bodies, query strings,
path ids, idempotency keys and page cursors.

Every check here runs before a value reaches DynamoDB, S3 or CodeDeploy, so a value AWS would
refuse (a lone surrogate, an oversized key, a malformed cursor) is refused (``Refused``) with a
message that says what to fix instead of surfacing as a 500. Pure: no AWS, no Chalice, no HTTP
statuses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from chalicelib.domain.release import Release, ReleaseState, Trigger

# API Gateway accepts 10 MB; no request of this API needs more than a few hundred bytes.
MAX_BODY_BYTES = 16 * 1024
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# GET /stats: the window, in days back from now.
DEFAULT_DAYS = 30
MAX_DAYS = 365
# S3's own limit on key length (UTF-8 bytes); version ids are far shorter.
_MAX_KEY_BYTES = 1024
_MAX_NAME_LENGTH = 128
# The tokens encode_cursor gives out: unpadded URL-safe base64, far shorter than this.
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,512}")

# Release ids the coordinator makes: rel-<hex>, api-<hex>, ext-<deployment id>, rb-<release id>.
RELEASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,159}")
# S3 version ids are URL-safe tokens; S3 answers 400 (not 404) for one not of its making.
_VERSION_ID = re.compile(r"[A-Za-z0-9._+/=-]{1,1024}")
# Printable ASCII without spaces: safe in a DynamoDB key and in a log line.
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")
# A position in the by_pipeline index: "<created_at isoformat>#<release id>".
_CREATED_KEY = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.+-]{8,32}#" + RELEASE_ID.pattern)


class Refused(Exception):
    """A request the coordinator does not carry out; the message says what to fix. The HTTP layer
    (chalicelib/http_api.py) answers each kind with its status."""


class Malformed(Refused):
    """Not JSON, not an object, a query value that is not what it claims to be."""


class TooLarge(Refused):
    """More than the coordinator accepts."""


class InvalidValue(Refused):
    """Well-formed, but a value is wrong: unknown field, wrong type, nothing by that name."""


class NotFound(Refused):
    """What the request names does not exist."""


class ConflictingState(Refused):
    """What the request names exists, but its current state forbids the action."""


class Forbidden(Refused):
    """The caller is not one the pipelines file allows to do this (an approval, a Slack action)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"field {name!r} appears twice")
        result[name] = value
    return result


def parse_body(raw: bytes | str | None, allowed: frozenset[str]) -> dict[str, Any]:
    """A JSON object with only ``allowed`` fields; an empty body counts as ``{}``."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else (raw or b"")
    if len(data) > MAX_BODY_BYTES:
        raise TooLarge(f"request body is {len(data)} bytes; at most {MAX_BODY_BYTES} are accepted")
    if not data.strip():
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("request body is not UTF-8 text") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as error:
        raise Malformed(f"request body is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(value, dict):
        raise Malformed(f"request body must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        allowed_text = ", ".join(sorted(allowed)) or "none"
        raise InvalidValue(f"unknown field(s) {_names(unknown)}; allowed: {allowed_text}")
    return value


def _names(names: list[str]) -> str:
    return ", ".join(repr(name[:64]) for name in names[:5])


def optional_text(body: Mapping[str, Any], name: str, *, max_bytes: int) -> str | None:
    """A non-empty string field that encodes as UTF-8 (JSON admits lone surrogates; AWS does not)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"field {name!r} must be a non-empty string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidValue(f"field {name!r} is not valid Unicode text") from None
    if size > max_bytes:
        raise InvalidValue(f"field {name!r} is {size} bytes long; at most {max_bytes} are accepted")
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in value):
        raise InvalidValue(f"field {name!r} contains control characters")
    return value


def required_text(body: Mapping[str, Any], name: str, *, max_bytes: int) -> str:
    value = optional_text(body, name, max_bytes=max_bytes)
    if value is None:
        raise InvalidValue(f"field {name!r} is required")
    return value


@dataclass(frozen=True)
class DeployRequest:
    """``POST /releases``: deploy an object (optionally one version of it) of a pipeline."""

    pipeline: str
    key: str
    bucket: str | None
    version: str | None
    # Start during a freeze (and past an alarm in ALARM), for this reason, recorded with the caller.
    break_glass: str | None = None

    FIELDS: ClassVar[frozenset[str]] = frozenset({"pipeline", "key", "bucket", "version", "break_glass"})

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DeployRequest:
        version = optional_text(body, "version", max_bytes=_MAX_KEY_BYTES)
        if version is not None and not _VERSION_ID.fullmatch(version):
            raise InvalidValue(f"field 'version' is not an S3 version id: {version[:64]!r}")
        return cls(
            pipeline=required_text(body, "pipeline", max_bytes=_MAX_NAME_LENGTH),
            key=required_text(body, "key", max_bytes=_MAX_KEY_BYTES),
            bucket=optional_text(body, "bucket", max_bytes=63),
            version=version,
            break_glass=break_glass_reason(body),
        )


# A reason or comment a person writes: recorded in the history and shown in notifications.
MAX_REASON_BYTES = 1000


def break_glass_reason(body: Mapping[str, Any]) -> str | None:
    """``{"break_glass": "why"}``: the reason is required and must say something."""
    if "break_glass" not in body:
        return None
    reason = optional_text(body, "break_glass", max_bytes=MAX_REASON_BYTES)
    if reason is None or not reason.strip():
        raise InvalidValue(
            "field 'break_glass' must be a non-empty string: the reason for breaking the glass"
        )
    return reason.strip()


def comment(body: Mapping[str, Any]) -> str | None:
    """``{"comment": "..."}`` of an approval or rejection (optional)."""
    text = optional_text(body, "comment", max_bytes=MAX_REASON_BYTES)
    if text is None:
        return None
    return text.strip() or None


def rollback_target(body: Mapping[str, Any]) -> str | None:
    """``POST /pipelines/{name}/rollback``: ``{"to": id}`` or nothing (the last good release)."""
    target = optional_text(body, "to", max_bytes=_MAX_NAME_LENGTH + 32)
    if target is not None and not RELEASE_ID.fullmatch(target):
        raise InvalidValue(f"field 'to' is not a release id: {target[:64]!r}")
    return target


def promotion_source(body: Mapping[str, Any]) -> str | None:
    """``POST /pipelines/{name}/promote``: ``{"release": id}`` (a release the upstream pipeline
    verified) or nothing (its last good release)."""
    source = optional_text(body, "release", max_bytes=_MAX_NAME_LENGTH + 32)
    if source is not None and not RELEASE_ID.fullmatch(source):
        raise InvalidValue(f"field 'release' is not a release id: {source[:64]!r}")
    return source


def known_release_id(release_id: str) -> bool:
    """Ids that cannot name a release are answered 404 without a lookup."""
    return RELEASE_ID.fullmatch(release_id) is not None


@dataclass(frozen=True)
class ListQuery:
    """``GET /releases?pipeline=&limit=&next=&state=&trigger=``. ``state`` and ``trigger`` each
    take one value or several separated by commas; a release matches when its state is one of
    ``states`` and its trigger one of ``triggers`` (an empty set: any)."""

    pipeline: str | None
    limit: int
    before: str | None  # decoded ``next``: list releases older than this position
    states: frozenset[ReleaseState] = frozenset()
    triggers: frozenset[Trigger] = frozenset()

    PARAMETERS: ClassVar[frozenset[str]] = frozenset({"pipeline", "limit", "next", "state", "trigger"})

    @classmethod
    def from_params(cls, params: Mapping[str, list[str]]) -> ListQuery:
        values = _single_values(params, cls.PARAMETERS)
        pipeline = values.get("pipeline")
        if pipeline is not None and not pipeline:
            raise InvalidValue("query parameter 'pipeline' is empty; leave it out to list every pipeline")
        return cls(
            pipeline=pipeline,
            limit=_limit(values.get("limit")),
            before=decode_cursor(values["next"]) if "next" in values else None,
            states=_choices("state", values.get("state"), ReleaseState),
            triggers=_choices("trigger", values.get("trigger"), Trigger),
        )

    def matches(self, release: Release) -> bool:
        return (not self.states or release.state in self.states) and (
            not self.triggers or release.trigger in self.triggers
        )


Choice = TypeVar("Choice", bound=StrEnum)


def _choices(name: str, raw: str | None, kind: type[Choice]) -> frozenset[Choice]:
    """The members of ``kind`` a comma-separated query value names; none when it is left out."""
    if raw is None:
        return frozenset()
    allowed = ", ".join(member.value for member in kind)
    chosen: set[Choice] = set()
    for value in (part.strip() for part in raw.split(",")):
        if not value:
            raise Malformed(
                f"query parameter {name!r} has an empty value; give one or more of {allowed}, "
                "separated by commas, or leave it out"
            )
        try:
            chosen.add(kind(value))
        except ValueError:
            raise Malformed(
                f"query parameter {name!r} has an unknown value {value[:32]!r}; allowed (case matters): "
                f"{allowed}"
            ) from None
    return frozenset(chosen)


def _single_values(params: Mapping[str, list[str]], allowed: frozenset[str]) -> dict[str, str]:
    """Each query parameter's value: only ``allowed`` names, each given once."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        allowed_text = ", ".join(sorted(allowed))
        raise Malformed(f"unknown query parameter(s) {_names(unknown)}; allowed: {allowed_text}")
    values: dict[str, str] = {}
    for name, given in params.items():
        if len(given) != 1:
            raise Malformed(f"query parameter {name!r} must be given once")
        values[name] = given[0]
    return values


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        raise Malformed(f"query parameter 'limit' must be a whole number, got {raw[:32]!r}")
    limit = int(raw)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidValue(f"query parameter 'limit' must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def encode_cursor(created_key: str) -> str:
    """The opaque ``next`` token: a position in the by_pipeline index (newest first)."""
    payload = json.dumps({"before": created_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")


def decode_cursor(token: str) -> str:
    bad = Malformed("query parameter 'next' is not a token this API gave out; start again without it")
    # Strict: base64 decoding skips characters outside its alphabet, so a mangled token could
    # otherwise pass for the one it was made from.
    if not _CURSOR.fullmatch(token):
        raise bad
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise bad from None
    if not isinstance(payload, dict) or set(payload) != {"before"}:
        raise bad
    before = payload["before"]
    if not isinstance(before, str) or not _CREATED_KEY.fullmatch(before):
        raise bad
    return before


def idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(raw):
        raise Malformed("header Idempotency-Key must be 1 to 128 printable ASCII characters without spaces")
    return raw


def request_fingerprint(method: str, path: str, body: Mapping[str, Any]) -> str:
    """What makes two requests "the same" for an idempotency key: route and body, not the body's
    spelling (whitespace, field order)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def derived_release_id(idempotency: str | None, fingerprint: str, fresh: str) -> str:
    """The id of a release the API creates. With an Idempotency-Key it follows from the key and
    request, so even a retry that outran the stored answer finds the same release; without, it is
    ``fresh``."""
    if idempotency is None:
        return f"api-{fresh}"
    digest = hashlib.sha256(f"{idempotency}\n{fingerprint}".encode()).hexdigest()
    return f"api-{digest[:20]}"


@dataclass(frozen=True)
class StatsQuery:
    """``GET /stats?pipeline=&days=``: one pipeline, or every configured one when left out, over
    the last ``days`` days (chalicelib/domain/dora.py)."""

    pipeline: str | None
    days: int

    PARAMETERS: ClassVar[frozenset[str]] = frozenset({"pipeline", "days"})

    @classmethod
    def from_params(cls, params: Mapping[str, list[str]]) -> StatsQuery:
        values = _single_values(params, cls.PARAMETERS)
        pipeline = values.get("pipeline")
        if pipeline is not None and not pipeline:
            raise Malformed("query parameter 'pipeline' is empty; leave it out for every pipeline")
        raw_days = values.get("days")
        if raw_days is None:
            return cls(pipeline=pipeline, days=DEFAULT_DAYS)
        if not raw_days.isascii() or not raw_days.isdigit() or len(raw_days) > 6:
            raise Malformed(f"query parameter 'days' must be a whole number of days, got {raw_days[:32]!r}")
        days = int(raw_days)
        if not 1 <= days <= MAX_DAYS:
            raise Malformed(f"query parameter 'days' must be between 1 and {MAX_DAYS}, got {days}")
        return cls(pipeline=pipeline, days=days)

"""Signing and verifying the generic webhook's requests (standard library only: receivers may copy
this file as it is).

The header ``X-Relco-Signature: t=<unix seconds>,v1=<hex>`` carries the time of signing and the
HMAC-SHA256 of ``"<t>.<body>"`` under the shared signing key. Signing the time with the body lets a
receiver refuse a captured request replayed later: it checks the signature, then that ``t`` is
within its tolerance of its own clock.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Relco-Signature"
SCHEME = "v1"
# Five minutes either way absorbs clock skew and delivery delay, and little else.
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """The request is not signed with the key, is malformed, or is outside the replay window."""


def _digest(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(body: bytes, key: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body`` signed now (or at ``timestamp``)."""
    signed_at = int(time.time()) if timestamp is None else timestamp
    return f"t={signed_at},{SCHEME}={_digest(key, signed_at, body)}"


def verify(
    header: str | None,
    body: bytes,
    key: bytes,
    *,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a request's signature header against its raw body; return the signing time.

    Raises ``SignatureError`` when the header is missing or malformed, no ``v1`` signature matches
    (compared in constant time), or the signing time is further than ``tolerance_s`` from ``now``.
    Verify the raw bytes received, before any JSON parsing.
    """
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == SCHEME and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header")
    expected = _digest(key, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("signature does not match the body")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"signed {int(current - timestamp)}s ago: outside the {tolerance_s}s window")
    return timestamp

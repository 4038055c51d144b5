"""The one claim lease (chalicelib/domain/leases.py) outlives the slowest live holder of a claim.
The delivery bound is tests/unit/test_template.py's test_a_delivery_claim_outlives_the_slowest_delivery."""

from __future__ import annotations

from chalicelib.domain.leases import CLAIM_LEASE
from infra.sizing import AWS_CALL_S, AWS_CALLS_PER_EVENT


def test_a_start_claim_outlives_the_slowest_start() -> None:
    # A start is part of one event's work, which makes at most AWS_CALLS_PER_EVENT calls.
    assert CLAIM_LEASE.total_seconds() > AWS_CALLS_PER_EVENT * AWS_CALL_S

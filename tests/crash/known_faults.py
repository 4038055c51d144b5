"""THE list of crash cases known to fail on today's code, each with the fault (of issue 12 or
issue 14) it fails by. Every case listed is ``xfail(strict=True)``: when a fix lands, its cases pass, the
strict xfail turns into a failure, and the entry (or the points of it) must be removed here.
Nothing else may be excused: any other failing point is a failure.

Names: the named cases are ``named/<case>``; sweep points are
``<scenario>/<function>#<n-th invocation>/before <service.Operation>#<n-th such call>`` or
``.../after last call`` (see ``tests/crash/sweep.py``, ``points_of``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownFault:
    fault: str
    # The invariants it breaks (``Violation.kind``): what the randomized pass excuses while the
    # fault is listed.
    breaks: frozenset[str]
    cases: frozenset[str]


# Empty: every fault of issue 12 is fixed, as are the two break-glass faults of issue 14 the
# freeze scenario found (a break-glass release behind an upload the freeze holds, and one
# superseded by an upload during the freeze), and every point holds every invariant.
KNOWN_FAULTS: tuple[KnownFault, ...] = ()


def known_fault_of(case: str) -> KnownFault | None:
    return next((known for known in KNOWN_FAULTS if case in known.cases), None)

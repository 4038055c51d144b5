"""THE list of crash cases known to fail on today's code, each with the fault (of issue 12, 14
or 15) it fails by. Every case listed is ``xfail(strict=True)``: when a fix lands, its cases pass, the
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


# Every fault of issue 12 is fixed, as are the two break-glass faults of issue 14 the freeze
# scenario found and the three of issue 15 the promotion scenarios found (a promotion's link now
# written with it; a promotion of a release rolled back upstream stopped by the lane when its turn
# comes; a promotion whose wake-up was lost goes to the release last good when it runs, as
# documented).
KNOWN_FAULTS: tuple[KnownFault, ...] = ()

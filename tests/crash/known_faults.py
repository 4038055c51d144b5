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


# Every fault of issue 12 is fixed. Issue 14's release gates, found by the sweep's freeze
# scenario (chalicelib/domain/lane.py, ``Lane._enter``):
KNOWN_FAULTS: tuple[KnownFault, ...] = (
    KnownFault(
        # An upload waits out the freeze at the head of a free slot; a break-glass deploy then
        # enters: ``_promote`` finds the frozen head and starts nothing, and ``admit`` (the
        # pipeline's on_busy, "queue") puts the break-glass release behind it, QUEUED "pipeline
        # busy with" the frozen upload. It starts only after the freeze has ended and that upload
        # has deployed, and leaves the fleet on its (older) revision. Here the break-glass request
        # dies, the CLI's repeat waits out the Idempotency-Key's claim, and v2 is uploaded first.
        fault="break-glass waits behind an upload the freeze holds",
        breaks=frozenset({"break_glass_waited", "served_not_newest"}),
        cases=frozenset(
            {
                "freeze_holds_until_its_end/api_handler#1/before s3.HeadObject#1",
                "freeze_holds_until_its_end/api_handler#1/before dynamodb.BatchGetItem#1",
                "freeze_holds_until_its_end/api_handler#1/before dynamodb.TransactWriteItems#1",
            }
        ),
    ),
    KnownFault(
        # A break-glass release waits for a busy slot (v1's start was retried after a crash); an
        # upload during the freeze supersedes it (the freeze's rule: only the newest waits), so
        # the break-glass deploy never runs and the upload waits for the freeze's end.
        fault="an upload during a freeze supersedes a waiting break-glass release",
        breaks=frozenset({"break_glass_waited"}),
        cases=frozenset(
            {"freeze_holds_until_its_end/on_artifact_event#1/before codedeploy.CreateDeployment#1"}
        ),
    ),
)


def known_fault_of(case: str) -> KnownFault | None:
    return next((known for known in KNOWN_FAULTS if case in known.cases), None)

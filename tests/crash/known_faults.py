"""THE list of crash cases known to fail on today's code, each with the fault of issue 12 it
fails by. Every case listed is ``xfail(strict=True)``: when a fix lands, its cases pass, the
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


KNOWN_FAULTS: tuple[KnownFault, ...] = (
    KnownFault(
        "issue 12, also seen: a same-key API retry after a crash answers 409 'still being "
        "answered' although the holder is dead",
        frozenset({"api_retry_refused"}),
        frozenset(
            {
                "named/api_retry_refused_after_crash",
                "cancel_deploying/api_handler#1/before codedeploy.StopDeployment#1",
                "cancel_deploying/api_handler#1/before dynamodb.GetItem#1",
                "cancel_deploying/api_handler#1/before dynamodb.GetItem#2",
                "cancel_deploying/api_handler#1/before dynamodb.PutItem#2",
                "cancel_deploying/api_handler#1/before dynamodb.TransactWriteItems#1",
                "cancel_waiting/api_handler#1/before dynamodb.GetItem#1",
                "cancel_waiting/api_handler#1/before dynamodb.GetItem#2",
                "cancel_waiting/api_handler#1/before dynamodb.GetItem#3",
                "cancel_waiting/api_handler#1/before dynamodb.GetItem#4",
                "cancel_waiting/api_handler#1/before dynamodb.GetItem#5",
                "cancel_waiting/api_handler#1/before dynamodb.PutItem#2",
                "cancel_waiting/api_handler#1/before dynamodb.TransactWriteItems#1",
            }
        ),
    ),
)


def known_fault_of(case: str) -> KnownFault | None:
    return next((known for known in KNOWN_FAULTS if case in known.cases), None)

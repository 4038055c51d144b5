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
# scenario found. Listed: the three faults of issue 15 (promotion) the promotion scenarios found.
KNOWN_FAULTS: tuple[KnownFault, ...] = (
    KnownFault(
        # service/promotions.py links the promotion from its upstream release's history only in
        # the call that created it (``if created``): a process that dies between the promotion's
        # write and the link's leaves it unlinked for good, as the wake-up's redelivery, reconcile
        # or a repeated request find the promotion already made.
        "promotion never linked from its upstream release after a crash between the two writes",
        frozenset({"promotion_link"}),
        frozenset(
            {
                "promotion_after_soak/on_verify_message#1/before codedeploy.CreateDeployment#1",
                "promotion_after_soak/on_verify_message#1/before dynamodb.GetItem#3",
                "promotion_after_soak/on_verify_message#1/before dynamodb.TransactWriteItems#2",
                "promotion_after_soak/on_verify_message#1/before dynamodb.TransactWriteItems#3",
                "promotion_cancelled_by_rollback/api_handler#1/before dynamodb.GetItem#2",
                "promotion_cancelled_by_rollback/api_handler#1/before dynamodb.TransactWriteItems#2",
                "promotion_cancelled_by_rollback/on_verify_message#1/before codedeploy.CreateDeployment#1",
                "promotion_cancelled_by_rollback/on_verify_message#1/before dynamodb.GetItem#3",
                "promotion_cancelled_by_rollback/on_verify_message#1/before dynamodb.TransactWriteItems#2",
                "promotion_cancelled_by_rollback/on_verify_message#1/before dynamodb.TransactWriteItems#3",
            }
        ),
    ),
    KnownFault(
        # The rollback's write marks v2 (160 s); the API process dies before cancelling v2's
        # promotion waiting downstream; the CLI's repeat is held off by the Idempotency-Key until
        # about 219 s and reconcile comes at 300 s, but v1's promotion ends at 201 s and the lane
        # hands the slot to v2's: production deploys the revision rolled back upstream.
        "a promotion of a release rolled back upstream deploys when the rollback request dies "
        "before cancelling it",
        frozenset({"promoted_after_rollback"}),
        frozenset(
            {
                "promotion_cancelled_by_rollback/api_handler#2/before codedeploy.CreateDeployment#1",
                "promotion_cancelled_by_rollback/api_handler#2/before dynamodb.BatchGetItem#4",
                "promotion_cancelled_by_rollback/api_handler#2/before dynamodb.BatchGetItem#5",
                "promotion_cancelled_by_rollback/api_handler#2/before dynamodb.TransactWriteItems#2",
                "promotion_cancelled_by_rollback/api_handler#2/before dynamodb.TransactWriteItems#3",
            }
        ),
    ),
    KnownFault(
        # v1's soak-end wake-up (131 s) dies; SQS hands it back only after the verify queue's
        # visibility timeout (3960 s), and by reconcile (300 s) v2 (verified at 143 s) is the last
        # good release: promote_due looks at the last good release only, so v1, which stayed last
        # good for the whole soak, is never promoted.
        "a due promotion whose wake-up died is dropped once a newer release is verified upstream",
        frozenset({"promotion_late"}),
        frozenset(
            {
                "promotion_cancelled_by_rollback/on_verify_message#1/before dynamodb.BatchGetItem#1",
                "promotion_cancelled_by_rollback/on_verify_message#1/before dynamodb.BatchGetItem#2",
                "promotion_cancelled_by_rollback/on_verify_message#1/before dynamodb.BatchGetItem#3",
                "promotion_cancelled_by_rollback/on_verify_message#1/before dynamodb.GetItem#1",
                "promotion_cancelled_by_rollback/on_verify_message#1/before dynamodb.GetItem#2",
                "promotion_cancelled_by_rollback/on_verify_message#1/before dynamodb.TransactWriteItems#1",
            }
        ),
    ),
)


def known_fault_of(case: str) -> KnownFault | None:
    return next((known for known in KNOWN_FAULTS if case in known.cases), None)

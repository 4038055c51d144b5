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
        "issue 12 fault 1: duplicate Slack root card (died after chat.postMessage of the card, "
        "before its thread was stored)",
        frozenset({"slack_root_duplicate"}),
        frozenset(
            {
                "named/duplicate_slack_root_card",
                "one_upload/on_notify_message#1/before dynamodb.GetItem#2",
                "one_upload/on_notify_message#1/before dynamodb.TransactWriteItems#1",
            }
        ),
    ),
    KnownFault(
        "issue 12 fault 2: duplicate Slack reply (died after posting a reply, before the delivery "
        "was confirmed)",
        frozenset({"slack_reply_duplicate"}),
        frozenset(
            {
                "named/duplicate_slack_reply",
                "one_upload/on_notify_message#1/before dynamodb.UpdateItem#1",
                "one_upload/on_notify_message#2/before dynamodb.UpdateItem#1",
                "one_upload/on_notify_message#3/before dynamodb.UpdateItem#1",
            }
        ),
    ),
    KnownFault(
        "issue 12 fault 3: an older upload ends up served (its event's retry deployed it over a "
        "newer upload)",
        frozenset({"served_not_newest"}),
        frozenset(
            {
                "named/older_upload_served",
                "second_upload_queues/on_artifact_event#1/before dynamodb.GetItem#1",
                "second_upload_queues/on_artifact_event#1/before dynamodb.GetItem#2",
                "second_upload_queues/on_artifact_event#1/before dynamodb.TransactWriteItems#1",
                "second_upload_queues/on_artifact_event#1/before s3.HeadObject#1",
            }
        ),
    ),
    KnownFault(
        "issue 12 fault 4: a healthy release failed verification because the coordinator was late",
        frozenset({"healthy_failed_verification", "served_not_newest"}),
        frozenset(
            {
                "named/healthy_release_failed_late",
                "cancel_waiting/on_codedeploy_event#2/before sqs.SendMessage#1",
                "cancel_waiting/on_verify_message#1/before dynamodb.GetItem#1",
                "cancel_waiting/on_verify_message#1/before dynamodb.GetItem#2",
                "cancel_waiting/on_verify_message#1/before dynamodb.TransactWriteItems#1",
                "cancel_waiting/on_verify_message#1/before elbv2.DescribeTargetHealth#1",
                "failed_deploy_rolls_back/on_codedeploy_event#2/before sqs.SendMessage#1",
                "failed_deploy_rolls_back/on_codedeploy_event#6/before sqs.SendMessage#1",
                "failed_deploy_rolls_back/on_verify_message#1/before dynamodb.GetItem#1",
                "failed_deploy_rolls_back/on_verify_message#1/before dynamodb.GetItem#2",
                "failed_deploy_rolls_back/on_verify_message#1/before dynamodb.TransactWriteItems#1",
                "failed_deploy_rolls_back/on_verify_message#1/before elbv2.DescribeTargetHealth#1",
                "failed_deploy_rolls_back/on_verify_message#3/before dynamodb.GetItem#1",
                "failed_deploy_rolls_back/on_verify_message#3/before dynamodb.GetItem#2",
                "failed_deploy_rolls_back/on_verify_message#3/before dynamodb.TransactWriteItems#1",
                "failed_deploy_rolls_back/on_verify_message#3/before elbv2.DescribeTargetHealth#1",
                "one_upload/on_codedeploy_event#2/before sqs.SendMessage#1",
                "one_upload/on_verify_message#1/before dynamodb.GetItem#1",
                "one_upload/on_verify_message#1/before dynamodb.GetItem#2",
                "one_upload/on_verify_message#1/before dynamodb.TransactWriteItems#1",
                "one_upload/on_verify_message#1/before elbv2.DescribeTargetHealth#1",
                "second_upload_queues/on_codedeploy_event#2/before sqs.SendMessage#1",
                "second_upload_queues/on_codedeploy_event#4/before sqs.SendMessage#1",
                "second_upload_queues/on_verify_message#1/before dynamodb.GetItem#1",
                "second_upload_queues/on_verify_message#1/before dynamodb.GetItem#2",
                "second_upload_queues/on_verify_message#1/before dynamodb.TransactWriteItems#1",
                "second_upload_queues/on_verify_message#1/before elbv2.DescribeTargetHealth#1",
                "second_upload_queues/on_verify_message#3/before dynamodb.GetItem#1",
                "second_upload_queues/on_verify_message#3/before dynamodb.GetItem#2",
                "second_upload_queues/on_verify_message#3/before dynamodb.TransactWriteItems#1",
                "second_upload_queues/on_verify_message#3/before elbv2.DescribeTargetHealth#1",
            }
        ),
    ),
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

"""A notify handler that dies between its Slack post and its bookkeeping: once its delivery's
lease has passed and SQS hands the message back, the retry finds its own post by the metadata it
carries (conversations.history for the root card, conversations.replies for a reply) and posts
nothing twice (issue 12, faults 1 and 2). A death is a ``BaseException``: no ``except Exception``
cleanup runs, and the container's cached clients are gone."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.domain.leases import CLAIM_LEASE
from chalicelib.domain.release import ReleaseState
from sandbox import moto_extensions
from sandbox.slack_api import SlackApi
from tests.integration import test_notifications as notifications
from tests.integration.conftest import LOAD_BALANCED, World
from tests.integration.test_notifications import Pump, header, thread_of, upload
from tests.integration.test_verification import fail

# The notification tests' world: its pipelines file with every route, Slack, a webhook receiver.
pipelines_file = notifications.pipelines_file
receiver = notifications.receiver
slack = notifications.slack
pump = notifications.pump


class LambdaDied(BaseException):
    """The function timed out or ran out of memory right here."""


def die_before(client: Any, operation: str, when: Callable[[dict[str, Any]], bool]) -> None:
    """The next call of ``operation`` on ``client`` whose parameters match ``when`` never happens:
    the process dies just before it."""

    def hook(params: dict[str, Any], **_: Any) -> None:
        if when(params):
            raise LambdaDied(operation)

    client.meta.events.register(f"provide-client-params.dynamodb.{operation}", hook)


def deliveries_client() -> Any:
    """The DynamoDB client of the running container's delivery log."""
    notifications_wired = bootstrap.wiring().notifications
    assert notifications_wired is not None
    return notifications_wired.deliveries._client  # type: ignore[attr-defined]


def writes_thread(params: dict[str, Any]) -> bool:
    return any("notification_threads" in op.get("Put", {}).get("Item", {}) for op in params["TransactItems"])


def confirms_delivery(params: dict[str, Any]) -> bool:
    return str(params["Key"]["sk"]["S"]).startswith("DLV#") and "delivered" in json.dumps(
        params.get("ExpressionAttributeValues", {})
    )


def slack_records(pump: Pump) -> list[dict[str, Any]]:
    pump.publish(pump.stream_records())
    return [r for r in pump.receive() if json.loads(r["body"])["route"].startswith("slack-")]


def crash_then_retry_after_the_lease(world: World, pump: Pump, records: list[dict[str, Any]]) -> None:
    """Deliver ``records`` into a death, then let time pass as AWS would: the delivery's claim
    outlives its lease and the message becomes visible again; the next container delivers it."""
    with pytest.raises(LambdaDied):
        pump.deliver(records)
    bootstrap.reset()  # a new container: fresh clients, no hooks
    dynamodb = world.session.client("dynamodb")
    expired = int(datetime.now(UTC).timestamp() - CLAIM_LEASE.total_seconds() - 1)
    for record in records:
        body = json.loads(record["body"])
        claims = dynamodb.query(
            TableName=world.provisioned.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :dlv)",
            ExpressionAttributeValues={":pk": {"S": f"REL#{body['release_id']}"}, ":dlv": {"S": "DLV#"}},
        )["Items"]
        for claim in claims:
            if claim["status"]["S"] == "sending":
                dynamodb.update_item(
                    TableName=world.provisioned.table,
                    Key={"pk": claim["pk"], "sk": claim["sk"]},
                    UpdateExpression="SET claimed_at = :expired",
                    ExpressionAttributeValues={":expired": {"N": str(expired)}},
                )
        pump.sqs.change_message_visibility(
            QueueUrl=world.provisioned.notify_queue_url,
            ReceiptHandle=record["receiptHandle"],
            VisibilityTimeout=0,
        )
    assert pump.run() == []


def slack_calls(slack: SlackApi, method: str) -> list[Any]:
    return [call for call in slack.calls() if call.method == method and call.status == 200]


def test_death_after_the_root_card_before_its_thread_is_stored_posts_one_card(
    world: World, pump: Pump, slack: SlackApi
) -> None:
    release_id, _ = upload(world, "1.0.0")
    records = slack_records(pump)
    assert [json.loads(r["body"])["notification"] for r in records] == ["started"]
    die_before(bootstrap.wiring().store._client, "TransactWriteItems", writes_thread)  # type: ignore[attr-defined]

    crash_then_retry_after_the_lease(world, pump, records)

    cards = slack.messages("#deploys")
    assert len(cards) == 1
    assert cards[0].metadata is not None  # what the retry found it by
    root, replies = thread_of(world, slack, release_id)
    assert root.ts == cards[0].ts  # the thread stored is the card the dead attempt posted
    assert replies == []
    assert len(slack_calls(slack, "chat.postMessage")) == 1
    assert len(slack_calls(slack, "conversations.history")) == 1


def test_death_after_the_root_card_is_stored_before_the_delivery_is_confirmed_posts_nothing_more(
    world: World, pump: Pump, slack: SlackApi
) -> None:
    """Found by the crash-point sweep: the retry saw the stored thread and treated its own card's
    event as a later one, editing the card and replying to it."""
    release_id, _ = upload(world, "1.0.0")
    records = slack_records(pump)
    assert [json.loads(r["body"])["notification"] for r in records] == ["started"]
    die_before(deliveries_client(), "UpdateItem", confirms_delivery)

    crash_then_retry_after_the_lease(world, pump, records)

    assert len(slack.messages("#deploys")) == 1
    _, replies = thread_of(world, slack, release_id)
    assert replies == []
    assert len(slack_calls(slack, "chat.postMessage")) == 1
    assert slack_calls(slack, "chat.update") == []


def test_death_after_a_reply_before_the_delivery_is_confirmed_posts_one_reply(
    world: World, pump: Pump, slack: SlackApi
) -> None:
    release_id, deployment_id = upload(world, "1.0.0")
    assert pump.run() == []
    # The normal path never looks: the first attempt of each delivery just posts.
    assert slack_calls(slack, "conversations.history") == slack_calls(slack, "conversations.replies") == []
    moto_extensions.complete(deployment_id, "Stopped")
    world.codedeploy_event(deployment_id, "STOP", "shop", "shop-prod")
    records = slack_records(pump)
    assert [json.loads(r["body"])["notification"] for r in records] == ["stopped"]
    die_before(deliveries_client(), "UpdateItem", confirms_delivery)

    crash_then_retry_after_the_lease(world, pump, records)

    root, replies = thread_of(world, slack, release_id)
    assert header(root) == ":black_square_for_stop: Stopped: shop-prod 1.0.0"
    assert len(replies) == 1
    assert len(slack_calls(slack, "conversations.replies")) == 1


def test_death_after_a_failure_card_and_its_reply_posts_each_once(
    world: World, pump: Pump, slack: SlackApi
) -> None:
    """A failure that opens the thread posts the card and the reply in one delivery: the retry
    finds both."""
    slack.fail_next("chat.postMessage", error="channel_not_found")  # "started" is dead-lettered
    release_id, deployment_id = upload(world, "1.0.0")
    assert pump.run() == []
    fail(world, deployment_id, world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0])
    assert world.release(release_id).state is ReleaseState.FAILED
    records = slack_records(pump)
    assert [json.loads(r["body"])["notification"] for r in records] == ["failed"]
    die_before(deliveries_client(), "UpdateItem", confirms_delivery)

    crash_then_retry_after_the_lease(world, pump, records)

    root, replies = thread_of(world, slack, release_id)
    assert header(root).startswith(":x: Failed")
    assert len(replies) == 1
    assert len(slack.messages("#deploys")) == 2

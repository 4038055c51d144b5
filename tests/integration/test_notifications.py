"""Notifications end to end on moto: the table's stream (read through DynamoDB Streams and handed
to ``on_release_stream`` as Lambda would), the FIFO notify queue (received from moto and handed to
``on_notify_message``), the local Slack look-alike, SES mail captured by moto, and a signed-webhook
receiver on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID

from chalicelib import bootstrap
from chalicelib.adapters.notify_queue import SqsNotifyQueue
from chalicelib.adapters.slack import SlackIncomingWebhook
from chalicelib.adapters.webhook import HttpWebhook
from chalicelib.domain.notification_signature import SIGNATURE_HEADER, verify
from chalicelib.domain.notifications import NotifyMessage, SlackThread
from chalicelib.domain.notify_routes import Notification
from chalicelib.domain.release import EventType, HistoryEvent, ReleaseState, rollback_release_id
from chalicelib.service.notification_ports import DeliveryDeferred, DeliveryRejected, NotQueued
from sandbox import moto_extensions
from sandbox.event_pump import lambda_sqs_record, lambda_stream_record
from sandbox.slack_api import Message, SlackApi
from tests.integration.conftest import LOAD_BALANCED, PIPELINES_TOML, REGION, World
from tests.integration.test_verification import fail, run_checks, succeed

SIGNING_KEY = "whsec-test-key"
SENDER = "relco@acme.example"
ONCALL = "oncall@acme.example"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{DEFAULT_ACCOUNT_ID}:relco-deploys"
# shop-prod is the last [[pipeline]] in the shared file: these tables belong to it.
NOTIFY_ROUTES = f"""
[pipeline.rollback]
on_deploy_failure = true

[[pipeline.notify]]
kind = "slack"
channel = "#deploys"
token_parameter = "/relco/slack/bot-token"
on = ["started", "queued", "failed", "verify_failed", "rolled_back", "stopped"]
mention_on_failure = ["S0ONCALL"]
authors = {{ "alice@acme.example" = "U0ALICE" }}

[[pipeline.notify]]
kind = "email"
sender = "{SENDER}"
to = ["{ONCALL}"]
on = ["failed", "verify_failed", "rolled_back"]

[[pipeline.notify]]
kind = "webhook"
url_parameter = "/relco/webhook/url"
signing_key_secret = "relco/webhook-signing-key"

[[pipeline.notify]]
kind = "slack_webhook"
url_parameter = "/relco/slack/webhook-url"
on = ["failed", "rolled_back"]
mention_on_failure = ["S0ONCALL"]

[[pipeline.notify]]
kind = "sns"
topic_arn = "{TOPIC_ARN}"
on = ["failed", "rolled_back"]
"""


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.toml"
    path.write_text(PIPELINES_TOML + NOTIFY_ROUTES, encoding="utf-8")
    return path


@dataclass
class Receiver:
    """A webhook receiver that keeps what it was sent."""

    server: ThreadingHTTPServer
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/relco"

    def payloads(self) -> list[dict[str, Any]]:
        """Every request body, each checked against its signature with the receiver helper."""
        verified = []
        for headers, body in self.requests:
            verify(headers.get(SIGNATURE_HEADER), body, SIGNING_KEY.encode())
            verified.append(json.loads(body))
        return verified


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Receiver(server, received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def slack() -> Iterator[SlackApi]:
    with SlackApi() as api:
        yield api


class Pump:
    """Plays Lambda's event sources: the table's stream into ``on_release_stream``, the notify
    queue into ``on_notify_message`` (deleting what the handler did not report as failed)."""

    def __init__(self, world: World) -> None:
        self.world = world
        # botocore addresses a stream ARN's account endpoint, which moto does not serve.
        self.streams = world.session.client(
            "dynamodbstreams", config=Config(account_id_endpoint_mode="disabled")
        )
        dynamodb = world.session.client("dynamodb")
        self.stream_arn = dynamodb.describe_table(TableName=world.provisioned.table)["Table"][
            "LatestStreamArn"
        ]
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        self.iterators = [
            self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for shard in shards
        ]
        self.sqs = world.session.client("sqs")

    def stream_records(self) -> list[dict[str, Any]]:
        """New stream records, shaped as Lambda hands them over."""
        records: list[dict[str, Any]] = []
        for number, iterator in enumerate(self.iterators):
            response = self.streams.get_records(ShardIterator=iterator)
            self.iterators[number] = response["NextShardIterator"]
            records.extend(lambda_stream_record(record, self.stream_arn) for record in response["Records"])
        return records

    def publish(self, records: list[dict[str, Any]]) -> Any:
        return self.world.invoke("on_release_stream", {"Records": records})

    def receive(self) -> list[dict[str, Any]]:
        """Messages due on the notify queue, as Lambda's SQS records."""
        queue_url = self.world.provisioned.notify_queue_url
        arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        messages = self.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        return [lambda_sqs_record(message, arn, REGION) for message in messages]

    def deliver(self, records: list[dict[str, Any]]) -> list[str]:
        """Hand a batch to on_notify_message; delete what succeeded. Returns the failed ids."""
        response = self.world.invoke("on_notify_message", {"Records": records})
        failed = [item["itemIdentifier"] for item in response["batchItemFailures"]]
        for record in records:
            if record["messageId"] not in failed:
                self.sqs.delete_message(
                    QueueUrl=self.world.provisioned.notify_queue_url, ReceiptHandle=record["receiptHandle"]
                )
        return failed

    def run(self) -> list[str]:
        """Everything the stream has, through the queue, until nothing is due. Returns failed ids."""
        self.publish(self.stream_records())
        failed: list[str] = []
        while batch := self.receive():
            failed += self.deliver(batch)
        return failed


@pytest.fixture
def pump(world: World, slack: SlackApi, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Pump:
    ssm = world.session.client("ssm")
    ssm.put_parameter(Name="/relco/slack/bot-token", Value="xoxb-test", Type="SecureString")
    ssm.put_parameter(Name="/relco/webhook/url", Value=receiver.url, Type="String")
    world.session.client("secretsmanager").create_secret(
        Name="relco/webhook-signing-key", SecretString=SIGNING_KEY
    )
    ssm.put_parameter(
        Name="/relco/slack/webhook-url", Value=slack.webhook_url("deploys"), Type="SecureString"
    )
    world.session.client("sns").create_topic(Name="relco-deploys")
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    bootstrap.reset()
    return Pump(world)


def upload(world: World, version: str) -> tuple[str, str]:
    """Upload a bundle to shop-prod with CI's metadata; CodeDeploy deploys it to every instance."""
    uploaded = world.upload(
        f"shop/prod/shop-{version}.zip",
        metadata={
            "version-label": version,
            "author": "alice@acme.example",
            "commit": "0123456789abcdef0123",
            "message": "Cart <beta> & checkout",
        },
    )
    release_id = str(world.deliver_upload(uploaded.eventbridge)["releases"][0]["id"])
    deployment_id = world.release(release_id).deployment_id
    assert deployment_id is not None
    instances = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids
    moto_extensions.set_instance_targets(deployment_id, {i: {"status": "Succeeded"} for i in instances})
    return release_id, deployment_id


def thread_of(world: World, slack: SlackApi, release_id: str) -> tuple[Message, list[Message]]:
    """The release's root card and its replies, found through the thread stored on the release."""
    [stored] = world.release(release_id).notification_threads.values()
    thread = SlackThread.from_stored(stored)
    channel, ts = thread.channel, thread.ts
    [root] = [m for m in slack.messages(channel) if m.ts == ts]
    return root, slack.thread(channel, ts)


def header(message: Message) -> str:
    assert message.blocks is not None
    return str(message.blocks[0]["text"]["text"])


def sent_mail() -> list[Any]:
    return list(get_backend("ses")[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


def subscribe_queue(world: World) -> str:
    """An SQS queue subscribed to the notification topic: what a team fanning out would do."""
    sqs = world.session.client("sqs")
    queue_url = sqs.create_queue(QueueName="team-deploy-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    world.session.client("sns").subscribe(TopicArn=TOPIC_ARN, Protocol="sqs", Endpoint=arn)
    return str(queue_url)


def test_release_from_upload_to_failure_and_rollback(
    world: World, pump: Pump, slack: SlackApi, receiver: Receiver
) -> None:
    team_queue = subscribe_queue(world)
    good, good_deployment = upload(world, "1.0.0")
    assert pump.run() == []
    succeed(world, good_deployment)
    assert pump.run() == []
    run_checks(world, 1)
    assert world.release(good).state is ReleaseState.SUCCEEDED
    assert pump.run() == []

    bad, bad_deployment = upload(world, "2.0.0")
    assert pump.run() == []
    instance = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0]
    fail(world, bad_deployment, instance)
    rollback = rollback_release_id(bad)
    assert pump.run() == []
    rollback_deployment = world.release(rollback).deployment_id
    assert rollback_deployment is not None
    instances = world.provisioned.load_balanced[LOAD_BALANCED].instance_ids
    moto_extensions.set_instance_targets(rollback_deployment, {i: {"status": "Succeeded"} for i in instances})
    succeed(world, rollback_deployment)
    run_checks(world, 1)
    assert world.release(rollback).state is ReleaseState.SUCCEEDED
    assert pump.run() == []

    # The failed release: one root card, edited to FAILED, one reply for its one later transition.
    root, replies = thread_of(world, slack, bad)
    assert header(root) == ":x: Failed: shop-prod 2.0.0"
    assert len(root.edits) == 1
    assert len(replies) == 1
    failure = replies[0].text or ""
    assert failure.startswith("<!subteam^S0ONCALL> <@U0ALICE> :x: *Failed*: CodeDeploy deployment")
    assert f"*ValidateService* failed on `{instance}` (scripts/validate_service.sh, ScriptFailed)" in failure
    assert "```\n" in failure
    assert failure.rstrip("`\n").endswith("health check failed: HTTP 500")
    fields = json.dumps(root.blocks)
    assert "Cart &lt;beta&gt; &amp; checkout" in fields  # user text escaped
    assert "Cart <beta>" not in fields

    # The good release and the rollback: started, verifying, and their outcome.
    good_root, good_replies = thread_of(world, slack, good)
    assert header(good_root) == ":white_check_mark: Succeeded: shop-prod 1.0.0"
    assert [reply.text.split(" ")[0] for reply in good_replies if reply.text] == [
        ":mag:",
        ":white_check_mark:",
    ]
    assert len(good_root.edits) == 2
    rollback_root, rollback_replies = thread_of(world, slack, rollback)
    assert header(rollback_root) == ":leftwards_arrow_with_hook: Rolled back: shop-prod 1.0.0"
    assert len(rollback_replies) == 2
    assert "*Rolled back*: verified" in (rollback_replies[-1].text or "")
    roots = [m for m in slack.messages("#deploys") if m.thread_ts is None]
    assert len(roots) == 3
    assert slack.render_thread_text(root.channel, root.ts).splitlines()[:2] == [
        "Failed: shop-prod 2.0.0",
        f"  ↳ <!subteam^S0ONCALL> <@U0ALICE> :x: *Failed*: {world.release(bad).reason}",
    ]

    # Email: the failure and the rollback (moto keeps only the HTML part of a two-part mail).
    mail = {message.subject: message for message in sent_mail()}
    assert set(mail) == {"[FAILED] shop-prod 2.0.0", "[ROLLED BACK] shop-prod 1.0.0"}
    failed_mail = mail["[FAILED] shop-prod 2.0.0"]
    assert failed_mail.source == SENDER
    assert failed_mail.destinations == {"ToAddresses": [ONCALL]}
    assert "health check failed: HTTP 500" in failed_mail.body
    assert "Cart &lt;beta&gt; &amp; checkout" in failed_mail.body

    # The incoming webhook: one message per event, the card with the event's reply.
    [failed_post, rolled_back_post] = slack.webhook_messages("deploys")
    assert failed_post.text == "FAILED: shop-prod 2.0.0"
    assert "<!subteam^S0ONCALL> :x: *Failed*" in json.dumps(failed_post.blocks)
    assert rolled_back_post.text == "ROLLED BACK: shop-prod 1.0.0"

    # SNS: a subject for people, the JSON of release and event for programs.
    sqs = world.session.client("sqs")
    envelopes = [
        json.loads(m["Body"])
        for m in sqs.receive_message(QueueUrl=team_queue, MaxNumberOfMessages=10)["Messages"]
    ]
    assert sorted(e["Subject"] for e in envelopes) == [
        "[FAILED] shop-prod 2.0.0",
        "[ROLLED BACK] shop-prod 1.0.0",
    ]
    assert sorted(json.loads(e["Message"])["release"]["id"] for e in envelopes) == sorted([bad, rollback])
    assert {e["MessageAttributes"]["pipeline"]["Value"] for e in envelopes} == {"shop-prod"}

    # The webhook: every request verified with the receiver-side helper.
    received = [(p["release"]["id"], p["notification"]) for p in receiver.payloads()]
    assert sorted(received) == sorted(
        [
            (good, "started"),
            (good, "succeeded"),
            (bad, "started"),
            (bad, "failed"),
            (rollback, "started"),
            (rollback, "rolled_back"),
        ]
    )


def test_duplicated_stream_records_and_queue_messages_post_once(
    world: World, pump: Pump, slack: SlackApi, receiver: Receiver
) -> None:
    upload(world, "1.0.0")
    records = pump.stream_records()
    pump.publish(records)
    pump.publish(records)  # the stream delivers the batch again
    batch = pump.receive()
    assert len(batch) == 2  # Slack and the webhook; FIFO deduplication dropped the copies

    assert pump.deliver(batch) == []
    assert pump.deliver(batch) == []  # the queue delivers the same messages again
    # A copy past the FIFO deduplication window: a new message id, the same delivery.
    late_copy = [{**record, "messageId": f"{record['messageId']}-late"} for record in batch]
    assert pump.deliver(late_copy) == []

    posts = [call for call in slack.calls() if call.method == "chat.postMessage"]
    assert len(posts) == 1
    assert len(receiver.requests) == 1


def test_rate_limited_slack_posts_exactly_once(world: World, pump: Pump, slack: SlackApi) -> None:
    # A short Retry-After is waited out inside the delivery.
    slack.fail_next("chat.postMessage", status=429, retry_after_s=1)
    first, _ = upload(world, "1.0.0")
    assert pump.run() == []
    assert [c.status for c in slack.calls() if c.method == "chat.postMessage"] == [429, 200]
    assert len(slack.messages("#deploys")) == 1

    # A long one puts the message back on the queue for that long, without posting.
    moto_extensions.complete(world.release(first).deployment_id or "", "Stopped")
    world.codedeploy_event(world.release(first).deployment_id or "", "STOP", "shop", "shop-prod")
    slack.fail_next("chat.update", status=429, retry_after_s=30)
    pump.publish(pump.stream_records())
    batch = pump.receive()
    slack_batch = [r for r in batch if json.loads(r["body"])["route"].startswith("slack-")]
    assert [r["messageId"] for r in slack_batch] == pump.deliver(slack_batch)
    assert pump.receive() == []  # not due for 30 s
    pump.sqs.change_message_visibility(  # ...which the test does not wait for
        QueueUrl=world.provisioned.notify_queue_url,
        ReceiptHandle=slack_batch[0]["receiptHandle"],
        VisibilityTimeout=0,
    )
    assert pump.run() == []
    root, replies = thread_of(world, slack, first)
    assert header(root) == ":black_square_for_stop: Stopped: shop-prod 1.0.0"
    assert len(replies) == 1
    assert [c.status for c in slack.calls() if c.method == "chat.update"] == [429, 200]


def test_permanent_slack_error_goes_to_the_dead_letter_queue_and_email_still_goes_out(
    world: World, pump: Pump, slack: SlackApi
) -> None:
    slack.fail_next("chat.postMessage", error="channel_not_found", times=2)
    release_id, deployment_id = upload(world, "1.0.0")
    fail(world, deployment_id, world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0])
    assert world.release(release_id).state is ReleaseState.FAILED

    assert pump.run() == []

    assert slack.messages("#deploys") == []
    dead = pump.sqs.receive_message(
        QueueUrl=world.provisioned.notify_dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)
    assert reasons == ["Slack chat.postMessage: channel_not_found"] * 2
    assert sorted(json.loads(m["Body"])["notification"] for m in dead) == ["failed", "started"]
    assert [m.subject for m in sent_mail()] == ["[FAILED] shop-prod 1.0.0"]


def test_ses_rejecting_the_mail_sends_it_to_the_dead_letter_queue_and_slack_still_posts(
    world: World, pump: Pump, slack: SlackApi
) -> None:
    # The sender's identity lost its verification: SES answers MessageRejected for good.
    world.session.client("ses").delete_identity(Identity=SENDER)
    release_id, deployment_id = upload(world, "1.0.0")
    fail(world, deployment_id, world.provisioned.load_balanced[LOAD_BALANCED].instance_ids[0])

    assert pump.run() == []

    assert sent_mail() == []
    dead = pump.sqs.receive_message(
        QueueUrl=world.provisioned.notify_dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    assert [json.loads(m["Body"])["notification"] for m in dead] == ["failed"]
    assert "MessageRejected" in dead[0]["MessageAttributes"]["reason"]["StringValue"]
    root, replies = thread_of(world, slack, release_id)
    assert header(root).startswith(":x: Failed")
    assert replies


def test_a_redirecting_webhook_is_dead_lettered_not_counted_as_delivered() -> None:
    """urllib would follow a 302 as a GET without body or signature and call it a success."""
    seen: list[str] = []

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(f"POST {self.path}")
            self.send_response(302)
            self.send_header("Location", "/final")
            self.end_headers()

        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(DeliveryRejected, match="HTTP 302"):
            HttpWebhook().post(f"http://127.0.0.1:{server.server_address[1]}/hook", b"{}", {})
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert seen == ["POST /hook"]


def test_an_incoming_webhook_waits_out_a_short_rate_limit_and_defers_a_long_one(slack: SlackApi) -> None:
    webhook = SlackIncomingWebhook(timeout_s=2)
    slack.fail_next("default", status=429, retry_after_s=1)
    webhook.send(slack.webhook_url(), "short", [])
    assert [c.status for c in slack.calls()] == [429, 200]

    slack.fail_next("default", status=429, retry_after_s=30)
    with pytest.raises(DeliveryDeferred) as deferred:
        webhook.send(slack.webhook_url(), "long", [])
    assert deferred.value.retry_after_s == 30
    # Waited out once per call: a second 429 defers too.
    slack.fail_next("default", status=429, retry_after_s=0, times=2)
    with pytest.raises(DeliveryDeferred):
        webhook.send(slack.webhook_url(), "twice", [])
    assert [c.status for c in slack.calls()] == [429, 200, 429, 429, 429]
    assert [m.text for m in slack.webhook_messages()] == ["short"]


def test_slack_sdk_never_logs_a_webhook_url(caplog: pytest.LogCaptureFixture, slack: SlackApi) -> None:
    slack.fail_next("default", status=500, times=5)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(RuntimeError):
        SlackIncomingWebhook(timeout_s=2).send(slack.webhook_url(), "text", [])

    assert slack.webhook_url() not in caplog.text


def test_a_store_hiccup_after_posting_the_card_does_not_post_it_twice(
    world: World, pump: Pump, slack: SlackApi
) -> None:
    """The root card is out but storing its thread fails twice (DynamoDB throttling, injected on
    the coordinator's own client): the thread is still stored, and no second card is posted."""
    release_id, _ = upload(world, "1.0.0")
    dynamodb = bootstrap.wiring().store._client  # type: ignore[attr-defined]
    failures = {"left": 2}

    def throttle_thread_writes(params: dict[str, Any], **_: Any) -> None:
        writes_thread = any(
            "notification_threads" in op.get("Put", {}).get("Item", {}) for op in params["TransactItems"]
        )
        if writes_thread and failures["left"]:
            failures["left"] -= 1
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                "TransactWriteItems",
            )

    dynamodb.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", throttle_thread_writes)
    try:
        assert pump.run() == []
    finally:
        dynamodb.meta.events.unregister(
            "provide-client-params.dynamodb.TransactWriteItems", throttle_thread_writes
        )

    assert failures["left"] == 0
    assert (
        len([call for call in slack.calls() if call.method == "chat.postMessage" and call.status == 200]) == 1
    )
    assert world.release(release_id).notification_threads


@contextlib.contextmanager
def dynamodb_calls() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The coordinator's DynamoDB calls (operation, parameters) while the block runs: the store's
    and the delivery log's."""
    context = bootstrap.wiring()
    assert context.notifications is not None
    clients = {
        id(client): client
        for client in (context.store._client, context.notifications.deliveries._client)  # type: ignore[attr-defined]
    }
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, params))

    for client in clients.values():
        client.meta.events.register("before-parameter-build.dynamodb", record)
    try:
        yield calls
    finally:
        for client in clients.values():
            client.meta.events.unregister("before-parameter-build.dynamodb", record)


def delivery_statuses(world: World, release_id: str) -> dict[str, str]:
    """The delivery log of a release: sort key -> status."""
    items = world.session.client("dynamodb").query(
        TableName=world.provisioned.table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :dlv)",
        ExpressionAttributeValues={":pk": {"S": f"REL#{release_id}"}, ":dlv": {"S": "DLV#"}},
        ConsistentRead=True,
    )["Items"]
    return {item["sk"]["S"]: item["status"]["S"] for item in items}


def test_a_batch_reads_its_release_once_and_confirms_each_delivery_with_the_next_claim(
    world: World, pump: Pump, slack: SlackApi, receiver: Receiver
) -> None:
    release_id, deployment_id = upload(world, "1.0.0")
    succeed(world, deployment_id)
    run_checks(world, 1)
    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    pump.publish(pump.stream_records())
    batch = pump.receive()
    # Slack: started, progress, succeeded; the webhook: started, succeeded.
    assert len(batch) == 5

    with dynamodb_calls() as calls:
        assert pump.deliver(batch) == []

    operations = [operation for operation, _ in calls]
    release_reads = [params for operation, params in calls if operation == "GetItem"]
    assert [read["Key"]["sk"]["S"] for read in release_reads] == ["META"]
    # The first claim alone, each later one with the confirm of the delivery before it, the
    # Slack thread's write, and the last confirm after the batch.
    assert operations.count("PutItem") == 1
    assert operations.count("TransactWriteItems") == len(batch) - 1 + 1
    assert operations.count("UpdateItem") == 1
    assert operations[-1] == "UpdateItem"
    assert sorted(delivery_statuses(world, release_id).values()) == ["delivered"] * len(batch)
    root, replies = thread_of(world, slack, release_id)
    assert [m.ts for m in slack.messages("#deploys") if m.thread_ts is None] == [root.ts]
    assert len(root.edits) == 2
    assert len(replies) == 2
    assert len(receiver.requests) == 2


@pytest.mark.parametrize(
    "copy_first",
    [False, True],
    ids=["the next delivery was made earlier", "the same delivery twice in one batch"],
)
def test_a_claim_that_cannot_share_the_confirm_write_leaves_both_right(
    world: World, pump: Pump, slack: SlackApi, receiver: Receiver, copy_first: bool
) -> None:
    """The delivery after a Slack post has a record already (an earlier receive delivered it),
    or is the post's own copy: the confirm and the claim are written alone, the post is
    recorded as delivered and the copy dropped."""
    release_id, _ = upload(world, "1.0.0")
    pump.publish(pump.stream_records())
    batch = pump.receive()
    [slack_record] = [r for r in batch if json.loads(r["body"])["route"].startswith("slack-")]
    [webhook_record] = [r for r in batch if json.loads(r["body"])["route"].startswith("webhook-")]
    if copy_first:
        later = {**slack_record, "messageId": f"{slack_record['messageId']}-copy"}
    else:
        assert pump.deliver([webhook_record]) == []
        later = {**webhook_record, "messageId": f"{webhook_record['messageId']}-late"}

    with dynamodb_calls() as calls:
        assert pump.deliver([slack_record, later]) == []

    # The Slack post: its claim, the release read, the thread's write. Then the write that would
    # confirm it and claim the next (refused, or not tried for the same item), the confirm alone,
    # the claim alone (refused) and the read that finds the delivery done.
    shared = [] if copy_first else ["TransactWriteItems"]
    assert [operation for operation, _ in calls] == [
        "PutItem",
        "GetItem",
        "TransactWriteItems",
        *shared,
        "UpdateItem",
        "PutItem",
        "GetItem",
    ]
    deliveries = 1 if copy_first else 2
    assert sorted(delivery_statuses(world, release_id).values()) == ["delivered"] * deliveries
    assert len([c for c in slack.calls() if c.method == "chat.postMessage"]) == 1
    assert len(receiver.requests) == deliveries - 1


def test_a_stream_batch_queues_its_messages_together_and_is_retried_from_the_first_not_queued(
    world: World, pump: Pump, slack: SlackApi, receiver: Receiver
) -> None:
    release_id, deployment_id = upload(world, "1.0.0")
    succeed(world, deployment_id)
    run_checks(world, 1)
    records = pump.stream_records()
    notifications = bootstrap.wiring().notifications
    assert notifications is not None
    client = notifications.queue._client  # type: ignore[attr-defined]
    sends: list[int] = []

    def refuse_the_first(params: dict[str, Any], **_: Any) -> None:
        sends.append(len(params["Entries"]))
        if len(sends) == 1:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "SendMessageBatch"
            )

    client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", refuse_the_first)
    try:
        refused = pump.publish(records)
        # The first history event with a message ("started": DEPLOYING) is where Lambda must
        # start again.
        first = next(
            r
            for r in records
            if r["dynamodb"].get("NewImage", {}).get("kind", {}).get("S") == "event"
            and r["dynamodb"]["NewImage"]["state"]["S"] == "DEPLOYING"
        )
        assert refused == {"batchItemFailures": [{"itemIdentifier": first["dynamodb"]["SequenceNumber"]}]}
        retried = records[records.index(first) :]
        assert pump.publish(retried) == {"batchItemFailures": []}
    finally:
        client.meta.events.unregister("before-parameter-build.sqs.SendMessageBatch", refuse_the_first)

    assert sends == [5, 5]  # one call for all the events' messages, each time
    assert pump.run() == []
    assert sorted(delivery_statuses(world, release_id).values()) == ["delivered"] * 5
    assert len(receiver.requests) == 2


@pytest.mark.parametrize(
    "bad_attribute",
    [{"Z": "a type DynamoDB does not have"}, {"N": "not a number"}],
)
def test_a_malformed_release_image_skips_its_record_not_the_batch(
    world: World, pump: Pump, bad_attribute: dict[str, str]
) -> None:
    release_id, _ = upload(world, "1.0.0")
    records = pump.stream_records()
    modified = next(r for r in records if r["eventName"] == "MODIFY")
    malformed = copy.deepcopy(modified)
    malformed["dynamodb"]["NewImage"]["finished_at"] = bad_attribute
    malformed["dynamodb"]["SequenceNumber"] = "0"
    assert pump.publish([malformed, *records]) == {"batchItemFailures": []}
    # The good records' events were queued and are delivered.
    assert pump.run() == []
    assert delivery_statuses(world, release_id)
    assert set(delivery_statuses(world, release_id).values()) == {"delivered"}


def test_a_send_stops_at_the_first_call_that_fails(world: World) -> None:
    """Twelve messages take two calls; when the second fails, the send says the first ten went out
    (and no later call puts a message of their groups ahead of the eleventh)."""
    sqs = world.session.client("sqs")
    queue = SqsNotifyQueue(sqs, world.provisioned.notify_queue_url, world.provisioned.notify_dlq_url)
    messages = [
        NotifyMessage(
            release_id="rel-1",
            pipeline="shop-prod",
            route="slack-0000000000",
            notification=Notification.PROGRESS,
            event=HistoryEvent(
                id=number,
                previous_event_id=number - 1,
                timestamp=datetime(2026, 1, 1, tzinfo=UTC),
                type=EventType.STATE_ENTERED,
                state=ReleaseState.VERIFYING,
                detail={},
            ),
        )
        for number in range(1, 13)
    ]
    calls: list[int] = []

    def fail_the_second(params: dict[str, Any], **_: Any) -> None:
        calls.append(len(params["Entries"]))
        if len(calls) == 2:
            raise ClientError(
                {"Error": {"Code": "InternalError", "Message": "try again"}}, "SendMessageBatch"
            )

    sqs.meta.events.register("before-parameter-build.sqs.SendMessageBatch", fail_the_second)
    with pytest.raises(NotQueued) as stopped:
        queue.send(messages)
    assert calls == [10, 2]
    assert stopped.value.first == 10
    assert "InternalError" in stopped.value.reason
    queued = sqs.get_queue_attributes(
        QueueUrl=world.provisioned.notify_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert queued["Attributes"]["ApproximateNumberOfMessages"] == "10"

"""Notifications, pure parts: which history events notify whom, what the messages say, the
webhook signature, and the notify routes of the pipelines file."""

from __future__ import annotations

import html
import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.adapters.delivery_log import DynamoDeploymentRecords
from chalicelib.adapters.email import SesEmail
from chalicelib.adapters.github import GithubRestApi
from chalicelib.adapters.secrets import ParameterSecrets
from chalicelib.adapters.slack import SlackIncomingWebhook, SlackWebApi
from chalicelib.adapters.sns import SnsTopics
from chalicelib.adapters.webhook import HttpWebhook
from chalicelib.domain.inbound_events import MalformedEvent
from chalicelib.domain.notification_content import (
    LABELS,
    build_notice,
    card_blocks,
    email,
    escape,
    mentions,
    payload,
    slack_card,
    slack_reply,
    slack_webhook_message,
    sns_subject,
)
from chalicelib.domain.notification_signature import SignatureError, sign, verify
from chalicelib.domain.notifications import (
    NotifyMessage,
    SlackThread,
    StreamedEvent,
    notification_for,
    plan_messages,
    route_key,
)
from chalicelib.domain.notify_routes import (
    DEFAULT_SUBSCRIPTION,
    EmailSettings,
    Notification,
    NotifyKind,
    SecretRef,
    SlackMentions,
    SlackSettings,
    WebhookSettings,
    secret_ref,
)
from chalicelib.domain.permissions import ApprovalPolicy
from chalicelib.domain.pipelines import NotifyRoute, Pipeline, PipelinesConfigError, load_pipelines
from chalicelib.domain.release import (
    EventType,
    HistoryEvent,
    Release,
    ReleaseState,
    Revision,
    Trigger,
)
from chalicelib.service.notification_channels import channel_registry
from chalicelib.service.notifications import RETRY_MAX_S, retry_delay_s

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
KEY = b"signing-key"


def event(event_type: EventType, state: ReleaseState, event_id: int = 3, **detail: Any) -> HistoryEvent:
    return HistoryEvent(event_id, event_id - 1, NOW, event_type, state, detail)


def release(
    state: ReleaseState = ReleaseState.FAILED, trigger: Trigger = Trigger.UPLOAD, **changes: Any
) -> Release:
    fields: dict[str, Any] = {
        "id": "rel-1",
        "pipeline": "api-prod",
        "application": "api",
        "deployment_group": "api-prod",
        "revision": Revision("b", "api/prod/api-1.4.2.zip", "v1", "e1"),
        "trigger": trigger,
        "state": state,
        "created_at": NOW,
        "updated_at": NOW + timedelta(minutes=3, seconds=12),
        "reason": "CodeDeploy deployment d-1 failed",
        "deployment_id": "d-1",
        "metadata": {
            "version_label": "1.4.2",
            "author": "alice",
            "commit": "0123456789abcdef",
            "message": "Fix <script> & things\nsecond line",
        },
        **changes,
    }
    return Release(**fields)


SLACK = NotifyRoute(
    frozenset({Notification.STARTED, Notification.FAILED}), SlackSettings("#deploys", SecretRef("ssm", "/t"))
)
EMAIL = NotifyRoute(frozenset({Notification.FAILED}), EmailSettings("a@b.c", ("x@b.c",)))
PIPELINE = Pipeline("api-prod", "b", "api/prod/", "api", "api-prod", notify=(SLACK, EMAIL))


@pytest.mark.parametrize(
    ("history_event", "trigger", "expected"),
    [
        (event(EventType.STATE_ENTERED, ReleaseState.DEPLOYING), Trigger.UPLOAD, "started"),
        (event(EventType.STATE_ENTERED, ReleaseState.DEPLOYING), Trigger.AUTO_ROLLBACK, "started"),
        (event(EventType.STATE_ENTERED, ReleaseState.QUEUED), Trigger.UPLOAD, "queued"),
        (
            event(EventType.STATE_ENTERED, ReleaseState.AWAITING_APPROVAL),
            Trigger.UPLOAD,
            "awaiting_approval",
        ),
        (event(EventType.STATE_ENTERED, ReleaseState.VERIFYING), Trigger.UPLOAD, Notification.PROGRESS),
        (event(EventType.EXECUTION_SUCCEEDED, ReleaseState.SUCCEEDED), Trigger.API, "succeeded"),
        (event(EventType.EXECUTION_SUCCEEDED, ReleaseState.SUCCEEDED), Trigger.ROLLBACK, "rolled_back"),
        (event(EventType.EXECUTION_SUCCEEDED, ReleaseState.SUCCEEDED), Trigger.AUTO_ROLLBACK, "rolled_back"),
        (event(EventType.EXECUTION_FAILED, ReleaseState.FAILED), Trigger.UPLOAD, "failed"),
        (
            event(EventType.EXECUTION_FAILED, ReleaseState.FAILED, failure="verify_failed"),
            Trigger.UPLOAD,
            "verify_failed",
        ),
        (event(EventType.EXECUTION_ABORTED, ReleaseState.STOPPED), Trigger.UPLOAD, "stopped"),
        (event(EventType.EXECUTION_ABORTED, ReleaseState.SUPERSEDED), Trigger.UPLOAD, "superseded"),
        (event(EventType.EXECUTION_STARTED, ReleaseState.RECEIVED), Trigger.UPLOAD, None),
        (event(EventType.TASK_FAILED, ReleaseState.VERIFYING, task="HealthCheck"), Trigger.UPLOAD, None),
        (event(EventType.TASK_STARTED, ReleaseState.DEPLOYING), None, None),
    ],
)
def test_history_events_map_to_notifications(
    history_event: HistoryEvent, trigger: Trigger | None, expected: str | None
) -> None:
    assert notification_for(history_event, trigger) == expected


def streamed(history_event: HistoryEvent) -> StreamedEvent:
    return StreamedEvent("rel-1", "api-prod", Trigger.UPLOAD, history_event)


def test_a_slack_thread_follows_every_transition_other_routes_only_their_events() -> None:
    def routes(history_event: HistoryEvent) -> list[str]:
        return [m.route for m in plan_messages(PIPELINE, streamed(history_event))]

    slack, mail = route_key(SLACK), route_key(EMAIL)
    assert routes(event(EventType.EXECUTION_FAILED, ReleaseState.FAILED)) == [slack, mail]
    assert routes(event(EventType.EXECUTION_SUCCEEDED, ReleaseState.SUCCEEDED)) == [slack]
    assert routes(event(EventType.STATE_ENTERED, ReleaseState.VERIFYING)) == [slack]
    assert routes(event(EventType.EXECUTION_STARTED, ReleaseState.RECEIVED)) == []
    assert plan_messages(None, streamed(event(EventType.EXECUTION_FAILED, ReleaseState.FAILED))) == []


def test_route_keys_survive_reordering_and_change_with_settings() -> None:
    same = NotifyRoute(frozenset({Notification.FAILED}), SlackSettings("#deploys", SecretRef("ssm", "/t")))
    assert route_key(same) == route_key(SLACK)
    other = NotifyRoute(SLACK.on, SlackSettings("#other", SecretRef("ssm", "/t")))
    assert route_key(other) != route_key(SLACK)
    as_secret = NotifyRoute(SLACK.on, SlackSettings("#deploys", SecretRef("secretsmanager", "/t")))
    assert route_key(as_secret) != route_key(SLACK)
    assert route_key(SLACK).startswith("slack-")


# One route of each kind, in each form a setting can take. The ids below were computed from this
# file before the route settings were typed: a route's id names its delivery records and its Slack
# threads, so the same file must give the same ids for as long as those records live.
PINNED_ROUTES = """
[[pipeline.notify]]
kind = "slack"
channel = "#deploys"
token_parameter = "/relco/slack-token"
on = ["started", "failed"]
mention_on_failure = ["S0ONCALL", "U0LEAD"]
authors = { "alice@acme.io" = "U0ALICE", "bob" = "W0BOB" }

[[pipeline.notify]]
kind = "slack"
channel = "C0DEPLOYS1"
token_secret = "relco/slack"
mention_on_failure = []

[[pipeline.notify]]
kind = "slack_webhook"
url_secret = "relco/slack-hook"

[[pipeline.notify]]
kind = "email"
sender = "relco@acme.io"
to = ["oncall@acme.io", "lead@acme.io"]

[[pipeline.notify]]
kind = "sns"
topic_arn = "arn:aws:sns:eu-west-1:123456789012:deploys"

[[pipeline.notify]]
kind = "webhook"
url = "https://hooks.acme.io/relco"
signing_key_parameter = "/relco/signing-key"

[[pipeline.notify]]
kind = "webhook"
url_parameter = "/relco/hook-url"
signing_key_secret = "relco/signing-key"
"""


def test_route_ids_of_a_known_file_never_change(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.toml"
    path.write_text(VALID + PINNED_ROUTES, encoding="utf-8")
    routes = load_pipelines(path).pipelines[0].notify
    assert [route_key(route) for route in routes] == [
        "slack-6e025483f3",
        "slack-108c782d39",
        "slack_webhook-b7072249a9",
        "email-14438e6b53",
        "sns-9b0e2dec56",
        "webhook-b2200c5e21",
        "webhook-598df6af59",
    ]


def test_a_message_queued_before_notifications_were_typed_still_parses() -> None:
    queued = {
        "release_id": "rel-1",
        "pipeline": "api-prod",
        "route": "slack-6e025483f3",
        "notification": "verify_failed",
        "event": event(EventType.EXECUTION_FAILED, ReleaseState.FAILED).to_dict(),
    }
    message = NotifyMessage.from_message(queued)
    assert message.notification is Notification.VERIFY_FAILED
    assert message.to_message() == queued
    with pytest.raises(MalformedEvent, match="'exploded' is not one this coordinator sends"):
        NotifyMessage.from_message({**queued, "notification": "exploded"})


def test_every_notification_has_a_label_and_a_reply_emoji() -> None:
    notice_event = event(EventType.EXECUTION_FAILED, ReleaseState.FAILED)
    for notification in Notification:
        notice = build_notice(release(), notice_event, notification)
        assert notice.label == LABELS[notification]
        assert slack_reply(notice).text


def test_notify_message_round_trip_and_limits() -> None:
    message = plan_messages(PIPELINE, streamed(event(EventType.EXECUTION_FAILED, ReleaseState.FAILED)))[0]
    assert NotifyMessage.from_message(message.to_message()) == message
    assert len(message.deduplication_id) <= 128
    assert message.group_id == f"rel-1#{message.route}"
    with pytest.raises(MalformedEvent, match="route"):
        NotifyMessage.from_message({**message.to_message(), "route": ""})
    with pytest.raises(MalformedEvent, match="history event"):
        NotifyMessage.from_message({**message.to_message(), "event": {"id": 1}})


def test_secret_refs_name_their_store() -> None:
    assert secret_ref({"token_parameter": "/relco/t"}, "token") == SecretRef("ssm", "/relco/t")
    assert secret_ref({"url_secret": "relco/hook"}, "url") == SecretRef("secretsmanager", "relco/hook")
    assert secret_ref({"url": "https://x"}, "url") is None


def test_signature_verifies_and_rejects_tampering_wrong_keys_and_replays() -> None:
    body = b'{"release":{"id":"rel-1"}}'
    header = sign(body, KEY, timestamp=1_700_000_000)
    assert verify(header, body, KEY, now=1_700_000_100) == 1_700_000_000
    with pytest.raises(SignatureError, match="does not match"):
        verify(header, body + b" ", KEY, now=1_700_000_000)
    with pytest.raises(SignatureError, match="does not match"):
        verify(header, body, b"other", now=1_700_000_000)
    with pytest.raises(SignatureError, match="outside"):
        verify(header, body, KEY, now=1_700_000_000 + 301)
    with pytest.raises(SignatureError, match="malformed"):
        verify("v1=abc", body, KEY)
    with pytest.raises(SignatureError, match="missing"):
        verify(None, body, KEY)
    # During a key rotation the sender may send a signature per key: any one may match.
    rotated = f"{header},v1={'0' * 64}"
    assert verify(rotated, body, KEY, now=1_700_000_000) == 1_700_000_000


@given(st.binary(), st.binary(min_size=1), st.integers(min_value=0, max_value=2**40))
def test_any_signed_body_verifies_at_its_time(body: bytes, key: bytes, timestamp: int) -> None:
    assert verify(sign(body, key, timestamp), body, key, now=timestamp) == timestamp


def failure_history() -> list[HistoryEvent]:
    diagnostics = {
        "task": "CodeDeploy",
        "failed_instances": [
            {
                "instance": "i-1",
                "status": "Failed",
                "lifecycle_event": "ValidateService",
                "script": "scripts/validate.sh",
                "error_code": "ScriptFailed",
                "message": "exit 1",
                "log_tail": "boom ``` <&>",
            }
        ],
    }
    return [
        event(EventType.TASK_FAILED, ReleaseState.DEPLOYING, 4, **diagnostics),
        event(EventType.EXECUTION_FAILED, ReleaseState.FAILED, 5, reason="CodeDeploy <failed>"),
        event(EventType.TASK_FAILED, ReleaseState.FAILED, 6, task="CodeDeploy", failed_instances=[]),
    ]


def test_failure_reply_mentions_and_shows_hook_instance_and_escaped_log_tail() -> None:
    history = failure_history()
    notice = build_notice(release(), history[1], Notification.FAILED, history)
    settings = SlackMentions(("S0ONCALL", "U0LEAD"), {"alice": "U0ALICE"})
    pings = mentions(settings, notice)
    assert pings == ["<!subteam^S0ONCALL>", "<@U0LEAD>", "<@U0ALICE>"]
    text = slack_reply(notice, pings).text
    assert text.startswith("<!subteam^S0ONCALL> <@U0LEAD> <@U0ALICE> :x: *Failed*: CodeDeploy &lt;failed&gt;")
    assert "*ValidateService* failed on `i-1` (scripts/validate.sh, ScriptFailed)" in text
    assert "```\nboom `\u200b`` &lt;&amp;&gt;\n```" in text  # the later event's empty list is not used
    assert mentions(settings, build_notice(release(), history[1], Notification.SUCCEEDED)) == []


def test_card_shows_state_facts_and_escaped_user_text() -> None:
    blocks = card_blocks(
        build_notice(release(), failure_history()[1], Notification.FAILED, failure_history())
    )
    assert blocks[0]["text"]["text"] == ":x: Failed: api-prod 1.4.2"
    fields = [field["text"] for field in blocks[1]["fields"]]
    assert fields[:4] == [
        "*Pipeline*\napi-prod",
        "*Version*\n1.4.2",
        "*Commit*\n`0123456789ab` Fix &lt;script&gt; &amp; things",
        "*Author*\nalice",
    ]
    assert "*Duration*\n3m 12s" in fields
    assert "*Instances*\n1 failed" in fields
    assert blocks[-1]["type"] == "context"
    rollback = card_blocks(
        build_notice(
            release(ReleaseState.SUCCEEDED, Trigger.AUTO_ROLLBACK),
            event(EventType.EXECUTION_SUCCEEDED, ReleaseState.SUCCEEDED),
            Notification.ROLLED_BACK,
        )
    )
    assert rollback[0]["text"]["text"] == ":leftwards_arrow_with_hook: Rolled back: api-prod 1.4.2"
    webhook = slack_webhook_message(build_notice(release(), failure_history()[1], Notification.FAILED))
    assert webhook.text == "FAILED: api-prod 1.4.2"
    assert any("*Failed*" in str(block) for block in webhook.blocks)


def test_fallback_text_escapes_a_hostile_version_label() -> None:
    hostile = release(metadata={"version_label": "<!channel> 2.0"})
    notice = build_notice(hostile, failure_history()[1], Notification.FAILED)
    for message in (slack_card(notice), slack_webhook_message(notice)):
        assert "<!channel>" not in message.text
        assert "&lt;!channel&gt; 2.0" in message.text


def test_email_sns_and_webhook_content() -> None:
    history = failure_history()
    notice = build_notice(release(), history[1], Notification.FAILED, history)
    mail = email(notice)
    assert mail.subject == "[FAILED] api-prod 1.4.2"
    assert "boom ``` <&>" in mail.text
    assert "boom ``` &lt;&amp;&gt;" in mail.html
    assert "<script>" not in mail.html
    long_label = release(metadata={"version_label": "é" * 200})
    subject = sns_subject(build_notice(long_label, history[1], Notification.VERIFY_FAILED))
    assert subject.startswith("[VERIFY FAILED] api-prod ?")
    assert len(subject) < 100
    assert subject.isascii()
    body = payload(notice)
    assert body["notification"] == "failed"
    assert body["release"]["id"] == "rel-1"
    assert body["event"]["id"] == 5
    assert body["diagnostics"]["failed_instances"][0]["instance"] == "i-1"


VALID = """
[[pipeline]]
name = "api"
bucket = "b"
prefix = "api/"
application = "app"
deployment_group = "g"
"""


def load(tmp_path: Path, notify: str) -> Any:
    path = tmp_path / "pipelines.toml"
    path.write_text(VALID + "[[pipeline.notify]]\n" + notify, encoding="utf-8")
    return load_pipelines(path)


def test_notify_routes_load_with_their_settings(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        'kind = "slack"\nchannel = "#deploys"\ntoken_secret = "relco/slack"\n'
        'mention_on_failure = ["S0ONCALL"]\nauthors = { "alice@acme.io" = "U0ALICE" }\n',
    )
    [route] = config.pipelines[0].notify
    assert route.channel == SlackSettings(
        "#deploys",
        SecretRef("secretsmanager", "relco/slack"),
        SlackMentions(("S0ONCALL",), {"alice@acme.io": "U0ALICE"}),
    )
    assert route.on == frozenset(
        {"started", "awaiting_approval", "succeeded", "failed", "verify_failed", "rolled_back"}
    )
    assert all(isinstance(notification, Notification) for notification in route.on)


def test_typed_settings_give_back_each_route_as_written(tmp_path: Path) -> None:
    """What a route's id digests, and what the deploy tooling reads: the file's table exactly."""
    path = tmp_path / "pipelines.toml"
    path.write_text(VALID + PINNED_ROUTES, encoding="utf-8")
    routes = load_pipelines(path).pipelines[0].notify
    written = tomllib.loads(VALID + PINNED_ROUTES)["pipeline"][0]["notify"]
    assert [route.kind for route in routes] == [table["kind"] for table in written]
    assert [dict(route.settings) for route in routes] == [
        {name: value for name, value in table.items() if name not in ("kind", "on")} for table in written
    ]
    assert routes[5].channel == WebhookSettings(
        "https://hooks.acme.io/relco", SecretRef("ssm", "/relco/signing-key")
    )
    assert routes[6].channel == WebhookSettings(
        SecretRef("ssm", "/relco/hook-url"), SecretRef("secretsmanager", "relco/signing-key")
    )
    # An empty list is written, so kept; a setting not written stays out.
    assert isinstance(routes[1].channel, SlackSettings)
    assert routes[1].channel.mentions == SlackMentions(mention_on_failure=(), authors=None)


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        (
            'kind = "slack"\nchannel = "#d"\n',
            "notify[1].token': set exactly one of token_parameter, token_secret",
        ),
        (
            'kind = "slack"\nchannel = "#d"\ntoken_parameter = "/a"\ntoken_secret = "b"\n',
            "set exactly one of",
        ),
        ('kind = "slack"\ntoken_parameter = "/t"\n', "notify[1].channel': is required"),
        (
            'kind = "slack"\nchannel = "#d"\ntoken_parameter = "/t"\nmention_on_failure = ["@alice"]\n',
            "Slack user or group ids",
        ),
        (
            'kind = "slack"\nchannel = "#d"\ntoken_parameter = "/t"\nauthors = { alice = "alice" }\n',
            "notify[1].authors': must map upload authors",
        ),
        (
            'kind = "slack"\nchannel = "#d"\ntoken = "xoxb-inline"\ntoken_parameter = "/t"\n',
            "notify[1].token'",
        ),
        ('kind = "email"\nsender = "relco"\nto = ["a@b.c"]\n', "notify[1].sender': must be an email address"),
        ('kind = "email"\nsender = "r@b.c"\nto = []\n', "non-empty list of email addresses"),
        ('kind = "sns"\ntopic_arn = "deploys"\n', "must be an SNS topic ARN"),
        ('kind = "webhook"\nurl = "ftp://x"\nsigning_key_parameter = "/k"\n', "must be an http(s) URL"),
        ('kind = "webhook"\nurl = "https://x"\n', "set exactly one of signing_key_parameter"),
        (
            'kind = "slack_webhook"\nurl_parameter = "/u"\nchannel = "#d"\n',
            "notify[1].channel': unknown key for kind 'slack_webhook'",
        ),
    ],
)
def test_invalid_notify_settings_name_route_key_and_problem(
    tmp_path: Path, notify: str, message: str
) -> None:
    with pytest.raises(PipelinesConfigError) as error:
        load(tmp_path, notify)
    assert "pipeline 'api'" in str(error.value)
    assert message in str(error.value)


def test_escape_covers_slack_control_characters() -> None:
    assert escape("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"


def test_transient_failures_back_off_exponentially_up_to_a_cap() -> None:
    assert [retry_delay_s(count) for count in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert retry_delay_s(30) == RETRY_MAX_S


def test_a_stored_thread_keeps_the_event_that_opened_it_and_reads_older_forms() -> None:
    opened = SlackThread("C0123", "1700000000.000100", opened_by=7)
    assert SlackThread.from_stored(opened.to_stored()) == opened
    assert SlackThread.from_stored("C0123/1700000000.000100") == SlackThread("C0123", "1700000000.000100")


def test_every_kind_of_route_has_its_channel() -> None:
    channels = channel_registry(
        ParameterSecrets(lambda service: None),
        slack=SlackWebApi(),
        slack_webhook=SlackIncomingWebhook(),
        email_sender=SesEmail(lambda: None),
        sns=SnsTopics(lambda: None),
        webhook=HttpWebhook(),
        github=GithubRestApi(),
        github_records=DynamoDeploymentRecords(None, "releases"),
    )
    assert set(channels) == set(NotifyKind)
    assert all(kind is channel.kind for kind, channel in channels.items())


# -- gates: freezes, break-glass, approvals (the history events' detail keys are the contract) ----

HOLIDAY = {
    "reason": "holiday freeze",
    "starts_at": "2026-12-24T10:00:00+00:00",
    "ends_at": "2026-12-24T18:00:00+00:00",
}
FROZEN_LINE = "Frozen until 2026-12-24 18:00 UTC: holiday freeze"


def reason_text(blocks: list[dict[str, Any]]) -> str:
    """The card's section under its facts: the reason, then the gate lines."""
    [section] = [block for block in blocks[2:] if block["type"] == "section"]
    return str(section["text"]["text"])


def context_text(blocks: list[dict[str, Any]]) -> str:
    return str(blocks[-1]["elements"][0]["text"])


def test_a_release_queued_by_a_freeze_says_until_when_and_why_instead_of_its_reason() -> None:
    queued = release(
        ReleaseState.QUEUED, reason="pipeline frozen until 2026-12-24T18:00:00+00:00: holiday freeze"
    )
    frozen = event(EventType.STATE_ENTERED, ReleaseState.QUEUED, position=1, freeze=HOLIDAY)
    notice = build_notice(queued, frozen, Notification.QUEUED)

    assert reason_text(card_blocks(notice)) == FROZEN_LINE
    assert slack_reply(notice).text == f":hourglass_flowing_sand: *Queued*: {FROZEN_LINE}"
    mail = email(notice)
    assert mail.text.splitlines()[2] == FROZEN_LINE
    assert f"<p>{FROZEN_LINE}</p>" in mail.html
    assert "pipeline frozen until" not in mail.text

    # Queued behind a busy slot: the reason as before.
    busy = release(ReleaseState.QUEUED, reason="pipeline busy with rel-0")
    busy_notice = build_notice(busy, event(EventType.STATE_ENTERED, ReleaseState.QUEUED), Notification.QUEUED)
    assert reason_text(card_blocks(busy_notice)) == "pipeline busy with rel-0"
    assert "*Queued*: pipeline busy with rel-0" in slack_reply(busy_notice).text

    # Delivered late, after the release started: the card shows the release as it is now.
    started = release(ReleaseState.DEPLOYING, reason="slot freed: starting CodeDeploy")
    late = build_notice(started, frozen, Notification.QUEUED)
    assert reason_text(card_blocks(late)) == "slot freed: starting CodeDeploy"
    assert FROZEN_LINE in slack_reply(late).text  # the reply reports the event it is for


def test_a_break_glass_release_says_who_broke_the_glass_and_why() -> None:
    glass = release(
        ReleaseState.DEPLOYING,
        Trigger.API,
        actor="arn:aws:sts::123456789012:assumed-role/Oncall/ana",
        metadata={"version_label": "1.4.3", "break_glass": "checkout down: <hotfix> & roll forward"},
    )
    notice = build_notice(glass, event(EventType.STATE_ENTERED, ReleaseState.DEPLOYING), Notification.STARTED)
    ana = "arn:aws:sts::123456789012:assumed-role/Oncall/ana"
    line = f"Break-glass by {ana}: checkout down: &lt;hotfix&gt; &amp; roll forward"

    assert line in context_text(card_blocks(notice))
    assert line in slack_reply(notice).text
    mail = email(notice)
    assert f"Break-glass: by {ana}: checkout down: <hotfix> & roll forward" in mail.text
    assert "&lt;hotfix&gt; &amp; roll forward</td>" in mail.html
    assert payload(notice)["break_glass"] == {
        "actor": "arn:aws:sts::123456789012:assumed-role/Oncall/ana",
        "reason": "checkout down: <hotfix> & roll forward",
    }

    ordinary = build_notice(release(ReleaseState.DEPLOYING), notice.event, Notification.STARTED)
    assert payload(ordinary)["break_glass"] is None
    assert "Break-glass" not in context_text(card_blocks(ordinary))
    assert "Break-glass" not in email(ordinary).text


APPROVAL = ApprovalPolicy(
    required=True,
    approvers=("arn:aws:iam::123456789012:role/Releasers",),
    slack_approvers=("U0LEAD", "S0RELEASERS"),
)


def test_a_release_awaiting_approval_notifies_who_may_approve_and_until_when() -> None:
    waiting = release(ReleaseState.AWAITING_APPROVAL, reason="api-prod requires approval")
    entered = event(
        EventType.STATE_ENTERED,
        ReleaseState.AWAITING_APPROVAL,
        reason="api-prod requires approval",
        approval={"expires_at": "2026-11-27T10:00:00+00:00"},
    )
    assert notification_for(entered, Trigger.UPLOAD) is Notification.AWAITING_APPROVAL
    assert Notification.AWAITING_APPROVAL in DEFAULT_SUBSCRIPTION
    default_email = NotifyRoute(DEFAULT_SUBSCRIPTION, EmailSettings("a@b.c", ("x@b.c",)))
    pipeline = Pipeline("api-prod", "b", "api/prod/", "api", "api-prod", notify=(default_email,))
    assert [m.notification for m in plan_messages(pipeline, streamed(entered))] == ["awaiting_approval"]

    notice = build_notice(waiting, entered, Notification.AWAITING_APPROVAL, approval=APPROVAL)
    card = card_blocks(notice)
    assert card[0]["text"]["text"] == ":raised_hand: Awaiting approval: api-prod 1.4.2"
    needs = (
        "Needs approval by <@U0LEAD>, <!subteam^S0RELEASERS> or "
        "`arn:aws:iam::123456789012:role/Releasers` (API); expires 2026-11-27 10:00 UTC"
    )
    assert reason_text(card) == f"api-prod requires approval\n{needs}"
    assert (
        slack_reply(notice).text == f":raised_hand: *Awaiting approval*: api-prod requires approval\n{needs}"
    )
    mail = email(notice)
    assert mail.subject == "[AWAITING APPROVAL] api-prod 1.4.2"
    assert (
        "Needs approval by Slack U0LEAD, Slack S0RELEASERS or "
        "arn:aws:iam::123456789012:role/Releasers (API); expires 2026-11-27 10:00 UTC"
    ) in mail.text.splitlines()


@pytest.mark.parametrize(
    ("decided", "notification", "card_line", "email_line"),
    [
        (
            event(EventType.STATE_ENTERED, ReleaseState.DEPLOYING, approved_by="U0LEAD", comment="ship it"),
            Notification.STARTED,
            "Approved by U0LEAD: ship it",
            "Approved by U0LEAD: ship it",
        ),
        (
            event(EventType.STATE_ENTERED, ReleaseState.QUEUED, approved_by="ana"),
            Notification.QUEUED,
            "Approved by ana",
            "Approved by ana",
        ),
        (
            event(
                EventType.EXECUTION_ABORTED, ReleaseState.STOPPED, rejected_by="bob", comment="<b>not today"
            ),
            Notification.STOPPED,
            "Rejected by bob: &lt;b&gt;not today",
            "Rejected by bob: <b>not today",
        ),
        (
            event(
                EventType.EXECUTION_ABORTED,
                ReleaseState.STOPPED,
                approval_expired="2026-11-27T10:00:00+00:00",
            ),
            Notification.STOPPED,
            "Approval expired at 2026-11-27 10:00 UTC: nobody approved in time",
            "Approval expired at 2026-11-27 10:00 UTC: nobody approved in time",
        ),
    ],
    ids=["approved, started", "approved, queued", "rejected", "expired"],
)
def test_an_approval_decision_is_shown_on_the_card_the_reply_and_the_email(
    decided: HistoryEvent, notification: Notification, card_line: str, email_line: str
) -> None:
    notice = build_notice(
        release(decided.state, reason="what the lane wrote"), decided, notification, approval=APPROVAL
    )
    assert reason_text(card_blocks(notice)).splitlines() == ["what the lane wrote", card_line]
    assert slack_reply(notice).text.splitlines()[1] == card_line
    mail = email(notice)
    assert email_line in mail.text.splitlines()
    assert f"<p>{html.escape(email_line)}</p>" in mail.html
    assert "Needs approval" not in slack_reply(notice).text


def test_a_route_may_subscribe_to_awaiting_approval(tmp_path: Path) -> None:
    config = load(tmp_path, 'kind = "email"\nsender = "a@b.c"\nto = ["x@b.c"]\non = ["awaiting_approval"]\n')
    [route] = config.pipelines[0].notify
    assert route.on == frozenset({Notification.AWAITING_APPROVAL})


def test_a_promotion_is_linked_from_the_upstream_thread_and_its_card_names_the_upstream() -> None:
    """Issue 15: the upstream release's history gets a Promotion event, a reply in its thread;
    the promotion release's own card says what it promotes."""
    link = event(
        EventType.TASK_SUCCEEDED,
        ReleaseState.SUCCEEDED,
        task="Promotion",
        pipeline="api-eu",
        release_id="pr-1",
    )
    assert notification_for(link, Trigger.UPLOAD) is Notification.PROGRESS
    reply = slack_reply(build_notice(release(ReleaseState.SUCCEEDED), link, Notification.PROGRESS)).text
    assert reply == ":arrow_double_up: Promoted to api-eu as release `pr-1` (its own thread follows it there)"
    other_task = event(EventType.TASK_SUCCEEDED, ReleaseState.VERIFYING, task="HealthCheck")
    assert notification_for(other_task, Trigger.UPLOAD) is None

    promoted = release(
        ReleaseState.DEPLOYING,
        Trigger.PROMOTION,
        metadata={"promoted_from": "rel-9", "promoted_from_pipeline": "api-stg"},
    )
    started = event(EventType.STATE_ENTERED, ReleaseState.DEPLOYING, reason="slot free: starting CodeDeploy")
    card = slack_card(build_notice(promoted, started, Notification.STARTED))
    assert "promotion of api-stg release `rel-9`" in json.dumps(card.blocks)


def test_a_mixed_fleet_after_a_release_is_said_in_its_thread() -> None:
    """Issue 16: the fleet check's history event reaches the release's Slack thread."""
    mixed = event(
        EventType.TASK_FAILED,
        ReleaseState.SUCCEEDED,
        task="FleetCheck",
        mixed=True,
        revisions=[
            {"version_label": "1.0.0", "instances": ["i-1"], "count": 1},
            {"version_label": "2.0.0", "instances": ["i-2", "i-3"], "count": 2},
        ],
        heal_release_id="heal-rel-1",
    )
    assert notification_for(mixed, Trigger.UPLOAD) is Notification.PROGRESS
    reply = slack_reply(build_notice(release(ReleaseState.SUCCEEDED), mixed, Notification.PROGRESS)).text
    assert reply == (
        ":warning: Fleet runs mixed revisions: 1.0.0 on i-1; 2.0.0 on 2 instances; "
        "healing as release `heal-rel-1`"
    )


RECEIPT_SUMMARY = (
    "0 load-balancer errors in 14,210 requests during rollout (baseline 0.00%); slowest p90 84 ms"
)


@pytest.mark.parametrize(
    ("state", "event_type", "notification"),
    [
        (ReleaseState.SUCCEEDED, EventType.EXECUTION_SUCCEEDED, Notification.SUCCEEDED),
        (ReleaseState.FAILED, EventType.EXECUTION_FAILED, Notification.VERIFY_FAILED),
    ],
)
def test_the_receipt_of_a_release_that_ended_is_one_line_on_the_card_the_reply_and_the_email(
    state: ReleaseState, event_type: EventType, notification: Notification
) -> None:
    ended = release(state, reason="verified: 2 instance(s) healthy")
    terminal = event(event_type, state, receipt={"requests": 14210, "summary": RECEIPT_SUMMARY})
    notice = build_notice(ended, terminal, notification)
    line = f"Receipt: {RECEIPT_SUMMARY}"

    assert reason_text(card_blocks(notice)).splitlines() == [
        "verified: 2 instance(s) healthy",
        f":bar_chart: {line}",
    ]
    assert slack_reply(notice).text.splitlines()[1] == f":bar_chart: {line}"
    mail = email(notice)
    assert mail.text.splitlines()[3] == line
    assert f"<p>{line}</p>" in mail.html


def test_a_receipt_that_could_not_be_read_says_so_and_an_event_without_one_shows_none() -> None:
    unavailable = "no load-balancer figures: CloudWatch did not answer (AccessDenied)"
    terminal = event(
        EventType.EXECUTION_SUCCEEDED,
        ReleaseState.SUCCEEDED,
        receipt={
            "unavailable": "AccessDenied: User: arn:aws:sts::123456789012:assumed-role/x is not authorized",
            "summary": unavailable,
        },
    )
    notice = build_notice(release(ReleaseState.SUCCEEDED), terminal, Notification.SUCCEEDED)
    assert f"Receipt: {unavailable}" in slack_reply(notice).text
    # The error's message (a role ARN, an account) stays in the history, out of chat and mail.
    assert "arn:aws" not in slack_reply(notice).text
    assert "arn:aws" not in email(notice).text

    plain = build_notice(
        release(ReleaseState.SUCCEEDED),
        event(EventType.EXECUTION_SUCCEEDED, ReleaseState.SUCCEEDED),
        Notification.SUCCEEDED,
    )
    assert "Receipt" not in slack_reply(plain).text
    assert "Receipt" not in reason_text(card_blocks(plain))
    assert "Receipt" not in email(plain).text

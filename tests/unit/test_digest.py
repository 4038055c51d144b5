"""The weekly DORA digest's pure parts (chalicelib/domain/digest.py) and its table in the pipelines
file (``[pipeline.digest]``): when it is due across week and year boundaries, the windows, the
message, and the errors a wrong table gets at load."""

from __future__ import annotations

import json
import tomllib
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from app import app
from chalicelib.domain.digest import DigestWeek, DigestWindows, digest_message, due_week
from chalicelib.domain.dora import pipeline_stats
from chalicelib.domain.notifications import SlackPostMark
from chalicelib.domain.notify_routes import SecretRef
from chalicelib.domain.pipelines import DigestSettings, PipelinesConfigError, parse_pipelines
from chalicelib.domain.release import ReleaseState, Trigger
from infra import render
from infra.functions import app_functions
from infra.grants import function_policy, pipeline_scope
from infra.iam import Template
from infra.iam_reference import policy_problems
from tests.unit.test_dora import release

TOKEN = SecretRef("ssm", "/relco/slack/bot-token")
MONDAY_9 = DigestSettings(route=1, channel="#deploys", token=TOKEN)
FRIDAY_17 = DigestSettings(route=1, channel="#deploys", token=TOKEN, weekday=4, hour=17)
SUNDAY_23 = DigestSettings(route=1, channel="#deploys", token=TOKEN, weekday=6, hour=23)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("settings", "now", "expected"),
    [
        # 2026-12-07 is the Monday of ISO week 50.
        (MONDAY_9, "2026-12-07T08:59:59+00:00", None),
        (MONDAY_9, "2026-12-07T09:00:00+00:00", DigestWeek("2026-W50", at("2026-12-07T09:00:00+00:00"))),
        (MONDAY_9, "2026-12-13T23:59:59+00:00", DigestWeek("2026-W50", at("2026-12-07T09:00:00+00:00"))),
        # Sunday night ends the week: Monday 00:00 is the next week's, not yet due.
        (MONDAY_9, "2026-12-14T00:00:00+00:00", None),
        (FRIDAY_17, "2026-12-10T17:00:00+00:00", None),
        (FRIDAY_17, "2026-12-11T17:05:00+00:00", DigestWeek("2026-W50", at("2026-12-11T17:00:00+00:00"))),
        (SUNDAY_23, "2026-12-13T22:59:00+00:00", None),
        (SUNDAY_23, "2026-12-13T23:00:00+00:00", DigestWeek("2026-W50", at("2026-12-13T23:00:00+00:00"))),
        # The ISO year: 2027-01-01 is a Friday of 2026-W53, 2027-01-04 the Monday of 2027-W01.
        (FRIDAY_17, "2027-01-01T18:00:00+00:00", DigestWeek("2026-W53", at("2027-01-01T17:00:00+00:00"))),
        (MONDAY_9, "2027-01-03T12:00:00+00:00", DigestWeek("2026-W53", at("2026-12-28T09:00:00+00:00"))),
        (MONDAY_9, "2027-01-04T09:00:00+00:00", DigestWeek("2027-W01", at("2027-01-04T09:00:00+00:00"))),
        # 2025-12-29 (a Monday) is in 2026-W01: the ISO year, not the calendar's.
        (MONDAY_9, "2025-12-29T10:00:00+00:00", DigestWeek("2026-W01", at("2025-12-29T09:00:00+00:00"))),
    ],
)
def test_due_from_the_weekday_and_hour_of_each_iso_week(
    settings: DigestSettings, now: str, expected: DigestWeek | None
) -> None:
    assert due_week(settings, at(now)) == expected


def test_the_hour_is_utc_whatever_zone_the_clock_gives() -> None:
    # 10:30 in Berlin (UTC+1 in December) is 09:30 UTC: due; 09:30 in Berlin is 08:30 UTC: not.
    berlin = timezone(timedelta(hours=1))
    assert due_week(MONDAY_9, datetime(2026, 12, 7, 10, 30, tzinfo=berlin)) == DigestWeek(
        "2026-W50", at("2026-12-07T09:00:00+00:00")
    )
    assert due_week(MONDAY_9, datetime(2026, 12, 7, 9, 30, tzinfo=berlin)) is None
    # Monday 01:00 in Tokyo is Sunday 16:00 UTC: still the week before.
    tokyo = timezone(timedelta(hours=9))
    assert due_week(MONDAY_9, datetime(2026, 12, 14, 1, 0, tzinfo=tokyo)) == DigestWeek(
        "2026-W50", at("2026-12-07T09:00:00+00:00")
    )


def test_the_windows_end_at_the_due_time_not_at_the_post() -> None:
    settings = DigestSettings(route=1, channel="#deploys", token=TOKEN, days=14)
    week = due_week(settings, at("2026-12-09T15:00:00+00:00"))
    assert week is not None
    assert DigestWindows.of(settings, week) == DigestWindows(
        since=at("2026-11-23T09:00:00+00:00"),
        until=at("2026-12-07T09:00:00+00:00"),
        previous_since=at("2026-11-09T09:00:00+00:00"),
    )


def test_the_message_gives_the_four_keys_and_the_window_before() -> None:
    until = at("2026-12-07T09:00:00+00:00")
    since, before = until - timedelta(days=7), until - timedelta(days=14)
    hour = timedelta(hours=1)
    releases = [
        # This week: two verified changes (lead times 1 h and 3 h), one failure (b, also the one
        # rolled back: counted once) restored by its rollback 30 min later.
        release("a", since + hour, since + 2 * hour, ReleaseState.SUCCEEDED),
        release("b", since + 10 * hour, since + 11 * hour, ReleaseState.FAILED),
        release(
            "c",
            since + 11 * hour,
            since + 11.5 * hour,
            ReleaseState.SUCCEEDED,
            trigger=Trigger.AUTO_ROLLBACK,
            rollback_of="b",
        ),
        release("d", since + 20 * hour, since + 23 * hour, ReleaseState.SUCCEEDED),
        # The week before: one verified change, no failure.
        release("e", before + hour, before + 2 * hour, ReleaseState.SUCCEEDED),
    ]
    message = digest_message(
        pipeline_stats("shop", releases, since, until), pipeline_stats("shop", releases, before, since)
    )
    lines = message.text.splitlines()
    assert lines[0] == (
        "DORA digest for shop: the 7 days to Mon 07 Dec 2026 09:00 UTC, compared with the 7 days before"
    )
    assert lines[1:] == [
        "• *Deployment frequency*: 3 verified (0.43/day) (before: 1 verified (0.14/day))",
        "• *Lead time for changes*: median 2.0h, p90 3.0h (2 changes)"
        " (before: median 60m, p90 60m (1 change))",
        "• *Change failure rate*: 25% (1 of 4) (before: 0% (0 of 1))",
        "• *Time to restore*: median 30m, p90 30m (1 restore) (before: no restores)",
    ]
    header, context, section = message.blocks
    assert header["text"]["text"] == "DORA digest: shop"
    assert context["elements"][0]["text"] == lines[0]
    assert section["text"]["text"] == "\n".join(lines[1:])


def test_an_empty_window_says_so() -> None:
    until = at("2026-12-07T09:00:00+00:00")
    empty = pipeline_stats("shop", [], until - timedelta(days=7), until)
    assert digest_message(empty, empty).text.splitlines()[1:] == [
        "• *Deployment frequency*: 0 verified (0.00/day) (before: 0 verified (0.00/day))",
        "• *Lead time for changes*: no changes (before: no changes)",
        "• *Change failure rate*: nothing deployed (before: nothing deployed)",
        "• *Time to restore*: no restores (before: no restores)",
    ]


PIPELINE = """
[[pipeline]]
name = "shop"
bucket = "b"
prefix = "shop/"
application = "shop"
deployment_group = "shop"
"""
SLACK_ROUTE = """
[[pipeline.notify]]
kind = "slack"
channel = "#deploys"
token_parameter = "/relco/slack/bot-token"
"""
EMAIL_ROUTE = """
[[pipeline.notify]]
kind = "email"
sender = "relco@acme.example"
to = ["oncall@acme.example"]
"""
OTHER_SLACK_ROUTE = """
[[pipeline.notify]]
kind = "slack"
channel = "#releases"
token_secret = "relco/other-bot-token"
"""


def parse(text: str) -> DigestSettings | None:
    [pipeline] = parse_pipelines(tomllib.loads(text)).pipelines
    return pipeline.digest


def test_no_digest_table_posts_no_digest() -> None:
    assert parse(PIPELINE + SLACK_ROUTE) is None


def test_the_only_slack_route_and_the_defaults() -> None:
    assert parse(PIPELINE + EMAIL_ROUTE + SLACK_ROUTE + "[pipeline.digest]\n") == DigestSettings(
        route=2, channel="#deploys", token=TOKEN, weekday=0, hour=9, days=7
    )


def test_a_named_route_its_token_and_a_channel_of_its_own() -> None:
    digest = """
[pipeline.digest]
route = 3
channel = "#eng-weekly"
weekday = "friday"
hour = 16
days = 14
"""
    assert parse(PIPELINE + SLACK_ROUTE + EMAIL_ROUTE + OTHER_SLACK_ROUTE + digest) == DigestSettings(
        route=3,
        channel="#eng-weekly",
        token=SecretRef("secretsmanager", "relco/other-bot-token"),
        weekday=4,
        hour=16,
        days=14,
    )


@pytest.mark.parametrize(
    ("routes", "digest", "message"),
    [
        (EMAIL_ROUTE, "", "key 'digest.route': is required: .* the pipeline has 0"),
        (SLACK_ROUTE + OTHER_SLACK_ROUTE, "", "key 'digest.route': is required: .* the pipeline has 2"),
        (SLACK_ROUTE + EMAIL_ROUTE, "route = 2", r"key 'digest.route': must be the number .*\[1\]\), got 2"),
        (SLACK_ROUTE, "route = 0", "key 'digest.route': must be the number"),
        (SLACK_ROUTE, 'route = "#deploys"', "key 'digest.route': must be the number"),
        (SLACK_ROUTE, "route = true", "key 'digest.route': must be the number"),
        (SLACK_ROUTE, 'channel = ""', "key 'digest.channel': must be a channel name or id"),
        (SLACK_ROUTE, 'weekday = "Mon"', "key 'digest.weekday': must be one of monday, tuesday"),
        (SLACK_ROUTE, "hour = 24", r"key 'digest.hour': must be a whole hour from 0 to 23 \(UTC\), got 24"),
        (SLACK_ROUTE, "hour = 9.5", "key 'digest.hour': must be a whole hour"),
        (SLACK_ROUTE, "days = 0", "key 'digest.days': must be a whole number of days from 1 to 365"),
        (SLACK_ROUTE, "days = 366", "key 'digest.days': must be a whole number of days from 1 to 365"),
        (SLACK_ROUTE, 'at = "09:00"', "key 'digest.at': unknown key"),
    ],
)
def test_a_wrong_digest_table_fails_at_load(routes: str, digest: str, message: str) -> None:
    with pytest.raises(PipelinesConfigError, match=f"pipeline 'shop': {message}"):
        parse(PIPELINE + routes + "[pipeline.digest]\n" + digest + "\n")


def test_a_digest_that_is_no_table_fails_at_load() -> None:
    with pytest.raises(PipelinesConfigError, match="key 'digest': must be a table"):
        parse(PIPELINE + 'digest = "monday"\n' + SLACK_ROUTE)


def test_the_digest_mark_reads_back_from_slack_metadata() -> None:
    mark = SlackPostMark.digest("shop", "2026-W50", "#deploys")
    assert SlackPostMark.from_metadata(mark.to_metadata()) == mark
    assert mark != SlackPostMark.digest("shop", "2026-W51", "#deploys")


def _reconcile_statements(text: str) -> list[dict[str, Any]]:
    scope = pipeline_scope("prod", parse_pipelines(tomllib.loads(text)))
    [reconcile] = [function for function in app_functions(app) if function.name == "reconcile"]
    statements: list[dict[str, Any]] = function_policy(reconcile, scope)["Statement"]
    return statements


def test_reconcile_may_read_the_digest_routes_tokens_and_no_other() -> None:
    digests = (
        PIPELINE
        + SLACK_ROUTE
        + OTHER_SLACK_ROUTE
        + "[pipeline.digest]\nroute = 2\n"
        + PIPELINE.replace('"shop"', '"web"').replace('"shop/"', '"web/"')
        + SLACK_ROUTE
        + "[pipeline.digest]\n"
    )
    statements = _reconcile_statements(digests)
    reads = {
        statement["Sid"]: (statement["Action"], json.dumps(statement["Resource"]))
        for statement in statements
        if statement["Sid"].startswith("ReadDigestTokens")
    }
    assert reads.keys() == {"ReadDigestTokensSsm", "ReadDigestTokensSecretsmanager"}
    assert reads["ReadDigestTokensSsm"][0] == ["ssm:GetParameter"]
    # One statement per store, each token once: both pipelines post with /relco/slack/bot-token.
    assert reads["ReadDigestTokensSsm"][1].count("parameter/relco/slack/bot-token") == 1
    assert reads["ReadDigestTokensSecretsmanager"][0] == ["secretsmanager:GetSecretValue"]
    assert "secret:relco/other-bot-token-??????" in reads["ReadDigestTokensSecretsmanager"][1]
    # The statements name what the Service Authorization Reference says these actions act on.
    merge = render.render("prod", parse_pipelines(tomllib.loads(digests)), app_functions(app))
    resolved = Template(merge)
    roles = [name for name, body in merge["Resources"].items() if body.get("Type") == "AWS::IAM::Role"]
    assert [problem for role in roles for problem in policy_problems(resolved.role_statements(role))] == []
    assert not any(
        statement["Sid"].startswith("ReadDigestTokens")
        for statement in _reconcile_statements(PIPELINE + SLACK_ROUTE + OTHER_SLACK_ROUTE)
    )

"""The weekly DORA digest on moto, posted by the ``reconcile`` handler to the local Slack
look-alike: once per pipeline and week across many reconciles, once when a reconcile dies between
the claim and the post or between the post and its record, again after a failed post, and no AWS
call for a pipeline without a digest or before it is due.

The app's clock (``bootstrap.SystemClock``) is set by each test; the weeks are two and one weeks
back from the wall clock, because the look-alike stamps each post's ts with the wall clock and the
digest looks for an earlier post from the week's due time on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import botocore.handlers
import pytest
from slack_sdk import WebClient

from chalicelib import bootstrap
from sandbox.slack_api import Message, SlackApi
from tests.integration.conftest import PIPELINES_TOML, TABLE, HandlerCall, World
from tests.integration.test_verification import verified

# shop-prod is the last [[pipeline]] of the shared file: these tables are its.
DIGEST_ROUTE = """
[[pipeline.notify]]
kind = "slack"
channel = "#deploys"
token_parameter = "/relco/slack/bot-token"
on = ["failed"]

[pipeline.digest]
weekday = "monday"
hour = 9
"""


class Crash(BaseException):
    """The Lambda dies: no ``except Exception`` cleanup runs (as tests/crash/harness.py kills)."""


@dataclass
class Clock:
    now: datetime


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.toml"
    path.write_text(PIPELINES_TOML + DIGEST_ROUTE, encoding="utf-8")
    return path


@pytest.fixture
def slack() -> Iterator[SlackApi]:
    with SlackApi() as api:
        yield api


def monday(weeks_back: int) -> datetime:
    """The Monday 09:00 UTC ``weeks_back`` ISO weeks before this one's."""
    today = datetime.now(UTC).date()
    this_monday = today - timedelta(days=today.weekday())
    return datetime.combine(this_monday - timedelta(weeks=weeks_back), time(9), UTC)


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


@pytest.fixture
def clock(world: World, slack: SlackApi, monkeypatch: pytest.MonkeyPatch) -> Clock:
    world.aws("ssm").put_parameter(Name="/relco/slack/bot-token", Value="xoxb-test", Type="SecureString")
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    bootstrap.reset()
    current = Clock(monday(2) - timedelta(minutes=5))
    monkeypatch.setattr(bootstrap.SystemClock, "now", lambda _clock: current.now)
    return current


def reconcile_at(world: World, clock: Clock, moment: datetime) -> dict[str, Any]:
    clock.now = moment
    report: dict[str, Any] = world.reconcile()
    return report


def digests(slack: SlackApi) -> list[Message]:
    return [message for message in slack.messages("#deploys") if "DORA digest" in (message.text or "")]


def digest_record(world: World, week: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        world.aws("dynamodb")
        .get_item(
            TableName=TABLE,
            Key={"pk": {"S": "PIPE#shop-prod"}, "sk": {"S": f"DIGEST#{week}"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return item


def test_one_digest_per_week_across_many_reconciles(world: World, slack: SlackApi, clock: Clock) -> None:
    week_one, week_two = monday(2), monday(1)
    # One verified release in the window the first digest reports (the 7 days before its due time).
    clock.now = week_one - timedelta(days=3)
    release_id = verified(world, "1.0.0")
    assert world.release(release_id).created_at == clock.now

    assert "digest" not in reconcile_at(world, clock, week_one - timedelta(minutes=5)).get("shop-prod", {})
    assert digests(slack) == []

    # Every 5 minutes for the first hour, then a few times later in the week.
    moments = [week_one + timedelta(minutes=5 * n) for n in range(13)]
    moments += [week_one + timedelta(days=2, hours=3), week_one + timedelta(days=6, hours=14, minutes=59)]
    posted = [
        report["shop-prod"]["digest"]
        for moment in moments
        if "digest" in (report := reconcile_at(world, clock, moment)).get("shop-prod", {})
    ]
    [first] = digests(slack)
    assert posted == [{"week": iso_week(week_one.date()), "channel": first.channel, "ts": first.ts}]
    assert first.text is not None
    assert f"DORA digest for shop-prod: the 7 days to {week_one:%a %d %b %Y} 09:00 UTC" in first.text
    assert "*Deployment frequency*: 1 verified (0.14/day) (before: 0 verified (0.00/day))" in first.text
    record = digest_record(world, iso_week(week_one.date()))
    assert record is not None
    assert (record["status"]["S"], record["ts"]["S"]) == ("posted", first.ts)

    # The next week has its own digest, which no longer counts the release (it is the week before).
    report = reconcile_at(world, clock, week_two + timedelta(minutes=1))
    assert report["shop-prod"]["digest"]["week"] == iso_week(week_two.date())
    assert reconcile_at(world, clock, week_two + timedelta(minutes=6)).get("shop-prod", {}) == {}
    first_again, second = digests(slack)
    assert first_again.ts == first.ts
    assert second.text is not None
    assert "*Deployment frequency*: 0 verified (0.00/day) (before: 1 verified (0.14/day))" in second.text


def _dying_slack_post(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """slack_sdk's next chat.postMessage dies before reaching Slack; returns the methods it killed."""
    killed: list[str] = []
    original = WebClient.api_call

    def api_call(self: WebClient, api_method: str, **kwargs: Any) -> Any:
        if api_method == "chat.postMessage" and not killed:
            killed.append(api_method)
            raise Crash
        return original(self, api_method, **kwargs)

    monkeypatch.setattr(WebClient, "api_call", api_call)
    return killed


def test_a_reconcile_that_dies_after_the_claim_leaves_the_digest_to_the_next(
    world: World, slack: SlackApi, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    week = monday(2)
    killed = _dying_slack_post(monkeypatch)
    with pytest.raises(Crash):
        reconcile_at(world, clock, week + timedelta(minutes=2))
    assert killed == ["chat.postMessage"]
    bootstrap.reset()  # the container died with it
    record = digest_record(world, iso_week(week.date()))
    assert record is not None
    assert record["status"]["S"] == "sending"
    # Within the claim's lease (3 minutes) the claim is another reconcile's: nothing posted.
    assert reconcile_at(world, clock, week + timedelta(minutes=4)).get("shop-prod", {}) == {}
    assert digests(slack) == []
    # The next scheduled reconcile takes the lapsed claim over, finds no earlier post, and posts.
    report = reconcile_at(world, clock, week + timedelta(minutes=7))
    [posted] = digests(slack)
    assert report["shop-prod"]["digest"]["ts"] == posted.ts
    assert reconcile_at(world, clock, week + timedelta(minutes=12)).get("shop-prod", {}) == {}
    assert len(digests(slack)) == 1


@pytest.fixture
def dying_digest_record() -> Iterator[list[str]]:
    """The next write of a posted digest's ts dies (a before-parameter-build hook on every botocore
    session made from here on); yields the keys it killed."""
    killed: list[str] = []

    def hook(params: dict[str, Any], **_kwargs: Any) -> None:
        values = params.get("ExpressionAttributeValues", {})
        if ":posted" in values and not killed:
            killed.append(params["Key"]["sk"]["S"])
            raise Crash

    spec: tuple[str, Callable[..., None]] = ("before-parameter-build.dynamodb.UpdateItem", hook)
    botocore.handlers.BUILTIN_HANDLERS.append(spec)
    try:
        yield killed
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(spec)


def test_a_reconcile_that_dies_after_the_post_never_posts_twice(
    world: World, slack: SlackApi, clock: Clock, dying_digest_record: list[str]
) -> None:
    week = monday(2)
    bootstrap.reset()  # the app's clients are made again, with the hook
    with pytest.raises(Crash):
        reconcile_at(world, clock, week + timedelta(minutes=2))
    assert dying_digest_record == [f"DIGEST#{iso_week(week.date())}"]
    bootstrap.reset()
    [posted] = digests(slack)
    # The next reconcile after the lease finds the post by its mark and records it, posting nothing.
    report = reconcile_at(world, clock, week + timedelta(minutes=7))
    assert report["shop-prod"]["digest"] == {
        "week": iso_week(week.date()),
        "channel": "C0DEPLOYS",
        "ts": posted.ts,
    }
    assert digests(slack) == [posted]
    record = digest_record(world, iso_week(week.date()))
    assert record is not None
    assert (record["status"]["S"], record["ts"]["S"]) == ("posted", posted.ts)


def test_a_failed_post_is_retried_by_the_next_reconcile(world: World, slack: SlackApi, clock: Clock) -> None:
    week = monday(2)
    slack.fail_next("chat.postMessage", error="not_in_channel")
    report = reconcile_at(world, clock, week + timedelta(minutes=2))
    assert report["shop-prod"]["digest_error"] == "DeliveryRejected: Slack chat.postMessage: not_in_channel"
    assert digests(slack) == []
    # Released, not left to lapse: the very next reconcile posts.
    report = reconcile_at(world, clock, week + timedelta(minutes=7))
    [posted] = digests(slack)
    assert report["shop-prod"]["digest"]["ts"] == posted.ts


def _digest_calls(calls: list[HandlerCall]) -> list[tuple[str, str, str]]:
    """The calls of reconcile that only a digest makes: its record, its token, Slack's aside."""
    found = []
    for call in calls:
        key = call.params.get("Key") or call.params.get("Item") or {}
        sk = key.get("sk", {}).get("S", "")
        if call.service in ("ssm", "secretsmanager") or sk.startswith("DIGEST#"):
            found.append((call.service, call.operation, key.get("pk", {}).get("S", "")))
    return found


def test_no_digest_due_or_configured_makes_no_call(
    world: World, slack: SlackApi, clock: Clock, handler_calls: list[HandlerCall]
) -> None:
    week = monday(2)
    before = len(handler_calls)
    reconcile_at(world, clock, week - timedelta(minutes=5))
    # Not due: no call for any pipeline's digest, and nothing asked of Slack.
    assert _digest_calls(handler_calls[before:]) == []
    assert slack.calls() == []

    due = len(handler_calls)
    reconcile_at(world, clock, week)
    # Due: only shop-prod's digest is claimed, its token read and its ts recorded; the two
    # pipelines without a digest make no call for one.
    assert _digest_calls(handler_calls[due:]) == [
        ("dynamodb", "PutItem", "PIPE#shop-prod"),
        ("ssm", "GetParameter", ""),
        ("dynamodb", "UpdateItem", "PIPE#shop-prod"),
    ]
    assert [call.method for call in slack.calls()] == ["chat.postMessage"]

    posted = len(handler_calls)
    reconcile_at(world, clock, week + timedelta(minutes=5))
    # Posted already: one conditional write that fails, nothing more.
    assert _digest_calls(handler_calls[posted:]) == [("dynamodb", "PutItem", "PIPE#shop-prod")]
    assert len(slack.calls()) == 1

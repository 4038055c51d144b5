"""The release card's buttons through ``POST /slack/interactions`` and the ``on_slack_action``
worker, on moto with the local Slack look-alike as Slack: a signed click is only queued by the
route (Slack's three seconds); a bad signature, a stale timestamp, a replay and an unauthorized
user change nothing; each action is carried out with the Slack user as the actor, and the user
hears the outcome through the click's ``response_url``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_sdk import WebClient

from chalicelib import bootstrap
from chalicelib.domain.release import EventType, HistoryEvent, Release, ReleaseState
from chalicelib.domain.slack_interactions import actions_block
from infra import stack
from sandbox import moto_extensions
from sandbox.slack_api import SignedRequest, SlackApi
from tests.integration.conftest import BUCKET, World
from tests.integration.test_bad_input import HOSTILE_STRINGS, WRONG_TYPES, sqs_event

SIGNING_SECRET = "sandbox-signing-secret-0123456789abcdef"
SIGNING_PARAMETER = "/relco/test/slack-signing-secret"
TOKEN_PARAMETER = "/relco/test/slack-bot-token"
ROUTE = "/slack/interactions"
PIPELINES_TOML = f"""
[slack]
signing_secret_parameter = "{SIGNING_PARAMETER}"
token_parameter = "{TOKEN_PARAMETER}"

[[pipeline]]
name = "api-prod"
bucket = "{BUCKET}"
prefix = "api/prod/"
application = "api"
deployment_group = "api-prod"
[pipeline.slack]
operators = ["U0ALICE", "S0OPS"]

[[pipeline]]
name = "web-prod"
bucket = "{BUCKET}"
prefix = "web/prod/"
application = "web"
deployment_group = "web-prod"
[pipeline.approval]
required = true
slack_approvers = ["U0BOB", "S0LEADS"]
"""
GROUPS = {"S0OPS": ["U0CAROL"], "S0LEADS": ["U0DAVE"]}


@pytest.fixture
def pipelines_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.toml"
    path.write_text(PIPELINES_TOML, encoding="utf-8")
    return path


@pytest.fixture
def slack() -> Iterator[SlackApi]:
    # The coordinator is the Chalice test client here: requests are pressed, then posted by the test.
    with SlackApi(
        signing_secret=SIGNING_SECRET,
        interactions_url=f"http://coordinator.invalid{ROUTE}",
        usergroups=GROUPS,
    ) as api:
        yield api


@dataclass
class Cards:
    world: World
    slack: SlackApi

    def card(self, release_id: str) -> str:
        """A card with the buttons the release's state offers, posted as the notifier would."""
        block = actions_block(self.world.release(release_id))
        assert block is not None
        posted = WebClient(token="xoxb-test", base_url=self.slack.api_url).chat_postMessage(
            channel="#deploys", text=f"release {release_id}", blocks=[block]
        )
        return str(posted["ts"])

    def press(
        self, release_id: str, action: str, user: str, *, timestamp: int | None = None
    ) -> SignedRequest:
        return self.slack.press(
            "#deploys",
            self.card(release_id),
            action,
            user,
            user.lower().removeprefix("u0"),
            timestamp=timestamp,
        )

    def post(self, request: SignedRequest) -> Any:
        return self.world.client.http.post(ROUTE, headers=request.headers, body=request.body)

    def queued(self) -> list[str]:
        sqs = self.world.aws("sqs")
        url = self.world.provisioned.queue_urls[stack.SLACK_ACTIONS_QUEUE]
        bodies = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                bodies.append(message["Body"])
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return bodies

    def work(self, bodies: list[str]) -> Any:
        return self.world.invoke("on_slack_action", sqs_event(bodies))

    def click(self, release_id: str, action: str, user: str) -> str:
        """The whole path: the route queues, the worker acts; the answer the user saw."""
        answered = self.post(self.press(release_id, action, user))
        assert answered.status_code == 200, answered.body
        assert self.work(self.queued()) == {"batchItemFailures": []}
        return self.slack.responses()[-1].text

    def snapshot(self, release_id: str) -> tuple[Release, list[HistoryEvent]]:
        return self.world.release(release_id), self.world.history(release_id)


@pytest.fixture
def cards(world: World, slack: SlackApi, monkeypatch: pytest.MonkeyPatch) -> Cards:
    monkeypatch.setenv("SLACK_ACTIONS_QUEUE_URL", world.provisioned.queue_urls[stack.SLACK_ACTIONS_QUEUE])
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    ssm = world.aws("ssm")
    ssm.put_parameter(Name=SIGNING_PARAMETER, Value=SIGNING_SECRET, Type="SecureString")
    ssm.put_parameter(Name=TOKEN_PARAMETER, Value="xoxb-test", Type="SecureString")
    bootstrap.reset()
    return Cards(world, slack)


def uploaded(world: World, key: str) -> str:
    return str(world.deliver_upload(world.upload(key).eventbridge)["releases"][0]["id"])


def succeeded(world: World, key: str) -> str:
    release_id = uploaded(world, key)
    release = world.release(release_id)
    assert release.deployment_id is not None
    moto_extensions.complete(release.deployment_id, "Succeeded")
    world.codedeploy_event(release.deployment_id, "SUCCESS", release.application, release.deployment_group)
    assert world.release(release_id).state is ReleaseState.SUCCEEDED
    return release_id


def error_message(response: Any) -> str:
    return str(json.loads(response.body)["Message"])


# --- the route -------------------------------------------------------------------------------------


def test_a_signed_click_is_only_queued_and_the_worker_cancels(world: World, cards: Cards) -> None:
    uploaded(world, "api/prod/app-1.zip")
    waiting = uploaded(world, "api/prod/app-2.zip")
    before = cards.snapshot(waiting)
    assert before[0].state is ReleaseState.QUEUED

    answered = cards.post(cards.press(waiting, "cancel", "U0ALICE"))

    # Slack's three seconds: the route verified, recorded and queued, and did no use-case work.
    assert (answered.status_code, answered.body) == (200, b"")
    assert cards.snapshot(waiting) == before
    (queued,) = cards.queued()
    assert json.loads(queued) | {"request_id": "-"} == {
        "action": "cancel",
        "release_id": waiting,
        "user_id": "U0ALICE",
        "user_name": "alice",
        "response_url": json.loads(queued)["response_url"],
        "request_id": "-",
        "channel": "C0DEPLOYS",
        "message_ts": json.loads(queued)["message_ts"],
    }

    assert cards.work([queued]) == {"batchItemFailures": []}

    cancelled = world.release(waiting)
    assert cancelled.state is ReleaseState.STOPPED
    assert cancelled.reason == "cancelled by slack:U0ALICE (alice)"
    assert world.history(waiting)[-1].type is EventType.EXECUTION_ABORTED
    (response,) = cards.slack.responses()
    assert response.payload["response_type"] == "ephemeral"
    assert response.payload["replace_original"] is False
    assert f"You cancelled release `{waiting}` of api-prod" in response.text


def test_a_bad_signature_is_401_and_changes_nothing(world: World, cards: Cards) -> None:
    release_id = uploaded(world, "api/prod/app-1.zip")
    before = cards.snapshot(release_id)
    genuine = cards.press(release_id, "cancel", "U0ALICE")
    forged = SlackApi(signing_secret="not-the-app-secret", interactions_url=genuine.url).signed(genuine.body)
    tampered = SignedRequest(genuine.url, genuine.body.replace(b"U0ALICE", b"U0MALLO"), genuine.headers)
    unsigned = {"Content-Type": "application/x-www-form-urlencoded"}

    for request in (forged, tampered, SignedRequest(genuine.url, genuine.body, unsigned)):
        answered = cards.post(request)
        assert answered.status_code == 401, answered.body
        assert "signing secret" in error_message(answered)

    assert cards.queued() == []
    assert cards.snapshot(release_id) == before


def test_a_stale_timestamp_is_401_and_changes_nothing(world: World, cards: Cards) -> None:
    release_id = uploaded(world, "api/prod/app-1.zip")
    before = cards.snapshot(release_id)
    # SignatureVerifier takes five minutes either way.
    for skew in (-301, 301):
        answered = cards.post(cards.press(release_id, "cancel", "U0ALICE", timestamp=int(time.time()) + skew))
        assert answered.status_code == 401, answered.body

    assert cards.queued() == []
    assert cards.snapshot(release_id) == before


def test_a_replayed_request_is_409_and_changes_nothing(world: World, cards: Cards) -> None:
    release_id = uploaded(world, "api/prod/app-1.zip")
    request = cards.press(release_id, "cancel", "U0ALICE")
    assert cards.post(request).status_code == 200
    queued = cards.queued()
    before = cards.snapshot(release_id)

    replayed = cards.post(request)

    assert replayed.status_code == 409
    assert "received before" in error_message(replayed)
    assert cards.queued() == []
    assert cards.snapshot(release_id) == before
    assert len(queued) == 1


def test_an_unauthorized_user_is_refused_and_nothing_changes(world: World, cards: Cards) -> None:
    uploaded(world, "api/prod/app-1.zip")
    waiting = uploaded(world, "api/prod/app-2.zip")
    before = cards.snapshot(waiting)

    answer = cards.click(waiting, "cancel", "U0MALLORY")

    assert answer == ":no_entry: You may not cancel releases of api-prod."
    assert cards.snapshot(waiting) == before


def test_a_member_of_an_operators_group_may_act(world: World, cards: Cards) -> None:
    uploaded(world, "api/prod/app-1.zip")
    waiting = uploaded(world, "api/prod/app-2.zip")

    answer = cards.click(waiting, "cancel", "U0CAROL")

    assert "You cancelled" in answer
    assert world.release(waiting).reason == "cancelled by slack:U0CAROL (carol)"
    listed = [call for call in cards.slack.calls() if call.method == "usergroups.users.list"]
    assert [call.params["usergroup"] for call in listed] == ["S0OPS"]


def test_the_route_answers_bad_input_with_a_4xx(world: World, cards: Cards) -> None:
    release_id = uploaded(world, "api/prod/app-1.zip")
    before = cards.snapshot(release_id)
    good = cards.press(release_id, "cancel", "U0ALICE").payload
    bad_payloads: list[Any] = [
        *WRONG_TYPES,
        *HOSTILE_STRINGS[:6],
        {**good, "type": "view_submission"},
        {**good, "actions": []},
        {**good, "actions": [{**good["actions"][0], "action_id": "deploy_everything"}]},
        {**good, "actions": [{**good["actions"][0], "value": "../../etc/passwd"}]},
        {**good, "user": "U0ALICE"},
        {key: value for key, value in good.items() if key != "response_url"},
    ]
    bodies = [b"", b"payload=%7B", b"payload=1&payload=2", b"\xff\xfe", b"x" * 20_000]
    bodies += [urlencode({"payload": json.dumps(payload)}).encode() for payload in bad_payloads]

    for body in bodies:
        answered = cards.post(cards.slack.signed(body))
        assert answered.status_code == 400, (body[:80], answered.body)
        assert error_message(answered)

    assert cards.queued() == []
    assert cards.snapshot(release_id) == before


def test_without_a_slack_app_the_route_is_404(world: World, cards: Cards, pipelines_file: Path) -> None:
    release_id = uploaded(world, "api/prod/app-1.zip")
    pipelines_file.write_text(PIPELINES_TOML.split("[[pipeline]]", 1)[1].join(["[[pipeline]]", ""]))
    bootstrap.reset()

    answered = cards.post(cards.press(release_id, "cancel", "U0ALICE"))

    assert answered.status_code == 404
    assert "[slack]" in error_message(answered)


# --- the worker ------------------------------------------------------------------------------------


def test_the_worker_drops_malformed_messages_and_answers_for_missing_releases(cards: Cards) -> None:
    response_url = f"{cards.slack.api_url.removesuffix('/api/')}/actions/T0SANDBOX/1/sandbox"
    message = {
        "action": "cancel",
        "user_id": "U0ALICE",
        "response_url": response_url,
        "request_id": "0" * 64,
    }
    bodies = ["{", "null", json.dumps({**message, "action": "explode"}), json.dumps(message)]
    # An empty release id is malformed (dropped); the others name no release (answered).
    missing = [*HOSTILE_STRINGS[1:6], "rel-nope"]
    bodies += [json.dumps({**message, "release_id": value}) for value in ["", *missing]]

    assert cards.work(bodies) == {"batchItemFailures": []}

    answers = [response.text for response in cards.slack.responses()]
    assert len(answers) == len(missing)
    assert all(answer.startswith(":warning: Release `") and "does not exist" in answer for answer in answers)


def test_redeploy_from_the_card(world: World, cards: Cards) -> None:
    release_id = succeeded(world, "api/prod/app-1.zip")

    answer = cards.click(release_id, "redeploy", "U0ALICE")

    (new,) = [
        release for release in world.store.list_releases("api-prod", 5, None) if release.id != release_id
    ]
    assert new.id.startswith("slack-")
    assert new.actor == "slack:U0ALICE (alice)"
    assert new.metadata["redeploy_of"] == release_id
    assert new.state is ReleaseState.DEPLOYING
    assert answer == (
        f":repeat: Redeploying release `{release_id}` of api-prod as release `{new.id}` (DEPLOYING)."
    )


def test_roll_back_from_the_card(world: World, cards: Cards) -> None:
    first = succeeded(world, "api/prod/app-1.zip")
    second = succeeded(world, "api/prod/app-2.zip")

    answer = cards.click(second, "roll_back", "U0ALICE")

    (rollback,) = [r for r in world.store.list_releases("api-prod", 5, None) if r.id not in (first, second)]
    assert rollback.trigger.is_rollback
    assert rollback.rollback_of == second
    assert rollback.revision == world.release(first).revision
    assert rollback.actor == "slack:U0ALICE (alice)"
    assert f"to release `{first}` as release `{rollback.id}`" in answer
    # The first release's card has nothing older to go back to: an answer, and no release.
    nothing = cards.click(first, "roll_back", "U0ALICE")
    assert nothing.startswith(f":warning: Could not roll back release `{first}`: no release of api-prod")
    assert len(world.store.list_releases("api-prod", 10, None)) == 3


def test_approve_and_reject_from_the_card(world: World, cards: Cards) -> None:
    awaiting = uploaded(world, "web/prod/app-1.zip")
    assert world.release(awaiting).state is ReleaseState.AWAITING_APPROVAL
    before = cards.snapshot(awaiting)

    # An operator of another pipeline is no approver of this one.
    refused = cards.click(awaiting, "approve", "U0ALICE")
    assert refused == ":no_entry: You may not approve releases of web-prod."
    assert cards.snapshot(awaiting) == before

    approved = cards.click(awaiting, "approve", "U0BOB")
    assert approved.startswith(f":white_check_mark: You approved release `{awaiting}` of web-prod")
    assert world.release(awaiting).state is ReleaseState.DEPLOYING
    assert any("slack:U0BOB (bob)" in json.dumps(event.detail) for event in world.history(awaiting))

    newer = uploaded(world, "web/prod/app-2.zip")
    rejected = cards.click(newer, "reject", "U0DAVE")  # a member of the approvers' group S0LEADS
    assert rejected.startswith(f":no_entry_sign: You rejected release `{newer}`")
    assert world.release(newer).state is ReleaseState.STOPPED


def test_an_unreadable_signing_secret_is_503_and_changes_nothing(world: World, cards: Cards) -> None:
    release_id = uploaded(world, "api/prod/app-1.zip")
    before = cards.snapshot(release_id)
    world.aws("ssm").delete_parameter(Name=SIGNING_PARAMETER)

    answered = cards.post(cards.press(release_id, "cancel", "U0ALICE"))

    assert answered.status_code == 503
    assert f"SSM parameter {SIGNING_PARAMETER} cannot be read: ParameterNotFound" in error_message(answered)
    assert cards.queued() == []
    assert cards.snapshot(release_id) == before

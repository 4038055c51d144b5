"""End to end on the sandbox: buttons pressed on release cards in the Slack look-alike, as Slack
sends the clicks (signed, to the API's /slack/interactions), carried out by on_slack_action, the
user answered through response_url, and the card updated by the notification flow."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chalicelib import bootstrap
from chalicelib.domain.notifications import SlackThread
from chalicelib.domain.release import Release, ReleaseState
from sandbox.runtime import PIPELINE, SLACK_ONCALL_MEMBER, SLACK_OPERATOR, Sandbox
from tests.e2e.test_demo import processes_under


def newest_release(sandbox: Sandbox, other_than: set[str]) -> Release:
    """The release an action started (the newest one not among ``other_than``)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        releases = bootstrap.wiring().store.list_releases(PIPELINE, 10, None)
        started = [release for release in releases if release.id not in other_than]
        if started:
            return started[0]
        time.sleep(0.25)
    raise TimeoutError("no release was started")


def answered(sandbox: Sandbox, count: int) -> str:
    """The ``count``-th answer the app posted to a click's response_url."""
    assert sandbox.slack is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        responses = sandbox.slack.responses()
        if len(responses) >= count:
            return responses[count - 1].text
        time.sleep(0.1)
    raise TimeoutError(f"answer {count} never came")


def card_buttons(sandbox: Sandbox, release_id: str) -> list[str]:
    assert sandbox.slack is not None
    release = bootstrap.wiring().store.get_release(release_id)
    assert release is not None
    thread = SlackThread.from_stored(next(iter(release.notification_threads.values())))
    (root,) = [m for m in sandbox.slack.messages(thread.channel) if m.ts == thread.ts]
    actions = [block for block in root.blocks or [] if block["type"] == "actions"]
    return [element["action_id"] for block in actions for element in block["elements"]]


def until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_cancel_roll_back_and_redeploy_from_the_card(tmp_path: Path) -> None:
    with Sandbox(tmp_path) as sandbox:
        first = sandbox.deploy("1.0.0")
        second = sandbox.deploy("2.0.0")
        assert (first.state, second.state) == (ReleaseState.SUCCEEDED, ReleaseState.SUCCEEDED)

        # Roll back from the second release's card: the release that succeeded before it.
        click = sandbox.click(second.id, "roll_back")
        assert (click.status, click.answer) == (200, b"")
        rollback = sandbox.wait_terminal(newest_release(sandbox, {first.id, second.id}).id)
        assert rollback.state is ReleaseState.SUCCEEDED
        assert rollback.trigger.is_rollback
        assert rollback.revision == first.revision
        assert rollback.actor == f"slack:{SLACK_OPERATOR} (operator)"
        assert f"to release `{first.id}`" in answered(sandbox, 1)

        # Redeploy the second release from its card.
        sandbox.click(second.id, "redeploy")
        redeployed = sandbox.wait_terminal(newest_release(sandbox, {first.id, second.id, rollback.id}).id)
        assert redeployed.state is ReleaseState.SUCCEEDED
        assert redeployed.metadata["redeploy_of"] == second.id
        assert "Redeploying release" in answered(sandbox, 2)

        # Someone who is no operator: refused, nothing changes.
        refused = sandbox.click(redeployed.id, "redeploy", "U0STRANGER", "stranger")
        assert refused.status == 200
        assert answered(sandbox, 3) == ":no_entry: You may not redeploy releases of demo."
        known = {first.id, second.id, rollback.id, redeployed.id}
        assert {r.id for r in bootstrap.wiring().store.list_releases(PIPELINE, 10, None)} == known

        # Cancel a deployment in progress as a member of the on-call group; the card follows.
        third = sandbox.upload("3.0.0")
        sandbox.click(third, "cancel", SLACK_ONCALL_MEMBER, "oncall")
        stopped = sandbox.wait_terminal(third)
        assert stopped.state is ReleaseState.STOPPED
        assert "CodeDeploy was asked to stop" in answered(sandbox, 4) or "You cancelled" in answered(
            sandbox, 4
        )
        # The card is edited by the notification flow (the history event through the outbox).
        until(lambda: card_buttons(sandbox, third) == ["redeploy"], "the cancelled card shows only Redeploy")
        assert card_buttons(sandbox, second.id) == ["roll_back", "redeploy"]
    assert processes_under(tmp_path) == []

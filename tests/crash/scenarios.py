"""The scenarios the sweep crashes: each schedules uploads and operator requests on a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.crash.harness import Run
from tests.crash.world import (
    APPROVAL_EXPIRES_S,
    FREEZE_ENDS_S,
    FREEZE_STARTS_S,
    FROZEN,
    GATED,
    NOTIFIED,
    PROMOTED,
    PROMOTING,
    QUIET,
    SLACK_APPROVER,
    SLACK_OPERATOR,
    WATCHED,
    WATCHED_ALARM,
)


@dataclass(frozen=True)
class Scenario:
    name: str
    story: str
    schedule: Callable[[Run], None]
    # The functions whose invocations the sweep kills (None: all). A scenario whose other
    # invocations make the same calls as another scenario's, already swept there, names the
    # ones it is about, to keep the sweep's time down.
    crashed: frozenset[str] | None = None


def _one_upload(run: Run) -> None:
    run.upload(0, "shop/prod/shop-v1.zip", NOTIFIED)


def _notified_waiting_cancelled(run: Run) -> None:
    run.upload(0, "shop/prod/shop-v1.zip", NOTIFIED)
    run.upload(1, "shop/prod/shop-v2.zip", NOTIFIED)
    run.cancel(10, "shop/prod/shop-v2.zip")


def _second_upload_queues(run: Run) -> None:
    run.upload(0, "cart/prod/cart-v1.zip", QUIET)
    run.upload(1, "cart/prod/cart-v2.zip", QUIET)


def _failed_deploy_rolls_back(run: Run) -> None:
    run.upload(0, "cart/prod/cart-v1.zip", QUIET)
    run.upload(200, "cart/prod/cart-v2.zip", QUIET, good=False)


def _cancel_waiting(run: Run) -> None:
    run.upload(0, "cart/prod/cart-v1.zip", QUIET)
    run.upload(1, "cart/prod/cart-v2.zip", QUIET)
    run.cancel(10, "cart/prod/cart-v2.zip")


def _cancel_deploying(run: Run) -> None:
    run.upload(0, "cart/prod/cart-v1.zip", QUIET)
    run.cancel(20, "cart/prod/cart-v1.zip")


def _approved(run: Run) -> None:
    run.upload(0, "gated/prod/gated-v1.zip", GATED)
    run.approve(30, "gated/prod/gated-v1.zip")


def _rejected(run: Run) -> None:
    run.upload(0, "gated/prod/gated-v1.zip", GATED)
    run.reject(30, "gated/prod/gated-v1.zip")


def _approval_from_slack(run: Run) -> None:
    run.upload(0, "gated/prod/gated-v1.zip", GATED)
    run.approve_from_card(30, "gated/prod/gated-v1.zip", SLACK_APPROVER)


def _redeploy_from_slack(run: Run) -> None:
    run.upload(0, "cart/prod/cart-v1.zip", QUIET)
    run.redeploy_from_card(100, "cart/prod/cart-v1.zip", SLACK_OPERATOR)


def _approval_expires(run: Run) -> None:
    run.upload(0, "gated/prod/gated-v1.zip", GATED)
    run.wait_until(APPROVAL_EXPIRES_S)


def _freeze_holds_until_its_end(run: Run) -> None:
    run.upload(0, "frozen/prod/frozen-v1.zip", FROZEN)
    run.break_glass(FREEZE_STARTS_S + 10, "frozen/prod/frozen-v1.zip", FROZEN)
    run.upload(FREEZE_STARTS_S + 20, "frozen/prod/frozen-v2.zip", FROZEN)
    run.wait_until(FREEZE_ENDS_S)


def _alarm_holds_the_start(run: Run) -> None:
    run.set_alarm(0, WATCHED_ALARM, "ALARM")
    run.upload(1, "watched/prod/watched-v1.zip", WATCHED)
    run.set_alarm(100, WATCHED_ALARM, "OK")


def _promotion_after_soak(run: Run) -> None:
    run.upload(0, "promo/stg/promo-v1.zip", PROMOTING)


def _promotion_cancelled_by_rollback(run: Run) -> None:
    run.upload(0, "promo/stg/promo-v1.zip", PROMOTING)
    run.upload(1, "promo/stg/promo-v2.zip", PROMOTING)
    # v1 is verified at about 71 s, v2 at about 143 s; v1's promotion deploys from about 131 s to
    # 201 s, so v2's, asked for at 150 s, waits behind it; the rollback comes before v2's soak ends.
    run.promote(150, PROMOTED, "promo/stg/promo-v2.zip")
    run.roll_back(160, PROMOTING, "promo/stg/promo-v2.zip", "promo/stg/promo-v1.zip")


def _upload_downstream_refused(run: Run) -> None:
    run.upload(0, "promo/prod/promo-v1.zip", PROMOTED)


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "one_upload",
            "an upload deploys and is verified (default verify settings, the provisioned target "
            "group's health checks) to SUCCEEDED; its Slack thread and email are delivered",
            _one_upload,
        ),
        Scenario(
            "notified_waiting_cancelled",
            "on the notified pipeline v2 waits behind v1 and is cancelled through the API: v1's "
            "GitHub deployment goes in_progress then success, v2's queued then inactive, each "
            "release's Slack thread and mail as they go",
            _notified_waiting_cancelled,
            # The slot, the API's cancel and CodeDeploy's events make the calls cancel_waiting's
            # do (on cart-prod, which has no routes): here only the deliveries are crashed.
            crashed=frozenset({"on_notify_message"}),
        ),
        Scenario(
            "second_upload_queues",
            "v2 is uploaded a second after v1, waits for the slot and deploys after it",
            _second_upload_queues,
        ),
        Scenario(
            "failed_deploy_rolls_back",
            "v1 succeeds; v2's deployment fails on an instance's ValidateService hook and is rolled "
            "back to v1",
            _failed_deploy_rolls_back,
        ),
        Scenario(
            "cancel_waiting",
            "v2 waits behind v1 and is cancelled through the API",
            _cancel_waiting,
        ),
        Scenario(
            "cancel_deploying",
            "v1 is cancelled through the API while CodeDeploy deploys it",
            _cancel_deploying,
        ),
        Scenario(
            "approval_approved",
            "an upload to the approval pipeline awaits approval; an operator the pipeline names "
            "approves it through the API; it deploys and is verified",
            _approved,
        ),
        Scenario(
            "approval_from_slack",
            "an upload to the approval pipeline awaits approval; a member of the Slack user group "
            "the pipeline names presses Approve on its card (the interactions route queues the "
            "click, on_slack_action approves and answers them); it deploys and is verified, "
            "approved by slack:<user> (<name>)",
            _approval_from_slack,
        ),
        Scenario(
            "redeploy_from_slack",
            "v1 deploys and is verified; an operator the pipeline names presses Redeploy on its "
            "card: one new release of v1's revision, in their name, deploys and is verified",
            _redeploy_from_slack,
        ),
        Scenario(
            "approval_rejected",
            "an upload awaiting approval is rejected through the API and ends STOPPED",
            _rejected,
        ),
        Scenario(
            "approval_expires",
            "nobody approves an upload; the clock passes expires_after and the lane's wake-up (or "
            "reconcile) expires it: STOPPED",
            _approval_expires,
        ),
        Scenario(
            "freeze_holds_until_its_end",
            "v1 deploys before the freeze; during it an operator breaks the glass to deploy v1's "
            "object again, which starts at once, and v2 is uploaded and held; the lane's wake-up "
            "at the freeze's end starts v2",
            _freeze_holds_until_its_end,
        ),
        Scenario(
            "alarm_holds_the_start",
            "the pipeline's alarm is in ALARM when v1 is uploaded: v1 waits QUEUED with the alarm "
            "named; the alarm clears and reconcile starts it",
            _alarm_holds_the_start,
        ),
        Scenario(
            "promotion_after_soak",
            "v1 is uploaded upstream, deploys and is verified; when the soak ends the downstream "
            "pipeline gets a promotion of exactly v1's object version and eTag, which deploys and "
            "succeeds, and v1's history links it",
            _promotion_after_soak,
        ),
        Scenario(
            "promotion_cancelled_by_rollback",
            "v1 and v2 are uploaded upstream and verified in turn; v1 is promoted after the soak; "
            "an operator promotes v2 at once (relco promote), which waits behind v1's promotion; "
            "an operator rolls upstream back from v2 to v1 before v2's soak ends: v2's pending "
            "promotion ends STOPPED and never deploys",
            _promotion_cancelled_by_rollback,
            # Its two uploads' events and its stream records (no notification routes) make the
            # calls second_upload_queues's do; promotion is in CodeDeploy's SUCCESS upstream (the
            # soak's wake-up), the wake-up, CodeDeploy's events downstream, promote and rollback.
            crashed=frozenset({"on_codedeploy_event", "on_verify_message", "api_handler", "reconcile"}),
        ),
        Scenario(
            "upload_downstream_refused",
            "an upload to a pipeline that promotes from another is refused (FAILED, saying so); "
            "nothing deploys there",
            _upload_downstream_refused,
        ),
    )
}

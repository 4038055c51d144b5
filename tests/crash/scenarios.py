"""The scenarios the sweep crashes: each schedules uploads and operator requests on a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.crash.harness import Run
from tests.crash.world import NOTIFIED, QUIET


@dataclass(frozen=True)
class Scenario:
    name: str
    story: str
    schedule: Callable[[Run], None]


def _one_upload(run: Run) -> None:
    run.upload(0, "shop/prod/shop-v1.zip", NOTIFIED)


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
    )
}

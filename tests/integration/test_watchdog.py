"""The stuck-deployment watchdog on moto: each class detected by reconcile (run every 5 minutes on
a simulated clock, the detection time measured on it), the deployment stopped once, the release
FAILED with the class and its next step, and nothing doubled by a repeat or CodeDeploy's STOP."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appspec import LIFECYCLE_EVENTS
from chalicelib.domain.inbound_events import DeploymentState, DeploymentStateChanged
from chalicelib.domain.release import EventType, ReleaseState
from chalicelib.domain.watchdog import WatchdogLimits
from chalicelib.service.deployment_events import handle_deployment_event
from chalicelib.service.reconcile import reconcile
from chalicelib.service.wiring import Wiring
from sandbox import moto_extensions
from tests.integration.conftest import World
from tests.integration.test_recovery import ManualClock, direct_wiring

RECONCILE_PERIOD = timedelta(minutes=5)
FIRST, SECOND, THIRD = "i-0abc0000000000001", "i-0abc0000000000002", "i-0abc0000000000003"


def _events(**statuses: tuple[str, datetime | None, str | None]) -> list[dict[str, Any]]:
    """Every lifecycle event Pending, but those given: name -> (status, start, message)."""
    events: list[dict[str, Any]] = []
    for name in LIFECYCLE_EVENTS:
        status, started, message = statuses.get(name, ("Pending", None, None))
        event: dict[str, Any] = {"lifecycleEventName": name, "status": status}
        if started is not None:
            event["startTime"] = started
        if message is not None:
            event["diagnostics"] = {"errorCode": "UnknownError", "scriptName": "", "message": message}
        events.append(event)
    return events


def _done(started: datetime) -> tuple[str, datetime | None, str | None]:
    return ("Succeeded", started, None)


class Deploying:
    """One api-prod release DEPLOYING, its deployment InProgress, reconcile run on a clock that
    starts when the deployment did."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.release_id = world.deliver_upload(world.upload("api/prod/app-1.zip").eventbridge)["releases"][0][
            "id"
        ]
        deployment_id = world.release(self.release_id).deployment_id
        assert deployment_id is not None
        self.deployment_id = deployment_id
        moto_extensions.start(deployment_id)
        self.clock = ManualClock()
        self.clock.current = self.started = datetime.now(UTC).replace(microsecond=0)
        self.wiring: Wiring = direct_wiring(world, self.clock)

    def targets(self, targets: dict[str, dict[str, Any]]) -> None:
        moto_extensions.set_instance_targets(self.deployment_id, targets)

    def reconcile_until_stopped(self, limit: timedelta) -> timedelta:
        """Reconcile every 5 minutes until the watchdog stops the deployment; how long after the
        deployment started that was."""
        while self.clock.current - self.started < limit:
            self.clock.advance(RECONCILE_PERIOD)
            report = reconcile(self.wiring)
            watched = report.get("api-prod", {}).get("watchdog", {}).get(self.release_id, {})
            if "stopped" in watched:
                return self.clock.current - self.started
        raise AssertionError(f"not stopped within {limit}")

    def stop_events(self) -> list[dict[str, Any]]:
        return [
            dict(event.detail)
            for event in self.world.history(self.release_id)
            if event.type is EventType.TASK_SCHEDULED and event.detail.get("task") == "StopDeployment"
        ]

    def code_deploy_stops_it(self) -> None:
        """CodeDeploy carries the stop out and its STOP event arrives."""
        moto_extensions.complete(self.deployment_id, "Stopped", error_code="MANUAL_STOP")
        handle_deployment_event(
            self.wiring, DeploymentStateChanged(self.deployment_id, DeploymentState.STOP, "api", "api-prod")
        )


def _assert_failed_once(deploying: Deploying, kind: str, next_step: str) -> None:
    release = deploying.world.release(deploying.release_id)
    assert release.state is ReleaseState.FAILED
    assert f"{kind}: {next_step}" in release.reason
    assert moto_extensions.stop_requested(deploying.deployment_id)
    [stop] = deploying.stop_events()
    assert (stop["class"], stop["next_step"], stop["auto_rollback"]) == (kind, next_step, True)
    history = deploying.world.history(deploying.release_id)
    # CodeDeploy's STOP event and another reconcile run find it ended: nothing is added.
    deploying.code_deploy_stops_it()
    deploying.clock.advance(RECONCILE_PERIOD)
    assert reconcile(deploying.wiring).get("api-prod", {}).get("watchdog") is None
    assert deploying.world.history(deploying.release_id) == history
    assert deploying.world.store.get_slot("api-prod").active is None


def test_agent_not_polling_is_stopped_after_the_agent_timeout(world: World) -> None:
    deploying = Deploying(world)
    pending = {"status": "Pending", "lastUpdatedAt": deploying.started, "lifecycleEvents": _events()}
    deploying.targets({FIRST: pending, SECOND: pending})

    detected_after = deploying.reconcile_until_stopped(timedelta(hours=1))

    # agent_timeout 10 min (the default), judged by the 5-minute reconcile: the first run past it.
    assert detected_after == timedelta(minutes=15)
    _assert_failed_once(
        deploying,
        "agent_not_polling",
        f"agent on {FIRST} (and 1 more) did not poll for 15 min: is codedeploy-agent running?",
    )


def test_half_a_fleet_waiting_its_turn_is_not_an_agent_problem(world: World) -> None:
    deploying = Deploying(world)
    started = deploying.started
    deploying.targets(
        {
            FIRST: {
                "status": "InProgress",
                "lastUpdatedAt": started,
                "lifecycleEvents": _events(
                    ApplicationStop=_done(started), DownloadBundle=("InProgress", started, None)
                ),
            },
            SECOND: {"status": "Pending", "lastUpdatedAt": started, "lifecycleEvents": _events()},
        }
    )
    for _ in range(6):  # 30 minutes: no hook has overrun, one instance is being deployed
        deploying.clock.advance(RECONCILE_PERIOD)
        assert "watchdog" not in reconcile(deploying.wiring).get("api-prod", {})
    assert world.release(deploying.release_id).state is ReleaseState.DEPLOYING
    assert not moto_extensions.stop_requested(deploying.deployment_id)


def test_hook_overrun_is_stopped_after_the_hook_timeout_and_margin(world: World) -> None:
    deploying = Deploying(world)
    started = deploying.started
    deploying.targets(
        {
            FIRST: {
                "status": "InProgress",
                "lastUpdatedAt": started,
                "lifecycleEvents": _events(
                    ApplicationStop=_done(started),
                    DownloadBundle=_done(started),
                    BeforeInstall=_done(started),
                    Install=_done(started),
                    AfterInstall=_done(started),
                    ApplicationStart=_done(started),
                    ValidateService=("InProgress", started, None),
                ),
            },
            SECOND: {"status": "Pending", "lastUpdatedAt": started, "lifecycleEvents": _events()},
        }
    )

    detected_after = deploying.reconcile_until_stopped(timedelta(hours=2))

    # CodeDeploy's default hook timeout (3600 s) + the 5 min margin, then the next reconcile.
    assert detected_after == timedelta(minutes=70)
    _assert_failed_once(
        deploying,
        "hook_overrun",
        f"ValidateService on {FIRST} has run 70 min, past its 60 min timeout + 5 min: what does its "
        "script wait for? See /opt/codedeploy-agent/deployment-root/deployment-logs/"
        "codedeploy-agent-deployments.log on the instance",
    )


def test_download_failed_is_stopped_at_the_first_look(world: World) -> None:
    deploying = Deploying(world)
    started = deploying.started
    deploying.targets(
        {
            FIRST: {
                "status": "InProgress",
                "lastUpdatedAt": started,
                "lifecycleEvents": _events(
                    ApplicationStop=_done(started), DownloadBundle=("Failed", started, "Access Denied\nmore")
                ),
            },
            SECOND: {"status": "Pending", "lastUpdatedAt": started, "lifecycleEvents": _events()},
        }
    )

    detected_after = deploying.reconcile_until_stopped(timedelta(hours=1))

    assert detected_after == RECONCILE_PERIOD
    _assert_failed_once(
        deploying,
        "download_failed",
        f"DownloadBundle failed on {FIRST}: Access Denied: can the instance profile read the bundle "
        "(s3:GetObject, s3:GetObjectVersion) and reach S3?",
    )


def test_an_instance_added_during_the_deploy_is_recorded_once_without_a_stop(world: World) -> None:
    deploying = Deploying(world)
    started = deploying.started
    working = {
        "status": "InProgress",
        "lastUpdatedAt": started,
        "lifecycleEvents": _events(ApplicationStop=("InProgress", started, None)),
    }
    deploying.targets({FIRST: working, SECOND: working})
    deploying.clock.advance(RECONCILE_PERIOD)
    assert "watchdog" not in reconcile(deploying.wiring).get("api-prod", {})  # the first look

    deploying.targets({FIRST: working, SECOND: working, THIRD: working})  # Auto Scaling launched one
    deploying.clock.advance(RECONCILE_PERIOD)
    report = reconcile(deploying.wiring)
    deploying.clock.advance(RECONCILE_PERIOD)
    again = reconcile(deploying.wiring)

    # Detected at the first reconcile after it joined (5 min), recorded once, never a stop.
    assert report["api-prod"]["watchdog"] == {deploying.release_id: {"instances_added": THIRD}}
    assert "watchdog" not in again.get("api-prod", {})
    [added] = [
        event.detail
        for event in world.history(deploying.release_id)
        if event.detail.get("class") == "instance_added"
    ]
    assert added["next_step"] == (
        f"{THIRD} joined the deployment while it ran (Auto Scaling?): "
        "check it runs the new revision once the release ends"
    )
    assert world.release(deploying.release_id).state is ReleaseState.DEPLOYING
    assert not moto_extensions.stop_requested(deploying.deployment_id)


def test_code_deploys_stop_event_ends_the_release_with_the_diagnosis_after_a_crash(world: World) -> None:
    """The reconcile that stopped the deployment died before its write: CodeDeploy's STOP event
    ends the release FAILED with the watchdog's diagnosis, not STOPPED."""
    deploying = Deploying(world)
    pending = {"status": "Pending", "lastUpdatedAt": deploying.started, "lifecycleEvents": _events()}
    deploying.targets({FIRST: pending})
    codedeploy = world.session.client("codedeploy")
    deploying.wiring = direct_wiring(world, deploying.clock, codedeploy)

    def die(**_: Any) -> None:
        raise SystemExit("Lambda timed out right after StopDeployment")

    codedeploy.meta.events.register("after-call.codedeploy.StopDeployment", die)
    deploying.clock.advance(timedelta(minutes=15))
    with pytest.raises(SystemExit):
        reconcile(deploying.wiring)
    codedeploy.meta.events.unregister("after-call.codedeploy.StopDeployment", die)
    assert world.release(deploying.release_id).state is ReleaseState.DEPLOYING

    deploying.code_deploy_stops_it()

    release = world.release(deploying.release_id)
    assert release.state is ReleaseState.FAILED
    assert "agent_not_polling: agent on " in release.reason
    assert len(deploying.stop_events()) == 1


def test_a_stop_refused_once_is_asked_again_by_the_next_reconcile(world: World) -> None:
    deploying = Deploying(world)
    pending = {"status": "Pending", "lastUpdatedAt": deploying.started, "lifecycleEvents": _events()}
    deploying.targets({FIRST: pending})
    codedeploy = world.session.client("codedeploy")
    deploying.wiring = direct_wiring(world, deploying.clock, codedeploy)
    calls: list[str] = []
    codedeploy.meta.events.register("before-call.codedeploy", lambda model, **_: calls.append(model.name))

    def throttle(**_: Any) -> None:
        raise SystemExit("throttled")

    codedeploy.meta.events.register("before-call.codedeploy.StopDeployment", throttle)
    deploying.clock.advance(timedelta(minutes=15))
    with pytest.raises(SystemExit):
        reconcile(deploying.wiring)
    codedeploy.meta.events.unregister("before-call.codedeploy.StopDeployment", throttle)
    calls.clear()

    deploying.clock.advance(RECONCILE_PERIOD)
    reconcile(deploying.wiring)

    # The decision was recorded: the next run stops without judging the targets again (what
    # follows is the fleet check of the release that has just ended).
    assert calls[:2] == ["GetDeployment", "StopDeployment"]
    assert world.release(deploying.release_id).state is ReleaseState.FAILED
    assert len(deploying.stop_events()) == 1


def test_a_disabled_watchdog_leaves_a_stuck_deployment_alone(world: World) -> None:
    deploying = Deploying(world)
    pending = {"status": "Pending", "lastUpdatedAt": deploying.started, "lifecycleEvents": _events()}
    deploying.targets({FIRST: pending})
    pipelines = deploying.wiring.pipelines
    disabled = tuple(
        replace(pipeline, watchdog=WatchdogLimits(enabled=False)) if pipeline.name == "api-prod" else pipeline
        for pipeline in pipelines.pipelines
    )
    deploying.wiring = replace(deploying.wiring, pipelines=replace(pipelines, pipelines=disabled))
    deploying.clock.advance(timedelta(hours=2))
    assert "watchdog" not in reconcile(deploying.wiring).get("api-prod", {})
    assert world.release(deploying.release_id).state is ReleaseState.DEPLOYING

"""The stuck-deployment watchdog end to end: the sandbox's agent is told to misbehave, reconcile
(every RECONCILE_EVERY_S, as the event pump runs it) finds the deployment stuck within the short
limits written to the sandbox's pipelines file, stops it, and the release ends FAILED with the
class and its next step in its reason and history. Each test prints how long detection took,
from the moment the watchdog's limit started counting to the stop decision in the history.

The fleet has four instances, so HalfAtATime deploys two at a time: a download that fails on one
instance of a batch while the other is still at work leaves the deployment running (on two
instances a failed download ends it at once, as CodeDeploy does), and that is what the watchdog
stops as ``download_failed``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.domain.release import EventType, HistoryEvent, Release, ReleaseState
from chalicelib.domain.watchdog import WatchdogLimits
from sandbox import moto_extensions
from sandbox.codedeploy_agent import DOWNLOAD_DENIED_MESSAGE, Misbehaviour
from sandbox.runtime import RECONCILE_EVERY_S, STAGING, Sandbox
from tests.e2e.test_demo import processes_under

# Shorter than a reconcile period, so the first or second reconcile of a deployment finds it stuck.
LIMITS = WatchdogLimits(
    agent_timeout=timedelta(seconds=15), hook_timeout=timedelta(seconds=10), margin=timedelta(seconds=5)
)
# The first reconcile past a limit finds it: at most one period late, plus the time a reconcile
# run and the stop's history write take on a loaded machine.
DETECTION_SLACK = timedelta(seconds=RECONCILE_EVERY_S + 10)
HUNG_EVENT = "BeforeInstall"
# Two batches of two under HalfAtATime: a batch can hold a failed instance and a working one.
FLEET_SIZE = 4


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    workdir = tmp_path_factory.mktemp("watchdog")
    with Sandbox(workdir, instances=FLEET_SIZE, watchdog=LIMITS) as running:
        yield running
    assert processes_under(workdir) == []


@pytest.fixture
def agent(sandbox: Sandbox) -> Iterator[Any]:
    """The staging fleet's agent; it behaves again after each test."""
    fleet_agent = sandbox.fleets[STAGING].agent
    yield fleet_agent
    fleet_agent.misbehave(Misbehaviour())


def history(release_id: str) -> list[HistoryEvent]:
    return bootstrap.wiring().store.history(release_id)


def stop_decision(release_id: str) -> HistoryEvent:
    [decision] = [
        event
        for event in history(release_id)
        if event.type is EventType.TASK_SCHEDULED and event.detail.get("task") == "StopDeployment"
    ]
    return decision


def deployment(sandbox: Sandbox, release: Release) -> dict[str, Any]:
    assert release.deployment_id is not None
    codedeploy = sandbox.session.client("codedeploy")
    info: dict[str, Any] = codedeploy.get_deployment(deploymentId=release.deployment_id)["deploymentInfo"]
    return info


def assert_stopped_by_watchdog(sandbox: Sandbox, release: Release, kind: str) -> str:
    """FAILED by the watchdog with ``kind``: the reason, the stop decision and the final event
    carry the class and the same next step, and the agent ended the deployment Stopped. Returns
    the next step."""
    assert release.state is ReleaseState.FAILED, release.reason
    decision = stop_decision(release.id)
    next_step = str(decision.detail["next_step"])
    assert (decision.detail["class"], decision.detail["deployment_id"]) == (kind, release.deployment_id)
    assert release.reason.startswith(
        f"watchdog stopped CodeDeploy deployment {release.deployment_id}: {kind}: {next_step}"
    ), release.reason
    final = history(release.id)[-1]
    assert (final.state, final.detail.get("watchdog"), final.detail.get("next_step")) == (
        ReleaseState.FAILED,
        kind,
        next_step,
    )
    # The traffic while it ran, read from the load balancer's metrics as for any ended release.
    assert "load-balancer errors in" in final.detail["receipt"]["summary"], final.detail
    assert moto_extensions.stop_requested(str(release.deployment_id))
    sandbox.wait_for(
        release.id,
        lambda _: deployment(sandbox, release)["status"] in moto_extensions.TERMINAL_STATUSES,
        "stopped by the agent",
    )
    info = deployment(sandbox, release)
    assert (info["status"], info["errorInformation"]["code"]) == ("Stopped", "MANUAL_STOP")
    return next_step


def assert_detected_in_time(what: str, since: datetime, decided: datetime, limit: timedelta) -> None:
    took = decided - since
    print(f"\n{what}: detected {took.total_seconds():.1f} s after its limit started counting (limit {limit})")
    assert limit < took <= limit + DETECTION_SLACK, f"{what}: detected after {took}, limit {limit}"


@pytest.mark.timeout(240)
def test_agent_not_polling_is_stopped_and_the_release_fails_with_the_next_step(
    sandbox: Sandbox, agent: Any
) -> None:
    agent.misbehave(Misbehaviour(not_polling=True))
    release = sandbox.wait_terminal(sandbox.upload("1.0.0"))

    next_step = assert_stopped_by_watchdog(sandbox, release, "agent_not_polling")
    assert next_step.startswith("agent on i-")
    assert next_step.endswith(": is codedeploy-agent running?")
    # No instance ever started a lifecycle event: the stop skipped every one of them.
    assert release.deployment_id is not None
    codedeploy = sandbox.session.client("codedeploy")
    target_ids = codedeploy.list_deployment_targets(deploymentId=release.deployment_id)["targetIds"]
    targets = codedeploy.batch_get_deployment_targets(
        deploymentId=release.deployment_id, targetIds=target_ids
    )["deploymentTargets"]
    assert len(targets) == sandbox.instance_count
    assert {target["instanceTarget"]["status"] for target in targets} == {"Skipped"}
    events = [event for target in targets for event in target["instanceTarget"]["lifecycleEvents"]]
    assert all("startTime" not in event for event in events)
    started = deployment(sandbox, release)["createTime"]
    assert_detected_in_time(
        "agent_not_polling", started, stop_decision(release.id).timestamp, LIMITS.agent_timeout
    )


@pytest.mark.timeout(240)
def test_a_hook_that_hangs_is_stopped_past_its_timeout_and_margin(sandbox: Sandbox, agent: Any) -> None:
    agent.misbehave(Misbehaviour(hang_in=HUNG_EVENT))
    release = sandbox.wait_terminal(sandbox.upload("2.0.0"))

    next_step = assert_stopped_by_watchdog(sandbox, release, "hook_overrun")
    decision = stop_decision(release.id)
    hung_instance = str(decision.detail["instance"])
    assert decision.detail["lifecycle_event"] == HUNG_EVENT
    assert next_step.startswith(f"{HUNG_EVENT} on {hung_instance} has run ")
    assert "past its 10 s timeout + 5 s" in next_step
    # The hung event started when the agent reached it; CodeDeploy reports it Failed once stopped.
    assert release.deployment_id is not None
    [target] = sandbox.session.client("codedeploy").batch_get_deployment_targets(
        deploymentId=release.deployment_id, targetIds=[hung_instance]
    )["deploymentTargets"]
    [hung] = [
        event
        for event in target["instanceTarget"]["lifecycleEvents"]
        if event["lifecycleEventName"] == HUNG_EVENT
    ]
    assert hung["status"] == "Failed"
    assert_detected_in_time(
        "hook_overrun", hung["startTime"], decision.timestamp, LIMITS.hook_timeout + LIMITS.margin
    )


@pytest.mark.timeout(240)
def test_a_failed_download_is_stopped_while_the_rest_of_its_batch_works(sandbox: Sandbox, agent: Any) -> None:
    # The first batch: its first instance is refused the bundle, the second stays in a hook.
    failing, working = agent.instances[0].instance_id, agent.instances[1].instance_id
    agent.misbehave(Misbehaviour(hang_in=HUNG_EVENT, fail_download_on=frozenset({failing})))
    release = sandbox.wait_terminal(sandbox.upload("3.0.0"))

    next_step = assert_stopped_by_watchdog(sandbox, release, "download_failed")
    decision = stop_decision(release.id)
    assert (decision.detail["instance"], decision.detail["lifecycle_event"]) == (failing, "DownloadBundle")
    assert next_step == (
        f"DownloadBundle failed on {failing}: {DOWNLOAD_DENIED_MESSAGE}: can the instance profile "
        "read the bundle (s3:GetObject, s3:GetObjectVersion) and reach S3?"
    )
    assert release.deployment_id is not None
    targets = {
        target["instanceTarget"]["targetId"]: target["instanceTarget"]
        for target in sandbox.session.client("codedeploy").batch_get_deployment_targets(
            deploymentId=release.deployment_id, targetIds=[failing, working]
        )["deploymentTargets"]
    }
    [download] = [
        event
        for event in targets[failing]["lifecycleEvents"]
        if event["lifecycleEventName"] == "DownloadBundle"
    ]
    # Stopped for the download, though the other instance of the batch was still in its hook.
    assert download["status"] == "Failed"
    [hung] = [
        event for event in targets[working]["lifecycleEvents"] if event["lifecycleEventName"] == HUNG_EVENT
    ]
    assert hung["status"] == "Failed"
    assert_detected_in_time("download_failed", download["endTime"], decision.timestamp, timedelta(0))

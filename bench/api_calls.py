"""AWS calls per release, by service and operation, counted with botocore ``before-call`` hooks on
the coordinator's own session (bench/moto_world.py), against moto in process.

Two releases, each driven through every handler as AWS would drive it: CodeDeploy's START and
its terminal event, the health checks the coordinator scheduled, and the table's stream.

- success: upload → SUCCEEDED, 2 instances behind the ALB, 2 health checks.
- rollback: a release whose ValidateService fails on one instance → FAILED, and the automatic
  rollback to the last verified release → SUCCEEDED (its 2 checks included).

The target group is behind an ALB: every release that ends reads its receipt (one CloudWatch
GetMetricData: outside the budgeted services, and counted in the "notified" flow's every-service
budget, which it still meets).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.cost import dynamodb_units
from bench.measurement import Outcome, main, verdict
from bench.moto_world import ApiCall, MotoWorld, Upload, pipeline_toml

PIPELINE = "shop"
INSTANCES = 2
HEALTHY_CHECKS = 2
# The release flow's services; the others are shown beside them.
BUDGETED = ("dynamodb", "codedeploy", "elbv2", "sqs")
SLACK_TOKEN_PARAMETER = "/relco/bench/slack-bot-token"


@dataclass(frozen=True)
class Budget:
    """Issue 13's budget for a flow: at most ``calls`` AWS calls to ``services`` (None: every
    service, S3 and SSM included), and the flow must end as ``ends``."""

    calls: int
    services: tuple[str, ...] | None
    ends: str

    def counts(self, service: str) -> bool:
        return self.services is None or service in self.services


BUDGETS = {
    "success": Budget(15, BUDGETED, "SUCCEEDED"),
    "notified": Budget(26, None, "SUCCEEDED"),
    "rollback": Budget(22, BUDGETED, "FAILED, rollback SUCCEEDED"),
}


class Flow:
    """Drives releases of the load-balanced pipeline and attributes every call to its handler."""

    def __init__(self, world: MotoWorld) -> None:
        self.world = world
        self.calls: list[tuple[str, ApiCall]] = []
        self.invocations: Counter[str] = Counter()
        self.counting = False
        self._streamed: set[str] = set()
        self._versions = 0

    def _run(self, handler: str, function: Callable[..., Any], *arguments: Any) -> Any:
        mark = self.world.recorder.mark()
        result = function(*arguments)
        if self.counting:
            self.invocations[handler] += 1
            self.calls.extend((handler, call) for call in self.world.recorder.since(mark))
        return result

    def upload(self) -> Upload:
        self._versions += 1
        [upload] = self.world.upload_many([f"{PIPELINE}/{PIPELINE}-{self._versions}.zip"])
        self._run("on_artifact_event", self.world.on_artifact_event, upload.eventbridge)
        return upload

    def codedeploy(self, deployment_id: str, state: str) -> None:
        self._run(
            "on_codedeploy_event", self.world.on_codedeploy_event, deployment_id, state, PIPELINE, PIPELINE
        )

    def reconcile(self) -> None:
        self._run("reconcile", self.world.reconcile)

    def deploy(self, release_id: str, *, fail_on: str | None = None, watched: bool = False) -> None:
        """CodeDeploy runs the release's deployment on both instances and reports it; ``watched``:
        a reconcile runs while it does (its watchdog reads the deployment's targets)."""
        from sandbox import moto_extensions

        deployment_id = self.world.deployment_of(release_id)
        instances = self.world.provisioned.load_balanced[PIPELINE].instance_ids
        self.codedeploy(deployment_id, "START")
        if watched:
            working = {instance: {"status": "InProgress"} for instance in instances}
            moto_extensions.set_instance_targets(deployment_id, working)
            self.reconcile()
        if fail_on is None:
            moto_extensions.set_instance_targets(
                deployment_id, {i: {"status": "Succeeded"} for i in instances}
            )
            moto_extensions.complete(deployment_id, "Succeeded")
            self.codedeploy(deployment_id, "SUCCESS")
            return
        moto_extensions.set_instance_targets(
            deployment_id,
            {
                fail_on: {
                    "status": "Failed",
                    "lifecycleEvents": [
                        {"lifecycleEventName": "ApplicationStart", "status": "Succeeded"},
                        {
                            "lifecycleEventName": "ValidateService",
                            "status": "Failed",
                            "diagnostics": {
                                "errorCode": "ScriptFailed",
                                "scriptName": "scripts/validate_service.sh",
                                "message": "Script at specified location: scripts/validate_service.sh failed",
                                "logTail": "health check failed: HTTP 500",
                            },
                        },
                    ],
                }
            },
        )
        moto_extensions.complete(
            deployment_id,
            "Failed",
            error_code="HEALTH_CONSTRAINTS",
            error_message="The overall deployment failed because too many individual instances failed",
        )
        self.codedeploy(deployment_id, "FAILURE")

    def verify(self, release_id: str) -> None:
        """Deliver the scheduled health checks, one SQS batch each, until the release is terminal."""
        for _ in range(HEALTHY_CHECKS + 2):
            release = self.world.store().get_release(release_id)
            if release is None or release.state.value != "VERIFYING":
                return
            bodies = self.world.verify_bodies()
            if not bodies:
                raise RuntimeError(f"no health check was scheduled for {release_id}")
            self._run("on_verify_message", self.world.on_verify_message, bodies)

    def stream(self) -> None:
        """Every new stream record, in the batches Lambda would read."""
        for batch in self.world.stream_records():
            fresh = [record for record in batch if record["eventID"] not in self._streamed]
            if not fresh:
                continue
            self._streamed.update(record["eventID"] for record in fresh)
            self._run("on_release_stream", self.world.on_release_stream, fresh)

    def notify(self) -> None:
        """Deliver the notify queue's messages, batch by batch, as Lambda would."""
        for event in self.world.notify_batches():
            answer = self._run("on_notify_message", self.world.on_notify_message, event)
            self.world.settle(event, answer or {})

    def state(self, release_id: str) -> str:
        release = self.world.store().get_release(release_id)
        return release.state.value if release else "missing"

    def summary(self) -> dict[str, Any]:
        rows = []
        for handler, call in self.calls:
            read_units, write_units = (
                dynamodb_units(call.operation, call.params, call.response)
                if call.service == "dynamodb"
                else (0.0, 0.0)
            )
            rows.append(
                {
                    "handler": handler,
                    "service": call.service,
                    "operation": call.operation,
                    "read_units": read_units,
                    "write_units": write_units,
                    "fifo": call.service == "sqs" and str(call.params.get("QueueUrl", "")).endswith(".fifo"),
                }
            )
        return {"calls": rows, "invocations": dict(self.invocations)}


def _world(slack_url: str | None = None) -> MotoWorld:
    verify = {"healthy_checks": HEALTHY_CHECKS, "interval_s": 1, "deadline_s": 60}
    if slack_url is None:
        return MotoWorld(pipeline_toml(PIPELINE, verify=verify), load_balanced={PIPELINE: INSTANCES})
    return MotoWorld(
        pipeline_toml(PIPELINE, verify=verify, slack_token_parameter=SLACK_TOKEN_PARAMETER),
        load_balanced={PIPELINE: INSTANCES},
        environment={"SLACK_API_URL": slack_url},
    )


def _behind_an_alb(world: MotoWorld) -> None:
    """The target group behind an ALB, as in production: each release that ends reads the load
    balancer's metrics for its receipt (one CloudWatch GetMetricData, verify.receipt's default)."""
    from sandbox.load_balancer import attach_load_balancer

    attach_load_balancer(world.session, world.provisioned.load_balanced[PIPELINE].target_group_arn, PIPELINE)


def success() -> tuple[dict[str, Any], str]:
    with _world() as world:
        _behind_an_alb(world)
        flow = Flow(world)
        flow.counting = True
        upload = flow.upload()
        flow.deploy(upload.release_id)
        flow.verify(upload.release_id)
        flow.stream()
        return flow.summary(), flow.state(upload.release_id)


def notified() -> tuple[dict[str, Any], str]:
    """The success flow with one Slack route: the stream publishes, the notify handler posts the
    card and edits it in place (the sandbox's Slack look-alike on 127.0.0.1)."""
    from sandbox.slack_api import SlackApi

    with SlackApi() as slack, _world(slack.api_url) as world:
        _behind_an_alb(world)
        world.session.client("ssm").put_parameter(
            Name=SLACK_TOKEN_PARAMETER, Value="xoxb-test", Type="SecureString", Overwrite=True
        )
        flow = Flow(world)
        flow.counting = True
        upload = flow.upload()
        flow.deploy(upload.release_id)
        flow.verify(upload.release_id)
        flow.stream()
        flow.notify()
        posted = Counter(call.method for call in slack.calls())
        slack_calls = ", ".join(f"{method} {count}" for method, count in sorted(posted.items()))
        return flow.summary(), f"{flow.state(upload.release_id)}; Slack: {slack_calls or 'no calls'}"


def watched() -> tuple[dict[str, Any], str]:
    """The success flow with reconcile (every 5 minutes, off the release path) running once while
    the deployment runs, its watchdog reading the targets, and once after the release ended, its
    fleet check reading what each instance received. Only reconcile's calls are counted."""
    with _world() as world:
        _behind_an_alb(world)
        flow = Flow(world)
        upload = flow.upload()
        flow.counting = True
        flow.deploy(upload.release_id, watched=True)
        flow.verify(upload.release_id)
        flow.stream()
        flow.reconcile()
        summary = flow.summary()
        summary["calls"] = [call for call in summary["calls"] if call["handler"] == "reconcile"]
        summary["invocations"] = {"reconcile": summary["invocations"]["reconcile"]}
        return summary, flow.state(upload.release_id)


def rollback() -> tuple[dict[str, Any], str]:
    from chalicelib.domain.release import rollback_release_id

    with _world() as world:
        _behind_an_alb(world)
        flow = Flow(world)
        good = flow.upload()  # the last verified release the rollback returns to: not counted
        flow.deploy(good.release_id)
        flow.verify(good.release_id)
        flow.stream()
        flow.counting = True
        broken = flow.upload()
        flow.deploy(broken.release_id, fail_on=world.provisioned.load_balanced[PIPELINE].instance_ids[0])
        back = rollback_release_id(broken.release_id)
        flow.deploy(back)
        flow.verify(back)
        flow.stream()
        return flow.summary(), f"{flow.state(broken.release_id)}, rollback {flow.state(back)}"


def _by_operation(
    calls: list[dict[str, Any]], services: tuple[str, ...] | None, exclude: bool = False
) -> str:
    counts = Counter(
        f"{call['service']}:{call['operation']}"
        for call in calls
        if services is None or ((call["service"] in services) != exclude)
    )
    return ", ".join(f"{name} {count}" for name, count in counts.most_common()) or "none"


def _by_handler(summary: dict[str, Any]) -> str:
    counts = Counter(call["handler"] for call in summary["calls"] if call["service"] in BUDGETED)
    return ", ".join(
        f"{handler} ×{invocations}: {counts.get(handler, 0)}"
        for handler, invocations in summary["invocations"].items()
    )


def run() -> Outcome:
    outcome = Outcome()
    scenarios: dict[str, Any] = {}
    for name, scenario, label in (
        ("success", success, "upload → SUCCEEDED (2 instances, 2 health checks)"),
        ("notified", notified, "the same with one Slack route, notifications delivered"),
        ("rollback", rollback, "failure → FAILED + auto-rollback → SUCCEEDED"),
    ):
        summary, end = scenario()
        scenarios[name] = summary
        calls = summary["calls"]
        budget = BUDGETS[name]
        others = [call for call in calls if call["service"] not in BUDGETED]
        counted = sum(1 for call in calls if budget.counts(call["service"]))
        services = "every service" if budget.services is None else "DynamoDB+CodeDeploy+ELBv2+SQS"
        outcome.add(
            f"AWS calls per release, {label}: {services} (ended {end})",
            f"{counted} ({_by_operation(calls, BUDGETED)}"
            + (f"; {_by_operation(calls, BUDGETED, exclude=True)}" if budget.services is None else "")
            + ")",
            f"≤ {budget.calls}",
            verdict(counted <= budget.calls and end.startswith(budget.ends)),
        )
        outcome.add(
            f"AWS calls per release, {label}: other services, and calls by handler",
            f"{len(others)} ({_by_operation(calls, BUDGETED, exclude=True)}); "
            f"by handler: {_by_handler(summary)}",
        )
    summary, end = watched()
    scenarios["watched"] = summary
    outcome.add(
        "AWS calls of reconcile around one release: its watchdog while DEPLOYING, its fleet check "
        f"after the release ended (every service; off the release path; ended {end})",
        f"{len(summary['calls'])} ({_by_operation(summary['calls'], None)}); by handler: "
        f"reconcile ×{summary['invocations']['reconcile']}",
    )
    outcome.data["scenarios"] = scenarios
    return outcome


if __name__ == "__main__":
    main(run)

"""The embedded default: the whole coordinator on one machine, offline.

moto (server mode, 127.0.0.1) is the AWS control plane; local instances, a local CodeDeploy
agent and a local load balancer are the data plane; an event pump invokes the Chalice handlers
in this process as Lambda would; the HTTP API is served locally. ``Sandbox.stop()`` ends every
thread and process it started.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from chalicelib.domain.notifications import SlackThread
from chalicelib.domain.pipelines import Pipeline
from chalicelib.domain.release import Release, Revision, upload_release_id
from chalicelib.domain.watchdog import WatchdogLimits
from infra import stack
from sandbox import moto_extensions
from sandbox.codedeploy_agent import CodeDeployAgent
from sandbox.event_pump import EventBridgeQueue, EventPump, Schedule, SqsSource, StreamSource
from sandbox.github_api import GithubApi
from sandbox.load_balancer import LoadBalancer, MetricsPublisher, TargetHealth, attach_load_balancer
from sandbox.local_instance import LocalInstance
from sandbox.provision import Provisioned, provision
from sandbox.slack_api import Click, SlackApi

logger = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 120.0
# How often the event pump runs reconcile (every 5 minutes on AWS), and so drives the watchdog and
# the fleet check.
RECONCILE_EVERY_S = 20.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = PROJECT_ROOT / "bundles" / "local-demo"
REGION = "us-east-1"
BUCKET = "relco-sandbox-artifacts"
PIPELINE = "demo"
TABLE = "relco-sandbox-releases"
SLACK_TOKEN_PARAMETER = "/relco/sandbox/slack-bot-token"
# The Slack app whose card buttons the look-alike presses: its signing secret lives in SSM, as in
# production, and the operator (a user, or a member of the on-call group) may act on the cards.
SLACK_SIGNING_SECRET_PARAMETER = "/relco/sandbox/slack-signing-secret"
SLACK_SIGNING_SECRET = "sandbox-slack-signing-secret"
SLACK_OPERATOR = "U0OPERATOR"
SLACK_ONCALL_GROUP = "S0ONCALL"
SLACK_ONCALL_MEMBER = "U0ONCALL"
# Issue 14's gates, on in the demo (``Sandbox(gates=True)``): the release lead approves each
# release from its Slack card, and an alarm in moto's CloudWatch gates verification.
SLACK_RELEASE_LEAD = "U0LEAD"
DEMO_ALARM = "demo-5xx"
GATES_TOML = f"""
[pipeline.approval]
slack_approvers = ["{SLACK_RELEASE_LEAD}"]
expires_after = "1h"
"""
EMAIL_SENDER = "relco@sandbox.example"
# Both fleets post GitHub deployments (environment = the pipeline) to the local GitHub, with a
# token kept in SSM as in production; each upload names its commit as CI would.
GITHUB_REPOSITORY = "acme/demo"
GITHUB_TOKEN = "ghp_sandbox"
GITHUB_TOKEN_PARAMETER = "/relco/sandbox/github-token"
# Both fleets verify alike and post to the same Slack channel (each release its own thread).
VERIFY_TOML = """
[pipeline.verify]
healthy_checks = 2
interval_s = 1
deadline_s = 60
"""
SLACK_ROUTE_TOML = f"""
[pipeline.slack]
operators = ["{SLACK_OPERATOR}", "{SLACK_ONCALL_GROUP}"]

[[pipeline.notify]]
kind = "slack"
channel = "#deploys"
token_parameter = "{SLACK_TOKEN_PARAMETER}"
on = [
  "awaiting_approval", "started", "queued", "failed", "verify_failed", "rolled_back", "stopped", "succeeded",
]
mention_on_failure = ["{SLACK_ONCALL_GROUP}"]
"""
PIPELINES_TOML = (
    f"""
[slack]
signing_secret_parameter = "{SLACK_SIGNING_SECRET_PARAMETER}"
token_parameter = "{SLACK_TOKEN_PARAMETER}"

[[pipeline]]
name = "{PIPELINE}"
bucket = "{BUCKET}"
prefix = "releases/"
application = "demo-app"
deployment_group = "demo-fleet"
deployment_config = "CodeDeployDefault.HalfAtATime"
"""
    + VERIFY_TOML
    + SLACK_ROUTE_TOML
    + f"""
[[pipeline.notify]]
kind = "email"
sender = "{EMAIL_SENDER}"
to = ["oncall@sandbox.example"]
on = ["failed", "verify_failed", "rolled_back", "succeeded"]
"""
)
# The production fleet (``Sandbox(production=True)``): it deploys only what staging verified,
# promoted as soon as it succeeds and without approval. No upload uses its prefix.
PRODUCTION_PIPELINE = "demo-prod"
PRODUCTION_TOML = (
    f"""
[[pipeline]]
name = "{PRODUCTION_PIPELINE}"
bucket = "{BUCKET}"
prefix = "promoted/"
application = "demo-app"
deployment_group = "demo-prod-fleet"
deployment_config = "CodeDeployDefault.HalfAtATime"
promote_from = "{PIPELINE}"
promote = "auto"
soak = "0s"
"""
    + VERIFY_TOML
    + SLACK_ROUTE_TOML
)
STAGING = "staging"
PRODUCTION = "production"


def _seconds(span: timedelta) -> str:
    return f"{int(span.total_seconds())}s"


def watchdog_toml(limits: WatchdogLimits) -> str:
    """``[pipeline.watchdog]`` for the demo pipeline: the e2e suite's short limits, so a stuck
    deployment is found within a reconcile period or two (RECONCILE_EVERY_S) instead of minutes."""
    return f"""
[pipeline.watchdog]
enabled = {str(limits.enabled).lower()}
agent_timeout = "{_seconds(limits.agent_timeout)}"
hook_timeout = "{_seconds(limits.hook_timeout)}"
margin = "{_seconds(limits.margin)}"
"""


# ``Sandbox(heal_fleet=True)``: a mixed fleet found after a release gets a heal release.
HEAL_FLEET_TOML = """
[pipeline.fleet]
heal = true
"""


def github_route_toml(api_url: str) -> str:
    """A ``github`` notify route to the local GitHub at ``api_url``."""
    return f"""
[[pipeline.notify]]
kind = "github"
repository = "{GITHUB_REPOSITORY}"
token_parameter = "{GITHUB_TOKEN_PARAMETER}"
api_url = "{api_url}"
"""


def pipelines_toml(
    *,
    gates: bool,
    production: bool = False,
    watchdog: WatchdogLimits | None = None,
    heal_fleet: bool = False,
    github_api_url: str | None = None,
) -> str:
    """The sandbox's pipelines file; with the gates, the demo pipeline requires approval from the
    release lead and its verification is gated by DEMO_ALARM (an alarm on staging's traffic, so
    production's verification does not read it); with production, ``demo-prod`` promotes from it.
    ``watchdog`` and ``heal_fleet`` set the demo pipeline's ``[pipeline.watchdog]`` and
    ``[pipeline.fleet]`` (the defaults without them); ``github_api_url``: every pipeline posts
    GitHub deployments there."""
    github = github_route_toml(github_api_url) if github_api_url else ""
    staging = PIPELINES_TOML + github
    if gates:
        gated = staging.replace("deadline_s = 60\n", f'deadline_s = 60\nalarms = ["{DEMO_ALARM}"]\n', 1)
        staging = gated.replace("\n[pipeline.slack]\n", GATES_TOML + "\n[pipeline.slack]\n", 1)
    # Tables of the demo pipeline: TOML puts them in the last [[pipeline]] so far.
    if watchdog is not None:
        staging += watchdog_toml(watchdog)
    if heal_fleet:
        staging += HEAL_FLEET_TOML
    return staging + PRODUCTION_TOML + github if production else staging


@dataclass(frozen=True)
class Endpoints:
    aws_endpoint_url: str
    api_url: str
    lb_url: str
    slack_url: str
    github_url: str
    bucket: str
    pipelines: tuple[str, ...]
    # The coordinator's structured log (its CloudWatch Logs in Lambda).
    log_file: str
    # The production fleet's load balancer (``lb_url`` is staging's); None with one fleet.
    production_lb_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ready line of ``relco sandbox up --json`` (DESIGN.md section 5)."""
        return {
            "aws_endpoint_url": self.aws_endpoint_url,
            "api_url": self.api_url,
            "lb_url": self.lb_url,
            "slack_url": self.slack_url,
            "github_url": self.github_url,
            "bucket": self.bucket,
            "pipelines": list(self.pipelines),
            "log_file": self.log_file,
            "production_lb_url": self.production_lb_url,
        }


@dataclass(frozen=True)
class Fleet:
    """One load-balanced deployment group: its instances behind their own load balancer, and the
    CodeDeploy agent that runs that group's deployments (and no other's) on them."""

    name: str
    pipeline: str
    deployment_group: str
    load_balancer: LoadBalancer
    instances: tuple[LocalInstance, ...]
    agent: CodeDeployAgent
    # Puts what the load balancer serves into CloudWatch, as the ALB it stands for would.
    metrics: MetricsPublisher


@dataclass
class _RestoreStream:
    """Gives a log handler its previous stream back when the sandbox stops."""

    handler: logging.StreamHandler[Any]
    previous: Any
    log_file: io.TextIOBase

    def stop(self) -> None:
        self.handler.setStream(self.previous)
        self.log_file.close()


def demo_commit(version: str) -> str:
    """The commit an upload of ``version`` names: a stable 40-hex id, as git's would be."""
    return hashlib.sha1(f"demo {version}".encode(), usedforsecurity=False).hexdigest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def demo_bundle(version: str) -> bytes:
    """The local-demo bundle as a zip, reporting ``version`` (``-broken`` fails ValidateService)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(DEMO_BUNDLE.rglob("*")):
            relative = path.relative_to(DEMO_BUNDLE)
            if path.is_dir() or relative.parts[0].startswith(".") or relative.name == "VERSION":
                continue
            info = zipfile.ZipInfo(str(relative))
            info.external_attr = (path.stat().st_mode & 0o777) << 16  # keep scripts executable
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        archive.writestr("VERSION", version + "\n")
    return buffer.getvalue()


class Sandbox:
    def __init__(
        self,
        workdir: Path,
        *,
        instances: int = 2,
        health_timeout_s: int = 8,
        gates: bool = False,
        production: bool = False,
        watchdog: WatchdogLimits | None = None,
        heal_fleet: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.instance_count = instances
        # The demo's gates: approval from the Slack card, and DEMO_ALARM gating verification.
        self.gates = gates
        # A second fleet, production (PRODUCTION_PIPELINE), promoted from the staging one.
        self.production = production
        # The demo pipeline's [pipeline.watchdog] limits (None: the defaults) and [pipeline.fleet] heal.
        self.watchdog = watchdog
        self.heal_fleet = heal_fleet
        self.health_timeout_s = health_timeout_s
        self._moto: ThreadedMotoServer | None = None
        self._saved_environment: dict[str, str | None] = {}
        self._parts: list[Any] = []
        self._api_server: Any = None
        self._api_thread: threading.Thread | None = None
        self.session: Any = None
        self.provisioned: Provisioned | None = None
        # STAGING, and PRODUCTION when asked for, by name.
        self.fleets: dict[str, Fleet] = {}
        self.slack: SlackApi | None = None
        self.github: GithubApi | None = None
        self.endpoints: Endpoints | None = None

    # lifecycle

    def start(self) -> Sandbox:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop in reverse order of start; every part stops even if another fails to."""
        for part in reversed(self._parts):
            try:
                part.stop()
            except Exception:
                logger.exception("stopping %s failed", type(part).__name__)
        self._parts.clear()
        self.fleets.clear()
        if self._api_server is not None:
            self._api_server.shutdown()
            self._api_server.server_close()
            self._api_server = None
        if self._api_thread is not None:
            self._api_thread.join(timeout=10)
            self._api_thread = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
            from moto.moto_api._internal.models import moto_api_backend

            moto_api_backend.reset()  # the backends live in this process: leave them clean
        self._restore_environment()

    def _start(self) -> None:
        from chalicelib import bootstrap

        self.workdir.mkdir(parents=True, exist_ok=True)
        log_file = self.workdir / "coordinator.log"
        self._send_logs_to(log_file)
        moto_extensions.install()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        aws_endpoint_url = f"http://{host}:{port}"
        self.github = GithubApi(valid_tokens=[GITHUB_TOKEN], repositories=[GITHUB_REPOSITORY]).start()
        self._parts.append(self.github)
        pipelines_file = self.workdir / "pipelines.toml"
        pipelines_file.write_text(
            pipelines_toml(
                gates=self.gates,
                production=self.production,
                watchdog=self.watchdog,
                heal_fleet=self.heal_fleet,
                github_api_url=self.github.api_url,
            ),
            encoding="utf-8",
        )
        self._set_environment(
            {
                "AWS_ACCESS_KEY_ID": "sandbox",
                "AWS_SECRET_ACCESS_KEY": "sandbox",
                "AWS_SESSION_TOKEN": "sandbox",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ENDPOINT_URL": aws_endpoint_url,
                "RELEASES_TABLE": TABLE,
                "PIPELINES_FILE": str(pipelines_file),
                "POWERTOOLS_SERVICE_NAME": "release-coordinator",
                "SLACK_API_URL": "",
            }
        )
        self.slack = SlackApi(
            signing_secret=SLACK_SIGNING_SECRET, usergroups={SLACK_ONCALL_GROUP: [SLACK_ONCALL_MEMBER]}
        ).start()
        self._parts.append(self.slack)
        os.environ["SLACK_API_URL"] = self.slack.api_url
        self.session = boto3.session.Session(region_name=REGION)
        pipelines = bootstrap.pipelines.__wrapped__()  # read the file just written, uncached
        fleet_pipelines = {STAGING: PIPELINE}
        if self.production:
            fleet_pipelines[PRODUCTION] = PRODUCTION_PIPELINE
        self.provisioned = provision(
            self.session,
            pipelines,
            table=TABLE,
            load_balanced=dict.fromkeys(fleet_pipelines.values(), self.instance_count),
            health_check_interval_s=5,
        )
        os.environ["VERIFY_QUEUE_URL"] = self.provisioned.verify_queue_url
        os.environ["NOTIFY_QUEUE_URL"] = self.provisioned.notify_queue_url
        os.environ["NOTIFY_DLQ_URL"] = self.provisioned.notify_dlq_url
        self._set_environment(
            {"SLACK_ACTIONS_QUEUE_URL": self.provisioned.queue_urls[stack.SLACK_ACTIONS_QUEUE]}
        )
        # The bot token and the signing secret live in SSM, as in production; the local Slack
        # accepts this token and signs its clicks with this secret.
        ssm = self.session.client("ssm")
        ssm.put_parameter(Name=SLACK_TOKEN_PARAMETER, Value="xoxb-test", Type="SecureString", Overwrite=True)
        ssm.put_parameter(
            Name=GITHUB_TOKEN_PARAMETER, Value=GITHUB_TOKEN, Type="SecureString", Overwrite=True
        )
        ssm.put_parameter(
            Name=SLACK_SIGNING_SECRET_PARAMETER,
            Value=SLACK_SIGNING_SECRET,
            Type="SecureString",
            Overwrite=True,
        )
        if self.gates:
            # An alarm on the load balancer's 5xx count, as a team would gate on; the demo moves
            # its state with SetAlarmState.
            self.session.client("cloudwatch").put_metric_alarm(
                AlarmName=DEMO_ALARM,
                Namespace="AWS/ApplicationELB",
                MetricName="HTTPCode_Target_5XX_Count",
                Statistic="Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=5,
                ComparisonOperator="GreaterThanOrEqualToThreshold",
            )
        bootstrap.reset()
        codedeploy_queue = self._codedeploy_event_queue()
        for fleet, pipeline_name in fleet_pipelines.items():
            pipeline = pipelines.named(pipeline_name)
            assert pipeline is not None  # both are in the file written above
            self.fleets[fleet] = self._start_fleet(fleet, pipeline)

        import app as chalice_app

        sqs = self.session.client("sqs")

        def arn(queue_url: str) -> str:
            attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
            return str(attributes["Attributes"]["QueueArn"])

        stream_arn = self.session.client("dynamodb").describe_table(TableName=TABLE)["Table"][
            "LatestStreamArn"
        ]
        pump = EventPump(
            self.session,
            eventbridge=[
                EventBridgeQueue(self.provisioned.eventbridge_queue_url, chalice_app.on_artifact_event),
                EventBridgeQueue(codedeploy_queue, chalice_app.on_codedeploy_event),
            ],
            sqs=[
                SqsSource(
                    self.provisioned.verify_queue_url,
                    arn(self.provisioned.verify_queue_url),
                    chalice_app.on_verify_message,
                ),
                SqsSource(
                    self.provisioned.notify_queue_url,
                    arn(self.provisioned.notify_queue_url),
                    chalice_app.on_notify_message,
                ),
                SqsSource(
                    self.provisioned.queue_urls[stack.SLACK_ACTIONS_QUEUE],
                    arn(self.provisioned.queue_urls[stack.SLACK_ACTIONS_QUEUE]),
                    chalice_app.on_slack_action,
                ),
            ],
            stream=StreamSource(
                stream_arn,
                chalice_app.on_release_stream,
                # The template's StreamFailureQueue: where a batch that kept failing is described.
                on_failure_queue_url=sqs.create_queue(QueueName="release-coordinator-stream-failures")[
                    "QueueUrl"
                ],
            ),
            schedule=Schedule(chalice_app.reconcile, every_s=RECONCILE_EVERY_S),
        ).start()
        self._parts.append(pump)
        api_url = self._serve_api(chalice_app.app, 0)
        # The Slack app's Interactivity Request URL: where the look-alike sends its clicks.
        self.slack.interactions_url = f"{api_url}/slack/interactions"
        self.endpoints = Endpoints(
            aws_endpoint_url=aws_endpoint_url,
            api_url=api_url,
            lb_url=self.fleets[STAGING].load_balancer.url,
            slack_url=self.slack.api_url,
            github_url=self.github.api_url,
            bucket=BUCKET,
            pipelines=tuple(p.name for p in pipelines.pipelines),
            log_file=str(log_file),
            production_lb_url=self.fleets[PRODUCTION].load_balancer.url if self.production else None,
        )

    def _start_fleet(self, name: str, pipeline: Pipeline) -> Fleet:
        """The pipeline's instances (provisioned in moto) as local processes behind their own load
        balancer, whose target health moto reports, and an agent for that group alone."""
        assert self.provisioned is not None
        balanced = self.provisioned.load_balanced[pipeline.name]
        # Until the first deploy registers them, the instances serve nothing.
        for instance_id in balanced.instance_ids:
            moto_extensions.set_target_health(
                balanced.target_group_arn,
                instance_id,
                "unused",
                "Target.NotRegistered",
                "Target is not registered",
            )

        def publish_health(target_id: str, health: TargetHealth) -> None:
            moto_extensions.set_target_health(
                balanced.target_group_arn,
                target_id,
                str(health.state),
                str(health.reason or ""),
                health.description or "",
            )

        load_balancer = LoadBalancer(
            "/health",
            interval_s=0.5,
            timeout_s=0.5,
            healthy_threshold=2,
            unhealthy_threshold=2,
            deregistration_delay_s=1.0,
            on_health_change=publish_health,
        ).start()
        self._parts.append(load_balancer)
        # In the emulated ELBv2 the target group is behind an ALB of the fleet's name: the
        # receipt reads the metrics published under its dimensions.
        balancer_arn = attach_load_balancer(self.session, balanced.target_group_arn, name)
        metrics = MetricsPublisher(
            load_balancer, self.session.client("cloudwatch"), balancer_arn, balanced.target_group_arn
        ).start()
        self._parts.append(metrics)
        instances = tuple(
            LocalInstance(instance_id, free_port(), self.workdir / "instances" / instance_id)
            for instance_id in balanced.instance_ids
        )
        agent = CodeDeployAgent(
            self.session,
            instances,
            load_balancer,
            groups={(pipeline.application, pipeline.deployment_group)},
            extra_env={"HEALTH_TIMEOUT_SECONDS": str(self.health_timeout_s), "STOP_TIMEOUT_SECONDS": "5"},
        ).start()
        self._parts.append(agent)
        return Fleet(name, pipeline.name, pipeline.deployment_group, load_balancer, instances, agent, metrics)

    def scale_out(self, fleet_name: str = STAGING) -> LocalInstance:
        """One more instance in the fleet, as Auto Scaling launches one: EC2 runs it with the
        deployment group's tag, the group's target group registers it, and its app is not up (no
        deployment has reached it: it fails its health checks). A deployment already running
        leaves it out, as CodeDeploy fixes a deployment's instances when it starts; the next one
        deploys to it too."""
        assert self.provisioned is not None
        fleet = self.fleets[fleet_name]
        ec2 = self.session.client("ec2")
        [launched] = ec2.run_instances(
            ImageId="ami-12345678",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "pipeline", "Value": fleet.pipeline}]}
            ],
        )["Instances"]
        instance_id = launched["InstanceId"]
        instance = LocalInstance(instance_id, free_port(), self.workdir / "instances" / instance_id)
        target_group_arn = self.provisioned.load_balanced[fleet.pipeline].target_group_arn
        self.session.client("elbv2").register_targets(
            TargetGroupArn=target_group_arn, Targets=[{"Id": instance_id}]
        )
        # Health checked like every target; its health reaches moto's DescribeTargetHealth.
        fleet.load_balancer.register(instance_id, instance.port)
        fleet.agent.join(instance)
        self.fleets[fleet_name] = replace(fleet, instances=(*fleet.instances, instance))
        return instance

    def _codedeploy_event_queue(self) -> str:
        """CodeDeploy's state changes reach the coordinator through an EventBridge rule, as on AWS."""
        sqs = self.session.client("sqs")
        events = self.session.client("events")
        queue_url: str = sqs.create_queue(QueueName="codedeploy-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(
            Name="codedeploy-state-change",
            EventPattern=json.dumps(
                {
                    "source": ["aws.codedeploy"],
                    "detail-type": ["CodeDeploy Deployment State-change Notification"],
                }
            ),
        )
        events.put_targets(Rule="codedeploy-state-change", Targets=[{"Id": "queue", "Arn": arn}])
        return queue_url

    def _serve_api(self, chalice_app: Any, port: int) -> str:
        """The HTTP API on 127.0.0.1, as ``chalice local`` serves it (IAM auth is not enforced
        locally: see ../shared/reference/aws-facts.md)."""
        from chalice.config import Config
        from chalice.local import LocalDevServer

        config = Config.create(chalice_stage="dev", app_name="release-coordinator", chalice_app=chalice_app)
        server = LocalDevServer(chalice_app, config, "127.0.0.1", port)
        self._api_server = server.server
        self._api_thread = threading.Thread(target=server.server.serve_forever, name="api", daemon=True)
        self._api_thread.start()
        return f"http://127.0.0.1:{server.server.server_address[1]}"

    def _send_logs_to(self, path: Path) -> None:
        """The handlers' structured logs (Lambda's CloudWatch Logs) go to a file, so the sandbox's
        own output stays readable; the emulator's request log is dropped."""
        from chalicelib.log import logger as coordinator_logger

        handler = coordinator_logger.registered_handler
        if isinstance(handler, logging.StreamHandler):
            log_file = path.open("a", encoding="utf-8")
            previous = handler.setStream(log_file)
            self._parts.insert(0, _RestoreStream(handler, previous, log_file))
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    # environment

    def _set_environment(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_environment.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _restore_environment(self) -> None:
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment.clear()

    # what the demo does

    def upload(self, version: str, *, author: str = "sandbox", message: str = "") -> str:
        """Upload the demo bundle reporting ``version``, as CI would; returns the release id the
        coordinator derives from exactly that object version."""
        key = f"releases/demo-{version}.zip"
        response = self.session.client("s3").put_object(
            Bucket=BUCKET,
            Key=key,
            Body=demo_bundle(version),
            Metadata={
                "version-label": version,
                "author": author,
                "message": message or f"release {version}",
                "commit": demo_commit(version),
            },
        )
        revision = Revision(BUCKET, key, response["VersionId"], response["ETag"].strip('"'))
        return upload_release_id(revision)

    def wait_terminal(self, release_id: str, timeout_s: float = RELEASE_TIMEOUT_S) -> Release:
        """The release once it reached a terminal state (the pump and agent drive it)."""
        from chalicelib import bootstrap

        store = bootstrap.wiring().store
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            release = store.get_release(release_id)
            if release is not None and release.state.is_terminal:
                return release
            time.sleep(0.25)
        raise TimeoutError(f"release {release_id} did not finish within {timeout_s:.0f}s")

    def deploy(self, version: str) -> Release:
        """Upload ``version`` and wait for its release to end; with the gates on, the release
        lead approves it from its Slack card first."""
        release_id = self.upload(version)
        if self.gates:
            self.approve_from_slack(release_id)
        return self.wait_terminal(release_id)

    def approve_from_slack(self, release_id: str) -> Click:
        """The release lead presses Approve on the release's card."""
        return self.click(release_id, "approve", SLACK_RELEASE_LEAD, "release-lead")

    def wait_for(self, release_id: str, ready: Callable[[Release], bool], what: str) -> Release:
        from chalicelib import bootstrap

        store = bootstrap.wiring().store
        deadline = time.monotonic() + RELEASE_TIMEOUT_S
        while time.monotonic() < deadline:
            release = store.get_release(release_id)
            if release is not None and ready(release):
                return release
            time.sleep(0.05)
        raise TimeoutError(f"release {release_id} was not {what} within {RELEASE_TIMEOUT_S:.0f}s")

    def set_alarm(self, state: str, reason: str) -> None:
        """Move DEMO_ALARM in moto's CloudWatch, as its metric would."""
        self.session.client("cloudwatch").set_alarm_state(
            AlarmName=DEMO_ALARM, StateValue=state, StateReason=reason
        )

    def click(
        self,
        release_id: str,
        action_id: str,
        user_id: str = SLACK_OPERATOR,
        user_name: str = "operator",
        timeout_s: float = RELEASE_TIMEOUT_S,
    ) -> Click:
        """Press a button of the release's Slack card as ``user_id`` would in Slack, once the card
        shows it (the notifier posts and edits the card as the release moves)."""
        from chalicelib import bootstrap

        assert self.slack is not None
        store = bootstrap.wiring().store
        deadline = time.monotonic() + timeout_s
        while True:
            release = store.get_release(release_id)
            stored = next(iter(release.notification_threads.values()), None) if release else None
            if stored is not None:
                thread = SlackThread.from_stored(stored)
                try:
                    return self.slack.click(thread.channel, thread.ts, action_id, user_id, user_name)
                except LookupError:
                    pass  # the card does not show the button (yet)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the card of release {release_id} showed no {action_id!r} button")
            time.sleep(0.25)

    def slack_thread(self, release: Release) -> str | None:
        """The release's Slack thread as plain text, from the local Slack."""
        stored = next(iter(release.notification_threads.values()), None)
        if stored is None or self.slack is None:
            return None
        thread = SlackThread.from_stored(stored)
        return self.slack.render_thread_text(thread.channel, thread.ts)

    def email_subjects(self) -> list[str]:
        """Subjects of the mail SES accepted (moto keeps it)."""
        from moto.backends import get_backend
        from moto.core.models import DEFAULT_ACCOUNT_ID

        return [
            str(message.subject) for message in get_backend("ses")[DEFAULT_ACCOUNT_ID][REGION].sent_messages
        ]

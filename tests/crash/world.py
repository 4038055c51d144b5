"""The account the sweep runs in: moto in process, provisioned once, and put back to its
provisioned state between runs by resetting only the backends a run changes.

What AWS does after a failure is read from the stage's rendered template (``infra.render``), not
from constants of the sweep: the queues' visibility timeouts and receive limits, the stream's
retry limit, which functions are invoked asynchronously, and (from the app) reconcile's rate.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
from chalice.app import Rate, ScheduledEventConfig
from moto import mock_aws
from moto.backends import get_backend
from moto.core.models import DEFAULT_ACCOUNT_ID

import app as chalice_app
from chalicelib import bootstrap
from chalicelib.adapters.dynamodb_store import table_definition
from chalicelib.domain.pipelines import PipelinesConfig, load_pipelines
from infra import render, stack
from infra.functions import app_functions
from sandbox import moto_extensions
from sandbox.github_api import GithubApi
from sandbox.provision import LoadBalancedGroup, provision
from sandbox.slack_api import SlackApi
from tests.crash.clock import EPOCH

REGION = "us-east-1"
BUCKET = "acme-artifacts"
TABLE = "releases-crash"
STAGE = "crash"
SENDER = "relco@crash.example"
SLACK_CHANNEL = "#deploys"
SLACK_TOKEN_PARAMETER = "/relco/slack/bot-token"
SLACK_BOT_TOKEN = "xoxb-test"  # one the look-alike accepts (sandbox.slack_api.DEFAULT_TOKENS)
# The [slack] app whose card buttons the scenarios press (with it, the notifier's cards carry
# buttons): its signing secret signs each click, and its bot token (the notifier's) reads the
# approvers' user group.
SLACK_SIGNING_SECRET_PARAMETER = "/relco/slack/signing-secret"
SLACK_SIGNING_SECRET = "crash-sweep-signing-secret"
# Where Slack would send the clicks; the sweep hands them to the API function itself.
SLACK_INTERACTIONS_URL = "https://relco.crash.example/slack/interactions"
SLACK_APPROVERS_GROUP = "S0CRASHLEADS"
# (user id, handle) of the Slack user who approves from the card: a member of the group above.
SLACK_APPROVER = ("U0CRASHBOB", "bob")
# (user id, handle) of an operator of the quiet pipeline's cards ([pipeline.slack] operators).
SLACK_OPERATOR = ("U0CRASHCAROL", "carol")
# shop-prod's GitHub deployments: the look-alike's repository and a token it accepts; the
# route's api_url is the look-alike's, known once it listens (World puts it in the file).
GITHUB_REPOSITORY = "acme/shop"
GITHUB_TOKEN_PARAMETER = "/relco/github/token"
GITHUB_TOKEN = "ghp_sandbox"  # sandbox.github_api.DEFAULT_TOKENS
_GITHUB_API_URL = "@GITHUB_API_URL@"
# shop-prod notifies a Slack thread, by email and with GitHub deployments; cart-prod has no
# routes, so its scenarios spend their runs on the slot, CodeDeploy, the API and its cards' buttons.
NOTIFIED = "shop-prod"
QUIET = "cart-prod"
# The release gates (issue 14), each on a quiet pipeline of its own so the other scenarios run
# as before: approvals (load balanced: an approved release is verified), a freeze window (not
# load balanced: CodeDeploy's SUCCESS ends a release), an alarm gate at start.
GATED = "gated-prod"
FROZEN = "frozen-prod"
WATCHED = "watched-prod"
# Promotion (issue 15), a chain of two quiet pipelines the other scenarios never touch (not load
# balanced: CodeDeploy's SUCCESS verifies a release): uploads go to PROMOTING; PROMOTED gets each
# release that stayed its last good for the soak. (A second downstream pipeline with promote =
# "approval", for supersede, was tried: its approvals' 15-minute expiry kept each run of the
# promotion scenarios going to 1200 s instead of 300 s, and their uncrashed runs grew from 11 and
# 25 invocations to 22 and 33; tests/integration/test_promotion.py covers supersede.)
PROMOTING = "promo-stg"
PROMOTED = "promo-prod"
PROMOTION_SOAK_S = 60
INSTANCES = 2
# Who operates the API in the scenarios: a session of the role the approval pipeline names, as API
# Gateway's IAM authorizer hands it to the function (requestContext.identity.userArn).
OPERATOR_ARN = "arn:aws:sts::123456789012:assumed-role/Releasers/alice"
APPROVERS_ROLE = "arn:aws:iam::123456789012:role/Releasers"
# Longer than the Slack actions queue's visibility timeout (576 s in today's template): a click
# whose worker died is carried out on SQS's redelivery while the release still awaits approval
# (checked in World). A shorter expiry loses that approval (approval_lost).
APPROVAL_EXPIRES_S = 900
# frozen-prod's one-off freeze, in seconds after the run's start (clock.EPOCH, 10:00 UTC).
FREEZE_STARTS_S = 120
FREEZE_ENDS_S = 720
WATCHED_ALARM = "watched-prod-5xx"
# Every event a route can subscribe to goes to Slack; the email route takes the outcomes.
PIPELINES_TOML = f"""
[slack]
signing_secret_parameter = "{SLACK_SIGNING_SECRET_PARAMETER}"
token_parameter = "{SLACK_TOKEN_PARAMETER}"

[[pipeline]]
name = "{NOTIFIED}"
bucket = "{BUCKET}"
prefix = "shop/prod/"
application = "shop"
deployment_group = "shop-prod"

[[pipeline.notify]]
kind = "slack"
channel = "{SLACK_CHANNEL}"
token_parameter = "{SLACK_TOKEN_PARAMETER}"
on = ["started", "queued", "superseded", "succeeded", "failed", "verify_failed", "rolled_back", "stopped"]

[[pipeline.notify]]
kind = "email"
sender = "{SENDER}"
to = ["oncall@crash.example"]
on = ["succeeded", "failed", "verify_failed", "rolled_back", "stopped"]

[[pipeline.notify]]
kind = "github"
repository = "{GITHUB_REPOSITORY}"
token_parameter = "{GITHUB_TOKEN_PARAMETER}"
api_url = "{_GITHUB_API_URL}"

[[pipeline]]
name = "{QUIET}"
bucket = "{BUCKET}"
prefix = "cart/prod/"
application = "cart"
deployment_group = "cart-prod"

[pipeline.slack]
operators = ["{SLACK_OPERATOR[0]}"]

[[pipeline]]
name = "{GATED}"
bucket = "{BUCKET}"
prefix = "gated/prod/"
application = "gated"
deployment_group = "gated-prod"

[pipeline.approval]
required = true
approvers = ["{APPROVERS_ROLE}"]
slack_approvers = ["{SLACK_APPROVERS_GROUP}"]
expires_after = "{APPROVAL_EXPIRES_S // 60}m"

[[pipeline]]
name = "{FROZEN}"
bucket = "{BUCKET}"
prefix = "frozen/prod/"
application = "frozen"
deployment_group = "frozen-prod"

[[pipeline.freeze]]
reason = "crash sweep freeze"
start = {(EPOCH + timedelta(seconds=FREEZE_STARTS_S)).replace(tzinfo=None).isoformat()}
end = {(EPOCH + timedelta(seconds=FREEZE_ENDS_S)).replace(tzinfo=None).isoformat()}

[[pipeline]]
name = "{WATCHED}"
bucket = "{BUCKET}"
prefix = "watched/prod/"
application = "watched"
deployment_group = "watched-prod"

[pipeline.verify]
alarms = ["{WATCHED_ALARM}"]
alarm_at_start = "wait"

[[pipeline]]
name = "{PROMOTING}"
bucket = "{BUCKET}"
prefix = "promo/stg/"
application = "promo"
deployment_group = "promo-stg"

[[pipeline]]
name = "{PROMOTED}"
bucket = "{BUCKET}"
prefix = "promo/prod/"
application = "promo"
deployment_group = "promo-prod"
promote_from = "{PROMOTING}"
soak = "{PROMOTION_SOAK_S}s"
"""
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    # Fail fast on anything the emulator does not answer.
    "AWS_MAX_ATTEMPTS": "1",
    "RELEASES_TABLE": TABLE,
}
# The backends a run writes to; EC2, ELBv2, SSM and EventBridge keep what was provisioned.
_RUN_BACKENDS = ("dynamodb", "sqs", "s3", "codedeploy", "ses", "cloudwatch")
# AWS's default for a function without an EventInvokeConfig: "If the function returns an error,
# by default Lambda attempts to run it two more times, with a one-minute wait between the first
# two attempts, and two minutes between the second and third attempts."
# (docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html)
ASYNC_RETRY_DELAYS_S = (60, 120)


@dataclass(frozen=True)
class QueueSettings:
    name: str
    fifo: bool
    visibility_timeout_s: int
    max_receives: int
    dead_letter_name: str


@dataclass(frozen=True)
class AwsBehaviour:
    """What the stage's template (and app) say AWS does after a function fails."""

    verify_queue: QueueSettings
    notify_queue: QueueSettings
    slack_actions_queue: QueueSettings
    stream_max_retries: int
    asynchronous: frozenset[str]
    async_retry_delays_s: tuple[int, ...]
    reconcile_every_s: int


def aws_behaviour(pipelines: PipelinesConfig) -> AwsBehaviour:
    functions = app_functions(chalice_app.app)
    resources = render.render(STAGE, pipelines, functions)["Resources"]

    def queue(logical_id: str) -> QueueSettings:
        properties = resources[logical_id]["Properties"]
        dead_letters = properties["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        return QueueSettings(
            name=properties["QueueName"],
            fifo=bool(properties.get("FifoQueue")),
            visibility_timeout_s=int(properties["VisibilityTimeout"]),
            max_receives=int(properties["RedrivePolicy"]["maxReceiveCount"]),
            dead_letter_name=resources[dead_letters]["Properties"]["QueueName"],
        )

    stream = next(function for function in functions if function.trigger == "dynamodb").logical_id
    [stream_source] = resources[stream]["Properties"]["Events"].values()
    return AwsBehaviour(
        verify_queue=queue(render.VERIFY_QUEUE),
        notify_queue=queue(render.NOTIFY_QUEUE),
        slack_actions_queue=queue(stack.SLACK_ACTIONS_QUEUE),
        stream_max_retries=int(stream_source["Properties"]["MaximumRetryAttempts"]),
        asynchronous=frozenset(f.name for f in functions if f.invoked_asynchronously),
        async_retry_delays_s=ASYNC_RETRY_DELAYS_S,
        reconcile_every_s=reconcile_rate_s(),
    )


def reconcile_rate_s() -> int:
    [source] = [
        s
        for s in chalice_app.app.event_sources
        if isinstance(s, ScheduledEventConfig) and s.name == "reconcile"
    ]
    rate = source.schedule_expression
    assert isinstance(rate, Rate), rate
    return int(rate.value) * {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}[rate.unit]


@dataclass
class Queues:
    verify_url: str
    notify_url: str
    notify_dlq_url: str
    slack_actions_url: str
    artifact_events_url: str


class World:
    """Started once per test session: moto, the Slack look-alike, the provisioned account."""

    def __init__(self) -> None:
        self._saved_environment = {name: os.environ.get(name) for name in [*ENVIRONMENT, *_URL_VARIABLES]}
        os.environ.update(ENVIRONMENT)
        os.environ.pop("AWS_PROFILE", None)
        self._directory = tempfile.TemporaryDirectory()
        self.github = GithubApi(repositories=[GITHUB_REPOSITORY]).start()
        pipelines_file = Path(self._directory.name) / "pipelines.toml"
        pipelines_file.write_text(
            PIPELINES_TOML.replace(_GITHUB_API_URL, self.github.api_url), encoding="utf-8"
        )
        os.environ["PIPELINES_FILE"] = str(pipelines_file)
        self.pipelines = load_pipelines(pipelines_file)
        self.behaviour = aws_behaviour(self.pipelines)
        redelivered_s = self.behaviour.slack_actions_queue.visibility_timeout_s
        assert redelivered_s < APPROVAL_EXPIRES_S, (
            f"a Slack approval whose worker died comes back after {redelivered_s}s: the approval "
            f"pipeline's expiry ({APPROVAL_EXPIRES_S}s) must be longer"
        )
        moto_extensions.install()
        self._mock = mock_aws()
        self._mock.start()
        self.slack = SlackApi().start()
        os.environ["SLACK_API_URL"] = self.slack.api_url
        self.session = boto3.session.Session(region_name=REGION)
        provisioned = provision(
            self.session,
            self.pipelines,
            table=TABLE,
            load_balanced={NOTIFIED: INSTANCES, QUIET: INSTANCES, GATED: INSTANCES},
        )
        self.load_balanced: dict[str, LoadBalancedGroup] = provisioned.load_balanced
        ssm = self.session.client("ssm")
        ssm.put_parameter(Name=SLACK_TOKEN_PARAMETER, Value=SLACK_BOT_TOKEN, Type="SecureString")
        ssm.put_parameter(
            Name=SLACK_SIGNING_SECRET_PARAMETER, Value=SLACK_SIGNING_SECRET, Type="SecureString"
        )
        ssm.put_parameter(Name=GITHUB_TOKEN_PARAMETER, Value=GITHUB_TOKEN, Type="SecureString")
        self._eventbridge_queue = "artifact-events"
        self.dynamodb = self.session.client("dynamodb")
        self.sqs = self.session.client("sqs")
        self.s3 = self.session.client("s3")
        self.codedeploy = self.session.client("codedeploy")
        self.cloudwatch = self.session.client("cloudwatch")
        self._deployment_groups = [
            (
                pipeline.application,
                pipeline.deployment_group,
                pipeline.name in self.load_balanced,
                pipeline.name,
                pipeline.deployment_config,
            )
            for pipeline in self.pipelines.pipelines
        ]
        self.queues = self.reset()

    def reset(self) -> Queues:
        """Back to the provisioned state: only the backends a run writes to are reset and their
        resources created again (EC2 instances and the target groups stay)."""
        backends: Any = get_backend  # typed per literal service name only
        for service in _RUN_BACKENDS:
            for region_backend in backends(service)[DEFAULT_ACCOUNT_ID].values():
                region_backend.reset()
        moto_extensions.clear_target_health()
        self.dynamodb.create_table(**table_definition(TABLE))
        verify_dlq = self._queue(self.behaviour.verify_queue.dead_letter_name, fifo=False)
        notify_dlq = self._queue(self.behaviour.notify_queue.dead_letter_name, fifo=True)
        verify = self._queue_with_redrive(self.behaviour.verify_queue, verify_dlq)
        notify = self._queue_with_redrive(self.behaviour.notify_queue, notify_dlq)
        slack_actions_dlq = self._queue(self.behaviour.slack_actions_queue.dead_letter_name, fifo=False)
        slack_actions = self._queue_with_redrive(self.behaviour.slack_actions_queue, slack_actions_dlq)
        # The queue the provisioned EventBridge rule (S3 "Object Created") delivers to: the
        # sweep reads moto's own event from it and hands it to on_artifact_event.
        artifact_events = self._queue(self._eventbridge_queue, fifo=False)
        self.s3.create_bucket(Bucket=BUCKET)
        self.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        self.s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        self.session.client("ses").verify_email_identity(EmailAddress=SENDER)
        # watched-prod's alarm, OK until a scenario sets it (CloudWatch's own state for a new
        # alarm is INSUFFICIENT_DATA, which holds no start).
        self.cloudwatch.put_metric_alarm(
            AlarmName=WATCHED_ALARM,
            Namespace="AWS/ApplicationELB",
            MetricName="HTTPCode_Target_5XX_Count",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )
        self.cloudwatch.set_alarm_state(AlarmName=WATCHED_ALARM, StateValue="OK", StateReason="quiet")
        for application in sorted({group[0] for group in self._deployment_groups}):
            self.codedeploy.create_application(applicationName=application, computePlatform="Server")
        for application, group, balanced, name, config in self._deployment_groups:
            extra: dict[str, Any] = {}
            if balanced:
                extra["loadBalancerInfo"] = {"targetGroupInfoList": [{"name": name}]}
            self.codedeploy.create_deployment_group(
                applicationName=application,
                deploymentGroupName=group,
                deploymentConfigName=config,
                serviceRoleArn="arn:aws:iam::123456789012:role/CodeDeployServiceRole",
                deploymentStyle={"deploymentType": "IN_PLACE", "deploymentOption": "WITH_TRAFFIC_CONTROL"},
                **extra,
            )
        self.slack_messages = self._fresh_slack_state()
        self.github.reset()
        os.environ["VERIFY_QUEUE_URL"] = verify
        os.environ["NOTIFY_QUEUE_URL"] = notify
        os.environ["NOTIFY_DLQ_URL"] = notify_dlq
        os.environ["SLACK_ACTIONS_QUEUE_URL"] = slack_actions
        bootstrap.reset()
        return Queues(verify, notify, notify_dlq, slack_actions, artifact_events)

    def _fresh_slack_state(self) -> SlackApi:
        """An empty Slack workspace behind the running look-alike: its HTTP server hands each
        request to ``server.app`` (``sandbox/slack_api.py``), so a new, unstarted ``SlackApi``
        put there answers from now on, with the same channels and tokens and nothing posted.
        Restarting the server per run would cost its shutdown poll each time. It signs clicks
        with the app's signing secret, and knows the server it answers on: a click's
        ``response_url`` points there."""
        fresh = SlackApi(
            signing_secret=SLACK_SIGNING_SECRET,
            interactions_url=SLACK_INTERACTIONS_URL,
            usergroups={SLACK_APPROVERS_GROUP: [SLACK_APPROVER[0]]},
        )
        self.slack._server.app = fresh  # type: ignore[union-attr]
        fresh._server = self.slack._server
        return fresh

    def pause_lookalikes(self) -> None:
        """Stop serving Slack and GitHub in this process, keeping the listening sockets (before
        a fork)."""
        for lookalike in (self.slack, self.github):
            server, thread = lookalike._server, lookalike._thread
            assert server is not None
            assert thread is not None
            server.shutdown()
            thread.join()

    def serve_lookalikes(self) -> None:
        """Serve Slack and GitHub from this process on the same sockets (after a fork: in the
        child, the workspace and repository as they were at the fork; in the parent again once
        the child has exited)."""
        for lookalike, name in ((self.slack, "slack-api"), (self.github, "github-api")):
            server = lookalike._server
            assert server is not None
            thread = threading.Thread(target=server.serve_forever, args=(0.01,), name=name, daemon=True)
            lookalike._thread = thread
            thread.start()

    def _queue(self, name: str, *, fifo: bool, attributes: dict[str, str] | None = None) -> str:
        given = {**({"FifoQueue": "true"} if fifo else {}), **(attributes or {})}
        return str(self.sqs.create_queue(QueueName=name, Attributes=given)["QueueUrl"])

    def _queue_with_redrive(self, settings: QueueSettings, dead_letter_url: str) -> str:
        dead_letter_arn = self.sqs.get_queue_attributes(
            QueueUrl=dead_letter_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        return self._queue(
            settings.name,
            fifo=settings.fifo,
            attributes={
                "VisibilityTimeout": str(settings.visibility_timeout_s),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": settings.max_receives}
                ),
            },
        )

    def close(self) -> None:
        self.slack.stop()
        self.github.stop()
        self._mock.stop()
        self._directory.cleanup()
        bootstrap.reset()
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_URL_VARIABLES = (
    "PIPELINES_FILE",
    "VERIFY_QUEUE_URL",
    "NOTIFY_QUEUE_URL",
    "NOTIFY_DLQ_URL",
    "SLACK_ACTIONS_QUEUE_URL",
    "SLACK_API_URL",
)

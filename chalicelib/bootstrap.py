"""Wires the use cases' adapters from the environment, once per warm Lambda container.

boto3 clients are created on first use, not at import, to keep cold starts short.
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chalicelib.domain.pipelines import PipelinesConfig, load_pipelines
from chalicelib.service.notification_ports import NotificationAdapters
from chalicelib.service.wiring import Wiring

if TYPE_CHECKING:
    from chalicelib.service.digest import DigestAdapters
    from chalicelib.service.slack_actions import SlackActionAdapters

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PIPELINES_FILE = "chalicelib/pipelines.toml"


class ConfigurationError(RuntimeError):
    """The function's environment is incomplete; the message names what to set."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def _required_env(name: str, purpose: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set: it must name {purpose}")
    return value


def pipelines_file() -> Path:
    path = Path(os.environ.get("PIPELINES_FILE") or DEFAULT_PIPELINES_FILE)
    return path if path.is_absolute() else PROJECT_ROOT / path


@functools.cache
def pipelines() -> PipelinesConfig:
    return load_pipelines(pipelines_file())


@functools.cache
def wiring() -> Wiring:
    """The production wiring: DynamoDB, S3, CodeDeploy, ELBv2, CloudWatch and SQS through boto3
    (``AWS_ENDPOINT_URL`` points them at an emulator in the sandbox and the tests)."""
    import boto3
    from botocore.config import Config

    from chalicelib.adapters.cloudwatch import CloudWatchAlarms, CloudWatchMetrics
    from chalicelib.adapters.codedeploy import CodeDeployDeployments
    from chalicelib.adapters.dynamodb_store import DynamoReleaseStore
    from chalicelib.adapters.elbv2 import Elbv2LoadBalancing
    from chalicelib.adapters.s3_artifacts import S3Artifacts
    from chalicelib.adapters.sqs_queues import SqsVerifyQueue

    table = _required_env("RELEASES_TABLE", "the releases DynamoDB table")
    verify_queue_url = _required_env("VERIFY_QUEUE_URL", "the SQS queue that paces health checks")
    session = boto3.session.Session()
    # Standard retries absorb short throttling; what still fails raises so Lambda retries the event.
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20)
    return Wiring(
        store=DynamoReleaseStore(session.client("dynamodb", config=config), table),
        artifacts=S3Artifacts(session.client("s3", config=config)),
        deployments=CodeDeployDeployments(session.client("codedeploy", config=config)),
        load_balancing=Elbv2LoadBalancing(session.client("elbv2", config=config)),
        verify_queue=SqsVerifyQueue(session.client("sqs", config=config), verify_queue_url),
        pipelines=pipelines(),
        clock=SystemClock(),
        coordinator=table,
        notifications=_notifications(session, config, table),
        # Its client is made on first read: only a check of a pipeline with alarms reads them.
        alarms=CloudWatchAlarms(lambda: session.client("cloudwatch", config=config)),
        traffic=CloudWatchMetrics(lambda: session.client("cloudwatch", config=config)),
        slack_actions=_slack_actions(session, config, table),
        digests=_digests(session, config, table),
    )


def _notifications(session: Any, config: Any, table: str) -> NotificationAdapters | None:
    """The notify queue, its dead-letter queue, the delivery log and the channels, when
    ``NOTIFY_QUEUE_URL`` is set. Clients of services a function may never call (SES, SNS, SSM,
    Secrets Manager) are created on first use; ``SLACK_API_URL`` points Slack at the sandbox."""
    from chalicelib.adapters.delivery_log import DynamoDeliveryLog, DynamoDeploymentRecords
    from chalicelib.adapters.email import SesEmail
    from chalicelib.adapters.github import GithubRestApi
    from chalicelib.adapters.notify_queue import SqsNotifyQueue
    from chalicelib.adapters.secrets import ParameterSecrets
    from chalicelib.adapters.slack import SlackIncomingWebhook, SlackWebApi
    from chalicelib.adapters.sns import SnsTopics
    from chalicelib.adapters.webhook import HttpWebhook
    from chalicelib.service.notification_channels import channel_registry

    queue_url = os.environ.get("NOTIFY_QUEUE_URL")
    if not queue_url:
        return None
    dead_letter_url = _required_env("NOTIFY_DLQ_URL", "the notify queue's dead-letter queue (FIFO)")

    @functools.cache
    def client(service: str) -> Any:
        return session.client(service, config=config)

    return NotificationAdapters(
        queue=SqsNotifyQueue(client("sqs"), queue_url, dead_letter_url),
        deliveries=DynamoDeliveryLog(client("dynamodb"), table),
        channels=channel_registry(
            ParameterSecrets(client),
            slack=SlackWebApi(base_url=os.environ.get("SLACK_API_URL") or None),
            slack_webhook=SlackIncomingWebhook(),
            email_sender=SesEmail(lambda: client("ses")),
            sns=SnsTopics(lambda: client("sns")),
            webhook=HttpWebhook(),
            github=GithubRestApi(),
            github_records=DynamoDeploymentRecords(client("dynamodb"), table),
            # Buttons on the cards only where a Slack app ([slack]) can take the clicks.
            slack_card_actions=pipelines().slack is not None,
        ),
    )


def _slack_actions(session: Any, config: Any, table: str) -> SlackActionAdapters | None:
    """The replay guard, the actions queue and Slack, when ``SLACK_ACTIONS_QUEUE_URL`` is set (the
    API's route and the actions worker); each client is made on first use."""
    from chalicelib.adapters.secrets import ParameterSecrets
    from chalicelib.adapters.slack_interactions import (
        DynamoInteractionLedger,
        SlackWorkspace,
        SqsSlackActionQueue,
    )
    from chalicelib.service.slack_actions import SlackActionAdapters

    queue_url = os.environ.get("SLACK_ACTIONS_QUEUE_URL")
    if not queue_url:
        return None

    @functools.cache
    def client(service: str) -> Any:
        return session.client(service, config=config)

    return SlackActionAdapters(
        secrets=ParameterSecrets(client),
        ledger=DynamoInteractionLedger(lambda: client("dynamodb"), table),
        queue=SqsSlackActionQueue(lambda: client("sqs"), queue_url),
        workspace=SlackWorkspace(base_url=os.environ.get("SLACK_API_URL") or None),
    )


def _digests(session: Any, config: Any, table: str) -> DigestAdapters | None:
    """The digest log, Slack and the token's store, when a pipeline has a weekly digest; each
    client is made on first use (reconcile posts a digest once a week)."""
    if not any(pipeline.digest is not None for pipeline in pipelines().pipelines):
        return None
    from chalicelib.adapters.digest_log import DynamoDigestLog
    from chalicelib.adapters.secrets import ParameterSecrets
    from chalicelib.adapters.slack import SlackWebApi
    from chalicelib.service.digest import DigestAdapters

    @functools.cache
    def client(service: str) -> Any:
        return session.client(service, config=config)

    return DigestAdapters(
        log=DynamoDigestLog(lambda: client("dynamodb"), table),
        slack=SlackWebApi(base_url=os.environ.get("SLACK_API_URL") or None),
        secrets=ParameterSecrets(client),
    )


def reset() -> None:
    """Forget the cached wiring (tests change the environment between cases)."""
    wiring.cache_clear()
    pipelines.cache_clear()

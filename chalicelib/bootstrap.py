"""Wires the use cases' adapters from the environment, once per warm Lambda container.

boto3 clients are created on first use, not at import, to keep cold starts short.
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime
from pathlib import Path

from chalicelib.domain.pipelines import PipelinesConfig, load_pipelines
from chalicelib.service.context import Context

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
def context() -> Context:
    """The production wiring: DynamoDB, S3, CodeDeploy, ELBv2 and SQS through boto3 (``AWS_ENDPOINT_URL``
    points them at an emulator in the sandbox and the tests)."""
    import boto3
    from botocore.config import Config

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
    return Context(
        store=DynamoReleaseStore(session.client("dynamodb", config=config), table),
        artifacts=S3Artifacts(session.client("s3", config=config)),
        deployments=CodeDeployDeployments(session.client("codedeploy", config=config)),
        load_balancing=Elbv2LoadBalancing(session.client("elbv2", config=config)),
        verify_queue=SqsVerifyQueue(session.client("sqs", config=config), verify_queue_url),
        pipelines=pipelines(),
        clock=SystemClock(),
    )


def reset() -> None:
    """Forget the cached wiring (tests change the environment between cases)."""
    context.cache_clear()
    pipelines.cache_clear()

"""The Lambda functions of the Chalice app as ``chalice package`` generates them (name, logical id,
trigger, batch size) and the names they get in AWS; what the template and the roles are built
around."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

APP_NAME = "release-coordinator"


class RenderError(RuntimeError):
    """The app or the pipelines file cannot be rendered; the message says what to fix."""


@dataclass(frozen=True)
class Function:
    name: str  # the Chalice function name: on_verify_message, api_handler, ...
    logical_id: str  # the AWS::Serverless::Function chalice package generates
    trigger: str  # api | eventbridge | schedule | sqs | dynamodb | invoke

    @property
    def invoked_asynchronously(self) -> bool:
        # EventBridge rules and schedules invoke asynchronously: Lambda retries twice, then drops
        # the event unless the function has a dead-letter queue.
        return self.trigger in ("eventbridge", "schedule", "invoke")


def app_functions(app: Any) -> list[Function]:
    """Every Lambda function of the Chalice app, with the logical id ``chalice package`` gives it."""
    from chalice.app import (
        CloudWatchEventConfig,
        DynamoDBEventConfig,
        ScheduledEventConfig,
        SQSEventConfig,
    )
    from chalice.utils import to_cfn_resource_name

    functions = [Function(f.name, to_cfn_resource_name(f.name), "invoke") for f in app.pure_lambda_functions]
    for source in app.event_sources:
        if isinstance(source, SQSEventConfig):
            trigger = "sqs"
        elif isinstance(source, DynamoDBEventConfig):
            trigger = "dynamodb"
        elif isinstance(source, ScheduledEventConfig):
            trigger = "schedule"
        elif isinstance(source, CloudWatchEventConfig):
            trigger = "eventbridge"
        else:
            raise RenderError(f"{source.name}: event source {type(source).__name__} is not supported here")
        functions.append(Function(source.name, to_cfn_resource_name(source.name), trigger))
    if app.routes:
        functions.append(Function("api_handler", "APIHandler", "api"))
    return functions


def batch_sizes(app: Any) -> dict[str, int]:
    """The batch size of each queue and stream handler, as app.py declares it."""
    from chalice.app import DynamoDBEventConfig, SQSEventConfig

    return {
        source.name: int(source.batch_size)
        for source in app.event_sources
        if isinstance(source, (SQSEventConfig, DynamoDBEventConfig))
    }


def function_name(stage: str, function: Function) -> str:
    """As ``chalice deploy`` names functions: predictable for operators, logs and alarms."""
    return f"{APP_NAME}-{stage}-{function.name}"


def log_group_name(stage: str, function: Function) -> str:
    return f"/aws/lambda/{function_name(stage, function)}"

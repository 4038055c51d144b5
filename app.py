"""Release Coordinator: Lambda entry points only. Everything else lives in ``chalicelib``."""

from __future__ import annotations

from typing import Any

from chalice.app import Chalice, CloudWatchEvent, Rate, SQSEvent

from chalicelib import bootstrap, lambda_handlers

app = Chalice(app_name="release-coordinator")


@app.lambda_function(name="on_artifact_event")
def on_artifact_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge ``aws.s3`` Object Created (rules per pipeline in the infra template), or a
    classic S3 notification."""
    return lambda_handlers.artifact_event(bootstrap.context(), event)


@app.on_cw_event(
    {"source": ["aws.codedeploy"], "detail-type": ["CodeDeploy Deployment State-change Notification"]},
    name="on_codedeploy_event",
)
def on_codedeploy_event(event: CloudWatchEvent) -> dict[str, Any]:
    return lambda_handlers.codedeploy_event(bootstrap.context(), event.to_dict())


@app.on_sqs_message(queue="release-coordinator-verify", batch_size=10, name="on_verify_message")
def on_verify_message(event: SQSEvent) -> dict[str, Any]:
    """Delayed health checks (DelaySeconds paces them); partial batch failures reported."""
    return lambda_handlers.verify_messages(bootstrap.context(), event.to_dict())


@app.schedule(Rate(5, unit=Rate.MINUTES), name="reconcile")
def reconcile(event: Any) -> dict[str, Any]:
    return lambda_handlers.scheduled_reconcile(bootstrap.context())

"""Release Coordinator: Lambda entry points only. Everything else lives in ``chalicelib``."""

from __future__ import annotations

import os
from typing import Any

from chalice.app import (
    Chalice,
    CloudWatchEvent,
    DynamoDBEvent,
    IAMAuthorizer,
    Rate,
    Response,
    SQSEvent,
)

from chalicelib import bootstrap, http_api, lambda_handlers

# The coordinator's logger is Powertools' (POWERTOOLS_LOG_LEVEL, JSON to stdout): Chalice must not
# configure it. Its logger has the same name (the app's), and Chalice sets it to ERROR when it
# finds no handler writing to stdout, which drops every INFO and WARNING line.
app = Chalice(app_name="release-coordinator", configure_logs=False)
app.register_middleware(http_api.log_with_lambda_context, "all")
# Every route needs a SigV4-signed request from a principal allowed execute-api:Invoke on it.
iam = IAMAuthorizer()

# The table's stream ARN exists only once the table does: the infra merge template points the
# event source at it ({"Fn::GetAtt": [ReleasesTable, "StreamArn"]}); the environment may name it.
RELEASES_STREAM_ARN = os.environ.get(
    "RELEASES_STREAM_ARN",
    "arn:aws:dynamodb:us-east-1:123456789012:table/release-coordinator/stream/set-by-infra-template",
)


@app.lambda_function(name="on_artifact_event")
def on_artifact_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge ``aws.s3`` Object Created (rules per pipeline in the infra template), or a
    classic S3 notification."""
    return lambda_handlers.artifact_event(bootstrap.wiring(), event)


@app.on_cw_event(
    {"source": ["aws.codedeploy"], "detail-type": ["CodeDeploy Deployment State-change Notification"]},
    name="on_codedeploy_event",
)
def on_codedeploy_event(event: CloudWatchEvent) -> dict[str, Any]:
    return lambda_handlers.codedeploy_event(bootstrap.wiring(), event.to_dict())


@app.on_sqs_message(queue="release-coordinator-verify", batch_size=10, name="on_verify_message")
def on_verify_message(event: SQSEvent) -> dict[str, Any]:
    """Delayed health checks (DelaySeconds paces them); partial batch failures reported."""
    return lambda_handlers.verify_messages(bootstrap.wiring(), event.to_dict())


@app.schedule(Rate(5, unit=Rate.MINUTES), name="reconcile")
def reconcile(event: Any) -> dict[str, Any]:
    return lambda_handlers.scheduled_reconcile(bootstrap.wiring())


@app.on_dynamodb_record(
    stream_arn=RELEASES_STREAM_ARN,
    batch_size=100,
    # From the oldest record kept: an event source created after the table misses no history event.
    starting_position="TRIM_HORIZON",
    name="on_release_stream",
)
def on_release_stream(event: DynamoDBEvent) -> dict[str, Any]:
    """New history events in, notify messages out (the outbox); partial batch failures reported."""
    return lambda_handlers.release_stream(bootstrap.wiring(), event.to_dict())


@app.on_sqs_message(queue="release-coordinator-notify.fifo", batch_size=5, name="on_notify_message")
def on_notify_message(event: SQSEvent) -> dict[str, Any]:
    """One delivery per message, once; partial batch failures reported per message group."""
    return lambda_handlers.notify_messages(bootstrap.wiring(), event.to_dict())


@app.on_sqs_message(queue="release-coordinator-slack-actions", batch_size=1, name="on_slack_action")
def on_slack_action(event: SQSEvent) -> dict[str, Any]:
    """Button clicks on release cards, queued by the route below, one per invocation: no click waits
    behind another's Slack calls. Partial batch failures reported."""
    return lambda_handlers.slack_action_messages(bootstrap.wiring(), event.to_dict())


@app.route("/releases", methods=["GET"], authorizer=iam)
def list_releases() -> Response:
    return http_api.list_releases(bootstrap.wiring(), http_api.current(app.current_request))


@app.route("/releases", methods=["POST"], authorizer=iam)
def create_release() -> Response:
    return http_api.create_release(bootstrap.wiring(), http_api.current(app.current_request))


@app.route("/releases/{release_id}", methods=["GET"], authorizer=iam)
def get_release(release_id: str) -> Response:
    return http_api.get_release(bootstrap.wiring(), http_api.current(app.current_request), release_id)


@app.route("/releases/{release_id}/redeploy", methods=["POST"], authorizer=iam)
def redeploy_release(release_id: str) -> Response:
    return http_api.redeploy(bootstrap.wiring(), http_api.current(app.current_request), release_id)


@app.route("/releases/{release_id}/cancel", methods=["POST"], authorizer=iam)
def cancel_release(release_id: str) -> Response:
    return http_api.cancel(bootstrap.wiring(), http_api.current(app.current_request), release_id)


@app.route("/releases/{release_id}/approve", methods=["POST"], authorizer=iam)
def approve_release(release_id: str) -> Response:
    return http_api.approve(bootstrap.wiring(), http_api.current(app.current_request), release_id)


@app.route("/releases/{release_id}/reject", methods=["POST"], authorizer=iam)
def reject_release(release_id: str) -> Response:
    return http_api.reject(bootstrap.wiring(), http_api.current(app.current_request), release_id)


@app.route("/stats", methods=["GET"], authorizer=iam)
def get_stats() -> Response:
    return http_api.get_stats(bootstrap.wiring(), http_api.current(app.current_request))


@app.route("/pipelines", methods=["GET"], authorizer=iam)
def list_pipelines() -> Response:
    return http_api.list_pipelines(bootstrap.wiring(), http_api.current(app.current_request))


@app.route("/pipelines/{name}", methods=["GET"], authorizer=iam)
def get_pipeline(name: str) -> Response:
    return http_api.get_pipeline(bootstrap.wiring(), http_api.current(app.current_request), name)


@app.route("/pipelines/{name}/fleet", methods=["GET"], authorizer=iam)
def get_pipeline_fleet(name: str) -> Response:
    return http_api.get_fleet(bootstrap.wiring(), http_api.current(app.current_request), name)


@app.route("/pipelines/{name}/promote", methods=["POST"], authorizer=iam)
def promote_into_pipeline(name: str) -> Response:
    return http_api.promote(bootstrap.wiring(), http_api.current(app.current_request), name)


@app.route("/pipelines/{name}/rollback", methods=["POST"], authorizer=iam)
def roll_back_pipeline(name: str) -> Response:
    return http_api.roll_back(bootstrap.wiring(), http_api.current(app.current_request), name)


# The one route without IAM auth: Slack cannot sign with SigV4. It checks Slack's own request
# signature (the [slack] app's signing secret), takes each signed request once, and only queues.
@app.route("/slack/interactions", methods=["POST"], content_types=["application/x-www-form-urlencoded"])
def slack_interactions() -> Response:
    return http_api.slack_interaction(bootstrap.wiring(), http_api.current(app.current_request))

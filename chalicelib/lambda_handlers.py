"""What each Lambda entry point does with its raw event: parse, log and skip what is malformed,
hand the rest to a use case. ``app.py`` only routes events here.

Each Lambda function imports ``app`` whole but runs one entry point, so each entry point imports
its own use case when it first runs: a function's cold start loads no other function's code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.domain.inbound_events import MalformedEvent, parse_artifact_event, parse_codedeploy_event
from chalicelib.log import logger

if TYPE_CHECKING:
    from chalicelib.domain.notifications import StreamedEvent
    from chalicelib.service.wiring import Wiring


def artifact_event(wiring: Wiring, event: Any) -> dict[str, Any]:
    """Uploads from EventBridge, a classic S3 notification, or either in an SQS batch or an SNS
    notification. Every upload gets its turn; if one failed (throttling, a 5xx), the event fails
    after the others, so Lambda, or SQS for a batch, delivers it again: the uploads handled
    already find their release there and do nothing, and nothing is lost whether or not the
    queue's event source reports partial batch failures."""
    from chalicelib.service.uploads import handle_upload

    try:
        parsed = parse_artifact_event(event)
    except MalformedEvent as problem:
        logger.warning("malformed S3 event skipped", extra={"why": str(problem)})
        return {"releases": [], "skipped": [str(problem)]}
    for why in parsed.skipped:
        logger.warning("malformed S3 record skipped", extra={"why": why})
    releases = []
    failures: list[Exception] = []
    for upload in parsed.uploads:
        try:
            release = handle_upload(wiring, upload)
        except Exception as error:
            logger.exception(
                "upload not handled; the event is retried",
                extra={"bucket": upload.bucket, "key": upload.key_candidates[0]},
            )
            failures.append(error)
            continue
        if release is not None:
            releases.append({"id": release.id, "state": release.state.value})
    if failures:
        raise failures[0]
    return {"releases": releases, "skipped": parsed.skipped}


def codedeploy_event(wiring: Wiring, event: Any) -> dict[str, Any]:
    from chalicelib.service.deployment_events import handle_deployment_event

    try:
        change = parse_codedeploy_event(event)
    except MalformedEvent as problem:
        logger.warning("malformed CodeDeploy event skipped", extra={"why": str(problem)})
        return {"release": None, "skipped": str(problem)}
    if change is None:
        return {"release": None, "skipped": "instance-level event"}
    return {"release": handle_deployment_event(wiring, change), "skipped": None}


def verify_messages(wiring: Wiring, event: Mapping[str, Any]) -> dict[str, Any]:
    """An SQS batch of health checks and lane wake-ups. A malformed message is logged and dropped
    (retrying cannot fix it). ELBv2's errors are the check's to judge (recorded, retried on
    schedule or failing verification), never SQS's redelivery, which would dead-letter the check
    after five; a message that fails otherwise (the store throttled) is reported back alone so
    SQS retries just it."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from chalicelib.domain.wakeups import WakeUp, verify_queue_message
    from chalicelib.service.verification import run_check

    def check(record: SQSRecord) -> None:
        try:
            message = verify_queue_message(json.loads(record.body))
        except (MalformedEvent, ValueError) as problem:
            logger.warning(
                "malformed verify message dropped",
                extra={"why": str(problem), "message_id": record.message_id},
            )
            return
        if isinstance(message, WakeUp):
            # Loaded when a wake-up comes: a health check, the common message, never loads the
            # reconciler (a wake-up repairs its lane as reconcile does).
            from chalicelib.service.reconcile import wake_lane

            with logger.append_context_keys(pipeline=message.pipeline):
                wake_lane(wiring, message)
            return
        with logger.append_context_keys(release_id=message.release_id):
            run_check(wiring, message)

    response = process_partial_response(
        event=dict(event),
        record_handler=check,
        processor=BatchProcessor(event_type=EventType.SQS),
        context=None,
    )
    return dict(response)


def scheduled_reconcile(wiring: Wiring) -> dict[str, Any]:
    from chalicelib.service.reconcile import reconcile

    report = reconcile(wiring)
    logger.info("reconcile finished", extra={"report": report})
    return report


def release_stream(wiring: Wiring, event: Mapping[str, Any]) -> dict[str, Any]:
    """A batch of the table's stream records: the new history events become their notify
    messages, queued together, and each release that ended prints its metrics (EMF,
    chalicelib/service/release_metrics.py). Other records are skipped; when messages cannot be queued, the
    record of the first event they came from is reported back (``ReportBatchItemFailures`` on
    the event source mapping), so Lambda retries from it."""
    from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
        DynamoDBRecordEventName,
        DynamoDBStreamEvent,
    )

    from chalicelib.adapters.release_stream import ReleaseImages, streamed_event
    from chalicelib.service.notifications import publish
    from chalicelib.service.release_metrics import record_ended

    events: list[StreamedEvent] = []
    sequence_numbers: list[str | None] = []
    # The releases as this batch last wrote them: the metrics of a release that ended read it here.
    releases = ReleaseImages()
    for record in DynamoDBStreamEvent(dict(event)).records:
        if record.dynamodb is None or record.event_name is DynamoDBRecordEventName.REMOVE:
            continue
        # Reading the image parses it (an unknown type raises TypeError, a bad number Decimal's
        # InvalidOperation, an ArithmeticError): a malformed one skips its record, not the batch.
        try:
            image = record.dynamodb.new_image
            releases.remember(image)
            if record.event_name is not DynamoDBRecordEventName.INSERT:
                continue
            streamed = streamed_event(image)
        except (KeyError, TypeError, ValueError, ArithmeticError) as problem:
            logger.warning(
                "malformed record on the stream skipped",
                extra={"why": repr(problem), "event_id": record.event_id},
            )
            continue
        if streamed is not None:
            events.append(streamed)
            sequence_numbers.append(record.dynamodb.sequence_number)
    queued = publish(wiring, events)
    # Only the events whose messages are queued: the rest come again with the retried records.
    record_ended(wiring, events[:queued], releases.get)
    retry_from = sequence_numbers[queued : queued + 1]
    return {"batchItemFailures": [{"itemIdentifier": number} for number in retry_from]}


def notify_messages(wiring: Wiring, event: Mapping[str, Any]) -> dict[str, Any]:
    """A batch from the FIFO notify queue. A message that fails is reported back with the rest of
    its group (its later events), while other groups, i.e. other routes and releases, go on. The
    batch's messages share their release reads and delivery-log writes (``DeliveryBatch``); the
    last confirm is written after the batch, and if it fails the invocation fails: every message
    comes back, and what was confirmed is dropped as a duplicate."""
    from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from chalicelib.domain.notifications import NotifyMessage
    from chalicelib.service.notification_ports import Receipt
    from chalicelib.service.notifications import DeliveryBatch

    deliveries = DeliveryBatch(wiring)

    def deliver_record(record: SQSRecord) -> None:
        try:
            message = NotifyMessage.from_message(json.loads(record.body))
        except (MalformedEvent, ValueError) as problem:
            logger.warning(
                "malformed notify message dropped",
                extra={"why": str(problem), "message_id": record.message_id},
            )
            return
        receipt = Receipt(record.receipt_handle, int(record.attributes.approximate_receive_count or 1))
        with logger.append_context_keys(release_id=message.release_id):
            deliveries.deliver(message, receipt)

    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    # Report a batch that failed whole like any other instead of failing the invocation: the
    # retries are the same, and each message keeps the delay its failure asked for.
    processor.raise_on_entire_batch_failure = False
    response = process_partial_response(
        event=dict(event), record_handler=deliver_record, processor=processor, context=None
    )
    deliveries.finish()
    return dict(response)


def slack_action_messages(wiring: Wiring, event: Mapping[str, Any]) -> dict[str, Any]:
    """A batch of button clicks queued by ``POST /slack/interactions``. A malformed message is
    logged and dropped (retrying cannot fix it); a click refused or about a missing release is
    answered to its user and done; one that fails otherwise (AWS throttled) is reported back
    alone, so SQS retries just it."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from chalicelib.domain.slack_interactions import ActionRequest
    from chalicelib.service.slack_actions import act

    def click(record: SQSRecord) -> None:
        try:
            request = ActionRequest.from_message(json.loads(record.body))
        except (MalformedEvent, ValueError) as problem:
            logger.warning(
                "malformed Slack action message dropped",
                extra={"why": str(problem), "message_id": record.message_id},
            )
            return
        with logger.append_context_keys(release_id=request.release_id, slack_action=request.action.value):
            act(wiring, request)

    response = process_partial_response(
        event=dict(event),
        record_handler=click,
        processor=BatchProcessor(event_type=EventType.SQS),
        context=None,
    )
    return dict(response)

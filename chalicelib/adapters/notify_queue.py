"""SQS: the notify queue (FIFO, one message group per release and route) and its dead-letter
queue.

SQS's own redrive moves a message to the dead-letter queue only after ``maxReceiveCount``
failed receives: right for errors that may pass, wasteful for refusals that never will. Those are
sent to the dead-letter queue here, at once, with the reason as a message attribute, and the
original is then deleted as handled. The body is unchanged, so a redrive after the fix (a new
token, a verified sender) delivers it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.domain.notifications import NotifyMessage
from chalicelib.log import logger
from chalicelib.service.notification_ports import NotQueued, Receipt

_BATCH_LIMIT = 10
# SQS's largest visibility timeout is 12 hours; a notification is stale long before that.
_MAX_VISIBILITY_S = 900
_REASON_LIMIT = 256


class SqsNotifyQueue:
    def __init__(self, client: Any, queue_url: str, dead_letter_url: str) -> None:
        self._client = client
        self._queue_url = queue_url
        self._dead_letter_url = dead_letter_url

    def send(self, messages: Sequence[NotifyMessage]) -> None:
        """Ten messages to a SendMessageBatch call, in order; the first call that fails, or
        refuses an entry, ends the send: the later calls would put messages of the same FIFO
        group ahead of the one that did not go out."""
        for start in range(0, len(messages), _BATCH_LIMIT):
            chunk = messages[start : start + _BATCH_LIMIT]
            try:
                response = self._client.send_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=[
                        {
                            "Id": str(number),
                            "MessageBody": json.dumps(message.to_message()),
                            "MessageGroupId": message.group_id,
                            "MessageDeduplicationId": message.deduplication_id,
                        }
                        for number, message in enumerate(chunk)
                    ],
                )
            except ClientError as error:
                raise NotQueued(str(error), start) from error
            failed = response.get("Failed") or []
            if failed:
                first = min(failed, key=lambda entry: int(entry["Id"]))
                raise NotQueued(
                    f"notify queue refused {len(failed)} message(s): {first.get('Code')}",
                    start + int(first["Id"]),
                )

    def retry_after(self, receipt: Receipt, delay_s: int) -> None:
        try:
            self._client.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=receipt.handle,
                VisibilityTimeout=max(0, min(delay_s, _MAX_VISIBILITY_S)),
            )
        except ClientError as error:
            # The queue's own visibility timeout still brings the message back, only sooner.
            logger.warning("could not delay the notify message", extra={"error": str(error)})

    def dead_letter(self, message: NotifyMessage, reason: str) -> None:
        self._client.send_message(
            QueueUrl=self._dead_letter_url,
            MessageBody=json.dumps(message.to_message()),
            MessageGroupId=message.group_id,
            MessageDeduplicationId=message.deduplication_id,
            MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:_REASON_LIMIT]}},
        )

"""SQS: the verify queue, whose delayed messages pace the health checks and wake lanes up when
a freeze ends (``domain/wakeups.py``)."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.domain.verification import MAX_DELAY_S, VerifyRequest
from chalicelib.domain.wakeups import WakeUp


class SqsVerifyQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def schedule(self, request: VerifyRequest, delay_s: int) -> None:
        self._send(request.to_message(), delay_s)

    def schedule_wake(self, wake: WakeUp, delay_s: int) -> None:
        self._send(wake.to_message(), delay_s)

    def _send(self, message: dict[str, Any], delay_s: int) -> None:
        self._client.send_message(
            QueueUrl=self._queue_url,
            MessageBody=json.dumps(message),
            DelaySeconds=max(0, min(delay_s, MAX_DELAY_S)),
        )

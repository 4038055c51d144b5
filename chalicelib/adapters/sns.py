"""SNS: one message per notification to a topic, for teams that fan out themselves. Message
attributes (notification, pipeline, state) let subscriptions filter."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.service.notification_ports import DeliveryRejected

_PERMANENT_CODES = frozenset(
    {
        "NotFound",
        "NotFoundException",
        "AuthorizationError",
        "InvalidParameter",
        "InvalidParameterValue",
        "KMSDisabled",
        "KMSNotFound",
        "KMSAccessDenied",
    }
)


class SnsTopics:
    def __init__(self, connect: Callable[[], Any]) -> None:
        # The client is made on first send: most functions of the app never send one.
        self._connect = connect

    @functools.cached_property
    def _client(self) -> Any:
        return self._connect()

    def publish(self, topic_arn: str, subject: str, message: str, attributes: Mapping[str, str]) -> None:
        try:
            self._client.publish(
                TopicArn=topic_arn,
                Subject=subject,
                Message=message,
                MessageAttributes={
                    name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
                },
            )
        except ClientError as error:
            details = error.response.get("Error", {})
            code = str(details.get("Code"))
            if code in _PERMANENT_CODES:
                raise DeliveryRejected(f"SNS {code}: {details.get('Message', '')}"[:300]) from None
            raise

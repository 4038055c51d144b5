"""SES: notification email with text and HTML parts, from a verified sender."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.service.notification_ports import DeliveryRejected

# SES takes at most 50 recipients per message.
RECIPIENTS_PER_MESSAGE = 50
# Refusals a retry cannot change (MessageRejected: among others, the sender is not verified).
_PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "ConfigurationSetDoesNotExistException",
        "AccountSendingPausedException",
        "InvalidParameterValue",
        "AccessDenied",
        "AccessDeniedException",
    }
)


class SesEmail:
    def __init__(self, connect: Callable[[], Any]) -> None:
        # The client is made on first send: most functions of the app never send one.
        self._connect = connect

    @functools.cached_property
    def _client(self) -> Any:
        return self._connect()

    def send(self, sender: str, recipients: Sequence[str], subject: str, text: str, html: str) -> None:
        # A retry after a partial send repeats the earlier chunks: rare (only beyond 50
        # recipients), and a repeated email beats a lost one.
        for start in range(0, len(recipients), RECIPIENTS_PER_MESSAGE):
            try:
                self._client.send_email(
                    Source=sender,
                    Destination={"ToAddresses": list(recipients[start : start + RECIPIENTS_PER_MESSAGE])},
                    Message={
                        "Subject": {"Data": subject, "Charset": "UTF-8"},
                        "Body": {
                            "Text": {"Data": text, "Charset": "UTF-8"},
                            "Html": {"Data": html, "Charset": "UTF-8"},
                        },
                    },
                )
            except ClientError as error:
                details = error.response.get("Error", {})
                code = str(details.get("Code"))
                if code in _PERMANENT_CODES:
                    raise DeliveryRejected(f"SES {code}: {details.get('Message', '')}"[:300]) from None
                raise

"""What the Slack card's buttons need outside the coordinator: the replay guard on the releases
table, the queue between ``POST /slack/interactions`` and the worker, and the Slack calls the
worker makes (user-group members with the bot token, the answer to the clicking user through the
payload's ``response_url``). ``slack_sdk`` loads on first use (cold start budget).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.domain.slack_interactions import ActionRequest
from chalicelib.log import logger
from chalicelib.service.notification_ports import DeliveryRejected

# Members of a user group are read once per this long in a warm container: a person added to a
# group can act within five minutes, and a busy card costs one Slack call per group, not per click.
GROUP_MEMBERS_CACHE_S = 300
TIMEOUT_S = 5
# The replay guard's items: ``pk=SLACKREQ#<digest of signature and timestamp>``, ``sk=SEEN``, with
# the table's TTL attribute (infra/stack.py TTL_ATTRIBUTE). They carry no ``kind``, so the stream
# consumer (chalicelib/adapters/release_stream.py) passes over them.
_LEDGER_PREFIX = "SLACKREQ#"
_EXPIRY_ATTRIBUTE = "expires_at"
ClientFactory = Callable[[], Any]


class DynamoInteractionLedger:
    """Each signed Slack request is taken once: a conditional put of its digest."""

    def __init__(self, client: ClientFactory, table: str) -> None:
        # Made on first use: every function is wired with it, only the API's route writes.
        self._client = client
        self._table = table

    def first_time(self, request_id: str, keep_until: datetime) -> bool:
        try:
            self._client().put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"{_LEDGER_PREFIX}{request_id}"},
                    "sk": {"S": "SEEN"},
                    _EXPIRY_ATTRIBUTE: {"N": str(int(keep_until.timestamp()))},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def forget(self, request_id: str) -> None:
        self._client().delete_item(
            TableName=self._table, Key={"pk": {"S": f"{_LEDGER_PREFIX}{request_id}"}, "sk": {"S": "SEEN"}}
        )


class SqsSlackActionQueue:
    def __init__(self, client: ClientFactory, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, request: ActionRequest) -> None:
        self._client().send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(request.to_message()))


class SlackWorkspace:
    """The Web API with the ``[slack]`` bot token (``SLACK_API_URL`` points it at the sandbox's
    look-alike), and a click's ``response_url``."""

    def __init__(self, base_url: str | None = None, timeout_s: int = TIMEOUT_S) -> None:
        self._base_url = base_url
        self._timeout_s = timeout_s
        # (token, group) -> (monotonic time read, members)
        self._members: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}

    def group_members(self, token: str, group: str) -> frozenset[str]:
        """The user ids in user group ``group`` (``usergroups.users.list``, scope
        ``usergroups:read``). Raises ``DeliveryRejected`` when Slack refuses (no such group, a
        missing scope, a bad token)."""
        cached = self._members.get((token, group))
        if cached is not None and time.monotonic() - cached[0] < GROUP_MEMBERS_CACHE_S:
            return cached[1]
        from slack_sdk import WebClient
        from slack_sdk.errors import SlackApiError

        options: dict[str, Any] = {"token": token, "timeout": self._timeout_s}
        if self._base_url:
            options["base_url"] = self._base_url
        try:
            answer = WebClient(**options).usergroups_users_list(usergroup=group)
        except SlackApiError as refused:
            raise DeliveryRejected(
                f"usergroups.users.list {group}: {refused.response.get('error', 'refused')}"
            ) from None
        members = frozenset(str(user) for user in answer.get("users") or ())
        self._members[(token, group)] = (time.monotonic(), members)
        return members

    def respond(self, response_url: str, text: str) -> None:
        """An ephemeral message to the user who clicked: only they see it, the card stays."""
        from slack_sdk.webhook import WebhookClient

        answer = WebhookClient(response_url, timeout=self._timeout_s).send(
            text=text, response_type="ephemeral", replace_original=False
        )
        if answer.status_code != 200:
            logger.warning(
                "Slack refused the answer to a click",
                extra={"status": answer.status_code, "body": str(answer.body)[:200]},
            )

"""The delivery log in the releases table: ``pk=REL#<release id>``, ``sk=DLV#<event id>#<route>``.

A delivery is claimed with a conditional write before the channel is called and confirmed after,
so a duplicated stream record or queue message finds it delivered (or being delivered) and posts
nothing. A claim left by a Lambda that died mid-way expires after the claim lease
(chalicelib/domain/leases.py) and may be taken over; a failed attempt marks its claim ``released``
instead, so the retry may take it at once. Either way the claim write returns the record it
replaced (``ReturnValues=ALL_OLD``, no extra call), and a retry knows that an earlier attempt may
have posted.

A batch's deliveries are confirmed with the next one's claim (``confirm_and_claim``): one
transaction instead of two writes. That transaction claims only a delivery nobody has tried
(TransactWriteItems cannot return the item a put replaced, which is how a claim learns it took
over); anything else fails it, and the caller writes the two alone.

A GitHub route's deployment of a release is recorded beside its deliveries
(``sk=DLV#GITHUB#<route>``, no status: it is no delivery): GitHub has no idempotency key, so the
id is written before any status is posted, and every later notice of the release posts to it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.leases import CLAIM_LEASE
from chalicelib.domain.notifications import NotifyMessage
from chalicelib.service.notification_ports import Claim

# Nobody has claimed it, an earlier attempt gave it up, or the claim is an abandoned one.
_CLAIMABLE = "attribute_not_exists(pk) OR #status = :released OR (#status = :sending AND claimed_at < :stale)"


def _key(message: NotifyMessage) -> dict[str, Any]:
    return {
        "pk": {"S": f"REL#{message.release_id}"},
        "sk": {"S": f"DLV#{message.event.id:06d}#{message.route}"},
    }


def _claim_item(message: NotifyMessage, now: datetime) -> dict[str, Any]:
    return {
        **_key(message),
        "kind": {"S": "delivery"},
        "release_id": {"S": message.release_id},
        "route": {"S": message.route},
        "notification": {"S": message.notification},
        "status": {"S": "sending"},
        "claimed_at": {"N": str(int(now.timestamp()))},
    }


def _confirm_expression(now: datetime) -> dict[str, Any]:
    return {
        "UpdateExpression": "SET #status = :delivered, delivered_at = :now",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {":delivered": {"S": "delivered"}, ":now": {"S": now.isoformat()}},
    }


def is_condition_failure(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


def put_claim(client: Any, table: str, item: dict[str, Any], now: datetime, lease: timedelta) -> Claim | None:
    """Write a ``sending`` claim item (``status``, ``claimed_at``) where nobody holds it: CLAIMED,
    RETAKEN when it replaced a claim given up or older than ``lease`` (that attempt may have done
    the work: the write returns what it replaced, no extra call), or None when the condition
    failed (held by a live attempt, or done)."""
    try:
        replaced = client.put_item(
            TableName=table,
            Item=item,
            ConditionExpression=_CLAIMABLE,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":sending": {"S": "sending"},
                ":released": {"S": "released"},
                ":stale": {"N": str(int((now - lease).timestamp()))},
            },
            ReturnValues="ALL_OLD",
        )
    except ClientError as error:
        if is_condition_failure(error):
            return None
        raise
    return Claim.RETAKEN if replaced.get("Attributes") else Claim.CLAIMED


def release_claim(client: Any, table: str, key: dict[str, Any]) -> None:
    """Give up a ``sending`` claim so the next attempt takes it at once (``released``); a claim
    already moved on (done, or taken by another attempt) is left as it is."""
    try:
        client.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #status = :released",
            ConditionExpression="#status = :sending",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":sending": {"S": "sending"}, ":released": {"S": "released"}},
        )
    except ClientError as error:
        if not is_condition_failure(error):
            raise


class DynamoDeliveryLog:
    def __init__(self, client: Any, table_name: str, lease: timedelta = CLAIM_LEASE) -> None:
        self._client = client
        self._table = table_name
        self._lease = lease

    def claim(self, message: NotifyMessage, now: datetime) -> Claim:
        claim = put_claim(self._client, self._table, _claim_item(message, now), now, self._lease)
        if claim is not None:
            return claim
        item = self._client.get_item(TableName=self._table, Key=_key(message), ConsistentRead=True).get(
            "Item"
        )
        status = (item or {}).get("status", {}).get("S")
        return Claim.DELIVERED if status == "delivered" else Claim.BUSY

    def confirm_and_claim(
        self, delivered: NotifyMessage, message: NotifyMessage, now: datetime
    ) -> Claim | None:
        if _key(delivered) == _key(message):  # a transaction may not write one item twice
            return None
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _key(delivered),
                            **_confirm_expression(now),
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _claim_item(message, now),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except (ClientError, BotoCoreError):
            # The claim's condition failed (the delivery has a record: a retry or a duplicate),
            # or the write itself did: the caller confirms and claims alone, which tells which.
            return None
        return Claim.CLAIMED

    def confirm(self, message: NotifyMessage, now: datetime) -> None:
        self._client.update_item(TableName=self._table, Key=_key(message), **_confirm_expression(now))

    def release(self, message: NotifyMessage) -> None:
        release_claim(self._client, self._table, _key(message))


def _deployment_key(release_id: str, route: str) -> dict[str, Any]:
    return {"pk": {"S": f"REL#{release_id}"}, "sk": {"S": f"DLV#GITHUB#{route}"}}


class DynamoDeploymentRecords:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def recorded(self, release_id: str, route: str) -> int | None:
        item = self._client.get_item(
            TableName=self._table, Key=_deployment_key(release_id, route), ConsistentRead=True
        ).get("Item")
        return None if item is None else int(item["deployment_id"]["N"])

    def record(self, release_id: str, route: str, deployment_id: int) -> int:
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    **_deployment_key(release_id, route),
                    "kind": {"S": "github_deployment"},
                    "deployment_id": {"N": str(deployment_id)},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if not is_condition_failure(error):
                raise
            recorded = self.recorded(release_id, route)
            if recorded is None:  # the record that failed the condition cannot have gone
                raise
            return recorded
        return deployment_id

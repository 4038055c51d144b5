"""The weekly digests posted, in the releases table: ``pk=PIPE#<pipeline>``,
``sk=DIGEST#<iso week>`` (beside the pipeline's slot; no ``pipeline`` attribute, so the item stays
out of the by-pipeline index).

A week's digest is claimed with a conditional write before Slack is called, and the post's
channel and ts are recorded right after it, as the delivery log does for a notification
(chalicelib/adapters/delivery_log.py): a claim left by a reconcile that died expires after the
claim lease (chalicelib/domain/leases.py), a failed attempt marks its claim ``released`` so the
next reconcile takes it at once, and the claim write returns the record it replaced
(``ReturnValues=ALL_OLD``, no extra call), so the taker knows an earlier attempt may have posted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from chalicelib.adapters.delivery_log import put_claim, release_claim
from chalicelib.domain.leases import CLAIM_LEASE
from chalicelib.domain.notifications import SlackThread
from chalicelib.service.notification_ports import Claim


def _key(pipeline: str, week: str) -> dict[str, Any]:
    return {"pk": {"S": f"PIPE#{pipeline}"}, "sk": {"S": f"DIGEST#{week}"}}


class DynamoDigestLog:
    """``client`` makes the DynamoDB client on first use: a reconcile with no digest due makes
    none."""

    def __init__(self, client: Callable[[], Any], table_name: str, lease: timedelta = CLAIM_LEASE) -> None:
        self._client = client
        self._table = table_name
        self._lease = lease

    def claim(self, pipeline: str, week: str, now: datetime) -> Claim | None:
        # None: posted, or being posted by a live reconcile.
        item = {
            **_key(pipeline, week),
            "kind": {"S": "digest"},
            "status": {"S": "sending"},
            "claimed_at": {"N": str(int(now.timestamp()))},
        }
        return put_claim(self._client(), self._table, item, now, self._lease)

    def record(self, pipeline: str, week: str, posted: SlackThread, now: datetime) -> None:
        self._client().update_item(
            TableName=self._table,
            Key=_key(pipeline, week),
            UpdateExpression="SET #status = :posted, channel = :channel, ts = :ts, posted_at = :now",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":posted": {"S": "posted"},
                ":channel": {"S": posted.channel},
                ":ts": {"S": posted.ts},
                ":now": {"S": now.isoformat()},
            },
        )

    def release(self, pipeline: str, week: str) -> None:
        release_claim(self._client(), self._table, _key(pipeline, week))

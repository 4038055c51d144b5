"""The release store on one DynamoDB table (DESIGN.md section 4).

Every write is one ``TransactWriteItems``: the release (conditional on its version), its new
history events (which the table's stream turns into notifications), the pipeline slot
(conditional on its version) and any deployment-id links succeed or fail together.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from chalicelib.domain.lane import Change
from chalicelib.domain.release import (
    EventType,
    HistoryEvent,
    Release,
    ReleaseState,
    Revision,
    Trigger,
)
from chalicelib.domain.slot import ApprovalMark, PipelineSlot, UploadMark
from chalicelib.domain.verification import Verification
from chalicelib.service.ports import RequestLedger, WriteConflict

BY_PIPELINE_INDEX = "by_pipeline"
IN_FLIGHT_INDEX = "in_flight"
_BATCH_GET_LIMIT = 100  # keys per BatchGetItem request (botocore's KeyList: max 100)
_UNPROCESSED_RETRIES = 6
_UNPROCESSED_BACKOFF_S = 0.05
_CONFLICT_CODES = frozenset({"ConditionalCheckFailed", "TransactionConflict"})
# Deployment links and ended deployments a warm container remembers (each a few dozen bytes): far
# more than the deployments it sees in its lifetime, and a bound all the same.
_REMEMBERED_DEPLOYMENTS = 4096

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# A release or history event keeps as attributes of its own only what DynamoDB reads (keys, index
# keys, the version writes are conditioned on) and what readers of raw items read (the stream's
# routing fields, the release id and state, a release's notification threads, absent on most);
# the rest travels as one JSON string, ``body``. Every attribute value is walked one by one by
# each (de)serializer on the way (TypeSerializer here, DynamoDB's answer, and moto's serializer,
# whose cost in the burst grows with the values a read returns); a JSON string is one value.
# Items written before hold every attribute on its own and read the same.
#
# The slot packs everything but its keys and its version, and counts that version in
# ``slot_version``, not ``version``: a coordinator older than the packed slot (a function not yet
# updated during a stack update, or a rollback) requires ``version`` on a slot, so it fails loudly
# on a packed one instead of reading its missing line as a free slot, whose next versioned write
# would empty the line. An older coordinator fails the same way on a packed release (it lacks the
# fields it requires); either way its event is retried (docs/deploy.md, "Upgrading").
_BODY = "body"
_RELEASE_ATTRIBUTES = frozenset(
    {"pk", "sk", "id", "pipeline", "state", "created_key", "in_flight", "version", "notification_threads"}
)
_EVENT_ATTRIBUTES = frozenset(
    {"pk", "sk", "kind", "release_id", "event_pipeline", "release_trigger", "state"}
)
_SLOT_VERSION = "slot_version"
_SLOT_ATTRIBUTES = frozenset({"pk", "sk", _SLOT_VERSION})
# A slot written before the packed layout counts its version in ``version``.
_LEGACY_VERSION = "version"


def table_definition(table_name: str) -> dict[str, Any]:
    """CreateTable arguments for the releases table (used by tests and the sandbox; the
    deployed table comes from the infrastructure template with the same shape)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("pk", "sk", "pipeline", "created_key", "in_flight")
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": BY_PIPELINE_INDEX,
                "KeySchema": [
                    {"AttributeName": "pipeline", "KeyType": "HASH"},
                    {"AttributeName": "created_key", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                # Sparse: only releases not yet terminal carry ``in_flight``, so the reconciler
                # reads what is open without scanning history.
                "IndexName": IN_FLIGHT_INDEX,
                "KeySchema": [
                    {"AttributeName": "in_flight", "KeyType": "HASH"},
                    {"AttributeName": "created_key", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    }


def _release_key(release_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"REL#{release_id}"}, "sk": {"S": "META"}}


def _slot_key(pipeline: str) -> dict[str, Any]:
    return {"pk": {"S": f"PIPE#{pipeline}"}, "sk": {"S": "SLOT"}}


def _deployment_key(deployment_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"DEP#{deployment_id}"}, "sk": {"S": "REL"}}


def _serialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in item.items() if value is not None}


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def _packed(item: Mapping[str, Any], attributes: frozenset[str]) -> dict[str, Any]:
    """The item with every attribute not in ``attributes`` moved into its JSON ``body``."""
    kept = {name: value for name, value in item.items() if name in attributes}
    body = {name: value for name, value in item.items() if name not in attributes and value is not None}
    if body:
        kept[_BODY] = json.dumps(body, separators=(",", ":"), default=_whole_number)
    return kept


def _unpacked(item: Mapping[str, Any]) -> Mapping[str, Any]:
    body = item.get(_BODY)
    return {**item, **json.loads(body)} if isinstance(body, str) else item


def _whole_number(value: Any) -> int:
    """History details read back from DynamoDB hold whole numbers as Decimal (see ``_plain``)."""
    if type(value).__name__ == "Decimal":
        return int(value)
    raise TypeError(f"{type(value).__name__} is not stored in an item's body")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def release_to_item(release: Release) -> dict[str, Any]:
    return _packed(
        {
            # No ``kind`` tag: the key tells the item, and every value is carried by every read
            # and write of the release.
            "pk": f"REL#{release.id}",
            "sk": "META",
            "id": release.id,
            "pipeline": release.pipeline,
            "application": release.application,
            "deployment_group": release.deployment_group,
            "revision": {k: v for k, v in release.revision.to_dict().items() if v is not None},
            "trigger": release.trigger.value,
            "state": release.state.value,
            "reason": release.reason,
            "deployment_id": release.deployment_id,
            "actor": release.actor,
            "rollback_of": release.rollback_of,
            "metadata": dict(release.metadata) or None,  # most releases have none: no empty map
            "start_claimed_at": release.start_claimed_at.isoformat() if release.start_claimed_at else None,
            "verification": _without_nones(release.verification.to_dict()) if release.verification else None,
            "notification_threads": dict(release.notification_threads) or None,
            "created_at": release.created_at.isoformat(),
            "updated_at": release.updated_at.isoformat(),
            "created_key": release.created_key,
            "in_flight": None if release.state.is_terminal else release.pipeline,
            "version": release.version,
            "last_event_id": release.last_event_id,
        },
        _RELEASE_ATTRIBUTES,
    )


def release_from_item(stored: Mapping[str, Any]) -> Release:
    item = _unpacked(stored)
    revision = item.get("revision", {})
    return Release(
        id=item["id"],
        pipeline=item["pipeline"],
        application=item["application"],
        deployment_group=item["deployment_group"],
        revision=Revision(
            bucket=revision.get("bucket", ""),
            key=revision.get("key", ""),
            version=revision.get("version"),
            etag=revision.get("etag"),
        ),
        trigger=Trigger(item["trigger"]),
        state=ReleaseState(item["state"]),
        reason=item.get("reason", ""),
        deployment_id=item.get("deployment_id"),
        actor=item.get("actor"),
        rollback_of=item.get("rollback_of"),
        metadata=dict(item.get("metadata", {})),
        start_claimed_at=_time(item.get("start_claimed_at")),
        verification=Verification.from_dict(_plain(item["verification"]))
        if item.get("verification")
        else None,
        created_at=datetime.fromisoformat(item["created_at"]),
        updated_at=datetime.fromisoformat(item["updated_at"]),
        version=int(item["version"]),
        last_event_id=int(item.get("last_event_id", 0)),
        notification_threads=dict(item.get("notification_threads", {})),
    )


def event_to_item(release: Release, event: HistoryEvent) -> dict[str, Any]:
    return _packed(
        {
            "pk": f"REL#{release.id}",
            "sk": f"EVT#{event.id:06d}",
            "kind": "event",
            "release_id": release.id,
            "event_pipeline": release.pipeline,
            # What notification routing needs of the release, so the stream needs no read.
            "release_trigger": release.trigger.value,
            "id": event.id,
            "previous_event_id": event.previous_event_id,
            "timestamp": event.timestamp.isoformat(),
            "type": event.type.value,
            "state": event.state.value,
            "detail": dict(event.detail),
        },
        _EVENT_ATTRIBUTES,
    )


def event_from_item(stored: Mapping[str, Any]) -> HistoryEvent:
    item = _unpacked(stored)
    return HistoryEvent(
        id=int(item["id"]),
        previous_event_id=int(item["previous_event_id"]),
        timestamp=datetime.fromisoformat(item["timestamp"]),
        type=EventType(item["type"]),
        state=ReleaseState(item["state"]),
        detail=_plain(item.get("detail", {})),
    )


def _mark_item(mark: UploadMark) -> dict[str, str]:
    return {"release_id": mark.release_id, "stored_at": mark.stored_at.isoformat()}


def _upload_mark(value: Mapping[str, Any]) -> UploadMark:
    return UploadMark(str(value["release_id"]), datetime.fromisoformat(str(value["stored_at"])))


def _waiting_uploads(waiting: Sequence[str], stored: Any) -> tuple[UploadMark, ...]:
    """The marks of the waiting uploads, in the line's order. They are stored as one map,
    release id -> when S3 stored it (a third of the attribute values of a list of marks, and
    every lane read and write carries the slot); slots written before that hold a list."""
    if not isinstance(stored, Mapping):
        return tuple(_upload_mark(mark) for mark in stored)
    marks = {release_id: datetime.fromisoformat(str(at)) for release_id, at in stored.items()}
    in_line = [release_id for release_id in waiting if release_id in marks]
    rest = [release_id for release_id in marks if release_id not in in_line]
    return tuple(UploadMark(release_id, marks[release_id]) for release_id in (*in_line, *rest))


def _awaiting_approval(stored: Sequence[Mapping[str, Any]]) -> tuple[ApprovalMark, ...]:
    return tuple(
        ApprovalMark(
            str(mark["release_id"]),
            datetime.fromisoformat(str(mark["expires_at"])),
            UploadMark(str(mark["release_id"]), datetime.fromisoformat(str(mark["stored_at"])))
            if mark.get("stored_at")
            else None,
        )
        for mark in stored
    )


def _approval_mark_item(mark: ApprovalMark) -> dict[str, str]:
    item = {"release_id": mark.release_id, "expires_at": mark.expires_at.isoformat()}
    if mark.upload is not None:
        item["stored_at"] = mark.upload.stored_at.isoformat()
    return item


def _slot_from_item(pipeline: str, stored: Mapping[str, Any] | None) -> PipelineSlot:
    if stored is None:
        return PipelineSlot(pipeline=pipeline)
    item = _unpacked(stored)
    waiting = tuple(item.get("waiting", []))
    return PipelineSlot(
        pipeline=pipeline,
        active=item.get("active"),
        waiting=waiting,
        last_good=item.get("last_good"),
        last_good_at=datetime.fromisoformat(str(item["last_good_at"])) if item.get("last_good_at") else None,
        newest_started=_upload_mark(item["newest_started"]) if item.get("newest_started") else None,
        waiting_uploads=_waiting_uploads(waiting, item.get("waiting_uploads", {})),
        awaiting_approval=_awaiting_approval(item.get("awaiting_approval", [])),
        version=int(item[_SLOT_VERSION] if _SLOT_VERSION in item else item[_LEGACY_VERSION]),
    )


def _without_nones(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in mapping.items() if value is not None}


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; history details hold whole numbers only."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if type(value).__name__ == "Decimal":
        return int(value)
    return value


class ReadIncomplete(RuntimeError):
    """DynamoDB kept leaving keys of a batch read unprocessed (sustained throttling): raised so
    the invocation fails and is retried later."""


class DynamoReleaseStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name
        self._request_ledger: RequestLedger | None = None
        # deployment id -> release id. A link is written once (``attribute_not_exists``) and
        # never changed or deleted, so what this container wrote or read stays true: events of
        # the same deployment, however often and in whatever order they come, need no read.
        self._links: dict[str, str] = {}
        # deployment id -> the release it carried, once this container wrote or read that release
        # in a terminal state: nothing moves a release out of one, so every later event of the
        # deployment is settled without a read.
        self._ended: dict[str, str] = {}
        # pipeline -> the head of its waiting line in the slot this container last read or wrote:
        # what a finish will most likely promote, read ahead with the lane.
        self._next_in_line: dict[str, str] = {}

    def get_release(self, release_id: str) -> Release | None:
        response = self._client.get_item(
            TableName=self._table, Key=_release_key(release_id), ConsistentRead=True
        )
        item = response.get("Item")
        return release_from_item(_deserialize(item)) if item else None

    def get_releases(self, release_ids: Sequence[str]) -> list[Release]:
        found = {
            release.id: release
            for release in map(release_from_item, self._batch_get([_release_key(i) for i in release_ids]))
        }
        return [found[release_id] for release_id in dict.fromkeys(release_ids) if release_id in found]

    def get_slot(self, pipeline: str) -> PipelineSlot:
        response = self._client.get_item(TableName=self._table, Key=_slot_key(pipeline), ConsistentRead=True)
        item = response.get("Item")
        return self._seen(_slot_from_item(pipeline, _deserialize(item) if item else None))

    def read_lane(
        self, pipeline: str, release_ids: Sequence[str], *, next_in_line: bool = False
    ) -> tuple[PipelineSlot, dict[str, Release]]:
        ahead = self._next_in_line.get(pipeline) if next_in_line else None
        slot_item: dict[str, Any] | None = None
        releases: dict[str, Release] = {}
        keys = [_slot_key(pipeline), *(_release_key(i) for i in (*release_ids, *([ahead] if ahead else [])))]
        for item in self._batch_get(keys):
            if item["pk"].startswith("PIPE#"):
                slot_item = item
            else:
                release = release_from_item(item)
                releases[release.id] = release
        self._note_ended(releases.values())
        return self._seen(_slot_from_item(pipeline, slot_item)), releases

    def _seen(self, slot: PipelineSlot) -> PipelineSlot:
        if slot.waiting:
            self._next_in_line[slot.pipeline] = slot.waiting[0]
        else:
            self._next_in_line.pop(slot.pipeline, None)
        return slot

    def _batch_get(self, keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The items that exist under these keys, strongly consistent, in any order.

        BatchGetItem takes at most 100 keys (more is a ValidationException, as are duplicates)
        and may answer part of a request, returning the rest as ``UnprocessedKeys`` when it is
        throttled or the answer passes 16 MB: those are asked again with exponential backoff,
        as AWS recommends, and a read still unanswered after that raises ``ReadIncomplete``."""
        unique = list({json.dumps(key, sort_keys=True): key for key in keys}.values())
        items: list[dict[str, Any]] = []
        for start in range(0, len(unique), _BATCH_GET_LIMIT):
            request: dict[str, Any] = {
                self._table: {"Keys": unique[start : start + _BATCH_GET_LIMIT], "ConsistentRead": True}
            }
            for attempt in range(_UNPROCESSED_RETRIES + 1):
                if attempt:
                    time.sleep(random.uniform(0, _UNPROCESSED_BACKOFF_S * 2**attempt))
                response = self._client.batch_get_item(RequestItems=request)
                items.extend(map(_deserialize, response.get("Responses", {}).get(self._table, [])))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                unread = len(request[self._table]["Keys"])
                raise ReadIncomplete(
                    f"DynamoDB left {unread} key(s) unprocessed after {_UNPROCESSED_RETRIES} retries"
                )
        return items

    def release_for_deployment(self, deployment_id: str) -> str | None:
        remembered = self._links.get(deployment_id)
        if remembered is not None:
            return remembered
        response = self._client.get_item(
            TableName=self._table, Key=_deployment_key(deployment_id), ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            return None  # not remembered: the link may be written later
        release_id = str(_deserialize(item)["release_id"])
        self._remember_link(deployment_id, release_id)
        return release_id

    def remembered_release_for_deployment(self, deployment_id: str) -> str | None:
        return self._links.get(deployment_id)

    def ended_release_for_deployment(self, deployment_id: str) -> str | None:
        return self._ended.get(deployment_id)

    def _remember_link(self, deployment_id: str, release_id: str) -> None:
        _remember(self._links, deployment_id, release_id)

    def _note_ended(self, releases: Iterable[Release]) -> None:
        for release in releases:
            if release.deployment_id is not None and release.state.is_terminal:
                _remember(self._ended, release.deployment_id, release.id)

    def history(self, release_id: str) -> list[HistoryEvent]:
        return [
            event_from_item(item)
            for item in self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :evt)",
                ExpressionAttributeValues={":pk": {"S": f"REL#{release_id}"}, ":evt": {"S": "EVT#"}},
                ConsistentRead=True,
            )
        ]

    def open_releases(self, pipeline: str) -> list[Release]:
        return [
            release_from_item(item)
            for item in self._query(
                IndexName=IN_FLIGHT_INDEX,
                KeyConditionExpression="in_flight = :pipeline",
                ExpressionAttributeValues={":pipeline": {"S": pipeline}},
            )
        ]

    def list_releases(self, pipeline: str, limit: int, before: str | None) -> list[Release]:
        # A position in the key condition instead of a caller-supplied ExclusiveStartKey: any
        # string is a valid bound, so no token can make DynamoDB refuse the query.
        condition = "pipeline = :pipeline"
        values: dict[str, Any] = {":pipeline": {"S": pipeline}}
        if before is not None:
            condition += " AND created_key < :before"
            values[":before"] = {"S": before}
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": BY_PIPELINE_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
        }
        releases: list[Release] = []
        while len(releases) < limit:
            response = self._client.query(**arguments, Limit=limit - len(releases))
            releases.extend(release_from_item(_deserialize(item)) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            arguments["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return releases

    def request_ledger(self) -> RequestLedger:
        """The API's Idempotency-Key answers in this table, through this client; built on first use
        (Powertools' idempotency is not imported at cold start)."""
        if self._request_ledger is None:
            from chalicelib.adapters.request_ledger import PowertoolsRequestLedger

            self._request_ledger = PowertoolsRequestLedger(self._client, self._table)
        return self._request_ledger

    def _query(self, **arguments: Any) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("query")
        for page in paginator.paginate(TableName=self._table, **arguments):
            for item in page.get("Items", []):
                yield _deserialize(item)

    def commit(self, change: Change) -> dict[str, Release]:
        operations = [self._put_release(release) for release in change.releases]
        by_id = {release.id: release for release in change.releases}
        for release_id, events in change.events.items():
            for event in events:
                operations.append(self._put_event(event_to_item(by_id[release_id], event)))
        if change.slot is not None:
            operations.append(self._put_slot(change.slot))
        for deployment_id, release_id in change.deployment_links.items():
            link = {"pk": f"DEP#{deployment_id}", "sk": "REL", "kind": "link", "release_id": release_id}
            operations.append(self._put_new(link))
        if not operations:
            return {}
        # Same change, same token: when botocore retries a commit whose answer was lost, DynamoDB
        # reports the first success instead of failing the retry's conditions as a conflict.
        token = hashlib.sha256(json.dumps(operations, sort_keys=True).encode()).hexdigest()[:36]
        try:
            self._client.transact_write_items(TransactItems=operations, ClientRequestToken=token)
        except ClientError as error:
            if _is_conflict(error):
                raise WriteConflict(str(error)) from error
            raise
        for deployment_id, release_id in change.deployment_links.items():
            self._remember_link(deployment_id, release_id)
        self._note_ended(change.releases)
        if change.slot is not None:
            self._seen(change.slot)
        # Each release was written at the version it was read at plus one.
        return {release.id: replace(release, version=release.version + 1) for release in change.releases}

    def _put_release(self, release: Release) -> dict[str, Any]:
        stored = {**release_to_item(release), "version": release.version + 1}
        if release.version == 0:
            return self._put_new(stored)
        return self._put_versioned(stored, release.version)

    def _put_slot(self, slot: PipelineSlot) -> dict[str, Any]:
        stored = {
            "pk": f"PIPE#{slot.pipeline}",
            "sk": "SLOT",
            "active": slot.active,
            # Empty lists and maps are left out (most slots have no line): fewer values to carry.
            "waiting": list(slot.waiting) or None,
            "last_good": slot.last_good,
            "last_good_at": slot.last_good_at.isoformat() if slot.last_good_at else None,
            "newest_started": _mark_item(slot.newest_started) if slot.newest_started else None,
            "waiting_uploads": {mark.release_id: mark.stored_at.isoformat() for mark in slot.waiting_uploads}
            or None,
            "awaiting_approval": [_approval_mark_item(mark) for mark in slot.awaiting_approval] or None,
            _SLOT_VERSION: slot.version + 1,
        }
        item = _packed(stored, _SLOT_ATTRIBUTES)
        if slot.version == 0:
            return self._put_new(item)
        # Whichever layout the slot was read in: a packed slot has only ``slot_version``, one
        # written before only ``version`` (a Put replaces the whole item, so never both).
        return self._put_versioned(item, slot.version, _SLOT_VERSION, _LEGACY_VERSION)

    def _put_event(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """A history event needs no condition of its own: it is numbered after the release's
        ``last_event_id`` and written only together with the release, whose put is conditional
        on the version that id was read at, so an event id this write may use was never used.
        (Each condition is one more expression DynamoDB evaluates; moto parses it twice.)"""
        return {"Put": {"TableName": self._table, "Item": _serialize(item)}}

    def _put_new(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self._table,
                "Item": _serialize(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _put_versioned(
        self, item: Mapping[str, Any], expected: int, *version_attributes: str
    ) -> dict[str, Any]:
        """A Put conditional on the item's version (``version`` unless named; with several names,
        on whichever of them the stored item has)."""
        names = {f"#v{index}": name for index, name in enumerate(version_attributes or ("version",))}
        return {
            "Put": {
                "TableName": self._table,
                "Item": _serialize(item),
                "ConditionExpression": " OR ".join(f"{name} = :expected" for name in names),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {":expected": {"N": str(expected)}},
            }
        }


def _remember(memory: dict[str, str], deployment_id: str, release_id: str) -> None:
    if len(memory) >= _REMEMBERED_DEPLOYMENTS:
        del memory[next(iter(memory))]  # the oldest: dicts keep insertion order
    memory[deployment_id] = release_id


def _is_conflict(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code")
    if code == "ConditionalCheckFailedException":
        return True
    if code != "TransactionCanceledException":
        return False
    reasons = error.response.get("CancellationReasons", [])
    return any(reason.get("Code") in _CONFLICT_CODES for reason in reasons)

"""The lane is read in one strongly consistent BatchGetItem (the slot and the command's releases),
on moto; DynamoDB's partial answers (``UnprocessedKeys``) and its 100-key limit are handled."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from chalicelib.adapters.dynamodb_store import DynamoReleaseStore, ReadIncomplete
from chalicelib.domain.lane import Change
from chalicelib.domain.release import (
    EventType,
    HistoryEvent,
    Release,
    ReleaseState,
    Revision,
    Trigger,
    new_release,
)
from chalicelib.domain.slot import PipelineSlot, UploadMark
from chalicelib.service.ports import WriteConflict
from tests.integration.conftest import TABLE, World

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _release(release_id: str) -> Release:
    revision = Revision("acme-artifacts", f"api/prod/{release_id}.zip", "v1", None)
    return new_release(
        release_id=release_id,
        pipeline="api-prod",
        application="api",
        deployment_group="api-prod",
        revision=revision,
        trigger=Trigger.API,
        now=NOW,
    ).release


def _unprocessed(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
    """DynamoDB under throttling: nothing read, every key handed back as ``UnprocessedKeys``
    (a ``before-call`` answer replaces the request)."""
    answer = {"Responses": {}, "UnprocessedKeys": json.loads(params["body"])["RequestItems"]}
    return AWSResponse(params["url"], 200, {}, None), answer


@pytest.fixture
def store(world: World) -> tuple[DynamoReleaseStore, list[dict[str, Any]]]:
    """A store whose client records each BatchGetItem request's keys."""
    client = world.session.client("dynamodb")
    requests: list[dict[str, Any]] = []

    def note(params: dict[str, Any], **_: Any) -> None:
        requests.append(params["RequestItems"][TABLE])

    client.meta.events.register("before-parameter-build.dynamodb.BatchGetItem", note)
    return DynamoReleaseStore(client, TABLE), requests


def test_the_slot_and_the_subjects_come_in_one_consistent_read(
    store: tuple[DynamoReleaseStore, list[dict[str, Any]]],
) -> None:
    releases, requests = store
    stored = releases.commit(Change(releases=[_release("r1")], slot=PipelineSlot("api-prod", active="r1")))

    slot, found = releases.read_lane("api-prod", ["r1", "missing"])

    assert (slot.active, slot.version) == ("r1", 1)
    assert found == {"r1": stored["r1"]}
    assert stored["r1"].version == 1  # the commit answers with the versions it wrote
    assert len(requests) == 1
    assert requests[0]["ConsistentRead"] is True
    assert len(requests[0]["Keys"]) == 3


def test_the_waiting_uploads_come_back_in_the_line_s_order(
    store: tuple[DynamoReleaseStore, list[dict[str, Any]]],
) -> None:
    """Marks are kept in the order they came (a late upload is put in line ahead of those S3
    stored after it) and stored as one map; they read back in the line's order."""
    releases, _ = store
    mark = {n: UploadMark(f"u{n}", NOW.replace(second=n)) for n in (1, 2, 3)}
    slot = PipelineSlot(
        "api-prod",
        active="r1",
        waiting=("api", "u1", "u2", "u3"),
        waiting_uploads=(mark[2], mark[3], mark[1]),
    )
    releases.commit(Change(slot=slot))

    read = releases.get_slot("api-prod")

    assert read.waiting_uploads == (mark[1], mark[2], mark[3])
    assert (read.active, read.waiting, read.version) == ("r1", slot.waiting, 1)


def test_a_slot_written_with_a_list_of_marks_still_reads(world: World) -> None:
    """Slots written before the marks became one map hold a list of {release_id, stored_at}."""
    client = world.session.client("dynamodb")
    client.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": "PIPE#api-prod"},
            "sk": {"S": "SLOT"},
            "waiting": {"L": [{"S": "u2"}, {"S": "u1"}]},
            "waiting_uploads": {
                "L": [
                    {
                        "M": {
                            "release_id": {"S": f"u{n}"},
                            "stored_at": {"S": NOW.replace(second=n).isoformat()},
                        }
                    }
                    for n in (2, 1)
                ]
            },
            "version": {"N": "4"},
        },
    )

    slot = DynamoReleaseStore(client, TABLE).get_slot("api-prod")

    assert slot.waiting_uploads == (
        UploadMark("u2", NOW.replace(second=2)),
        UploadMark("u1", NOW.replace(second=1)),
    )
    assert (slot.waiting, slot.version) == (("u2", "u1"), 4)


def test_a_packed_slot_has_no_version_so_coordinators_before_it_fail_on_it_instead_of_reading_it_free(
    world: World, store: tuple[DynamoReleaseStore, list[dict[str, Any]]]
) -> None:
    """Coordinators before the packed slot read ``waiting`` and ``active`` as attributes and
    require ``version`` (``int(item["version"])``): without it they raise before deciding, and
    their event is retried, instead of taking a busy slot with an empty line for a free one."""
    releases, _ = store
    releases.commit(Change(slot=PipelineSlot("api-prod", active="r1", waiting=("u1",))))
    item = world.session.client("dynamodb").get_item(
        TableName=TABLE, Key={"pk": {"S": "PIPE#api-prod"}, "sk": {"S": "SLOT"}}
    )["Item"]

    assert "version" not in item
    assert not {"active", "waiting"} & set(item)
    assert item["slot_version"] == {"N": "1"}


def test_a_slot_written_before_the_packed_layout_reads_and_is_written_over_at_its_version(
    world: World, store: tuple[DynamoReleaseStore, list[dict[str, Any]]]
) -> None:
    client = world.session.client("dynamodb")
    client.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": "PIPE#api-prod"},
            "sk": {"S": "SLOT"},
            "active": {"S": "r1"},
            "waiting": {"L": [{"S": "u1"}]},
            "version": {"N": "7"},
        },
    )
    releases, _ = store

    read = releases.get_slot("api-prod")
    assert (read.active, read.waiting, read.version) == ("r1", ("u1",), 7)
    with pytest.raises(WriteConflict):  # a copy read at another version loses
        releases.commit(Change(slot=replace(read, version=6, active=None)))
    releases.commit(Change(slot=replace(read, active="u1", waiting=())))

    written = releases.get_slot("api-prod")
    assert (written.active, written.waiting, written.version) == ("u1", (), 8)
    with pytest.raises(WriteConflict):  # the packed slot's version is the one compared now
        releases.commit(Change(slot=replace(read, active=None)))
    releases.commit(Change(slot=replace(written, active=None)))
    assert releases.get_slot("api-prod").version == 9


def test_keys_dynamodb_left_unprocessed_are_asked_again(
    world: World, store: tuple[DynamoReleaseStore, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    releases, requests = store
    releases.commit(Change(releases=[_release("r1"), _release("r2")]))
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    throttled = [True]

    def unprocessed_once(params: dict[str, Any], **kwargs: Any) -> Any:
        return _unprocessed(params, **kwargs) if throttled and throttled.pop() else None

    client = world.session.client("dynamodb")
    client.meta.events.register("before-call.dynamodb.BatchGetItem", unprocessed_once)

    slot, found = DynamoReleaseStore(client, TABLE).read_lane("api-prod", ["r1", "r2"])

    assert sorted(found) == ["r1", "r2"]
    assert slot.version == 0
    assert not throttled
    assert requests == []  # the recording client was not the one read through


def test_a_read_still_unprocessed_after_the_retries_fails_loudly(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    client = world.session.client("dynamodb")
    client.meta.events.register("before-call.dynamodb.BatchGetItem", _unprocessed)

    with pytest.raises(ReadIncomplete, match="1 key"):
        DynamoReleaseStore(client, TABLE).read_lane("api-prod", [])


def test_more_than_a_hundred_releases_are_read_in_requests_of_at_most_a_hundred_keys(
    store: tuple[DynamoReleaseStore, list[dict[str, Any]]],
) -> None:
    releases, requests = store
    ids = [f"r{number:03d}" for number in range(150)]
    for start in range(0, len(ids), 50):
        releases.commit(Change(releases=[_release(release_id) for release_id in ids[start : start + 50]]))

    found = releases.get_releases([*ids, ids[0]])  # a repeated id is asked for once

    assert [release.id for release in found] == ids
    assert [len(request["Keys"]) for request in requests] == [100, 50]


def test_releases_and_events_carry_their_keys_index_keys_and_version_as_attributes_and_the_rest_as_one_body(
    world: World, store: tuple[DynamoReleaseStore, list[dict[str, Any]]]
) -> None:
    """Every attribute value costs each read and write (de)serializing it: a release and its
    history event keep what DynamoDB and the stream read, the rest is one JSON string; so does
    the slot, whose version is ``slot_version`` (see the two tests of the slot's layout above)."""
    releases, _ = store
    mark = UploadMark("u1", NOW)
    release = replace(_release("r1"), metadata={"author": "ci"})
    event = HistoryEvent(1, 0, NOW, EventType.EXECUTION_STARTED, release.state, {"by": "ci"})
    releases.commit(
        Change(
            releases=[release],
            events={"r1": [event]},
            slot=PipelineSlot("api-prod", active="r1", waiting=("u1",), waiting_uploads=(mark,)),
        )
    )
    client = world.session.client("dynamodb")

    def attributes(pk: str, sk: str) -> set[str]:
        item = client.get_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}})["Item"]
        return set(item)

    assert attributes("REL#r1", "META") == {
        "pk", "sk", "id", "pipeline", "state", "created_key", "in_flight", "version", "body"
    }  # fmt: skip
    assert attributes("REL#r1", "EVT#000001") == {
        "pk", "sk", "kind", "release_id", "event_pipeline", "release_trigger", "state", "body"
    }  # fmt: skip
    assert attributes("PIPE#api-prod", "SLOT") == {"pk", "sk", "slot_version", "body"}
    slot, found = releases.read_lane("api-prod", ["r1"])
    assert found["r1"] == replace(release, version=1)
    assert (slot.active, slot.waiting, slot.waiting_uploads) == ("r1", ("u1",), (mark,))
    assert releases.history("r1") == [event]


def test_a_release_written_with_every_attribute_on_its_own_still_reads(world: World) -> None:
    """Releases written before the body hold each attribute as an attribute of the item."""
    client = world.session.client("dynamodb")
    client.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": "REL#r1"},
            "sk": {"S": "META"},
            "id": {"S": "r1"},
            "pipeline": {"S": "api-prod"},
            "application": {"S": "api"},
            "deployment_group": {"S": "api-prod"},
            "revision": {"M": {"bucket": {"S": "acme-artifacts"}, "key": {"S": "api/prod/r1.zip"}}},
            "trigger": {"S": "api"},
            "state": {"S": "SUCCEEDED"},
            "deployment_id": {"S": "d-1"},
            "metadata": {"M": {"author": {"S": "ci"}}},
            "created_at": {"S": NOW.isoformat()},
            "updated_at": {"S": NOW.isoformat()},
            "version": {"N": "3"},
            "last_event_id": {"N": "5"},
        },
    )

    [release] = DynamoReleaseStore(client, TABLE).get_releases(["r1"])

    assert (release.state, release.deployment_id, release.revision.key) == (
        ReleaseState.SUCCEEDED,
        "d-1",
        "api/prod/r1.zip",
    )
    assert (release.metadata, release.version, release.last_event_id) == ({"author": "ci"}, 3, 5)

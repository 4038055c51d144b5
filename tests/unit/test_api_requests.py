"""Request checks of the API (pure): bodies, queries, cursors, idempotency fingerprints."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.api_requests import (
    DeployRequest,
    InvalidValue,
    ListQuery,
    Malformed,
    Refused,
    TooLarge,
    decode_cursor,
    derived_release_id,
    encode_cursor,
    parse_body,
    request_fingerprint,
)
from chalicelib.domain.release import Release, ReleaseState, Revision, Trigger, new_release
from chalicelib.http_api import REFUSALS

created_keys = st.builds(
    lambda when, release_id: f"{when.isoformat()}#{release_id}",
    st.datetimes(timezones=st.just(UTC)),
    st.from_regex(r"(rel|api|ext|rb-rel)-[a-z0-9]{1,20}", fullmatch=True),
)


@given(created_keys)
def test_a_cursor_decodes_to_the_position_it_encodes(created_key: str) -> None:
    assert decode_cursor(encode_cursor(created_key)) == created_key


@given(st.text(max_size=600))
def test_any_other_token_is_malformed_or_a_valid_position(token: str) -> None:
    try:
        position = decode_cursor(token)
    except Malformed:
        return
    assert decode_cursor(encode_cursor(position)) == position


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_body_parses_or_is_refused_with_an_api_error(raw: bytes) -> None:
    # Anything else escaping (a ValueError, a RecursionError) would be a 500.
    with contextlib.suppress(Refused):
        parse_body(raw, DeployRequest.FIELDS)


def test_every_kind_of_refusal_is_answered_with_a_4xx() -> None:
    kinds = set(Refused.__subclasses__())
    assert kinds == set(REFUSALS)
    assert all(400 <= status < 500 for status, _ in REFUSALS.values())


def test_body_limits_and_shapes() -> None:
    assert parse_body(None, frozenset()) == {}
    assert parse_body(b"  \n", frozenset()) == {}
    with pytest.raises(TooLarge):
        parse_body(b" " * 20_000, frozenset())
    with pytest.raises(Malformed, match="twice"):
        parse_body(b'{"a": 1, "a": 2}', frozenset({"a"}))
    with pytest.raises(Malformed, match="not valid JSON"):
        parse_body(b'{"a": Infinity}', frozenset({"a"}))
    with pytest.raises(Malformed, match="not valid JSON"):
        parse_body(b"[" * 8_000 + b"]" * 8_000, frozenset())
    with pytest.raises(InvalidValue, match="unknown field"):
        parse_body(b'{"b": 1}', frozenset({"a"}))


def test_list_query() -> None:
    assert ListQuery.from_params({}) == ListQuery(pipeline=None, limit=20, before=None)
    position = f"{datetime(2026, 1, 2, tzinfo=UTC).isoformat()}#rel-1"
    query = ListQuery.from_params(
        {"pipeline": ["api-prod"], "limit": ["5"], "next": [encode_cursor(position)]}
    )
    assert query == ListQuery(pipeline="api-prod", limit=5, before=position)
    with pytest.raises(Malformed):
        ListQuery.from_params({"limit": ["١٢"]})  # digits, but not ASCII ones


def test_list_query_filters_by_state_and_trigger() -> None:
    query = ListQuery.from_params({"state": ["FAILED"], "trigger": ["upload,api"]})
    assert query.states == {ReleaseState.FAILED}
    assert query.triggers == {Trigger.UPLOAD, Trigger.API}
    several = ListQuery.from_params({"state": ["FAILED,STOPPED,FAILED"]})
    assert several.states == {ReleaseState.FAILED, ReleaseState.STOPPED}
    assert several.triggers == frozenset()
    # Spaces around a value, as `state=FAILED, STOPPED` sends them, are not part of it.
    assert ListQuery.from_params({"state": [" FAILED, STOPPED "]}).states == several.states

    failed_upload = _release(ReleaseState.FAILED, Trigger.UPLOAD)
    assert query.matches(failed_upload)
    assert several.matches(failed_upload)
    assert not query.matches(_release(ReleaseState.FAILED, Trigger.ROLLBACK))
    assert not query.matches(_release(ReleaseState.SUCCEEDED, Trigger.UPLOAD))
    assert ListQuery.from_params({}).matches(_release(ReleaseState.SUCCEEDED, Trigger.ROLLBACK))


@pytest.mark.parametrize(
    ("params", "says"),
    [
        (
            {"state": ["BROKEN"]},
            "query parameter 'state' has an unknown value 'BROKEN'; allowed (case matters): RECEIVED, ",
        ),
        ({"state": ["failed"]}, "unknown value 'failed'"),  # the values are spelled as the API writes them
        (
            {"trigger": ["upload,push"]},
            "'trigger' has an unknown value 'push'; allowed (case matters): upload, api, rollback, ",
        ),
        ({"state": [""]}, "query parameter 'state' has an empty value"),
        ({"trigger": ["api,"]}, "query parameter 'trigger' has an empty value; give one or more of upload, "),
        ({"state": ["FAILED", "STOPPED"]}, "query parameter 'state' must be given once"),
    ],
)
def test_list_query_refuses_unknown_empty_and_repeated_filters(
    params: dict[str, list[str]], says: str
) -> None:
    with pytest.raises(Malformed) as refused:
        ListQuery.from_params(params)
    assert says in str(refused.value)
    if "unknown" in says:
        allowed = ReleaseState if "state" in params else Trigger
        assert all(member.value in str(refused.value) for member in allowed)


def _release(state: ReleaseState, trigger: Trigger) -> Release:
    revision = Revision("acme-artifacts", "api/prod/app.zip", "v1", None)
    now = datetime(2026, 1, 2, tzinfo=UTC)
    release = new_release(
        release_id="rel-1",
        pipeline="api-prod",
        application="api",
        deployment_group="api-prod",
        revision=revision,
        trigger=trigger,
        now=now,
    ).release
    return replace(release, state=state)


def test_the_fingerprint_ignores_spelling_but_not_content() -> None:
    first = request_fingerprint("POST", "/releases", {"pipeline": "a", "key": "k.zip"})
    assert first == request_fingerprint("POST", "/releases", {"key": "k.zip", "pipeline": "a"})
    assert first != request_fingerprint("POST", "/releases", {"pipeline": "a", "key": "j.zip"})
    assert first != request_fingerprint("POST", "/pipelines/a/rollback", {"pipeline": "a", "key": "k.zip"})


def test_release_ids_follow_the_idempotency_key() -> None:
    assert derived_release_id("key", "f", "fresh1") == derived_release_id("key", "f", "fresh2")
    assert derived_release_id("key", "f", "x") != derived_release_id("other", "f", "x")
    assert derived_release_id(None, "f", "abc") == "api-abc"

"""Every cell of the transition table (docs/states.md, which began as DESIGN.md section 3),
allowed and not; the table in the docs and the code agree."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.domain.release import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATES,
    EventType,
    Refused,
    Release,
    ReleaseState,
    Revision,
    Step,
    Trigger,
    new_release,
    record,
    transition,
    upload_release_id,
)

S = ReleaseState
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# The table, written out cell by cell so that a change to the code must change this too.
EXPECTED_ALLOWED = {
    (S.RECEIVED, S.AWAITING_APPROVAL),  # the pipeline requires approval
    (S.AWAITING_APPROVAL, S.QUEUED),  # approved, the slot busy or a freeze on
    (S.AWAITING_APPROVAL, S.DEPLOYING),  # approved, the slot free
    (S.AWAITING_APPROVAL, S.FAILED),  # approved while an alarm is in ALARM (alarm_at_start = fail)
    (S.QUEUED, S.FAILED),  # its turn came while an alarm is in ALARM (alarm_at_start = fail)
    (S.AWAITING_APPROVAL, S.STOPPED),  # rejected, cancelled, or the approval expired
    (S.AWAITING_APPROVAL, S.SUPERSEDED),  # a newer release awaits approval in its place
    (S.RECEIVED, S.QUEUED),
    (S.RECEIVED, S.DEPLOYING),
    (S.RECEIVED, S.FAILED),
    (S.RECEIVED, S.SUPERSEDED),  # an upload S3 stored before one the pipeline already took
    (S.QUEUED, S.DEPLOYING),
    (S.QUEUED, S.STOPPED),
    (S.QUEUED, S.SUPERSEDED),
    (S.DEPLOYING, S.VERIFYING),
    (S.DEPLOYING, S.SUCCEEDED),
    (S.DEPLOYING, S.FAILED),
    (S.DEPLOYING, S.STOPPED),
    (S.VERIFYING, S.SUCCEEDED),
    (S.VERIFYING, S.FAILED),
    (S.VERIFYING, S.STOPPED),
}


STATES_DOC = Path(__file__).resolve().parents[2] / "docs" / "states.md"


def documented_transitions() -> set[tuple[ReleaseState, ReleaseState]]:
    """The cells of docs/states.md's table that say what causes the move."""
    rows = [line for line in STATES_DOC.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    header, *body = rows
    targets = [ReleaseState(name.strip()) for name in header.strip("|").split("|")[1:]]
    cells = set()
    for row in body:
        source, *causes = (cell.strip() for cell in row.strip("|").split("|"))
        cells |= {
            (ReleaseState(source), target) for target, cause in zip(targets, causes, strict=True) if cause
        }
    return cells


def test_the_documented_table_is_the_codes() -> None:
    assert documented_transitions() == EXPECTED_ALLOWED
    assert {(source, target) for source, targets in ALLOWED_TRANSITIONS.items() for target in targets} == (
        EXPECTED_ALLOWED
    )


def release_in(state: ReleaseState) -> Step:
    step = new_release(
        release_id="rel-1",
        pipeline="api-prod",
        application="api",
        deployment_group="api-prod",
        revision=Revision("bucket", "api/prod/a.zip", "v1", "etag"),
        trigger=Trigger.UPLOAD,
        now=NOW,
    )
    return Step(replace(step.release, state=state), ())


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_cell_of_the_transition_table(current: ReleaseState, target: ReleaseState) -> None:
    result = transition(release_in(current), target, now=NOW + timedelta(seconds=1), reason="because")

    if (current, target) in EXPECTED_ALLOWED:
        assert not isinstance(result, Refused)
        assert result.release.state is target
        assert result.release.reason == "because"
        [event] = result.events
        assert event.state is target
        assert event.detail["from"] == current.value
    else:
        assert isinstance(result, Refused)
        assert "is not a transition; ignored" in result.message


def test_table_in_code_matches_the_design() -> None:
    in_code = {(source, target) for source, targets in ALLOWED_TRANSITIONS.items() for target in targets}
    assert in_code == EXPECTED_ALLOWED


def test_terminal_states_have_no_way_out() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.STOPPED, S.SUPERSEDED} == TERMINAL_STATES
    for state in TERMINAL_STATES:
        assert state.is_terminal
        assert state not in ALLOWED_TRANSITIONS


@pytest.mark.parametrize(
    ("target", "event_type"),
    [
        (S.QUEUED, EventType.STATE_ENTERED),
        (S.DEPLOYING, EventType.STATE_ENTERED),
        (S.FAILED, EventType.EXECUTION_FAILED),
    ],
)
def test_history_events_are_typed_after_step_functions(target: ReleaseState, event_type: EventType) -> None:
    result = transition(release_in(S.RECEIVED), target, now=NOW, reason="r")
    assert not isinstance(result, Refused)
    assert result.events[0].type is event_type


def test_history_is_numbered_and_linked() -> None:
    started = new_release(
        release_id="rel-1",
        pipeline="p",
        application="a",
        deployment_group="g",
        revision=Revision("b", "k.zip", None, "e"),
        trigger=Trigger.API,
        now=NOW,
        actor="arn:aws:iam::1:user/ana",
    )
    queued = transition(started, S.QUEUED, now=NOW, reason="busy")
    assert not isinstance(queued, Refused)
    deploying = transition(queued, S.DEPLOYING, now=NOW, reason="free")
    assert not isinstance(deploying, Refused)
    noted = record(deploying, EventType.TASK_STARTED, now=NOW, detail={"deployment_id": "d-1"})
    succeeded = transition(noted, S.SUCCEEDED, now=NOW, reason="ok")
    assert not isinstance(succeeded, Refused)

    events = succeeded.events
    assert [e.id for e in events] == [1, 2, 3, 4, 5]
    assert [e.previous_event_id for e in events] == [0, 1, 2, 3, 4]
    assert [e.type for e in events] == [
        EventType.EXECUTION_STARTED,
        EventType.STATE_ENTERED,
        EventType.STATE_ENTERED,
        EventType.TASK_STARTED,
        EventType.EXECUTION_SUCCEEDED,
    ]
    assert events[0].detail["actor"] == "arn:aws:iam::1:user/ana"
    assert succeeded.release.last_event_id == 5


def test_upload_release_id_is_stable_and_distinguishes_versions() -> None:
    first = Revision("b", "api/prod/a.zip", "v1", "e1")
    assert upload_release_id(first) == upload_release_id(Revision("b", "api/prod/a.zip", "v1", "other-etag"))
    assert upload_release_id(first) != upload_release_id(Revision("b", "api/prod/a.zip", "v2", "e1"))
    # Unversioned buckets: the eTag tells two uploads of one key apart.
    assert upload_release_id(Revision("b", "k.zip", None, "e1")) != upload_release_id(
        Revision("b", "k.zip", None, "e2")
    )


@pytest.mark.parametrize(
    ("key", "bundle_type"),
    [
        ("a.zip", "zip"),
        ("a.ZIP", "zip"),
        ("a.tar", "tar"),
        ("a.tar.gz", "tgz"),
        ("a.tgz", "tgz"),
        ("a.txt", None),
    ],
)
def test_bundle_type_from_the_extension(key: str, bundle_type: str | None) -> None:
    assert Revision("b", key, None, None).bundle_type == bundle_type


def test_release_json_has_the_contract_fields() -> None:
    release: Release = release_in(S.QUEUED).release
    assert {
        "id",
        "pipeline",
        "application",
        "deployment_group",
        "state",
        "reason",
        "deployment_id",
        "revision",
        "trigger",
        "rollback_of",
        "created_at",
        "updated_at",
    } <= set(release.to_dict())
    assert set(release.to_dict()["revision"]) == {"bucket", "key", "version", "etag"}

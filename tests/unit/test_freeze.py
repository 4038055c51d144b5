"""Freeze windows (chalicelib/domain/freeze.py): recurrence in local time across both daylight
saving changes, one-off windows, UNTIL and COUNT, overlapping windows, and properties of
``current_freeze`` and ``next_freeze`` over generated windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.freeze import (
    CHAIN_HORIZON,
    Freeze,
    FreezeWindow,
    FreezeWindowError,
    current_freeze,
    next_freeze,
)

BERLIN = ZoneInfo("Europe/Berlin")
# Every Friday 16:00 to Monday 08:00 Berlin time, from Friday 21 March 2025. Berlin moved to
# summer time on Sunday 30 March 2025 (02:00 -> 03:00) and back on Sunday 26 October 2025
# (03:00 -> 02:00): both changes fall inside a weekend freeze.
WEEKEND = FreezeWindow.recurring(
    "weekend", "Europe/Berlin", datetime(2025, 3, 21, 16), "FREQ=WEEKLY;BYDAY=FR", timedelta(hours=64)
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def span(freeze: Freeze | None) -> tuple[datetime, datetime] | None:
    return None if freeze is None else (freeze.starts_at, freeze.ends_at)


def local(moment: datetime) -> str:
    return moment.astimezone(BERLIN).strftime("%a %H:%M %Z")


def test_weekend_across_the_spring_change_keeps_local_times() -> None:
    freeze = current_freeze([WEEKEND], utc(2025, 3, 29, 12))
    assert span(freeze) == (utc(2025, 3, 28, 15), utc(2025, 3, 31, 6))
    assert freeze is not None
    assert freeze.reason == "weekend"
    assert (local(freeze.starts_at), local(freeze.ends_at)) == ("Fri 16:00 CET", "Mon 08:00 CEST")
    upcoming = next_freeze([WEEKEND], utc(2025, 3, 29, 12))
    assert span(upcoming) == (utc(2025, 4, 4, 14), utc(2025, 4, 7, 6))
    assert upcoming is not None
    assert local(upcoming.starts_at) == "Fri 16:00 CEST"


def test_weekend_across_the_autumn_change_keeps_local_times() -> None:
    freeze = current_freeze([WEEKEND], utc(2025, 10, 26, 1, 30))
    assert span(freeze) == (utc(2025, 10, 24, 14), utc(2025, 10, 27, 7))
    assert freeze is not None
    assert (local(freeze.starts_at), local(freeze.ends_at)) == ("Fri 16:00 CEST", "Mon 08:00 CET")
    upcoming = next_freeze([WEEKEND], utc(2025, 10, 27, 7))
    assert upcoming is not None
    assert local(upcoming.starts_at) == "Fri 16:00 CET"
    assert upcoming.starts_at == utc(2025, 10, 31, 15)


def test_the_freeze_ends_at_its_end_and_not_before() -> None:
    end = utc(2025, 3, 31, 6)
    assert current_freeze([WEEKEND], end - timedelta(microseconds=1)) is not None
    assert current_freeze([WEEKEND], end) is None
    assert current_freeze([WEEKEND], utc(2025, 3, 28, 15)) is not None
    assert current_freeze([WEEKEND], utc(2025, 3, 28, 15) - timedelta(microseconds=1)) is None


def test_a_start_in_the_spring_gap_is_read_with_the_offset_before_it() -> None:
    # 02:30 does not exist in Berlin on 30 March 2025: RFC 5545 reads it as 03:30 summer time,
    # and the occurrence keeps its hour.
    nightly = FreezeWindow.recurring(
        "backup", "Europe/Berlin", datetime(2025, 3, 28, 2, 30), "FREQ=DAILY", timedelta(hours=1)
    )
    starts = [o.starts_at for o in nightly.occurrences(utc(2025, 3, 28), utc(2025, 4, 1))]
    assert [local(start) for start in starts] == [
        "Fri 02:30 CET",
        "Sat 02:30 CET",
        "Sun 03:30 CEST",
        "Mon 02:30 CEST",
    ]
    assert span(current_freeze([nightly], utc(2025, 3, 30, 1, 45))) == (
        utc(2025, 3, 30, 1, 30),
        utc(2025, 3, 30, 2, 30),
    )


def test_a_start_in_the_autumn_overlap_is_its_first_occurrence() -> None:
    # 02:30 happens twice in Berlin on 26 October 2025: the first one, in summer time. An hour of
    # wall clock from there ends at 03:30 winter time, two hours later.
    nightly = FreezeWindow.recurring(
        "backup", "Europe/Berlin", datetime(2025, 10, 25, 2, 30), "FREQ=DAILY", timedelta(hours=1)
    )
    freeze = current_freeze([nightly], utc(2025, 10, 26, 1))
    assert span(freeze) == (utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 2, 30))
    assert freeze is not None
    assert local(freeze.ends_at) == "Sun 03:30 CET"


def test_one_off_window() -> None:
    holidays = FreezeWindow.one_off(
        "holidays", "America/New_York", datetime(2025, 12, 24), datetime(2026, 1, 2, 9)
    )
    assert current_freeze([holidays], utc(2025, 12, 24, 4, 59)) is None
    assert span(current_freeze([holidays], utc(2025, 12, 30))) == (utc(2025, 12, 24, 5), utc(2026, 1, 2, 14))
    assert span(next_freeze([holidays], utc(2025, 12, 1))) == (utc(2025, 12, 24, 5), utc(2026, 1, 2, 14))
    assert next_freeze([holidays], utc(2025, 12, 30)) is None
    assert current_freeze([holidays], utc(2026, 1, 2, 14)) is None


def test_until_ends_the_recurrence_in_local_time() -> None:
    # UNTIL is local time like the start: the last Friday is 4 April.
    fridays = FreezeWindow.recurring(
        "audit",
        "Europe/Berlin",
        datetime(2025, 3, 21, 16),
        "FREQ=WEEKLY;UNTIL=20250404T160000",
        timedelta(hours=2),
    )
    assert span(next_freeze([fridays], utc(2025, 4, 1))) == (utc(2025, 4, 4, 14), utc(2025, 4, 4, 16))
    assert next_freeze([fridays], utc(2025, 4, 4, 15)) is None


def test_count_limits_the_occurrences() -> None:
    twice = FreezeWindow.recurring(
        "migration", "UTC", datetime(2025, 6, 2, 22), "RRULE:FREQ=DAILY;COUNT=2", timedelta(hours=3)
    )
    assert [span(o) for o in twice.occurrences(utc(2025, 6, 1), utc(2025, 7, 1))] == [
        (utc(2025, 6, 2, 22), utc(2025, 6, 3, 1)),
        (utc(2025, 6, 3, 22), utc(2025, 6, 4, 1)),
    ]
    assert next_freeze([twice], utc(2025, 6, 3, 23)) is None


def test_overlapping_windows_freeze_until_the_end_of_the_chain() -> None:
    # Windows covering each other in a chain, touching at 12:00, then a gap before 20:00.
    morning = FreezeWindow.one_off("morning", "UTC", datetime(2025, 5, 1, 8), datetime(2025, 5, 1, 10))
    longer = FreezeWindow.one_off("longer", "UTC", datetime(2025, 5, 1, 9), datetime(2025, 5, 1, 11))
    touching = FreezeWindow.one_off("touching", "UTC", datetime(2025, 5, 1, 10, 30), datetime(2025, 5, 1, 12))
    next_day = FreezeWindow.one_off("after noon", "UTC", datetime(2025, 5, 1, 12), datetime(2025, 5, 1, 13))
    evening = FreezeWindow.one_off("evening", "UTC", datetime(2025, 5, 1, 20), datetime(2025, 5, 1, 21))
    windows = [morning, longer, touching, next_day, evening]
    freeze = current_freeze(windows, utc(2025, 5, 1, 9, 30))
    # The covering window that ends last gives the reason; the chain gives the end.
    assert freeze is not None
    assert freeze.reason == "longer"
    assert span(freeze) == (utc(2025, 5, 1, 9), utc(2025, 5, 1, 13))
    upcoming = next_freeze(windows, utc(2025, 5, 1, 9, 30))
    assert upcoming is not None
    assert upcoming.reason == "evening"
    assert span(next_freeze(windows, utc(2025, 5, 1, 7))) == (utc(2025, 5, 1, 8), utc(2025, 5, 1, 13))


def test_no_window_no_freeze() -> None:
    assert current_freeze([], utc(2025, 1, 1)) is None
    assert next_freeze([], utc(2025, 1, 1)) is None


def test_times_without_a_zone_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        current_freeze([WEEKEND], datetime(2025, 3, 29, 12))


def test_other_zones_come_out_in_utc() -> None:
    freeze = current_freeze([WEEKEND], datetime(2025, 3, 29, 13, tzinfo=BERLIN))
    assert freeze is not None
    assert freeze.starts_at.tzinfo is UTC
    assert freeze.ends_at.tzinfo is UTC
    assert freeze.to_dict() == {
        "reason": "weekend",
        "starts_at": "2025-03-28T15:00:00+00:00",
        "ends_at": "2025-03-31T06:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("build", "key", "message"),
    [
        (
            lambda: FreezeWindow.one_off("r", "Europe/Berln", datetime(2025, 1, 1), datetime(2025, 1, 2)),
            "timezone",
            "unknown IANA time zone 'Europe/Berln'",
        ),
        (
            lambda: FreezeWindow.one_off("r", "../etc/passwd", datetime(2025, 1, 1), datetime(2025, 1, 2)),
            "timezone",
            "unknown IANA time zone",
        ),
        (
            lambda: FreezeWindow.one_off("r", "UTC", datetime(2025, 1, 2), datetime(2025, 1, 1)),
            "end",
            "is not after start",
        ),
        (
            lambda: FreezeWindow.one_off("r", "UTC", datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2)),
            "start",
            "without an offset",
        ),
        (
            lambda: FreezeWindow.recurring(
                "r", "UTC", datetime(2025, 1, 1), "FREQ=SOMETIMES", timedelta(hours=1)
            ),
            "rrule",
            "FREQ must be one of",
        ),
        (
            lambda: FreezeWindow.recurring(
                "r", "UTC", datetime(2025, 1, 1), "FREQ=MINUTELY", timedelta(hours=1)
            ),
            "rrule",
            "FREQ must be one of",
        ),
        (
            lambda: FreezeWindow.recurring(
                "r", "UTC", datetime(2025, 1, 1), "FREQ=WEEKLY;BYDAY=XX", timedelta(hours=1)
            ),
            "rrule",
            "not a valid RFC 5545 RRULE",
        ),
        (
            lambda: FreezeWindow.recurring(
                "r", "UTC", datetime(2025, 1, 1), "FREQ=WEEKLY;UNTIL=20250301T000000Z", timedelta(hours=1)
            ),
            "rrule",
            "without 'Z'",
        ),
        (
            lambda: FreezeWindow.recurring(
                "r",
                "UTC",
                datetime(2025, 1, 1),
                "DTSTART:20250101T000000\nRRULE:FREQ=DAILY",
                timedelta(hours=1),
            ),
            "rrule",
            "one RRULE value",
        ),
        (
            lambda: FreezeWindow.recurring(
                "r", "UTC", datetime(2025, 1, 1), "FREQ=DAILY;UNTIL=20241231T000000", timedelta(hours=1)
            ),
            "rrule",
            "has no occurrence",
        ),
        (
            lambda: FreezeWindow.recurring(
                "r", "UTC", datetime(2025, 1, 1), "FREQ=DAILY", timedelta(seconds=30)
            ),
            "duration",
            "must be from",
        ),
        (
            lambda: FreezeWindow.recurring(
                "r", "UTC", datetime(2025, 1, 1), "FREQ=YEARLY", timedelta(days=32)
            ),
            "duration",
            "must be from",
        ),
    ],
)
def test_bad_windows_are_refused_naming_the_setting(build: object, key: str, message: str) -> None:
    assert callable(build)
    with pytest.raises(FreezeWindowError, match=message) as raised:
        build()
    assert raised.value.key == key


# Generated windows: weekly and daily rules and one-offs in zones with and without daylight
# saving, around both of Berlin's 2025 changes.
_ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
_LOCAL_STARTS = st.datetimes(min_value=datetime(2025, 3, 1), max_value=datetime(2025, 11, 30))
# Shorter than the rules' periods below, so a rule never covers all time by itself.
_LENGTHS = st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(hours=36)).map(
    lambda length: timedelta(minutes=length // timedelta(minutes=1))
)


@st.composite
def _windows(draw: st.DrawFn) -> FreezeWindow:
    reason = draw(st.sampled_from(["a", "b", "c"]))
    zone = draw(_ZONES)
    start = draw(_LOCAL_STARTS).replace(second=0, microsecond=0)
    length = draw(_LENGTHS)
    if draw(st.booleans()):
        return FreezeWindow.one_off(reason, zone, start, start + length)
    rule = draw(st.sampled_from(["FREQ=WEEKLY", "FREQ=DAILY;INTERVAL=2", "FREQ=WEEKLY;BYDAY=MO,FR;COUNT=6"]))
    return FreezeWindow.recurring(reason, zone, start, rule, length)


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[list[FreezeWindow], datetime]:
    """Windows, and a moment near one of them (whole weeks after its first start, give or take
    a day and a half), where freezes begin, end and overlap."""
    windows = draw(st.lists(_windows(), max_size=4))
    if not windows:
        return windows, draw(st.datetimes(timezones=st.just(UTC)))
    near = draw(st.sampled_from(windows))
    first_start = near.start.replace(tzinfo=ZoneInfo(near.timezone)).astimezone(UTC)
    weeks = draw(st.integers(min_value=0, max_value=4))
    offset = draw(st.timedeltas(min_value=-timedelta(hours=36), max_value=timedelta(hours=36)))
    return windows, first_start + timedelta(weeks=weeks) + offset


@settings(max_examples=200, deadline=None)
@given(_scenarios())
def test_the_current_freeze_covers_now_and_really_ends(scenario: tuple[list[FreezeWindow], datetime]) -> None:
    windows, now = scenario
    freeze = current_freeze(windows, now)
    if freeze is None:
        assert all(
            not occurrence.starts_at <= now < occurrence.ends_at
            for window in windows
            for occurrence in window.occurrences(now - timedelta(days=3), now)
        )
        return
    assert freeze.starts_at <= now < freeze.ends_at
    if freeze.ends_at >= now + CHAIN_HORIZON:
        # Windows covering each other without end are followed a year ahead, as documented.
        return
    assert current_freeze(windows, freeze.ends_at) is None
    assert current_freeze(windows, freeze.ends_at - timedelta(microseconds=1)) is not None


@settings(max_examples=200, deadline=None)
@given(_scenarios())
def test_the_next_freeze_starts_after_now_and_nothing_is_frozen_before_it(
    scenario: tuple[list[FreezeWindow], datetime],
) -> None:
    windows, now = scenario
    upcoming = next_freeze(windows, now)
    if upcoming is None:
        return
    current = current_freeze(windows, now)
    assert upcoming.starts_at > (current.ends_at if current is not None else now)
    assert current_freeze(windows, upcoming.starts_at) is not None
    if current is not None and current.ends_at >= now + CHAIN_HORIZON:
        # Windows covering each other without end are followed a year ahead, as documented: the
        # "next" freeze is then the one after that year, inside the same endless chain.
        return
    assert current_freeze(windows, upcoming.starts_at - timedelta(microseconds=1)) is None


@settings(max_examples=100, deadline=None)
@given(_ZONES, _LOCAL_STARTS, _LENGTHS)
def test_weekly_occurrences_start_at_the_written_local_time(
    zone: str, start: datetime, length: timedelta
) -> None:
    start = start.replace(second=0, microsecond=0)
    window = FreezeWindow.recurring("r", zone, start, "FREQ=WEEKLY", length)
    for occurrence in window.occurrences(utc(2025, 1, 1), utc(2026, 1, 1)):
        local_start = occurrence.starts_at.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        assert local_start.weekday() == start.weekday()
        if local_start.time() != start.time():
            # Only a written time the zone skips that day moves (later, by the gap).
            written = datetime.combine(local_start.date(), start.time())
            assert not _exists(written, zone)
            assert local_start > written


def _exists(wall_time: datetime, zone: str) -> bool:
    moment = wall_time.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None) == wall_time


def test_relco_pipelines_says_until_when_a_pipeline_is_frozen_or_when_the_next_freeze_is() -> None:
    from relco.cli import _freeze_note

    current = {
        "reason": "audit",
        "starts_at": "2026-12-24T00:00:00+00:00",
        "ends_at": "2026-12-27T00:00:00+00:00",
    }
    assert _freeze_note({"current": current, "next": None}) == (
        "  frozen until 2026-12-27T00:00:00+00:00 (audit)"
    )
    assert _freeze_note({"current": None, "next": current}) == (
        "  next freeze 2026-12-24T00:00:00+00:00 to 2026-12-27T00:00:00+00:00 (audit)"
    )
    assert _freeze_note({"current": None, "next": None}) == ""
    assert _freeze_note(None) == ""  # an API from before freezes


def test_windows_covering_each_other_without_end_are_followed_a_year_ahead() -> None:
    """Every other day for 36 hours, and the days between for 36 hours: never a gap. The freeze
    is reported to end at the horizon, not never, and a release held by it keeps waiting."""
    even = FreezeWindow.recurring(
        "even", "UTC", datetime(2026, 1, 1), "FREQ=DAILY;INTERVAL=2", timedelta(hours=36)
    )
    odd = FreezeWindow.recurring(
        "odd", "UTC", datetime(2026, 1, 2), "FREQ=DAILY;INTERVAL=2", timedelta(hours=36)
    )
    now = utc(2026, 3, 1, 12)
    freeze = current_freeze([even, odd], now)
    assert freeze is not None
    assert freeze.ends_at >= now + CHAIN_HORIZON
    assert current_freeze([even, odd], freeze.ends_at) is not None

"""Freeze windows: when a pipeline must not start a release, and why.

A window is one-off (a start and an end) or recurring (an RFC 5545 ``RRULE``, the time of day of
its first start, and a duration), written in local wall-clock time in an IANA time zone, with a
reason. Local time is what a team means: "every Friday 16:00 to Monday 08:00 Europe/Berlin" starts
at 16:00 local and ends at 08:00 local on both sides of a daylight saving change, so the rule is
expanded in local time and each occurrence is placed in UTC only afterwards. A duration is
wall-clock time too: an occurrence that spans a change is an hour shorter or longer in elapsed
time, and still ends at the local time its start plus the duration reads.

A local time the zone skips or repeats is read as RFC 5545 (section 3.3.5) says, which is
``zoneinfo``'s ``fold=0``: a time in the spring gap takes the offset before the change, so 02:30 on
the day Berlin skips from 02:00 to 03:00 is 03:30 summer time; a time in the autumn overlap is its
first occurrence, in summer time. A recurring occurrence that starts in the gap keeps its length,
so it ends later by the gap too; a one-off ends at its end as written.

Windows may overlap or touch: a freeze lasts until the end of the chain of windows that cover
each other, so a release waiting for it never starts in between. Times come in and go out
timezone-aware in UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from dateutil.rrule import rrule

# An occurrence is at least this long (shorter is a typo, not a freeze).
MIN_DURATION = timedelta(minutes=1)
# At most this long: a yearly holiday freeze fits, and a window that covers a whole month is
# better written as a one-off. It also bounds how far back a covering occurrence can have started.
MAX_DURATION = timedelta(days=31)
# A recurrence at most daily: finer rules would be a freeze most of the time, and expanding them
# costs an occurrence per minute or second.
ALLOWED_FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
# A chain of windows that keep covering each other is followed this far ahead; a chain still
# going by then is reported as ending where the last window found ends.
CHAIN_HORIZON = timedelta(days=366)
# Local and UTC times differ by at most a day (UTC-12 to UTC+14): the margin when a UTC range is
# turned into local times to expand a rule over.
_ZONE_MARGIN = timedelta(days=1)


class FreezeWindowError(ValueError):
    """A window's setting is wrong: ``key`` names the setting, ``what`` what is wrong with it."""

    def __init__(self, key: str, what: str) -> None:
        super().__init__(f"{key}: {what}")
        self.key = key
        self.what = what


@dataclass(frozen=True)
class Freeze:
    """One stretch of frozen time, in UTC: a window's occurrence, or a freeze as the functions
    below report it (then ``ends_at`` is the end of the chain of windows covering each other)."""

    window: FreezeWindow
    starts_at: datetime
    ends_at: datetime

    @property
    def reason(self) -> str:
        return self.window.reason

    def to_dict(self) -> dict[str, str]:
        return {
            "reason": self.reason,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
        }


@dataclass(frozen=True)
class FreezeWindow:
    """Build one with ``one_off`` or ``recurring``, which check it."""

    reason: str
    timezone: str  # IANA key, e.g. "Europe/Berlin"
    start: datetime  # local wall-clock time, naive: the one-off's start, or the rule's DTSTART
    length: timedelta  # wall-clock length of each occurrence
    recurrence: str | None = None  # RFC 5545 RRULE value; None: one-off

    @classmethod
    def one_off(cls, reason: str, timezone: str, start: datetime, end: datetime) -> FreezeWindow:
        window = cls(reason, _checked_zone(timezone), _local(start, "start"), _local(end, "end") - start)
        occurrence = window._occurrence(start)
        if occurrence.ends_at <= occurrence.starts_at:
            raise FreezeWindowError("end", f"{end.isoformat()} is not after start {start.isoformat()}")
        return window

    @classmethod
    def recurring(
        cls, reason: str, timezone: str, start: datetime, rule: str, duration: timedelta
    ) -> FreezeWindow:
        if not MIN_DURATION <= duration <= MAX_DURATION:
            raise FreezeWindowError(
                "duration", f"must be from {MIN_DURATION} to {MAX_DURATION.days} days, got {duration}"
            )
        window = cls(reason, _checked_zone(timezone), _local(start, "start"), duration, _checked_rule(rule))
        if window._rule().after(start, inc=True) is None:
            raise FreezeWindowError("rrule", f"{rule!r} has no occurrence from {start.isoformat()} on")
        return window

    def occurrences(self, earliest: datetime, latest: datetime) -> Iterator[Freeze]:
        """The occurrences starting from ``earliest`` to ``latest`` (UTC), in order."""
        zone = ZoneInfo(self.timezone)
        low = earliest.astimezone(zone).replace(tzinfo=None) - _ZONE_MARGIN
        high = latest.astimezone(zone).replace(tzinfo=None) + _ZONE_MARGIN
        starts = self._rule().between(low, high, inc=True) if self.recurrence else [self.start]
        for start in starts:
            occurrence = self._occurrence(start)
            if earliest <= occurrence.starts_at <= latest:
                yield occurrence

    def first_after(self, moment: datetime) -> Freeze | None:
        """The first occurrence starting after ``moment`` (UTC)."""
        if self.recurrence is None:
            occurrence = self._occurrence(self.start)
            return occurrence if occurrence.starts_at > moment else None
        rule = self._rule()
        searched_to = moment.astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None) - _ZONE_MARGIN
        while (start := rule.after(searched_to)) is not None:
            occurrence = self._occurrence(start)
            if occurrence.starts_at > moment:
                return occurrence
            searched_to = start
        return None

    def _occurrence(self, local_start: datetime) -> Freeze:
        zone = ZoneInfo(self.timezone)
        starts_at = local_start.replace(tzinfo=zone).astimezone(UTC)
        # The length is wall-clock time, counted from the local time the occurrence really starts
        # (later than written in the spring gap). A one-off ends where its end says.
        wall_start = starts_at.astimezone(zone).replace(tzinfo=None) if self.recurrence else local_start
        ends_at = (wall_start + self.length).replace(tzinfo=zone).astimezone(UTC)
        return Freeze(self, starts_at, ends_at)

    def _rule(self) -> rrule:
        assert self.recurrence is not None, "a one-off window has no rule"
        return _parsed_rule(self.recurrence, self.start)


def current_freeze(windows: Iterable[FreezeWindow], now: datetime) -> Freeze | None:
    """The freeze covering ``now``: the covering window that ends last (the first such in
    ``windows`` on a tie) gives the reason and start; it ends where the chain of windows covering
    each other from there ends."""
    now = _utc(now)
    windows = tuple(windows)
    covering = [
        occurrence
        for window in windows
        for occurrence in window.occurrences(now - window.length - _ZONE_MARGIN, now)
        if occurrence.ends_at > now
    ]
    if not covering:
        return None
    chosen = max(covering, key=lambda occurrence: occurrence.ends_at)
    return replace(chosen, ends_at=_chain_end(windows, now, chosen.ends_at))


def next_freeze(windows: Iterable[FreezeWindow], now: datetime) -> Freeze | None:
    """The first freeze starting after ``now`` and after the current freeze, if any, has ended:
    between the two nothing is frozen."""
    now = _utc(now)
    windows = tuple(windows)
    current = current_freeze(windows, now)
    after = current.ends_at if current is not None else now
    upcoming = [occurrence for window in windows if (occurrence := window.first_after(after)) is not None]
    if not upcoming:
        return None
    first = min(upcoming, key=lambda occurrence: occurrence.starts_at)
    return replace(first, ends_at=_chain_end(windows, first.starts_at, first.ends_at))


def _chain_end(windows: tuple[FreezeWindow, ...], since: datetime, end: datetime) -> datetime:
    """Where a freeze that lasts until ``end`` really ends: a window starting before that (or
    just at it) carries the freeze on to its own end, and so on."""
    horizon = since + CHAIN_HORIZON
    while end < horizon:
        later_ends = [
            occurrence.ends_at for window in windows for occurrence in window.occurrences(since, end)
        ]
        since, extended = end, max([end, *later_ends])
        if extended == end:
            break
        end = extended
    return end


def _utc(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone; freeze times are in UTC")
    return moment.astimezone(UTC)


def _checked_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FreezeWindowError(
            "timezone", f"unknown IANA time zone {name!r} (e.g. 'Europe/Berlin')"
        ) from None
    return name


def _local(moment: datetime, key: str) -> datetime:
    if moment.tzinfo is not None:
        raise FreezeWindowError(
            key, f"write the local time without an offset, got {moment.isoformat()}; the zone is 'timezone'"
        )
    return moment


def _checked_rule(text: str) -> str:
    """One RRULE value (``FREQ=WEEKLY;BYDAY=FR``, ``RRULE:`` allowed), at most daily; its
    DTSTART is the window's start, written apart."""
    value = text.strip().removeprefix("RRULE:")
    if not value or any(mark in value for mark in ("\n", ":")):
        raise FreezeWindowError(
            "rrule", f"must be one RRULE value such as 'FREQ=WEEKLY;BYDAY=FR', got {text!r}"
        )
    parts = dict(part.partition("=")[::2] for part in value.upper().split(";"))
    if parts.get("FREQ") not in ALLOWED_FREQUENCIES:
        raise FreezeWindowError(
            "rrule", f"FREQ must be one of {', '.join(ALLOWED_FREQUENCIES)}, got {parts.get('FREQ')!r}"
        )
    if parts.get("UNTIL", "").endswith("Z"):
        raise FreezeWindowError(
            "rrule", f"write UNTIL in the window's local time, without 'Z', got {parts['UNTIL']!r}"
        )
    try:
        _parsed_rule(value, datetime(2000, 1, 1))
    except (ValueError, TypeError) as error:
        raise FreezeWindowError("rrule", f"not a valid RFC 5545 RRULE ({error}): {text!r}") from None
    return value


@lru_cache(maxsize=256)
def _parsed_rule(value: str, dtstart: datetime) -> rrule:
    # dateutil is imported on first use, not when the pipelines module loads: `import app`
    # stays as fast as before for every function that never reads a freeze.
    from dateutil.rrule import rrule, rrulestr

    parsed = rrulestr(value, dtstart=dtstart)
    assert isinstance(parsed, rrule), "one RRULE value parses to one rule"
    return parsed

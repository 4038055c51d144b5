"""DORA's four keys (chalicelib/domain/dora.py) over a history whose answers were computed by hand
(the computation is written out in the comments of ``test_the_history_gives_the_hand_computed_figures``)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from chalicelib.domain.dora import (
    COMMIT_TIME,
    Durations,
    MalformedCommitTime,
    parse_commit_time,
    pipeline_stats,
    terminal_figures,
)
from chalicelib.domain.release import Release, ReleaseState, Revision, Trigger

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
PIPELINE = "shop"


def release(
    release_id: str,
    created: datetime,
    ended: datetime,
    state: ReleaseState,
    *,
    deployed: bool = True,
    trigger: Trigger = Trigger.UPLOAD,
    rollback_of: str | None = None,
    commit_time: str | None = None,
    pipeline: str = PIPELINE,
) -> Release:
    return Release(
        id=release_id,
        pipeline=pipeline,
        application="shop",
        deployment_group="shop",
        revision=Revision("bucket", f"shop/{release_id}.zip", "v1", None),
        trigger=trigger,
        state=state,
        created_at=created,
        updated_at=ended,
        deployment_id=f"d-{release_id}" if deployed else None,
        rollback_of=rollback_of,
        metadata={COMMIT_TIME: commit_time} if commit_time is not None else {},
    )


def history(t0: datetime, pipeline: str = PIPELINE) -> list[Release]:
    """Ten days of a pipeline's releases from ``t0`` (times in the comments: day and hour after
    it), with one release of another pipeline."""

    def at(day: int, hour: int, minute: int = 0) -> datetime:
        return t0 + timedelta(days=day, hours=hour, minutes=minute)

    def commit(day: int, hour: int, minute: int = 0, offset_hours: int = 0) -> str:
        zone = timezone(timedelta(hours=offset_hours))
        return at(day, hour, minute).astimezone(zone).isoformat()

    S, F = ReleaseState.SUCCEEDED, ReleaseState.FAILED
    releases = [
        # Created the day before the window: left out.
        release("r0", at(-1, 10), at(-1, 11), S),
        # Commit 10:00+01:00 (09:00 in UTC) on day 1, verified 10:30: lead 1 h 30 = 5400 s.
        release("r1", at(1, 10), at(1, 10, 30), S, commit_time=commit(1, 9, offset_hours=1)),
        # No commit time: from the upload, 12:00 to 12:20 = 1200 s.
        release("r2", at(2, 12), at(2, 12, 20), S),
        # Fails verification at 08:40 on day 3 ...
        release("r3", at(3, 8), at(3, 8, 40), F, commit_time=commit(3, 7)),
        # ... and its automatic rollback, created by the same write, is verified at 09:00: restores
        # r3 in 1200 s. A rollback delivers no change: no lead time.
        release("r4", at(3, 8, 40), at(3, 9), S, trigger=Trigger.AUTO_ROLLBACK, rollback_of="r3"),
        # A malformed commit time counts from the upload: 14:00 to 15:00 = 3600 s. Rolled back by r6.
        release("r5", at(4, 14), at(4, 15), S, commit_time="yesterday"),
        release("r6", at(4, 16), at(4, 16, 10), S, trigger=Trigger.ROLLBACK, rollback_of="r5"),
        # Never reached the deployment: superseded, cancelled, failed before CodeDeploy started.
        release("r7", at(5, 10), at(5, 10, 1), ReleaseState.SUPERSEDED, deployed=False),
        release("r8", at(5, 11), at(5, 11, 5), ReleaseState.STOPPED),
        release("r9", at(6, 9), at(6, 9), F, deployed=False),
        # Two failures in a row (no rollback configured), then a fix at 13:00 on day 7.
        release("r10", at(7, 10), at(7, 10, 15), F, commit_time=commit(7, 6)),
        release("r11", at(7, 11), at(7, 11, 30), F),
        # Commit 11:45, verified 13:00: lead 4500 s. Restores r10 (10:15 -> 13:00 = 9900 s) and
        # r11 (11:30 -> 13:00 = 5400 s).
        release("r12", at(7, 12), at(7, 13), S, commit_time=commit(7, 11, 45)),
        # A failure nothing has followed yet, and a release still deploying.
        release("r13", at(9, 10), at(9, 10, 5), F),
        release("r14", at(9, 11), at(9, 11, 1), ReleaseState.DEPLOYING),
        # Another pipeline's release: left out.
        release("x1", at(2, 10), at(2, 11), F, pipeline="other"),
    ]
    return [dataclasses.replace(r, pipeline=pipeline) if r.pipeline == PIPELINE else r for r in releases]


HISTORY = history(T0)


def test_the_history_gives_the_hand_computed_figures() -> None:
    stats = pipeline_stats(PIPELINE, HISTORY, T0, NOW)

    # In the window: r1 .. r14 = 14 releases.
    assert stats.releases == 14
    # Verified: r1, r2, r4, r5, r6, r12 = 6 over 10 days = 0.6 a day.
    assert (stats.deployments, stats.deployments_per_day) == (6, 0.6)
    # Lead times of the verified changes (rollbacks r4, r6 left out): r1 5400, r2 1200, r5 3600,
    # r12 4500. Sorted 1200, 3600, 4500, 5400: median (3600 + 4500) / 2 = 4050; p90 by nearest
    # rank: rank ceil(0.9 * 4) = 4, i.e. 5400.
    assert stats.lead_time == Durations(count=4, median_s=4050.0, p90_s=5400.0)
    # Reached the deployment (SUCCEEDED or FAILED with a deployment): r1 r2 r3 r4 r5 r6 r10 r11
    # r12 r13 = 10. Failures: FAILED r3 r10 r11 r13, and r5 rolled back by r6 (r3 is rolled back
    # too, but counted once) = 5. Rate 5 / 10 = 0.5.
    assert (stats.reached_deployment, stats.change_failures, stats.change_failure_rate) == (10, 5, 0.5)
    # Restores: r3 1200 (by r4), r10 9900 and r11 5400 (by r12); r13 unrestored. Sorted 1200,
    # 5400, 9900: median 5400; p90 rank ceil(0.9 * 3) = 3, i.e. 9900.
    assert stats.time_to_restore == Durations(count=3, median_s=5400.0, p90_s=9900.0)
    assert stats.unrestored_failures == 1


def test_the_answer_names_each_figure() -> None:
    answer = pipeline_stats(PIPELINE, HISTORY, T0, NOW).to_dict()
    assert answer["deployment_frequency"] == {"deployments": 6, "per_day": 0.6}
    assert answer["change_failure_rate"] == {"reached_deployment": 10, "failures": 5, "rate": 0.5}
    assert answer["time_to_restore"] == {"count": 3, "median_s": 5400.0, "p90_s": 9900.0, "unrestored": 1}
    assert (answer["since"], answer["until"]) == (T0.isoformat(), NOW.isoformat())


def test_a_partial_window_counts_the_releases_read_and_rates_over_the_span_they_cover() -> None:
    # A bounded read stopped at r7 (created day 5 10:00): it read r7 .. r14, not r1 .. r6.
    covered = T0 + timedelta(days=5, hours=10)
    read = [release for release in HISTORY if release.pipeline == PIPELINE and release.created_at >= covered]
    stats = pipeline_stats(PIPELINE, read, T0, NOW, covered_since=covered)

    assert (stats.since, stats.covered_since, stats.until) == (T0, covered, NOW)
    # r7 .. r14 = 8 releases.
    assert stats.releases == 8
    # Verified: r12 alone, over the 4 days 14 hours covered (110 hours = 55/12 days), not the
    # 10 days asked for: 12/55 a day (over 10 days it would be 0.1).
    assert stats.deployments == 1
    assert stats.deployments_per_day == pytest.approx(12 / 55)
    # Lead time: r12's 4500 s alone.
    assert stats.lead_time == Durations(count=1, median_s=4500.0, p90_s=4500.0)
    # Reached the deployment: r10 r11 r12 r13 (r9 failed before CodeDeploy) = 4; failed r10 r11
    # r13 = 3: 3 / 4.
    assert (stats.reached_deployment, stats.change_failures, stats.change_failure_rate) == (4, 3, 0.75)
    # Restores: r10 9900 and r11 5400 (by r12): median (5400 + 9900) / 2 = 7650, p90 rank
    # ceil(0.9 * 2) = 2, i.e. 9900; r13 unrestored.
    assert stats.time_to_restore == Durations(count=2, median_s=7650.0, p90_s=9900.0)
    assert stats.unrestored_failures == 1
    assert stats.to_dict()["covered_since"] == covered.isoformat()


def test_a_whole_window_is_covered_from_its_start() -> None:
    answer = pipeline_stats(PIPELINE, HISTORY, T0, NOW).to_dict()
    assert answer["covered_since"] == answer["since"] == T0.isoformat()


def test_an_empty_window_has_no_rates() -> None:
    stats = pipeline_stats(PIPELINE, HISTORY, NOW, NOW + timedelta(days=1))
    assert (stats.releases, stats.deployments, stats.deployments_per_day) == (0, 0, 0.0)
    assert stats.lead_time == Durations(0, None, None)
    assert stats.change_failure_rate is None
    assert stats.time_to_restore == Durations(0, None, None)


def test_a_commit_clock_ahead_of_aws_counts_as_no_lead_time() -> None:
    created = T0 + timedelta(days=1)
    ahead = release(
        "r",
        created,
        created + timedelta(minutes=5),
        ReleaseState.SUCCEEDED,
        commit_time=(created + timedelta(hours=1)).isoformat(),
    )
    assert pipeline_stats(PIPELINE, [ahead], T0, NOW).lead_time == Durations(1, 0.0, 0.0)


def test_commit_times_need_their_offset() -> None:
    assert parse_commit_time("2026-03-02T10:00:00+01:00") == datetime(2026, 3, 2, 9, tzinfo=UTC)
    for malformed in ("2026-03-02T10:00:00", "yesterday", ""):
        with pytest.raises(MalformedCommitTime):
            parse_commit_time(malformed)


def test_terminal_figures_of_each_kind_of_end() -> None:
    by_id = {release.id: release for release in HISTORY}
    change = terminal_figures(by_id["r1"])
    assert (change.deployed, change.failed, change.lead_time, change.restore) == (
        True,
        False,
        timedelta(seconds=5400),
        None,
    )
    # The automatic rollback restores from its creation, which is the failure's end: 1200 s.
    rollback = terminal_figures(by_id["r4"])
    assert (rollback.deployed, rollback.failed, rollback.lead_time, rollback.restore) == (
        True,
        False,
        None,
        timedelta(seconds=1200),
    )
    failure = terminal_figures(by_id["r3"])
    assert (failure.deployed, failure.failed, failure.lead_time, failure.restore) == (True, True, None, None)
    never_deployed = terminal_figures(by_id["r9"])
    assert (never_deployed.deployed, never_deployed.failed) == (False, False)

"""The emulator's simulated timing: seeded per-instance draws, periodic run counts, timestamps."""

from __future__ import annotations

import pytest

from fanout.emulator.schedule import OnceSchedule, RateSchedule, parse_frequency
from fanout.emulator.timing import RunTimes, TimingPlan, iso_utc, iso_utc_ms

CREATED_S = 1_795_500_000.0  # 2026-11-24T06:00:00Z


def _plan(seed: str = "exec:1:t-1", count: int = 500, failure: float = 0.0) -> TimingPlan:
    return TimingPlan(seed, count, 0.3, 2.0, 3.0, failure)


def test_a_plan_draws_the_same_timing_every_time() -> None:
    """The same seed gives the same per-instance timing; another seed another one."""
    first, again = _plan().draw(), _plan().draw()
    assert (first.pending_s, first.duration_s, first.exit_code) == (
        again.pending_s,
        again.duration_s,
        again.exit_code,
    )
    assert _plan("exec:1:t-2").draw().duration_s != first.duration_s


def test_drawn_timing_stays_within_the_plan() -> None:
    """Pending delays and run times stay within the plan's ranges, one entry per instance."""
    timing = _plan().draw()
    assert len(timing.pending_s) == len(timing.duration_s) == len(timing.exit_code) == 500
    assert all(0 <= p < 0.3 for p in timing.pending_s)
    assert all(2.0 <= d <= 5.0 for d in timing.duration_s)


@pytest.mark.parametrize(("failure", "failing"), [(0.0, 0), (1.0, 500)])
def test_failure_fraction_sets_nonzero_exit_codes(failure: float, failing: int) -> None:
    """No instance fails at fraction 0, every one at 1, with an exit code of 1..127."""
    codes = _plan(failure=failure).draw().exit_code
    assert sum(1 for c in codes if c) == failing
    assert all(0 <= c <= 127 for c in codes)


@pytest.mark.parametrize(
    ("horizon_s", "expected"),
    [
        (CREATED_S - 1, (0, CREATED_S)),
        (CREATED_S, (1, CREATED_S)),
        (CREATED_S + 59, (1, CREATED_S)),
        (CREATED_S + 130, (3, CREATED_S + 120)),
    ],
)
def test_evenly_spaced_runs_are_counted_without_listing_them(
    horizon_s: float, expected: tuple[int, float]
) -> None:
    """rate(1m): the first run at creation, then one a minute; counts and last run time."""
    assert RunTimes(RateSchedule(60), CREATED_S).until(horizon_s) == expected


def test_cron_runs_are_found_as_the_clock_moves() -> None:
    """A cron schedule's runs are found up to the horizon asked, and later ones when asked."""
    runs = RunTimes(parse_frequency("0 */5 * * * *", CREATED_S), CREATED_S)
    assert runs.until(CREATED_S + 299) == (1, CREATED_S)  # 06:00:00 is on the five minutes
    assert runs.until(CREATED_S + 3600) == (13, CREATED_S + 3600)


def test_a_fixed_time_runs_once() -> None:
    """at(...): no run before the time, exactly one after it."""
    runs = RunTimes(OnceSchedule(CREATED_S + 10), CREATED_S)
    assert runs.until(CREATED_S + 5)[0] == 0
    assert runs.until(CREATED_S + 3600) == (1, CREATED_S + 10)


def test_timestamps_are_utc() -> None:
    """Whole seconds for API fields, milliseconds for the inspection state; no time is ""."""
    assert iso_utc(CREATED_S + 0.9) == "2026-11-24T06:00:00Z"
    assert iso_utc(None) == ""
    assert iso_utc_ms(CREATED_S + 0.123) == "2026-11-24T06:00:00.123Z"

"""Daily-quota arithmetic: windows, what is left, when capacity frees."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from fanout.quota import DAY_S, QuotaMode, QuotaPolicy

NOW = datetime(2026, 11, 28, 6, 0, tzinfo=UTC).timestamp()


def test_rolling_window_is_24_hours() -> None:
    """Rolling accounting counts the calls of the last 24 hours."""
    assert QuotaPolicy().window_start(NOW) == NOW - DAY_S


def test_calendar_window_starts_at_local_midnight() -> None:
    """Calendar accounting counts from midnight in the configured time zone."""
    policy = QuotaPolicy(mode=QuotaMode.CALENDAR, time_zone="Asia/Shanghai")
    start = policy.window_start(NOW)
    local = datetime.fromtimestamp(start + 1e-3, ZoneInfo("Asia/Shanghai"))
    assert (local.hour, local.minute) == (0, 0)
    assert NOW - DAY_S < start < NOW


@pytest.mark.parametrize(
    ("quota", "reserve", "used", "left"),
    [(5000, 0, 0, 5000), (5000, 100, 4900, 0), (30, 0, 29, 1), (30, 0, 31, 0)],
)
def test_left(quota: int, reserve: int, used: int, left: int) -> None:
    """What is left is the quota minus the reserve minus what was used, never negative."""
    assert QuotaPolicy(daily_quota=quota, reserve=reserve).left(used) == left


def test_rolling_frees_when_oldest_call_ages_out() -> None:
    """With the window full, the next call is allowed a day after the oldest counted call."""
    policy = QuotaPolicy(daily_quota=3)
    times = [NOW - 100, NOW - 50, NOW - 10]
    assert policy.frees_at(times, NOW) == NOW - 100 + DAY_S
    assert policy.frees_at(times, NOW, needed=2) == NOW - 50 + DAY_S
    assert policy.frees_at(times[:2], NOW) == NOW


def test_calendar_frees_at_next_midnight() -> None:
    """In calendar mode capacity returns at the next local midnight."""
    policy = QuotaPolicy(daily_quota=1, mode=QuotaMode.CALENDAR, time_zone="UTC")
    assert policy.frees_at([NOW - 5], NOW) == datetime(2026, 11, 29, tzinfo=UTC).timestamp()

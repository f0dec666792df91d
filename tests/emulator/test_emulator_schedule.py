"""Frequency parsing: cron with seconds / year / time zone, rate(), at(), the 10-second rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fanout.emulator.schedule import CronSchedule, RateSchedule, parse_frequency

_NOW = datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC).timestamp()  # a Saturday


def runs(frequency: str, count: int, after: float = _NOW) -> list[str]:
    """The next `count` run times as ISO strings in UTC."""
    schedule = parse_frequency(frequency, _NOW)
    found: list[str] = []
    moment = after
    for _ in range(count):
        following = schedule.next_run(moment, _NOW)
        assert following is not None
        found.append(datetime.fromtimestamp(following, UTC).strftime("%Y-%m-%d %H:%M:%S"))
        moment = following
    return found


def test_every_twenty_minutes() -> None:
    """`0 */20 * * * *` runs at :00, :20, :40."""
    assert runs("0 */20 * * * *", 3) == [
        "2026-11-28 06:20:00",
        "2026-11-28 06:40:00",
        "2026-11-28 07:00:00",
    ]


def test_day_of_week_is_monday_first() -> None:
    """Day-of-week 1 is Monday (and MON works too)."""
    assert runs("0 0 9 ? * 1", 1) == ["2026-11-30 09:00:00"]
    assert runs("0 0 9 ? * MON-FRI", 2) == ["2026-11-30 09:00:00", "2026-12-01 09:00:00"]


def test_time_zone_shifts_runs() -> None:
    """A time zone after the fields moves the wall-clock times (Asia/Shanghai is UTC+8)."""
    assert runs("0 0 9 * * * Asia/Shanghai", 1) == ["2026-11-29 01:00:00"]
    assert runs("0 0 9 * * * GMT+8", 1) == ["2026-11-29 01:00:00"]


def test_year_field_and_last_day() -> None:
    """A year limits runs; `L` is the last day of the month."""
    assert runs("0 0 12 L * ? 2027", 2) == ["2027-01-31 12:00:00", "2027-02-28 12:00:00"]


def test_nth_and_last_weekday() -> None:
    """`5#2` is the second Friday, `5L` the last Friday of the month."""
    assert runs("0 0 8 ? * 5#2", 1) == ["2026-12-11 08:00:00"]
    assert runs("0 0 8 ? * 5L", 1) == ["2026-12-25 08:00:00"]


def test_nearest_weekday() -> None:
    """`1W` is the weekday nearest the 1st without leaving the month."""
    assert runs("0 0 8 1W * ?", 1, after=datetime(2027, 4, 15, tzinfo=UTC).timestamp()) == ["2027-05-03 08:00:00"]  # fmt: skip


def test_rate_and_at() -> None:
    """rate(5m) is every 300 s from creation; at() runs once, then never."""
    schedule = parse_frequency("rate(5m)", _NOW)
    assert isinstance(schedule, RateSchedule)
    assert schedule.next_run(_NOW + 1, _NOW) == _NOW + 300
    once = parse_frequency("at(2026-12-01 10:00:00 Asia/Shanghai)", _NOW)
    at_s = datetime(2026, 12, 1, 2, 0, 0, tzinfo=UTC).timestamp()
    assert once.next_run(_NOW, _NOW) == at_s
    assert once.next_run(at_s, _NOW) is None


@pytest.mark.parametrize(
    "frequency",
    [
        "* * * * * *",
        "*/5 * * * * *",
        "0,5 * * * * *",
        "59,1 * * * * *",
        "0 0 0 * *",
        "0 0 24 * * *",
        "0 0 0 32 * *",
        "0 0 0 ? * 8",
        "0 0 0 * * * Nowhere/City",
        "0 0 0 * * * 2027 UTC extra",
        "rate(59s)",
        "rate(5w)",
        "rate(8d)",
        "at(2026-13-01 00:00:00)",
        "at(tomorrow)",
        "0 10-5 * * * *",
    ],
)
def test_invalid_frequencies(frequency: str) -> None:
    """Malformed expressions and runs closer than 10 seconds are refused with a reason."""
    with pytest.raises(ValueError, match=r".+"):
        parse_frequency(frequency, _NOW)


def test_ten_second_gap_is_allowed() -> None:
    """Runs exactly 10 seconds apart are fine."""
    schedule = parse_frequency("*/10 * * * * *", _NOW)
    assert isinstance(schedule, CronSchedule)
    assert runs("*/10 * * * * *", 2) == ["2026-11-28 06:00:10", "2026-11-28 06:00:20"]

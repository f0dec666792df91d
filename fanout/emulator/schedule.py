"""The `Frequency` of periodic invocations: `rate(...)`, `at(...)` and 6/7-field cron with time zone.

Cron fields are `<s> <m> <h> <dom> <mon> <dow> [<year>] [<tz>]`, as Cloud Assistant documents
them: day-of-week 1..7 is Monday..Sunday (or MON..SUN); `?`, `L`, `W`, `LW`, `nL` and `n#k` are
supported; without a time zone the schedule is UTC (spec S8: the instance clock, UTC+0).
Two runs must be at least 10 seconds apart (InvokeCommand's Frequency rule).
"""

from __future__ import annotations

import calendar
import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "MIN_RUN_GAP_S",
    "CronSchedule",
    "OnceSchedule",
    "RateSchedule",
    "Schedule",
    "parse_frequency",
]

MIN_RUN_GAP_S = 10
_RATE_MIN_S = 60  # rate(...) accepts 60 seconds ..
_RATE_MAX_S = 7 * 86400  # .. to 7 days
_RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_GAP_PROBE_RUNS = 50  # upcoming runs checked for the 10-second rule
_MAX_SCAN_DAYS = 366 * 8  # a cron that matches no day within 8 years never runs
_MAX_YEAR = 2099
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
_GMT_OFFSET = re.compile(r"^(?:GMT|UTC)([+-])(\d{1,2})(?::?(\d{2}))?$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\s+(\S+))?\)$")
_RATE = re.compile(r"^rate\((\d+)([smhd])\)$")
_YEAR_TOKEN = re.compile(r"^[0-9*,/\-]+$")


class Schedule:
    """Run times of a periodic invocation (epoch seconds)."""

    period_s: float | None = None  # set when runs are evenly spaced (fast counting)

    def next_run(self, after_s: float, origin_s: float) -> float | None:
        """The first run strictly after `after_s` for an invocation created at `origin_s`."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class RateSchedule(Schedule):
    """`rate(N<unit>)`: every `period_s`, the first run at creation."""

    period_s: float

    def next_run(self, after_s: float, origin_s: float) -> float | None:
        """Next multiple of the period after `after_s`, counted from `origin_s`."""
        if after_s < origin_s:
            return origin_s
        return origin_s + (int((after_s - origin_s) // self.period_s) + 1) * self.period_s


@dataclass(frozen=True, slots=True)
class OnceSchedule(Schedule):
    """`at(yyyy-MM-dd HH:mm:ss tz)`: one run at a fixed time."""

    at_s: float

    def next_run(self, after_s: float, origin_s: float) -> float | None:
        """The fixed time, if it is still ahead."""
        return self.at_s if self.at_s > after_s else None


@dataclass(frozen=True, slots=True)
class _DaySpec:
    """Day-of-month and day-of-week constraints (Quartz-style specials included)."""

    dom_any: bool
    dom: frozenset[int]
    dom_last: bool
    dom_last_weekday: bool
    dom_nearest_weekday: frozenset[int]
    dow_any: bool
    dow: frozenset[int]
    dow_last: frozenset[int]
    dow_nth: frozenset[tuple[int, int]]

    def matches(self, day: date) -> bool:
        if self.dom_any and self.dow_any:
            return True
        if self.dom_any:
            return self._dow_ok(day)
        if self.dow_any:
            return self._dom_ok(day)
        return self._dom_ok(day) or self._dow_ok(day)

    def _dom_ok(self, day: date) -> bool:
        last = calendar.monthrange(day.year, day.month)[1]
        if day.day in self.dom or (self.dom_last and day.day == last):
            return True
        if self.dom_last_weekday and day == _nearest_weekday(day.year, day.month, last):
            return True
        return any(
            day == _nearest_weekday(day.year, day.month, n) for n in self.dom_nearest_weekday
        )

    def _dow_ok(self, day: date) -> bool:
        weekday = day.isoweekday()
        if weekday in self.dow:
            return True
        last = calendar.monthrange(day.year, day.month)[1]
        if weekday in self.dow_last and day.day + 7 > last:
            return True
        return (weekday, (day.day - 1) // 7 + 1) in self.dow_nth


def _nearest_weekday(year: int, month: int, day_of_month: int) -> date:
    """Quartz `nW`: the weekday nearest to that day, without leaving the month."""
    last = calendar.monthrange(year, month)[1]
    target = date(year, month, min(day_of_month, last))
    if target.isoweekday() == 6:  # Saturday -> Friday, or Monday when the 1st
        return target - timedelta(days=1) if target.day > 1 else target + timedelta(days=2)
    if target.isoweekday() == 7:  # Sunday -> Monday, or Friday when the last day
        return target + timedelta(days=1) if target.day < last else target - timedelta(days=2)
    return target


@dataclass(frozen=True, slots=True)
class CronSchedule(Schedule):
    """A cron expression with seconds, optional year and time zone."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    years: frozenset[int] | None
    days: _DaySpec
    tz: tzinfo

    def next_run(self, after_s: float, origin_s: float) -> float | None:
        """Scan day by day from `after_s`, then the hour/minute/second sets within the day."""
        start = datetime.fromtimestamp(int(after_s) + 1, self.tz)
        day = start.date()
        lower: tuple[int, int, int] | None = (start.hour, start.minute, start.second)
        for _ in range(_MAX_SCAN_DAYS):
            if self._day_ok(day):
                found = self._first_time(day, lower)
                if found is not None:
                    return found
            lower = None
            day += timedelta(days=1)
            if day.year > _MAX_YEAR:
                return None
        return None

    def _day_ok(self, day: date) -> bool:
        if self.years is not None and day.year not in self.years:
            return False
        return day.month in self.months and self.days.matches(day)

    def _first_time(self, day: date, lower: tuple[int, int, int] | None) -> float | None:
        low_h, low_m, low_s = lower or (0, 0, 0)
        for hour in self.hours:
            if hour < low_h:
                continue
            for minute in self.minutes:
                if hour == low_h and minute < low_m:
                    continue
                floor_s = low_s if (hour, minute) == (low_h, low_m) else 0
                for second in self.seconds:
                    if second >= floor_s:
                        moment = datetime(
                            day.year, day.month, day.day, hour, minute, second, tzinfo=self.tz
                        )
                        return moment.timestamp()
        return None


def parse_frequency(text: str, now_s: float) -> Schedule:
    """Parse a Frequency; raise ValueError saying what is wrong (InvalidParam.Frequency)."""
    text = text.strip()
    if text.startswith("rate("):
        return _parse_rate(text)
    if text.startswith("at("):
        return _parse_at(text)
    schedule = _parse_cron(text)
    _check_gaps(schedule, now_s)
    return schedule


def _parse_rate(text: str) -> RateSchedule:
    match = _RATE.match(text)
    if match is None:
        raise ValueError("rate() takes a whole number and a unit s, m, h or d, e.g. rate(5m)")
    period_s = int(match.group(1)) * _RATE_UNITS[match.group(2)]
    if not _RATE_MIN_S <= period_s <= _RATE_MAX_S:
        raise ValueError("rate() must be between 60 seconds and 7 days")
    return RateSchedule(float(period_s))


def _parse_at(text: str) -> OnceSchedule:
    match = _AT.match(text)
    if match is None:
        raise ValueError("at() takes yyyy-MM-dd HH:mm:ss and an optional time zone")
    tz = _parse_tz(match.group(2)) if match.group(2) else UTC
    try:
        moment = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"at() has an impossible date or time: {exc}") from exc
    return OnceSchedule(moment.timestamp())


def _parse_tz(name: str) -> tzinfo:
    match = _GMT_OFFSET.match(name)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        hours, minutes = int(match.group(2)), int(match.group(3) or 0)
        if hours > 14 or minutes >= 60:  # real offsets span -12:00 .. +14:00
            raise ValueError(f"time zone offset {name} is out of range")
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    if name in ("UTC", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _parse_cron(text: str) -> CronSchedule:
    tokens = text.split()
    if not 6 <= len(tokens) <= 8:
        raise ValueError("a cron expression has 6 or 7 fields plus an optional time zone")
    year_token: str | None = None
    tz: tzinfo = UTC
    rest = tokens[6:]
    if rest and _YEAR_TOKEN.match(rest[0]):
        year_token = rest.pop(0)
    if rest:
        tz = _parse_tz(rest.pop(0))
    if rest:
        raise ValueError(f"unexpected cron field {rest[0]!r}")
    sec, minute, hour, dom, month, dow = tokens[:6]
    return CronSchedule(
        seconds=tuple(sorted(_parse_field(sec, 0, 59, "second"))),
        minutes=tuple(sorted(_parse_field(minute, 0, 59, "minute"))),
        hours=tuple(sorted(_parse_field(hour, 0, 23, "hour"))),
        months=frozenset(_parse_field(month, 1, 12, "month", _MONTHS)),
        years=None
        if year_token in (None, "*")
        else frozenset(_parse_field(year_token or "", 1970, _MAX_YEAR, "year")),
        days=_parse_days(dom, dow),
        tz=tz,
    )


def _parse_field(
    text: str, low: int, high: int, what: str, names: list[str] | None = None
) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = _number(step_text, 1, high, what) if slash else 1
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, low, high, what, names), _value(last, low, high, what, names)
        else:
            start = _value(base, low, high, what, names)
            end = high if slash else start
        if start > end:
            raise ValueError(f"{what} range {part!r} runs backwards")
        values.update(range(start, end + 1, step))
    return values


def _value(text: str, low: int, high: int, what: str, names: list[str] | None) -> int:
    if names and text.upper() in names:
        return names.index(text.upper()) + low
    return _number(text, low, high, what)


def _number(text: str, low: int, high: int, what: str) -> int:
    if not text.isdigit() or len(text) > 4:
        raise ValueError(f"{what} field value {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{what} value {value} is outside {low}..{high}")
    return value


def _parse_days(dom: str, dow: str) -> _DaySpec:
    dom_values: set[int] = set()
    last = last_weekday = False
    nearest: set[int] = set()
    dom_any = dom in ("*", "?")
    for part in [] if dom_any else dom.split(","):
        if part == "L":
            last = True
        elif part == "LW":
            last_weekday = True
        elif part.endswith("W"):
            nearest.add(_number(part[:-1], 1, 31, "day-of-month"))
        else:
            dom_values |= _parse_field(part, 1, 31, "day-of-month")
    dow_values: set[int] = set()
    dow_last: set[int] = set()
    dow_nth: set[tuple[int, int]] = set()
    dow_any = dow in ("*", "?")
    for part in [] if dow_any else dow.split(","):
        if "#" in part:
            day_text, _, nth_text = part.partition("#")
            dow_nth.add(
                (_value(day_text, 1, 7, "day-of-week", _DAYS), _number(nth_text, 1, 5, "week"))
            )
        elif part.endswith("L") and len(part) > 1:
            dow_last.add(_value(part[:-1], 1, 7, "day-of-week", _DAYS))
        else:
            dow_values |= _parse_field(part, 1, 7, "day-of-week", _DAYS)
    return _DaySpec(
        dom_any, frozenset(dom_values), last, last_weekday, frozenset(nearest),
        dow_any, frozenset(dow_values), frozenset(dow_last), frozenset(dow_nth),
    )  # fmt: skip


def _check_gaps(schedule: CronSchedule, now_s: float) -> None:
    """Refuse a cron whose runs come closer than 10 seconds (within a minute or upcoming)."""
    secs = schedule.seconds
    if any(b - a < MIN_RUN_GAP_S for a, b in itertools.pairwise(secs)):
        raise ValueError(f"two runs are less than {MIN_RUN_GAP_S} seconds apart")
    previous = schedule.next_run(now_s, now_s)
    if previous is None:
        return
    for _ in range(_GAP_PROBE_RUNS):
        following = schedule.next_run(previous, now_s)
        if following is None:
            return
        if following - previous < MIN_RUN_GAP_S:
            raise ValueError(f"two runs are less than {MIN_RUN_GAP_S} seconds apart")
        previous = following
    return

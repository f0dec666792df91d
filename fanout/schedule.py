"""`--frequency`, checked before any call (pure): `rate(...)`, `at(...)` and cron with seconds.

The forms InvokeCommand's `Frequency` takes (API reference; Cloud Assistant cron documentation):

- `rate(<n><s|m|h|d>)`: every n units, from 60 seconds to 7 days.
- `at(yyyy-MM-dd HH:mm:ss [<time zone>])`: once, at that time (UTC without a time zone).
- `<second> <minute> <hour> <day-of-month> <month> <day-of-week> [<year>] [<time zone>]`:
  day-of-week 1..7 is Monday..Sunday (or MON..SUN), months 1..12 or JAN..DEC; `* , - /` in every
  field, `?` in the two day fields, `L`, `LW` and `nW` in day-of-month, `nL` and `n#k` in
  day-of-week; years up to 2099; without a time zone the schedule is UTC (spec S8).
- A time zone is an IANA name (`Asia/Shanghai`), `UTC`/`GMT`, or an offset `GMT+8:00`.

Spec S7: two runs must be at least 10 seconds apart. That is checked on the real schedule, not on
the text: every time of day the cron names, across midnight when two consecutive days run, and
across the daylight-saving changes of its time zone in the coming year. A schedule that would
never run again (an `at()` in the past, a cron whose dates are all past or impossible) is refused
too: the call would be spent for nothing.
"""

from __future__ import annotations

import calendar
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["MIN_INTERVAL_S", "RATE_MAX_S", "RATE_MIN_S", "Frequency", "FrequencyError", "parse"]

MIN_INTERVAL_S = 10  # spec S7: two runs at least 10 seconds apart
RATE_MIN_S = 60  # rate(): at least 60 seconds (API reference, Frequency) ...
RATE_MAX_S = 7 * 86_400  # ... and at most 7 days
_DAY_S = 86_400
_FIRST_YEAR, _LAST_YEAR = 1970, 2099  # the cron year field's range (doc: current year .. 2099)
_MAX_OFFSET_H = 14  # real UTC offsets span -12:00 .. +14:00
# why 4: no field value is longer than a year; the doc allows at most one leading zero.
_MAX_DIGITS = 4
_DST_LOOKAHEAD_DAYS = 366  # daylight-saving changes checked for the S7 interval: the next year
_RATE_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": _DAY_S}
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")

_RATE = re.compile(r"rate\((\d+)([smhd])\)")
_AT = re.compile(r"at\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\s+(\S+))?\)")
_OFFSET = re.compile(r"(?:GMT|UTC)([+-])(\d{1,2})(?::?(\d{2}))?")
_YEAR_LIKE = re.compile(r"[0-9*,/\-]+")


class FrequencyError(ValueError):
    """What is wrong with a Frequency, in a few words."""


@dataclass(frozen=True, slots=True)
class Frequency:
    """A valid Frequency: its form, its next run and the shortest time between two runs."""

    kind: str  # "rate" | "at" | "cron"
    text: str
    next_run_s: float | None  # epoch seconds; None for rate() (it starts with the invocation)
    min_interval_s: float | None  # None: runs once


def parse(text: str, now_s: float) -> Frequency:
    """Check a Frequency as InvokeCommand would at `now_s`; raise FrequencyError if it is refused."""
    text = text.strip()
    if text.startswith("rate("):
        return _rate(text)
    if text.startswith("at("):
        return _at(text, now_s)
    return _Cron.parse(text).check(text, now_s)


def _rate(text: str) -> Frequency:
    """`rate(5m)`: a whole number and a unit, 60 s .. 7 d."""
    match = _RATE.fullmatch(text)
    if match is None:
        raise FrequencyError("rate() takes a whole number and s, m, h or d, e.g. rate(5m)")
    period_s = int(match.group(1)) * _RATE_UNITS_S[match.group(2)]
    if not RATE_MIN_S <= period_s <= RATE_MAX_S:
        raise FrequencyError(f"rate() is {period_s} s; it must be 60 seconds to 7 days")
    return Frequency("rate", text, None, float(period_s))


def _at(text: str, now_s: float) -> Frequency:
    """`at(2026-12-01 08:00:00 Asia/Shanghai)`: one run, which must still be ahead."""
    match = _AT.fullmatch(text)
    if match is None:
        raise FrequencyError("at() takes yyyy-MM-dd HH:mm:ss and an optional time zone")
    zone = _zone(match.group(2)) if match.group(2) else UTC
    try:
        moment = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
    except ValueError:
        raise FrequencyError(f"at() names no real date and time: {match.group(1)}") from None
    if moment.timestamp() <= now_s:
        raise FrequencyError(f"at() is in the past ({match.group(1)}): it would never run")
    return Frequency("at", text, moment.timestamp(), None)


def _zone(name: str) -> tzinfo:
    """An IANA time zone, UTC/GMT, or a `GMT+8:00` style offset."""
    if name in ("UTC", "GMT"):
        return UTC
    match = _OFFSET.fullmatch(name)
    if match is not None:
        hours, minutes = int(match.group(2)), int(match.group(3) or 0)
        if hours > _MAX_OFFSET_H or minutes >= 60:
            raise FrequencyError(f"time zone offset {name} is out of range")
        sign = -1 if match.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise FrequencyError(f"unknown time zone {name!r}") from None


@dataclass(frozen=True, slots=True)
class _Field:
    """One numeric cron field: its name, range and optional names (JAN, MON)."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()

    def number(self, text: str) -> int:
        """One value of this field (a number or a name)."""
        if self.names and text.upper() in self.names:
            return self.names.index(text.upper()) + self.low
        return _number(text, self.low, self.high, self.name)

    def values(self, text: str) -> set[int]:
        """A `,`-list of `*`, `n`, `a-b`, each with an optional `/step`."""
        found: set[int] = set()
        for part in text.split(","):
            base, slash, step_text = part.partition("/")
            step = _number(step_text, 1, self.high, f"{self.name} step") if slash else 1
            if base == "*":
                first, last = self.low, self.high
            elif "-" in base:
                left, _, right = base.partition("-")
                first, last = self.number(left), self.number(right)
                if first > last:
                    raise FrequencyError(f"{self.name} range {part!r} runs backwards")
            else:
                first = self.number(base)
                last = self.high if slash else first
            found.update(range(first, last + 1, step))
        return found


def _number(text: str, low: int, high: int, what: str) -> int:
    """A decimal in `low..high` with at most one leading zero (Cloud Assistant cron doc)."""
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise FrequencyError(f"{what} {text!r} is not a number")
    zeros = len(text) - len(text.lstrip("0")) - (1 if not text.strip("0") else 0)
    if zeros > 1:
        raise FrequencyError(f"{what} {text!r} has more than one leading zero")
    value = int(text)
    if not low <= value <= high:
        raise FrequencyError(f"{what} {value} is outside {low}..{high}")
    return value


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES)
_DOW = _Field("day-of-week", 1, 7, _DAY_NAMES)
_YEAR = _Field("year", _FIRST_YEAR, _LAST_YEAR)


@dataclass(frozen=True, slots=True)
class _Days:
    """Which days run: day-of-month and day-of-week (either may match when both are given)."""

    dom: frozenset[int] | None  # None: any day of the month
    last_day: bool
    last_weekday: bool
    nearest_weekday: frozenset[int]
    dow: frozenset[int] | None  # None: any day of the week; ISO numbering, 1 = Monday
    last_dow: frozenset[int]
    nth_dow: frozenset[tuple[int, int]]

    @classmethod
    def parse(cls, dom_text: str, dow_text: str) -> _Days:
        """The two day fields."""
        dom, last_day, last_weekday, nearest = _month_days(dom_text)
        dow, last_dow, nth = _weekdays(dow_text)
        return cls(dom, last_day, last_weekday, nearest, dow, last_dow, nth)

    def runs_on(self, day: date) -> bool:
        """True when the schedule runs on `day`."""
        if self.dom is None and self.dow is None:
            return True
        if self.dom is None:
            return self._weekday_matches(day)
        if self.dow is None:
            return self._month_day_matches(day)
        return self._month_day_matches(day) or self._weekday_matches(day)

    def _month_day_matches(self, day: date) -> bool:
        assert self.dom is not None
        month_end = calendar.monthrange(day.year, day.month)[1]
        if day.day in self.dom or (self.last_day and day.day == month_end):
            return True
        if self.last_weekday and day == _weekday_near(day, month_end):
            return True
        return any(day == _weekday_near(day, n) for n in self.nearest_weekday)

    def _weekday_matches(self, day: date) -> bool:
        assert self.dow is not None
        weekday = day.isoweekday()
        if weekday in self.dow or (weekday, (day.day + 6) // 7) in self.nth_dow:
            return True
        month_end = calendar.monthrange(day.year, day.month)[1]
        return weekday in self.last_dow and month_end - day.day < 7


def _month_days(text: str) -> tuple[frozenset[int] | None, bool, bool, frozenset[int]]:
    """Day-of-month: (days or None for any, `L`, `LW`, the `nW` days)."""
    if text in ("*", "?"):
        return None, False, False, frozenset()
    days: set[int] = set()
    last_day = last_weekday = False
    nearest: set[int] = set()
    for part in text.split(","):
        if part == "L":
            last_day = True
        elif part == "LW":
            last_weekday = True
        elif part.endswith("W"):
            nearest.add(_DOM.number(part[:-1]))
        else:
            days |= _DOM.values(part)
    return frozenset(days), last_day, last_weekday, frozenset(nearest)


def _weekdays(
    text: str,
) -> tuple[frozenset[int] | None, frozenset[int], frozenset[tuple[int, int]]]:
    """Day-of-week: (days or None for any, the `nL` days, the `n#k` pairs)."""
    if text in ("*", "?"):
        return None, frozenset(), frozenset()
    days: set[int] = set()
    last: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for part in text.split(","):
        day, hash_, week = part.partition("#")
        if hash_:
            nth.add((_DOW.number(day), _number(week, 1, 5, "day-of-week #week")))
        elif len(part) > 1 and part.endswith("L"):
            last.add(_DOW.number(part[:-1]))
        else:
            days |= _DOW.values(part)
    return frozenset(days), frozenset(last), frozenset(nth)


def _weekday_near(day: date, day_of_month: int) -> date:
    """`nW`: the Monday-Friday day nearest to the n-th of `day`'s month, within that month."""
    month_end = calendar.monthrange(day.year, day.month)[1]
    target = day.replace(day=min(day_of_month, month_end))
    shift = {6: -1 if target.day > 1 else 2, 7: 1 if target.day < month_end else -2}
    return target + timedelta(days=shift.get(target.isoweekday(), 0))


@dataclass(frozen=True, slots=True)
class _Cron:
    """A parsed cron expression: the times of day it runs, and on which days."""

    times_s: tuple[int, ...]  # seconds after local midnight, sorted
    months: frozenset[int]
    years: frozenset[int] | None
    days: _Days
    zone: tzinfo

    @classmethod
    def parse(cls, text: str) -> _Cron:
        """Six fields, an optional year, an optional time zone."""
        tokens = text.split()
        if not 6 <= len(tokens) <= 8:
            raise FrequencyError(
                "a cron expression has 6 fields (second .. day-of-week), "
                "an optional year and an optional time zone"
            )
        extra = tokens[6:]
        year = extra.pop(0) if extra and _YEAR_LIKE.fullmatch(extra[0]) else "*"
        zone = _zone(extra.pop(0)) if extra else UTC
        if extra:
            raise FrequencyError(f"unexpected cron field {extra[0]!r}")
        second, minute, hour, dom, month, dow = tokens[:6]
        for token, what in (
            (second, "second"),
            (minute, "minute"),
            (hour, "hour"),
            (month, "month"),
        ):
            if "?" in token:
                raise FrequencyError(f"'?' is only allowed in the day fields, not in the {what}")
        seconds = sorted(_SECOND.values(second))
        _check_spacing(seconds, 60)  # fast refusal before the day's times are multiplied out
        times = sorted(
            h * 3600 + m * 60 + s
            for h in _HOUR.values(hour)
            for m in _MINUTE.values(minute)
            for s in seconds
        )
        return cls(
            times_s=tuple(times),
            months=frozenset(_MONTH.values(month)),
            years=None if year == "*" else frozenset(_YEAR.values(year)),
            days=_Days.parse(dom, dow),
            zone=zone,
        )

    def check(self, text: str, now_s: float) -> Frequency:
        """Refuse a schedule that never runs or runs twice within 10 seconds."""
        start = datetime.fromtimestamp(now_s, self.zone).date()
        first_day = next(self._run_days(start), None)
        if first_day is None:
            raise FrequencyError("the cron expression matches no date from now to 2099")
        gap_s = _check_spacing(self.times_s, _DAY_S)
        overnight_s = _DAY_S - self.times_s[-1] + self.times_s[0]
        if overnight_s < MIN_INTERVAL_S and self._two_days_in_a_row(start):
            raise _too_close(overnight_s)
        if isinstance(self.zone, ZoneInfo):
            gap_s = min(gap_s, self._dst_gap_s(start))
        return Frequency("cron", text, self._next_run_s(now_s), gap_s)

    def _run_days(self, start: date) -> Iterator[date]:
        """The days the schedule runs on, from `start` to the end of 2099, in order."""
        for year in range(start.year, _LAST_YEAR + 1):
            if self.years is not None and year not in self.years:
                continue
            for month in sorted(self.months):
                if (year, month) < (start.year, start.month):
                    continue
                for day_of_month in range(1, calendar.monthrange(year, month)[1] + 1):
                    day = date(year, month, day_of_month)
                    if day >= start and self.days.runs_on(day):
                        yield day

    def _two_days_in_a_row(self, start: date) -> bool:
        """True when two consecutive days both run (their last and first runs are close)."""
        previous: date | None = None
        for day in self._run_days(start):
            if previous is not None and (day - previous).days == 1:
                return True
            previous = day
        return False

    def _instants(self, day: date) -> list[float]:
        """Epoch seconds of the runs on `day` (local times read in the schedule's zone)."""
        midnight = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return [(midnight + timedelta(seconds=t)).timestamp() for t in self.times_s]

    def _next_run_s(self, now_s: float) -> float | None:
        """The first run after `now_s`."""
        start = datetime.fromtimestamp(now_s, self.zone).date()
        for day in itertools.islice(self._run_days(start), 2):
            later = [t for t in self._instants(day) if t > now_s]
            if later:
                return later[0]
        return None

    def _dst_gap_s(self, start: date) -> float:
        """The shortest real gap around the zone's offset changes in the coming year."""
        shortest = float(_DAY_S)
        for offset in range(_DST_LOOKAHEAD_DAYS):
            day = start + timedelta(days=offset)
            if _offset(day, self.zone) == _offset(day + timedelta(days=1), self.zone):
                continue
            around = (day - timedelta(days=1), day, day + timedelta(days=1))
            instants = sorted({t for d in around if self._runs(d) for t in self._instants(d)})
            for earlier, later in itertools.pairwise(instants):
                if later - earlier < MIN_INTERVAL_S:
                    raise _too_close(later - earlier, "across a daylight-saving change")
                shortest = min(shortest, later - earlier)
        return shortest

    def _runs(self, day: date) -> bool:
        """True when the schedule runs on `day` (year, month and day fields)."""
        if self.years is not None and day.year not in self.years:
            return False
        return day.month in self.months and self.days.runs_on(day)


def _offset(day: date, zone: tzinfo) -> timedelta | None:
    """The zone's UTC offset at local midnight of `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).utcoffset()


def _check_spacing(times_s: list[int] | tuple[int, ...], period_s: int) -> float:
    """The shortest gap between consecutive times (within one period); refuse one under 10 s."""
    gaps = [b - a for a, b in itertools.pairwise(times_s)]
    shortest = min(gaps, default=period_s)
    if shortest < MIN_INTERVAL_S:
        raise _too_close(shortest)
    return float(shortest)


def _too_close(gap_s: float, where: str = "") -> FrequencyError:
    """The S7 refusal."""
    suffix = f" {where}" if where else ""
    return FrequencyError(
        f"two runs are {gap_s:g} s apart{suffix}; they must be at least {MIN_INTERVAL_S} s apart"
    )

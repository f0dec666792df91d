"""The simulated time of executions: seeded per-instance timing, periodic run times, timestamps.

An accepted invocation gets a `TimingPlan` (what its timing is drawn from); the per-instance
`Timing` (pending delay, run time, exit code) is drawn from the plan's own seeded generator on
first look, so the request path pays nothing per instance and outcomes do not depend on the
order in which requests arrived. A periodic invocation's run times are found by `RunTimes`,
as far as the clock has got. Pure: no clock reads (callers pass `now`), no I/O.
"""

from __future__ import annotations

import bisect
import functools
import random
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fanout.emulator.schedule import Schedule

__all__ = ["PENDING_MAX_S", "RunTimes", "Timing", "TimingPlan", "iso_utc", "iso_utc_ms"]

PENDING_MAX_S = 0.3  # time to verify and deliver a command before it runs
_MAX_TRACKED_RUNS = 200_000  # periodic run times kept exactly; beyond, counts are extrapolated
_ISO_CACHE_SIZE = 65536  # result pages repeat the same few seconds over and over


def iso_utc(t: float | None) -> str:
    """`2026-11-28T06:00:00Z`, or "" for no time."""
    if t is None:
        return ""
    return _iso_second(int(t))


@functools.lru_cache(maxsize=_ISO_CACHE_SIZE)
def _iso_second(t: int) -> str:
    """One whole second as ISO 8601 UTC (cached)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc_ms(t: float) -> str:
    """`2026-11-28T06:00:00.123Z`."""
    moment = datetime.fromtimestamp(t, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class TimingPlan:
    """What an invocation's timing is drawn from: drawn on first look, not in the request."""

    seed: str
    count: int
    pending_max_s: float
    low_s: float
    span_s: float
    failure_fraction: float
    # Delivery failures: cumulative shares, one per code of `Timing.failure` (1-based).
    delivery_failures: tuple[float, ...] = ()

    def draw(self) -> Timing:
        """The per-instance timing, from the plan's own seeded generator."""
        rng = random.Random(self.seed)
        draw = rng.random  # plain random() draws: ~5x cheaper than uniform()/randint()
        timing = Timing()
        for _ in range(self.count):
            timing.pending_s.append(draw() * self.pending_max_s)
            timing.duration_s.append(self.low_s + self.span_s * draw())
            failed = draw() < self.failure_fraction
            timing.exit_code.append(1 + int(draw() * 127) if failed else 0)
        if self.delivery_failures:  # drawn after the rest: without them the draws stay the same
            shares = self.delivery_failures
            for _ in range(self.count):
                index = bisect.bisect_right(shares, draw())  # below shares[k]: code k + 1
                timing.failure.append(index + 1 if index < len(shares) else 0)
        return timing


@dataclass(slots=True)
class Timing:
    """Seeded per-instance plan: pending delay, run time, exit code (parallel arrays)."""

    pending_s: array[float] = field(default_factory=lambda: array("d"))
    duration_s: array[float] = field(default_factory=lambda: array("d"))
    exit_code: array[int] = field(default_factory=lambda: array("h"))
    # Per instance: 0, or the 1-based number of its delivery failure code (empty: none drawn).
    failure: array[int] = field(default_factory=lambda: array("b"))


class RunTimes:
    """The run times of a periodic invocation found so far (ascending), extended on demand."""

    __slots__ = ("_created_s", "_runs", "_schedule")

    def __init__(self, schedule: Schedule | None, created_s: float) -> None:
        self._schedule = schedule
        self._created_s = created_s
        self._runs = array("d")

    def until(self, horizon_s: float) -> tuple[int, float]:
        """(number of scheduled runs at or before `horizon_s`, time of the last one)."""
        schedule = self._schedule
        if schedule is None or horizon_s < self._created_s:
            return 0, self._created_s
        if schedule.period_s is not None:
            count = int((horizon_s - self._created_s) // schedule.period_s) + 1
            return count, self._created_s + (count - 1) * schedule.period_s
        runs = self._runs
        after = runs[-1] if runs else self._created_s - 1
        while after < horizon_s and len(runs) < _MAX_TRACKED_RUNS:
            following = schedule.next_run(after, self._created_s)
            if following is None or following > horizon_s:
                break
            runs.append(following)
            after = following
        count = bisect.bisect_right(runs, horizon_s)
        if len(runs) >= _MAX_TRACKED_RUNS and horizon_s > runs[-1]:
            gap = (runs[-1] - runs[0]) / (len(runs) - 1)
            count += int((horizon_s - runs[-1]) // gap)
        return count, runs[count - 1] if 0 < count <= len(runs) else horizon_s

"""Daily-quota arithmetic (pure): which calls count, how many are left, when capacity frees.

The limit is the account's own, per region: DescribeAccountAttributes reports it as
`max-axt-invocation-daily` (facts 10 [16]; the old reference said 5000 per region, a later one
2 000 - 200 000 by ECS usage, the current one no number). `--daily-quota` overrides it; 5000 is
only the fallback when it cannot be read (`RegionQuotas`). The provider's day boundary is not
documented, so the default accounting is a rolling 24 h window, which is safe whatever it is; a
calendar day in a configurable time zone is an option (DESIGN invariant I3).

The API's `Invocation.ExceedQuota` is authoritative (`QuotaBlock`): when fanout's own calls in
the window reach the API's limit, capacity returns as that window moves; otherwise other users
of the account spent it, nobody can say when it returns, and fanout probes with one call at a
time on a growing schedule (`probe_delay_s`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "DAY_S",
    "DEFAULT_DAILY_QUOTA",
    "PROBE_FIRST_S",
    "PROBE_MAX_S",
    "QUOTA_ATTRIBUTE",
    "QuotaBlock",
    "QuotaMode",
    "QuotaPolicy",
    "RegionLimit",
    "RegionQuotas",
    "probe_at",
]

DAY_S = 86_400.0
DEFAULT_DAILY_QUOTA = 5000  # spec S1: the fallback when the account's own limit cannot be read
QUOTA_ATTRIBUTE = "max-axt-invocation-daily"  # DescribeAccountAttributes (facts 10 [16])
# After an unexplained refusal a region is probed with one call, 15 min later, then at doubling
# intervals up to 4 h (at least a minute apart and growing: at most 4 refusals in 3 hours); never
# later than just after the next quota day starts, when capacity most likely returns.
PROBE_FIRST_S = 900.0
PROBE_MAX_S = 4 * 3600.0
_PROBE_MIN_S = 60.0
_AFTER_DAY_START_S = 60.0


class QuotaMode(enum.StrEnum):
    """How the quota day is counted."""

    ROLLING = "rolling"
    CALENDAR = "calendar"


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    """The daily InvokeCommand quota of one account, per region."""

    daily_quota: int = DEFAULT_DAILY_QUOTA
    reserve: int = 0  # calls left for other tools and people
    mode: QuotaMode = QuotaMode.ROLLING
    time_zone: str = "Asia/Shanghai"  # calendar mode only: the day Alibaba Cloud counts in

    @property
    def limit(self) -> int:
        """Calls fanout may make per region per quota day."""
        return max(0, self.daily_quota - self.reserve)

    def window_start(self, now: float) -> float:
        """Calls made strictly after this epoch second count against the current day."""
        if self.mode is QuotaMode.ROLLING:
            return now - DAY_S
        local = datetime.fromtimestamp(now, ZoneInfo(self.time_zone))
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight.timestamp() - 1e-6

    def left(self, used: int) -> int:
        """Calls still allowed given `used` in the window."""
        return max(0, self.limit - used)

    def frees_at(self, times_in_window: Sequence[float], now: float, needed: int = 1) -> float:
        """Epoch second when `needed` more calls will be allowed (`now` if already)."""
        used = len(times_in_window)
        over = used + needed - self.limit
        if over <= 0:
            return now
        if self.mode is QuotaMode.ROLLING:
            ordered = sorted(times_in_window)
            if over > len(ordered):  # more than a whole day's worth: a day after the newest
                return (ordered[-1] if ordered else now) + DAY_S
            return ordered[over - 1] + DAY_S
        return self.next_day_start(now)

    def next_day_start(self, now: float) -> float:
        """The next midnight in the policy's time zone (where a calendar quota day starts)."""
        tz = ZoneInfo(self.time_zone)
        local = datetime.fromtimestamp(now, tz)
        tomorrow = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return tomorrow.timestamp()


@dataclass(frozen=True, slots=True)
class RegionLimit:
    """A region's daily limit and where it comes from."""

    limit: int
    source: str  # "api" (read), "configured" (--daily-quota / config), "default" (not readable)
    api_limit: int | None = None  # what the API reported, also when overridden
    error: str | None = None  # why it could not be read


@dataclass(slots=True)
class RegionQuotas:
    """The quota policy of every region: the account's own limit, else the configured one.

    Mutable on purpose: a run re-reads a region's limit when it waits for quota (a raised
    quota shows up without a restart), through `update`.
    """

    base: QuotaPolicy = field(default_factory=QuotaPolicy)  # reserve, mode, time zone, fallback
    limits: dict[str, RegionLimit] = field(default_factory=dict)

    def update(self, region: str, limit: RegionLimit) -> None:
        """Use `limit` for `region` from now on."""
        self.limits[region] = limit

    def limit_of(self, region: str) -> RegionLimit | None:
        """The region's limit and its source (None: the fallback, never read)."""
        return self.limits.get(region)

    def policy(self, region: str) -> QuotaPolicy:
        """The policy fanout counts `region`'s calls against."""
        found = self.limits.get(region)
        return self.base if found is None else replace(self.base, daily_quota=found.limit)

    def api_limit(self, region: str) -> int | None:
        """The limit the API reported for `region` (None: not read)."""
        found = self.limits.get(region)
        return None if found is None else found.api_limit


@dataclass(frozen=True, slots=True)
class QuotaBlock:
    """Why a region may not call InvokeCommand now, for the verdict and the waits.

    `code` is None when fanout's own count reached its limit (nothing was refused); otherwise it
    is the API's refusal, `explained` when fanout's own calls in the window reach the API's
    limit (then `frees_at` is when its window frees a call), else `probe_at` is when one probe
    call may go, and `refusals` counts the refusals in a row (the probe schedule's step).
    """

    region: str
    code: str | None = None
    message: str = ""
    request_id: str | None = None
    used: int = 0
    limit: int | None = None
    explained: bool = True
    frees_at: float | None = None
    probe_at: float | None = None
    refusals: int = 0
    settled: bool = True  # False: set the instant the refusal arrived, before it was weighed

    @property
    def refused(self) -> bool:
        """True when the API refused a call (rather than fanout's own count stopping it)."""
        return self.code is not None

    @property
    def until(self) -> float | None:
        """When the region may try again: the window frees, or the probe is due."""
        return self.frees_at if self.explained else self.probe_at


def probe_at(policy: QuotaPolicy, now: float, refusals: int) -> float:
    """When to probe after the `refusals`-th unexplained refusal in a row: 15 min, doubling up
    to 4 h, but just after the next quota day starts if that comes first (never within a
    minute)."""
    backoff = min(PROBE_MAX_S, PROBE_FIRST_S * 2.0 ** max(0, refusals - 1))
    day = policy.next_day_start(now) + _AFTER_DAY_START_S
    return max(now + _PROBE_MIN_S, min(now + backoff, day))

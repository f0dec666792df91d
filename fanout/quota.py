"""Daily-quota arithmetic (pure): which calls count, how many are left, when capacity frees.

The quota is 5000 InvokeCommand calls per region per day (spec S1). The provider's day boundary
is not documented, so the default accounting is a rolling 24 h window, which is safe whatever it
is; a calendar day in a configurable time zone is an option (DESIGN invariant I3).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["DAY_S", "DEFAULT_DAILY_QUOTA", "QuotaMode", "QuotaPolicy"]

DAY_S = 86_400.0
DEFAULT_DAILY_QUOTA = 5000  # spec S1: InvokeCommand calls per region per day


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
        tz = ZoneInfo(self.time_zone)
        local = datetime.fromtimestamp(now, tz)
        tomorrow = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return tomorrow.timestamp()

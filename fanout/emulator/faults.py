"""Seeded fault injection and the per-region, per-action rate limit, in throttling windows.

ECS throttles per API, per region and per account in one-minute windows: "if an API is throttled
at minute T, it can be called again at minute T+1" (facts 6.2, 10 [9]). Both the rate limit
(`qps` calls a second on average: `qps * throttle_window_s` calls per window) and the random
throttling (`throttle_rate`: the share of (region, API, window) windows throttled from their first
call to their end) follow those windows. The emulator serves one account: every key pair is one
of its RAM users, so they share the limits.

Error and drop draws come from one seeded stream, so a given seed and request order always
injects the same faults; a window's throttling is drawn from the seed, region, API and the
window's number since the emulator started (whatever the request order or the time of day).
Accept-then-drop is drawn separately, after the action.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from enum import StrEnum

from fanout.emulator.config import EmulatorConfig

__all__ = ["ACCEPT_THEN_DROP_ACTIONS", "Fault", "FaultInjector", "QpsLimiter"]

# Only calls that change state can be "applied, then lost"; they are the ambiguous ones.
ACCEPT_THEN_DROP_ACTIONS = frozenset({"InvokeCommand", "StopInvocation"})


class Fault(StrEnum):
    """What happens to a request before its action runs."""

    NONE = "none"
    THROTTLE = "throttle"  # Throttling.User, 400
    ERROR = "error"  # InternalError.Dispatch, 500
    DROP = "drop"  # connection closed, request not applied


class FaultInjector:
    """Seeded decisions for `error_rate`, `throttle_rate`, `drop_rate`, `accept_then_drop_rate`."""

    def __init__(self, config: EmulatorConfig, start_s: float = 0.0) -> None:
        self._seed = config.seed
        self._rng = random.Random(f"faults:{config.seed}")
        self._actions = config.fault_actions
        self._throttle = config.throttle_rate
        self._error = config.error_rate
        self._drop = config.drop_rate
        self._accept_then_drop = config.accept_then_drop_rate
        self._window_s = config.throttle_window_s
        self._first_window = int(start_s // config.throttle_window_s)
        self._windows: dict[tuple[str, str], tuple[int, bool]] = {}  # last window's draw

    def _applies(self, action: str) -> bool:
        return self._actions is None or action in self._actions

    def before(self, region: str, action: str, now_s: float) -> Fault:
        """The fault injected before the action runs, if any."""
        if not self._applies(action):
            return Fault.NONE
        if self._throttle and self._throttled_window(region, action, now_s):
            return Fault.THROTTLE
        if not (self._error or self._drop):
            return Fault.NONE
        draw = self._rng.random()
        if draw < self._error:
            return Fault.ERROR
        if draw < self._error + self._drop:
            return Fault.DROP
        return Fault.NONE

    def _throttled_window(self, region: str, action: str, now_s: float) -> bool:
        """Whether the current window of (region, action) is a throttled one (seeded)."""
        window = int(now_s // self._window_s)
        key = (region, action)
        last = self._windows.get(key)
        if last is None or last[0] != window:
            number = window - self._first_window
            draw = random.Random(f"throttle:{self._seed}:{region}:{action}:{number}").random()
            last = self._windows[key] = (window, draw < self._throttle)
        return last[1]

    def window_end(self, now_s: float) -> float:
        """When the throttling window holding `now_s` ends (the emulator clock)."""
        return (math.floor(now_s / self._window_s) + 1) * self._window_s

    def drop_after(self, action: str) -> bool:
        """True when the applied action's response must be lost."""
        if action not in ACCEPT_THEN_DROP_ACTIONS or not self._applies(action):
            return False
        return self._accept_then_drop > 0 and self._rng.random() < self._accept_then_drop


class QpsLimiter:
    """At most `qps * window_s` calls per (region, action) in each window of `window_s` seconds
    (one minute by default: facts 10 [9]); `region_qps` sets a region's own rate."""

    __slots__ = ("_qps", "_region_qps", "_window_s", "_windows")

    def __init__(
        self,
        qps: float | None,
        region_qps: Mapping[str, float] | None = None,
        window_s: float = 60.0,
    ) -> None:
        self._qps = qps
        self._region_qps = dict(region_qps or {})
        self._window_s = window_s
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}

    def allow(self, region: str, action: str, now_s: float) -> bool:
        """Count one call at `now_s` (the emulator clock); False when it is over the limit of
        the current window (then every call of the window is refused: throttled at T, T+1)."""
        rate = self._region_qps.get(region, self._qps)
        if rate is None:
            return True
        limit = max(1, math.floor(rate * self._window_s))
        window = int(now_s // self._window_s)
        key = (region, action)
        current, count = self._windows.get(key, (window, 0))
        if current != window:
            count = 0
        if count >= limit:
            self._windows[key] = (window, count)
            return False
        self._windows[key] = (window, count + 1)
        return True

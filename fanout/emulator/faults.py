"""Seeded fault injection and the per-region, per-action QPS limit.

The fault draws come from one seeded stream, so a given seed and request order always injects
the same faults. Throttle, error and drop share one draw (their rates add up to at most 1);
accept-then-drop is drawn separately, after the action was applied.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from enum import StrEnum

from fanout.emulator.config import EmulatorConfig

__all__ = ["ACCEPT_THEN_DROP_ACTIONS", "Fault", "FaultInjector", "QpsLimiter"]

# Only calls that change state can be "applied, then lost"; they are the ambiguous ones.
ACCEPT_THEN_DROP_ACTIONS = frozenset({"InvokeCommand", "StopInvocation"})
_WINDOW_S = 1.0


class Fault(StrEnum):
    """What happens to a request before its action runs."""

    NONE = "none"
    THROTTLE = "throttle"  # Throttling.User, 400
    ERROR = "error"  # InternalError.Dispatch, 500
    DROP = "drop"  # connection closed, request not applied


class FaultInjector:
    """Seeded decisions for `error_rate`, `throttle_rate`, `drop_rate`, `accept_then_drop_rate`."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._rng = random.Random(f"faults:{config.seed}")
        self._actions = config.fault_actions
        self._throttle = config.throttle_rate
        self._error = config.error_rate
        self._drop = config.drop_rate
        self._accept_then_drop = config.accept_then_drop_rate

    def _applies(self, action: str) -> bool:
        return self._actions is None or action in self._actions

    def before(self, action: str) -> Fault:
        """The fault injected before the action runs, if any."""
        if not self._applies(action) or not (self._throttle or self._error or self._drop):
            return Fault.NONE
        draw = self._rng.random()
        if draw < self._throttle:
            return Fault.THROTTLE
        if draw < self._throttle + self._error:
            return Fault.ERROR
        if draw < self._throttle + self._error + self._drop:
            return Fault.DROP
        return Fault.NONE

    def drop_after(self, action: str) -> bool:
        """True when the applied action's response must be lost."""
        if action not in ACCEPT_THEN_DROP_ACTIONS or not self._applies(action):
            return False
        return self._accept_then_drop > 0 and self._rng.random() < self._accept_then_drop


class QpsLimiter:
    """At most `qps` calls per (region, action) in each one-second window; `region_qps` sets a
    region's own limit (ECS throttles per API and region: aliyun-api-facts 6.2)."""

    __slots__ = ("_qps", "_region_qps", "_windows")

    def __init__(self, qps: float | None, region_qps: Mapping[str, float] | None = None) -> None:
        self._qps = qps
        self._region_qps = dict(region_qps or {})
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}

    def allow(self, region: str, action: str, now_s: float) -> bool:
        """Count one call at `now_s` (the emulator clock); False when it is over the limit of
        the current window."""
        limit = self._region_qps.get(region, self._qps)
        if limit is None:
            return True
        window = int(now_s // _WINDOW_S)
        key = (region, action)
        current, count = self._windows.get(key, (window, 0))
        if current != window:
            count = 0
        if count >= limit:
            self._windows[key] = (window, count)
            return False
        self._windows[key] = (window, count + 1)
        return True

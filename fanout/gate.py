"""The gate every InvokeCommand passes: concurrency, per-region rate, throttling back-off, quota.

Three limits, never one (STYLE 4): `aiolimiter.AsyncLimiter` meters the per-second rate of a
region, `anyio.CapacityLimiter`s bound calls in flight (all regions, and per region), and the
daily quota is a durable reservation in the ledger (`BeginAttempt`), taken by the caller.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from aiolimiter import AsyncLimiter

__all__ = ["Backoff", "Gate"]

# Throttling back-off: ECS throttles per minute ("throttled at minute T, calls continue at T+1",
# facts 6.2), so the pause grows from 1 s up to a minute and resets on the first success.
_THROTTLE_FIRST_S = 1.0
_THROTTLE_MAX_S = 60.0


@dataclass(slots=True)
class Backoff:
    """Exponential back-off with full jitter for retryable failures of one batch."""

    base_s: float = 0.2
    cap_s: float = 10.0
    failures: int = 0

    def next_delay_s(self, hint_s: float | None = None) -> float:
        """The delay before the next try (at least the server's hint, if any)."""
        self.failures += 1
        ceiling = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        return max(delay, hint_s or 0.0)


class _Slot:
    """A slot of a CapacityLimiter, taken without a trip through the event loop when one is free.

    `async with limiter` always checkpoints (a yield to the loop); at ~1 000 calls a second
    through two limiters that is a measurable share of the runner's CPU. Waiters keep their
    order: `acquire_nowait` refuses while anyone is queued.
    """

    __slots__ = ("_limiter",)

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter

    async def __aenter__(self) -> None:
        try:
            self._limiter.acquire_nowait()
        except anyio.WouldBlock:
            await self._limiter.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self._limiter.release()


class _Region:
    """One region's limiter, slots and throttle pause."""

    __slots__ = ("limiter", "paused_until", "slots", "throttle_s")

    def __init__(self, rate_per_s: float, concurrency: int) -> None:
        self.limiter = AsyncLimiter(rate_per_s, 1.0) if rate_per_s > 0 else None
        self.slots = _Slot(anyio.CapacityLimiter(concurrency))
        self.paused_until = 0.0
        self.throttle_s = 0.0


class Gate:
    """Admission control for InvokeCommand calls."""

    __slots__ = ("_rate_per_s", "_region_concurrency", "_regions", "_slots")

    def __init__(self, *, concurrency: int, region_concurrency: int, rate_per_s: float) -> None:
        self._slots = _Slot(anyio.CapacityLimiter(concurrency))
        self._region_concurrency = region_concurrency
        self._rate_per_s = rate_per_s
        self._regions: dict[str, _Region] = {}

    def _region(self, region: str) -> _Region:
        """The region's state, created on first use."""
        state = self._regions.get(region)
        if state is None:
            state = self._regions[region] = _Region(self._rate_per_s, self._region_concurrency)
        return state

    @asynccontextmanager
    async def sending(self, region: str) -> AsyncIterator[None]:
        """Admission for one call: a region slot, the throttle pause and rate, then a global slot.

        A paused (throttled) region holds only its own slots, never the global ones.
        """
        state = self._region(region)
        async with state.slots:
            pause = state.paused_until - time.monotonic()
            if pause > 0:
                await anyio.sleep(pause)
            if state.limiter is not None:
                await state.limiter.acquire()
            async with self._slots:
                yield

    def throttled(self, region: str, hint_s: float | None = None) -> float:
        """The server throttled us: pause the region, doubling the pause each time in a row."""
        state = self._region(region)
        state.throttle_s = min(_THROTTLE_MAX_S, max(_THROTTLE_FIRST_S, state.throttle_s * 2))
        pause = max(state.throttle_s, hint_s or 0.0)
        state.paused_until = max(state.paused_until, time.monotonic() + pause)
        return pause

    def succeeded(self, region: str) -> None:
        """A call went through: the throttle pause starts from scratch next time."""
        self._region(region).throttle_s = 0.0

"""The gate every InvokeCommand passes: concurrency, per-region rate, throttling back-off, quota.

Three limits, never one (STYLE 4): `aiolimiter.AsyncLimiter` meters the per-second rate of a
region, `anyio.CapacityLimiter`s bound calls in flight (all regions, and per region), and the
daily quota is a durable reservation in the ledger (`BeginAttempt`), taken by the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from aiolimiter import AsyncLimiter

from fanout.clock import Clock

__all__ = ["Gate", "per_second"]

# Throttling back-off: ECS throttles per minute ("throttled at minute T, calls continue at T+1",
# facts 6.2), so the pause grows from 1 s up to a minute and resets on the first success.
_THROTTLE_FIRST_S = 1.0
_THROTTLE_MAX_S = 60.0
# Intents written ahead per call slot: while one call is on the wire the next intent commits.
_INTENTS_PER_SLOT = 2


def per_second(rate_per_s: float) -> AsyncLimiter:
    """A limiter letting `rate_per_s` acquisitions through per second, a fraction included:
    0.5 is one every two seconds (aiolimiter refuses to hand out one unit from a bucket that
    holds less than one, so a slow pace is one unit per 1/rate seconds)."""
    if rate_per_s >= 1:
        return AsyncLimiter(rate_per_s, 1.0)
    return AsyncLimiter(1, 1.0 / rate_per_s)


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

    __slots__ = ("limiter", "paused_until", "queued", "slots", "throttle_s")

    def __init__(self, rate_per_s: float, concurrency: int) -> None:
        self.limiter = per_second(rate_per_s) if rate_per_s > 0 else None
        self.slots = _Slot(anyio.CapacityLimiter(concurrency))
        self.paused_until = 0.0
        self.throttle_s = 0.0
        self.queued = 0  # callers waiting for admission (their calls are not on the wire)


class Gate:
    """Admission control for InvokeCommand calls."""

    __slots__ = ("_clock", "_intents", "_rate_per_s", "_region_concurrency", "_regions", "_slots")

    def __init__(
        self, clock: Clock, *, concurrency: int, region_concurrency: int, rate_per_s: float
    ) -> None:
        self._clock = clock
        self._slots = _Slot(anyio.CapacityLimiter(concurrency))
        # Batches admitted with their intent written ahead of a call slot, all regions together.
        self._intents = _Slot(anyio.CapacityLimiter(concurrency * _INTENTS_PER_SLOT))
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
    async def admitted(self, region: str) -> AsyncIterator[None]:
        """Admission of one batch of `region`: the throttle pause and the rate, then one of the
        permits for intents written ahead of a call slot (`sending` takes the slots).

        A paused or rate-bound region waits on its own pause and tokens, never holding a
        permit another region could use; every wait is FIFO, so regions are served in turn.
        """
        state = self._region(region)
        await self._paused(state)
        if state.limiter is not None:
            await state.limiter.acquire()
        async with self._intents:
            yield

    @asynccontextmanager
    async def sending(self, region: str) -> AsyncIterator[None]:
        """A call slot of `region` (its throttle pause honoured again: the intent may have been
        written before the pause began), then one of the `--concurrency` slots of all regions.

        The region's slots bound its calls on the wire only, not the intent's commit before
        them: a slot held across the commit cost every call the commit's latency (~14 ms a call
        in bench_regions dispatch-4x500-unlimited)."""
        state = self._region(region)
        async with state.slots:
            await self._paused(state)
            async with self._slots:
                yield

    async def _paused(self, state: _Region) -> None:
        """Wait out the region's throttle pause, if any."""
        pause = state.paused_until - self._clock.monotonic()
        if pause > 0:
            await self._clock.sleep(pause)

    def throttled(self, region: str, hint_s: float | None = None) -> float:
        """The server throttled a call of `region`: pause the region (and only it).

        The pause doubles (1 s up to a minute) only for a throttle answered after the last pause
        ended: the answers of calls that were already in flight when the region was paused are
        the same throttle, not a new one. Returns how long the region is paused from now.
        """
        state = self._region(region)
        now = self._clock.monotonic()
        if state.paused_until > now:  # an answer to a call sent before the pause began
            state.paused_until = max(state.paused_until, now + (hint_s or 0.0))
            return state.paused_until - now
        state.throttle_s = min(_THROTTLE_MAX_S, max(_THROTTLE_FIRST_S, state.throttle_s * 2))
        state.paused_until = now + max(state.throttle_s, hint_s or 0.0)
        return state.paused_until - now

    def succeeded(self, region: str) -> None:
        """A call went through: the throttle pause starts from scratch next time."""
        self._region(region).throttle_s = 0.0

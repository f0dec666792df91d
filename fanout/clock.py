"""The clock seam: wall time, monotonic time and sleep, injected wherever the runner reads time.

Every time read of the runner and its stages goes through a `Clock` handed down in the run's
context, so tests run on `FakeClock` (no sleeps, no elapsed-time asserts: aiolimiter's way) and a
simulation can later run days in minutes by passing a faster clock here — this is the seam.
Request signing is the one exception: its timestamps and nonces always use the real wall clock
(`fanout.aliyun.client`), since the server checks them against its own.
"""

from __future__ import annotations

import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.lowlevel

__all__ = ["SYSTEM_CLOCK", "Backoff", "Clock", "FakeClock", "SystemClock", "sleep_or_wake"]


class Clock(Protocol):
    """Where time comes from."""

    def time(self) -> float:
        """Wall-clock time, Unix seconds (ledger stamps, quota windows, leases)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (durations, pauses, rates)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...

    def exchange(self) -> AbstractContextManager[None]:
        """Around one HTTP exchange with the API: nothing on a real clock; a simulated one must
        not skip time while another process (the emulator as a child) owes the answer."""
        ...


_NOTHING: AbstractContextManager[None] = nullcontext()  # a real clock's `exchange`


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def time(self) -> float:
        """`time.time()`."""
        return time.time()

    def monotonic(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """`anyio.sleep`."""
        await anyio.sleep(max(0.0, seconds))

    def exchange(self) -> AbstractContextManager[None]:
        """Nothing to do: real time passes on its own."""
        return _NOTHING


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock for tests: time moves only when told, or by exactly what a sleep asks.

    With `autojump` (the default) `sleep(s)` advances both clocks by `s` at once and yields to
    the event loop, so code that waits a minute runs in microseconds and reads exactly one
    minute later. Without it, a sleeper waits until the test calls `advance` past its deadline
    (to hold one task asleep while others go on). `sleeps` records every requested sleep.
    """

    __slots__ = ("_mono", "_sleepers", "_wall", "autojump", "sleeps")

    def __init__(self, start: float = 1_800_000_000.0, *, autojump: bool = True) -> None:
        self._wall = start
        self._mono = 1_000.0
        self.autojump = autojump
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def time(self) -> float:
        """The fake wall time."""
        return self._wall

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward, waking the sleepers whose time has come."""
        self._wall += seconds
        self._mono += seconds
        due = [(deadline, event) for deadline, event in self._sleepers if deadline <= self._mono]
        for item in due:
            self._sleepers.remove(item)
            item[1].set()

    def exchange(self) -> AbstractContextManager[None]:
        """Nothing to do: this clock moves only when told."""
        return _NOTHING

    @property
    def sleeping(self) -> int:
        """How many tasks wait in `sleep` (manual mode)."""
        return len(self._sleepers)

    async def sleep(self, seconds: float) -> None:
        """Advance by `seconds` (autojump) or wait for `advance` to reach the deadline."""
        self.sleeps.append(seconds)
        if self.autojump:
            self.advance(max(0.0, seconds))
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        self._sleepers.append((self._mono + max(0.0, seconds), event))
        try:
            await event.wait()
        finally:
            self._sleepers = [item for item in self._sleepers if item[1] is not event]


async def sleep_or_wake(clock: Clock, seconds: float, wake: anyio.Event) -> bool:
    """Sleep `seconds` on `clock` unless `wake` is set first; True if woken early."""
    if wake.is_set():
        return True
    woken = False
    async with anyio.create_task_group() as tg:

        async def _sleep() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        tg.start_soon(_sleep)
        await wake.wait()
        woken = True
        tg.cancel_scope.cancel()
    return woken


@dataclass(slots=True)
class Backoff:
    """Exponential back-off with jitter: one per retried thing (a batch, a read), shared by the
    invoke stage and the client's read retries."""

    base_s: float = 0.2
    cap_s: float = 10.0
    failures: int = 0

    def next_delay_s(
        self, hint_s: float | None = None, *, hint_cap_s: float | None = None
    ) -> float:
        """The delay before the next try: doubling from `base_s` up to `cap_s`, jittered between
        half and all of it, and at least the server's hint (itself at most `hint_cap_s`)."""
        self.failures += 1
        ceiling = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        if hint_s is not None:
            delay = max(delay, hint_s if hint_cap_s is None else min(hint_s, hint_cap_s))
        return delay

    def reset(self) -> None:
        """A try went through: the next failure starts from `base_s` again."""
        self.failures = 0

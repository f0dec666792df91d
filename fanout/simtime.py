"""Simulated time: the one seam through which `fanout simulate` runs days of a rollout in minutes.

THE SIMULATED-TIME SEAM. Real runs never come here: `fanout run`, `resume`, `retry` and the
library API run on the real event loop and `fanout.clock.SYSTEM_CLOCK`. Only `fanout simulate`
(`fanout.simulate`) and the tests build a `SimulatedLoop`; nothing else imports this module.

`SimulatedLoop` is an asyncio event loop whose `time()` is simulated: it advances `time_scale`
times faster than the real monotonic clock, and it jumps over idle waits. The loop is idle when
nothing is ready to run, no socket has anything to read or write, and no worker thread is
working (a ledger write through `anyio.to_thread`, a `run_in_executor` job): then nothing can
happen before the next timer, so the loop moves its time to that timer at once instead of
sleeping. A quota wait of 20 hours thus costs no real time, while a burst of calls costs what
it costs. Everything that waits on this loop's timers follows: `anyio.sleep` (the runner's
clock, aiolimiter's rate, cancel-scope deadlines, aiohttp's timeouts) and the in-process
emulator's own waits.

`SimulatedClock` is the runner's `fanout.clock.Clock` on such a loop (wall time = the start
epoch + the loop's simulated seconds), and its `time` is also the emulator's time source, so
the runner and the emulator read one clock: executions, quota windows, throttle windows, bake
times, poll intervals, lease expiry and every timestamp in answers and in the ledger agree.
Request signing alone keeps the real wall clock (the emulator checks signatures against it).

The emulator may also run in a child process (`fanout simulate --emulator-process`, so the
runner's own memory and CPU can be measured alone). Then the clock is published to it through a
small shared file (`SimulatedClock.publish`, read by `SharedClock` in the child): the formula of
the loop's time and every jump, so both processes still read one clock. A jump over an idle wait
is then also held back while a request to the child is on its way (`SimulatedClock.exchange`,
which the API client wraps around each HTTP exchange): the child may be about to answer it.
"""

from __future__ import annotations

import asyncio
import mmap
import selectors
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio

__all__ = ["SharedClock", "SimulatedClock", "SimulatedLoop", "run_simulated"]

_T = TypeVar("_T")
# The published clock: the wall time at the loop's zero real time, that real time (monotonic),
# the time scale, and the simulated seconds jumped so far (rewritten at every jump).
_SHARED = struct.Struct("<dddd")
_JUMPED_AT = 24


class _IdleJumpSelector:
    """The loop's selector, asked first without waiting; an idle loop jumps instead of waiting."""

    __slots__ = ("_inner", "_loop")

    def __init__(self, inner: selectors.BaseSelector, loop: SimulatedLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Ready events; when there are none and the loop is idle, move time to `timeout` (the
        next timer, as the loop computed it) instead of waiting for it."""
        if timeout is not None and timeout <= 0:
            return self._inner.select(0)
        events = self._inner.select(0)
        if events:
            return events
        loop = self._loop
        if timeout is not None and loop.idle():
            loop.jump(timeout)
            return []
        # Something outside the loop is working (a thread): wait for it in real time.
        return self._inner.select(None if timeout is None else timeout / loop.time_scale)

    def __getattr__(self, name: str) -> Any:
        """register, unregister, modify, get_map, close, ...: the real selector's."""
        return getattr(self._inner, name)


class SimulatedLoop(asyncio.SelectorEventLoop):
    """An event loop on simulated time (`time_scale` x real time, idle waits skipped)."""

    def __init__(self, time_scale: float = 1.0) -> None:
        super().__init__()
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = time_scale
        self.jumped_s = 0.0  # simulated seconds skipped while idle
        self._real0 = time.monotonic()
        self._executor_jobs = 0
        self._exchanges = 0  # requests to another process on the simulated clock, unanswered
        self._thread_limiter: anyio.CapacityLimiter | None = None
        self._published: mmap.mmap | None = None
        inner: selectors.BaseSelector = self._selector  # type: ignore[has-type]
        self._selector = _IdleJumpSelector(inner, self)

    def time(self) -> float:
        """Simulated monotonic seconds: scaled real time plus every idle jump (thread-safe)."""
        return self._real0 + (time.monotonic() - self._real0) * self.time_scale + self.jumped_s

    def jump(self, seconds: float) -> None:
        """Skip `seconds` of simulated time (nothing can happen in them)."""
        self.jumped_s += seconds
        if self._published is not None:
            struct.pack_into("<d", self._published, _JUMPED_AT, self.jumped_s)

    def publish(self, path: Path, epoch_at_zero: float) -> None:
        """Write this loop's time formula to `path`, kept up to date at every jump, for a
        `SharedClock` in another process; `epoch_at_zero` is the wall time at time() == 0."""
        with path.open("wb") as file:
            file.write(_SHARED.pack(epoch_at_zero, self._real0, self.time_scale, self.jumped_s))
        with path.open("r+b") as file:
            self._published = mmap.mmap(file.fileno(), _SHARED.size)

    @contextmanager
    def exchange(self) -> Iterator[None]:
        """Hold back idle jumps while a request to another process is unanswered."""
        self._exchanges += 1
        try:
            yield
        finally:
            self._exchanges -= 1

    def watch_threads(self, limiter: anyio.CapacityLimiter) -> None:
        """Count anyio's worker threads as work in progress: `limiter` is the default thread
        limiter, whose tokens `anyio.to_thread.run_sync` holds while its thread works."""
        self._thread_limiter = limiter

    def idle(self) -> bool:
        """No worker thread is working and no other process owes an answer (sockets and ready
        callbacks are the selector's)."""
        if self._executor_jobs or self._exchanges:
            return False
        limiter = self._thread_limiter
        return limiter is None or limiter.borrowed_tokens == 0

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """As asyncio's, counted as work in progress until it is done."""
        future = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1
        future.add_done_callback(self._executor_done)
        return future

    def _executor_done(self, _future: asyncio.Future[Any]) -> None:
        self._executor_jobs -= 1


class SimulatedClock:
    """`fanout.clock.Clock` on a `SimulatedLoop`: wall time starts at `start_s` (epoch seconds)."""

    __slots__ = ("_loop", "_offset_s")

    def __init__(self, loop: SimulatedLoop, start_s: float) -> None:
        self._loop = loop
        self._offset_s = start_s - loop.time()

    def time(self) -> float:
        """Simulated wall time, Unix seconds (callable from worker threads too)."""
        return self._offset_s + self._loop.time()

    def monotonic(self) -> float:
        """Simulated monotonic seconds."""
        return self._loop.time()

    async def sleep(self, seconds: float) -> None:
        """`anyio.sleep` on the simulated loop's timers."""
        await anyio.sleep(max(0.0, seconds))

    def exchange(self) -> AbstractContextManager[None]:
        """An HTTP exchange in progress (`fanout.clock.Clock.exchange`): with the emulator in
        another process, the loop must not jump while it may still answer."""
        return self._loop.exchange()

    def publish(self, path: Path) -> None:
        """Publish this clock to `path` for a `SharedClock` in another process."""
        self._loop.publish(path, self._offset_s)


class SharedClock:
    """A `SimulatedClock` read from another process (the emulator as `fanout simulate`'s child):
    the same formula over the same monotonic clock, with the jumps the publisher writes."""

    __slots__ = ("_map",)

    def __init__(self, path: Path) -> None:
        with path.open("rb") as file:
            self._map = mmap.mmap(file.fileno(), _SHARED.size, access=mmap.ACCESS_READ)

    def time(self) -> float:
        """The simulated wall time, Unix seconds."""
        epoch_at_zero, real0, scale, jumped_s = _SHARED.unpack_from(self._map)
        return float(epoch_at_zero + real0 + (time.monotonic() - real0) * scale + jumped_s)


def run_simulated(
    main: Callable[[SimulatedClock], Awaitable[_T]],
    *,
    time_scale: float = 1.0,
    start_s: float | None = None,
) -> _T:
    """Run `main(clock)` to completion on a new `SimulatedLoop` (anyio on asyncio), its clock
    starting at `start_s` (default: now)."""
    loop = SimulatedLoop(time_scale)
    clock = SimulatedClock(loop, time.time() if start_s is None else start_s)

    box: list[_T] = []

    async def _main() -> None:  # the result goes back through `box`, as in fanout.eventloop
        loop.watch_threads(anyio.to_thread.current_default_thread_limiter())
        box.append(await main(clock))

    anyio.run(_main, backend="asyncio", backend_options={"loop_factory": lambda: loop})
    return box[0]

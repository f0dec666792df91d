"""The clock seam and the shared back-off, on the fake clock (no test here sleeps)."""

from __future__ import annotations

import random

import anyio
import pytest

from fanout.clock import SYSTEM_CLOCK, Backoff, FakeClock, sleep_or_wake


async def test_fake_sleep_moves_both_clocks_by_exactly_the_request() -> None:
    """A fake sleep of a day returns at once, a day later on the wall and monotonic clocks."""
    clock = FakeClock(start=1000.0)
    mono = clock.monotonic()
    await clock.sleep(86_400)
    assert clock.time() == 87_400.0
    assert clock.monotonic() == mono + 86_400
    assert clock.sleeps == [86_400]


async def test_sleep_or_wake_returns_early_when_the_event_is_set() -> None:
    """A long wait ends as soon as the event is set, and says it was woken."""
    clock = FakeClock()
    wake = anyio.Event()
    result: list[bool] = []

    async def waiter() -> None:
        result.append(await sleep_or_wake(SYSTEM_CLOCK, 3600, wake))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.lowlevel.checkpoint()
            wake.set()
    assert result == [True]
    assert await sleep_or_wake(clock, 10, wake) is True  # already set: no sleep at all
    assert clock.sleeps == []


async def test_sleep_or_wake_sleeps_the_full_time_when_not_woken() -> None:
    """Without the event the whole time passes on the given clock."""
    clock = FakeClock()
    assert await sleep_or_wake(clock, 42.0, anyio.Event()) is False
    assert clock.sleeps == [42.0]


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    """Each delay lies in [ceiling/2, ceiling], the ceiling doubling from base_s to cap_s."""
    random.seed(7)
    backoff = Backoff(base_s=1.0, cap_s=8.0)
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for ceiling in ceilings:
        delay = backoff.next_delay_s()
        assert ceiling / 2 <= delay <= ceiling
    assert backoff.failures == len(ceilings)


@pytest.mark.parametrize(
    ("hint", "hint_cap", "at_least"),
    [(30.0, None, 30.0), (30.0, 5.0, 5.0), (None, None, 0.05)],
)
def test_backoff_honours_the_servers_hint_within_its_cap(
    hint: float | None, hint_cap: float | None, at_least: float
) -> None:
    """A Retry-After hint lengthens the delay, to at most `hint_cap_s` when given."""
    delay = Backoff(base_s=0.1, cap_s=1.0).next_delay_s(hint, hint_cap_s=hint_cap)
    assert delay >= at_least
    if hint is not None:
        assert delay <= max(1.0, hint if hint_cap is None else hint_cap)


def test_backoff_reset_starts_from_the_base_again() -> None:
    """After a success the next delay is back at base_s scale."""
    backoff = Backoff(base_s=1.0, cap_s=60.0)
    for _ in range(5):
        backoff.next_delay_s()
    backoff.reset()
    assert backoff.next_delay_s() <= 1.0


async def test_manual_fake_clock_holds_a_sleeper_until_advanced() -> None:
    """Without autojump a sleeper waits until the test moves the clock past its deadline."""
    clock = FakeClock(autojump=False)
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(60.0)
        woke.append(clock.monotonic())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            while clock.sleeping == 0:
                await anyio.lowlevel.checkpoint()
            clock.advance(59.0)
            await anyio.sleep(0.01)
            assert woke == []
            clock.advance(1.0)
    assert woke == [clock.monotonic()]

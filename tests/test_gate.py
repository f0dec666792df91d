"""The gate on the fake clock: throttling pauses only its region, doubling up to a minute."""

from __future__ import annotations

import anyio

from fanout.clock import FakeClock
from fanout.gate import Gate


def _gate(clock: FakeClock) -> Gate:
    return Gate(clock, concurrency=4, region_concurrency=2, rate_per_s=0)


async def test_a_throttled_region_waits_its_pause_before_the_next_call() -> None:
    """After a throttle answer the region's next call waits the pause on the run's clock."""
    clock = FakeClock()
    gate = _gate(clock)
    pause = gate.throttled("cn-hangzhou")
    assert pause == 1.0
    async with gate.admitted("cn-hangzhou"), gate.sending("cn-hangzhou"):
        pass
    assert clock.sleeps == [1.0]


async def test_the_pause_doubles_per_throttle_in_a_row_up_to_a_minute_and_resets() -> None:
    """Throttles after each pause double it (1, 2, 4 ... 60 s); a success starts from 1 s again."""
    clock = FakeClock()
    gate = _gate(clock)
    pauses = []
    for _ in range(8):
        pauses.append(gate.throttled("cn-hangzhou"))
        clock.advance(pauses[-1])  # the pause is over; the next call is throttled again
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    gate.succeeded("cn-hangzhou")
    assert gate.throttled("cn-hangzhou") == 1.0


async def test_answers_of_calls_already_in_flight_do_not_lengthen_the_pause() -> None:
    """Eight calls throttled together are one throttle: the pause stays 1 s, not 2**7 s."""
    clock = FakeClock()
    gate = _gate(clock)
    pauses = [gate.throttled("cn-hangzhou") for _ in range(8)]
    assert pauses == [1.0] * 8
    clock.advance(0.5)
    assert gate.throttled("cn-hangzhou") == 0.5  # still the same pause, half of it left


async def test_the_servers_hint_lengthens_the_pause() -> None:
    """A Retry-After longer than the doubling pause is honoured."""
    assert _gate(FakeClock()).throttled("cn-hangzhou", hint_s=45.0) == 45.0


async def test_other_regions_are_not_held_by_a_throttled_one() -> None:
    """A call in another region goes through without waiting."""
    clock = FakeClock()
    gate = _gate(clock)
    gate.throttled("cn-hangzhou", hint_s=30.0)
    with anyio.fail_after(5):
        async with gate.admitted("cn-beijing"), gate.sending("cn-beijing"):
            pass
    assert clock.sleeps == []


async def test_at_most_two_intents_per_call_slot_are_admitted_across_regions() -> None:
    """With one call slot, two batches (of any regions) may hold an admission at once; a third
    waits, so no more intents (and quota reservations) are written ahead than calls can use."""
    gate = Gate(FakeClock(), concurrency=1, region_concurrency=8, rate_per_s=0)
    inside: list[str] = []
    release = anyio.Event()

    async def batch(region: str) -> None:
        async with gate.admitted(region):
            inside.append(region)
            await release.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for region in ("cn-beijing", "cn-hangzhou", "cn-shanghai"):
                tg.start_soon(batch, region)
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            assert inside == ["cn-beijing", "cn-hangzhou"]
            release.set()
    assert inside == ["cn-beijing", "cn-hangzhou", "cn-shanghai"]


async def test_a_pause_that_began_after_the_intent_is_waited_out_before_the_send() -> None:
    """A batch admitted (its intent written) before its region was throttled still waits the
    pause before its call goes on the wire."""
    clock = FakeClock()
    gate = _gate(clock)
    async with gate.admitted("cn-hangzhou"):
        assert clock.sleeps == []
        gate.throttled("cn-hangzhou")  # an answer of another call of the region, meanwhile
        async with gate.sending("cn-hangzhou"):
            pass
    assert clock.sleeps == [1.0]


async def test_a_regions_slots_bound_its_calls_on_the_wire() -> None:
    """With two slots per region, a third call of the region waits for one to be given back,
    while a call of another region goes at once."""
    gate = _gate(FakeClock())
    on_wire: list[str] = []
    release = anyio.Event()

    async def call(region: str) -> None:
        async with gate.admitted(region), gate.sending(region):
            on_wire.append(region)
            await release.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for region in ("cn-hangzhou", "cn-hangzhou", "cn-hangzhou", "cn-beijing"):
                tg.start_soon(call, region)
            await anyio.wait_all_tasks_blocked()
            assert sorted(on_wire) == ["cn-beijing", "cn-hangzhou", "cn-hangzhou"]
            release.set()
    assert on_wire.count("cn-hangzhou") == 3

"""The rehearsal's checks (pure): each invariant is found broken when it is, and the timeline
and the wave-by-wave estimate read the calls as they went."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import anyio

from fanout.rehearsal import (
    DAY_S,
    Accepted,
    calls_per_day,
    invariant_problems,
    region_timelines,
    wave_finish,
)
from fanout.simtime import SharedClock, SimulatedClock, run_simulated

START = 1_800_000_000.0


def _call(at: float, token: str, *ids: str, region: str = "cn-hangzhou") -> Accepted:
    return Accepted(region, START + at, token, ids)


def test_holding_invariants_report_nothing() -> None:
    """Each instance once, every one with its outcome, the quota kept: no problem."""
    accepted = [_call(0, "a", "i-1"), _call(DAY_S, "b", "i-2")]
    states = {("cn-hangzhou", "i-1"): "succeeded", ("cn-hangzhou", "i-2"): "failed"}
    assert invariant_problems(accepted, {}, states, 2, {"cn-hangzhou": 1}) == []


def test_an_instance_invoked_twice_breaks_exactly_once() -> None:
    """Two accepted invocations holding one instance are an I1 problem."""
    accepted = [_call(0, "a", "i-1"), _call(1, "b", "i-1")]
    states = {("cn-hangzhou", "i-1"): "succeeded"}
    problems = invariant_problems(accepted, {}, states, 1, {"cn-hangzhou": 5})
    assert [p[:2] for p in problems] == ["I1"]


def test_a_lost_outcome_and_a_claimed_result_break_nothing_lost() -> None:
    """An instance the emulator ran but the ledger leaves pending, and a result for one never
    invoked, are both I2 problems."""
    accepted = [_call(0, "a", "i-1")]
    states = {("cn-hangzhou", "i-1"): "pending", ("cn-hangzhou", "i-2"): "succeeded"}
    problems = invariant_problems(accepted, {}, states, 2, {"cn-hangzhou": 5})
    assert len(problems) == 3
    assert all(p.startswith("I2") for p in problems)


def test_more_calls_than_the_quota_in_24_hours_break_the_quota() -> None:
    """Three calls within 24 h on a quota of two, and a quota refusal, are I3 problems; the
    same calls a day apart are not."""
    states = {("cn-hangzhou", f"i-{n}"): "succeeded" for n in range(3)}
    close = [_call(t, str(t), f"i-{n}") for n, t in enumerate((0, 10, DAY_S - 1))]
    refused = {"cn-hangzhou": {"InvokeCommand": {"Invocation.ExceedQuota": 1}}}
    problems = invariant_problems(close, refused, states, 3, {"cn-hangzhou": 2})
    assert [p[:2] for p in problems] == ["I3", "I3"]
    apart = [_call(t, str(t), f"i-{n}") for n, t in enumerate((0, 10, DAY_S + 1))]
    assert invariant_problems(apart, {}, states, 3, {"cn-hangzhou": 2}) == []


def test_timeline_shows_waves_quota_days_and_calls_per_day() -> None:
    """A region's waves, the moment its quota day ran out and the next call, its calls per day."""
    accepted = [_call(0, "a", "i-1"), _call(5, "b", "i-2"), _call(DAY_S, "c", "i-3")]
    (timeline,) = region_timelines(
        accepted, {"a": 0, "b": 1, "c": 1}, {"cn-hangzhou": 2}, {"cn-hangzhou": START + DAY_S + 9}
    )
    assert timeline.waves == {1: (START, START), 2: (START + 5, START + DAY_S)}
    assert timeline.quota_out == ((START + 5, START + DAY_S),)
    assert calls_per_day(accepted, START) == {"cn-hangzhou": {1: 2, 2: 1}}


def test_a_wave_waits_for_the_region_whose_quota_ran_out() -> None:
    """Wave 2 opens after wave 1's last call anywhere: a region with quota left waits a day
    for the one whose quota ran out."""
    calls = {0: {"a": 3, "b": 1}, 1: {"a": 0, "b": 1}}
    last = wave_finish(calls, {}, daily_quota={"a": 2, "b": 2}, wave_gap_s=60, call_gap_s=1)
    assert last["a"] == DAY_S  # its third call waited for its first to be a day old
    assert last["b"] == DAY_S + 60  # wave 2 opened a minute after that


def test_simulated_clock_jumps_over_idle_waits() -> None:
    """A 20-hour sleep on the simulated loop reads 20 hours later on the clock, after a worker
    thread's work was waited for; it is skipped, not slept (else the test's timeout ends it)."""

    async def main(clock: SimulatedClock) -> tuple[float, float]:
        before = clock.time()
        await anyio.to_thread.run_sync(sum, range(1000))
        await clock.sleep(20 * 3600)
        return before, clock.time()

    before, after = run_simulated(main, start_s=START)
    assert before >= START
    assert after - before >= 20 * 3600


def test_a_published_clock_reads_the_same_time_and_follows_jumps(tmp_path: Path) -> None:
    """The clock a child emulator reads (`SharedClock`) agrees with the runner's simulated clock
    before and after an idle jump of 20 hours; while an exchange with the child is unanswered
    the loop does not jump (the child may still answer), so time passes only as real time."""

    async def main(clock: SimulatedClock) -> tuple[float, float, float, float, float]:
        clock.publish(tmp_path / "clock")
        shared = SharedClock(tmp_path / "clock")
        before = shared.time() - clock.time()
        await clock.sleep(20 * 3600)
        after = shared.time() - clock.time()
        answered = asyncio.Event()
        loop = asyncio.get_running_loop()
        # The "child" answers after 0.1 s of real time, from a thread the loop does not count.
        threading.Timer(0.1, loop.call_soon_threadsafe, (answered.set,)).start()
        with clock.exchange():
            start = clock.time()
            with anyio.move_on_after(3600.0):  # jumped to at once if the loop thought it idle
                await answered.wait()
            held = clock.time() - start
        return before, after, held, shared.time(), clock.time()

    before, after, held, shared_end, clock_end = run_simulated(main, start_s=START)
    assert abs(before) < 0.01
    assert abs(after) < 0.01
    assert held < 60.0  # the answer came first: the hour was not jumped over
    assert abs(shared_end - clock_end) < 0.01

"""The quota wait on the injected clock: a day of waiting costs no real time, and the waves
resume on their own when the window frees (the emulator answers over real HTTP, the ledger is a
real SQLite file; only time is fake)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from fanout.aliyun.client import EcsClient
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.clock import FakeClock
from fanout.dispatch import WaveOptions, dispatch_waves
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    EmulatorConfig,
    demo_command_id,
    running_emulator,
)
from fanout.emulator.fleet import Fleet
from fanout.gate import Gate
from fanout.halt import HaltReason, RunControl
from fanout.invoke import InvokeContext
from fanout.launch import batch_records
from fanout.ledger import BatchRecord, BatchState, GroupCommitter, RunRecord, RunState
from fanout.ledger.sqlite import SqliteLedger
from fanout.plan import make_plan
from fanout.quota import DAY_S, QuotaPolicy, RegionLimit, RegionQuotas
from fanout.runner import client_for
from fanout.settings import Settings
from fanout.targets import Target
from fanout.waves import ErrorBudget, Leg

REGION = "cn-hangzhou"
CREDS = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)


def _stored_run(store: SqliteLedger, clock: FakeClock, instances: int) -> list[BatchRecord]:
    """A run of `instances` usable instances in one region, 50 per batch, stored pending."""
    config = EmulatorConfig(regions=(REGION,), instances_per_region=instances)
    ids = [i.instance_id for i in Fleet.from_config(config).regions[REGION].instances]
    plan = make_plan("r-quota", [Target(REGION, i) for i in ids], batch_size=50)
    now = clock.time()
    run = RunRecord("r-quota", now, now, RunState.CREATED, DEMO_COMMAND_ID, "acct", len(ids))
    batches = batch_records("r-quota", plan)
    store.create_run(run, batches, [])
    return batches


def configured(limit: int, *regions: str) -> RegionQuotas:
    """A daily limit set by the operator (--daily-quota) in these regions: never re-read."""
    return RegionQuotas(
        QuotaPolicy(daily_quota=limit), {r: RegionLimit(limit, "configured") for r in regions}
    )


Events = list[tuple[str, dict[str, Any]]]


def _leg(
    run_id: str,
    client: EcsClient,
    committer: GroupCommitter,
    clock: FakeClock,
    quotas: RegionQuotas,
    store: SqliteLedger,
) -> tuple[InvokeContext, Leg, Events]:
    """The invoke context and leg of a test run (4 calls in flight per region), and its events."""
    control = RunControl(clock)
    ctx = InvokeContext(
        run_id=run_id,
        account="acct",
        spec=CommandSpec(DEMO_COMMAND_ID),
        client=client,
        ledger=committer,
        gate=Gate(clock, concurrency=8, region_concurrency=4, rate_per_s=0),
        quotas=quotas,
        control=control,
        clock=clock,
        max_attempts=3,
        store=store,
    )
    events: Events = []
    leg = Leg(run_id, control, lambda k, d: events.append((k, dict(d))), ErrorBudget(None))
    return ctx, leg, events


async def _drive_waves(
    tmp_path: Path, clock: FakeClock, *, wait_for_quota: bool
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any], SqliteLedger, RunControl]:
    """Dispatch a 4-batch run with a fanout quota of 2 calls a day; return events and state."""
    config = EmulatorConfig(regions=(REGION,), instances_per_region=200)
    store = SqliteLedger(tmp_path / "ledger.sqlite3")
    batches = _stored_run(store, clock, 200)
    async with running_emulator(config) as emu:
        settings = Settings(endpoint=emu.url, rate_per_s=0)
        committer = GroupCommitter(store)
        async with client_for(settings, CREDS, clock) as client, anyio.create_task_group() as tg:
            tg.start_soon(committer.run)
            ctx, leg, events = _leg(
                "r-quota", client, committer, clock, configured(2, REGION), store
            )
            options = WaveOptions(
                region_concurrency=4, wait_for_quota=wait_for_quota, pause_after_wave=False
            )
            with anyio.fail_after(60):  # real seconds: a hang fails, the fake day does not count
                await dispatch_waves(ctx, leg, None, store, batches, options)
            await committer.flush()
            committer.close()
        snapshot = emu.snapshot()
    return events, snapshot, store, ctx.control


async def test_waiting_for_quota_sleeps_a_day_on_the_clock_and_sends_the_rest(
    tmp_path: Path,
) -> None:
    """With --wait-for-quota, 2 calls go out, the waves sleep until the window frees, then 2 more."""
    clock = FakeClock()
    start = clock.time()
    events, snapshot, store, control = await _drive_waves(tmp_path, clock, wait_for_quota=True)
    assert snapshot["regions"][REGION]["calls"]["InvokeCommand"] == 4
    assert {b.state for b in store.load_batches("r-quota")} == {BatchState.ACCEPTED}
    (wait,) = [data for kind, data in events if kind == "quota_wait"]
    assert wait["regions"] == [REGION]
    until = datetime.fromisoformat(wait["until"].replace("Z", "+00:00")).timestamp()
    assert wait["until"].endswith("Z")
    assert start + DAY_S - 1 <= until <= start + DAY_S + 5
    assert any(s >= DAY_S - 5 for s in clock.sleeps)  # one day, slept on the fake clock
    assert not control.halted
    store.close()


async def test_without_waiting_the_spent_region_is_blocked_and_nothing_more_goes_out(
    tmp_path: Path,
) -> None:
    """Without --wait-for-quota the waves end after 2 calls with the region blocked (exit 4)."""
    clock = FakeClock()
    events, snapshot, store, control = await _drive_waves(tmp_path, clock, wait_for_quota=False)
    assert snapshot["regions"][REGION]["calls"]["InvokeCommand"] == 2
    states = [b.state for b in store.load_batches("r-quota")]
    assert states.count(BatchState.ACCEPTED) == 2
    assert states.count(BatchState.PENDING) == 2
    assert control.quota_blocked == frozenset({REGION})
    assert not control.halted_by(HaltReason.BUDGET, HaltReason.FATAL)
    assert not [kind for kind, _ in events if kind == "quota_wait"]
    store.close()


async def test_a_quota_blocked_region_does_not_hold_the_waves_of_the_others(
    tmp_path: Path,
) -> None:
    """Region A runs out of quota in wave 1: region B finishes waves 1 and 2 while A sleeps;
    A then catches up on its own (on a clock the test moves by hand)."""
    a, b = "cn-hangzhou", "cn-beijing"
    config = EmulatorConfig(regions=(a, b), instances_per_region=400)
    fleet = Fleet.from_config(config)
    store = SqliteLedger(tmp_path / "ledger.sqlite3")
    clock = FakeClock(autojump=False)
    batches: list[BatchRecord] = []
    for region, count in ((a, 400), (b, 100)):
        ids = [i.instance_id for i in fleet.regions[region].instances][:count]
        plan = make_plan("r-lag", [Target(region, i) for i in ids], batch_size=50)
        half = len(plan.batches) // 2
        batches += [
            BatchRecord(
                x.batch_id,
                "r-lag",
                region,
                x.seq,
                0 if n < half else 1,
                x.instance_ids,
                x.client_token,
                BatchState.PENDING,
                command_id=demo_command_id(region),  # each region's own
            )
            for n, x in enumerate(plan.batches)
        ]
    now = clock.time()
    run = RunRecord("r-lag", now, now, RunState.CREATED, DEMO_COMMAND_ID, "acct", 500)
    store.create_run(run, batches, [])

    def invoked(snapshot: dict[str, Any], region: str) -> int:
        return sum(1 for inv in snapshot["invocations"] if inv["region"] == region)

    async with running_emulator(config) as emu:
        settings = Settings(endpoint=emu.url, rate_per_s=0)
        committer = GroupCommitter(store)
        async with client_for(settings, CREDS, clock) as client, anyio.create_task_group() as tg:
            tg.start_soon(committer.run)
            ctx, leg, events = _leg("r-lag", client, committer, clock, configured(3, a, b), store)
            options = WaveOptions(region_concurrency=4, wait_for_quota=True, pause_after_wave=False)
            with anyio.fail_after(60):
                async with anyio.create_task_group() as run_tg:
                    run_tg.start_soon(dispatch_waves, ctx, leg, None, store, batches, options)
                    # Both waves end for B while A sleeps for its quota (nobody moves the clock).
                    while [k for k, _ in events].count("wave") < 2 or clock.sleeping == 0:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    snapshot = emu.snapshot()
                    assert (invoked(snapshot, a), invoked(snapshot, b)) == (3, 2)
                    clock.advance(DAY_S + 2)  # A's window frees: 3 more, then it sleeps again
                    while invoked(emu.snapshot(), a) < 6 or clock.sleeping == 0:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                    clock.advance(DAY_S + 2)
            await committer.flush()
            committer.close()
        snapshot = emu.snapshot()
    assert (invoked(snapshot, a), invoked(snapshot, b)) == (8, 2)
    assert {x.state for x in store.load_batches("r-lag")} == {BatchState.ACCEPTED}
    waits = [d["regions"] for k, d in events if k == "quota_wait"]
    assert waits == [[a], [a]]
    store.close()

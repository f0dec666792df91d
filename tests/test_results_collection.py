"""Results collection under Describe throttling: the client notes it, the fetch rate follows it,
and every instance still reaches its final state (real HTTP to the emulator, a real ledger)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

import fanout
from fanout import results
from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.credentials import Credentials
from fanout.clock import FakeClock
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_NAME,
    EmulatorConfig,
    running_emulator,
)
from fanout.emulator.fleet import Fleet
from fanout.errors import ExitCode
from fanout.ledger import InstanceState, group
from fanout.ledger.sqlite import SqliteLedger
from fanout.settings import Settings
from fanout.targets import Target

CREDS = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)
REGION = "cn-hangzhou"
# Every instance usable, two regions; at most 3 calls per action and region each second (in
# one-second windows: the real minute-long ones would make this real-time test take minutes).
CONFIG = EmulatorConfig(
    regions=(REGION, "cn-beijing"),
    instances_per_region=200,
    stopped_fraction=0,
    classic_fraction=0,
    agent_offline_fraction=0,
    qps=3,
    throttle_window_s=1,
)


async def test_client_notes_throttled_reads_per_region() -> None:
    """Describe calls over the server's limit are retried inside the client, which records when
    the region last throttled a read (and only that region)."""
    async with (
        running_emulator(CONFIG) as emu,
        EcsClient(CREDS, ClientOptions(endpoint=emu.url)) as ecs,
    ):
        assert ecs.reads_throttled_at(REGION) == 0.0
        before = time.monotonic()
        # 5 at once against 3 a second: some are throttled; 8 tries over ~25 s get all through.
        found = await asyncio.gather(*(ecs.describe_instances(REGION) for _ in range(5)))
        calls = emu.snapshot()["regions"][REGION]["calls"]["DescribeInstances"]
    assert all(len(instances) == 200 for instances in found)  # every read got through
    assert calls > 5  # some were throttled and sent again
    assert ecs.reads_throttled_at(REGION) >= before
    assert ecs.reads_throttled_at("cn-beijing") == 0.0


async def test_fetch_rate_halves_on_each_new_throttle_and_climbs_back() -> None:
    """The fetch rate halves on each new throttle (not again for the same one), and on the
    run's clock climbs back by a quarter every recovery period, never above its ceiling."""
    clock = FakeClock()
    meter = results._DescribeMeter(200.0, clock)
    await meter.acquire(0.0)
    assert meter.rate == 200.0  # nothing throttled yet
    first = clock.monotonic()
    await meter.acquire(first)
    assert meter.rate == 100.0
    await meter.acquire(first)  # the same throttle, seen again: no second cut
    assert meter.rate == 100.0
    clock.advance(0.5)
    await meter.acquire(clock.monotonic())
    assert meter.rate == 50.0
    clock.advance(results._RECOVER_AFTER_S - 0.1)
    await meter.acquire(0.0)
    assert meter.rate == 50.0  # not yet a whole recovery period without throttling
    clock.advance(0.1)
    await meter.acquire(0.0)
    assert meter.rate == 62.5  # a quarter more once a while has passed without throttling
    for _ in range(20):
        clock.advance(results._RECOVER_AFTER_S)
        await meter.acquire(0.0)
    assert meter.rate == 200.0  # never above the configured ceiling


async def test_rollout_finishes_every_instance_through_throttled_describes(
    tmp_path: Path,
) -> None:
    """A server that throttles every action at 3 calls per second: InvokeCommand retries go
    through the runner, Describe retries through the client; every instance ends final."""
    fleet = Fleet.from_config(CONFIG)
    targets = [Target(r, i.instance_id) for r in CONFIG.regions for i in fleet.regions[r].instances]
    async with running_emulator(CONFIG) as emu:
        settings = Settings(
            ledger=str(tmp_path / "l.sqlite3"),
            endpoint=emu.url,
            rate_per_s=0,
            poll_interval_s=0.2,
        )
        outcome = await fanout.rollout(
            targets,
            command_name=DEMO_COMMAND_NAME,  # two regions: each its own CommandId
            preflight=False,
            settings=settings,
            credentials=CREDS,
        )
        regions = emu.snapshot()["regions"]
    assert outcome.exit_code is ExitCode.OK
    assert outcome.instances == {"succeeded": 400}
    for region in CONFIG.regions:
        calls = regions[region]["calls"]
        assert calls["DescribeInvocationResults"] >= 4  # one per invocation at least
    doc = fanout.status(outcome.run_id, settings=settings)
    assert doc["target_count"] == 400


async def test_results_held_back_by_the_disk_still_all_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the committer's high-water mark at one record, nearly every results read waits for
    the commit before it (`GroupCommitter.room`): the rollout still ends with every instance
    recorded, nothing stuck waiting on a commit that never comes."""
    monkeypatch.setattr(group, "HIGH_WATER", 1)
    config = replace(CONFIG, qps=None)  # no throttling: the answers come as fast as they can
    fleet = Fleet.from_config(config)
    targets = [Target(r, i.instance_id) for r in config.regions for i in fleet.regions[r].instances]
    async with running_emulator(config) as emu:
        settings = Settings(
            ledger=str(tmp_path / "l.sqlite3"), endpoint=emu.url, rate_per_s=0, poll_interval_s=0.2
        )
        with anyio.fail_after(120):
            outcome = await fanout.rollout(
                targets,
                command_name=DEMO_COMMAND_NAME,
                preflight=False,
                settings=settings,
                credentials=CREDS,
            )
    assert outcome.exit_code is ExitCode.OK
    assert outcome.instances == {"succeeded": 400}
    store = SqliteLedger(tmp_path / "l.sqlite3")
    try:
        assert {r.state for r in store.iter_instances(outcome.run_id)} == {InstanceState.SUCCEEDED}
    finally:
        store.close()

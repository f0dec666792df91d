"""Dispatch efficiency and runner CPU per batch.

Issue 3 setup: 100 000 instances in 4 regions, the emulator in its own process with 50 ms
latency, concurrency 64, no rate limit, --no-wait. Efficiency = ideal time
(ceil(batches / concurrency) x latency) / measured dispatch time, target >= 0.8; runner CPU per
batch (process time of this process / batches), target <= 1.5 ms.
Usage: python -m benchmarks.bench_dispatch [--instances-per-region N] [--ledger PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from fanout.aliyun.credentials import Credentials
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    EmulatorConfig,
)
from fanout.emulator.fleet import Fleet
from fanout.invoke import CommandSpec
from fanout.ledger import BatchRecord, BatchState, RunRecord, RunState, open_ledger
from fanout.logs import configure_logging
from fanout.plan import make_plan
from fanout.runner import drive
from fanout.settings import Settings
from fanout.targets import Target

REGIONS = ("cn-beijing", "cn-hangzhou", "cn-shanghai", "cn-shenzhen")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_emulator(
    per_region: int, latency_ms: float, profile: str | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`fanout emulator` in its own process; returns it and its URL."""
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    proc = subprocess.Popen(
        [
            sys.executable,
            *profiler,
            "-m",
            "fanout",
            "emulator",
            "--port",
            "0",
            "--regions",
            ",".join(REGIONS),
            "--instances-per-region",
            str(per_region),
            "--latency-ms",
            str(latency_ms),
            "--daily-quota",
            "1000000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, line.rsplit(" ", 1)[-1]


async def dispatch(ledger: str, url: str, per_region: int, concurrency: int) -> dict[str, float]:
    """Store a run of every instance and time its dispatch."""
    config = EmulatorConfig(regions=REGIONS, instances_per_region=per_region)
    fleet = Fleet.from_config(config)
    targets = [Target(r, i.instance_id) for r in REGIONS for i in fleet.regions[r].instances]
    run_id = f"rbench-{int(time.time())}"
    plan = make_plan(run_id, targets, batch_size=50)
    store = open_ledger(ledger)
    now = time.time()
    run = RunRecord(
        run_id,
        now,
        now,
        RunState.CREATED,
        DEMO_COMMAND_ID,
        "bench",
        len(targets),
        options={"wait": False},
    )
    store.create_run(
        run,
        [
            BatchRecord(
                b.batch_id,
                run_id,
                b.region,
                b.seq,
                b.wave,
                b.instance_ids,
                b.client_token,
                BatchState.PENDING,
            )
            for b in plan.batches
        ],
    )
    settings = Settings(
        ledger=ledger,
        endpoint=url,
        concurrency=concurrency,
        region_concurrency=concurrency,
        rate_per_s=0,
        daily_quota=1_000_000,
    )
    credentials = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)
    ends: list[float] = []

    def on_event(kind: str, _data: object) -> None:
        if kind == "batch":
            ends.append(time.perf_counter())

    cpu0, t0 = time.process_time(), time.perf_counter()
    outcome = await drive(
        settings,
        credentials,
        store,
        run,
        CommandSpec(DEMO_COMMAND_ID),
        emit=on_event,
        wait_for_quota=False,
        handle_signals=False,
    )
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    batches = len(plan.batches)
    return {
        "first_end_s": ends[0] - t0,
        "last_end_s": ends[-1] - t0,
        "batches": batches,
        "exit_code": int(outcome.exit_code),
        "dispatch_s": elapsed,
        "cpu_s": cpu,
    }


def main() -> None:
    configure_logging("warning")
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances-per-region", type=int, default=25_000)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--ledger", default=None, help="ledger path (default: a temp SQLite file)")
    parser.add_argument(
        "--profile-emulator", default=None, help="write the emulator's cProfile here"
    )
    args = parser.parse_args()
    proc, url = start_emulator(args.instances_per_region, args.latency_ms, args.profile_emulator)
    emulator_cpu0 = process_cpu_s(proc.pid)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ledger = args.ledger or str(Path(tmp) / "ledger.sqlite3")
            result = anyio.run(
                dispatch,
                ledger,
                url,
                args.instances_per_region,
                args.concurrency,
                backend="asyncio",
            )
        emulator_cpu = process_cpu_s(proc.pid) - emulator_cpu0
    finally:
        proc.terminate()
        proc.wait(10)
    batches = result["batches"]
    ideal = math.ceil(batches / args.concurrency) * args.latency_ms / 1000
    report = {
        "instances": args.instances_per_region * len(REGIONS),
        "batches": batches,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "exit_code": result["exit_code"],
        "dispatch_s": round(result["dispatch_s"], 3),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / result["dispatch_s"], 3),
        "first_batch_done_s": round(result["first_end_s"], 3),
        "last_batch_done_s": round(result["last_end_s"], 3),
        "cpu_ms_per_batch": round(result["cpu_s"] * 1000 / batches, 3),
        "emulator_cpu_ms_per_batch": round(emulator_cpu * 1000 / batches, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

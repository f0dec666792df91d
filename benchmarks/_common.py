"""What the benchmarks share: the emulator in its own process, a stored run, CPU readings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fanout.emulator import EmulatorConfig, demo_command_id
from fanout.emulator.fleet import Fleet
from fanout.launch import batch_records
from fanout.ledger import LedgerStore, RunRecord, RunState
from fanout.plan import make_plan
from fanout.sources import CommandIdMap, label, source_options
from fanout.targets import Target

REGIONS = ("cn-beijing", "cn-hangzhou", "cn-shanghai", "cn-shenzhen")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_emulator(
    per_region: int,
    extra: Sequence[str] = (),
    profile: str | None = None,
    cpus: set[int] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """`fanout emulator` in its own process (4 regions, on `cpus` if given); returns it and its URL."""
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    argv = [sys.executable, *profiler, "-m", "fanout", "emulator", "--port", "0"]
    argv += ["--regions", ",".join(REGIONS), "--instances-per-region", str(per_region)]
    argv += ["--daily-quota", "1000000", *extra]
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, preexec_fn=pin)  # noqa: PLW1509
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, line.rsplit(" ", 1)[-1]


def emulator_state(url: str, *, executions: bool = False) -> dict[str, Any]:
    """GET /_emulator/state (loopback); with every execution's exact finish time if asked."""
    query = "?executions=1" if executions else ""
    with urllib.request.urlopen(f"{url}/_emulator/state{query}", timeout=60) as response:
        state: dict[str, Any] = json.loads(response.read())
        return state


def store_run(store: LedgerStore, per_region: int, *, wait: bool) -> tuple[RunRecord, int]:
    """A stored run over every instance of the emulator's fleet; (run, number of batches)."""
    fleet = Fleet.from_config(EmulatorConfig(regions=REGIONS, instances_per_region=per_region))
    targets = [Target(r, i.instance_id) for r in REGIONS for i in fleet.regions[r].instances]
    run_id = f"rbench-{int(time.time() * 1000)}"
    plan = make_plan(run_id, targets, batch_size=50)
    now = time.time()
    # A CommandId belongs to one region: each region's demo command has its own.
    source = CommandIdMap({r: demo_command_id(r) for r in REGIONS})
    run = RunRecord(
        run_id,
        now,
        now,
        RunState.CREATED,
        label(source),
        "bench",
        len(targets),
        options={"wait": wait, "source": source_options(source)},
    )
    store.create_run(run, batch_records(run_id, plan, source.ids))
    return run, len(plan.batches)

"""Every region at once (issue 12): dispatch and preflight time against the slowest region's bound.

Run as the user runs it: `fanout run --no-wait` (and `fanout plan`) from the CLI in a child
process, default settings unless a scenario names one, against `fanout emulator` in its own
process with 50 ms latency per request. Times come from the emulator's side: the `created`
stamps of the accepted invocations.

- dispatch: measured = last created - first created + one latency (the first call's own
  time); ideal = the slowest region's own bound: its batches / its rate, or its batches / its
  concurrency x latency, whichever is larger.
- preflight: measured = `fanout plan` minus `fanout plan --no-preflight` (same start-up, target
  parsing and command check); ideal = the slowest region's Describe calls / 8 x latency.

Each line also reports process CPU, which other load on the machine does not change: the
runner's (the `fanout` child, from its rusage) and the emulator's (from /proc) during the measured
command; for preflight, the runner's CPU of `plan` minus that of `plan --no-preflight`.

    .venv/bin/python -m benchmarks.bench_regions [--runs 5] [--only dispatch-20x30,...]
    .venv/bin/python -m benchmarks.bench_regions --fanout-src /path/to/other/checkout
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks._common import emulator_state, process_cpu_s
from fanout.emulator import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, DEMO_COMMAND_NAME
from fanout.emulator.config import EmulatorConfig
from fanout.emulator.fleet import Fleet

LATENCY_MS = 50.0
ALL_REGIONS = (
    "cn-beijing", "cn-hangzhou", "cn-shanghai", "cn-shenzhen", "cn-qingdao", "cn-zhangjiakou",
    "cn-huhehaote", "cn-wulanchabu", "cn-chengdu", "cn-guangzhou", "cn-heyuan", "cn-hongkong",
    "ap-southeast-1", "ap-southeast-3", "ap-southeast-5", "ap-northeast-1", "us-west-1",
    "us-east-1", "eu-central-1", "eu-west-1",
)  # fmt: skip
# The defaults of fanout.settings.Settings (the user's defaults, used unless a scenario sets one).
DEFAULT_RATE = 10.0
DEFAULT_REGION_CONCURRENCY = 8
PREFLIGHT_YARDSTICK = 8  # Describe calls in flight per region, the yardstick


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # dispatch | preflight
    regions: int
    per_region: int  # instances per region
    batch_size: int = 50
    flags: tuple[str, ...] = ()
    rate: float = DEFAULT_RATE
    region_concurrency: int = DEFAULT_REGION_CONCURRENCY


SCENARIOS = (
    Scenario("dispatch-20x30", "dispatch", 20, 30 * 50),
    Scenario(
        "dispatch-4x500-unlimited", "dispatch", 4, 500 * 50,
        flags=("--rate", "0", "--concurrency", "64"), rate=0,
    ),
    Scenario("dispatch-20x500", "dispatch", 20, 500 * 50),
    Scenario("preflight-4x25000", "preflight", 4, 25_000),
)  # fmt: skip


def _env(ledger: Path, endpoint: str, src: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ALIBABA_CLOUD_ACCESS_KEY_ID=DEMO_ACCESS_KEY_ID,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=DEMO_ACCESS_KEY_SECRET,
        FANOUT_ENDPOINT=endpoint,
        FANOUT_LEDGER=str(ledger),
        HOME=str(ledger.parent),
    )
    if src:
        env["PYTHONPATH"] = src
    return env


def _emulator(scenario: Scenario) -> tuple[subprocess.Popen[str], str]:
    regions = ",".join(ALL_REGIONS[: scenario.regions])
    argv = [sys.executable, "-m", "fanout", "emulator", "--port", "0", "--regions", regions]
    argv += ["--instances-per-region", str(scenario.per_region), "--daily-quota", "1000000"]
    argv += ["--latency-ms", str(LATENCY_MS)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip().rsplit(" ", 1)[-1]


def _targets(scenario: Scenario, folder: Path) -> Path:
    config = EmulatorConfig(
        regions=ALL_REGIONS[: scenario.regions], instances_per_region=scenario.per_region
    )
    fleet = Fleet.from_config(config)
    path = folder / "targets.txt"
    with path.open("w") as out:
        for region in config.regions:
            out.writelines(f"{region},{i.instance_id}\n" for i in fleet.regions[region].instances)
    return path


@dataclass(frozen=True)
class _Timed:
    wall_s: float
    cpu_s: float  # the child's user + system CPU


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _fanout(args: list[str], env: dict[str, str]) -> _Timed:
    cpu0, started = _children_cpu_s(), time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fanout", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"fanout {' '.join(args[:2])} exited {done.returncode}: {done.stderr}")
    return _Timed(time.perf_counter() - started, _children_cpu_s() - cpu0)


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _dispatch_once(scenario: Scenario, src: str | None) -> dict[str, float]:
    proc, url = _emulator(scenario)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            targets = _targets(scenario, folder)
            args = ["run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets)]
            args += ["--no-wait", "--no-preflight", "--yes", *scenario.flags]
            emulator_cpu0 = process_cpu_s(proc.pid)
            run = _fanout(args, _env(folder / "l.sqlite3", url, src))
            emulator_cpu = process_cpu_s(proc.pid) - emulator_cpu0
            state = emulator_state(url)
    finally:
        proc.terminate()
        proc.wait(10)
    stamps = sorted(_stamp(inv["created"]) for inv in state["invocations"])
    per_region: dict[str, int] = {}
    for inv in state["invocations"]:
        per_region[inv["region"]] = per_region.get(inv["region"], 0) + 1
    latency = LATENCY_MS / 1000
    batches = max(per_region.values())
    by_rate = batches / scenario.rate if scenario.rate else 0.0
    by_slots = math.ceil(batches / scenario.region_concurrency) * latency
    ideal = max(by_rate, by_slots)
    measured = stamps[-1] - stamps[0] + latency
    return {
        "ideal_s": ideal,
        "measured_s": measured,
        "calls": len(stamps),
        "runner_cpu_s": run.cpu_s,
        "emulator_cpu_s": emulator_cpu,
    }


def _preflight_once(scenario: Scenario, src: str | None) -> dict[str, float]:
    proc, url = _emulator(scenario)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            targets = _targets(scenario, folder)
            env = _env(folder / "l.sqlite3", url, src)
            args = [
                "plan",
                "--command-name",
                DEMO_COMMAND_NAME,
                "--targets",
                str(targets),
                "--json",
            ]
            base = _fanout([*args, "--no-preflight"], env)
            before = emulator_state(url)["regions"]
            emulator_cpu0 = process_cpu_s(proc.pid)
            whole = _fanout(args, env)
            emulator_cpu = process_cpu_s(proc.pid) - emulator_cpu0
            after = emulator_state(url)["regions"]
    finally:
        proc.terminate()
        proc.wait(10)
    describe = ("DescribeInstances", "DescribeCloudAssistantStatus")
    calls = {
        region: sum(
            after[region]["calls"].get(a, 0) - before[region]["calls"].get(a, 0) for a in describe
        )
        for region in after
    }
    ideal = max(calls.values()) / PREFLIGHT_YARDSTICK * LATENCY_MS / 1000
    return {
        "ideal_s": ideal,
        "measured_s": whole.wall_s - base.wall_s,
        "calls": sum(calls.values()),
        "runner_cpu_s": whole.cpu_s - base.cpu_s,
        "emulator_cpu_s": emulator_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--fanout-src", help="run the fanout CLI from this source tree")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    for scenario in SCENARIOS:
        if wanted and scenario.name not in wanted:
            continue
        once = _dispatch_once if scenario.kind == "dispatch" else _preflight_once
        runs = [once(scenario, args.fanout_src) for _ in range(args.runs)]
        efficiencies = [r["ideal_s"] / r["measured_s"] for r in runs]
        report: dict[str, Any] = {
            "scenario": scenario.name,
            "ideal_s": round(runs[0]["ideal_s"], 3),
            "measured_s": [round(r["measured_s"], 3) for r in runs],
            "efficiency_median": round(statistics.median(efficiencies), 3),
            "efficiency_range": [round(min(efficiencies), 3), round(max(efficiencies), 3)],
            "calls": runs[0]["calls"],
            "runner_cpu_s": [round(r["runner_cpu_s"], 2) for r in runs],
            "emulator_cpu_s": [round(r["emulator_cpu_s"], 2) for r in runs],
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()

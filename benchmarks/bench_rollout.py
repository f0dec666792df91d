"""A whole rollout at scale in simulated time (issue 18): `fanout simulate`'s path, measured.

Default: 1 000 000 instances in 20 regions, 500 calls per region per day (two quota days per
region), waves 1%,10%,50%,100%, 2 % failing executions, 1 % unreachable agents, 1 % 5xx, 1 %
lost answers, 20 kills with resume, executions of 10-600 simulated seconds, --wait-for-quota.
The emulator runs in the same process (one simulated clock), so the CPU and RSS figures are of
runner and emulator together: an upper bound for the runner.

Figures: real wall time, CPU seconds per 1 000 instances, peak RSS, ledger bytes per instance,
`fanout status` and `fanout report --format csv` times on the finished ledger, the invariants.
Targets: <= 15 min real on 2 cores, <= 500 MB peak RSS, status <= 2 s, report <= 60 s.
Usage: python -m benchmarks.bench_rollout [--instances N] [--regions R] [--daily-quota Q]
       [--kills K] [--poll-interval S] [--profile FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

from fanout import allocator
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.endpoints import KNOWN_REGIONS
from fanout.emulator import DEMO_COMMAND_NAME
from fanout.emulator.fleet import generated_ids
from fanout.request import RunRequest
from fanout.settings import Settings
from fanout.simtime import run_simulated
from fanout.simulate import FaultRates, Rehearsal, SimulationOptions, rehearse, simulation_fleet
from fanout.sources import CommandNameSource, label
from fanout.targets import Target


def _quiet_logs() -> None:
    """Warnings only: a line per batch would be the benchmark's main cost."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))


def _timed(argv: list[str]) -> float:
    """Seconds `fanout ARGV` takes in a fresh interpreter (its output discarded)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fanout", *argv], check=True, capture_output=True)
    return time.perf_counter() - start


def _rehearse(args: argparse.Namespace, folder: Path) -> Rehearsal:
    regions = tuple(sorted(KNOWN_REGIONS)[: args.regions])
    options = SimulationOptions(
        folder=folder,
        regions=regions,
        instances_per_region=-(-args.instances // len(regions)),
        seed=18,
        exec_seconds=(10.0, 600.0),
        faults=FaultRates(exec_failure=0.02, unreachable=0.01, server_error=0.01, lost_answer=0.01),
        kills=args.kills,
        daily_quota=args.daily_quota,
        emulator_process=args.emulator_process,
        latency_ms=0.0 if args.emulator_process else 20.0,  # as `fanout simulate` does
    )
    config = simulation_fleet(options)
    share, extra = divmod(args.instances, len(regions))
    targets = tuple(
        Target(region, instance_id)
        for index, region in enumerate(regions)
        for instance_id in generated_ids(config, region)[: share + (index < extra)]
    )
    source = CommandNameSource(DEMO_COMMAND_NAME)
    request = RunRequest(
        targets=targets,
        spec=CommandSpec(command_id=label(source), timeout_s=900),
        source=source,
        waves="1%,10%,50%,100%",
        max_errors="10%",
        wait=True,
        wait_for_quota=True,
    )
    settings = Settings(daily_quota=args.daily_quota, poll_interval_s=args.poll_interval)
    return run_simulated(
        lambda clock: rehearse(settings, request, options, clock, emit=lambda _k, _d: None)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--regions", type=int, default=20)
    parser.add_argument("--daily-quota", type=int, default=500)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument(
        "--poll-interval", type=float, default=30.0, help="results sweeps, simulated seconds"
    )
    parser.add_argument(
        "--emulator-process",
        action="store_true",
        help="the emulator in a child process: CPU and peak RSS are then the runner's alone",
    )
    parser.add_argument("--profile", help="write a cProfile of the rehearsal here")
    parser.add_argument("--keep", help="keep the ledger in this folder")
    args = parser.parse_args()
    allocator.tune()  # as the `fanout` command does before anything else
    _quiet_logs()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        result = _rehearse(args, folder)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # before status and report run
        emulator_cpu = children.ru_utime + children.ru_stime
        ledger = folder / "ledger.sqlite3"
        size = sum(p.stat().st_size for p in folder.glob("ledger.sqlite3*"))
        common = ["--ledger", str(ledger)]
        status_s = _timed(["status", result.run_id, *common])
        report_s = _timed(["report", result.run_id, "--format", "csv", *common])
        figures = {
            "instances": args.instances,
            "regions": args.regions,
            "daily_quota": args.daily_quota,
            "poll_interval_s": args.poll_interval,
            "real_s": round(wall, 1),
            "simulated_s": round(result.end_s - result.start_s),
            "cpu_s": round(cpu, 1),
            "cpu_s_per_1000_instances": round(cpu / args.instances * 1000, 3),
            "emulator_process": args.emulator_process,
            "emulator_cpu_s": round(emulator_cpu, 1) if args.emulator_process else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rollout_peak_rss_mb": round(result.peak_rss_mb),
            "emulator_peak_rss_mb": round(children.ru_maxrss / 1024)
            if args.emulator_process
            else None,
            "ledger_bytes_per_instance": round(size / args.instances),
            "status_s": round(status_s, 2),
            "report_csv_s": round(report_s, 2),
            "kills": result.kills,
            "legs": result.legs,
            "exit_code": int(result.outcome.exit_code),
            "message": result.outcome.message,
            "eta_planned_s": round(result.eta.planned_s),
            "eta_replanned_s": round(result.eta.replanned_s),
            "eta_simulated_s": round(result.eta.simulated_s),
            "eta_within": result.eta.within,
            "invariants_ok": not result.problems,
            "problems": list(result.problems),
            "calls_per_day": {r: dict(d) for r, d in list(result.calls_per_day.items())[:3]},
        }
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

"""Results collection: Describe calls per invocation, and finish -> ledger delay.

Issue 4 setup: 2 000 invocations (batches of 50, 100 000 instance executions in 4 regions)
whose simulated run times are 1-10 s, the emulator in its own process. Reported: Describe calls
per invocation, counted by the emulator (target <= 1.5 on average), and the delay from an
instance's finish to its final state in the runner (target p95 <= 3 s): the time the runner
records the instance minus the exact time the emulator finished it (`/_emulator/state
?executions=1`). Also shown: the same delay against the API's FinishTime, which is truncated to
the second, so it overestimates by up to 1 s (what a client of the API alone could measure).
Usage: python -m benchmarks.bench_results [--instances-per-region N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import anyio

from benchmarks._common import emulator_state, start_emulator, store_run
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.emulator import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from fanout.ledger import open_ledger
from fanout.logs import configure_logging
from fanout.runner import DriveOptions, drive
from fanout.settings import Settings


def _epoch(iso_time: str) -> float:
    """ISO-8601 UTC (`...Z`) to epoch seconds."""
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


async def collect(ledger: str, url: str, per_region: int) -> dict[str, float]:
    """Run every batch with --wait and time each instance's arrival in the runner."""
    store = open_ledger(ledger)
    run, batches = store_run(store, per_region, wait=True)
    recorded: dict[str, tuple[float, float]] = {}  # instance -> (recorded at, API FinishTime)

    def on_event(kind: str, data: object) -> None:
        if kind == "instance" and isinstance(data, dict) and data.get("finish_time"):
            recorded[str(data["instance_id"])] = (time.time(), _epoch(str(data["finish_time"])))

    settings = Settings(
        ledger=ledger,
        endpoint=url,
        concurrency=64,
        region_concurrency=64,
        rate_per_s=0,
        daily_quota=1_000_000,
    )
    credentials = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)
    started = time.perf_counter()
    outcome = await drive(
        settings,
        credentials,
        store,
        run,
        CommandSpec(run.command_id),  # each batch invokes its region's own id
        emit=on_event,
        options=DriveOptions(handle_signals=False),
    )
    elapsed = time.perf_counter() - started
    exact = {
        e["instance_id"]: e["finish_s"]
        for inv in emulator_state(url, executions=True)["invocations"]
        for e in inv["executions"]
        if e["finish_s"] is not None
    }
    delays = sorted(at - exact[iid] for iid, (at, _) in recorded.items())
    to_the_second = sorted(at - finish for at, finish in recorded.values())
    return {
        "batches": batches,
        "exit_code": int(outcome.exit_code),
        "instances_final": len(delays),
        "elapsed_s": elapsed,
        "delay_p50_s": statistics.median(delays),
        "delay_p95_s": _p95(delays),
        "delay_max_s": delays[-1],
        "api_time_delay_p95_s": _p95(to_the_second),
    }


def _p95(ordered: list[float]) -> float:
    return ordered[int(0.95 * (len(ordered) - 1))]


def main() -> None:
    configure_logging("warning")
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances-per-region", type=int, default=25_000)
    parser.add_argument(
        "--profile-emulator", default=None, help="write the emulator's cProfile here"
    )
    args = parser.parse_args()
    proc, url = start_emulator(
        args.instances_per_region, ["--exec-seconds", "1:10"], args.profile_emulator
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = anyio.run(
                collect,
                str(Path(tmp) / "ledger.sqlite3"),
                url,
                args.instances_per_region,
                backend="asyncio",
            )
        calls = emulator_state(url)["regions"]
    finally:
        proc.terminate()
        proc.wait(10)
    sweeps = sum(r["calls"].get("DescribeInvocations", 0) for r in calls.values())
    fetches = sum(r["calls"].get("DescribeInvocationResults", 0) for r in calls.values())
    batches = result["batches"]
    report = {
        "invocations": batches,
        "instances": args.instances_per_region * 4,
        "run_time_s": "1-10",
        "exit_code": result["exit_code"],
        "instances_final": result["instances_final"],
        "elapsed_s": round(result["elapsed_s"], 2),
        "describe_invocations_calls": sweeps,
        "describe_invocation_results_calls": fetches,
        "describe_calls_per_invocation": round((sweeps + fetches) / batches, 3),
        "finish_to_ledger_p50_s": round(result["delay_p50_s"], 2),
        "finish_to_ledger_p95_s": round(result["delay_p95_s"], 2),
        "finish_to_ledger_max_s": round(result["delay_max_s"], 2),
        "finish_to_ledger_p95_vs_api_finish_time_s": round(result["api_time_delay_p95_s"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

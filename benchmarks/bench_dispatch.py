"""Dispatch efficiency and runner CPU per batch, on a SQLite or a PostgreSQL ledger.

Issue 3 setup: 100 000 instances in 4 regions, the emulator in its own process with 50 ms
latency, concurrency 64, no rate limit, --no-wait. Efficiency = ideal time
(ceil(batches / concurrency) x latency) / measured dispatch time, target >= 0.8; runner CPU per
batch (process time of this process / batches), target <= 1.5 ms.
With a PostgreSQL ledger the server's CPU (every `postgres` process on this machine) is
reported too, per batch: it is work the SQLite runner does in its own process.

Usage: python -m benchmarks.bench_dispatch [--instances-per-region N] [--ledger PATH|URL]
       python -m benchmarks.bench_dispatch --compare postgresql://USER:PASSWORD@HOST/DB [--rounds N]
--compare measures SQLite (a temp file) and PostgreSQL (a fresh database created through the
URL, dropped afterwards) alternately in the same invocation, a new emulator for each, and
prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio

from benchmarks._common import REGIONS, process_cpu_s, start_emulator, store_run
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.emulator import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from fanout.ledger import is_postgres_location, open_ledger, redact_location
from fanout.logs import configure_logging
from fanout.runner import DriveOptions, drive
from fanout.settings import Settings


def postgres_cpu_s() -> float:
    """CPU seconds of every `postgres` process on this machine (server, WAL writer, ...)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        if text.split(" (", 1)[1].startswith("postgres"):
            total += process_cpu_s(int(stat.parent.name))
    return total


async def dispatch(ledger: str, url: str, per_region: int, concurrency: int) -> dict[str, float]:
    """Store a run of every instance and time its dispatch."""
    store = open_ledger(ledger)
    run, batches = store_run(store, per_region, wait=False)
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

    server_cpu0 = postgres_cpu_s() if is_postgres_location(ledger) else 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    outcome = await drive(
        settings,
        credentials,
        store,
        run,
        CommandSpec(run.command_id),  # each batch invokes its region's own id
        emit=on_event,
        options=DriveOptions(handle_signals=False),
    )
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    server_cpu = postgres_cpu_s() - server_cpu0 if is_postgres_location(ledger) else 0.0
    store.close()
    return {
        "first_end_s": ends[0] - t0,
        "last_end_s": ends[-1] - t0,
        "batches": batches,
        "exit_code": int(outcome.exit_code),
        "dispatch_s": elapsed,
        "cpu_s": cpu,
        "server_cpu_s": server_cpu,
    }


def measure(ledger: str, args: argparse.Namespace) -> dict[str, object]:
    """One dispatch of the whole fleet into `ledger`, against a new emulator process."""
    extra = ["--latency-ms", str(args.latency_ms)]
    # --pin: the emulator stands in for a remote server; give it its own core and keep the
    # runner on the other, so the two do not take CPU time from each other.
    server_cpus = {1} if args.pin else None
    proc, url = start_emulator(args.instances_per_region, extra, args.profile_emulator, server_cpus)
    if args.pin:
        os.sched_setaffinity(0, {0})
    emulator_cpu0 = process_cpu_s(proc.pid)
    try:
        result = anyio.run(
            dispatch, ledger, url, args.instances_per_region, args.concurrency, backend="asyncio"
        )
        emulator_cpu = process_cpu_s(proc.pid) - emulator_cpu0
    finally:
        proc.terminate()
        proc.wait(10)
    batches = result["batches"]
    ideal = math.ceil(batches / args.concurrency) * args.latency_ms / 1000
    report: dict[str, object] = {
        "ledger": "postgresql" if is_postgres_location(ledger) else "sqlite",
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
    if is_postgres_location(ledger):
        report["postgres_server_cpu_ms_per_batch"] = round(
            result["server_cpu_s"] * 1000 / batches, 3
        )
    return report


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new database on the server of `url` (which needs CREATEDB); dropped afterwards."""
    import psycopg  # noqa: PLC0415 - only for PostgreSQL runs

    name = f"fanout_bench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


_COMPARED = (
    ("efficiency", "dispatch efficiency (ideal / measured)"),
    ("dispatch_s", "measured dispatch (s)"),
    ("first_batch_done_s", "first batch done (s)"),
    ("cpu_ms_per_batch", "runner CPU per batch (ms)"),
    ("postgres_server_cpu_ms_per_batch", "PostgreSQL server CPU per batch (ms)"),
    ("emulator_cpu_ms_per_batch", "emulator CPU per batch (ms)"),
)


def compare(url: str, args: argparse.Namespace) -> None:
    """SQLite and PostgreSQL alternately, `rounds` times each; JSON lines, then a table."""
    results: dict[str, list[dict[str, object]]] = {"sqlite": [], "postgresql": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            results["sqlite"].append(measure(str(Path(tmp) / "ledger.sqlite3"), args))
        print(json.dumps(results["sqlite"][-1]))
        with fresh_database(url) as database:
            results["postgresql"].append(measure(database, args))
        print(json.dumps(results["postgresql"][-1]))
    print(f"\n{'figure':<40} {'SQLite':>16} {'PostgreSQL':>16}")
    for key, label in _COMPARED:
        cells = []
        for backend in ("sqlite", "postgresql"):
            values = sorted(float(str(r[key])) for r in results[backend] if key in r)
            low, high = (values[0], values[-1]) if values else (None, None)
            cells.append(
                "-" if low is None else f"{low:.3f}" if low == high else f"{low:.3f}-{high:.3f}"
            )
        print(f"{label:<40} {cells[0]:>16} {cells[1]:>16}")
    print(f"(PostgreSQL: {redact_location(url)}; {args.rounds} round(s), ranges are min-max)")


def main() -> None:
    configure_logging("warning")
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances-per-region", type=int, default=25_000)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--ledger", default=None, help="ledger path or postgresql:// URL (default: temp SQLite)"
    )
    parser.add_argument(
        "--compare", metavar="URL", help="SQLite vs PostgreSQL (a fresh database via URL)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="--compare: rounds per backend")
    parser.add_argument(
        "--pin", action="store_true", help="emulator on CPU 1, runner on CPU 0 (2+ cores)"
    )
    parser.add_argument(
        "--profile-emulator", default=None, help="write the emulator's cProfile here"
    )
    args = parser.parse_args()
    if args.compare:
        compare(args.compare, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        report = measure(args.ledger or str(Path(tmp) / "ledger.sqlite3"), args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

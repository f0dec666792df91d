"""Plan and ledger at scale: 1 000 000 targets in 20 regions, then the resume load.

Targets (issue 3): plan + ledger <= 15 s and <= 500 MB peak RSS; resume load <= 5 s.
Usage: python -m benchmarks.bench_scale [--targets N] [--regions R]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from fanout.aliyun.endpoints import KNOWN_REGIONS
from fanout.launch import batch_records
from fanout.ledger import RunRecord, RunState, open_ledger
from fanout.plan import make_plan
from fanout.targets import parse_target_text


def target_file(n: int, regions: list[str]) -> bytes:
    """A target file of `region,i-...` lines, regions interleaved."""
    lines = [f"{regions[i % len(regions)]},i-{i:020d}\n" for i in range(n)]
    return "".join(lines).encode()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, default=1_000_000)
    parser.add_argument("--regions", type=int, default=20)
    args = parser.parse_args()
    regions = sorted(KNOWN_REGIONS)[: args.regions]
    data = target_file(args.targets, regions)
    with tempfile.TemporaryDirectory() as tmp:
        ledger_path = Path(tmp) / "ledger.sqlite3"
        start = time.perf_counter()
        targets = parse_target_text(
            data, source="bench", default_region=None, known_regions=KNOWN_REGIONS
        )
        parsed = time.perf_counter()
        plan = make_plan("rbench", targets.targets, batch_size=50)
        planned = time.perf_counter()
        store = open_ledger(str(ledger_path))
        now = time.time()
        run = RunRecord("rbench", now, now, RunState.CREATED, "c-bench", "acct", args.targets)
        batches = batch_records("rbench", plan)
        store.create_run(run, batches)
        stored = time.perf_counter()
        store.close()
        del targets, plan, batches
        load_start = time.perf_counter()
        again = open_ledger(str(ledger_path))
        again.get_run("rbench")
        loaded = again.load_batches("rbench")
        load_s = time.perf_counter() - load_start
        result = {
            "targets": args.targets,
            "regions": args.regions,
            "batches": len(loaded),
            "parse_s": round(parsed - start, 2),
            "plan_s": round(planned - parsed, 2),
            "ledger_write_s": round(stored - planned, 2),
            "plan_and_ledger_s": round(stored - start, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "resume_load_s": round(load_s, 2),
            "ledger_mb": round(ledger_path.stat().st_size / 2**20, 1),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

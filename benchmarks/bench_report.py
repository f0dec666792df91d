"""The HTML report at 100 000 instances (issue 17): generation time and size, then the time to
open it and to filter it in headless Chromium (Debian's, through Playwright, network blocked).

The run is made-up ledger records (`tests.report_fixtures`: three regions, three waves, failures
with a few distinct output tails, exclusions, a halt with the last batches never sent) stored in
a real SQLite ledger, so generation is timed as `fanout report --format html` does it: read the
ledger, build the model, render.

    .venv/bin/python -m benchmarks.bench_report [--instances 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from fanout.ledger import BeginAttempt, FinishAttempt, InstanceState, SetBatch, SetInstances
from fanout.ledger.sqlite import SqliteLedger
from fanout.report_io import html_report, write_file
from tests.browser import open_report
from tests.report_fixtures import synthetic_run

CHUNK = 5_000


def _store(path: Path, n: int) -> str:
    """A SQLite ledger holding the synthetic run of `n` instances; its run id."""
    lg = synthetic_run(n)
    store = SqliteLedger(path, synchronous="OFF")
    pending = [b.__class__(**{**_fields(b), "state": b.state.PENDING}) for b in lg.batches]
    excluded = [r for r in lg.instances if r.state is InstanceState.EXCLUDED]
    store.create_run(lg.run, pending, excluded)
    ops: list[Any] = []
    for b in lg.batches:
        times = lg.times.get(b.batch_id)
        if times is None:
            continue
        ops += [
            BeginAttempt(lg.run.run_id, b.batch_id, b.region, 1, b.client_token, "bench", 0.0,
                         10**9, times.sent_at),
            FinishAttempt(b.batch_id, 1, "accepted", times.accepted_at or times.sent_at,
                          invoke_id=b.invoke_id),
            SetBatch(b.batch_id, b.state.ACCEPTED, times.accepted_at or times.sent_at,
                     invoke_id=b.invoke_id),
            SetBatch(b.batch_id, b.state.DONE, times.ended_at or times.sent_at),
        ]  # fmt: skip
    store.apply(ops)
    final = [r for r in lg.instances if r.state in (InstanceState.SUCCEEDED, InstanceState.FAILED)]
    for k in range(0, len(final), CHUNK):
        store.apply([SetInstances(lg.run.run_id, tuple(final[k : k + CHUNK]), lg.run.created_at)])
    store.apply([_end(lg.run.run_id, lg.run.updated_at)])
    store.close()
    return lg.run.run_id


def _fields(record: Any) -> dict[str, Any]:
    """A slotted dataclass's fields."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _end(run_id: str, now: float) -> Any:
    """The run's end: halted with exit 3, as its journal says."""
    from fanout.ledger import RunState, SetRun  # noqa: PLC0415

    return SetRun(run_id, RunState.HALTED, now, exit_code=3)


def _browser(path: Path) -> dict[str, float]:
    """Seconds to open the page (script done) and to apply a state and a text filter."""
    started = time.perf_counter()
    with open_report(path) as opened:
        figures = {"open_s": time.perf_counter() - started}
        page = opened.page
        total = page.text_content("#match-count")
        started = time.perf_counter()
        page.select_option("#f-state", label="failed")
        page.wait_for_function(f"() => document.getElementById('match-count').textContent !== '{total}'")  # fmt: skip
        figures["filter_state_s"] = time.perf_counter() - started
        failed = page.text_content("#match-count")
        page.click("#f-clear")
        started = time.perf_counter()
        page.fill("#f-text", "disk full")
        page.wait_for_function(f"() => !['{total}', '{failed}'].includes(document.getElementById('match-count').textContent)")  # fmt: skip
        figures["filter_text_s"] = time.perf_counter() - started
        started = time.perf_counter()
        page.click("th[data-sort=instance_id]")
        figures["sort_s"] = time.perf_counter() - started
        assert opened.blocked == [], opened.blocked
    return figures


def main() -> None:
    """Build the ledger, time the report, open it in Chromium; print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="Keep the ledger and the report in this folder.")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="fanout-bench-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / "ledger.sqlite3"
    ledger.unlink(missing_ok=True)
    run_id = _store(ledger, args.instances)
    store = SqliteLedger(ledger)
    started = time.perf_counter()
    html = html_report(store, run_id)
    generate_s = time.perf_counter() - started
    store.close()
    report = folder / "report.html"
    write_file(report, html)
    figures = {
        "instances": args.instances,
        "generate_s": round(generate_s, 2),
        "size_mb": round(report.stat().st_size / 1e6, 2),
        **{k: round(v, 2) for k, v in _browser(report).items()},
        "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

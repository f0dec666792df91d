"""`fanout status` of a run no runner drives any more (killed with -9, or left at once on a
second Ctrl-C) says so and how to go on, never `exit None`; a live runner is named. Through the
real CLI as processes, the emulator on 127.0.0.1 and a real SQLite ledger."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, close, fleet_ids, wait_for, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]

FIELDS: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 200}


def _start_slow_run(
    emulator: Start, fanout_cli: Bind, tmp_path: Path, latency_ms: int = 200
) -> tuple[Fanout, Any, str]:
    """A run sending one small batch at a time to a slow emulator, two calls accepted."""
    emu = emulator(**FIELDS, latency_ms=latency_ms)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FIELDS))
    proc = cli.start(
        *("run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets)),
        *("--batch-size", "5", "--concurrency", "1", "--rate", "0", "--yes", "--no-wait"),
    )
    wait_for(lambda: len(emu.snapshot()["invocations"]) >= 2)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    return cli, proc, run_id


def test_status_names_the_live_runner_and_after_kill_9_says_no_runner_holds_it(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """While the runner works, status names it; once it is killed with -9 the run stays
    `running` with no exit code, and status says no runner holds it and to resume (the JSON
    `lease.held` false), with no `exit None` anywhere (`runs` shows `exit=-`)."""
    cli, proc, run_id = _start_slow_run(emulator, fanout_cli, tmp_path)
    alive = cli.run("status", run_id)
    assert alive.returncode == 0, alive.stderr
    assert f"run {run_id}: running (driven by " in alive.stdout
    close(proc, signal.SIGKILL)
    shown = cli.run("status", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "exit None" not in shown.stdout
    assert (
        f"run {run_id}: running (no runner holds it: interrupted; fanout resume {run_id})"
        in shown.stdout
    )
    doc = json.loads(cli.run("status", run_id, "--json").stdout)
    assert doc["exit_code"] is None
    assert doc["lease"]["held"] is False
    listed = cli.run("runs").stdout
    assert f"{run_id}  running     exit=-" in listed
    assert "None" not in listed


def test_a_double_ctrl_c_ends_with_one_line_saying_it_left_and_how_to_resume(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Two SIGINTs: the process exits 5 with one last line saying it left at once and naming
    `fanout resume RUN_ID` (not `running (exit 5): no instances`); status then says no runner
    holds the run."""
    # Calls slow enough that the second signal comes while the first waits for one in flight.
    cli, proc, run_id = _start_slow_run(emulator, fanout_cli, tmp_path, latency_ms=1500)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 5
    assert proc.stderr is not None
    lines = [line for line in proc.stderr.read().splitlines() if not line.startswith("{")]
    assert lines[-1].startswith("left at once (exit 5): ")
    assert lines[-1].endswith(f"fanout resume {run_id}")
    assert not any("(exit 5): no instances" in line for line in lines)
    shown = cli.run("status", run_id)
    assert "no runner holds it" in shown.stdout
    assert "exit None" not in shown.stdout

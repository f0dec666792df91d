"""A run that is over (finished, every batch closed) has nothing left for `resume` or `stop`:
each says so, sends nothing and records nothing; resume exits with the run's own exit code,
stop with 0. The real CLI as processes, the emulator on 127.0.0.1, a real SQLite ledger."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, fleet_ids, ledger_sql, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]


def _calls(emu: EmulatorThread) -> int:
    """Every request the emulator answered, all actions and regions."""
    return sum(sum(r["calls"].values()) for r in emu.snapshot()["regions"].values())


def _finished_run(emulator: Start, fanout_cli: Bind, tmp_path: Path) -> tuple[Fanout, Any, str]:
    """A run that finished with problems (exit 1): some executions fail."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 20, "seed": 3}
    emu = emulator(**fields, exec_failure_fraction=0.3)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    done = cli.run("run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes")
    assert done.returncode == 1, done.stderr
    return cli, emu, done.stdout.splitlines()[0].strip()


def test_resume_and_stop_of_a_finished_run_send_and_record_nothing(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`resume` of a finished run prints one line saying there is nothing to resume and exits
    1 (the run's own code); `--json` prints one `end` line; `stop` says nothing to stop and
    exits 0; the emulator sees no call and the ledger gains no event."""
    cli, emu, run_id = _finished_run(emulator, fanout_cli, tmp_path)
    before = _calls(emu)
    events = ledger_sql(cli.ledger, "SELECT COUNT(*) FROM events")
    resumed = cli.run("resume", run_id, "--yes")
    assert resumed.returncode == 1, resumed.stderr
    assert resumed.stderr.splitlines() == [
        f"run {run_id} is finished: nothing to resume, nothing sent; `fanout retry {run_id}` "
        "tries again what did not succeed (exit 1)"
    ]
    as_json = cli.run("resume", run_id, "--yes", "--json")
    assert as_json.returncode == 1
    (line,) = as_json.stdout.splitlines()
    end = json.loads(line)
    assert (end["event"], end["state"], end["exit_code"]) == ("end", "finished", 1)
    stopped = cli.run("stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    assert (
        stopped.stdout.strip() == f"run {run_id} is already finished: nothing to stop, nothing sent"
    )
    doc = json.loads(cli.run("stop", run_id, "--json").stdout)
    assert doc["nothing_to_stop"] is True
    assert doc["stop_calls"] == 0
    assert _calls(emu) == before
    assert ledger_sql(cli.ledger, "SELECT COUNT(*) FROM events") == events
    assert ledger_sql(cli.ledger, f"SELECT state FROM runs WHERE run_id = '{run_id}'") == [
        ("finished",)
    ]


def test_retry_with_nothing_to_retry_is_one_json_line_and_sends_nothing(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`retry --json` of a run with no instance in the chosen states prints exactly one
    compact JSON line (the `end` of an event stream), exits 0 and sends nothing; without
    --json it says so in one stderr line and stdout stays empty."""
    cli, emu, run_id = _finished_run(emulator, fanout_cli, tmp_path)
    before = _calls(emu)
    done = cli.run("retry", run_id, "--only", "unknown", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    doc = json.loads(line)
    assert (doc["event"], doc["run_id"], doc["parent_run_id"], doc["targets"]) == (
        "end",
        None,
        run_id,
        0,
    )
    plain = cli.run("retry", run_id, "--only", "unknown", "--yes")
    assert plain.returncode == 0
    assert plain.stdout == ""
    assert plain.stderr.splitlines() == [f"nothing to retry in {run_id} (unknown): nothing sent"]
    assert _calls(emu) == before

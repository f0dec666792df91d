"""A reader that closes fanout's stdout (`fanout run ... --json | head -1`, the README's runbook
line) does not end the run: it goes on to the end with the ledger as its record, and a reader
command (`status --json | true`) ends with its own exit code, never a crash (exit 70)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, fleet_ids, invoked_instances, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]
FLEET: dict[str, Any] = {"regions": ("cn-hangzhou", "cn-beijing"), "instances_per_region": 500}


def _first_line_then_close(cli: Fanout, *args: str, lines: int = 1) -> tuple[str, int, str]:
    """Start `fanout ARGS`, read `lines` stdout lines (0: none, as `| true`), close the pipe
    (as `head -1` does), wait."""
    proc = subprocess.Popen(
        cli.argv(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli.env,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline().decode() if lines else ""
    proc.stdout.close()
    with proc.stderr:
        errors = proc.stderr.read().decode()
    return first, proc.wait(timeout=120), errors


def test_a_run_whose_reader_left_after_one_line_still_finishes(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    emu = emulator(**FLEET, latency_ms=5)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    first, code, errors = _first_line_then_close(
        cli, "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes",
        "--json", "--waves", "1,10%,100%",
    )  # fmt: skip
    run_id = json.loads(first)["run_id"]
    assert code in (0, 1), errors
    assert "internal error" not in errors
    assert "Traceback" not in errors
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 1000
    assert set(counts.values()) == {1}
    status = cli.run("status", run_id, "--json")
    assert json.loads(status.stdout)["state"] == "finished", status.stdout


def test_a_reader_command_on_a_closed_pipe_keeps_its_exit_code(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    emu = emulator(**FLEET, latency_ms=5)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes", "--json"
    )
    run_id = json.loads(done.stdout.splitlines()[0])["run_id"]
    for args in (("report", run_id, "--format", "csv"), ("status", run_id, "--json")):
        _, code, errors = _first_line_then_close(cli, *args, lines=0)
        assert code == cli.run(*args).returncode, errors
        assert "internal error" not in errors
        assert "Traceback" not in errors

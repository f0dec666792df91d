"""What happens once calls have gone out (issue 16): a failure then is never "bad input, nothing
was sent" (exit 2), and the API's per-call instance limit is learnt without running anything
twice. Through the real CLI as a process, the emulator on 127.0.0.1 and real SQLite files.

A disk that fills mid-run is made with `RLIMIT_FSIZE` (set on the running process with
`prlimit`: file modes do not stop root, CI's user), at the ledger's size at that moment.
"""

from __future__ import annotations

import json
import resource
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, fleet_ids, invoked_instances, wait_for, write_targets
from tests.test_schemas import validate

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]


def _tokens(ledger: Path) -> set[str]:
    """Every ClientToken the ledger holds an attempt (an intent written ahead) for."""
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT client_token FROM attempts").fetchall()
    conn.close()
    return {token for (token,) in rows}


def test_a_disk_that_fills_mid_run_is_exit_6_with_what_was_sent_recorded(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """The ledger's file may grow no more once invocations were accepted: the run stops with
    exit 6 (it said 2, "nothing was sent", after four were accepted), one line saying what to do;
    every invocation the emulator accepted has its intent in the ledger; a resume with room
    again finishes the run and no instance is invoked twice."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 200}
    emu = emulator(**fields, latency_ms=150)
    cli = fanout_cli(emu)
    ledger = Path(cli.ledger)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    args = ("--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--batch-size", "5")
    proc = cli.start("run", *args, "--yes", "--no-wait", "--concurrency", "1", "--rate", "0")
    wait_for(lambda: len(emu.snapshot()["invocations"]) >= 2)
    wal = ledger.with_name(ledger.name + "-wal")
    full = max(wal.stat().st_size, ledger.stat().st_size)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (full, full))
    code = proc.wait(timeout=60)
    assert proc.stdout is not None
    assert proc.stderr is not None
    run_id = proc.stdout.readline().strip()
    errors = [line for line in proc.stderr.read().splitlines() if line.startswith("fanout:")]
    accepted = emu.snapshot()["invocations"]
    assert code == 6, errors
    assert len(errors) == 1, errors
    assert "the ledger failed while the run was driven" in errors[0]
    assert f"fanout resume {run_id}" in errors[0]
    assert "Traceback" not in errors[0]
    assert 2 <= len(accepted) < 40
    assert {inv["client_token"] for inv in accepted} <= _tokens(ledger)

    resumed = cli.run("resume", run_id, "--yes", "--no-wait", "--rate", "0")
    assert resumed.returncode == 0, resumed.stderr
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 200
    assert set(counts.values()) == {1}


def test_a_call_over_the_accounts_instance_limit_is_split_not_failed(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """An account that takes 20 instances per call while fanout was told 100: each refused call
    (InstanceIds.ExceedLimit: nothing ran) splits its batch in two with new ClientTokens and
    the region's batches get smaller; every instance runs exactly once, the run exits 0, and
    only a handful of calls were refused."""
    fields: dict[str, Any] = {"regions": ("cn-beijing", "cn-hangzhou"), "instances_per_region": 120}
    emu = emulator(**fields, max_instances_per_call=20)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    env = {**cli.env, "FANOUT_MAX_BATCH_SIZE": "100"}
    done = cli.run(
        *("run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets)),
        *("--batch-size", "100", "--yes", "--json"),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    snapshot = emu.snapshot()
    counts = invoked_instances(snapshot)
    assert len(counts) == 240
    assert set(counts.values()) == {1}
    assert max(len(inv["instance_ids"]) for inv in snapshot["invocations"]) <= 20
    for region in fields["regions"]:
        calls = snapshot["regions"][region]["calls"]["InvokeCommand"]
        accepted = sum(1 for inv in snapshot["invocations"] if inv["region"] == region)
        assert calls - accepted <= 4, (region, calls, accepted)  # 100 -> 50 -> 25 -> 12
    splits = [line for line in done.stdout.splitlines() if '"event": "batch_split"' in line]
    assert splits
    for line in done.stdout.splitlines():  # batch_split and the rest hold to their schemas
        event = json.loads(line)
        validate(event, f"event-{event['event']}")
    status = cli.run("status", done.stdout.splitlines()[0].split('"run_id": "')[1][:23], "--json")
    assert '"succeeded": 240' in status.stdout


def test_a_run_stopped_by_a_zero_lease_is_refused_before_any_call(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`lease_s = 0` (two resumes then both drove the run, one ended exit 2 on a transition
    error after calls went out) is refused before anything is sent."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 10}
    emu = emulator(**fields)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    stored = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes",
        "--daily-quota", "0",
    )  # fmt: skip
    assert stored.returncode == 4, stored.stderr
    run_id = stored.stdout.splitlines()[0].strip()
    env = {**cli.env, "FANOUT_LEASE_S": "0"}
    procs = [cli.start("resume", run_id, "--yes", env=env) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=60) == 2
        assert proc.stderr is not None
        assert "FANOUT_LEASE_S: lease_s must be a number from 3" in proc.stderr.read()
    assert emu.snapshot()["invocations"] == []

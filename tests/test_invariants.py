"""DESIGN invariants I1-I4, proven from the emulator's own record and the ledger.

Every test runs the real `fanout` CLI as a subprocess against the emulator on 127.0.0.1; I1-I3
run once per ledger backend (a SQLite file, a PostgreSQL database).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import (
    Fanout,
    both_backends,
    close,
    control,
    fleet_ids,
    invoked_instances,
    ledger_sql,
    wait_for,
    write_targets,
)

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]


def batch_states(ledger: str) -> dict[str, int]:
    """Batch counts by state, read straight from the ledger (either backend)."""
    return dict(ledger_sql(ledger, "SELECT state, COUNT(*) FROM batches GROUP BY state"))


def read_run_id(proc: subprocess.Popen[str]) -> str:
    """The first stdout line of `fanout run` is the run id."""
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("r"), line
    return line


@pytest.mark.slow
@both_backends
def test_i1_exactly_once_under_kill_9(emulator: Start, fanout_cli: Bind, tmp_path: Path) -> None:
    """SIGKILL at random moments (>= 20 times) plus lost answers and 500s: every instance runs once."""
    fields: dict[str, Any] = {
        "regions": ("cn-hangzhou", "cn-beijing"),
        "instances_per_region": 1000,
        "seed": 7,
    }
    emu = emulator(**fields, latency_ms=30, error_rate=0.1, accept_then_drop_rate=0.15)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "targets.txt", fleet_ids(**fields))
    rng = random.Random(1234)
    proc = cli.start(
        "run",
        "--command-name",
        DEMO_COMMAND_NAME,
        "--targets",
        str(targets),
        "--batch-size",
        "10",
        "--concurrency",
        "3",
        "--rate",
        "0",
        "--no-wait",
        "--yes",
        "--no-preflight",
    )
    run_id = read_run_id(proc)
    kills = 0
    while True:
        try:
            code = proc.wait(timeout=rng.uniform(0.05, 0.6) if kills < 25 else 120)
        except subprocess.TimeoutExpired:
            close(proc, signal.SIGKILL)
            kills += 1
            proc = cli.start(
                "resume", run_id, "--yes", "--no-wait", "--concurrency", "3", "--rate", "0"
            )
            continue
        if code == 0:
            break
        assert proc.stderr is not None
        pytest.fail(f"fanout exited {code}: {proc.stderr.read()[-2000:]}")
    assert kills >= 20
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 2000
    assert set(counts.values()) == {1}, {i: n for i, n in counts.items() if n != 1}
    assert batch_states(cli.ledger) == {"accepted": 200}


@both_backends
def test_i2_final_states_add_up(emulator: Start, fanout_cli: Bind, tmp_path: Path) -> None:
    """Per-instance states in `status --json` add up to the target count, excluded ones included."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 120, "seed": 3}
    emu = emulator(**fields, stopped_fraction=0.05, exec_failure_fraction=0.1)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes", "--json"
    )
    assert done.returncode == 1, done.stderr
    run_id = json.loads(done.stdout.splitlines()[0])["run_id"]
    status = cli.run("status", run_id, "--json")
    doc = json.loads(status.stdout)
    assert sum(doc["instances"].values()) == doc["target_count"] == 120
    assert doc["instances"]["excluded"] == 6
    assert 0 < doc["instances"]["failed"] < 114
    assert doc["instances"]["succeeded"] == 114 - doc["instances"]["failed"]


@both_backends
def test_i3_two_processes_share_quota(emulator: Start, fanout_cli: Bind, tmp_path: Path) -> None:
    """Two runs on one ledger with a quota of 30 make at most 30 calls together, exit 4, then resume."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 1000}
    emu = emulator(**fields, latency_ms=20)
    cli = fanout_cli(emu)
    ids = fleet_ids(**fields)
    first = write_targets(tmp_path / "a.txt", ids[:500])
    second = write_targets(tmp_path / "b.txt", ids[500:])
    # 32 calls per run: more than the quota, so both stop at it however their starts interleave.
    common = (
        "--command-name",
        DEMO_COMMAND_NAME,
        "--batch-size",
        "16",
        "--daily-quota",
        "30",
        "--yes",
        "--no-wait",
        "--no-preflight",
        "--rate",
        "0",
        "--concurrency",
        "4",
    )
    procs = [cli.start("run", "--targets", str(t), *common) for t in (first, second)]
    run_ids = [read_run_id(p) for p in procs]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [4, 4]
    state = emu.snapshot()
    assert state["regions"]["cn-hangzhou"]["calls"]["InvokeCommand"] == 30
    # Each new day (calls aged by a day in the ledger, the emulator's clock moved on) the
    # resumes spend at most 30 calls together; 64 calls take three days.
    todo = list(run_ids)
    for day in range(1, 4):
        ledger_sql(cli.ledger, "UPDATE quota_calls SET ts = ts - 86401")
        control(emu, "clock", {"advance_s": 86_400})
        for run_id in list(todo):
            resumed = cli.run("resume", run_id, "--yes", "--no-wait", "--daily-quota", "30")
            assert resumed.returncode in (0, 4), resumed.stderr
            if resumed.returncode == 0:
                todo.remove(run_id)
        calls = emu.snapshot()["regions"]["cn-hangzhou"]["calls"]["InvokeCommand"]
        assert calls == min(30 * (day + 1), 64)
    assert todo == []
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 1000
    assert set(counts.values()) == {1}


@pytest.mark.parametrize(
    ("content", "where", "problem"),
    [
        (b"cn-hangzhou,i-abcdefgh123\ncn-hangzhou,x-bad\n", ":2:", "instance id"),
        (b"cn-nowhere-9,i-abcdefgh123\n", ":1:", "unknown region"),
        (b"", "", "no targets"),
        (b"# only a comment\n\n", "", "no targets"),
        (b"cn-hangzhou,i-abcdefgh123\n\x00\xff\xfe\x80junk\n", ":2:", ""),
    ],
)
def test_i4_bad_targets_cost_nothing(
    emulator: Start, fanout_cli: Bind, tmp_path: Path, content: bytes, where: str, problem: str
) -> None:
    """A malformed target file exits 2 with a one-line file:line message and no API call at all."""
    emu = emulator()
    cli = fanout_cli(emu)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    done = cli.run("run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(bad), "--yes")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"bad.txt{where}" in lines[0]
    assert problem in lines[0]
    assert "Traceback" not in done.stderr
    assert emu.snapshot()["regions"]["cn-hangzhou"]["calls"] == {}


def test_run_with_no_api_calls_when_timed_without_frequency(
    emulator: Start, fanout_cli: Bind
) -> None:
    """--timed without --frequency is refused before anything is sent (exit 2)."""
    emu = emulator()
    cli = fanout_cli(emu)
    iid = fleet_ids()[0][1]
    done = cli.run(
        "run",
        "--command-name",
        DEMO_COMMAND_NAME,
        "--instance-id",
        iid,
        "--region",
        "cn-hangzhou",
        "--timed",
        "--yes",
    )
    assert done.returncode == 2
    assert "--frequency" in done.stderr
    assert emu.snapshot()["regions"]["cn-hangzhou"]["calls"] == {}


def test_interrupt_exits_5_and_resume_completes(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """First SIGINT stops dispatching and exits 5; resume finishes with each instance invoked once."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 600}
    emu = emulator(**fields, latency_ms=50)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    proc = cli.start(
        "run",
        "--command-name",
        DEMO_COMMAND_NAME,
        "--targets",
        str(targets),
        "--batch-size",
        "10",
        "--concurrency",
        "2",
        "--rate",
        "0",
        "--no-wait",
        "--yes",
        "--no-preflight",
    )
    run_id = read_run_id(proc)
    # Interrupt once the ledger shows the first accepted batch (not after a guessed delay).
    wait_for(lambda: batch_states(cli.ledger).get("accepted", 0) > 0)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 5
    states = batch_states(cli.ledger)
    assert states.get("sending", 0) == 0  # in-flight calls were finished and recorded
    assert 0 < states.get("accepted", 0) < 60
    resumed = cli.run("resume", run_id, "--yes", "--no-wait")
    assert resumed.returncode == 0, resumed.stderr
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 600
    assert set(counts.values()) == {1}


def test_an_interrupted_wave_is_not_reported_done(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """SIGINT while wave 1's executions still run: exit 5 and no `wave` event (the text line
    "wave 1 done") for a wave whose results are not in (new-user trial)."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 200}
    emu = emulator(**fields, exec_seconds=(30.0, 30.0))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    proc = cli.start(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes",
        "--json", "--waves", "10%,100%",
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:  # the first batch of wave 1 accepted (its executions take 30 s)
        seen.append(line)
        if '"event": "batch"' in line and '"outcome": "accepted"' in line:
            break
    proc.send_signal(signal.SIGINT)
    out, errors = proc.communicate(timeout=60)
    assert proc.returncode == 5, errors
    lines = [*seen, *out.splitlines()]
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert [e for e in events if e["event"] == "batch"]  # wave 1 went out
    assert not [e for e in events if e["event"] == "wave"], events
    assert events[-1]["event"] == "end"

"""Issue 4 end to end: results, waves and error budget, retry of the failed, stop, report."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import fanout
from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.credentials import Credentials
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    EmulatorThread,
)
from fanout.settings import Settings
from tests.conftest import Fanout, control, fleet_ids, invoked_instances, wait_for, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]


def report(cli: Fanout, run_id: str) -> dict[str, Any]:
    """`fanout report --format json` as a document."""
    done = cli.run("report", run_id, "--format", "json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def first_json_line(stdout: str) -> dict[str, Any]:
    """The first JSON event of `--json` output."""
    line: dict[str, Any] = json.loads(stdout.splitlines()[0])
    return line


FLEET: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 1000, "seed": 11}


def test_waves_and_error_budget_halt_exactly(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """With 10 % failing, waves 1,10%,100% and --max-errors 5 halt (exit 3) after wave 2 exactly."""
    emu = emulator(**FLEET, exec_seconds=(1.0, 2.0), exec_failure_fraction=0.1)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    done = cli.run(
        "run",
        "--command-id",
        DEMO_COMMAND_ID,
        "--targets",
        str(targets),
        "--waves",
        "1,10%,100%",
        "--max-errors",
        "5",
        "--yes",
        "--json",
    )
    assert done.returncode == 3, done.stderr
    run_id = first_json_line(done.stdout)["run_id"]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert any(e["event"] == "halted" for e in events)
    # Wave 1 is 1 instance, wave 2 brings the total to 10 % = 100; wave 3 never starts.
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 100
    assert set(counts.values()) == {1}
    doc = report(cli, run_id)
    assert doc["summary"]["failed"] > 5
    assert doc["summary"]["succeeded"] + doc["summary"]["failed"] == 100
    assert doc["summary"]["not_invoked"] == 900
    status = json.loads(cli.run("status", run_id, "--json").stdout)
    assert status["state"] == "halted"
    assert sum(status["instances"].values()) == 1000


def test_retry_only_failed_invokes_exactly_the_failed(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`retry --only failed` invokes exactly the failed set, and the report rolls the retry up."""
    fleet = {**FLEET, "instances_per_region": 300}
    emu = emulator(**fleet, exec_seconds=(0.1, 0.5), exec_failure_fraction=0.1)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fleet))
    first = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--yes", "--json",
        "--waves", "50%,100%",
    )  # fmt: skip
    assert first.returncode == 1, first.stderr
    run_id = first_json_line(first.stdout)["run_id"]
    before_retry = report(cli, run_id)["instances"]
    failed = {r["instance_id"] for r in before_retry if r["state"] == "failed"}
    assert failed
    wave_2 = {r["instance_id"] for r in before_retry if r["wave"] == 2}
    before = len(emu.snapshot()["invocations"])
    retry = cli.run("retry", run_id, "--only", "failed", "--yes", "--json")
    assert retry.returncode in (0, 1), retry.stderr
    retry_id = first_json_line(retry.stdout)["run_id"]
    new = emu.snapshot()["invocations"][before:]
    assert {iid for inv in new for iid in inv["instance_ids"]} == failed
    assert sum(len(inv["instance_ids"]) for inv in new) == len(failed)
    rolled = report(cli, run_id)
    rows = {r["instance_id"]: r for r in rolled["instances"]}
    assert len(rows) == 300
    assert all(rows[i]["run_id"] == retry_id for i in failed)
    assert rolled["summary"]["failed"] < len(failed) + 1
    # --wave is the run's own wave, for retried instances too (the retry has waves of its own).
    only_2 = cli.run("report", run_id, "--wave", "2", "--format", "json")
    assert {r["instance_id"] for r in json.loads(only_2.stdout)["instances"]} == wave_2
    table = cli.run("report", run_id).stdout
    assert table.splitlines()[0].split()[0] == "run_id"  # rows of two runs: which is which
    assert retry_id in table
    runs = json.loads(cli.run("runs", "--json").stdout)
    assert {r["run_id"]: r["parent_run_id"] for r in runs}[retry_id] == run_id


def test_retry_refuses_bad_choice(emulator: Start, fanout_cli: Bind, tmp_path: Path) -> None:
    """An unknown --only value is refused with exit 2 and nothing sent."""
    fleet = {**FLEET, "instances_per_region": 10}
    emu = emulator(**fleet)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fleet))
    first = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--yes", "--json"
    )
    run_id = first_json_line(first.stdout)["run_id"]
    calls = emu.snapshot()["regions"]["cn-hangzhou"]["calls"].get("InvokeCommand")
    bad = cli.run("retry", run_id, "--only", "broken", "--yes")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert emu.snapshot()["regions"]["cn-hangzhou"]["calls"].get("InvokeCommand") == calls


async def _statuses(url: str, region: str, invoke_ids: list[str]) -> set[str]:
    """Every per-instance status of these invocations, read from the emulator with our client."""
    creds = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)
    async with EcsClient(creds, ClientOptions(endpoint=url)) as client:
        found: set[str] = set()
        for invoke_id in invoke_ids:
            results = await client.describe_invocation_results(region, invoke_id=invoke_id)
            found |= {r.status for r in results}
        return found


def test_stop_stops_running_invocations(emulator: Start, fanout_cli: Bind, tmp_path: Path) -> None:
    """`fanout stop` makes the runner exit 5 and leaves the running invocations stopped (on an
    emulator whose StopInvocation terminates running executions: `stop_mode="terminate"`)."""
    fleet = {**FLEET, "instances_per_region": 120}
    emu = emulator(**fleet, exec_seconds=(120.0, 120.0), stop_mode="terminate")
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fleet))
    proc = cli.start(
        "run",
        "--command-id",
        DEMO_COMMAND_ID,
        "--targets",
        str(targets),
        "--yes",
        "--timeout",
        "600",
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    wait_for(lambda: len(emu.snapshot()["invocations"]) == 3)
    stopped = cli.run("stop", run_id, "--json")
    assert stopped.returncode == 0, stopped.stderr
    doc = json.loads(stopped.stdout)
    assert doc["instances_stopped"] == 120
    assert doc["state"] == "stopped"
    assert proc.wait(timeout=30) == 5
    invoke_ids = [inv["invoke_id"] for inv in emu.snapshot()["invocations"]]
    statuses = anyio.run(_statuses, emu.url, "cn-hangzhou", invoke_ids)
    assert statuses <= {"Terminated", "Cancelled", "Stopped"}
    assert statuses


def test_report_shows_timeouts_aborts_and_exit_codes(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Timed-out, aborted (agent lost after submit: unreachable) and non-zero exits are reported
    with codes."""
    fleet = {**FLEET, "instances_per_region": 40}
    emu = emulator(**fleet, exec_seconds=(5.0, 15.0), exec_failure_fraction=0.3)
    cli = fanout_cli(emu)
    ids = fleet_ids(**fleet)
    targets = write_targets(tmp_path / "t.txt", ids)
    control(emu, "clock", {"freeze": True})
    proc = cli.start(
        "run",
        "--command-id",
        DEMO_COMMAND_ID,
        "--targets",
        str(targets),
        "--yes",
        "--timeout",
        "10",
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    wait_for(lambda: len(emu.snapshot()["invocations"]) == 1)
    lost = [iid for _region, iid in ids[:2]]
    control(emu, "instances", {"instance_ids": lost, "agent_online": False})
    control(emu, "clock", {"advance_s": 60})
    assert proc.wait(timeout=60) == 1
    rows = {r["instance_id"]: r for r in report(cli, run_id)["instances"]}
    assert {rows[i]["invocation_status"] for i in lost} == {"Aborted"}
    assert all(rows[i]["state"] == "unreachable" for i in lost)  # the command never ran there
    assert {rows[i]["error_code"] for i in lost} == {"ClientNotRunning"}
    by_status: dict[str, list[dict[str, Any]]] = {}
    for row in rows.values():
        by_status.setdefault(row["invocation_status"], []).append(row)
    assert by_status.get("Timeout"), by_status.keys()
    assert all(r["state"] == "failed" and r["error_code"] for r in by_status["Timeout"])
    assert by_status.get("Failed")
    assert all(r["exit_code"] not in (0, None) for r in by_status["Failed"])
    assert all(r["exit_code"] == 0 and r["state"] == "succeeded" for r in by_status["Success"])
    assert all(r["output"] for r in by_status["Success"])


@pytest.mark.parametrize("spec", ["x", "-1", "101%"])
def test_bad_max_errors_refused(emulator: Start, fanout_cli: Bind, spec: str) -> None:
    """A malformed --max-errors is refused before anything is sent."""
    emu = emulator()
    cli = fanout_cli(emu)
    iid = fleet_ids()[0][1]
    done = cli.run(
        "run",
        "--command-id",
        DEMO_COMMAND_ID,
        "--instance-id",
        iid,
        "--region",
        "cn-hangzhou",
        "--max-errors",
        spec,
        "--yes",
    )
    assert done.returncode == 2
    assert "--max-errors" in done.stderr
    assert emu.snapshot()["regions"]["cn-hangzhou"]["calls"] == {}


def test_stop_gets_through_transient_errors_and_collects_every_final_state(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """With half the StopInvocation calls answered 500, `fanout stop` retries (it is idempotent)
    until every open invocation is stopped, exits 0, and collects the stopped instances' final
    states: none is left `invoked` in `status`. (On an emulator whose StopInvocation terminates
    running executions, `stop_mode="terminate"`: the API reference's default only cancels
    executions that have not started, facts 10 [8].)"""
    fleet = {**FLEET, "instances_per_region": 200}
    emu = emulator(
        **fleet,
        stop_mode="terminate",
        exec_seconds=(120.0, 120.0),
        error_rate=0.5,
        fault_actions=frozenset({"StopInvocation"}),
    )
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fleet))
    ran = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--yes", "--no-wait",
        "--timeout", "600", "--json",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    run_id = first_json_line(ran.stdout)["run_id"]
    stopped = cli.run("stop", run_id, "--json", "--stop-timeout", "60")
    assert stopped.returncode == 0, stopped.stderr
    doc = json.loads(stopped.stdout)
    assert doc["instances_stopped"] == 200
    assert doc["not_stopped"] == []
    assert doc["still_running"] == 0
    calls = emu.snapshot()["regions"]["cn-hangzhou"]["calls"]["StopInvocation"]
    assert calls > 4  # 4 invocations, and some 500s were tried again
    invoke_ids = [inv["invoke_id"] for inv in emu.snapshot()["invocations"]]
    assert anyio.run(_statuses, emu.url, "cn-hangzhou", invoke_ids) <= {
        "Terminated",
        "Cancelled",
        "Stopped",
    }
    status = json.loads(cli.run("status", run_id, "--json").stdout)
    assert status["instances"].get("invoked", 0) == 0, status["instances"]
    assert status["instances"]["failed"] == 200  # Terminated: a final state, with its code


def test_a_resume_reports_each_instance_once(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Interrupted while results come in, then resumed: the resumed leg reports (and counts
    against the budget) only the instances that were not final yet, so progress and the
    budget agree with the ledger (no "366/300 ok")."""
    fleet = {**FLEET, "instances_per_region": 200}
    emu = emulator(**fleet, exec_seconds=(0.5, 8.0))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fleet))
    proc = cli.start(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--yes", "--json"
    )
    assert proc.stdout is not None
    run_id = json.loads(proc.stdout.readline())["run_id"]

    def final_now() -> int:
        done = cli.run("status", run_id, "--json")
        counts = json.loads(done.stdout)["instances"] if done.returncode == 0 else {}
        return int(counts.get("succeeded", 0)) + int(counts.get("failed", 0))

    wait_for(lambda: final_now() >= 20)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 5
    before = final_now()
    assert 0 < before < 200
    reported: list[str] = []  # the resumed leg's per-instance events, through the Python API
    settings = Settings(ledger=cli.ledger, endpoint=emu.url)
    outcome = fanout.resume_blocking(
        run_id,
        settings=settings,
        credentials=Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET),
        on_event=lambda kind, data: (
            reported.append(str(data["instance_id"])) if kind == "instance" else None
        ),
    )
    assert outcome.exit_code == 0, outcome.message
    assert len(reported) == len(set(reported)) == 200 - before
    assert final_now() == 200

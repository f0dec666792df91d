"""Issue 14 end to end: a fleet with non-zero exits, agent and delivery failures and a 100 KB
output, reported as the real API reports them - ExitCodeNonzero rows, `unreachable` rows apart,
the last 24 KB of a long output kept with the bytes dropped - and what the state means for
exit codes, the error budget and `retry`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import DEMO_COMMAND_ID, EmulatorThread
from fanout.emulator.outcomes import simulated_output
from tests.conftest import Fanout, write_targets
from tests.emulator_process import emulator_process, listed_targets
from tests.test_schemas import validate

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]
REGION = "cn-hangzhou"
OUTPUT_LIMIT = 24 * 1024
LONG = 100_000


def _fleet(path: Path) -> tuple[Path, list[tuple[str, str]]]:
    """12 instances: 3 exit non-zero, 3 are never reached (one way each), one prints 100 KB and
    then fails, the rest succeed."""
    entries: list[dict[str, Any]] = [
        {"InstanceId": f"i-fanoutok{n}", "RegionId": REGION} for n in range(5)
    ]
    entries += [
        {"InstanceId": f"i-fanoutexit{n}", "RegionId": REGION, "ExitCode": 2 + n} for n in range(3)
    ]
    entries += [
        {"InstanceId": f"i-fanoutlost{n}", "RegionId": REGION, "AgentFailure": code}
        for n, code in enumerate(("ClientNotRunning", "ClientNotResponse", "DeliveryTimeout"))
    ]
    entries.append(
        {"InstanceId": "i-fanoutlong", "RegionId": REGION, "OutputBytes": LONG, "ExitCode": 9}
    )
    path.write_text(json.dumps(entries))
    return path, [(REGION, str(e["InstanceId"])) for e in entries]


def _run(cli: Fanout, targets: Path, *extra: str) -> tuple[int, str]:
    """`fanout run` on the targets; (exit code, run id)."""
    done = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--yes", *extra
    )
    return done.returncode, done.stdout.splitlines()[0].strip()


def test_report_keeps_failures_unreachable_and_long_output_tails(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Non-zero exits are `failed` with ExitCodeNonzero; agent/delivery failures `unreachable`
    with their codes, counted apart in report, status and --json; the 100 KB output keeps its
    last 24 KB (the error line at its end) with the dropped byte count; the run exits 1."""
    fleet, ids = _fleet(tmp_path / "fleet.json")
    emu = emulator(fleet_file=fleet, regions=(REGION,))
    cli = fanout_cli(emu)
    code, run_id = _run(cli, write_targets(tmp_path / "t.txt", ids))
    assert code == 1
    done = cli.run("report", run_id, "--format", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    validate(doc, "report")  # the shipped schema knows unreachable, error_info and dropped
    rows = {r["instance_id"]: r for r in doc["instances"]}
    assert doc["summary"]["failed"] == 4
    assert doc["summary"]["unreachable"] == 3
    assert doc["summary"]["succeeded"] == 5
    for n in range(3):
        row = rows[f"i-fanoutexit{n}"]
        assert (row["state"], row["error_code"], row["exit_code"]) == ("failed", "ExitCodeNonzero", 2 + n)  # fmt: skip
        assert row["error_info"] == "the command execution exit code is not zero"
    lost = {rows[f"i-fanoutlost{n}"]["error_code"] for n in range(3)}
    assert lost == {"ClientNotRunning", "ClientNotResponse", "DeliveryTimeout"}
    assert {rows[f"i-fanoutlost{n}"]["state"] for n in range(3)} == {"unreachable"}
    assert {rows[f"i-fanoutlost{n}"]["invocation_status"] for n in range(3)} == {"Aborted"}
    long = rows["i-fanoutlong"]
    assert len(long["output"].encode()) == OUTPUT_LIMIT
    assert long["output"].endswith("error: simulated failure, exit code 9\n")
    printed = simulated_output("i-fanoutlong", 9, LONG).encode()  # what the instance printed
    assert long["output"].encode() == printed[-OUTPUT_LIMIT:]
    assert long["dropped"] == len(printed) - OUTPUT_LIMIT
    assert doc["by_error_code"]["ExitCodeNonzero"] == 4
    table = cli.run("report", run_id)
    assert "unreachable 3" in table.stdout
    assert "kept the end of a longer output" in table.stdout
    status = json.loads(cli.run("status", run_id, "--json").stdout)
    validate(status, "status")
    assert status["instances"]["unreachable"] == 3
    assert status["instances"]["failed"] == 4


def test_retry_only_unreachable_picks_exactly_those(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`retry --only unreachable` makes a linked run of the unreachable instances only."""
    fleet, ids = _fleet(tmp_path / "fleet.json")
    emu = emulator(fleet_file=fleet, regions=(REGION,))
    cli = fanout_cli(emu)
    _, run_id = _run(cli, write_targets(tmp_path / "t.txt", ids))
    done = cli.run("retry", run_id, "--only", "unreachable", "--yes", "--json")
    first = json.loads(done.stdout.splitlines()[0])
    assert first["targets"] == 3
    invoked = [inv["instance_ids"] for inv in emu.snapshot()["invocations"]]
    assert sorted(invoked[-1]) == [f"i-fanoutlost{n}" for n in range(3)]


@pytest.mark.parametrize(("flag", "exit_code"), [((), 1), (("--count-unreachable",), 3)])
def test_unreachable_counts_against_the_budget_only_when_asked(
    emulator: Start, fanout_cli: Bind, tmp_path: Path, flag: tuple[str, ...], exit_code: int
) -> None:
    """With --max-errors 0 and only unreachable instances failing, the run halts (exit 3) only
    with --count-unreachable; without it, it finishes with problems (exit 1)."""
    entries = [{"InstanceId": f"i-fanoutok{n}", "RegionId": REGION} for n in range(4)]
    entries.append(
        {"InstanceId": "i-fanoutlost", "RegionId": REGION, "AgentFailure": "DeliveryTimeout"}
    )
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps(entries))
    emu = emulator(fleet_file=fleet, regions=(REGION,))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", [(REGION, str(e["InstanceId"])) for e in entries])
    code, _ = _run(cli, targets, "--max-errors", "0", *flag)
    assert code == exit_code


def test_the_emulator_flags_inject_agent_failures_and_long_output(tmp_path: Path) -> None:
    """`fanout emulator --agent-failure DeliveryTimeout=0.5 --output-bytes 30000` as an operator
    starts it: about half the executions are `unreachable` with DeliveryTimeout, apart from the
    rest, which succeed keeping the last 24 KB of their 30 000-byte output with the bytes
    dropped counted (the flags reach the behaviour, not only a test-built config)."""
    fleet = (
        "--regions", REGION, "--instances-per-region", "20", "--stopped-fraction", "0",
        "--classic-fraction", "0", "--agent-offline-fraction", "0",
    )  # fmt: skip
    targets = tmp_path / "t.txt"
    targets.write_text("\n".join(listed_targets(*fleet)) + "\n")
    flags = ("--agent-failure", "DeliveryTimeout=0.5", "--output-bytes", "30000")
    with emulator_process(*fleet, *flags) as url:
        cli = Fanout(endpoint=url, ledger=str(tmp_path / "l.sqlite3"), home=tmp_path)
        code, run_id = _run(cli, targets)
        doc = json.loads(cli.run("report", run_id, "--format", "json").stdout)
    assert code == 1
    rows = doc["instances"]
    lost = [r for r in rows if r["state"] == "unreachable"]
    done = [r for r in rows if r["state"] == "succeeded"]
    assert len(lost) + len(done) == 20
    assert 3 <= len(lost) <= 17  # seeded shares of 20
    assert {r["error_code"] for r in lost} == {"DeliveryTimeout"}
    assert doc["summary"]["unreachable"] == len(lost)
    for row in done:  # exactly the end of what the instance printed, and the rest counted
        printed = simulated_output(row["instance_id"], 0, 30_000).encode()
        assert row["output"].encode() == printed[-OUTPUT_LIMIT:]
        assert row["dropped"] == len(printed) - OUTPUT_LIMIT

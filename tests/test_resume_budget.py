"""A resume keeps the run's error budget (new-user trial, session 4): the failures of earlier
legs count against `--max-errors` and the wave's own budget, so Ctrl-C and `resume` never let
twice the allowed failures through; a run halted by its budget goes on only with a larger one
(`resume --max-errors`), which later resumes keep."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, fleet_ids, invoked_instances, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]
FLEET: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 1000}


def _invokes(emu: EmulatorThread) -> int:
    return sum(r["calls"].get("InvokeCommand", 0) for r in emu.snapshot()["regions"].values())


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _failed(cli: Fanout, run_id: str) -> int:
    status = json.loads(cli.run("status", run_id, "--json").stdout)
    return int(status["instances"].get("failed", 0))


def test_a_run_over_its_budget_stays_halted_until_the_budget_is_raised(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    emu = emulator(**FLEET, exec_failure_fraction=0.1)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    first = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes", "--json",
        "--waves", "50%,100%", "--max-errors", "10", "--wave-max-failures", "100%",
    )  # fmt: skip
    assert first.returncode == 3, first.stderr
    run_id = _events(first.stdout)[0]["run_id"]
    failed = _failed(cli, run_id)
    assert failed > 10
    calls = _invokes(emu)

    # The same budget: over it already, so halted again at once, nothing sent.
    again = cli.run("resume", run_id, "--yes", "--json")
    assert again.returncode == 3, again.stderr
    halted = [e for e in _events(again.stdout) if e["event"] == "halted"]
    assert halted, again.stdout
    assert halted[0]["failures"] == failed
    assert "resume with a larger --max-errors" in halted[0]["reason"]
    assert _invokes(emu) == calls

    # A larger budget: the run goes on, the earlier failures still counted.
    raised = cli.run("resume", run_id, "--yes", "--json", "--max-errors", "100%")
    assert raised.returncode == 1, raised.stderr
    events = _events(raised.stdout)
    assert not [e for e in events if e["event"] == "halted"]
    assert [e for e in events if e["event"] == "wave"][-1]["failures"] == _failed(cli, run_id)
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 1000
    assert set(counts.values()) == {1}


def test_a_paused_run_counts_its_first_waves_failures_after_resume(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Paused after wave 1 (as an operator's Ctrl-C between waves), then resumed: wave 2 halts
    as soon as the two waves' failures together pass --max-errors."""
    emu = emulator(**FLEET, exec_failure_fraction=0.1)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    first = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes", "--json",
        "--waves", "50%,100%", "--max-errors", "100%", "--pause-after-wave",
    )  # fmt: skip
    assert first.returncode == 5, first.stderr
    run_id = _events(first.stdout)[0]["run_id"]
    wave_1 = _failed(cli, run_id)
    assert wave_1 > 0
    budget = wave_1 + 5  # wave 2 alone (~50 failures of 500) would stay under it
    second = cli.run("resume", run_id, "--yes", "--json", "--max-errors", str(budget))
    assert second.returncode == 3, second.stderr
    halted = [e for e in _events(second.stdout) if e["event"] == "halted"]
    assert halted[0]["failures"] > budget
    assert halted[0]["allowed"] == budget
    # The budget set by this resume is kept: a third leg is halted at once, nothing sent.
    calls = _invokes(emu)
    third = cli.run("resume", run_id, "--yes", "--json")
    assert third.returncode == 3, third.stderr
    assert _invokes(emu) == calls
    counts = invoked_instances(emu.snapshot())
    assert set(counts.values()) == {1}

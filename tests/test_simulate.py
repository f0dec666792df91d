"""`fanout simulate`: a rollout across quota days on one simulated clock, checked from the
emulator's side (the real path: the client over HTTP on 127.0.0.1, a SQLite ledger file)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from fanout.aliyun.command import CommandSpec
from fanout.cli.app import main
from fanout.emulator import DEMO_COMMAND_NAME
from fanout.emulator.fleet import Fleet
from fanout.request import RunRequest
from fanout.settings import Settings
from fanout.simtime import run_simulated
from fanout.simulate import FaultRates, SimulationOptions, rehearse, simulation_fleet
from fanout.sources import CommandNameSource, label
from fanout.targets import Target

REGIONS = ("cn-beijing", "cn-hangzhou", "cn-shanghai", "cn-shenzhen")


def test_rollout_across_quota_days_with_waves_faults_and_kills(tmp_path: Path) -> None:
    """Four regions at 2 calls a day need three quota days; with waves, failing executions,
    unreachable agents, 5xx, lost answers and two kills the invariants hold from the emulator's
    state and the simulated finish is within the plan's ETA tolerance."""
    options = SimulationOptions(
        folder=tmp_path,
        regions=REGIONS,
        instances_per_region=200,
        seed=7,
        exec_seconds=(10.0, 50.0),
        faults=FaultRates(exec_failure=0.02, unreachable=0.01, server_error=0.01, lost_answer=0.01),
        kills=2,
        daily_quota=2,
    )
    fleet = Fleet.from_config(simulation_fleet(options))
    targets = tuple(
        Target(region, inst.instance_id)
        for region in REGIONS
        for inst in fleet.regions[region].instances
    )
    source = CommandNameSource(DEMO_COMMAND_NAME)
    request = RunRequest(
        targets=targets,
        spec=CommandSpec(command_id=label(source)),
        source=source,
        waves="1%,50%,100%",
        max_errors="20%",
        wait=True,
        wait_for_quota=True,
    )
    settings = Settings(daily_quota=2, poll_interval_s=1.0)
    result = run_simulated(
        lambda clock: rehearse(settings, request, options, clock, emit=lambda _k, _d: None)
    )
    assert result.problems == ()
    assert result.kills == 2
    assert result.legs >= 3  # the start, a resume per kill, a resume per quota day
    assert all(len(days) >= 3 for days in result.calls_per_day.values())
    assert all(max(days.values()) <= 2 for days in result.calls_per_day.values())
    assert result.eta.within, result.eta
    assert result.report.exists()


def test_must_show_20000_instances_in_4_regions_across_two_quota_days(tmp_path: Path) -> None:
    """The issue's size: 20 000 instances, 4 regions, 50 calls a region a day (100 batches a
    region: two quota days), waves, failing executions, unreachable agents, 5xx, lost answers
    and three kills; the invariants hold from the emulator's state and the simulated finish is
    within the re-estimated ETA's tolerance. Results are polled every 30 simulated seconds
    (executions run 10-600 s): each sweep costs real CPU, see benchmarks/RESULTS.md."""
    options = SimulationOptions(
        folder=tmp_path,
        regions=REGIONS,
        instances_per_region=5000,
        seed=18,
        exec_seconds=(10.0, 600.0),
        faults=FaultRates(exec_failure=0.02, unreachable=0.01, server_error=0.01, lost_answer=0.01),
        kills=3,
        daily_quota=50,
    )
    fleet = Fleet.from_config(simulation_fleet(options))
    targets = tuple(
        Target(region, inst.instance_id)
        for region in REGIONS
        for inst in fleet.regions[region].instances
    )
    source = CommandNameSource(DEMO_COMMAND_NAME)
    request = RunRequest(
        targets=targets,
        spec=CommandSpec(command_id=label(source), timeout_s=900),
        source=source,
        waves="1%,10%,50%,100%",
        max_errors="10%",
        wait=True,
        wait_for_quota=True,
    )
    settings = Settings(daily_quota=50, poll_interval_s=30.0)
    result = run_simulated(
        lambda clock: rehearse(settings, request, options, clock, emit=lambda _k, _d: None)
    )
    assert result.problems == ()
    assert result.kills == 3
    assert all(45 <= days[1] <= 50 for days in result.calls_per_day.values())  # day 1 spent
    assert all(len(days) >= 2 for days in result.calls_per_day.values())
    assert result.eta.within, result.eta


def test_the_emulator_as_a_child_process_runs_on_the_same_clock(tmp_path: Path) -> None:
    """`--emulator-process`: the emulator in its own process reads the clock the runner
    publishes, so the same rollout crosses the same quota day (one call a region a day, waited
    for) with the same calls per day, and every invariant holds from the child's record; the
    peak memory printed is the runner's alone."""
    argv = ["simulate", "--instances", "120", "--regions", "cn-hangzhou,cn-beijing",
            "--daily-quota", "1", "--wait-for-quota", "--exec-seconds", "5:20", "--json",
            "--log-level", "warning"]  # fmt: skip
    runs = {}
    for mode in ("in-process", "child"):
        extra = ["--emulator-process"] if mode == "child" else []
        out = CliRunner().invoke(main, [*argv, *extra, "--out", str(tmp_path / mode)])
        assert out.exit_code == 0, out.output
        runs[mode] = json.loads(out.stdout)
    child, alone = runs["child"], runs["in-process"]
    assert child["emulator_process"] is True
    assert alone["emulator_process"] is False
    assert child["invariants_ok"] is True
    days = {r: t["calls_per_day"] for r, t in child["regions"].items()}
    assert days == {r: t["calls_per_day"] for r, t in alone["regions"].items()}
    assert all(len(d) == 2 for d in days.values())  # a quota day crossed in each region
    assert child["finish_after_s"] > 86_400 - 10
    assert abs(child["finish_after_s"] - alone["finish_after_s"]) < 60
    assert 0 < child["peak_rss_mb"] < alone["peak_rss_mb"] * 2
    assert not (tmp_path / "child" / ".simulated-clock").exists()  # cleaned up


def test_simulate_refuses_a_real_endpoint(tmp_path: Path) -> None:
    """An option of real runs is refused with one line and exit 2, nothing simulated."""
    out = CliRunner().invoke(
        main, ["simulate", "--instances", "10", "--endpoint", "https://ecs.example.com",
               "--out", str(tmp_path)],
    )  # fmt: skip
    assert out.exit_code == 2
    assert "--endpoint: fanout simulate runs its own emulator" in out.output
    assert not (tmp_path / "ledger.sqlite3").exists()


def test_simulate_command_prints_the_timeline_and_checks_the_invariants(tmp_path: Path) -> None:
    """`fanout simulate` with run's flags: two regions at one call a day cross a quota day with
    --wait-for-quota; it prints each region's quota day and exits 0 with every invariant held."""
    out = CliRunner().invoke(
        main,
        ["simulate", "--instances", "200", "--regions", "cn-hangzhou,cn-beijing",
         "--daily-quota", "1", "--wait-for-quota", "--exec-seconds", "5:20",
         "--out", str(tmp_path / "sim"), "--log-level", "warning"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "quota day 1 used up" in out.stdout
    assert "every invariant held" in out.stdout
    assert (tmp_path / "sim" / "report.html").exists()

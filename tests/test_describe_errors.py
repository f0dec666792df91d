"""Every Describe error classified (issue 14): throttling backs off past a throttled minute and
the run completes; a permission refusal halts the run at once with exit 6 and one line naming
the action and the RAM permission - never a silent retry loop."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.emulator import DEMO_COMMAND_ID, DEMO_COMMAND_NAME, EmulatorThread
from fanout.errors import ExitCode
from tests.conftest import Fanout, fleet_ids, write_targets
from tests.emulator_process import emulator_process, listed_targets, state
from tests.simulation import DEMO, fleet_targets, simulation

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]
REGION = "cn-hangzhou"
DESCRIBES = frozenset(
    {
        "DescribeAccountAttributes",
        "DescribeCommands",
        "DescribeInstances",
        "DescribeCloudAssistantStatus",
        "DescribeInvocations",
        "DescribeInvocationResults",
    }
)


async def test_a_throttled_read_waits_past_the_throttled_minute(tmp_path: Path) -> None:
    """A read throttled at minute T is answered at T+1 (facts 6.2, 10 [9]): the client's
    back-off reaches past the rest of the minute instead of giving up within it."""
    async with simulation(tmp_path, qps=1) as sim:
        clock = sim.clock
        await clock.advance_both(60 - clock.time() % 60 + 1)  # one second into a minute
        options = ClientOptions(endpoint=sim.emulator.url)
        async with EcsClient(DEMO, options, clock=clock) as ecs:
            for _ in range(60):  # the minute's whole budget for this API
                await ecs.describe_instances(REGION)
            minute_ends = clock.time() - clock.time() % 60 + 60
            found = await ecs.describe_instances(REGION)
        assert len(found) == 100
        assert clock.time() >= minute_ends
        assert ecs.reads_throttled_at(REGION) > 0
        refused = sim.emulator.snapshot()["regions"][REGION]["refused"]
        assert refused["DescribeInstances"]["Throttling"] >= 1


async def test_a_rollout_through_throttled_minutes_finishes_every_instance(tmp_path: Path) -> None:
    """With 30 % of the (region, API) minutes of every Describe action throttled from start to
    end, the rollout still completes: every instance final, exit 0 (simulated time)."""
    async with simulation(
        tmp_path,
        instances_per_region=300,
        stopped_fraction=0,
        classic_fraction=0,
        agent_offline_fraction=0,
        exec_seconds=(5.0, 50.0),  # within the command's 60 s timeout
        throttle_rate=0.3,
        fault_actions=DESCRIBES,
        seed=14,  # its first minute throttles both results reads (the draws are seeded)
    ) as sim:
        outcome = await sim.run(fleet_targets(sim.emulator, REGION), wait=True)
        refused = sim.emulator.snapshot()["regions"][REGION]["refused"]
    assert outcome.exit_code is ExitCode.OK, outcome.message
    assert outcome.instances == {"succeeded": 300}
    throttled = sum(codes.get("Throttling", 0) for codes in refused.values())
    assert throttled > 0  # it really was throttled


def test_a_run_without_describe_invocations_permission_exits_6_at_once(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Against `--deny-action DescribeInvocations` a waiting run exits 6 after at most 2
    DescribeInvocations calls (the emulator's count), naming the action and `ecs:` permission;
    the run is left resumable (state fatal)."""
    fields = {"instances_per_region": 20, "stopped_fraction": 0, "agent_offline_fraction": 0}
    emu = emulator(
        **fields,
        classic_fraction=0,
        exec_seconds=(2.0, 4.0),
        denied_actions=frozenset({"DescribeInvocations"}),
    )
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields, classic_fraction=0))
    done = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--yes", timeout=60
    )
    assert done.returncode == 6, done.stderr
    assert "ecs:DescribeInvocations" in done.stderr
    assert "Forbidden.RAM" in done.stderr
    calls = emu.snapshot()["regions"][REGION]["calls"]
    assert calls["DescribeInvocations"] <= 2
    status = cli.run("status", done.stdout.splitlines()[0].strip(), "--json")
    assert '"state": "fatal"' in status.stdout


def test_the_emulator_command_lines_deny_action_halts_a_run(tmp_path: Path) -> None:
    """The must-show as an operator types it: `fanout emulator --deny-action
    DescribeInvocations` started as its own process, `fanout run` against it exits 6 after the
    batches went out and at most 2 DescribeInvocations calls (its state), its last line naming
    the action and ecs:DescribeInvocations; a misspelt action is refused at start (it would deny
    nothing)."""
    fleet = (
        "--regions", REGION, "--instances-per-region", "20", "--stopped-fraction", "0",
        "--classic-fraction", "0", "--agent-offline-fraction", "0", "--exec-seconds", "2:4",
    )  # fmt: skip
    targets = tmp_path / "t.txt"
    targets.write_text("\n".join(listed_targets(*fleet)) + "\n")
    with emulator_process(*fleet, "--deny-action", "DescribeInvocations") as url:
        cli = Fanout(endpoint=url, ledger=str(tmp_path / "l.sqlite3"), home=tmp_path)
        done = cli.run(
            "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes",
            timeout=60,
        )  # fmt: skip
        calls = state(url)["regions"][REGION]["calls"]
    assert done.returncode == 6, done.stderr
    last = done.stderr.splitlines()[-1]  # the run's final line names action and permission
    assert last.startswith("stopped by a fatal API error:"), done.stderr
    assert "DescribeInvocations: Forbidden.RAM" in last
    assert "needs the permission ecs:DescribeInvocations" in last
    assert calls["InvokeCommand"] >= 1
    assert 1 <= calls["DescribeInvocations"] <= 2
    typo = subprocess.run(
        [sys.executable, "-m", "fanout", "emulator", "--port", "0", "--deny-action",
         "DescribeInvocation"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert typo.returncode == 2
    assert typo.stdout == ""
    assert "--deny-action DescribeInvocation: not an action" in typo.stderr


def test_a_preflight_without_permission_names_it_and_sends_nothing(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """A preflight read refused for permission stops before any InvokeCommand, exit 6, with the
    action and `ecs:DescribeCloudAssistantStatus` on one line."""
    emu = emulator(denied_actions=frozenset({"DescribeCloudAssistantStatus"}))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids()[:5])
    done = cli.run("run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--yes")
    assert done.returncode == 6
    lines = [line for line in done.stderr.splitlines() if line.startswith("fanout: error:")]
    assert len(lines) == 1
    assert "ecs:DescribeCloudAssistantStatus" in lines[0]
    assert "InvokeCommand" not in emu.snapshot()["regions"][REGION]["calls"]


def test_a_command_check_without_permission_names_it_and_sends_nothing(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """DescribeCommands refused for RAM permission (even for a CommandId, which could go
    unchecked when the call merely fails): exit 6 before any InvokeCommand, one line naming
    `ecs:DescribeCommands`, no run stored; `--no-preflight` does not skip it."""
    emu = emulator(denied_actions=frozenset({"DescribeCommands"}))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids()[:5])
    done = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--yes",
        "--no-preflight",
    )  # fmt: skip
    assert done.returncode == 6
    lines = [line for line in done.stderr.splitlines() if line.startswith("fanout: error:")]
    assert len(lines) == 1
    assert "DescribeCommands" in lines[0]
    assert "ecs:DescribeCommands" in lines[0]
    assert "InvokeCommand" not in emu.snapshot()["regions"][REGION]["calls"]
    assert cli.run("runs", "--json").stdout.strip() in ("", "[]")


async def test_results_the_api_no_longer_keeps_end_unknown(tmp_path: Path) -> None:
    """Results are kept 4 weeks / 100 000 records (facts 10 [10]): a resume that comes after
    they are gone does not wait forever - the instances end `unknown`, saying why (exit 1)."""
    async with simulation(
        tmp_path,
        instances_per_region=20,
        stopped_fraction=0,
        classic_fraction=0,
        agent_offline_fraction=0,
        result_retention_s=3600,
    ) as sim:
        first = await sim.run(fleet_targets(sim.emulator, REGION), wait=False)
        assert first.exit_code is ExitCode.OK  # accepted, not followed
        await sim.clock.advance_both(2 * 3600)  # past the (shortened) retention
        later = await sim.resume(
            first.run_id, wait=True, settings=sim.settings(poll_interval_s=15.0)
        )
        store = sim.store()
        reasons = {r.reason for r in store.iter_instances(first.run_id)}
        store.close()
    assert later.exit_code is ExitCode.FINISHED_WITH_FAILURES
    assert later.instances == {"unknown": 20}
    assert len(reasons) == 1
    assert "no record of the invocation any more" in str(next(iter(reasons)))


def test_a_region_the_endpoint_does_not_serve_is_named(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Targets in a region the endpoint does not serve: the API's InvalidRegionId.NotFound
    does not say which region, so fanout's one error line names it; exit 6, nothing invoked."""
    emu = emulator(regions=(REGION,), instances_per_region=2)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", [("cn-beijing", "i-2zeaaaaaaaaaaaaaaa01")])
    done = cli.run("run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--yes")
    assert done.returncode == ExitCode.FATAL_API, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("fanout: error:")]
    assert "InvalidRegionId.NotFound" in line
    assert "region cn-beijing" in line
    assert emu.snapshot()["invocations"] == []

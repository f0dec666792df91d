"""Linked runs (issue 15): the rollback of a halted run, by hand and its refusals; wave checks.

Each linked run is a run of its own - its own ledger rows, quota reservations and CommandId -
proven from the emulator's state; the by-hand rollback and the check counted by a resume run
on both ledgers (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, DEMO_PARAM_COMMAND_NAME, EmulatorThread
from tests.conftest import (
    Fanout,
    both_backends,
    control,
    fleet_ids,
    invoked_instances,
    write_targets,
)
from tests.test_schemas import validate

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]
ONE_REGION: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 200, "seed": 5}


def _state(emu: EmulatorThread) -> dict[str, Any]:
    """`/_emulator/state` with each invocation's per-instance executions."""
    with urllib.request.urlopen(f"{emu.url}/_emulator/state?executions=1", timeout=30) as reply:
        state: dict[str, Any] = json.loads(reply.read())
    return state


def _split(emu: EmulatorThread, own_ids: set[str]) -> tuple[list[Any], list[Any]]:
    """The emulator's invocations of the run's own commands, and the others."""
    invocations = _state(emu)["invocations"]
    own = [inv for inv in invocations if inv["command_id"] in own_ids]
    return own, [inv for inv in invocations if inv["command_id"] not in own_ids]


def _halted_run(cli: Fanout, tmp_path: Path, *extra: str) -> tuple[str, set[str]]:
    """A half-failing run halted on its budget (exit 3): its id and its own CommandIds; a
    rollback event only with an --on-halt-... command (off by default). Its last line is kept
    in the test folder (`end.json`)."""
    targets = write_targets(tmp_path / "t", fleet_ids(**ONE_REGION))
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets),
        "--waves", "10%,100%", "--max-errors", "5%", "--yes", "--json", "--rate", "0", *extra,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    run_id = json.loads(done.stdout.splitlines()[0])["run_id"]
    (tmp_path / "end.json").write_text(done.stdout.splitlines()[-1])
    rollbacks = [e for e in map(json.loads, done.stdout.splitlines()) if e["event"] == "rollback"]
    assert len(rollbacks) == (1 if any(x.startswith("--on-halt-") for x in extra) else 0)
    status = json.loads(cli.run("status", run_id, "--json").stdout)
    return run_id, set(status["command_ids"].values())


@both_backends
def test_rollback_by_hand_runs_once_on_the_succeeded_and_spends_quota_as_a_run(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Without --on-halt-... a halt rolls nothing back; `fanout rollback RUN --script` then
    invokes exactly the run's succeeded instances (emulator), each once, with its reserved calls
    in the quota ledger (`fanout quota` used = the emulator's count); a second rollback finds
    nothing left to roll back and sends nothing."""
    emu = emulator(**ONE_REGION, exec_failure_fraction=0.5, exec_seconds=(0.0, 0.1))
    cli = fanout_cli(emu)
    run_id, own_ids = _halted_run(cli, tmp_path)
    own, others = _split(emu, own_ids)
    assert others == []
    succeeded = {
        e["instance_id"] for inv in own for e in inv["executions"] if e["status"] == "Success"
    }
    invoked = {i for inv in own for i in inv["instance_ids"]}
    assert 0 < len(succeeded) < len(invoked) < 200
    undo = tmp_path / "undo.sh"
    undo.write_text("echo undo\n")
    done = cli.run("rollback", run_id, "--script", str(undo), "--yes", "--json", "--rate", "0")
    assert done.returncode in (0, 1), done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    rollback_id = events[0]["run_id"]
    _, rollback = _split(emu, own_ids)
    rolled = [i for inv in rollback for i in inv["instance_ids"]]
    assert sorted(rolled) == sorted(succeeded)
    state = _state(emu)
    quota = json.loads(cli.run("quota", "--json", "--offline").stdout)
    region = state["regions"]["cn-hangzhou"]
    assert (
        quota["regions"]["cn-hangzhou"]["used"] == region["quota_used"] == len(own) + len(rollback)
    )
    status = json.loads(cli.run("status", rollback_id, "--json").stdout)
    assert status["parent_run_id"] == run_id
    runs = {r["run_id"]: r for r in json.loads(cli.run("runs", "--json").stdout)}
    assert (runs[rollback_id]["kind"], runs[run_id]["kind"]) == ("rollback", "run")
    assert f"(rollback of {run_id})" in cli.run("runs").stdout
    table = cli.run("report", run_id).stdout
    assert f"rollback: run {rollback_id} (" in table
    html = cli.run("report", run_id, "--format", "html").stdout
    assert "Rollbacks and wave checks" in html
    assert rollback_id in html
    assert status["target_count"] == len(succeeded)
    calls = region["calls"]
    again = cli.run("rollback", run_id, "--script", str(undo), "--yes", "--json")
    assert again.returncode == 0, again.stderr
    (line,) = again.stdout.splitlines()  # an event stream: one JSON line, its end
    doc = json.loads(line)
    assert (doc["event"], doc["run_id"], doc["parent_run_id"], doc["targets"]) == (
        "end",
        None,
        run_id,
        0,
    )
    assert _state(emu)["regions"]["cn-hangzhou"]["calls"] == calls


def test_rollback_all_invoked_takes_every_invoked_instance_and_never_the_rest(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`--on-halt-scope all-invoked`: the rollback goes to every instance the run invoked -
    succeeded and failed - and to none it never invoked or excluded (emulator state)."""
    fleet = {**ONE_REGION, "stopped_fraction": 0.05}
    emu = emulator(**fleet, exec_failure_fraction=0.5, exec_seconds=(0.0, 0.1))
    cli = fanout_cli(emu)
    undo = tmp_path / "undo.sh"
    undo.write_text("echo undo\n")
    run_id, own_ids = _halted_run(
        cli, tmp_path, "--on-halt-script", str(undo), "--on-halt-scope", "all-invoked"
    )
    own, rollback = _split(emu, own_ids)
    invoked = sorted(i for inv in own for i in inv["instance_ids"])
    assert sorted(i for inv in rollback for i in inv["instance_ids"]) == invoked
    report = json.loads(cli.run("report", run_id, "--format", "json").stdout)
    excluded = {r["instance_id"] for r in report["instances"] if r["state"] == "excluded"}
    assert excluded
    assert not excluded & set(invoked)
    (section,) = report["linked_runs"]
    assert section["target_count"] == len(invoked)


def test_bad_linked_commands_are_refused_before_any_call(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Two sources for one linked command, a scope without a command, a check without waves,
    a rollback command that does not exist in the region, and `fanout rollback` without a
    command: each one line, exit 2, no InvokeCommand."""
    emu = emulator(**ONE_REGION)
    cli = fanout_cli(emu)
    targets = str(write_targets(tmp_path / "t", fleet_ids(**ONE_REGION)))
    base = ("run", "--command-name", DEMO_COMMAND_NAME, "--targets", targets, "--yes")
    cases = [
        (
            ("--on-halt-command-name", "a", "--on-halt-command-id", "c-x"),
            "not --on-halt-command-id",
        ),
        (("--on-halt-scope", "all-invoked"), "--on-halt-scope: only with"),
        (("--wave-check-command-name", DEMO_COMMAND_NAME), "only with --waves"),
        (
            ("--waves", "10%,100%", "--no-wait", "--wave-check-command-name", DEMO_COMMAND_NAME),
            "not with --no-wait",
        ),
        (("--on-halt-command-name", "no-such-command"), "no-such-command"),
        (("--on-halt-script", str(tmp_path / "missing.sh")), "cannot read"),
    ]
    for extra, said in cases:
        done = cli.run(*base, *extra)
        assert done.returncode == 2, (extra, done.stderr)
        assert said in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = cli.run("rollback", "r-nothing", "--yes")
    assert done.returncode == 2, done.stderr
    assert "give the rollback's command" in done.stderr
    assert invoked_instances(emu.snapshot()) == {}
    assert "InvokeCommand" not in emu.snapshot()["regions"]["cn-hangzhou"]["calls"]


TWO_REGIONS: dict[str, Any] = {
    "regions": ("cn-beijing", "cn-hangzhou"),
    "instances_per_region": 100,
}


def _lines_until(proc: Any, kind: str) -> list[dict[str, Any]]:
    """The JSON events of a running `fanout ... --json` up to the first of `kind`."""
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == kind:
            return seen
    msg = f"no {kind} event before the end: {seen[-1:]}"
    raise AssertionError(msg)


def test_a_wave_check_catches_hosts_broken_during_the_bake(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`--wave-wait 3s --wave-check-script check.sh`: three instances of the first wave stop
    while it bakes; the check - a linked run with its own CommandId - goes to the wave's other
    succeeded instances only (emulator), the three count against the wave's budget, and the run
    halts (exit 3) before the second wave, the halt naming the check."""
    emu = emulator(**TWO_REGIONS, exec_seconds=(0.0, 0.1))
    cli = fanout_cli(emu)
    check = tmp_path / "check.sh"
    check.write_text("systemctl is-active app\n")
    targets = write_targets(tmp_path / "t", fleet_ids(**TWO_REGIONS))
    proc = cli.start(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--waves", "10%,100%",
        "--max-errors", "5%", "--wave-wait", "3s", "--wave-check-script", str(check),
        "--yes", "--json", "--rate", "0",
    )  # fmt: skip
    before = _lines_until(proc, "wave_wait")
    wave_one = sorted(i for inv in emu.snapshot()["invocations"] for i in inv["instance_ids"])
    assert len(wave_one) == 20
    broken = wave_one[:3]
    control(emu, "instances", {"instance_ids": broken, "status": "Stopped"})
    assert proc.stdout is not None
    after = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=120) == 3
    events = before + after
    run_id = events[0]["run_id"]
    own_ids = set(json.loads(cli.run("status", run_id, "--json").stdout)["command_ids"].values())
    own, checks = _split(emu, own_ids)
    assert sorted(i for inv in own for i in inv["instance_ids"]) == wave_one  # no second wave
    assert sorted(i for inv in checks for i in inv["instance_ids"]) == sorted(
        set(wave_one) - set(broken)
    )
    for event in events:
        if event["event"] in ("wave_check", "wave_check_start", "end"):
            validate(event, f"event-{event['event']}")
    (checked,) = [e for e in events if e["event"] == "wave_check"]
    assert checked["wave"] == 1
    assert checked["failures"] == 3
    assert checked["instances"] == 20
    assert (
        "wave 1 had 3 failed of 20 instances (3 of them by its wave check)" in events[-1]["message"]
    )
    report = json.loads(cli.run("report", run_id, "--format", "json").stdout)
    validate(report, "report")
    (section,) = report["linked_runs"]
    assert section["kind"] == "wave_check"
    assert section["wave"] == 1
    assert section["run_id"] == checked["check_run_id"]
    assert section["summary"] == {"succeeded": 17, "excluded": 3}


def test_a_passing_wave_check_lets_the_next_wave_go_after_it(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """A healthy fleet with `--wave-check-command-name`: one check, after the first wave only
    (not after the last), on exactly the first wave's instances, all its invocations created
    before the second wave's; the run exits 0 and the quota ledger counts the check's calls
    (`fanout quota` used = the emulator's count)."""
    emu = emulator(**TWO_REGIONS, exec_seconds=(0.0, 0.1))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t", fleet_ids(**TWO_REGIONS))
    done = cli.run(
        "run", "--script", str(_script(tmp_path)), "--targets", str(targets), "--waves", "10%,100%",
        "--wave-check-command-name", DEMO_COMMAND_NAME, "--yes", "--json", "--rate", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    run_id = events[0]["run_id"]
    own_ids = set(json.loads(cli.run("status", run_id, "--json").stdout)["command_ids"].values())
    own, checks = _split(emu, own_ids)
    first = sorted(own, key=lambda inv: inv["created"])
    wave_one = sorted(i for inv in first if inv["created"] < min(c["created"] for c in checks)
                      for i in inv["instance_ids"])  # fmt: skip
    assert len(wave_one) == 20
    assert sorted(i for inv in checks for i in inv["instance_ids"]) == wave_one
    later = [inv for inv in own if not set(inv["instance_ids"]) <= set(wave_one)]
    assert min(inv["created"] for inv in later) > max(c["created"] for c in checks)
    assert sum(len(inv["instance_ids"]) for inv in own) == 200
    assert [e["wave"] for e in events if e["event"] == "wave_check"] == [1]
    quota = json.loads(cli.run("quota", "--json", "--offline").stdout)["regions"]
    state = emu.snapshot()["regions"]
    for region in TWO_REGIONS["regions"]:
        assert quota[region]["used"] == state[region]["quota_used"]
    assert sum(state[r]["quota_used"] for r in state) == len(own) + len(checks)


def _script(tmp_path: Path) -> Path:
    """A deploy script (`--script`: fanout creates it as a command in each region)."""
    path = tmp_path / "deploy.sh"
    path.write_text("echo deployed\n")
    return path


def test_a_resume_during_the_bake_runs_the_wave_check_once_then_the_next_wave(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Ctrl-C (SIGINT) while the first wave bakes: the run exits 5 before its check; `resume`
    owes the rest of the bake, then runs the check once on the first wave's instances, then the
    second wave: every instance invoked once by the run, the first wave once by the check."""
    emu = emulator(**TWO_REGIONS, exec_seconds=(0.0, 0.1))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t", fleet_ids(**TWO_REGIONS))
    proc = cli.start(
        "run", "--script", str(_script(tmp_path)), "--targets", str(targets), "--waves", "10%,100%",
        "--wave-wait", "2s", "--wave-check-command-name", DEMO_COMMAND_NAME,
        "--yes", "--json", "--rate", "0",
    )  # fmt: skip
    before = _lines_until(proc, "wave_wait")
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    after = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=60) == 5
    assert not [e for e in before + after if e["event"].startswith("wave_check")]
    run_id = before[0]["run_id"]
    wave_one = sorted(i for inv in emu.snapshot()["invocations"] for i in inv["instance_ids"])
    assert len(wave_one) == 20
    resumed = cli.run("resume", run_id, "--yes", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert [e["wave"] for e in events if e["event"] == "wave_check"] == [1]
    own_ids = set(json.loads(cli.run("status", run_id, "--json").stdout)["command_ids"].values())
    own, checks = _split(emu, own_ids)
    assert sorted(i for inv in checks for i in inv["instance_ids"]) == wave_one
    assert invoked_instances({"invocations": own}) == dict.fromkeys(
        (i for _r, i in fleet_ids(**TWO_REGIONS)), 1
    )
    report = json.loads(cli.run("report", run_id, "--format", "json").stdout)
    assert [s["kind"] for s in report["linked_runs"]] == ["wave_check"]
    assert report["summary"]["succeeded"] == 200


def test_the_rollout_table_takes_the_linked_commands(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`[rollout]` keys set the wave check and the rollback as the flags do: checked before any
    call (a scope without a command, a command that does not exist: exit 2 naming it)."""
    emu = emulator(**ONE_REGION)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t", fleet_ids(**ONE_REGION))
    config = tmp_path / "rollout.toml"
    for body, said in (
        ('on_halt_scope = "all-invoked"\n', "--on-halt-scope: only with"),
        ('on_halt_command_name = "no-such-rollback"\n', "no-such-rollback"),
        ('waves = "10%,100%"\nwave_check_command_ids = { cn-hangzhou = "c-nope" }\n', "c-nope"),
    ):
        config.write_text(
            f'[rollout]\ncommand_name = "{DEMO_COMMAND_NAME}"\ntargets = "{targets}"\n{body}'
        )
        done = cli.run("run", "--config", str(config), "--yes")
        assert done.returncode == 2, (body, done.stderr)
        assert said in done.stderr, (body, done.stderr)
    assert "InvokeCommand" not in emu.snapshot()["regions"]["cn-hangzhou"]["calls"]


@both_backends
def test_a_check_interrupted_by_ctrl_c_is_counted_by_the_resume_not_run_again(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Hosts break during the bake and Ctrl-C comes while the check runs: the run exits 5 (the
    check's findings not counted yet); `resume` counts that check once - no check invocation
    again - and halts (exit 3) on the wave's budget, before the second wave."""
    emu = emulator(**TWO_REGIONS, exec_seconds=(0.5, 1.0))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t", fleet_ids(**TWO_REGIONS))
    proc = cli.start(
        "run", "--script", str(_script(tmp_path)), "--targets", str(targets), "--waves", "10%,100%",
        "--max-errors", "5%", "--wave-wait", "1s", "--wave-check-command-name", DEMO_COMMAND_NAME,
        "--yes", "--json", "--rate", "0",
    )  # fmt: skip
    before = _lines_until(proc, "wave_wait")
    wave_one = sorted(i for inv in emu.snapshot()["invocations"] for i in inv["instance_ids"])
    control(emu, "instances", {"instance_ids": wave_one[:3], "status": "Stopped"})
    before += _lines_until(proc, "wave_check_start")
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    after = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=60) == 5, after[-1:]
    assert not [e for e in before + after if e["event"] == "wave_check"]
    run_id = before[0]["run_id"]
    own_ids = set(json.loads(cli.run("status", run_id, "--json").stdout)["command_ids"].values())
    _own, checks = _split(emu, own_ids)
    checked = sorted(i for inv in checks for i in inv["instance_ids"])
    assert checked == sorted(set(wave_one) - set(wave_one[:3]))
    resumed = cli.run("resume", run_id, "--yes", "--json")
    assert resumed.returncode == 3, resumed.stderr[-2000:]
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    (counted,) = [e for e in events if e["event"] == "wave_check"]
    assert (counted["wave"], counted["failures"], counted["instances"]) == (1, 3, 20)
    assert "by its wave check" in events[-1]["message"]
    own, checks = _split(emu, own_ids)
    assert sorted(i for inv in checks for i in inv["instance_ids"]) == checked  # not run again
    assert sorted(i for inv in own for i in inv["instance_ids"]) == wave_one  # no second wave


def test_a_rollback_out_of_quota_says_so_and_resumes_as_any_run(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """The region's daily quota is spent by the halted run: its rollback stops (exit 4) with
    nothing sent, the run still exits 3 and its last line says how to go on; once quota frees,
    `fanout resume` of the rollback finishes it on exactly the succeeded instances."""
    emu = emulator(**ONE_REGION, exec_failure_fraction=0.5, exec_seconds=(0.0, 0.1), daily_quota=1)
    cli = fanout_cli(emu)
    undo = tmp_path / "undo.sh"
    undo.write_text("echo undo\n")
    run_id, own_ids = _halted_run(cli, tmp_path, "--on-halt-script", str(undo))
    own, rollback = _split(emu, own_ids)
    assert len(own) == 1  # the first wave: one call, the whole quota
    assert rollback == []
    report = json.loads(cli.run("report", run_id, "--format", "json").stdout)
    (section,) = report["linked_runs"]
    assert section["exit_code"] == 4
    end = json.loads((tmp_path / "end.json").read_text())
    assert end["exit_code"] == 3
    assert end["rollback"]["exit_code"] == 4
    said = f"the rollback did not finish (exit 4): `fanout resume {section['run_id']}`"
    assert said in end["message"]
    control(emu, "quota/reset", {})
    resumed = cli.run("resume", section["run_id"], "--yes", "--daily-quota", "10", "--json")
    assert resumed.returncode in (0, 1), resumed.stderr[-2000:]
    _, rollback = _split(emu, own_ids)
    succeeded = {
        e["instance_id"] for inv in own for e in inv["executions"] if e["status"] == "Success"
    }
    assert sorted(i for inv in rollback for i in inv["instance_ids"]) == sorted(succeeded)


def test_a_check_that_cannot_finish_holds_the_next_wave_until_resume(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """The first wave spends the region's whole daily quota (`--daily-quota 1`): its check
    cannot send (exit 4), so the run holds (exit 5, naming the check) and no second wave goes
    out unchecked; with more quota, `resume` resumes that check run, counts it, and sends the
    second wave."""
    emu = emulator(**ONE_REGION, exec_seconds=(0.0, 0.1))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t", fleet_ids(**ONE_REGION))
    done = cli.run(
        "run", "--script", str(_script(tmp_path)), "--targets", str(targets), "--waves", "10%,100%",
        "--wave-check-command-name", DEMO_COMMAND_NAME, "--yes", "--json", "--rate", "0",
        "--daily-quota", "1",
    )  # fmt: skip
    assert done.returncode == 5, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    run_id = events[0]["run_id"]
    assert "the check of wave 1 (run r" in events[-1]["message"]
    assert "did not finish (exit 4); a resume goes on with it" in events[-1]["message"]
    own_ids = set(json.loads(cli.run("status", run_id, "--json").stdout)["command_ids"].values())
    own, checks = _split(emu, own_ids)
    wave_one = sorted(i for inv in own for i in inv["instance_ids"])
    assert (len(wave_one), checks) == (20, [])
    resumed = cli.run("resume", run_id, "--yes", "--json", "--daily-quota", "10")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    own, checks = _split(emu, own_ids)
    assert sorted(i for inv in checks for i in inv["instance_ids"]) == wave_one
    assert len({i for inv in own for i in inv["instance_ids"]}) == 200
    report = json.loads(cli.run("report", run_id, "--format", "json").stdout)
    assert [(s["kind"], s["state"]) for s in report["linked_runs"]] == [("wave_check", "finished")]


def test_a_run_halted_again_after_resume_rolls_back_only_its_new_successes(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Halted with a rollback, resumed, halted again: the second rollback takes only the
    instances that succeeded since - every succeeded instance is rolled back exactly once
    (emulator state), by two linked runs."""
    emu = emulator(**ONE_REGION, exec_failure_fraction=0.5, exec_seconds=(0.0, 0.1))
    cli = fanout_cli(emu)
    undo = tmp_path / "undo.sh"
    undo.write_text("echo undo\n")
    targets = write_targets(tmp_path / "t", fleet_ids(**ONE_REGION))
    first = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--waves",
        "10%,20%,100%", "--max-errors", "5%", "--on-halt-script", str(undo), "--yes", "--json",
        "--rate", "0",
    )  # fmt: skip
    assert first.returncode == 3, first.stderr[-2000:]
    run_id = json.loads(first.stdout.splitlines()[0])["run_id"]
    again = cli.run("resume", run_id, "--yes", "--json", "--rate", "0")
    assert again.returncode == 3, again.stderr[-2000:]
    end = json.loads(again.stdout.splitlines()[-1])
    assert end["rollback"]["rollback_run_id"]
    own_ids = set(json.loads(cli.run("status", run_id, "--json").stdout)["command_ids"].values())
    own, rollback = _split(emu, own_ids)
    succeeded = {
        e["instance_id"] for inv in own for e in inv["executions"] if e["status"] == "Success"
    }
    rolled = [i for inv in rollback for i in inv["instance_ids"]]
    assert sorted(rolled) == sorted(succeeded)  # each once, across both rollbacks
    report = json.loads(cli.run("report", run_id, "--format", "json").stdout)
    assert [s["kind"] for s in report["linked_runs"]] == ["rollback", "rollback"]


def test_rollback_by_hand_takes_parameters_checked_against_its_command(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`fanout rollback --command-name` of a command with parameters: without them it is
    refused before any call (exit 2, the spec rule named); with them it runs on the succeeded
    instances."""
    emu = emulator(**ONE_REGION, exec_failure_fraction=0.5, exec_seconds=(0.0, 0.1))
    cli = fanout_cli(emu)
    run_id, own_ids = _halted_run(cli, tmp_path)
    calls = emu.snapshot()["regions"]["cn-hangzhou"]["calls"].get("InvokeCommand")
    bare = cli.run("rollback", run_id, "--command-name", DEMO_PARAM_COMMAND_NAME, "--yes")
    assert bare.returncode == 2, bare.stderr
    assert "S11" in bare.stderr
    assert emu.snapshot()["regions"]["cn-hangzhou"]["calls"].get("InvokeCommand") == calls
    done = cli.run(
        "rollback", run_id, "--command-name", DEMO_PARAM_COMMAND_NAME, "--param", "name=app",
        "--param", "version=1.0.0", "--yes", "--json",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-2000:]
    own, rollback = _split(emu, own_ids)
    succeeded = {
        e["instance_id"] for inv in own for e in inv["executions"] if e["status"] == "Success"
    }
    assert sorted(i for inv in rollback for i in inv["instance_ids"]) == sorted(succeeded)

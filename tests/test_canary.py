"""Canaries that catch a bad command (issue 15): each wave judged on its own failures, and
waves that take instances from every region. Proven from the emulator's state."""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from fanout.plan import make_plan, parse_waves
from fanout.targets import Target
from tests.conftest import Fanout, fleet_ids, invoked_instances, write_targets
from tests.test_schemas import validate

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]
FLEET: dict[str, Any] = {
    "regions": ("cn-beijing", "cn-hangzhou", "cn-shanghai"),
    "instances_per_region": 325,
}


def _wave_of(ids: list[tuple[str, str]], waves: str) -> dict[str, int]:
    """Each instance's wave, as fanout plans it (deterministic: the same plan the run made)."""
    targets = [Target(r, i) for r, i in ids]
    plan = make_plan("r", targets, waves=parse_waves(waves, len(targets)))
    return {i: b.wave for b in plan.batches for i in b.instance_ids}


def test_the_run_halts_after_the_first_wave_over_its_failure_share(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Half the executions fail; `--waves 1,1%,10%,100% --max-errors 5%` halts (exit 3) after
    the first wave whose own failures exceed 5 % of it: exactly the instances of the waves up to
    it were invoked, and the halt message names that wave."""
    emu = emulator(**FLEET, exec_failure_fraction=0.5, exec_seconds=(0.0, 0.2))
    cli = fanout_cli(emu)
    ids = fleet_ids(**FLEET)
    waves = "1,1%,10%,100%"
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(write_targets(tmp_path / "t", ids)),
        "--waves", waves, "--max-errors", "5%", "--yes", "--json", "--rate", "0",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    wave_of = _wave_of(ids, waves)
    sizes = Counter(wave_of.values())
    rows = json.loads(cli.run("report", json.loads(done.stdout.splitlines()[0])["run_id"],
                              "--format", "json").stdout)["instances"]  # fmt: skip
    failed = Counter(wave_of[r["instance_id"]] for r in rows if r["state"] == "failed")
    first_bad = next(w for w in sorted(sizes) if failed[w] > int(0.05 * sizes[w]))
    expected = sum(sizes[w] for w in sorted(sizes) if w <= first_bad)
    invoked = invoked_instances(emu.snapshot())
    assert len(invoked) == expected
    assert set(invoked.values()) == {1}
    assert {wave_of[i] for i in invoked} == set(range(first_bad + 1))
    events = [json.loads(line) for line in done.stdout.splitlines()]
    message = f"wave {first_bad + 1} had {failed[first_bad]} failed of {sizes[first_bad]}"
    assert message in events[-1]["message"]
    halted = [e for e in events if e["event"] == "halted"]
    assert halted
    assert halted[0]["wave"] == first_bad + 1


def test_a_one_percent_canary_reaches_every_region(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`--waves 1%,100%` on a 3-region fleet listed region by region: the first wave's
    invocations (the first ones the emulator accepted) cover all three regions."""
    emu = emulator(**FLEET)
    cli = fanout_cli(emu)
    ids = fleet_ids(**FLEET)
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(write_targets(tmp_path / "t", ids)),
        "--waves", "1%,100%", "--yes", "--no-wait", "--rate", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    wave_of = _wave_of(ids, "1%,100%")
    first = [i for i, w in wave_of.items() if w == 0]
    assert len(first) == 10  # 1 % of 975, rounded up
    invocations = sorted(emu.snapshot()["invocations"], key=lambda inv: inv["created"])
    canary = list(
        itertools.takewhile(lambda inv: set(inv["instance_ids"]) <= set(first), invocations)
    )
    assert sorted(i for inv in canary for i in inv["instance_ids"]) == sorted(first)
    assert {inv["region"] for inv in canary} == set(FLEET["regions"])


def test_not_after_stops_a_paced_run_at_the_window_boundary(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`--not-after +3s` on a run paced at 2 calls/s: no InvokeCommand is accepted after the
    boundary (emulator created stamps), the run exits 5 naming the window, and resume goes on."""
    fleet: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 400}
    emu = emulator(**fleet)
    cli = fanout_cli(emu)
    ids = fleet_ids(**fleet)
    started = time.time()
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(write_targets(tmp_path / "t", ids)),
        "--batch-size", "10", "--rate", "2", "--not-after", "+3s", "--yes", "--no-wait", "--json",
    )  # fmt: skip
    assert done.returncode == 5, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    closed = events[-1]["message"].split("the change window closed at ")[1].split(" ")[0]
    # The message gives the boundary to the second (truncated): it lies within the next second.
    window_end = datetime.fromisoformat(closed).timestamp() + 1.0
    assert started + 3 <= window_end
    stamps = [
        datetime.fromisoformat(inv["created"].replace("Z", "+00:00")).timestamp()
        for inv in emu.snapshot()["invocations"]
    ]
    assert 0 < len(stamps) < 40
    assert max(stamps) <= window_end
    resumed = cli.run("resume", events[0]["run_id"], "--yes", "--no-wait", "--rate", "0")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(invoked_instances(emu.snapshot())) == 400


def test_a_second_run_on_open_instances_of_a_run_in_progress_is_refused(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """A run left waiting for quota still owns its open instances: a second `fanout run` on
    them exits 2 naming that run with zero calls; --allow-overlap lets it go."""
    fleet: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 200}
    emu = emulator(**fleet)
    cli = fanout_cli(emu)
    targets = str(write_targets(tmp_path / "t", fleet_ids(**fleet)))
    common = ("--command-name", DEMO_COMMAND_NAME, "--targets", targets, "--yes", "--no-wait")
    first = cli.run("run", *common, "--daily-quota", "1", "--json")
    assert first.returncode == 4, first.stderr[-2000:]
    first_id = json.loads(first.stdout.splitlines()[0])["run_id"]
    calls = emu.snapshot()["regions"]["cn-hangzhou"]["calls"]
    second = cli.run("run", *common)
    assert second.returncode == 2, second.stderr
    assert first_id in second.stderr
    assert "--allow-overlap" in second.stderr
    assert emu.snapshot()["regions"]["cn-hangzhou"]["calls"] == calls  # not even a Describe
    allowed = cli.run("run", *common, "--allow-overlap", "--daily-quota", "5000")
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_wave_wait_holds_the_next_wave_after_the_last_result(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`--wave-wait 4s`: the second wave's first invocation is created at least 4 s after the
    first wave's last result (the emulator's exact finish times); a bake time shorter than the
    issue's 30 s keeps the test quick, the mechanism is the same."""
    fleet: dict[str, Any] = {"regions": ("cn-hangzhou", "cn-beijing"), "instances_per_region": 100}
    emu = emulator(**fleet, exec_seconds=(0.1, 0.5))
    cli = fanout_cli(emu)
    ids = fleet_ids(**fleet)
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(write_targets(tmp_path / "t", ids)),
        "--waves", "10%,100%", "--wave-wait", "4s", "--yes", "--json", "--rate", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    wave_of = _wave_of(ids, "10%,100%")
    with urllib.request.urlopen(f"{emu.url}/_emulator/state?executions=1", timeout=30) as reply:
        state = json.loads(reply.read())
    first_done = max(
        e["finish_s"]
        for inv in state["invocations"]
        if wave_of[inv["instance_ids"][0]] == 0
        for e in inv["executions"]
    )
    second_start = min(
        datetime.fromisoformat(inv["created"].replace("Z", "+00:00")).timestamp()
        for inv in state["invocations"]
        if wave_of[inv["instance_ids"][0]] == 1
    )
    assert second_start >= first_done + 4.0
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["wave"] for e in events if e["event"] == "wave_wait"] == [1]
    for event in events:  # wave_wait's `until` is ISO-8601 like every time out (its schema)
        validate(event, f"event-{event['event']}")


def _state_with_executions(emu: EmulatorThread) -> dict[str, Any]:
    """`/_emulator/state` with each invocation's per-instance executions."""
    with urllib.request.urlopen(f"{emu.url}/_emulator/state?executions=1", timeout=30) as reply:
        state: dict[str, Any] = json.loads(reply.read())
    return state


def test_a_halt_rolls_back_exactly_the_instances_that_succeeded(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """The half-failing scenario with `--on-halt-script undo.sh`: the run halts (exit 3) after
    the first wave over its share, exactly the instances of the waves up to it were invoked
    (wave sizes), and the rollback - a linked run of its own with its own CommandId - went to
    exactly the instances whose execution succeeded (emulator state), once each; the report
    shows it as a section and does not roll it up into the run's rows."""
    # Seed 5: the 1-instance canary succeeds (seed 0's fails, and there is nothing to roll back).
    fleet = {**FLEET, "seed": 5}
    emu = emulator(**fleet, exec_failure_fraction=0.5, exec_seconds=(0.0, 0.2))
    cli = fanout_cli(emu)
    ids = fleet_ids(**fleet)
    undo = tmp_path / "undo.sh"
    undo.write_text("#!/bin/sh\necho rolled back\n")
    waves = "1,1%,10%,100%"
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(write_targets(tmp_path / "t", ids)),
        "--waves", waves, "--max-errors", "5%", "--on-halt-script", str(undo),
        "--yes", "--json", "--rate", "0",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    run_id = events[0]["run_id"]
    status = json.loads(cli.run("status", run_id, "--json").stdout)
    own_ids = set(status["command_ids"].values())
    state = _state_with_executions(emu)
    own = [inv for inv in state["invocations"] if inv["command_id"] in own_ids]
    rollback = [inv for inv in state["invocations"] if inv["command_id"] not in own_ids]
    wave_of = _wave_of(ids, waves)
    sizes = Counter(wave_of.values())
    failed = Counter(
        wave_of[e["instance_id"]]
        for inv in own
        for e in inv["executions"]
        if e["status"] == "Failed"
    )
    first_bad = next(w for w in sorted(sizes) if failed[w] > int(0.05 * sizes[w]))
    invoked = [i for inv in own for i in inv["instance_ids"]]
    assert len(invoked) == len(set(invoked)) == sum(sizes[w] for w in range(first_bad + 1))
    succeeded = {
        e["instance_id"] for inv in own for e in inv["executions"] if e["status"] == "Success"
    }
    rolled = [i for inv in rollback for i in inv["instance_ids"]]
    assert sorted(rolled) == sorted(succeeded)  # exactly those, each once
    assert 0 < len(succeeded) < len(invoked), events[-1]["message"]
    assert len({inv["command_id"] for inv in rollback}) == len(FLEET["regions"])  # one per region
    end = events[-1]
    assert end["event"] == "end"
    assert end["exit_code"] == 3
    assert end["rollback"]["targets"] == len(succeeded)
    assert f"rolled back by run {end['rollback']['rollback_run_id']}" in end["message"]
    assert [e["event"] for e in events].count("rollback") == 1
    for event in events:
        if event["event"] in ("rollback", "end"):
            validate(event, f"event-{event['event']}")
    doc = json.loads(cli.run("report", run_id, "--format", "json").stdout)
    validate(doc, "report")
    assert doc["summary"]["succeeded"] == len(succeeded)  # the run's own rows, not the rollback's
    (section,) = doc["linked_runs"]
    assert section["kind"] == "rollback"
    assert section["run_id"] == end["rollback"]["rollback_run_id"]
    assert sum(section["summary"].values()) == len(succeeded)
    rollback_status = json.loads(cli.run("status", section["run_id"], "--json").stdout)
    assert rollback_status["parent_run_id"] == run_id
    assert rollback_status["target_count"] == len(succeeded)


def test_plan_shows_each_waves_instances_per_region_as_the_run_sends_them(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`fanout plan --waves 1%,10%,100%` on a 3-region fleet lists each wave's instances and
    calls per region (every region in the 1 % canary) and sends nothing; the run then sends its
    first wave with exactly those per-region counts (emulator state)."""
    emu = emulator(**FLEET)
    cli = fanout_cli(emu)
    ids = fleet_ids(**FLEET)
    common = ("--command-name", DEMO_COMMAND_NAME, "--targets", str(write_targets(tmp_path / "t", ids)),
              "--waves", "1%,10%,100%")  # fmt: skip
    plan = cli.run("plan", *common, "--json")
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert [w["instances"] for w in doc["waves"]] == [10, 88, 877]
    assert sum(w["calls"] for w in doc["waves"]) == doc["calls_needed"]
    canary = doc["waves"][0]["regions"]
    assert sorted(canary) == sorted(FLEET["regions"])
    wave_of = _wave_of(ids, "1%,10%,100%")
    region_of = {i: r for r, i in ids}
    for wave in doc["waves"]:
        expected = Counter(region_of[i] for i, w in wave_of.items() if w == wave["wave"] - 1)
        assert {r: c["instances"] for r, c in wave["regions"].items()} == dict(expected)
    assert emu.snapshot()["invocations"] == []
    text = cli.run("plan", *common)
    assert "waves (instances per region):" in text.stdout
    line = next(x for x in text.stdout.splitlines() if x.strip().startswith("wave 1:"))
    assert line.strip().startswith("wave 1: 10 instances, 3 calls (cn-beijing ")
    done = cli.run("run", *common, "--pause-after-wave", "--yes", "--no-wait", "--rate", "0")
    assert done.returncode == 5, done.stderr[-2000:]
    sent = Counter(
        inv["region"] for inv in emu.snapshot()["invocations"] for _ in inv["instance_ids"]
    )
    assert dict(sent) == {r: c["instances"] for r, c in canary.items()}

"""Issue 13 end to end: the four command sources over three regions, CreateCommand once per
region (a second run, a resume after kill -9 between CreateCommand and its ledger record, and a
concurrent second process create nothing more), public commands, the 18 KB content rule, every
InvokeCommand parameter, and `fanout commands [--prune]`.

Every test runs the real `fanout` CLI as a subprocess against the emulator over HTTP on
127.0.0.1 with a real SQLite ledger, and proves what was (not) sent from the emulator's state.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.credentials import Credentials
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_NAME,
    EmulatorThread,
    demo_command_id,
)
from fanout.sources import ScriptSource
from tests.conftest import Fanout, close, control, fleet_ids, ledger_sql, wait_for, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]

REGIONS = ("cn-beijing", "cn-hangzhou", "cn-shanghai")
FLEET: dict[str, Any] = {"regions": REGIONS, "instances_per_region": 120, "seed": 13}
FAST = ("--yes", "--json", "--rate", "0")
SCRIPT = '#!/bin/bash\nset -e\necho "deploy $(hostname)"\n'
PUBLIC = "ACS-ECS-DemoInstallPackage-linux.sh"
SCRIPT_NAME = ScriptSource(SCRIPT).name  # fanout-<sha256 prefix>, the same in every region


def events(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The JSON lines of `run --json`."""
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def calls(emu: EmulatorThread, action: str) -> dict[str, int]:
    """`action` calls per region, as the emulator counted them."""
    return {r: s["calls"].get(action, 0) for r, s in emu.snapshot()["regions"].items()}


def total_calls(emu: EmulatorThread) -> int:
    """Every authenticated call the emulator received."""
    return sum(sum(s["calls"].values()) for s in emu.snapshot()["regions"].values())


def invoked_ids(emu: EmulatorThread) -> dict[str, set[str]]:
    """Region -> the CommandIds its accepted InvokeCommand calls carried."""
    found: dict[str, set[str]] = {}
    for inv in emu.snapshot()["invocations"]:
        found.setdefault(inv["region"], set()).add(inv["command_id"])
    return found


def commands_named(emu: EmulatorThread, name: str) -> dict[str, list[str]]:
    """Region -> ids of the region's commands named `name`."""
    return {
        region: [c["command_id"] for c in s["commands"] if c["name"] == name]
        for region, s in emu.snapshot()["regions"].items()
    }


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one `fanout: error:` line of a run refused with exit 2."""
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    errors = [line for line in done.stderr.splitlines() if line.startswith("fanout: error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.fixture
def setup(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> Callable[..., tuple[EmulatorThread, Fanout, Path, Path]]:
    """An emulator over three regions (config overrides allowed), its CLI, a target file of
    every instance, and `deploy.sh`."""

    def make(**overrides: Any) -> tuple[EmulatorThread, Fanout, Path, Path]:
        emu = emulator(**{**FLEET, **overrides})
        targets = write_targets(tmp_path / "hosts.txt", fleet_ids(**FLEET))
        script = tmp_path / "deploy.sh"
        script.write_text(SCRIPT)
        return emu, fanout_cli(emu), targets, script

    return make


def test_script_rollout_creates_one_command_per_region_and_reuses_it(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]],
) -> None:
    """`--script deploy.sh` over three regions: `plan` creates nothing; `run` makes exactly
    one CreateCommand per region and every InvokeCommand in a region carries that region's
    id; a second `run` of the same script creates nothing new and invokes the same ids."""
    emu, cli, targets, script = setup()
    planned = cli.run("plan", "--script", str(script), "--targets", str(targets), "--json")
    assert planned.returncode == 0, planned.stderr
    command = json.loads(planned.stdout)["command"]
    assert {r["action"] for r in command["regions"].values()} == {"creates"}
    assert calls(emu, "CreateCommand") == dict.fromkeys(REGIONS, 0)

    first = cli.run("run", "--script", str(script), "--targets", str(targets), *FAST)
    assert first.returncode == 0, first.stderr
    assert calls(emu, "CreateCommand") == dict.fromkeys(REGIONS, 1)
    created = commands_named(emu, SCRIPT_NAME)
    assert all(len(ids) == 1 for ids in created.values())
    assert len({ids[0] for ids in created.values()}) == 3  # a CommandId belongs to one region
    assert invoked_ids(emu) == {r: set(ids) for r, ids in created.items()}
    made = {e["region"]: e["command_id"] for e in events(first) if e["event"] == "command"}
    assert made == {r: ids[0] for r, ids in created.items()}

    second = cli.run("run", "--script", str(script), "--targets", str(targets), *FAST)
    assert second.returncode == 0, second.stderr
    assert calls(emu, "CreateCommand") == dict.fromkeys(REGIONS, 1)
    assert commands_named(emu, SCRIPT_NAME) == created
    assert invoked_ids(emu) == {r: set(ids) for r, ids in created.items()}
    run_id = events(second)[0]["run_id"]
    status = json.loads(cli.run("status", run_id, "--json").stdout)
    assert status["command_ids"] == {r: ids[0] for r, ids in created.items()}
    report = json.loads(cli.run("report", run_id, "--format", "json").stdout)
    assert report["command_ids"] == status["command_ids"]


def test_kill_between_create_command_and_its_record_then_resume(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]], ledger_location: str
) -> None:
    """kill -9 while CreateCommand's answer is on its way (the command exists, the ledger holds
    only the intent): `resume` finds the command by its name and adopts it; no region ever gets
    a second CreateCommand, and the resumed run invokes each region's one command."""
    emu, cli, targets, script = setup(latency_ms=1000)
    proc = cli.start("run", "--script", str(script), "--targets", str(targets), *FAST)
    assert proc.stdout is not None
    run_id = json.loads(proc.stdout.readline())["run_id"]  # stored; commands come next
    control(emu, "clock", {"freeze": True})
    stop = threading.Event()

    def pump() -> None:  # the clock moves only in small steps, and stops once one is created
        while not stop.is_set() and not any(
            s["commands_created"] for s in emu.snapshot()["regions"].values()
        ):
            control(emu, "clock", {"advance_s": 0.05})
            time.sleep(0.02)

    pumper = threading.Thread(target=pump)
    pumper.start()
    try:
        wait_for(lambda: any(s["commands_created"] for s in emu.snapshot()["regions"].values()), 60)
    finally:
        stop.set()
        pumper.join()
    close(proc, signal.SIGKILL)  # CreateCommand applied; its answer held by the frozen clock
    held = [r for r, n in calls(emu, "CreateCommand").items() if n]
    assert len(held) == 1
    intents = ledger_sql(ledger_location, "SELECT region, state, command_id FROM commands")
    assert intents == [(held[0], "creating", None)]
    assert ledger_sql(
        ledger_location,
        f"SELECT COUNT(*) FROM batches WHERE command_id IS NOT NULL AND run_id = '{run_id}'",
    ) == [(0,)]

    control(emu, "clock", {"freeze": False})
    resumed = cli.run("resume", run_id, *FAST)
    assert resumed.returncode == 0, resumed.stderr
    assert calls(emu, "CreateCommand") == dict.fromkeys(REGIONS, 1)
    created = commands_named(emu, SCRIPT_NAME)
    assert all(len(ids) == 1 for ids in created.values())
    assert invoked_ids(emu) == {r: set(ids) for r, ids in created.items()}
    adopted = {e["region"]: e["created"] for e in events(resumed) if e["event"] == "command"}
    assert adopted == {r: r != held[0] for r in REGIONS}


def test_two_processes_creating_one_command_take_turns(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]], tmp_path: Path
) -> None:
    """Two `fanout run --script` started together on one ledger: the CreateCommand claim in the
    ledger lets one create each region's command and the other reuse it."""
    emu, cli, _targets, script = setup(latency_ms=200)
    ids = fleet_ids(**FLEET)
    halves = [write_targets(tmp_path / f"half{n}.txt", ids[n::2]) for n in (0, 1)]
    procs = [cli.start("run", "--script", str(script), "--targets", str(h), *FAST) for h in halves]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    assert calls(emu, "CreateCommand") == dict.fromkeys(REGIONS, 1)
    created = commands_named(emu, SCRIPT_NAME)
    assert invoked_ids(emu) == {r: set(ids) for r, ids in created.items()}


def test_every_source_makes_the_same_batches_and_calls(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]], ledger_location: str
) -> None:
    """The same rollout with `--command-id REGION=...`, with `--command-name` and with
    `--script`: the same batches and the same InvokeCommand calls per region, each with the
    region's own id."""
    emu, cli, targets, script = setup()
    id_map = [a for r in REGIONS for a in ("--command-id", f"{r}={demo_command_id(r)}")]
    sources = {
        "map": id_map,
        "name": ["--command-name", DEMO_COMMAND_NAME],
        "script": ["--script", str(script)],
    }
    batches: dict[str, list[tuple[str, str]]] = {}
    invokes: dict[str, dict[str, int]] = {}
    for kind, args in sources.items():
        before = calls(emu, "InvokeCommand")
        done = cli.run("run", *args, "--targets", str(targets), *FAST)
        assert done.returncode == 0, done.stderr
        run_id = events(done)[0]["run_id"]
        after = calls(emu, "InvokeCommand")
        invokes[kind] = {r: after[r] - before[r] for r in REGIONS}
        batches[kind] = ledger_sql(
            ledger_location,
            f"SELECT region, instance_ids FROM batches WHERE run_id = '{run_id}' ORDER BY seq",
        )
        ids = dict(
            ledger_sql(
                ledger_location,
                f"SELECT DISTINCT region, command_id FROM batches WHERE run_id = '{run_id}'",
            )
        )
        expected = (
            {r: commands_named(emu, SCRIPT_NAME)[r][0] for r in REGIONS}
            if kind == "script"
            else {r: demo_command_id(r) for r in REGIONS}
        )
        assert ids == expected, kind
    assert batches["map"] == batches["name"] == batches["script"]
    assert invokes["map"] == invokes["name"] == invokes["script"] == dict.fromkeys(REGIONS, 3)


def test_an_id_that_lacks_a_region_is_refused_before_any_call(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]],
) -> None:
    """A `REGION=` map without one target region is refused before any call, naming it; one
    id that exists in one region only is refused before any InvokeCommand, naming the other
    regions and the sources that fit."""
    emu, cli, targets, _script = setup()
    partial = [a for r in REGIONS[:2] for a in ("--command-id", f"{r}={demo_command_id(r)}")]
    line = error_line(cli.run("run", *partial, "--targets", str(targets), *FAST))
    assert "cn-shanghai" in line
    assert total_calls(emu) == 0
    hangzhou = demo_command_id("cn-hangzhou")
    line = error_line(cli.run("run", "--command-id", hangzhou, "--targets", str(targets), *FAST))
    assert "no such command in cn-beijing, cn-shanghai" in line
    assert "--command-id REGION=c-" in line
    assert "--script" in line
    assert sum(calls(emu, "InvokeCommand").values()) == 0


def create_command(emu: EmulatorThread, region: str, name: str) -> str:
    """CreateCommand in the emulator (another tool's command); its CommandId."""
    credentials = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, source="test")

    async def create() -> str:
        async with EcsClient(credentials, ClientOptions(endpoint=emu.url)) as client:
            return await client.create_command(region, name=name, content="echo hi\n")

    return anyio.run(create, backend="asyncio")


def test_a_name_resolves_per_region_or_is_refused_with_the_candidates(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]],
) -> None:
    """`--command-name` absent from some regions is refused naming them; two commands of one
    name in a region is refused listing both ids; nothing is invoked."""
    emu, cli, targets, _script = setup()
    for region in REGIONS[:2]:
        create_command(emu, region, "deploy")
    line = error_line(cli.run("run", "--command-name", "deploy", "--targets", str(targets), *FAST))
    assert "no command of that name in cn-shanghai" in line
    twice = (
        create_command(emu, "cn-shanghai", "deploy"),
        create_command(emu, "cn-shanghai", "deploy"),
    )
    line = error_line(cli.run("run", "--command-name", "deploy", "--targets", str(targets), *FAST))
    assert "2 commands of that name in cn-shanghai" in line
    assert all(command_id in line for command_id in twice)
    assert sum(calls(emu, "InvokeCommand").values()) == 0


def test_public_command_by_name_with_parameters(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]],
) -> None:
    """A public command: by name with `--provider`, parameters validated against its
    definitions (a required one missing: exit 2, nothing invoked), invoked by its name in
    every region; without `--provider` the refusal (by id or by name) says to add it."""
    emu, cli, targets, _script = setup()
    base = ("--targets", str(targets), *FAST)
    missing = cli.run("run", "--command-name", PUBLIC, "--provider", "AlibabaCloud", *base)
    assert "requires parameter 'packageName'" in error_line(missing)
    hint = cli.run("run", "--command-id", PUBLIC, "--param", "packageName=nginx", *base)
    assert "--provider AlibabaCloud" in error_line(hint)
    by_name = cli.run("run", "--command-name", PUBLIC, "--param", "packageName=nginx", *base)
    assert by_name.returncode == 2
    assert "--provider AlibabaCloud" in error_line(by_name)
    assert "create it there" not in error_line(by_name)
    assert sum(calls(emu, "InvokeCommand").values()) == 0
    done = cli.run(
        "run", "--command-name", PUBLIC, "--provider", "AlibabaCloud",
        "--param", "packageName=nginx", "--param", "action=install", *base,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    invocations = emu.snapshot()["invocations"]
    assert {i["region"] for i in invocations} == set(REGIONS)
    assert all(
        i["parameters"] == {"action": "install", "packageName": "nginx"} for i in invocations
    )
    by_id = cli.run(
        "run", "--command-id", PUBLIC, "--provider", "AlibabaCloud",
        "--param", "packageName=nginx", *base,
    )  # fmt: skip
    assert by_id.returncode == 0, by_id.stderr


@pytest.mark.parametrize(("base64_kib", "accepted"), [(17, True), (18.1, False)])
def test_content_size_rule(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]],
    tmp_path: Path,
    base64_kib: float,
    accepted: bool,
) -> None:
    """A script of 17 KB of Base64 content is created and run; one over 18 KB is refused
    before any call, the refusal naming the rule, the limit and where the limit comes from."""
    emu, cli, targets, _script = setup()
    raw_len = int(base64_kib * 1024) // 4 * 3
    script = tmp_path / "big.sh"
    script.write_text("#" * (raw_len - 1) + "\n")
    done = cli.run("run", "--script", str(script), "--targets", str(targets), *FAST)
    if accepted:
        assert done.returncode == 0, done.stderr
        assert calls(emu, "CreateCommand") == dict.fromkeys(REGIONS, 1)
        return
    line = error_line(done)
    assert "at most 18432" in line
    assert "spec P4, CmdContent.ExceedLimit" in line
    assert "content_limit_bytes default 18 KB" in line
    assert total_calls(emu) == 0


GOOD_OPTIONS = {
    "--timeout": ("120", "Timeout", "120"),
    "--username": ("deploy", "Username", "deploy"),
    "--working-dir": ("/srv", "WorkingDir", "/srv"),
    "--windows-password-name": ("axtPassword", "WindowsPasswordName", "axtPassword"),
    "--container-id": ("docker://" + "ab" * 32, "ContainerId", "docker://" + "ab" * 32),
    "--termination-mode": ("ProcessTree", "TerminationMode", "ProcessTree"),
    "--launcher": ("python3", "Launcher", "python3"),
    "--resource-group-id": ("rg-acfmzw2jz2z", "ResourceGroupId", "rg-acfmzw2jz2z"),
    "--oss-output": ("fanout-logs/runs", "OssOutputDelivery", "oss://fanout-logs/runs"),
    "--invocation-tag": ("team=sre", "Tag.1.Key", "team"),
}


def test_every_invoke_command_parameter_reaches_the_emulator(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]],
) -> None:
    """Each InvokeCommand option given as a flag is recorded by the emulator on every
    invocation (ContainerName apart: the API takes a container by id or by name)."""
    emu, cli, _targets, _script = setup()
    flags = [a for flag, (value, _, _) in GOOD_OPTIONS.items() for a in (flag, value)]
    hz = demo_command_id("cn-hangzhou")
    one = ("--instance-id", f"cn-hangzhou:{fleet_ids(**FLEET)[120][1]}")
    done = cli.run("run", "--command-id", hz, *one, *flags, *FAST)
    assert done.returncode == 0, done.stderr
    (invocation,) = emu.snapshot()["invocations"]
    for wire, expected in ((w, e) for _, w, e in GOOD_OPTIONS.values()):
        assert invocation["options"][wire] == expected, wire
    named = cli.run("run", "--command-id", hz, *one, "--container-name", "web-1", *FAST)
    assert named.returncode == 0, named.stderr
    assert emu.snapshot()["invocations"][-1]["options"]["ContainerName"] == "web-1"


BAD_OPTIONS = [
    ("--timeout", "5", "--timeout: must be an integer from 10 to 86400"),
    ("--username", "u" * 256, "Username.ExceedLimit"),
    ("--working-dir", "/" + "d" * 200, "InvalidParameter.WorkingDir"),
    ("--windows-password-name", "w" * 256, "WindowsPasswordName.ExceedLimit"),
    ("--container-id", "abc123", "InvalidContainerId.Malformed"),
    ("--container-name", "-web", "InvalidContainerName.Malformed"),
    ("--termination-mode", "Kill", "InvalidTerminationMode.NotFound"),
    ("--launcher", "x" * 1025, "InvalidLauncher.LengthLimitExceeded"),
    ("--resource-group-id", "group-1", "resource group id"),
    ("--oss-output", "s3://bucket/x", "OssOutputDelivery"),
    ("--invocation-tag", "aliyun:team=x", "may not start with acs: or aliyun"),
]


@pytest.mark.parametrize(("flag", "value", "rule"), BAD_OPTIONS, ids=[b[0] for b in BAD_OPTIONS])
def test_a_bad_value_of_each_parameter_is_refused_without_a_call(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]],
    flag: str,
    value: str,
    rule: str,
) -> None:
    """A value the reference does not allow: exit 2, the rule named, not one call sent."""
    emu, cli, targets, _script = setup()
    hz = demo_command_id("cn-hangzhou")
    done = cli.run("run", "--command-id", hz, "--targets", str(targets), flag, value, *FAST)
    assert done.returncode == 2, done.stderr
    assert rule in done.stderr
    assert total_calls(emu) == 0


def test_commands_lists_and_prunes_only_what_no_open_run_uses(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]], tmp_path: Path
) -> None:
    """`fanout commands` lists each region's command with the runs that used it and the
    region's count and quota; `--prune` keeps one an open (paused) run uses, deletes the
    others with DeleteCommand, and never touches a command fanout did not create."""
    emu, cli, targets, script = setup()
    done = cli.run("run", "--script", str(script), "--targets", str(targets), *FAST)
    finished = events(done)[0]["run_id"]
    other = tmp_path / "other.sh"
    other.write_text("echo other\n")
    paused = cli.run(
        "run", "--script", str(other), "--instance-id", f"cn-hangzhou:{fleet_ids(**FLEET)[120][1]}",
        "--instance-id", f"cn-hangzhou:{fleet_ids(**FLEET)[121][1]}", "--waves", "1,100%",
        "--pause-after-wave", *FAST,
    )  # fmt: skip
    assert paused.returncode == 5, paused.stderr
    listing = json.loads(cli.run("commands", "--json").stdout)
    hz = listing["regions"]["cn-hangzhou"]
    assert hz["kept_by_fanout"] == 2
    assert hz["commands_in_region"] == 4  # two demo commands, two of fanout's
    assert hz["command_quota"] == 500
    by_run = {tuple(c["runs"]): c for c in hz["commands"]}
    assert by_run[(finished,)]["open_runs"] == []
    pruned = json.loads(cli.run("commands", "--prune", "--json").stdout)["pruned"]
    deleted = sorted(p["region"] for p in pruned if p["deleted"])
    kept = [p for p in pruned if not p["deleted"]]
    assert deleted == sorted(REGIONS)
    assert [(k["region"], k["why"].startswith("used by open run")) for k in kept] == [
        ("cn-hangzhou", True)
    ]
    assert calls(emu, "DeleteCommand") == dict.fromkeys(REGIONS, 1)
    left = emu.snapshot()["regions"]
    for region in REGIONS:
        names = [c["name"] for c in left[region]["commands"]]
        assert names[:2] == [DEMO_COMMAND_NAME, "fanout-demo-deploy"]  # not fanout's: kept
    again = cli.run(  # the paused run still owns one of these instances: overlap on purpose
        "run", "--script", str(script), "--targets", str(targets), *FAST, "--allow-overlap"
    )
    assert again.returncode == 0, again.stderr
    assert calls(emu, "CreateCommand") == {"cn-beijing": 2, "cn-hangzhou": 3, "cn-shanghai": 2}


def test_retry_and_resume_use_each_regions_id(
    setup: Callable[..., tuple[EmulatorThread, Fanout, Path, Path]],
) -> None:
    """A retry of a script run's failures invokes each region's same command (no new one)."""
    emu, cli, targets, script = setup(exec_failure_fraction=0.1)
    done = cli.run("run", "--script", str(script), "--targets", str(targets), *FAST)
    assert done.returncode == 1, done.stderr
    run_id = events(done)[0]["run_id"]
    before = invoked_ids(emu)
    retried = cli.run("retry", run_id, "--only", "failed", *FAST)
    assert retried.returncode in (0, 1), retried.stderr
    assert calls(emu, "CreateCommand") == dict.fromkeys(REGIONS, 1)
    assert invoked_ids(emu) == before

"""Issue 5 end to end: validation refuses before any InvokeCommand, preflight excludes what would
fail, tag targeting pages through DescribeInstances, and `plan` shows a multi-day ETA.

Every test runs the real `fanout` CLI as a subprocess against the emulator on 127.0.0.1 and
proves what was (not) sent from the emulator's own record.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
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
    DEMO_COMMAND_ID,
    DEMO_COMMAND_NAME,
    DEMO_PARAM_COMMAND_ID,
    EmulatorConfig,
    EmulatorThread,
)
from fanout.emulator.fleet import Fleet, Instance
from tests.conftest import Fanout, invoked_instances, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]

REGION = "cn-hangzhou"
BIG_COMMAND = "big"  # placeholder: a command created in the test, near the P4 size limit
RUN_FLAGS = ("--yes", "--no-wait", "--rate", "0")


def fleet(**fields: Any) -> dict[str, list[Instance]]:
    """The emulator's instances for these fields, by region (ground truth)."""
    return {
        r: list(rf.instances)
        for r, rf in Fleet.from_config(EmulatorConfig(**fields)).regions.items()
    }


def invoke_calls(emu: EmulatorThread) -> dict[str, int]:
    """InvokeCommand calls per region, as the emulator counted them."""
    return {r: s["calls"].get("InvokeCommand", 0) for r, s in emu.snapshot()["regions"].items()}


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a refused command (exit 2, no traceback)."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fanout: error: ")
    return lines[0]


def run_id_of(done: subprocess.CompletedProcess[str]) -> str:
    """The run id from the first JSON line of `run --json`."""
    first = json.loads(done.stdout.splitlines()[0])
    assert first["event"] == "run", done.stdout[:500]
    return str(first["run_id"])


def report(cli: Fanout, run_id: str) -> dict[str, dict[str, Any]]:
    """`fanout report --format json` rows by instance id."""
    done = cli.run("report", run_id, "--format", "json")
    assert done.returncode == 0, done.stderr
    return {row["instance_id"]: row for row in json.loads(done.stdout)["instances"]}


def create_command(emu: EmulatorThread, content: str) -> str:
    """CreateCommand in the emulator (parameters enabled); its CommandId."""
    credentials = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, source="test")

    async def create() -> str:
        async with EcsClient(credentials, ClientOptions(endpoint=emu.url)) as client:
            return await client.create_command(
                REGION, name="big", content=content, enable_parameter=True
            )

    return anyio.run(create, backend="asyncio")


REFUSALS = [
    pytest.param(
        DEMO_PARAM_COMMAND_ID,
        tuple(a for i in range(11) for a in ("--param", f"k{i}=v")),
        "spec P1",
        id="P1-eleven-parameters",
    ),
    pytest.param(DEMO_PARAM_COMMAND_ID, ("--param", "=x"), "spec P2", id="P2-empty-name"),
    pytest.param(DEMO_PARAM_COMMAND_ID, ("--param", "k" * 65 + "=x"), "spec P2", id="P2-long-name"),
    pytest.param(
        DEMO_PARAM_COMMAND_ID,
        ("--param", "name=a", "--param", "name=b"),
        "ParameterKey.Duplicate",
        id="duplicate-name",
    ),
    pytest.param(BIG_COMMAND, ("--param", "name=" + "x" * 600), "spec P4", id="P4-size"),
    pytest.param(
        DEMO_PARAM_COMMAND_ID,
        ("--param", "name=a", "--param", "colour=red"),
        "spec P5",
        id="P5-undefined-name",
    ),
    pytest.param(DEMO_COMMAND_ID, ("--param", "name=a"), "spec P6", id="P6-parameters-disabled"),
    pytest.param(DEMO_PARAM_COMMAND_ID, (), "spec S11", id="S11-parameters-missing"),
    pytest.param(
        DEMO_COMMAND_ID, ("--timed", "--frequency", "*/5 * * * * *"), "spec S7", id="S7-5s-apart"
    ),
    pytest.param(
        DEMO_COMMAND_ID,
        ("--repeat-mode", "Period", "--frequency", "rate(30s)"),
        "InvalidParam.Frequency",
        id="S7-rate-too-short",
    ),
    pytest.param(
        DEMO_COMMAND_ID,
        ("--timed", "--frequency", "0 0 12 * *"),
        "InvalidParam.Frequency",
        id="S7-five-fields",
    ),
    pytest.param(DEMO_COMMAND_ID, ("--timed",), "MissingParam.Frequency", id="timed-no-frequency"),
    pytest.param(
        DEMO_COMMAND_ID,
        ("--repeat-mode", "Period"),
        "MissingParam.Frequency",
        id="period-no-frequency",
    ),
    pytest.param(
        DEMO_COMMAND_ID,
        ("--repeat-mode", "Once", "--frequency", "rate(5m)"),
        "--repeat-mode Once and --frequency contradict",
        id="once-with-a-frequency",
    ),
    pytest.param(
        DEMO_COMMAND_ID,
        ("--frequency", "rate(5m)"),
        "--frequency without --repeat-mode Period",
        id="frequency-alone",
    ),
    pytest.param("c-nosuchcommand001", (), "no such command in cn-hangzhou", id="unknown-command"),
]


@pytest.mark.parametrize(("command_id", "args", "rule"), REFUSALS)
def test_bad_requests_are_refused_by_plan_and_run_with_zero_invokes(
    emulator: Start, fanout_cli: Bind, command_id: str, args: tuple[str, ...], rule: str
) -> None:
    """plan and run exit 2 with one line naming the rule, and no InvokeCommand is sent."""
    emu = emulator(instances_per_region=5)
    cli = fanout_cli(emu)
    if command_id == BIG_COMMAND:
        command_id = create_command(emu, "echo {{name}}\n" + "#" * 13_500)  # 18 020 in Base64
    iid = fleet(instances_per_region=5)[REGION][0].instance_id
    target = ("--command-id", command_id, "--instance-id", iid, "--region", REGION, *args)
    for argv in (("plan", *target), ("run", *target, *RUN_FLAGS)):
        assert rule in error_line(cli.run(*argv)), argv
    assert invoke_calls(emu) == {REGION: 0}
    assert emu.snapshot()["invocations"] == []


@pytest.mark.parametrize(
    ("command_id", "args", "rule"),
    [
        (DEMO_PARAM_COMMAND_ID, (), "spec S11"),
        (DEMO_COMMAND_ID, ("--param", "name=a"), "spec P6"),
        ("c-nosuchcommand001", (), "no such command"),
    ],
)
def test_no_preflight_still_validates_the_command(
    emulator: Start, fanout_cli: Bind, command_id: str, args: tuple[str, ...], rule: str
) -> None:
    """--no-preflight skips the instance checks, not the command check (one DescribeCommands)."""
    emu = emulator(instances_per_region=5)
    cli = fanout_cli(emu)
    iid = fleet(instances_per_region=5)[REGION][0].instance_id
    target = ("--command-id", command_id, "--instance-id", iid, "--region", REGION, *args)
    for argv in (("plan", *target), ("run", *target, *RUN_FLAGS)):
        assert rule in error_line(cli.run(*argv, "--no-preflight")), argv
    calls = emu.snapshot()["regions"][REGION]["calls"]
    assert calls == {"DescribeCommands": 2}


def test_valid_edge_cases_go_through(emulator: Start, fanout_cli: Bind) -> None:
    """Empty values (P3), a subset of names (P5) and a 10 s cron (S7) are sent, one call each."""
    emu = emulator(instances_per_region=5)
    cli = fanout_cli(emu)
    ids = [i.instance_id for i in fleet(instances_per_region=5)[REGION]]
    for iid, args in (
        (
            ids[0],
            ("--command-id", DEMO_PARAM_COMMAND_ID, "--param", "name=", "--param", "version="),
        ),
        (ids[1], ("--command-id", DEMO_PARAM_COMMAND_ID, "--param", "name=web")),
        (ids[2], ("--command-id", DEMO_COMMAND_ID, "--timed", "--frequency", "*/10 * * * * *")),
    ):
        done = cli.run("run", *args, "--instance-id", iid, "--region", REGION, *RUN_FLAGS)
        assert done.returncode == 0, done.stderr
    assert invoke_calls(emu) == {REGION: 3}
    assert invoked_instances(emu.snapshot()) == dict.fromkeys(ids[:3], 1)


def test_describe_commands_failure_warns_and_continues(emulator: Start, fanout_cli: Bind) -> None:
    """When DescribeCommands itself fails, a warning is logged and the run goes on."""
    emu = emulator(
        instances_per_region=5, fault_actions=frozenset({"DescribeCommands"}), error_rate=1.0
    )
    cli = fanout_cli(emu)
    iid = fleet(instances_per_region=5)[REGION][0].instance_id
    done = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--instance-id", iid, "--region", REGION,
        *RUN_FLAGS, "--no-preflight",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "command_not_checked" in done.stderr
    assert invoked_instances(emu.snapshot()) == {iid: 1}


BAD_KINDS = {
    "stopped": ({"stopped_fraction": 0.05}, "not Running (spec S3)"),
    "classic": ({"classic_fraction": 0.05}, "classic network, not VPC (spec S2)"),
    "agent-offline": ({"agent_offline_fraction": 0.05}, "agent not online (spec S4)"),
    "missing": ({}, "not found in the region"),
}


def expected_reason(inst: Instance | None) -> str | None:
    """The preflight reason for an instance (None: usable), first failing check wins."""
    if inst is None:
        return "not found in the region"
    if inst.status != "Running":
        return "not Running (spec S3)"
    if inst.network != "vpc":
        return "classic network, not VPC (spec S2)"
    if not inst.agent_online:
        return "agent not online (spec S4)"
    return None


def missing_ids(count: int, seed: int) -> list[str]:
    """Well-formed instance ids that no emulator fleet has."""
    rng = random.Random(seed)
    return [f"i-zz{rng.getrandbits(64):017x}" for _ in range(count)]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_unusable_kind_is_excluded_by_plan_and_run(
    emulator: Start, fanout_cli: Bind, tmp_path: Path, kind: str
) -> None:
    """Spec S2/S3/S4 and missing ids: plan shows them excluded, run never invokes them, report says why."""
    fractions, reason = BAD_KINDS[kind]
    fields: dict[str, Any] = {"instances_per_region": 200, "seed": 3, **fractions}
    emu = emulator(**fields)
    cli = fanout_cli(emu)
    instances = fleet(**fields)[REGION]
    ids = [i.instance_id for i in instances] + (missing_ids(10, 1) if kind == "missing" else [])
    bad = {i.instance_id for i in instances if expected_reason(i)} | set(ids[200:])
    assert len(bad) == 10
    targets = write_targets(tmp_path / "t.txt", [(REGION, i) for i in ids])
    planned = cli.run("plan", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--json")
    assert planned.returncode == 0, planned.stderr
    region = json.loads(planned.stdout)["regions"][REGION]
    assert sum(n for r, n in region["excluded_by_reason"].items() if reason in r) == 10
    assert region["calls_needed"] == math.ceil(200 / 50) == 4  # 200 usable (or 190) -> 4 calls
    done = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--json", *RUN_FLAGS
    )
    assert done.returncode == 0, done.stderr  # finished; exclusions alone do not fail a run
    rows = report(cli, run_id_of(done))
    assert {i for i, r in rows.items() if r["state"] == "excluded"} == bad
    assert all(reason in rows[i]["reason"] for i in bad)
    assert set(invoked_instances(emu.snapshot())) == set(ids) - bad
    assert invoke_calls(emu) == {REGION: math.ceil((len(ids) - 10) / 50)}


def test_5000_instance_fleet_spends_exactly_one_call_per_50_good(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """5 % bad (stopped, classic, agent offline, missing) mixed in: ceil(good/50) calls per region."""
    fields: dict[str, Any] = {
        "regions": ("cn-hangzhou", "cn-beijing"),
        "instances_per_region": 2500,
        "seed": 11,
        "stopped_fraction": 0.015,
        "classic_fraction": 0.01,
        "agent_offline_fraction": 0.015,
    }
    emu = emulator(**fields)
    cli = fanout_cli(emu)
    truth = fleet(**fields)
    targets: list[tuple[str, str]] = []
    reasons: dict[str, str] = {}
    for number, (region, instances) in enumerate(sorted(truth.items())):
        for inst in instances:
            targets.append((region, inst.instance_id))
            if (why := expected_reason(inst)) is not None:
                reasons[inst.instance_id] = why
        for iid in missing_ids(25, number):
            targets.append((region, iid))
            reasons[iid] = "not found in the region"
    random.Random(5).shuffle(targets)  # bad ones land in many different batches
    assert 0.045 * 5000 < len(reasons) < 0.06 * 5000
    good = {r: [i for rr, i in targets if rr == r and i not in reasons] for r in truth}
    path = write_targets(tmp_path / "fleet.txt", targets)
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(path), "--json", *RUN_FLAGS,
        "--concurrency", "8", timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]  # only exclusions: exit 0 (DESIGN 3)
    assert invoke_calls(emu) == {r: math.ceil(len(ids) / 50) for r, ids in good.items()}
    counts = invoked_instances(emu.snapshot())
    assert counts == {i: 1 for ids in good.values() for i in ids}
    rows = report(cli, run_id_of(done))
    assert len(rows) == len(targets)
    for iid, why in reasons.items():
        assert rows[iid]["state"] == "excluded", rows[iid]
        assert why in rows[iid]["reason"], rows[iid]


def tagged(instances: list[Instance], **tags: str) -> list[str]:
    """Ids of the instances carrying every tag."""
    return [i.instance_id for i in instances if all((k, v) in i.tags for k, v in tags.items())]


def test_tag_targeting_pages_and_merges_with_explicit_targets(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """--tag env=prod --tag role=web over two regions selects exactly the tagged instances (3 pages)."""
    fields: dict[str, Any] = {
        "regions": ("cn-hangzhou", "cn-beijing"),
        "instances_per_region": 1500,
        "seed": 5,
    }
    emu = emulator(**fields)
    cli = fanout_cli(emu)
    truth = fleet(**fields)
    want = {r: tagged(insts, env="prod", role="web") for r, insts in truth.items()}
    assert all(len(ids) > 200 for ids in want.values())  # more than two pages of 100
    untagged = [i for i in (x.instance_id for x in truth[REGION]) if i not in want[REGION]][:2]
    explicit = write_targets(
        tmp_path / "t.txt", [(REGION, i) for i in (*want[REGION][:3], *untagged)]
    )
    query = (
        "--tag",
        "env=prod",
        "--tag",
        "role=web",
        "--region",
        "cn-hangzhou",
        "--region",
        "cn-beijing",
    )
    planned = cli.run("plan", "--command-name", DEMO_COMMAND_NAME, *query, "--json")
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(planned.stdout)
    assert {r: v["targets"] for r, v in doc["regions"].items()} == {
        r: len(v) for r, v in want.items()
    }
    calls_before = {
        r: s["calls"]["DescribeInstances"] for r, s in emu.snapshot()["regions"].items()
    }
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(explicit), *query, *RUN_FLAGS,
        "--no-preflight",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("duplicate of") == 3
    expected = {i for ids in want.values() for i in ids} | set(untagged)
    assert invoked_instances(emu.snapshot()) == dict.fromkeys(expected, 1)
    pages = {
        r: s["calls"]["DescribeInstances"] - calls_before[r]
        for r, s in emu.snapshot()["regions"].items()
    }
    assert pages == {r: math.ceil(len(ids) / 100) for r, ids in want.items()}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--tag", "env=prod"), "--tag needs --region"),
        (("--tag", "envprod", "--region", REGION), "expected KEY=VALUE"),
        (("--tag", "env=prod", "--tag", "env=staging", "--region", REGION), "given twice"),
        (("--tag", "env=prod", "--region", "mars-north-1"), "unknown region"),
    ],
)
def test_bad_tag_queries_cost_nothing(
    emulator: Start, fanout_cli: Bind, args: tuple[str, ...], problem: str
) -> None:
    """A malformed tag query exits 2 with one line before any API call."""
    emu = emulator()
    cli = fanout_cli(emu)
    for command in ("plan", "run"):
        assert problem in error_line(
            cli.run(command, "--command-id", DEMO_COMMAND_ID, *args, "--yes")
        )
    assert emu.snapshot()["regions"][REGION]["calls"] == {}


def test_tag_query_matching_nothing_is_refused(emulator: Start, fanout_cli: Bind) -> None:
    """A tag query that finds no instance (and no other target) exits 2 and invokes nothing."""
    emu = emulator()
    cli = fanout_cli(emu)
    done = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--tag", "env=nowhere", "--region", REGION, "--yes"
    )
    assert "no instance in cn-hangzhou carries env=nowhere" in error_line(done)
    assert invoke_calls(emu) == {REGION: 0}


def test_plan_of_300000_targets_shows_a_multi_day_eta_and_spends_nothing(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """plan on 300 000 targets with a 5000 quota: day 2 where calls exceed it; no InvokeCommand."""
    emu = emulator(regions=("cn-hangzhou", "cn-beijing"), instances_per_region=0)
    cli = fanout_cli(emu)
    path = tmp_path / "big.txt"
    with path.open("w") as out:
        out.writelines(f"cn-hangzhou,i-synth{n:014d}\n" for n in range(260_000))
        out.writelines(f"cn-beijing:i-synth{n:014d}\n" for n in range(40_000))
    started = time.time()
    done = cli.run(
        "plan", "--command-name", DEMO_COMMAND_NAME, "--targets", str(path), "--no-preflight",
        "--daily-quota", "5000", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    hz, bj = doc["regions"]["cn-hangzhou"], doc["regions"]["cn-beijing"]
    assert (doc["targets"], doc["calls_needed"], doc["spends_quota"]) == (300_000, 6000, False)
    assert (hz["calls_needed"], hz["quota_left_now"], hz["days"]) == (5200, 5000, 2)
    assert (bj["calls_needed"], bj["days"]) == (800, 1)
    assert hz["finish_after_s"] > 86_400 > bj["finish_after_s"]
    assert doc["days"] == 2
    assert doc["finishes_at"] == hz["finishes_at"]
    assert hz["finish_after_s"] + started - 5 <= time.time() + 86_400 * 2
    text = cli.run(
        "plan", "--command-name", DEMO_COMMAND_NAME, "--targets", str(path), "--no-preflight",
        "--daily-quota", "5000",
    )  # fmt: skip
    assert "quota is short in cn-hangzhou" in text.stdout
    assert "quota day 2" in text.stdout
    state = emu.snapshot()
    assert invoke_calls(emu) == {"cn-hangzhou": 0, "cn-beijing": 0}
    assert state["regions"]["cn-hangzhou"]["calls"]["DescribeCommands"] == 2  # still validated

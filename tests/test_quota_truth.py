"""Quota truth (issue 14): the daily limit is the account's own, read from the API; the API's
`Invocation.ExceedQuota` is authoritative - the region stops at once, the refused attempt uses
nothing, the code reaches the ledger, the events and the text, and waiting probes with one call
at a time on a growing schedule."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.command import CommandSpec
from fanout.clock import SYSTEM_CLOCK, Clock
from fanout.emulator import DEMO_COMMAND_ID, DEMO_COMMAND_NAME, EmulatorThread, demo_command_id
from fanout.errors import ApiError, ExitCode
from fanout.ledger import open_ledger
from fanout.sources import CommandNameSource
from tests.conftest import Fanout, both_backends, fleet_ids, write_targets
from tests.simulation import DEMO, fleet_targets, simulation
from tests.test_schemas import validate

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]
REGION = "cn-hangzhou"
FLEET: dict[str, Any] = {
    "instances_per_region": 20,
    "stopped_fraction": 0,
    "classic_fraction": 0,
    "agent_offline_fraction": 0,
}


async def spend_elsewhere(url: str, region: str, calls: int, clock: Clock = SYSTEM_CLOCK) -> None:
    """Another client of the same account spends `calls` of the region's quota."""
    async with EcsClient(DEMO, ClientOptions(endpoint=url), clock=clock) as ecs:
        instances = await ecs.describe_instances(region)
        for n in range(calls):
            spec = CommandSpec(demo_command_id(region))  # a CommandId belongs to one region
            await ecs.invoke_command(region, spec, [instances[n].instance_id], client_token=f"x{n}")


def refused_invokes(snapshot: dict[str, Any], region: str = REGION) -> int:
    """InvokeCommand calls the emulator refused for the quota in a region (its own count)."""
    refused = snapshot["regions"][region]["refused"].get("InvokeCommand", {})
    return int(refused.get("Invocation.ExceedQuota", 0))


def _run(cli: Fanout, tmp_path: Path, n: int, *extra: str) -> Any:
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET)[:n])
    return cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--batch-size", "1",
        "--yes", *extra,
    )  # fmt: skip


def test_the_limit_is_read_from_the_api_and_the_sixth_call_never_sent(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Emulator `--daily-quota 5`, fanout without --daily-quota: plan and run learn 5 from
    DescribeAccountAttributes before the first call; 5 calls go, the 6th is never sent (the
    emulator refused none), exit 4 with when capacity frees (fanout's own calls explain it)."""
    emu = emulator(**FLEET, daily_quota=5)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET)[:7])
    plan = cli.run(
        "plan", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--batch-size", "1",
        "--json",
    )  # fmt: skip
    region = json.loads(plan.stdout)["regions"][REGION]
    assert (region["daily_quota"], region["quota_source"], region["quota_left_now"]) == (
        5,
        "api",
        5,
    )
    done = _run(cli, tmp_path, 7, "--json")
    assert done.returncode == 4, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    (limits,) = [e for e in events if e["event"] == "quota_limits"]
    assert limits["regions"][REGION]["limit"] == 5
    assert limits["regions"][REGION]["source"] == "api"
    state = emu.snapshot()
    assert state["regions"][REGION]["calls"]["InvokeCommand"] == 5
    assert refused_invokes(state) == 0
    end = events[-1]
    assert (end["event"], end["exit_code"], end["instances"]["not_invoked"]) == ("end", 4, 2)
    # When capacity frees is the ledger's window: a day after fanout's first call (reserved just
    # before the emulator accepted it), not "now" as before issue 14.
    assert "fanout's count reached the daily limit" in end["message"]
    frees = datetime.fromisoformat(end["message"].split("`fanout resume` from ")[1].split(",")[0])
    first = min(datetime.fromisoformat(i["created"]) for i in state["invocations"])
    assert timedelta(hours=24, minutes=-1) <= frees - first <= timedelta(hours=24), (frees, first)


@both_backends
def test_a_refusal_behind_fanouts_back_stops_the_region_at_once(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Another client spent 3 of the account's 5: fanout's 3rd call is refused with
    Invocation.ExceedQuota; no second refused call goes to the region; exit 4 naming the code,
    with "unknown" capacity (other users) and the probe time; the refusal is in the ledger
    (not counted as used), in the JSON events and in `fanout quota` - on either ledger backend."""
    emu = emulator(**FLEET, daily_quota=5)
    anyio.run(spend_elsewhere, emu.url, REGION, 3)
    cli = fanout_cli(emu)
    done = _run(cli, tmp_path, 7, "--concurrency", "1")
    assert done.returncode == 4
    assert "Invocation.ExceedQuota" in done.stderr
    assert "other users of the account's quota" in done.stderr
    assert "next probe at" in done.stderr
    state = emu.snapshot()
    assert refused_invokes(state) == 1
    assert len(state["invocations"]) == 5  # 3 elsewhere, 2 by fanout
    doc = json.loads(cli.run("quota", "--json").stdout)["regions"][REGION]
    assert (doc["limit"], doc["limit_source"], doc["used"]) == (5, "api", 2)
    refusal = doc["last_refusal"]
    assert (refusal["code"], refusal["own_calls"], refusal["explained"]) == (
        "Invocation.ExceedQuota",
        2,
        False,
    )
    assert refusal["message"].startswith("The invocation quota in the current region")
    text = cli.run("quota").stdout
    assert "limit 5 (the account's" in text
    assert "last refusal" in text
    assert "Invocation.ExceedQuota" in text
    # A resume before the probe time sends one probe call, refused: still at most one per probe.
    run_id = done.stdout.splitlines()[0].strip()
    again = cli.run("resume", run_id, "--yes", "--json")
    assert again.returncode == 4
    events = [json.loads(line) for line in again.stdout.splitlines()]
    for event in events:  # quota_limits, quota_refused and end's `quota` have their schemas
        validate(event, f"event-{event['event']}")
    (refused,) = [e for e in events if e["event"] == "quota_refused"]
    assert refused["code"] == "Invocation.ExceedQuota"
    assert refused["frees_at"] is None
    assert refused["probe_at"].endswith("Z")
    assert events[-1]["quota"][REGION]["code"] == "Invocation.ExceedQuota"
    assert refused_invokes(emu.snapshot()) == 2


def _after_quota_day_starts(now: float) -> float:
    """Seconds from `now` to a minute after the next midnight in China (the API's quota day)."""
    local = datetime.fromtimestamp(now, ZoneInfo("Asia/Shanghai"))
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=1, second=0, microsecond=0)
    return midnight.timestamp() - now


async def test_waiting_for_quota_probes_at_most_four_times_in_three_hours(
    tmp_path: Path,
) -> None:
    """With --wait-for-quota and the account's quota spent by others in two regions, the
    emulator's clock advanced through three hours (POST /_emulator/clock, with fanout's) sees
    at most 4 refused calls per region: the first, then probes at least a minute apart and
    growing (15 min, 30 min, 1 h)."""
    regions = ("cn-hangzhou", "cn-beijing")
    async with simulation(tmp_path, **FLEET, regions=regions, daily_quota=5) as sim:
        await sim.clock.advance_both(_after_quota_day_starts(sim.clock.time()))
        for region in regions:
            await spend_elsewhere(sim.emulator.url, region, 5, sim.clock)
        start = sim.clock.time()
        targets = [t for region in regions for t in fleet_targets(sim.emulator, region, 4)]
        with anyio.CancelScope() as scope:
            sim.clock.stop_at(start + 3 * 3600, scope)
            await sim.run(
                targets,
                wait_for_quota=True,
                settings=sim.settings(batch_size=1),
                spec=CommandSpec(DEMO_COMMAND_NAME),  # by name: each region has its own CommandId
                source=CommandNameSource(DEMO_COMMAND_NAME),
            )
        state = sim.emulator.snapshot()
        store = open_ledger(str(sim.ledger))
        refusals = store.quota_refusals(DEMO.access_key_id)
        store.close()
    for region in regions:
        assert 2 <= refused_invokes(state, region) <= 4
        times = sorted(r.at for r in refusals if r.region == region)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= 60 for gap in gaps), gaps
        assert gaps == sorted(gaps), gaps
        assert all(not r.explained for r in refusals if r.region == region)
    assert sim.clock.time() <= start + 3 * 3600


async def test_a_refused_attempt_uses_no_quota_and_a_raised_limit_is_used(tmp_path: Path) -> None:
    """After a refusal the ledger counts only accepted calls; when the account's limit is
    raised meanwhile (re-read after the wait), the probe passes and the region finishes."""
    async with simulation(tmp_path, **FLEET, daily_quota=3) as sim:
        await sim.clock.advance_both(_after_quota_day_starts(sim.clock.time()))
        await spend_elsewhere(sim.emulator.url, REGION, 2, sim.clock)
        targets = fleet_targets(sim.emulator, REGION, 4)
        first = await sim.run(targets, settings=sim.settings(batch_size=1), wait=True)
        assert first.exit_code is ExitCode.QUOTA
        assert first.quota[REGION]["code"] == "Invocation.ExceedQuota"
        store = open_ledger(str(sim.ledger))
        used = store.quota_used(DEMO.access_key_id, 0.0)[REGION][0]
        store.close()
        assert used == 1  # the refused attempt gave its reservation back
        sim.emulator.world.config.__dict__["daily_quota"] = 10  # a quota raised by a ticket
        again = await sim.resume(first.run_id, wait_for_quota=True, wait=True)
    assert again.exit_code is ExitCode.OK, again.message
    assert again.instances == {"succeeded": 4}


async def test_a_permission_refusal_of_the_quota_read_falls_back_with_one_warning(
    tmp_path: Path,
) -> None:
    """Without ecs:DescribeAccountAttributes the run uses the configured fallback (5000) and
    says so once; it still runs."""
    async with simulation(
        tmp_path, **FLEET, denied_actions=frozenset({"DescribeAccountAttributes"})
    ) as sim:
        outcome = await sim.run(fleet_targets(sim.emulator, REGION, 3))
    assert outcome.exit_code is ExitCode.OK
    (limits,) = sim.kinds("quota_limits")
    assert limits["regions"][REGION]["source"] == "default"
    assert limits["regions"][REGION]["limit"] == 5000
    assert "Forbidden.RAM" in str(limits["regions"][REGION]["error"])


def test_an_exceed_quota_is_classified_as_quota() -> None:
    """The API's refusal maps to the QUOTA kind (errors.classify_api_error)."""
    err = ApiError(code="Invocation.ExceedQuota", message="m", http_status=403)
    assert err.kind.value == "quota"


def test_a_configured_daily_quota_overrides_the_api_and_is_shown(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """--daily-quota overrides the account's limit; plan shows it as configured, with what the
    API says beside it, and the run's first lines say so too."""
    emu = emulator(**FLEET, daily_quota=5)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET)[:4])
    plan = cli.run(
        "plan", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--daily-quota", "3",
        "--json",
    )  # fmt: skip
    region = json.loads(plan.stdout)["regions"][REGION]
    assert (region["daily_quota"], region["quota_source"], region["api_daily_quota"]) == (
        3,
        "configured",
        5,
    )
    text = cli.run(
        "plan", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--daily-quota", "3"
    )
    assert "daily quota: 3 (configured; the API says 5)" in text.stdout
    done = _run(cli, tmp_path, 4, "--daily-quota", "3")
    assert "cn-hangzhou 3 (configured; the API says 5)" in done.stderr


def test_an_unreadable_limit_is_one_warning_for_every_region(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Without ecs:DescribeAccountAttributes, `fanout run` over two regions warns once (naming
    both regions, the permission and --daily-quota), uses 5000 in each and says so, and runs."""
    fleet = {**FLEET, "regions": ("cn-beijing", REGION)}
    emu = emulator(**fleet, denied_actions=frozenset({"DescribeAccountAttributes"}))
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fleet)[:40:4])
    done = cli.run("run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes")
    assert done.returncode == 0, done.stderr
    warnings = [ln for ln in done.stderr.splitlines() if "daily quota not readable" in ln]
    assert len(warnings) == 1, done.stderr
    warning = json.loads(warnings[0])
    assert (warning["regions"], warning["using"]) == (["cn-beijing", REGION], 5000)
    assert "ecs:DescribeAccountAttributes" in warning["error"]
    assert "--daily-quota" in warning["hint"]
    assert f"{REGION} 5000 (default: the API's could not be read)" in done.stderr


def test_only_the_calls_in_flight_are_refused_at_full_concurrency(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Without --concurrency 1: the account has 3 of its 20 left (others spent 17), answers take
    200 ms and a region sends 4 calls at once. The calls already in flight when the first
    refusal comes back may be refused too (fanout cannot know what others spent), but nothing
    is sent after it: at most 4 refused calls, not one per remaining target; exit 4."""
    fleet = {**FLEET, "instances_per_region": 60}
    emu = emulator(**fleet, daily_quota=20, latency_ms=200)
    anyio.run(spend_elsewhere, emu.url, REGION, 17)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fleet)[20:50])
    done = cli.run(
        "run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--batch-size", "1",
        "--rate", "0", "--yes", env={**cli.env, "FANOUT_REGION_CONCURRENCY": "4"},
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    state = emu.snapshot()
    assert len(state["invocations"]) == 20  # 17 elsewhere, 3 by fanout
    assert 1 <= refused_invokes(state) <= 4

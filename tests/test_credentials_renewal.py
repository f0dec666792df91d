"""Credentials that last a rollout of days (issue 14): the ECS instance RAM role from the
metadata service (served by the emulator on 127.0.0.1), renewed before its STS token expires
- no call refused for it; when renewal is denied, a clear halt (exit 6) before any refused
call, and `resume` goes on once credentials can be had again. Simulated time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.renewal import EcsRamRole
from fanout.emulator import DEMO_COMMAND_ID, DEMO_COMMAND_NAME, EmulatorThread
from fanout.errors import ExitCode
from fanout.ledger import RunState
from tests.conftest import (
    Fanout,
    control,
    fleet_ids,
    invoked_instances,
    wait_for,
    write_targets,
)
from tests.simulation import fleet_targets, simulation

REGION = "cn-hangzhou"
ROLE = "deployer"
TTL_S = 1800.0  # the emulator's STS lifetime: the rollout lasts longer than one token
FLEET: dict[str, Any] = {
    "instances_per_region": 150,
    "stopped_fraction": 0,
    "classic_fraction": 0,
    "agent_offline_fraction": 0,
    "ram_role": ROLE,
    "sts_ttl_s": TTL_S,
    "exec_seconds": (2400.0, 4000.0),  # executions outlive the first token (and the second)
}
LONG = CommandSpec(DEMO_COMMAND_ID, timeout_s=7200)


def refused_for_credentials(snapshot: dict[str, Any]) -> dict[str, int]:
    """Requests the emulator refused for their credentials (before any region was known)."""
    return dict(snapshot["rejected"])


async def test_role_credentials_are_renewed_before_they_expire(tmp_path: Path) -> None:
    """A rollout of more than two token lifetimes on the instance role's credentials finishes
    with every instance final; the credentials were renewed (several fetches, several STS key
    ids used) and the emulator refused no request for them."""
    async with simulation(tmp_path, **FLEET) as sim:
        role = EcsRamRole(ROLE, sim.emulator.url)
        settings = sim.settings(poll_interval_s=30.0, batch_size=25)
        outcome = await sim.run(
            fleet_targets(sim.emulator, REGION), credentials=role, spec=LONG, wait=True,
            settings=settings,
        )  # fmt: skip
        state = sim.emulator.snapshot()
        issued = len(sim.emulator.world.metadata._issued)
    assert outcome.exit_code is ExitCode.OK, outcome.message
    assert outcome.instances == {"succeeded": 150}
    assert refused_for_credentials(state) == {}
    assert state["metadata"]["credential_fetches"] >= 3
    assert issued >= 3  # more than two token lifetimes: at least three tokens


async def test_denied_renewal_halts_with_exit_6_and_resume_goes_on(tmp_path: Path) -> None:
    """With renewal denied (the role detached), the run stops before its token expires: exit 6
    naming the credentials' source, no request refused for them; once the role serves
    credentials again, `resume` finishes the rollout (nothing invoked twice)."""
    async with simulation(tmp_path, **FLEET) as sim:
        role = EcsRamRole(ROLE, sim.emulator.url)
        options = ClientOptions(endpoint=sim.emulator.url)
        async with EcsClient(role, options, clock=sim.clock) as client:
            first = await client.credentials()  # the token the run starts with
        sim.emulator.world.metadata.denied = True
        settings = sim.settings(poll_interval_s=30.0, batch_size=25)
        targets = fleet_targets(sim.emulator, REGION)
        outcome = await sim.run(targets, credentials=role, spec=LONG, wait=True, settings=settings)
        assert outcome.exit_code is ExitCode.FATAL_API
        assert outcome.state is RunState.FATAL
        assert "could not be renewed" in outcome.message
        assert "ECS instance RAM role deployer" in outcome.message
        assert first.expiration is not None
        assert sim.clock.time() < first.expiration  # it stopped before the token ran out
        before = sim.emulator.snapshot()
        assert refused_for_credentials(before) == {}
        # Mid-run: the first token carried calls before renewal was needed (and denied).
        assert before["invocations"], "the run stopped before sending anything"
        assert before["metadata"]["credential_fetches"] >= 1
        sim.emulator.world.metadata.denied = False
        again = await sim.resume(outcome.run_id, credentials=role, wait=True, settings=settings)
        state = sim.emulator.snapshot()
    assert again.exit_code is ExitCode.OK, again.message
    assert again.instances == {"succeeded": 150}
    invoked = [iid for inv in state["invocations"] for iid in inv["instance_ids"]]
    assert len(invoked) == len(set(invoked)) == 150
    assert refused_for_credentials(state) == {}


def test_the_command_line_on_the_instance_role_halts_and_resumes(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    tmp_path: Path,
) -> None:
    """`fanout run` with ALIBABA_CLOUD_ECS_METADATA (the role from the emulated metadata
    service, tokens of 40 s, renewed at half their life, executions of 25-30 s): the role
    detached mid-run (`POST /_emulator/metadata {"deny": true}`) once the batch was accepted
    stops the run with exit 6, naming the role, with no request refused for its credentials;
    with the role back, `fanout resume` collects every result, nothing invoked twice."""
    fleet: dict[str, Any] = {**FLEET, "instances_per_region": 10, "regions": (REGION,)}
    emu = emulator(**{**fleet, "sts_ttl_s": 40.0, "exec_seconds": (25.0, 30.0)})
    cli = fanout_cli(emu)
    env = {k: v for k, v in cli.env.items() if not k.startswith("ALIBABA_CLOUD_ACCESS_KEY")}
    env |= {"ALIBABA_CLOUD_ECS_METADATA": ROLE, "FANOUT_METADATA_ENDPOINT": emu.url}
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fleet))
    proc = cli.start(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes", env=env
    )
    wait_for(lambda: len(emu.snapshot()["invocations"]) == 1, timeout_s=60)
    control(emu, "metadata", {"deny": True})
    assert proc.wait(timeout=120) == 6
    assert proc.stdout is not None
    assert proc.stderr is not None
    run_id = proc.stdout.readline().strip()
    last = proc.stderr.read().splitlines()[-1]
    assert f"ECS instance RAM role {ROLE}" in last
    assert "could not be renewed" in last
    assert refused_for_credentials(emu.snapshot()) == {}
    control(emu, "metadata", {"deny": False})
    again = cli.run("resume", run_id, "--yes", env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    state = emu.snapshot()
    assert refused_for_credentials(state) == {}
    assert set(invoked_instances(state).values()) == {1}
    assert len(invoked_instances(state)) == 10
    assert state["metadata"]["credential_fetches"] >= 2  # the run's, the resume's (none denied)

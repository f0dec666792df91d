"""Every EcsClient method against the project's emulator (real HTTP on 127.0.0.1, both signatures)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Literal

import anyio
import pytest

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.clock import FakeClock
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    Emulator,
    EmulatorConfig,
    running_emulator,
)
from fanout.errors import ApiError, CallKind, TransportError

DEMO = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, source="demo")
REGION = "cn-hangzhou"
CONFIG = EmulatorConfig(
    regions=(REGION, "cn-shanghai"),
    instances_per_region=12,
    stopped_fraction=0.25,
    agent_offline_fraction=0.25,
    seed=7,
)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A small two-region emulator with some stopped and some agent-offline instances."""
    async with running_emulator(CONFIG) as running:
        yield running


def _options(emulator: Emulator, signature: Literal["v3", "rpc"] = "v3") -> ClientOptions:
    return ClientOptions(endpoint=emulator.url, signature=signature, retry_base_delay_s=0.01)


async def _usable(client: EcsClient) -> list[str]:
    """Running VPC instances with an online agent, found with the preflight calls."""
    instances = await client.describe_instances(REGION)
    running = [i.instance_id for i in instances if i.status == "Running"]
    statuses = await client.describe_cloud_assistant_status(REGION, running)
    online = {s.instance_id for s in statuses if s.online}
    return [i for i in running if i in online]


@pytest.mark.parametrize("signature", ["v3", "rpc"])
async def test_every_method(emulator: Emulator, signature: Literal["v3", "rpc"]) -> None:
    """Preflight, invoke, results, commands, stop and attributes all work end to end."""
    async with EcsClient(DEMO, _options(emulator, signature)) as client:
        instances = await client.describe_instances(REGION)
        assert len(instances) == 12
        assert {i.region for i in instances} == {REGION}
        assert {i.status for i in instances} == {"Running", "Stopped"}
        by_id = await client.describe_instances(REGION, instance_ids=[instances[0].instance_id])
        assert by_id == [instances[0]]
        statuses = await client.describe_cloud_assistant_status(
            REGION, [i.instance_id for i in instances]
        )
        assert {s.instance_id for s in statuses} == {i.instance_id for i in instances}
        assert any(not s.online for s in statuses)
        usable = await _usable(client)
        assert usable

        (demo,) = await client.describe_commands(REGION, command_id=DEMO_COMMAND_ID)
        assert demo.command_id == DEMO_COMMAND_ID
        assert demo.content.startswith("#!/bin/bash")

        result = await client.invoke_command(
            REGION,
            CommandSpec(DEMO_COMMAND_ID, timeout_s=60),
            usable,
            client_token=f"tok-{signature}",
        )
        assert result.invoke_id.startswith("t-")
        assert result.request_id

        results = await client.describe_invocation_results(
            REGION, invoke_id=result.invoke_id, max_results=2
        )
        assert sorted(r.instance_id for r in results) == sorted(usable)
        assert all(r.invoke_id == result.invoke_id for r in results)

        (invocation,) = await client.describe_invocations(
            REGION, invoke_id=result.invoke_id, include_output=True
        )
        assert invocation.command_id == DEMO_COMMAND_ID
        assert sorted(i.instance_id for i in invocation.instances) == sorted(usable)

        command_id = await client.create_command(
            REGION, name="greet", content="echo {{name}} é", enable_parameter=True, timeout_s=30
        )
        (created,) = await client.describe_commands(REGION, command_id=command_id)
        assert (created.content, created.parameter_names, created.timeout_s) == (
            "echo {{name}} é",
            ("name",),
            30,
        )
        assert await client.stop_invocation(REGION, result.invoke_id, usable)
        attributes = await client.describe_account_attributes(REGION, ["max-axt-invocation-daily"])
        assert attributes == {"max-axt-invocation-daily": ["5000"]}


async def test_results_reach_a_final_state(emulator: Emulator) -> None:
    """An invocation's per-instance results become Success with exit code 0 and output."""
    async with EcsClient(DEMO, _options(emulator)) as client:
        usable = await _usable(client)
        result = await client.invoke_command(
            REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="t1"
        )
        with anyio.fail_after(5):
            while True:
                results = await client.describe_invocation_results(
                    REGION, invoke_id=result.invoke_id
                )
                if results and all(r.status == "Success" for r in results):
                    break
                await anyio.sleep(0.05)
    assert {r.exit_code for r in results} == {0}
    assert all(r.instance_id in r.output for r in results)
    assert all(r.finish_time for r in results)


async def test_client_token_is_idempotent(emulator: Emulator) -> None:
    """The same ClientToken twice gives the same InvokeId and runs the instances once."""
    async with EcsClient(DEMO, _options(emulator)) as client:
        usable = await _usable(client)
        first = await client.invoke_command(
            REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="same"
        )
        again = await client.invoke_command(
            REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="same"
        )
    assert first.invoke_id == again.invoke_id
    state = emulator.snapshot()
    assert len(state["invocations"]) == 1
    assert state["regions"][REGION]["quota_used"] == 1


async def test_api_errors_from_the_emulator(emulator: Emulator) -> None:
    """An unknown CommandId is FATAL; a wrong secret is a FATAL SignatureDoesNotMatch."""
    async with EcsClient(DEMO, _options(emulator)) as client:
        usable = await _usable(client)
        with pytest.raises(ApiError) as info:
            await client.invoke_command(
                REGION, CommandSpec("c-doesnotexist00000"), usable, client_token="x"
            )
    assert info.value.code == "InvalidCmdId.NotFound"
    assert info.value.kind is CallKind.FATAL
    wrong = Credentials(DEMO_ACCESS_KEY_ID, "wrong-secret", source="test")
    signatures: tuple[Literal["v3", "rpc"], ...] = ("v3", "rpc")
    for signature in signatures:
        async with EcsClient(wrong, _options(emulator, signature)) as client:
            with pytest.raises(ApiError) as info:
                await client.invoke_command(
                    REGION,
                    CommandSpec(DEMO_COMMAND_ID, parameters={"pw": "hunter2"}),
                    usable,
                    client_token="y",
                )
        assert info.value.code == "SignatureDoesNotMatch"
        assert info.value.kind is CallKind.FATAL
        assert "hunter2" not in str(info.value)
        assert "wrong-secret" not in str(info.value)


async def test_invoke_is_sent_once_on_injected_faults() -> None:
    """With every InvokeCommand failing, the client sends it once; Describe calls are retried."""
    config = replace(CONFIG, error_rate=1.0, fault_actions=frozenset({"InvokeCommand"}))
    async with running_emulator(config) as emulator:
        async with EcsClient(DEMO, _options(emulator)) as client:
            usable = await _usable(client)
            with pytest.raises(ApiError) as info:
                await client.invoke_command(
                    REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="f"
                )
        assert info.value.code == "InternalError.Dispatch"
        assert info.value.kind is CallKind.RETRYABLE
        assert emulator.snapshot()["regions"][REGION]["calls"]["InvokeCommand"] == 1


async def test_dropped_connection_is_ambiguous() -> None:
    """An emulator that applies InvokeCommand and then drops the answer gives AMBIGUOUS."""
    config = replace(CONFIG, accept_then_drop_rate=1.0)
    async with running_emulator(config) as emulator:
        async with EcsClient(DEMO, _options(emulator)) as client:
            usable = await _usable(client)
            with pytest.raises(TransportError) as info:
                await client.invoke_command(
                    REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="d"
                )
        assert info.value.kind is CallKind.AMBIGUOUS
        assert len(emulator.snapshot()["invocations"]) == 1


async def test_tls_emulator_with_its_certificate() -> None:
    """Against the emulator's HTTPS, the client trusts its certificate through ca_bundle."""
    async with running_emulator(replace(CONFIG, tls=True)) as emulator:
        assert emulator.url.startswith("https://")
        assert emulator.cert_path is not None
        options = replace(_options(emulator), ca_bundle=emulator.cert_path)
        async with EcsClient(DEMO, options) as client:
            assert len(await client.describe_instances(REGION)) == 12


@pytest.mark.parametrize(("throttle", "attempts"), [(True, 10), (False, 4)])
async def test_throttled_reads_retry_longer(throttle: bool, attempts: int) -> None:
    """A throttled Describe is tried 10 times, its waits adding up past a whole throttled minute
    (facts 6.2, 10 [9]); a 500 only 4 times, quickly. On the fake clock: no real waiting."""
    config = replace(
        CONFIG,
        fault_actions=frozenset({"DescribeInstances"}),
        throttle_rate=1.0 if throttle else 0.0,
        error_rate=0.0 if throttle else 1.0,
    )
    clock = FakeClock()
    async with running_emulator(config) as emulator:
        options = replace(_options(emulator), retry_base_delay_s=0.001)
        async with EcsClient(DEMO, options, clock=clock) as client:
            with pytest.raises(ApiError):
                await client.describe_instances(REGION)
        calls = emulator.snapshot()["regions"][REGION]["calls"]["DescribeInstances"]
    assert calls == attempts
    if throttle:
        assert sum(clock.sleeps) > 60
    else:
        assert sum(clock.sleeps) < 1

"""InvokeCommand: every rule (S1-S11, P1-P6), every error code, idempotency and quota."""

from __future__ import annotations

import asyncio
import json

import pytest

from fanout.emulator import DEMO_COMMAND_ID, DEMO_PARAM_COMMAND_ID, Emulator, demo_command_id

from .conftest import MakeApi
from .helpers import REGION, Api, calls, instance_params, settled


def region_ids(emulator: Emulator, region: str = REGION) -> list[str]:
    """The instance ids of a region, in fleet order."""
    return [inst.instance_id for inst in emulator.world.fleet.regions[region].instances]


def invoke_params(
    ids: list[str], command_id: str = DEMO_COMMAND_ID, **extra: str
) -> dict[str, str]:
    """InvokeCommand parameters for these instances."""
    return {"CommandId": command_id, **instance_params(ids), **extra}


_PARAMS_OK = json.dumps({"name": "web", "version": "1.2"})

# (extra parameters, command, HTTP status, Code) — the instance list is always valid.
_ERROR_CASES = [
    ({"Timed": "true"}, DEMO_COMMAND_ID, 403, "MissingParam.Frequency"),
    ({"Timed": "True"}, DEMO_COMMAND_ID, 403, "MissingParam.Frequency"),
    ({"RepeatMode": "Period"}, DEMO_COMMAND_ID, 403, "MissingParam.Frequency"),
    ({"Timed": "true", "Frequency": "not a cron"}, DEMO_COMMAND_ID, 400, "InvalidParam.Frequency"),
    ({"Timed": "true", "Frequency": "* * * * * *"}, DEMO_COMMAND_ID, 400, "InvalidParam.Frequency"),
    ({"Timed": "true", "Frequency": "0/5 * * * * *"}, DEMO_COMMAND_ID, 400, "InvalidParam.Frequency"),
    ({"Timed": "true", "Frequency": "rate(30s)"}, DEMO_COMMAND_ID, 400, "InvalidParam.Frequency"),
    ({"Timed": "true", "Frequency": "rate(8d)"}, DEMO_COMMAND_ID, 400, "InvalidParam.Frequency"),
    ({"Timed": "true", "Frequency": "0 0 25 * * *"}, DEMO_COMMAND_ID, 400, "InvalidParam.Frequency"),
    ({"Timed": "true", "Frequency": "0 0 1 * * * Mars/Olympus"}, DEMO_COMMAND_ID, 400, "InvalidParam.Frequency"),
    ({"Timed": "true", "Frequency": "at(2027-02-30 10:00:00)"}, DEMO_COMMAND_ID, 400, "InvalidParam.Frequency"),
    ({"RepeatMode": "Once", "Frequency": "rate(1s)"}, DEMO_COMMAND_ID, 400, "InvalidParam.Frequency"),
    ({"RepeatMode": "Sometimes"}, DEMO_COMMAND_ID, 404, "InvalidRepeatMode.NotFound"),
    ({"Parameters": "{not json"}, DEMO_PARAM_COMMAND_ID, 400, "InvalidParameter.Parameters"),
    ({"Parameters": '["name"]'}, DEMO_PARAM_COMMAND_ID, 400, "InvalidParameter.Parameters"),
    ({"Parameters": '{"name": "x"}'}, DEMO_COMMAND_ID, 404, "Parameter.Disabled"),
    ({}, DEMO_PARAM_COMMAND_ID, 400, "Parameter.MissingValue"),
    ({"Parameters": json.dumps({f"k{i}": "v" for i in range(11)})}, DEMO_PARAM_COMMAND_ID, 403, "ParameterCount.ExceedLimit"),
    ({"Parameters": '{"": "x"}'}, DEMO_PARAM_COMMAND_ID, 400, "InvalidParameter.Parameters"),
    ({"Parameters": json.dumps({"n" * 65: "x"})}, DEMO_PARAM_COMMAND_ID, 403, "ParameterKey.ExceedLimit"),
    ({"Parameters": '{"name": "a", "name": "b"}'}, DEMO_PARAM_COMMAND_ID, 403, "ParameterKey.Duplicate"),
    ({"Parameters": '{"name": "a", "colour": "b"}'}, DEMO_PARAM_COMMAND_ID, 403, "Parameter.NotMatched"),
    ({"Parameters": '{"name": {"nested": 1}}'}, DEMO_PARAM_COMMAND_ID, 403, "ParameterType.NotSupported"),
    ({"Parameters": json.dumps({"name": "x" * 15000})}, DEMO_PARAM_COMMAND_ID, 403, "CmdContent.ExceedLimit"),
    ({"Username": "u" * 256}, DEMO_COMMAND_ID, 403, "Username.ExceedLimit"),
    ({"WorkingDir": "/" * 201}, DEMO_COMMAND_ID, 400, "InvalidParameter.WorkingDir"),
    ({"WindowsPasswordName": "w" * 256}, DEMO_COMMAND_ID, 403, "WindowsPasswordName.ExceedLimit"),
    ({"TerminationMode": "Kill"}, DEMO_COMMAND_ID, 404, "InvalidTerminationMode.NotFound"),
    ({"ContainerId": "not-a-container"}, DEMO_COMMAND_ID, 400, "InvalidContainerId.Malformed"),
    ({"Launcher": "x" * 1025}, DEMO_COMMAND_ID, 403, "InvalidLauncher.LengthLimitExceeded"),
    ({"Timeout": "5"}, DEMO_COMMAND_ID, 400, "InvalidParameter"),
    ({"CommandId": "c-doesnotexist00000"}, DEMO_COMMAND_ID, 404, "InvalidCmdId.NotFound"),
    ({"CommandId": ""}, DEMO_COMMAND_ID, 400, "MissingParameter"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "command_id", "status", "code"), _ERROR_CASES)
async def test_invoke_error_codes(
    emu_api: tuple[Emulator, Api], extra: dict[str, str], command_id: str, status: int, code: str
) -> None:
    """Each invalid request gets its documented code and HTTP status, costs quota, creates nothing."""
    emulator, api = emu_api
    params = invoke_params(region_ids(emulator)[:2], command_id)
    params.update(extra)
    reply = await api.error("InvokeCommand", params)
    assert (reply.status, reply.code) == (status, code), reply.text
    state = emulator.snapshot()
    assert state["invocations"] == []
    assert state["regions"][REGION]["quota_used"] == 1  # every evaluated call costs quota


async def test_missing_instances(api: Api) -> None:
    """No InstanceId.N is MissingParam.InstanceId (400)."""
    reply = await api.error("InvokeCommand", {"CommandId": DEMO_COMMAND_ID})
    assert (reply.status, reply.code) == (400, "MissingParam.InstanceId")


async def test_too_many_instances(make_api: MakeApi) -> None:
    """51 instances (over max_instances_per_call=50) is InstanceIds.ExceedLimit (403); 50 is fine."""
    emulator, api = await make_api(instances_per_region=60)
    ids = region_ids(emulator)
    reply = await api.error("InvokeCommand", invoke_params(ids[:51]))
    assert (reply.status, reply.code) == (403, "InstanceIds.ExceedLimit")
    await api.invoke(ids[:50], DEMO_COMMAND_ID)


async def test_unknown_instance_fails_whole_call(emu_api: tuple[Emulator, Api]) -> None:
    """An id not in the region is InvalidInstance.NotFound (404), naming it; nothing runs (S9)."""
    emulator, api = emu_api
    ids = [*region_ids(emulator)[:3], "i-doesnotexist000000000"]
    reply = await api.error("InvokeCommand", invoke_params(ids))
    assert (reply.status, reply.code) == (404, "InvalidInstance.NotFound")
    assert "i-doesnotexist000000000" in reply.body["Message"]
    assert emulator.snapshot()["invocations"] == []


async def test_instance_of_other_region_is_not_found(make_api: MakeApi) -> None:
    """An instance of another region does not exist in this one; ids of regions differ."""
    emulator, api = await make_api(regions=("cn-hangzhou", "cn-shanghai"), instances_per_region=5)
    other = region_ids(emulator, "cn-shanghai")
    assert not set(other) & set(region_ids(emulator))
    reply = await api.error("InvokeCommand", invoke_params(other[:1]))
    assert reply.code == "InvalidInstance.NotFound"


async def test_s9_stopped_classic_and_offline_in_one_batch(make_api: MakeApi) -> None:
    """A stopped, a classic and an agent-offline instance fail the call as a whole, each named."""
    emulator, api = await make_api(instances_per_region=20, classic_fraction=0.05)
    fleet = emulator.world.fleet.regions[REGION].instances
    classic = next(i.instance_id for i in fleet if i.network == "classic")
    vpc = [i.instance_id for i in fleet if i.network == "vpc"]
    stopped, offline, healthy = vpc[0], vpc[1], vpc[2:6]
    await api.control("instances", {"instance_ids": [stopped], "status": "Stopped"})
    await api.control("instances", {"instance_ids": [offline], "agent_online": False})
    reply = await api.error("InvokeCommand", invoke_params([*healthy, stopped, classic, offline]))
    assert (reply.status, reply.code) == (400, "InvalidInstance.NotMatch")
    message = reply.body["Message"]
    assert f"{stopped}: InstanceNotRunning" in message
    assert f"{classic}: ClassicNetwork" in message
    assert f"{offline}: ClientNotOnline" in message
    assert not any(h in message for h in healthy)
    assert emulator.snapshot()["invocations"] == []
    await api.invoke(healthy, DEMO_COMMAND_ID)


async def test_accepted_invocation_is_recorded(emu_api: tuple[Emulator, Api]) -> None:
    """An accepted call returns a `t-` + 30 hex InvokeId and appears once in the state."""
    emulator, api = emu_api
    ids = region_ids(emulator)[:3]
    invoke_id = await api.invoke(ids, DEMO_COMMAND_ID, ClientToken="tok-1")
    assert invoke_id.startswith("t-")
    assert len(invoke_id) == 32
    assert all(c in "0123456789abcdef" for c in invoke_id[2:])
    (record,) = emulator.snapshot()["invocations"]
    assert record["invoke_id"] == invoke_id
    assert record["instance_ids"] == ids
    assert record["client_token"] == "tok-1"
    assert record["command_id"] == DEMO_COMMAND_ID
    assert record["created"].endswith("Z")
    assert len(record["created"]) == len("2026-11-28T06:00:00.123Z")


async def test_parameters_fill_undefined_names_with_empty_string(
    emu_api: tuple[Emulator, Api],
) -> None:
    """P5: a defined parameter that is not passed is recorded as the empty string."""
    emulator, api = emu_api
    await api.invoke(region_ids(emulator)[:1], DEMO_PARAM_COMMAND_ID, Parameters='{"name": "web"}')
    (record,) = emulator.snapshot()["invocations"]
    assert record["parameters"] == {"name": "web", "version": ""}


async def test_valid_frequencies_are_accepted(emu_api: tuple[Emulator, Api]) -> None:
    """Cron with seconds, year and time zone, rate() and at() are all accepted as periodic."""
    emulator, api = emu_api
    ids = region_ids(emulator)[:1]
    for frequency in (
        "0 */20 * * * *",
        "0 15 10 ? * MON-FRI",
        "0 0 12 L * ? 2099 Asia/Shanghai",
        "30 0 8 ? * 5#2 GMT+8",
        "rate(5m)",
        "at(2099-01-01 10:00:00 Asia/Shanghai)",
    ):
        await api.invoke(ids, DEMO_COMMAND_ID, Timed="true", Frequency=frequency)
    modes = {r["repeat_mode"] for r in emulator.snapshot()["invocations"]}
    assert modes == {"Period"}


async def test_client_token_malformed(emu_api: tuple[Emulator, Api]) -> None:
    """A non-ASCII or 65-character ClientToken is InvalidClientToken.Malformed and costs no quota."""
    emulator, api = emu_api
    ids = region_ids(emulator)[:1]
    for token in ("tök", "t" * 65):
        reply = await api.error("InvokeCommand", invoke_params(ids, ClientToken=token))
        assert (reply.status, reply.code) == (400, "InvalidClientToken.Malformed")
    assert emulator.snapshot()["regions"][REGION]["quota_used"] == 0
    await api.invoke(ids, DEMO_COMMAND_ID, ClientToken="t" * 64)


async def test_same_client_token_returns_original_invoke_id(emu_api: tuple[Emulator, Api]) -> None:
    """A repeat with the same token and parameters (JSON compared parsed) creates nothing new."""
    emulator, api = emu_api
    ids = region_ids(emulator)[:3]
    first = await api.invoke(ids, DEMO_PARAM_COMMAND_ID, ClientToken="batch-1",
                             Parameters='{"name": "web", "version": "1"}', Timed="false")  # fmt: skip
    again = await api.invoke(ids, DEMO_PARAM_COMMAND_ID, ClientToken="batch-1",
                             Parameters='{"version":"1","name":"web"}', Timed="False")  # fmt: skip
    assert again == first
    state = emulator.snapshot()
    assert len(state["invocations"]) == 1
    assert state["regions"][REGION]["quota_used"] == 1
    assert state["regions"][REGION]["calls"]["InvokeCommand"] == 2


async def test_same_token_different_parameters_is_mismatch(emu_api: tuple[Emulator, Api]) -> None:
    """A token reused with other instances or parameters is IdempotentParameterMismatch (403)."""
    emulator, api = emu_api
    ids = region_ids(emulator)
    await api.invoke(ids[:2], DEMO_COMMAND_ID, ClientToken="batch-2")
    for params in (
        invoke_params(ids[:3], ClientToken="batch-2"),
        invoke_params(ids[:2], ClientToken="batch-2", Timeout="120"),
        invoke_params(ids[1::-1], ClientToken="batch-2"),
    ):
        reply = await api.error("InvokeCommand", params)
        assert (reply.status, reply.code) == (403, "IdempotentParameterMismatch")
    assert len(emulator.snapshot()["invocations"]) == 1


async def test_same_token_in_other_region_is_independent(make_api: MakeApi) -> None:
    """Tokens are remembered per region."""
    emulator, api = await make_api(regions=("cn-hangzhou", "cn-beijing"), instances_per_region=3)
    a = await api.invoke(region_ids(emulator)[:1], DEMO_COMMAND_ID, ClientToken="same")
    beijing_ids = region_ids(emulator, "cn-beijing")[:1]
    params = invoke_params(beijing_ids, demo_command_id("cn-beijing"), ClientToken="same")
    b = await api.ok("InvokeCommand", params, region="cn-beijing")
    assert a != b["InvokeId"]


async def test_concurrent_same_token_is_idempotent_processing(make_api: MakeApi) -> None:
    """While the first request with a token is in flight, a repeat is IdempotentProcessing (403)."""
    # 400 ms of latency: InvokeCommand waits 200 ms before its action, then is 200 ms in flight.
    emulator, api = await make_api(latency_ms=400)
    await api.control("clock", {"freeze": True})  # the requests move only as the test says
    params = invoke_params(region_ids(emulator)[:2], ClientToken="in-flight")
    first = asyncio.create_task(api.call("InvokeCommand", params))
    await settled(lambda: calls(emulator, "InvokeCommand") == 1)
    await api.control("clock", {"advance_s": 0.1})
    second = asyncio.create_task(api.call("InvokeCommand", params))
    await settled(lambda: calls(emulator, "InvokeCommand") == 2)
    await api.control("clock", {"advance_s": 0.15})  # 0.25 s: the first is in flight
    await settled(lambda: (REGION, "in-flight") in emulator.world.tokens)
    await api.control("clock", {"advance_s": 0.1})  # 0.35 s: the second reaches its action
    repeat = await second
    assert (repeat.status, repeat.code) == (403, "IdempotentProcessing")
    assert not first.done()
    await api.control("clock", {"advance_s": 0.15})  # 0.5 s: the first is done
    done = await first
    assert done.status == 200
    third = asyncio.create_task(api.ok("InvokeCommand", params))
    await settled(lambda: calls(emulator, "InvokeCommand") == 3)
    await api.control("clock", {"advance_s": 0.5})
    assert (await third)["InvokeId"] == done.body["InvokeId"]
    assert len(emulator.snapshot()["invocations"]) == 1


async def test_failed_request_does_not_remember_token(emu_api: tuple[Emulator, Api]) -> None:
    """A token whose request failed validation can be used again for a valid request."""
    emulator, api = emu_api
    ids = region_ids(emulator)[:1]
    reply = await api.error(
        "InvokeCommand", invoke_params(ids, ClientToken="retry", RepeatMode="Bad")
    )
    assert reply.code == "InvalidRepeatMode.NotFound"
    await api.invoke(ids, DEMO_COMMAND_ID, ClientToken="retry")


async def test_quota_reached(make_api: MakeApi) -> None:
    """At the daily quota InvokeCommand is Invocation.ExceedQuota (403); repeats of a token still work."""
    emulator, api = await make_api(daily_quota=2)
    ids = region_ids(emulator)
    first = await api.invoke(ids[:1], DEMO_COMMAND_ID, ClientToken="q1")
    reply = await api.error("InvokeCommand", invoke_params(ids[:1], "c-doesnotexist00000"))
    assert reply.code == "InvalidCmdId.NotFound"  # still cost quota
    reply = await api.error("InvokeCommand", invoke_params(ids[1:2]))
    assert (reply.status, reply.code) == (403, "Invocation.ExceedQuota")
    assert (
        reply.body["Message"]
        == "The invocation quota in the current region has been reached for today."
    )
    assert await api.invoke(ids[:1], DEMO_COMMAND_ID, ClientToken="q1") == first
    state = emulator.snapshot()["regions"][REGION]
    assert state["quota_used"] == 2
    assert state["calls"]["InvokeCommand"] == 4


async def test_quota_rolls_over_at_utc8_midnight_and_resets(make_api: MakeApi) -> None:
    """The quota frees up on the next UTC+8 day, and the reset endpoint clears it."""
    emulator, api = await make_api(daily_quota=1)
    ids = region_ids(emulator)
    await api.invoke(ids[:1], DEMO_COMMAND_ID)
    assert (
        await api.error("InvokeCommand", invoke_params(ids[:1]))
    ).code == "Invocation.ExceedQuota"
    await api.control("clock", {"advance_s": 86400})
    await api.invoke(ids[:1], DEMO_COMMAND_ID)
    await api.control("quota/reset", {"region": REGION})
    await api.invoke(ids[:1], DEMO_COMMAND_ID)
    assert emulator.snapshot()["regions"][REGION]["quota_used"] == 1


async def test_dry_run_validates_and_costs_quota(emu_api: tuple[Emulator, Api]) -> None:
    """RepeatMode=DryRun returns an InvokeId, spends quota, runs nothing; errors still apply."""
    emulator, api = emu_api
    ids = region_ids(emulator)
    invoke_id = await api.invoke(ids[:2], DEMO_COMMAND_ID, RepeatMode="DryRun")
    assert invoke_id.startswith("t-")
    await api.control("instances", {"instance_ids": [ids[5]], "status": "Stopped"})
    reply = await api.error("InvokeCommand", invoke_params([ids[5]], RepeatMode="DryRun"))
    assert reply.code == "InvalidInstance.NotMatch"
    state = emulator.snapshot()
    assert state["invocations"] == []
    assert state["regions"][REGION]["dry_runs"] == 1
    assert state["regions"][REGION]["quota_used"] == 2
    body = await api.ok("DescribeInvocations", {"InvokeId": invoke_id})
    assert body["Invocations"]["Invocation"] == []


async def test_content_limit_counts_base64_of_both(make_api: MakeApi) -> None:
    """P4: Base64(content) + Base64(Parameters) at the limit passes, one byte over fails."""
    emulator, api = await make_api(content_limit_bytes=200)
    command = emulator.world.commands.get(REGION, DEMO_PARAM_COMMAND_ID)
    assert command is not None
    room = 200 - len(command.content_b64)
    raw_len = (
        room // 4 * 3
    )  # Base64 of raw_len bytes is exactly `room` characters when room % 4 == 0
    filler = raw_len - len('{"name":""}')
    ok = json.dumps({"name": "x" * filler}, separators=(",", ":"))
    ids = region_ids(emulator)[:1]
    assert room % 4 == 0  # both the limit and a Base64 length are multiples of 4
    await api.invoke(ids, DEMO_PARAM_COMMAND_ID, Parameters=ok)
    too_big = json.dumps({"name": "x" * (filler + 3)}, separators=(",", ":"))
    reply = await api.error(
        "InvokeCommand", invoke_params(ids, DEMO_PARAM_COMMAND_ID, Parameters=too_big)
    )
    assert reply.code == "CmdContent.ExceedLimit"


async def test_quota_is_per_region(make_api: MakeApi) -> None:
    """Each region has its own daily quota."""
    emulator, api = await make_api(
        regions=("cn-hangzhou", "cn-beijing"), instances_per_region=2, daily_quota=1
    )
    await api.invoke(region_ids(emulator)[:1], DEMO_COMMAND_ID)
    beijing = invoke_params(region_ids(emulator, "cn-beijing")[:1], demo_command_id("cn-beijing"))
    await api.ok("InvokeCommand", beijing, region="cn-beijing")
    reply = await api.error("InvokeCommand", beijing, region="cn-beijing")
    assert reply.code == "Invocation.ExceedQuota"
    regions = emulator.snapshot()["regions"]
    assert (regions["cn-hangzhou"]["quota_used"], regions["cn-beijing"]["quota_used"]) == (1, 1)

"""Fault injection (seeded), the QPS limit, latency, dropped connections."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from fanout.emulator import DEMO_COMMAND_ID, Emulator

from .conftest import MakeApi
from .helpers import REGION, calls, instance_params, settled


def first_ids(emulator: Emulator, n: int) -> list[str]:
    """The first `n` instance ids of the default region."""
    return [i.instance_id for i in emulator.world.fleet.regions[REGION].instances[:n]]


async def test_qps_limit_throttles_per_region_and_action(make_api: MakeApi) -> None:
    """Over `qps * window` calls of one action in a window are throttled (HTTP 400, `Throttling`
    as ECS's throttling page names it, facts 10 [9]); other actions are unaffected."""
    emulator, api = await make_api(qps=5, throttle_window_s=1)
    await api.control("clock", {"freeze": True})  # every call in one window
    replies = await asyncio.gather(*(api.call("DescribeInstances") for _ in range(20)))
    throttled = [r for r in replies if r.status != 200]
    assert len(throttled) == 15
    assert all((r.status, r.code) == (400, "Throttling") for r in throttled)
    assert throttled[0].body["Message"] == "Request was denied due to flow control."
    await api.ok("DescribeCommands")
    assert calls(emulator, "DescribeInstances") == 20
    refused = emulator.snapshot()["regions"][REGION]["refused"]
    assert refused == {"DescribeInstances": {"Throttling": 15}}


async def test_throttling_windows_are_a_minute_by_default(make_api: MakeApi) -> None:
    """ECS throttles per API, region and account in one-minute windows: "throttled at minute T,
    callable again at minute T+1" (facts 6.2, 10 [9]): `qps=1` allows 60 calls a minute, the
    61st is refused for the rest of that minute, and the next minute starts afresh."""
    _, api = await make_api(qps=1)
    await api.control("clock", {"freeze": True})
    now = (await api.control("clock", {"advance_s": 0}))["now_s"]
    await api.control("clock", {"advance_s": 60 - now % 60 + 0.5})  # the start of a minute
    replies = [await api.call("DescribeInstances") for _ in range(61)]
    assert [r.status for r in replies] == [200] * 60 + [400]
    await api.control("clock", {"advance_s": 58})
    assert (await api.call("DescribeInstances")).status == 400  # still minute T
    await api.control("clock", {"advance_s": 2})
    await api.ok("DescribeInstances")  # minute T+1


async def test_throttle_code_and_retry_after_are_selectable(make_api: MakeApi) -> None:
    """`throttle_code=Throttling.User` (what older answers and other products use, facts 6.2)
    and `throttle_retry_after` (the header the new SDK maps to its throttling exception, facts
    6.1) give the milliseconds left in the window."""
    _, api = await make_api(qps=1, throttle_code="Throttling.User", throttle_retry_after=True)
    await api.control("clock", {"freeze": True})
    now = (await api.control("clock", {"advance_s": 0}))["now_s"]
    await api.control("clock", {"advance_s": 60 - now % 60 + 10})  # 10 s into a minute
    for _ in range(60):
        await api.ok("DescribeInstances")
    reply = await api.error("DescribeInstances")
    assert (reply.status, reply.code) == (400, "Throttling.User")
    assert reply.body["Message"] == "Request was denied due to user flow control."
    assert 49_000 <= int(reply.headers["x-acs-retry-after"]) <= 50_000


async def test_throttle_rate_one_throttles_everything(make_api: MakeApi) -> None:
    """throttle_rate=1 answers every call with Throttling (400)."""
    _, api = await make_api(throttle_rate=1.0)
    reply = await api.error("DescribeInstances")
    assert (reply.status, reply.code) == (400, "Throttling")


async def test_throttle_rate_throttles_whole_windows(make_api: MakeApi) -> None:
    """throttle_rate is the share of (region, API) windows that are throttled from their start
    to their end, drawn from the seed alone: within a window every call has the same fate, and
    over many windows about that share is throttled."""
    _, api = await make_api(throttle_rate=0.3, throttle_window_s=60)
    await api.control("clock", {"freeze": True})
    fates = []
    for _ in range(60):
        statuses = {(await api.call("DescribeInstances")).status for _ in range(3)}
        assert len(statuses) == 1  # one fate per window
        fates.append(statuses == {400})
        await api.control("clock", {"advance_s": 60})
    assert 8 <= sum(fates) <= 30


async def test_error_rate_gives_internal_error_dispatch(make_api: MakeApi) -> None:
    """error_rate=1 answers 500 InternalError.Dispatch and applies nothing."""
    emulator, api = await make_api(error_rate=1.0)
    reply = await api.error("InvokeCommand", {"CommandId": DEMO_COMMAND_ID, **instance_params(first_ids(emulator, 1))})  # fmt: skip
    assert (reply.status, reply.code) == (500, "InternalError.Dispatch")
    assert reply.body["Message"] == "An error occurred when you dispatched the request."
    state = emulator.snapshot()
    assert state["invocations"] == []
    assert state["regions"][REGION]["quota_used"] == 0


async def test_fault_actions_limit_where_faults_apply(make_api: MakeApi) -> None:
    """With fault_actions={InvokeCommand}, other actions never see faults."""
    emulator, api = await make_api(error_rate=1.0, fault_actions=frozenset({"InvokeCommand"}))
    await api.ok("DescribeInstances")
    params = {"CommandId": DEMO_COMMAND_ID, **instance_params(first_ids(emulator, 1))}
    assert (await api.error("InvokeCommand", params)).code == "InternalError.Dispatch"


async def test_faults_are_seeded(make_api: MakeApi) -> None:
    """The same seed and request order inject the same faults; another seed differs."""
    patterns = []
    for seed in (7, 7, 8):
        _, api = await make_api(error_rate=0.5, seed=seed)
        statuses = [(await api.call("DescribeInstances")).status for _ in range(24)]
        patterns.append(statuses)
    assert patterns[0] == patterns[1]
    assert patterns[0] != patterns[2]
    assert {200, 500} == set(patterns[0])


async def test_drop_closes_connection_and_applies_nothing(make_api: MakeApi) -> None:
    """drop_rate=1: the client sees a disconnect (no HTTP response) and nothing was applied."""
    emulator, api = await make_api(drop_rate=1.0)
    params = {
        "CommandId": DEMO_COMMAND_ID,
        **instance_params(first_ids(emulator, 2)),
        "ClientToken": "d1",
    }
    with pytest.raises(aiohttp.ClientError) as caught:
        await api.call("InvokeCommand", params)
    assert not isinstance(caught.value, aiohttp.ClientResponseError)
    state = emulator.snapshot()
    assert state["invocations"] == []
    assert state["regions"][REGION]["quota_used"] == 0
    assert state["regions"][REGION]["calls"]["InvokeCommand"] == 1


async def test_accept_then_drop_applies_then_disconnects(make_api: MakeApi) -> None:
    """accept_then_drop_rate=1: InvokeCommand is applied, then the connection drops."""
    emulator, api = await make_api(accept_then_drop_rate=1.0)
    params = {
        "CommandId": DEMO_COMMAND_ID,
        **instance_params(first_ids(emulator, 3)),
        "ClientToken": "a1",
    }
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.call("InvokeCommand", params)
    (record,) = emulator.snapshot()["invocations"]
    assert record["client_token"] == "a1"
    await api.ok("DescribeInstances")  # other actions are never "accepted then dropped"


async def test_accept_then_drop_retry_with_token_finds_original(make_api: MakeApi) -> None:
    """Retrying a lost InvokeCommand with its ClientToken returns the original InvokeId, once."""
    emulator, api = await make_api(accept_then_drop_rate=0.5, seed=3)
    params = {
        "CommandId": DEMO_COMMAND_ID,
        **instance_params(first_ids(emulator, 3)),
        "ClientToken": "a2",
    }
    lost = 0
    for _ in range(30):
        try:
            reply = await api.call("InvokeCommand", params)
        except aiohttp.ClientError:
            lost += 1
            continue
        break
    assert reply.status == 200
    (record,) = emulator.snapshot()["invocations"]
    assert reply.body["InvokeId"] == record["invoke_id"]
    assert emulator.snapshot()["regions"][REGION]["quota_used"] == 1
    assert lost + 1 == emulator.snapshot()["regions"][REGION]["calls"]["InvokeCommand"]


async def test_accept_then_drop_stop_invocation(make_api: MakeApi) -> None:
    """StopInvocation can be applied and its answer lost."""
    emulator, api = await make_api(
        accept_then_drop_rate=1.0,
        fault_actions=frozenset({"StopInvocation"}),
        exec_seconds=(30, 30),
    )
    invoke_id = await api.invoke(first_ids(emulator, 2), DEMO_COMMAND_ID)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.call("StopInvocation", {"InvokeId": invoke_id})
    assert emulator.snapshot()["invocations"][0]["stopped"] is True


async def test_latency_delays_answers(make_api: MakeApi) -> None:
    """latency_ms delays every answer by that much of the emulator clock."""
    emulator, api = await make_api(latency_ms=150)
    await api.control("clock", {"freeze": True})
    reply = asyncio.create_task(api.call("DescribeInstances"))
    await settled(lambda: calls(emulator, "DescribeInstances") == 1)  # counted, now waiting
    await api.control("clock", {"advance_s": 0.1})
    await api.control("state")  # a full round trip after the clock moved
    assert not reply.done()
    await api.control("clock", {"advance_s": 0.1})
    assert (await reply).status == 200


async def test_server_keeps_serving_after_drops(make_api: MakeApi) -> None:
    """Dropped connections do not disturb other clients on other connections."""
    emulator, api = await make_api(drop_rate=1.0, fault_actions=frozenset({"InvokeCommand"}))
    params = {"CommandId": DEMO_COMMAND_ID, **instance_params(first_ids(emulator, 1))}
    results = await asyncio.gather(
        *(api.call("InvokeCommand", params) for _ in range(5)),
        *(api.call("DescribeInstances") for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, aiohttp.ClientError) for r in results[:5])
    assert all(not isinstance(r, BaseException) and r.status == 200 for r in results[5:])

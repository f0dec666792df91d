"""Executions progress with the emulator clock: Pending -> Running -> a final status."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fanout.emulator import DEMO_COMMAND_ID, Emulator

from .conftest import MakeApi
from .helpers import REGION, Api, instance_params


def first_ids(emulator: Emulator, n: int) -> list[str]:
    """The first `n` instance ids of the default region."""
    return [i.instance_id for i in emulator.world.fleet.regions[REGION].instances[:n]]


async def results(api: Api, invoke_id: str) -> dict[str, dict[str, Any]]:
    """Per-instance records of an invocation (PlainText output), by instance id."""
    body = await api.ok(
        "DescribeInvocationResults",
        {"InvokeId": invoke_id, "MaxResults": "50", "ContentEncoding": "PlainText"},
    )
    records = body["Invocation"]["InvocationResults"]["InvocationResult"]
    return {r["InstanceId"]: r for r in records}


async def overall(api: Api, invoke_id: str) -> str:
    """The overall InvocationStatus from DescribeInvocations."""
    body = await api.ok("DescribeInvocations", {"InvokeId": invoke_id})
    (invocation,) = body["Invocations"]["Invocation"]
    return str(invocation["InvocationStatus"])


async def frozen(make_api: MakeApi, **config: Any) -> tuple[Emulator, Api]:
    """An emulator whose clock moves only when the test advances it."""
    emulator, api = await make_api(**config)
    await api.control("clock", {"freeze": True})
    return emulator, api


def seconds_between(start: str, end: str) -> float:
    """Seconds between two `...Z` timestamps."""
    began = datetime.strptime(start.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
    ended = datetime.strptime(end.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
    return (ended - began).total_seconds()


async def test_pending_running_success(make_api: MakeApi) -> None:
    """With 10 s run time: Pending at once, Running after a second, Success after 11 s."""
    emulator, api = await frozen(make_api, exec_seconds=(10, 10))
    ids = first_ids(emulator, 3)
    invoke_id = await api.invoke(ids, DEMO_COMMAND_ID)
    assert {r["InvocationStatus"] for r in (await results(api, invoke_id)).values()} == {"Pending"}
    assert await overall(api, invoke_id) == "Pending"
    await api.control("clock", {"advance_s": 1})
    running = await results(api, invoke_id)
    assert {r["InvocationStatus"] for r in running.values()} == {"Running"}
    assert {r["InvokeRecordStatus"] for r in running.values()} == {"Running"}
    assert await overall(api, invoke_id) == "Running"
    await api.control("clock", {"advance_s": 10})
    done = await results(api, invoke_id)
    for iid, record in done.items():
        assert record["InvocationStatus"] == "Success"
        assert record["InvokeRecordStatus"] == "Finished"
        assert record["ExitCode"] == 0
        assert record["Output"] == f"hello from {iid}\n"
        assert record["ErrorCode"] == ""
        assert record["Repeats"] == 1
        assert seconds_between(record["StartTime"], record["FinishedTime"]) == 10
    assert await overall(api, invoke_id) == "Success"


async def test_zero_exec_seconds_finishes_at_once(emu_api: tuple[Emulator, Api]) -> None:
    """With the default exec_seconds=(0, 0) results are final right away."""
    emulator, api = emu_api
    invoke_id = await api.invoke(first_ids(emulator, 5), DEMO_COMMAND_ID)
    assert {r["InvocationStatus"] for r in (await results(api, invoke_id)).values()} == {"Success"}


async def test_failures_have_exit_codes(make_api: MakeApi) -> None:
    """exec_failure_fraction=1: every instance Failed with an exit code 1..127, ErrorCode
    ExitCodeNonzero and the SDK model's ErrorInfo text (alibabacloud-go-sdk ecs-20140526
    describe_invocations_response_body_model.go, ErrorCode / ErrorInfo; facts 10 [6])."""
    emulator, api = await make_api(exec_failure_fraction=1.0)
    invoke_id = await api.invoke(first_ids(emulator, 4), DEMO_COMMAND_ID)
    for record in (await results(api, invoke_id)).values():
        assert record["InvocationStatus"] == "Failed"
        assert record["InvokeRecordStatus"] == "Failed"
        assert 1 <= record["ExitCode"] <= 127
        assert record["ErrorCode"] == "ExitCodeNonzero"
        assert record["ErrorInfo"] == "the command execution exit code is not zero"
        assert f"exit code {record['ExitCode']}" in record["Output"]
    assert await overall(api, invoke_id) == "Failed"


async def test_partial_failure(make_api: MakeApi) -> None:
    """Some Success and some Failed make the overall status PartialFailed."""
    emulator, api = await make_api(exec_failure_fraction=0.5, instances_per_region=30)
    invoke_id = await api.invoke(first_ids(emulator, 30), DEMO_COMMAND_ID)
    statuses = [r["InvocationStatus"] for r in (await results(api, invoke_id)).values()]
    assert {"Success", "Failed"} == set(statuses)
    assert await overall(api, invoke_id) == "PartialFailed"


async def test_timeout_uses_invoke_timeout_then_command_timeout(make_api: MakeApi) -> None:
    """Longer than Timeout: status Timeout, ExecutionTimeout, FinishedTime = StartTime + Timeout."""
    emulator, api = await frozen(make_api, exec_seconds=(100, 100))
    ids = first_ids(emulator, 2)
    short = await api.invoke(ids[:1], DEMO_COMMAND_ID, Timeout="10")
    default = await api.invoke(ids[1:], DEMO_COMMAND_ID)  # the command's Timeout, 60 s
    await api.control("clock", {"advance_s": 61})
    for invoke_id, timeout_s in ((short, 10), (default, 60)):
        (record,) = (await results(api, invoke_id)).values()
        assert record["InvocationStatus"] == "Timeout"
        assert record["ErrorCode"] == "ExecutionTimeout"
        assert seconds_between(record["StartTime"], record["FinishedTime"]) == timeout_s
        assert await overall(api, invoke_id) == "Failed"


async def test_aborted_when_instance_becomes_unusable_before_start(make_api: MakeApi) -> None:
    """An instance that stops or loses its agent while Pending ends Aborted with the SDK model's
    codes: InstanceNotRunning, and ClientNotRunning for an agent that stopped (facts 10 [6])."""
    emulator, api = await frozen(make_api, exec_seconds=(5, 5))
    offline, stopped, healthy = first_ids(emulator, 3)
    invoke_id = await api.invoke([offline, stopped, healthy], DEMO_COMMAND_ID)
    await api.control("instances", {"instance_ids": [offline], "agent_online": False})
    await api.control("instances", {"instance_ids": [stopped], "status": "Stopped"})
    await api.control("clock", {"advance_s": 6})
    records = await results(api, invoke_id)
    assert (records[offline]["InvocationStatus"], records[offline]["ErrorCode"]) == ("Aborted", "ClientNotRunning")  # fmt: skip
    assert records[offline]["ErrorInfo"] == "the aliyun service is not running on the instance"
    assert records[stopped]["ErrorInfo"] == "the instance is not running when create task"
    assert (records[stopped]["InvocationStatus"], records[stopped]["ErrorCode"]) == ("Aborted", "InstanceNotRunning")  # fmt: skip
    assert records[healthy]["InvocationStatus"] == "Success"
    assert await overall(api, invoke_id) == "PartialFailed"


async def test_running_execution_is_interrupted(make_api: MakeApi) -> None:
    """An instance stopped while its command runs ends Failed with ExecutionInterrupted."""
    emulator, api = await frozen(make_api, exec_seconds=(5, 5))
    (iid,) = first_ids(emulator, 1)
    invoke_id = await api.invoke([iid], DEMO_COMMAND_ID)
    await api.control("clock", {"advance_s": 1})
    await api.control("instances", {"instance_ids": [iid], "status": "Stopped"})
    await api.control("clock", {"advance_s": 10})
    record = (await results(api, invoke_id))[iid]
    assert (record["InvocationStatus"], record["ErrorCode"]) == ("Failed", "ExecutionInterrupted")


async def test_stop_invocation_terminates_and_cancels(make_api: MakeApi) -> None:
    """stop_mode=terminate (TerminationMode and the agent's cancel path, facts 10 [1][7]):
    Running -> Terminated, Pending -> Cancelled, overall Stopped."""
    emulator, api = await frozen(make_api, exec_seconds=(30, 30), stop_mode="terminate")
    ids = first_ids(emulator, 4)
    running = await api.invoke(ids[:2], DEMO_COMMAND_ID)
    await api.control("clock", {"advance_s": 1})
    pending = await api.invoke(ids[2:], DEMO_COMMAND_ID)
    await api.ok("StopInvocation", {"InvokeId": running})
    await api.ok("StopInvocation", {"InvokeId": pending})
    await api.control("clock", {"advance_s": 60})
    for record in (await results(api, running)).values():
        assert record["InvocationStatus"] == "Terminated"
        assert record["InvokeRecordStatus"] == "Stopped"
        assert record["StopTime"] != ""
    assert {r["InvocationStatus"] for r in (await results(api, pending)).values()} == {"Cancelled"}
    assert await overall(api, running) == "Stopped"
    assert await overall(api, pending) == "Stopped"


async def test_stop_invocation_by_default_cancels_pending_and_lets_running_finish(
    make_api: MakeApi,
) -> None:
    """By default StopInvocation does what the API reference says (facts 10 [8],
    api-stopinvocation): executions that have not started are Cancelled, started ones are not
    interrupted and finish as they would have."""
    emulator, api = await frozen(make_api, exec_seconds=(30, 30))
    ids = first_ids(emulator, 4)
    running = await api.invoke(ids[:2], DEMO_COMMAND_ID)
    await api.control("clock", {"advance_s": 1})
    pending = await api.invoke(ids[2:], DEMO_COMMAND_ID)
    await api.ok("StopInvocation", {"InvokeId": running})
    await api.ok("StopInvocation", {"InvokeId": pending})
    assert {r["InvocationStatus"] for r in (await results(api, running)).values()} == {"Running"}
    await api.control("clock", {"advance_s": 60})
    assert {r["InvocationStatus"] for r in (await results(api, running)).values()} == {"Success"}
    assert {r["InvocationStatus"] for r in (await results(api, pending)).values()} == {"Cancelled"}
    assert await overall(api, running) == "Success"
    assert await overall(api, pending) == "Stopped"


async def test_stop_some_instances(make_api: MakeApi) -> None:
    """StopInvocation with InstanceId.N stops only those; the others finish."""
    emulator, api = await frozen(make_api, exec_seconds=(30, 30), stop_mode="terminate")
    ids = first_ids(emulator, 3)
    invoke_id = await api.invoke(ids, DEMO_COMMAND_ID)
    await api.control("clock", {"advance_s": 1})
    await api.ok("StopInvocation", {"InvokeId": invoke_id, **instance_params(ids[:1])})
    await api.control("clock", {"advance_s": 60})
    records = await results(api, invoke_id)
    assert [records[i]["InvocationStatus"] for i in ids] == ["Terminated", "Success", "Success"]
    assert await overall(api, invoke_id) == "Success"


async def test_stop_invocation_errors(emu_api: tuple[Emulator, Api]) -> None:
    """Unknown InvokeId 404, no InvokeId MissingParameter, 51 instances InstanceIds.ExceedLimit."""
    emulator, api = emu_api
    invoke_id = await api.invoke(first_ids(emulator, 1), DEMO_COMMAND_ID)
    reply = await api.error("StopInvocation", {"InvokeId": "t-00000000000000000000000000000"})
    assert (reply.status, reply.code) == (404, "InvalidInvokeId.NotFound")
    reply = await api.error("StopInvocation", {})
    assert (reply.status, reply.code) == (400, "MissingParameter")
    many = instance_params(first_ids(emulator, 51))
    reply = await api.error("StopInvocation", {"InvokeId": invoke_id, **many})
    assert (reply.status, reply.code) == (403, "InstanceIds.ExceedLimit")


async def test_periodic_stays_scheduled_and_repeats(make_api: MakeApi) -> None:
    """rate(5m): per instance Scheduled with Repeats growing, overall Scheduled until stopped."""
    emulator, api = await frozen(make_api)
    ids = first_ids(emulator, 2)
    invoke_id = await api.invoke(ids, DEMO_COMMAND_ID, Timed="true", Frequency="rate(5m)")
    first = await results(api, invoke_id)
    assert {r["InvocationStatus"] for r in first.values()} == {"Scheduled"}
    assert {r["Repeats"] for r in first.values()} == {1}
    await api.control("clock", {"advance_s": 601})
    later = await results(api, invoke_id)
    assert {r["Repeats"] for r in later.values()} == {3}
    assert await overall(api, invoke_id) == "Scheduled"
    await api.ok("StopInvocation", {"InvokeId": invoke_id})
    await api.control("clock", {"advance_s": 900})
    stopped = await results(api, invoke_id)
    assert {r["InvocationStatus"] for r in stopped.values()} == {"Terminated"}
    assert {r["Repeats"] for r in stopped.values()} == {3}
    assert await overall(api, invoke_id) == "Stopped"


async def test_cron_repeats_follow_the_schedule(make_api: MakeApi) -> None:
    """A cron every 20 minutes has run 3 times an hour later (or 4, at a boundary)."""
    emulator, api = await frozen(make_api)
    invoke_id = await api.invoke(first_ids(emulator, 1), DEMO_COMMAND_ID, Timed="true", Frequency="0 */20 * * * *")  # fmt: skip
    await api.control("clock", {"advance_s": 3600})
    (record,) = (await results(api, invoke_id)).values()
    assert record["InvocationStatus"] == "Scheduled"
    assert record["Repeats"] == 3


async def test_expired_at_fails_with_cron_expression_expired(make_api: MakeApi) -> None:
    """at(...) in the past never runs: the instance fails with CronExpressionExpired."""
    emulator, api = await make_api()
    invoke_id = await api.invoke(first_ids(emulator, 1), DEMO_COMMAND_ID, Frequency="at(2020-01-01 00:00:00)")  # fmt: skip
    (record,) = (await results(api, invoke_id)).values()
    assert (record["InvocationStatus"], record["ErrorCode"]) == ("Failed", "CronExpressionExpired")


async def test_at_runs_once_then_finishes(make_api: MakeApi) -> None:
    """at(...) in the future: Scheduled, then Success once its time has passed."""
    emulator, api = await frozen(make_api)
    now = (await api.control("clock", {"advance_s": 0}))["now_s"]
    shanghai = datetime.fromtimestamp(now + 120, ZoneInfo("Asia/Shanghai"))
    frequency = f"at({shanghai:%Y-%m-%d %H:%M:%S} Asia/Shanghai)"
    invoke_id = await api.invoke(first_ids(emulator, 1), DEMO_COMMAND_ID, Timed="true", Frequency=frequency)  # fmt: skip
    assert await overall(api, invoke_id) == "Scheduled"
    await api.control("clock", {"advance_s": 180})
    (record,) = (await results(api, invoke_id)).values()
    assert (record["InvocationStatus"], record["Repeats"]) == ("Success", 1)


async def test_describe_invocations_instances_and_encoding(make_api: MakeApi) -> None:
    """DescribeInvocations lists InvokeInstances with FinishTime; Output only with IncludeOutput."""
    emulator, api = await make_api()
    ids = first_ids(emulator, 2)
    invoke_id = await api.invoke(ids, DEMO_COMMAND_ID)
    body = await api.ok("DescribeInvocations", {"InvokeId": invoke_id})
    (invocation,) = body["Invocations"]["Invocation"]
    command = emulator.world.commands.get(REGION, DEMO_COMMAND_ID)
    assert command is not None
    assert invocation["CommandContent"] == command.content_b64
    assert invocation["InvokeStatus"] == "Finished"
    instances = invocation["InvokeInstances"]["InvokeInstance"]
    assert [i["InstanceId"] for i in instances] == ids
    assert all(i["Output"] == "" and i["FinishTime"].endswith("Z") for i in instances)
    assert "FinishedTime" not in instances[0]
    body = await api.ok("DescribeInvocations", {"InvokeId": invoke_id, "IncludeOutput": "true"})
    output = body["Invocations"]["Invocation"][0]["InvokeInstances"]["InvokeInstance"][0]["Output"]
    assert base64.b64decode(output).decode() == f"hello from {ids[0]}\n"
    body = await api.ok("DescribeInvocations", {"InvokeId": invoke_id, "IncludeOutput": "true", "ContentEncoding": "PlainText"})  # fmt: skip
    invocation = body["Invocations"]["Invocation"][0]
    assert invocation["InvokeInstances"]["InvokeInstance"][1]["Output"] == f"hello from {ids[1]}\n"
    assert invocation["CommandContent"] == command.content


async def test_status_filters(make_api: MakeApi) -> None:
    """InvokeStatus and InvokeRecordStatus filter invocations and records."""
    emulator, api = await frozen(make_api, exec_seconds=(5, 5))
    ids = first_ids(emulator, 4)
    running = await api.invoke(ids[:2], DEMO_COMMAND_ID)
    await api.control("clock", {"advance_s": 10})
    pending = await api.invoke(ids[2:], DEMO_COMMAND_ID)
    body = await api.ok("DescribeInvocations", {"InvokeStatus": "Finished"})
    assert [i["InvokeId"] for i in body["Invocations"]["Invocation"]] == [running]
    body = await api.ok("DescribeInvocations", {"InvokeStatus": "Pending"})
    assert [i["InvokeId"] for i in body["Invocations"]["Invocation"]] == [pending]
    body = await api.ok("DescribeInvocationResults", {"InvokeRecordStatus": "Finished"})
    records = body["Invocation"]["InvocationResults"]["InvocationResult"]
    assert sorted(r["InstanceId"] for r in records) == sorted(ids[:2])


async def listed(api: Api, params: dict[str, str]) -> list[str]:
    """Every InvokeId DescribeInvocations lists with `params`, one per page via NextToken."""
    found: list[str] = []
    token = ""
    while True:
        page = {**params, "MaxResults": "1", **({"NextToken": token} if token else {})}
        body = await api.ok("DescribeInvocations", page)
        found += [i["InvokeId"] for i in body["Invocations"]["Invocation"]]
        token = body["NextToken"]
        if not token:
            return found


async def test_status_filters_page_past_finished_invocations(make_api: MakeApi) -> None:
    """An InvokeStatus=Pending/Running listing skips final invocations between unfinished ones
    and pages (NextToken, PageNumber) exactly as over the whole listing."""
    emulator, api = await frozen(make_api, exec_seconds=(30, 30))
    ids = first_ids(emulator, 5)
    invoked = [await api.invoke([iid], DEMO_COMMAND_ID) for iid in ids]
    for stopped in invoked[1::2]:  # still Pending: Cancelled, so final at once
        await api.ok("StopInvocation", {"InvokeId": stopped})
    unfinished = [invoked[4], invoked[2], invoked[0]]
    assert await listed(api, {"InvokeStatus": "Pending"}) == unfinished
    assert await listed(api, {"InvokeStatus": "Stopped"}) == [invoked[3], invoked[1]]
    await api.control("clock", {"advance_s": 2})
    assert await listed(api, {"InvokeStatus": "Running"}) == unfinished
    assert await listed(api, {"InvokeStatus": "Pending"}) == []
    body = await api.ok("DescribeInvocations", {"InvokeStatus": "Running", "PageSize": "1", "PageNumber": "2"})  # fmt: skip
    assert [i["InvokeId"] for i in body["Invocations"]["Invocation"]] == [invoked[2]]
    await api.control("clock", {"advance_s": 60})
    assert await listed(api, {"InvokeStatus": "Running"}) == []
    assert await listed(api, {"InvokeStatus": "Success"}) == unfinished
    assert len(await listed(api, {"InvokeStatus": "Finished"})) == len(invoked)


async def test_stop_after_the_end_changes_nothing(make_api: MakeApi) -> None:
    """StopInvocation of an invocation whose executions all ended leaves it as it was, even
    with stop_mode=terminate (a final invocation is not evaluated again)."""
    emulator, api = await frozen(make_api, exec_seconds=(5, 5), stop_mode="terminate")
    ids = first_ids(emulator, 2)
    invoke_id = await api.invoke(ids, DEMO_COMMAND_ID)
    await api.control("clock", {"advance_s": 10})
    before = await results(api, invoke_id)
    assert await overall(api, invoke_id) == "Success"
    await api.ok("StopInvocation", {"InvokeId": invoke_id})
    await api.control("clock", {"advance_s": 10})
    assert await results(api, invoke_id) == before
    assert await overall(api, invoke_id) == "Success"


async def test_a_listed_state_gives_way_to_a_stop_or_an_interrupt(make_api: MakeApi) -> None:
    """A Pending or Running state already answered (and kept until its start or end) changes
    at once when StopInvocation or an unusable instance ends it early."""
    emulator, api = await frozen(make_api, exec_seconds=(30, 30), stop_mode="terminate")
    ran, pending_stop, interrupted, aborted = first_ids(emulator, 4)
    running = await api.invoke([ran, interrupted], DEMO_COMMAND_ID)
    await api.control("clock", {"advance_s": 2})
    pending = await api.invoke([pending_stop, aborted], DEMO_COMMAND_ID)
    assert {r["InvocationStatus"] for r in (await results(api, running)).values()} == {"Running"}
    assert {r["InvocationStatus"] for r in (await results(api, pending)).values()} == {"Pending"}
    await api.control("instances", {"instance_ids": [interrupted, aborted], "status": "Stopped"})
    await api.ok("StopInvocation", {"InvokeId": running, **instance_params([ran])})
    await api.ok("StopInvocation", {"InvokeId": pending, **instance_params([pending_stop])})
    states = {**(await results(api, running)), **(await results(api, pending))}
    assert {iid: (r["InvocationStatus"], r["ErrorCode"]) for iid, r in states.items()} == {
        ran: ("Terminated", ""),
        interrupted: ("Failed", "ExecutionInterrupted"),
        pending_stop: ("Cancelled", ""),
        aborted: ("Aborted", "InstanceNotRunning"),
    }

"""The emulator behaves as the real service does where our first guesses differed (issue 14):
per-instance error codes, output tails, RAM permission errors, paging, result retention and
the instance metadata service. Each test names its source."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import DEMO_COMMAND_ID, Emulator

from .conftest import MakeApi
from .helpers import REGION, Api

OUTPUT_LIMIT = 24 * 1024


def first_ids(emulator: Emulator, n: int) -> list[str]:
    """The first `n` instance ids of the default region."""
    return [i.instance_id for i in emulator.world.fleet.regions[REGION].instances[:n]]


async def results(api: Api, invoke_id: str) -> dict[str, dict[str, Any]]:
    """Per-instance records of an invocation (PlainText output), by instance id."""
    body = await api.ok(
        "DescribeInvocationResults",
        {"InvokeId": invoke_id, "MaxResults": "50", "ContentEncoding": "PlainText"},
    )
    return {r["InstanceId"]: r for r in body["Invocation"]["InvocationResults"]["InvocationResult"]}


@pytest.mark.parametrize(
    ("code", "info"),
    [
        ("ClientNotRunning", "the aliyun service is not running on the instance"),
        ("ClientNotResponse", "the aliyun service in the instance does not response"),
        ("DeliveryTimeout", "the command delivery has been timeout"),
    ],
)
async def test_injected_delivery_failures_are_aborted_with_the_sdk_codes(
    make_api: MakeApi, code: str, info: str
) -> None:
    """`agent_failures={CODE: 1}`: every execution is Aborted ("The command failed to be sent
    to the instance") with that ErrorCode and the ErrorInfo text of the SDK models (alibabacloud-
    go-sdk ecs-20140526 describe_invocations_response_body_model.go; aliyun-api-facts 10 [6])."""
    emulator, api = await make_api(agent_failures={code: 1.0})
    invoke_id = await api.invoke(first_ids(emulator, 3), DEMO_COMMAND_ID)
    for record in (await results(api, invoke_id)).values():
        assert (record["InvocationStatus"], record["ErrorCode"]) == ("Aborted", code)
        assert record["ErrorInfo"] == info
        assert record["StartTime"] == ""


async def test_delivery_failure_shares_are_seeded(make_api: MakeApi) -> None:
    """Shares of several codes add up: about those shares of 200 executions fail each way,
    the same ones for the same seed."""
    shares = {"ClientNotRunning": 0.2, "DeliveryTimeout": 0.1}
    seen = []
    for _ in range(2):
        emulator, api = await make_api(agent_failures=shares, instances_per_region=200, seed=3)
        ids = first_ids(emulator, 200)
        invoke_ids = [await api.invoke(ids[i : i + 50], DEMO_COMMAND_ID) for i in range(0, 200, 50)]
        codes = {}
        for invoke_id in invoke_ids:
            codes.update({i: r["ErrorCode"] for i, r in (await results(api, invoke_id)).items()})
        seen.append(codes)
    assert seen[0] == seen[1]
    counts = {c: list(seen[0].values()).count(c) for c in ("ClientNotRunning", "DeliveryTimeout")}
    assert 20 <= counts["ClientNotRunning"] <= 60
    assert 5 <= counts["DeliveryTimeout"] <= 35


async def test_long_output_keeps_its_tail_with_dropped(make_api: MakeApi) -> None:
    """A 100 KB output: the API keeps the last 24 KB and reports the bytes dropped before them,
    as the agent does (aliyun_assist_client agent/taskengine/basetask.go, getReportString:
    `bytes_data[task.droped:]`; Dropped: facts 2.1) - the failure line at the end survives."""
    emulator, api = await make_api(output_bytes=100_000, exec_failure_fraction=1.0)
    (iid,) = first_ids(emulator, 1)
    invoke_id = await api.invoke([iid], DEMO_COMMAND_ID)
    record = (await results(api, invoke_id))[iid]
    output = record["Output"]
    assert len(output.encode()) == OUTPUT_LIMIT
    assert record["Dropped"] > 70_000
    assert record["Dropped"] + OUTPUT_LIMIT >= 99_000
    assert output.endswith(f"error: simulated failure, exit code {record['ExitCode']}\n")
    assert not output.startswith("hello from")  # the beginning is what went
    body = await api.ok(
        "DescribeInvocations",
        {"InvokeId": invoke_id, "IncludeOutput": "true", "ContentEncoding": "Base64"},
    )
    (entry,) = body["Invocations"]["Invocation"][0]["InvokeInstances"]["InvokeInstance"]
    assert base64.b64decode(entry["Output"]).decode() == output
    assert entry["Dropped"] == record["Dropped"]


async def test_fleet_file_sets_exit_codes_failures_and_output_per_instance(
    make_api: MakeApi, tmp_path: Path
) -> None:
    """`ExitCode`, `AgentFailure` and `OutputBytes` in a fleet file decide those instances'
    executions (the rest follow the seeded draws)."""
    fleet = [
        {"InstanceId": "i-exit3", "RegionId": REGION, "ExitCode": 3},
        {"InstanceId": "i-gone", "RegionId": REGION, "AgentFailure": "ClientNotResponse"},
        {"InstanceId": "i-long", "RegionId": REGION, "OutputBytes": 30_000},
        {"InstanceId": "i-plain", "RegionId": REGION},
    ]
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(fleet))
    _, api = await make_api(fleet_file=path)
    invoke_id = await api.invoke(["i-exit3", "i-gone", "i-long", "i-plain"], DEMO_COMMAND_ID)
    records = await results(api, invoke_id)
    assert (records["i-exit3"]["ExitCode"], records["i-exit3"]["ErrorCode"]) == (3, "ExitCodeNonzero")  # fmt: skip
    assert (records["i-gone"]["InvocationStatus"], records["i-gone"]["ErrorCode"]) == ("Aborted", "ClientNotResponse")  # fmt: skip
    assert records["i-long"]["Dropped"] > 0
    assert (records["i-plain"]["InvocationStatus"], records["i-plain"]["Dropped"]) == ("Success", 0)


async def test_bad_fleet_behaviour_is_refused(make_api: MakeApi, tmp_path: Path) -> None:
    """An unknown AgentFailure code in a fleet file is refused at start, naming the entry."""
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps([{"InstanceId": "i-x", "RegionId": REGION, "AgentFailure": "Nope"}]))
    with pytest.raises(Exception, match="instance #1: AgentFailure"):
        await make_api(fleet_file=path)


async def test_empty_parameters_are_an_empty_json_object(emu_api: tuple[Emulator, Api]) -> None:
    """An invocation without parameters shows `Parameters` "{}" (the SDK model's example,
    facts 10 [6]; Terraform's provider parses it as JSON), not ""."""
    emulator, api = emu_api
    invoke_id = await api.invoke(first_ids(emulator, 1), DEMO_COMMAND_ID)
    body = await api.ok("DescribeInvocations", {"InvokeId": invoke_id})
    assert body["Invocations"]["Invocation"][0]["Parameters"] == "{}"


async def test_deprecated_page_number_and_size_page_the_listings(
    emu_api: tuple[Emulator, Api],
) -> None:
    """PageNumber/PageSize, deprecated but still accepted by every Describe action (facts 2.1,
    2.2, 10 [10][11]), page the same listing MaxResults/NextToken do."""
    emulator, api = emu_api
    ids = first_ids(emulator, 5)
    invoke_ids = [await api.invoke([iid], DEMO_COMMAND_ID) for iid in ids]
    newest_first = list(reversed(invoke_ids))
    body = await api.ok("DescribeInvocations", {"PageNumber": "2", "PageSize": "2"})
    assert [i["InvokeId"] for i in body["Invocations"]["Invocation"]] == newest_first[2:4]
    assert (body["PageNumber"], body["PageSize"]) == (2, 2)
    body = await api.ok("DescribeInstances", {"PageNumber": "3", "PageSize": "10"})
    fleet = [i.instance_id for i in emulator.world.fleet.regions[REGION].instances]
    assert [i["InstanceId"] for i in body["Instances"]["Instance"]] == fleet[20:30]
    body = await api.ok("DescribeCommands", {"PageNumber": "2", "PageSize": "1"})
    assert len(body["Commands"]["Command"]) == 1
    assert body["PageNumber"] == 2


async def test_results_are_kept_four_weeks(make_api: MakeApi) -> None:
    """Invocation results are kept 4 weeks (facts 10 [10], DescribeInvocationResults): after
    that the invocation is listed nowhere and cannot be stopped."""
    emulator, api = await make_api()
    await api.control("clock", {"freeze": True})
    invoke_id = await api.invoke(first_ids(emulator, 1), DEMO_COMMAND_ID)
    await api.control("clock", {"advance_s": 27 * 86400})
    assert await results(api, invoke_id)
    await api.control("clock", {"advance_s": 2 * 86400})
    assert await results(api, invoke_id) == {}
    body = await api.ok("DescribeInvocations", {"InvokeId": invoke_id})
    assert body["Invocations"]["Invocation"] == []
    reply = await api.error("StopInvocation", {"InvokeId": invoke_id})
    assert reply.code == "InvalidInvokeId.NotFound"


async def test_results_keep_the_newest_records_only(make_api: MakeApi) -> None:
    """At most `result_retention_records` records per region are kept (the API: 100 000): the
    oldest invocations fall out first."""
    emulator, api = await make_api(result_retention_records=4)
    ids = first_ids(emulator, 2)
    old = await api.invoke(ids, DEMO_COMMAND_ID)
    newer = [await api.invoke(ids, DEMO_COMMAND_ID) for _ in range(2)]
    body = await api.ok("DescribeInvocations", {})
    assert [i["InvokeId"] for i in body["Invocations"]["Invocation"]] == list(reversed(newer))
    assert await results(api, old) == {}


async def test_denied_action_answers_forbidden_ram(make_api: MakeApi) -> None:
    """`denied_actions`: the action answers HTTP 403 Forbidden.RAM with the message and
    AccessDeniedDetail.AuthAction ECS gives a RAM user without `ecs:<Action>` (ECS announcement
    "changes to the authentication mechanism for ECS query API operations", 2025); other actions
    work; the refusal is counted."""
    emulator, api = await make_api(denied_actions=frozenset({"DescribeInvocations"}))
    reply = await api.error("DescribeInvocations", {})
    assert (reply.status, reply.code) == (403, "Forbidden.RAM")
    assert reply.body["Message"] == (
        "User not authorized to operate on the specified resource, or this API doesn't support RAM."
    )
    assert reply.body["AccessDeniedDetail"]["AuthAction"] == "ecs:DescribeInvocations"
    await api.ok("DescribeInvocationResults", {})
    state = emulator.snapshot()["regions"][REGION]
    assert state["calls"]["DescribeInvocations"] == 1
    assert state["refused"]["DescribeInvocations"] == {"Forbidden.RAM": 1}


async def metadata(api: Api, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET a metadata service path: (status, text)."""
    async with api.session.get(f"{api.base_url}{path}", headers=headers) as resp:
        return resp.status, await resp.text()


async def test_metadata_service_hands_out_expiring_role_credentials(make_api: MakeApi) -> None:
    """The emulated instance metadata service (aliyun/credentials-python provider/ecs_ram_role.py:
    token PUT, role list, role document) gives STS credentials the API accepts until their
    Expiration, on the emulator clock; then InvalidSecurityToken.Expired (facts 6.3)."""
    emulator, api = await make_api(ram_role="deployer", sts_ttl_s=3600)
    await api.control("clock", {"freeze": True})
    async with api.session.put(
        f"{api.base_url}/latest/api/token",
        headers={"X-aliyun-ecs-metadata-token-ttl-seconds": "21600"},
    ) as resp:
        assert resp.status == 200
        token = await resp.text()
    headers = {"X-aliyun-ecs-metadata-token": token}
    assert await metadata(api, "/latest/meta-data/ram/security-credentials/", headers) == (200, "deployer")  # fmt: skip
    status, text = await metadata(api, "/latest/meta-data/ram/security-credentials/deployer", headers)  # fmt: skip
    assert status == 200
    doc = json.loads(text)
    assert doc["Code"] == "Success"
    assert doc["AccessKeyId"].startswith("STS.")
    assert doc["Expiration"].endswith("Z")
    signed = {"key_id": doc["AccessKeyId"], "secret": doc["AccessKeySecret"]}
    await api.ok("DescribeInstances", sts_token=doc["SecurityToken"], **signed)
    await api.ok("DescribeInstances", sts_token=doc["SecurityToken"], scheme="v3", **signed)
    await api.control("clock", {"advance_s": 3600})
    reply = await api.error("DescribeInstances", sts_token=doc["SecurityToken"], **signed)
    assert (reply.status, reply.code) == (403, "InvalidSecurityToken.Expired")
    assert emulator.snapshot()["rejected"] == {"InvalidSecurityToken.Expired": 1}


async def test_metadata_service_renews_and_can_be_denied(make_api: MakeApi) -> None:
    """Credentials asked for past half their life are new ones; a bad session token is 401;
    `deny` (the role detached) makes the role endpoints 404, so nothing can be renewed."""
    _, api = await make_api(ram_role="deployer", sts_ttl_s=3600)
    await api.control("clock", {"freeze": True})
    path = "/latest/meta-data/ram/security-credentials/deployer"
    first = json.loads((await metadata(api, path))[1])
    await api.control("clock", {"advance_s": 600})
    assert json.loads((await metadata(api, path))[1])["AccessKeyId"] == first["AccessKeyId"]
    await api.control("clock", {"advance_s": 1300})
    assert json.loads((await metadata(api, path))[1])["AccessKeyId"] != first["AccessKeyId"]
    assert (await metadata(api, path, {"X-aliyun-ecs-metadata-token": "forged"}))[0] == 401
    assert (await metadata(api, "/latest/meta-data/ram/security-credentials/other"))[0] == 404
    await api.control("metadata", {"deny": True})
    assert (await metadata(api, path))[0] == 404
    await api.control("metadata", {"deny": False})
    assert (await metadata(api, path))[0] == 200

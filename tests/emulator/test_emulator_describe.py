"""The read actions: shapes as the SDK models expect them, filters, and complete stable paging."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import DEMO_COMMAND_ID, DEMO_PARAM_COMMAND_ID, Emulator

from .conftest import MakeApi
from .helpers import REGION, Api, instance_params


def region_ids(emulator: Emulator, region: str = REGION) -> list[str]:
    """The instance ids of a region, in fleet order."""
    return [i.instance_id for i in emulator.world.fleet.regions[region].instances]


async def all_pages(
    api: Api, action: str, params: dict[str, str], path: list[str], max_results: int
) -> tuple[list[Any], int]:
    """Follow NextToken to the end; (every item, number of pages)."""
    items: list[Any] = []
    token = ""
    pages = 0
    while True:
        query = {**params, "MaxResults": str(max_results)}
        if token:
            query["NextToken"] = token
        body = await api.ok(action, query)
        node: Any = body
        for key in path:
            node = node[key]
        pages += 1
        assert len(node) <= max_results
        items.extend(node)
        container = body["Invocation"] if action == "DescribeInvocationResults" else body
        token = container["NextToken"]
        if not token:
            return items, pages


async def test_describe_instances_pages_whole_region(make_api: MakeApi) -> None:
    """250 instances in pages of 100: three pages, every id exactly once, in fleet order."""
    emulator, api = await make_api(instances_per_region=250)
    items, pages = await all_pages(api, "DescribeInstances", {}, ["Instances", "Instance"], 100)
    assert pages == 3
    assert [i["InstanceId"] for i in items] == region_ids(emulator)


async def test_describe_instances_fields(make_api: MakeApi) -> None:
    """An instance carries the preflight fields with lowercase OSType and wrapped tags."""
    _, api = await make_api(instances_per_region=20, classic_fraction=0.5)
    body = await api.ok("DescribeInstances", {"MaxResults": "20"})
    instances = body["Instances"]["Instance"]
    first = instances[0]
    for field in ("InstanceId", "Status", "InstanceNetworkType", "OSType", "RegionId", "ZoneId", "VpcAttributes", "OperationLocks"):  # fmt: skip
        assert field in first
    assert first["RegionId"] == REGION
    assert first["ZoneId"] in (f"{REGION}-a", f"{REGION}-b")
    assert {i["OSType"] for i in instances} <= {"linux", "windows"}
    tags = {t["TagKey"]: t["TagValue"] for t in first["Tags"]["Tag"]}
    assert tags["fanout:index"] == "0"
    assert tags["env"] in ("prod", "staging")
    assert tags["role"] in ("web", "db", "cache")
    assert sum(i["InstanceNetworkType"] == "classic" for i in instances) == 10


async def test_describe_instances_tag_and_status_filters(make_api: MakeApi) -> None:
    """Tag.N filters must all match; Status filters; paging over a filter is complete."""
    emulator, api = await make_api(instances_per_region=300, stopped_fraction=0.2)
    fleet = emulator.world.fleet.regions[REGION].instances
    expected = [
        i.instance_id for i in fleet if ("env", "prod") in i.tags and ("role", "web") in i.tags
    ]
    params = {"Tag.1.Key": "env", "Tag.1.Value": "prod", "Tag.2.Key": "role", "Tag.2.Value": "web"}
    items, _ = await all_pages(api, "DescribeInstances", params, ["Instances", "Instance"], 10)
    assert [i["InstanceId"] for i in items] == expected
    body = await api.ok("DescribeInstances", params)
    assert body["TotalCount"] == len(expected)
    stopped, _ = await all_pages(api, "DescribeInstances", {"Status": "Stopped"}, ["Instances", "Instance"], 100)  # fmt: skip
    assert len(stopped) == 60
    assert {i["Status"] for i in stopped} == {"Stopped"}


async def test_describe_instances_by_ids(emu_api: tuple[Emulator, Api]) -> None:
    """InstanceIds is a JSON array; unknown ids are simply absent."""
    emulator, api = emu_api
    wanted = region_ids(emulator)[5:8]
    body = await api.ok("DescribeInstances", {"InstanceIds": json.dumps([*wanted, "i-unknown"])})
    assert sorted(i["InstanceId"] for i in body["Instances"]["Instance"]) == sorted(wanted)
    assert body["TotalCount"] == 3


async def test_describe_instances_json_text(tmp_path: Path, make_api: MakeApi) -> None:
    """Each instance's JSON, written as text, is valid compact JSON with every value escaped."""
    odd = 'qu"ote \\ back\nline \u00e9t\u00e9 \u2028 \x01'
    fleet = [
        {"InstanceId": "i-plain", "RegionId": REGION, "Tags": {"env": "prod"}},
        {"InstanceId": "i-odd", "RegionId": REGION, "Status": "Stopped", "OSType": odd,
         "InstanceNetworkType": "classic", "Tags": {odd: odd, "": ""}},
    ]  # fmt: skip
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(fleet), encoding="utf-8")
    _, api = await make_api(fleet_file=path, regions=(REGION,))
    reply = await api.call("DescribeInstances", {"MaxResults": "10"}, fmt="JSON")
    body = json.loads(reply.text)
    assert reply.text == json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    plain, other = body["Instances"]["Instance"]
    assert plain["Tags"] == {"Tag": [{"TagKey": "env", "TagValue": "prod"}]}
    assert plain["VpcAttributes"]["PrivateIpAddress"] == {"IpAddress": ["10.0.0.0"]}
    assert (plain["Cpu"], plain["Memory"], plain["StoppedMode"]) == (2, 8192, "Not-applicable")
    assert (other["OSType"], other["OSName"], other["Status"]) == (
        odd.lower(),
        odd.lower(),
        "Stopped",
    )
    assert other["Tags"]["Tag"] == [
        {"TagKey": odd, "TagValue": odd},
        {"TagKey": "", "TagValue": ""},
    ]
    assert other["VpcAttributes"]["VpcId"] == ""
    assert other["InnerIpAddress"] == {"IpAddress": ["10.0.0.1"]}
    assert other["StoppedMode"] == "KeepCharging"


async def test_describe_instances_shows_a_changed_instance(emu_api: tuple[Emulator, Api]) -> None:
    """An instance stopped after it was described is described as Stopped (its JSON is renewed)."""
    emulator, api = emu_api
    iid = region_ids(emulator)[3]
    query = {"InstanceIds": json.dumps([iid])}
    (before,) = (await api.ok("DescribeInstances", query))["Instances"]["Instance"]
    await api.control("instances", {"instance_ids": [iid], "status": "Stopped"})
    (after,) = (await api.ok("DescribeInstances", query))["Instances"]["Instance"]
    assert (before["Status"], after["Status"]) == ("Running", "Stopped")
    assert after["StoppedMode"] == "KeepCharging"
    assert {**after, "Status": "Running", "StoppedMode": "Not-applicable"} == before


@pytest.mark.parametrize(
    "params",
    [
        {"InstanceIds": "i-1,i-2"},
        {"InstanceIds": json.dumps([f"i-{n}" for n in range(101)])},
        {"MaxResults": "101"},
        {"MaxResults": "ten"},
        {"NextToken": "not-a-token"},
    ],
)
async def test_describe_instances_bad_parameters(api: Api, params: dict[str, str]) -> None:
    """Malformed InstanceIds, more than 100 ids, a bad MaxResults or NextToken: 400 InvalidParameter."""
    reply = await api.error("DescribeInstances", params)
    assert (reply.status, reply.code) == (400, "InvalidParameter")


async def test_small_max_results_becomes_ten(api: Api) -> None:
    """DescribeInstances turns MaxResults below 10 into 10."""
    body = await api.ok("DescribeInstances", {"MaxResults": "3"})
    assert len(body["Instances"]["Instance"]) == 10


async def test_cloud_assistant_status(make_api: MakeApi) -> None:
    """Status strings "true"/"false", paging 1..50 over all instances, or named ids."""
    emulator, api = await make_api(instances_per_region=120, agent_offline_fraction=0.25)
    items, pages = await all_pages(
        api,
        "DescribeCloudAssistantStatus",
        {},
        ["InstanceCloudAssistantStatusSet", "InstanceCloudAssistantStatus"],
        50,
    )
    assert pages == 3
    assert [i["InstanceId"] for i in items] == region_ids(emulator)
    assert sum(i["CloudAssistantStatus"] == "false" for i in items) == 30
    assert {i["CloudAssistantStatus"] for i in items} == {"true", "false"}
    assert {i["OSType"] for i in items} <= {"Linux", "Windows"}
    named = region_ids(emulator)[:3]
    body = await api.ok("DescribeCloudAssistantStatus", instance_params(named))
    statuses = body["InstanceCloudAssistantStatusSet"]["InstanceCloudAssistantStatus"]
    assert [s["InstanceId"] for s in statuses] == named
    reply = await api.error("DescribeCloudAssistantStatus", {"MaxResults": "51"})
    assert reply.code == "InvalidParameter"


async def test_cloud_assistant_status_counts_invocations(emu_api: tuple[Emulator, Api]) -> None:
    """InvocationCount and LastInvokedTime follow the invocations of the instance."""
    emulator, api = emu_api
    (iid,) = region_ids(emulator)[:1]
    await api.invoke([iid], DEMO_COMMAND_ID)
    await api.invoke([iid], DEMO_COMMAND_ID)
    body = await api.ok("DescribeCloudAssistantStatus", instance_params([iid]))
    (status,) = body["InstanceCloudAssistantStatusSet"]["InstanceCloudAssistantStatus"]
    assert status["InvocationCount"] == 2
    assert status["LastInvokedTime"].endswith("Z")


async def test_describe_invocations_paging_is_stable(emu_api: tuple[Emulator, Api]) -> None:
    """Paging newest first stays complete and duplicate-free while new invocations arrive."""
    emulator, api = emu_api
    ids = region_ids(emulator)
    created = [await api.invoke(ids[n : n + 2], DEMO_COMMAND_ID) for n in range(0, 50, 2)]
    seen: list[str] = []
    token = ""
    while True:
        query = {"MaxResults": "7", **({"NextToken": token} if token else {})}
        body = await api.ok("DescribeInvocations", query)
        seen.extend(i["InvokeId"] for i in body["Invocations"]["Invocation"])
        await api.invoke(ids[60:61], DEMO_COMMAND_ID)  # arrives between pages
        token = body["NextToken"]
        if not token:
            break
    assert seen == list(reversed(created))


async def test_describe_invocations_filters(emu_api: tuple[Emulator, Api]) -> None:
    """InstanceId, CommandId and InvokeId select the matching invocations only."""
    emulator, api = emu_api
    ids = region_ids(emulator)
    a = await api.invoke(ids[:2], DEMO_COMMAND_ID)
    b = await api.invoke(
        ids[1:3], DEMO_PARAM_COMMAND_ID, Parameters='{"name": "x", "version": "2"}'
    )
    by_instance = await api.ok("DescribeInvocations", {"InstanceId": ids[1]})
    assert [i["InvokeId"] for i in by_instance["Invocations"]["Invocation"]] == [b, a]
    by_command = await api.ok("DescribeInvocations", {"CommandId": DEMO_PARAM_COMMAND_ID})
    (only,) = by_command["Invocations"]["Invocation"]
    assert only["InvokeId"] == b
    assert json.loads(only["Parameters"]) == {"name": "x", "version": "2"}
    none = await api.ok("DescribeInvocations", {"InvokeId": "t-unknown"})
    assert none["Invocations"]["Invocation"] == []


async def test_describe_invocation_results_paging(make_api: MakeApi) -> None:
    """Records of many invocations page completely: every (invocation, instance) once."""
    emulator, api = await make_api(instances_per_region=60)
    ids = region_ids(emulator)
    invocations = [await api.invoke(ids[n : n + 20], DEMO_COMMAND_ID) for n in (0, 20, 40)]
    path = ["Invocation", "InvocationResults", "InvocationResult"]
    items, pages = await all_pages(api, "DescribeInvocationResults", {}, path, 7)
    pairs = [(r["InvokeId"], r["InstanceId"]) for r in items]
    assert len(pairs) == len(set(pairs)) == 60
    assert pages == 9
    assert {p[0] for p in pairs} == set(invocations)
    one, _ = await all_pages(
        api, "DescribeInvocationResults", {"InvokeId": invocations[1]}, path, 6
    )
    assert [r["InstanceId"] for r in one] == ids[20:40]
    assert all(r["FinishedTime"].endswith("Z") and "FinishTime" not in r for r in one)
    mine, _ = await all_pages(api, "DescribeInvocationResults", {"InstanceId": ids[25]}, path, 50)
    assert [(r["InvokeId"], r["InstanceId"]) for r in mine] == [(invocations[1], ids[25])]


async def test_results_output_base64_by_default(emu_api: tuple[Emulator, Api]) -> None:
    """Output is Base64 unless ContentEncoding=PlainText."""
    emulator, api = emu_api
    (iid,) = region_ids(emulator)[:1]
    invoke_id = await api.invoke([iid], DEMO_COMMAND_ID)
    body = await api.ok("DescribeInvocationResults", {"InvokeId": invoke_id})
    (record,) = body["Invocation"]["InvocationResults"]["InvocationResult"]
    assert base64.b64decode(record["Output"]).decode() == f"hello from {iid}\n"
    assert body["Invocation"]["TotalCount"] == 1


async def test_create_and_describe_commands(emu_api: tuple[Emulator, Api]) -> None:
    """CreateCommand makes a `c-` id; DescribeCommands pages all and shows ParameterNames."""
    emulator, api = emu_api
    content = base64.b64encode(b"echo {{ greeting }} {{target}} {{ACS::InstanceId}}").decode()
    created = []
    for n in range(12):
        body = await api.ok("CreateCommand", {"Name": f"cmd-{n}", "Type": "RunShellScript", "CommandContent": content, "EnableParameter": "true", "Timeout": "120"})  # fmt: skip
        created.append(body["CommandId"])
    assert all(c.startswith("c-") and len(c) == 19 for c in created)
    items, pages = await all_pages(api, "DescribeCommands", {}, ["Commands", "Command"], 5)
    assert pages == 3
    assert [c["CommandId"] for c in items] == [DEMO_COMMAND_ID, DEMO_PARAM_COMMAND_ID, *created]
    mine = items[2]
    assert mine["ParameterNames"]["ParameterName"] == ["greeting", "target"]
    assert (mine["EnableParameter"], mine["Timeout"], mine["CommandContent"]) == (
        True,
        120,
        content,
    )
    body = await api.ok("DescribeCommands", {"Name": "cmd-3"})
    assert [c["CommandId"] for c in body["Commands"]["Command"]] == [created[3]]
    invoke_id = await api.invoke(
        region_ids(emulator)[:1], created[0], Parameters='{"greeting": "hi"}'
    )
    assert invoke_id.startswith("t-")


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"Type": "RunShellScript", "CommandContent": "ZWNobw=="}, 400, "MissingParameter"),
        ({"Name": "x", "Type": "RunPythonScript", "CommandContent": "ZWNobw=="}, 404, "InvalidCmdType.NotFound"),
        ({"Name": "x", "Type": "RunShellScript", "CommandContent": "not base64!"}, 400, "InvalidCommandContent.Malformed"),
        ({"Name": "x", "Type": "RunShellScript", "CommandContent": "ZWNobw==", "Timeout": "1"}, 400, "InvalidParameter"),
    ],
)  # fmt: skip
async def test_create_command_errors(
    api: Api, params: dict[str, str], status: int, code: str
) -> None:
    """CreateCommand refuses a missing name, an unknown type, bad Base64 and a bad Timeout."""
    reply = await api.error("CreateCommand", params)
    assert (reply.status, reply.code) == (status, code)


async def test_describe_account_attributes(make_api: MakeApi) -> None:
    """max-axt-invocation-daily is the daily quota, in the SDK's wrapper shape."""
    _, api = await make_api(daily_quota=1234)
    body = await api.ok("DescribeAccountAttributes", {"AttributeName.1": "max-axt-invocation-daily", "AttributeName.2": "no-such-attribute"})  # fmt: skip
    (item,) = body["AccountAttributeItems"]["AccountAttributeItem"]
    assert item["AttributeName"] == "max-axt-invocation-daily"
    assert [v["Value"] for v in item["AttributeValues"]["ValueItem"]] == ["1234"]
    everything = await api.ok("DescribeAccountAttributes")
    names = [
        i["AttributeName"] for i in everything["AccountAttributeItems"]["AccountAttributeItem"]
    ]
    assert "max-axt-invocation-daily" in names
    assert len(names) > 1

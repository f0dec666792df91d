"""Commands in the emulator: ids per region, CreateCommand, DeleteCommand, DescribeCommands
filters, public commands (listed only with Provider), and every InvokeCommand parameter
recorded per invocation. Sources: the module docstring of `fanout.emulator.commands`."""

from __future__ import annotations

import base64

import pytest
from click.testing import CliRunner

from fanout.cli import main
from fanout.emulator import DEMO_COMMAND_NAME, Emulator, EmulatorConfig, demo_command_id
from fanout.emulator.commands import PUBLIC_COMMANDS
from fanout.emulator.fleet import Fleet

from .conftest import MakeApi
from .helpers import REGION, Api, instance_params

REGIONS = ("cn-hangzhou", "cn-beijing", "cn-shanghai")
PUBLIC = "ACS-ECS-DemoInstallPackage-linux.sh"


def first_id(emulator: Emulator, region: str = REGION) -> str:
    """The first instance id of a region."""
    return emulator.world.fleet.regions[region].instances[0].instance_id


async def describe(api: Api, region: str = REGION, **filters: str) -> list[dict[str, object]]:
    """DescribeCommands with these filters; the commands listed."""
    body = await api.ok("DescribeCommands", {"MaxResults": "50", **filters}, region=region)
    commands: list[dict[str, object]] = body["Commands"]["Command"]
    return commands


async def create(api: Api, name: str, content: str, region: str = REGION, **extra: str) -> str:
    """CreateCommand that must succeed; the new CommandId."""
    params = {
        "Name": name,
        "Type": "RunShellScript",
        "CommandContent": base64.b64encode(content.encode()).decode(),
        **extra,
    }
    body = await api.ok("CreateCommand", params, region=region)
    return str(body["CommandId"])


async def test_demo_commands_have_an_id_per_region(make_api: MakeApi) -> None:
    """No CommandId is shared across regions: each region lists its own demo ids, and another
    region's id is InvalidCmdId.NotFound there."""
    emulator, api = await make_api(regions=REGIONS, instances_per_region=2)
    ids = {region: demo_command_id(region) for region in REGIONS}
    assert len(set(ids.values())) == 3
    for region in REGIONS:
        listed = {c["CommandId"] for c in await describe(api, region, Name=DEMO_COMMAND_NAME)}
        assert listed == {ids[region]}
    params = {"CommandId": ids["cn-beijing"], **instance_params([first_id(emulator)])}
    reply = await api.error("InvokeCommand", params)
    assert (reply.status, reply.code) == (404, "InvalidCmdId.NotFound")


async def test_create_command_lives_in_one_region(make_api: MakeApi) -> None:
    """A command created in one region is unknown in the others; the state lists it there."""
    emulator, api = await make_api(regions=REGIONS, instances_per_region=2)
    command_id = await create(api, "deploy", "echo hi", region="cn-beijing")
    assert [c["CommandId"] for c in await describe(api, "cn-beijing", Name="deploy")] == [
        command_id
    ]
    assert await describe(api, "cn-hangzhou", Name="deploy") == []
    regions = emulator.snapshot()["regions"]
    assert regions["cn-beijing"]["commands_created"] == 1
    assert command_id in {c["command_id"] for c in regions["cn-beijing"]["commands"]}
    assert command_id not in {c["command_id"] for c in regions["cn-hangzhou"]["commands"]}


async def test_the_state_lists_each_regions_public_commands(make_api: MakeApi) -> None:
    """`/_emulator/state` names every region's public commands with their providers (what
    `--command-name NAME --provider PROVIDER` takes)."""
    emulator, _api = await make_api(regions=REGIONS, instances_per_region=1)
    for region in REGIONS:
        listed = emulator.snapshot()["regions"][region]["public_commands"]
        assert {(c["name"], c["provider"]) for c in listed} == {
            (c["name"], c["provider"]) for c in PUBLIC_COMMANDS
        }


async def test_describe_commands_filters(api: Api) -> None:
    """Name is exact, or a prefix ending in `*`; CommandId and Type filter exactly."""
    a = await create(api, "deploy-web", "echo web")
    b = await create(api, "deploy-db", "echo db")
    assert [c["CommandId"] for c in await describe(api, Name="deploy-web")] == [a]
    assert {c["CommandId"] for c in await describe(api, Name="deploy-*")} == {a, b}
    assert await describe(api, Name="deploy") == []
    assert [c["Name"] for c in await describe(api, CommandId=b)] == ["deploy-db"]
    assert await describe(api, Type="RunBatScript") == []


async def test_public_commands_only_with_provider(api: Api) -> None:
    """Public commands are not listed without Provider; `AlibabaCloud` lists every one of
    Alibaba Cloud's, a narrower provider only its own; with Provider, Name is fuzzy."""
    assert await describe(api, Name=PUBLIC) == []
    everything = {c["Name"] for c in await describe(api, Provider="AlibabaCloud")}
    assert everything == {PUBLIC, "ACS-ECS-DemoDiagnose-linux.sh"}
    narrow = await describe(api, Provider="AlibabaCloud.ECS.GuestOSDiagnose")
    assert [c["Name"] for c in narrow] == ["ACS-ECS-DemoDiagnose-linux.sh"]
    (found,) = await describe(api, Provider="AlibabaCloud", Name="InstallPackage")
    assert found["Name"] == PUBLIC
    assert found["ParameterNames"] == {"ParameterName": ["action", "packageName"]}
    assert found["Latest"] is True


async def test_public_command_invoked_by_name(emu_api: tuple[Emulator, Api]) -> None:
    """InvokeCommand takes a public command's name as CommandId, parameters validated."""
    emulator, api = emu_api
    params = {
        "CommandId": PUBLIC,
        "Parameters": '{"packageName":"nginx"}',
        **instance_params([first_id(emulator)]),
    }
    await api.ok("InvokeCommand", params)
    bad = {**params, "Parameters": '{"nope":"x"}'}
    reply = await api.error("InvokeCommand", bad)
    assert reply.code == "Parameter.NotMatched"


async def test_delete_command(make_api: MakeApi) -> None:
    """DeleteCommand removes the account's command; an unknown id is InvalidCmdId.NotFound, a
    public one Operation.Forbidden, one still running InvalidStatus.CmdIdInUse."""
    emulator, api = await make_api(exec_seconds=(100.0, 100.0))
    gone = await create(api, "old", "echo old")
    await api.ok("DeleteCommand", {"CommandId": gone})
    assert await describe(api, CommandId=gone) == []
    reply = await api.error("DeleteCommand", {"CommandId": gone})
    assert (reply.status, reply.code) == (404, "InvalidCmdId.NotFound")
    (public,) = await describe(api, Provider="AlibabaCloud.ECS.GuestOSDiagnose")
    reply = await api.error("DeleteCommand", {"CommandId": str(public["CommandId"])})
    assert (reply.status, reply.code) == (403, "Operation.Forbidden")
    busy = await create(api, "busy", "sleep 100")
    await api.invoke([first_id(emulator)], busy)
    reply = await api.error("DeleteCommand", {"CommandId": busy})
    assert (reply.status, reply.code) == (403, "InvalidStatus.CmdIdInUse")
    await api.control("clock", {"advance_s": 3600})
    await api.ok("DeleteCommand", {"CommandId": busy})


_OPTIONS = {
    "Timeout": "120",
    "Username": "deploy",
    "WorkingDir": "/srv",
    "WindowsPasswordName": "axtSecretPassword",
    "ContainerId": "docker://" + "ab" * 32,
    "ContainerName": "web-1",
    "TerminationMode": "ProcessTree",
    "Launcher": "python3",
    "ResourceGroupId": "rg-acfmzw2jz2z",
    "OssOutputDelivery": "oss://fanout-logs/runs/",
    "Tag.1.Key": "team",
    "Tag.1.Value": "sre",
}


async def test_invocation_records_every_parameter(emu_api: tuple[Emulator, Api]) -> None:
    """`/_emulator/state` shows, per invocation, every InvokeCommand parameter it carried."""
    emulator, api = emu_api
    invoke_id = await api.invoke([first_id(emulator)], demo_command_id(REGION), **_OPTIONS)
    (entry,) = [i for i in emulator.snapshot()["invocations"] if i["invoke_id"] == invoke_id]
    assert entry["options"] == _OPTIONS


@pytest.mark.parametrize(
    ("name", "value", "status", "code"),
    [
        ("TerminationMode", "Kill", 404, "InvalidTerminationMode.NotFound"),
        ("ContainerId", "abc", 400, "InvalidContainerId.Malformed"),
        ("ContainerName", "-bad", 400, "InvalidContainerName.Malformed"),
        ("ResourceGroupId", "group-1", 404, "InvalidResourceGroup.NotFound"),
        ("OssOutputDelivery", "s3://bucket/x", 400, "InvalidParameter.OssOutputDelivery"),
    ],
)
async def test_bad_option_values_are_refused(
    emu_api: tuple[Emulator, Api], name: str, value: str, status: int, code: str
) -> None:
    """Values the real service refuses get its code (facts 6.3; OssOutputDelivery's is inferred)."""
    emulator, api = emu_api
    params = {
        "CommandId": demo_command_id(REGION),
        name: value,
        **instance_params([first_id(emulator)]),
    }
    reply = await api.error("InvokeCommand", params)
    assert (reply.status, reply.code) == (status, code)


def test_list_shows_the_fleet_and_each_regions_commands() -> None:
    """`fanout emulator --list` (documented in its --help) prints every instance with its
    tags as a target line, each region's own demo command ids and its public commands with
    their providers, without serving."""
    args = ["emulator", "--regions", "cn-hangzhou,cn-beijing", "--instances-per-region", "4"]
    help_text = CliRunner().invoke(main, ["emulator", "--help"]).output
    assert "--list" in help_text
    assert "fanout-demo" in help_text
    done = CliRunner().invoke(main, [*args, "--list"])
    assert done.exit_code == 0, done.output
    targets = [line.split("\t")[0] for line in done.output.splitlines() if not line.startswith("#")]
    fleet = Fleet.from_config(
        EmulatorConfig(regions=("cn-hangzhou", "cn-beijing"), instances_per_region=4)
    )
    assert sorted(targets) == sorted(
        f"{r}:{i.instance_id}" for r, rf in fleet.regions.items() for i in rf.instances
    )
    assert "role=" in done.output
    for region in ("cn-hangzhou", "cn-beijing"):
        assert f"{demo_command_id(region)}\t{DEMO_COMMAND_NAME}" in done.output
    assert "# cn-hangzhou public commands" in done.output
    for command in PUBLIC_COMMANDS:  # the names to give with --command-name and --provider
        assert f"#   {command['name']}\t{command['provider']}" in done.output

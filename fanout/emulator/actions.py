"""The action table, and the smaller actions: commands, StopInvocation, account attributes.

InvokeCommand lives in `invoke`, the instance reads in `describe`, invocation reads in `results`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fanout.emulator.describe import describe_cloud_assistant_status, describe_instances
from fanout.emulator.fleet import COMMAND_TYPES, Command
from fanout.emulator.invoke import invoke_command
from fanout.emulator.params import decode_token, encode_token, take_page
from fanout.emulator.results import describe_invocation_results, describe_invocations
from fanout.emulator.state import Call
from fanout.emulator.timing import iso_utc
from fanout.emulator.wire import ApiFault, Body, invalid_parameter, missing_parameter

__all__ = ["ACTIONS", "Handler"]

Handler = Callable[[Call], Awaitable[Body]]

_MAX_STOP_INSTANCES = 50  # StopInvocation: InstanceId.N, N = 1..50
_MAX_NAME_CHARS = 128
_MAX_DESCRIPTION_CHARS = 512
_MAX_WORKING_DIR_CHARS = 200
_TIMEOUT_RANGE_S = (10, 86400)
_DEFAULT_TIMEOUT_S = 60
_COMMAND_PAGE = (1, 50)
_MAX_COMMANDS_PER_REGION = 500  # the documented default command quota per region


async def create_command(call: Call) -> Body:
    """CreateCommand: parameter names come from `{{name}}` placeholders when enabled."""
    params, world = call.params, call.world
    name = params.required("Name")
    type_ = params.required("Type")
    content_b64 = params.required("CommandContent")
    if len(name) > _MAX_NAME_CHARS:
        raise invalid_parameter("Name", f"At most {_MAX_NAME_CHARS} characters.")
    if type_ not in COMMAND_TYPES:
        raise ApiFault(404, "InvalidCmdType.NotFound", f"The specified command type does not exist: {type_}.")  # fmt: skip
    content = _decode_content(content_b64, params.get("ContentEncoding") or "Base64")
    command = Command(
        world.commands.new_id(),
        name,
        content,
        type_=type_,
        enable_parameter=params.boolean("EnableParameter"),
        timeout_s=params.integer("Timeout", _DEFAULT_TIMEOUT_S, *_TIMEOUT_RANGE_S),
        working_dir=params.get("WorkingDir"),
        description=params.get("Description"),
        created_s=call.now_s,
    )
    if len(command.working_dir) > _MAX_WORKING_DIR_CHARS:
        raise ApiFault(400, "InvalidParameter.WorkingDir", "The specified WorkingDir is too long.")
    if len(command.description) > _MAX_DESCRIPTION_CHARS:
        raise invalid_parameter("Description", f"At most {_MAX_DESCRIPTION_CHARS} characters.")
    if len(command.content_b64) > world.config.content_limit_bytes:
        raise ApiFault(403, "CmdContent.ExceedLimit", "The maximum length of a command is exceeded.")  # fmt: skip
    if len(world.commands.in_region(call.region)) >= _MAX_COMMANDS_PER_REGION:
        raise ApiFault(403, "CmdCount.ExceedQuota", "The maximum number of commands is exceeded.")
    world.commands.add(call.region, command)
    return {"CommandId": command.command_id}


def _decode_content(text: str, encoding: str) -> str:
    if encoding.lower() == "plaintext":
        return text
    if encoding.lower() != "base64":
        raise invalid_parameter("ContentEncoding", "It must be PlainText or Base64.")
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiFault(400, "InvalidCommandContent.Malformed", "The CommandContent is not valid Base64-encoded UTF-8 text.") from None  # fmt: skip


async def describe_commands(call: Call) -> Body:
    """DescribeCommands: CommandId / Name / Type filters, MaxResults and NextToken paging."""
    params = call.params
    max_results = params.integer("MaxResults", 10, *_COMMAND_PAGE)
    start = decode_token("cmd", params.get("NextToken"), 1)
    b64 = (params.get("ContentEncoding") or "Base64").lower() != "plaintext"
    commands = call.world.commands.in_region(call.region)
    wanted = {name: params.get(name) for name in ("CommandId", "Name", "Type") if params.get(name)}
    invoke_counts = call.world.invocations.command_counts

    def matching() -> Iterator[tuple[tuple[int], Command]]:
        for pos in range(0 if start is None else start[0], len(commands)):
            command = commands[pos]
            values = {"CommandId": command.command_id, "Name": command.name, "Type": command.type}
            if all(values[name] == value for name, value in wanted.items()):
                yield (pos,), command

    page, following = take_page(matching(), max_results)
    return {
        "TotalCount": sum(1 for _ in matching()) if wanted else len(commands),
        "PageNumber": 1,
        "PageSize": max_results,
        "NextToken": "" if following is None else encode_token("cmd", *following),
        "Commands": {
            "Command": [_command_body(c, b64, invoke_counts.get(c.command_id, 0)) for c in page]
        },
    }


def _command_body(command: Command, b64: bool, invoke_times: int) -> dict[str, Any]:
    return {
        "CommandId": command.command_id,
        "Name": command.name,
        "Type": command.type,
        "Description": command.description,
        "CommandContent": command.content_b64 if b64 else command.content,
        "EnableParameter": command.enable_parameter,
        "ParameterNames": {"ParameterName": list(command.parameter_names)},
        "Timeout": command.timeout_s,
        "WorkingDir": command.working_dir,
        "CreationTime": iso_utc(command.created_s),
        "InvokeTimes": invoke_times,
        "Provider": "",
        "Category": "",
        "Version": 1,
        "Latest": True,
        "Tags": {"Tag": []},
    }


async def stop_invocation(call: Call) -> Body:
    """StopInvocation: the whole invocation, or the named instances of it."""
    params, world = call.params, call.world
    invoke_id = params.get("InvokeId")
    if not invoke_id:
        raise missing_parameter("InvokeId")
    ids = params.repeated("InstanceId")
    if len(ids) > _MAX_STOP_INSTANCES:
        raise ApiFault(403, "InstanceIds.ExceedLimit", f"The maximum number of instances is exceeded: at most {_MAX_STOP_INSTANCES}.")  # fmt: skip
    inv = world.invocations.by_id.get(invoke_id)
    if inv is None or inv.region != call.region:
        raise ApiFault(404, "InvalidInvokeId.NotFound", f"The specified InvokeId does not exist: {invoke_id}.")  # fmt: skip
    positions = {iid: pos for pos, iid in enumerate(inv.spec.instance_ids)}
    unknown = [iid for iid in ids if iid not in positions]
    if unknown:
        raise ApiFault(404, "InvalidInstance.NotFound", f"The specified instance does not exist in the invocation: {', '.join(unknown)}.")  # fmt: skip
    now_s = world.clock.now()
    if not ids and inv.stop_all_s is None:
        inv.stop_all_s = now_s
    for iid in ids:
        inv.stops.setdefault(positions[iid], now_s)
    return {}


# Account attributes this emulator knows; `max-axt-invocation-daily` is the InvokeCommand quota.
_ATTRIBUTES: dict[str, Callable[[Call], list[str]]] = {
    "max-axt-invocation-daily": lambda call: [str(call.world.config.daily_quota)],
    "max-axt-command-count": lambda call: [str(_MAX_COMMANDS_PER_REGION)],
    "instance-network-type": lambda call: ["vpc", "classic"],
    "max-security-groups": lambda call: ["100"],
    "max-postpaid-instance-vcpu-count": lambda call: ["1000"],
    "supported-postpaid-instance-types": lambda call: ["ecs.g7.large"],
}


async def describe_account_attributes(call: Call) -> Body:
    """DescribeAccountAttributes: AttributeName.N (all known ones when none is named)."""
    names = call.params.repeated("AttributeName") or list(_ATTRIBUTES)
    items = [
        {
            "AttributeName": name,
            "AttributeValues": {
                "ValueItem": [{"Value": value, "Count": 1} for value in _ATTRIBUTES[name](call)]
            },
        }
        for name in names
        if name in _ATTRIBUTES
    ]
    return {"AccountAttributeItems": {"AccountAttributeItem": items}}


ACTIONS: dict[str, Handler] = {
    "InvokeCommand": invoke_command,
    "DescribeInvocations": describe_invocations,
    "DescribeInvocationResults": describe_invocation_results,
    "DescribeInstances": describe_instances,
    "DescribeCloudAssistantStatus": describe_cloud_assistant_status,
    "CreateCommand": create_command,
    "DescribeCommands": describe_commands,
    "StopInvocation": stop_invocation,
    "DescribeAccountAttributes": describe_account_attributes,
}

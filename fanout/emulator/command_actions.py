"""CreateCommand, DeleteCommand and DescribeCommands over the catalogue (`commands`, whose
docstring says how the real service behaves here and where that is written).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

from fanout.emulator.commands import COMMAND_TYPES, MAX_COMMANDS_PER_REGION, Command
from fanout.emulator.params import Params, encode_token, page_request, take_page
from fanout.emulator.state import Call
from fanout.emulator.timing import iso_utc
from fanout.emulator.wire import ApiFault, Body, invalid_parameter, missing_parameter

__all__ = ["create_command", "delete_command", "describe_commands"]

_DEFAULT_TIMEOUT_S = 60  # CreateCommand's documented default
_TIMEOUT_RANGE_S = (10, 86400)
_MAX_NAME_CHARS = 128
_MAX_DESCRIPTION_CHARS = 512
_MAX_WORKING_DIR_CHARS = 200
_COMMAND_PAGE = (1, 50)  # DescribeCommands MaxResults 1..50, default 10
_ACTIVE = ("Pending", "Running", "Scheduled")


async def create_command(call: Call) -> Body:
    """CreateCommand: parameter names come from `{{name}}` placeholders when enabled.

    With latency configured, part of it passes after the command is created and before the
    answer leaves (as for InvokeCommand): a test holds a created command's answer there.
    """
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
    if len(world.commands.in_region(call.region)) >= MAX_COMMANDS_PER_REGION:
        raise ApiFault(403, "CmdCount.ExceedQuota", "The maximum number of commands is exceeded.")
    world.commands.add(call.region, command)
    world.count_created(call.region)
    if call.processing_s:
        await world.clock.sleep(call.processing_s)
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


async def delete_command(call: Call) -> Body:
    """DeleteCommand: the account's command, unless an invocation of it is still active."""
    command_id = call.params.get("CommandId")
    if not command_id:
        raise missing_parameter("CommandId")
    world = call.world
    command = world.commands.get(call.region, command_id)
    if command is None:
        raise ApiFault(404, "InvalidCmdId.NotFound", "The specified command ID does not exist.")
    if command.public:
        raise ApiFault(403, "Operation.Forbidden", "The operation is not permitted.")
    for inv in world.invocations.by_region.get(call.region, []):
        if inv.spec.command.command_id == command.command_id and any(
            e.status.value in _ACTIVE for e in inv.executions(call.now_s)
        ):
            raise ApiFault(403, "InvalidStatus.CmdIdInUse", "The specified commandId is in use by some runing Invocation.")  # fmt: skip
    world.commands.remove(call.region, command.command_id)
    return {}


async def describe_commands(call: Call) -> Body:
    """DescribeCommands: CommandId / Name / Type filters; Provider for public commands;
    MaxResults and NextToken paging."""
    params = call.params
    paging = page_request(params, "cmd", 1, 10, *_COMMAND_PAGE)  # NextToken or PageNumber
    start = paging.start
    b64 = (params.get("ContentEncoding") or "Base64").lower() != "plaintext"
    provider = params.get("Provider")
    catalog = call.world.commands
    commands = (
        catalog.public_in(call.region, provider) if provider else catalog.in_region(call.region)
    )
    invoke_counts = call.world.invocations.command_counts

    def matching() -> Iterator[tuple[tuple[int], Command]]:
        for pos in range(0 if start is None else start[0], len(commands)):
            if _matches(commands[pos], params, fuzzy=bool(provider)):
                yield (pos,), commands[pos]

    page, following = take_page(matching(), paging.size, paging.skip)
    return {
        "TotalCount": sum(1 for _ in matching()),
        "PageNumber": paging.number,
        "PageSize": paging.size,
        "NextToken": "" if following is None else encode_token("cmd", *following),
        "Commands": {
            "Command": [_command_body(c, b64, invoke_counts.get(c.command_id, 0)) for c in page]
        },
    }


def _matches(command: Command, params: Params, *, fuzzy: bool) -> bool:
    """The CommandId, Type and Name filters (Name: see the module docstring)."""
    for name, value in (("CommandId", command.command_id), ("Type", command.type)):
        wanted = params.get(name)
        if wanted and wanted != value:
            return False
    wanted_name = params.get("Name")
    if not wanted_name:
        return True
    if fuzzy:
        return wanted_name.rstrip("*").lower() in command.name.lower()
    if wanted_name.endswith("*"):
        return command.name.startswith(wanted_name[:-1])
    return command.name == wanted_name


def _command_body(command: Command, b64: bool, invoke_times: int) -> dict[str, Any]:
    body: dict[str, Any] = {
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
        "Provider": command.provider,
        "Category": command.category,
        "Tags": {"Tag": []},
    }
    if command.public:  # Version and Latest are not returned for the account's own commands
        body["Version"] = 1
        body["Latest"] = True
        body["ParameterDefinitions"] = {
            "ParameterDefinition": [dict(d) for d in command.parameter_definitions]
        }
    return body

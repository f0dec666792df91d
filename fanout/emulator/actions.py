"""The action table, and the smaller actions: StopInvocation, account attributes.

InvokeCommand lives in `invoke`, the instance reads in `describe`, invocation reads in `results`,
the command actions in `command_actions`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fanout.emulator.command_actions import create_command, delete_command, describe_commands
from fanout.emulator.commands import MAX_COMMANDS_PER_REGION
from fanout.emulator.describe import describe_cloud_assistant_status, describe_instances
from fanout.emulator.invoke import invoke_command
from fanout.emulator.results import (
    describe_invocation_results,
    describe_invocations,
    own_invocation,
)
from fanout.emulator.state import Call
from fanout.emulator.wire import ApiFault, Body, missing_parameter

__all__ = ["ACTIONS", "Handler"]

Handler = Callable[[Call], Awaitable[Body]]

_MAX_STOP_INSTANCES = 50  # StopInvocation: InstanceId.N, N = 1..50


async def stop_invocation(call: Call) -> Body:
    """StopInvocation: the whole invocation, or the named instances of it.

    What a stop does to executions that already started is `stop_mode`'s (fanout.emulator.
    executions): by default they run on, as the API reference says (facts 10 [8]).
    """
    params, world = call.params, call.world
    invoke_id = params.get("InvokeId")
    if not invoke_id:
        raise missing_parameter("InvokeId")
    ids = params.repeated("InstanceId")
    if len(ids) > _MAX_STOP_INSTANCES:
        raise ApiFault(403, "InstanceIds.ExceedLimit", f"The maximum number of instances is exceeded: at most {_MAX_STOP_INSTANCES}.")  # fmt: skip
    inv = own_invocation(call, invoke_id)
    if inv is None:
        raise ApiFault(404, "InvalidInvokeId.NotFound", f"The specified InvokeId does not exist: {invoke_id}.")  # fmt: skip
    positions = {iid: pos for pos, iid in enumerate(inv.spec.instance_ids)}
    unknown = [iid for iid in ids if iid not in positions]
    if unknown:
        raise ApiFault(404, "InvalidInstance.NotFound", f"The specified instance does not exist in the invocation: {', '.join(unknown)}.")  # fmt: skip
    inv.stop(world.clock.now(), [positions[iid] for iid in ids] if ids else None)
    return {}


# Account attributes this emulator knows; `max-axt-invocation-daily` is the InvokeCommand quota.
_ATTRIBUTES: dict[str, Callable[[Call], list[str]]] = {
    "max-axt-invocation-daily": lambda call: [str(call.world.config.daily_quota)],
    "max-axt-command-count": lambda call: [str(MAX_COMMANDS_PER_REGION)],
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
    "DeleteCommand": delete_command,
    "DescribeCommands": describe_commands,
    "StopInvocation": stop_invocation,
    "DescribeAccountAttributes": describe_account_attributes,
}

"""`fanout doctor`: can these credentials run fanout in these regions? One call per action.

Per region, every read-only action fanout needs is called once (DescribeAccountAttributes,
DescribeInstances, DescribeCloudAssistantStatus, DescribeCommands, DescribeInvocations,
DescribeInvocationResults; each asks for one page of at most a few items): OK, or the RAM
permission that is missing, or why the call failed otherwise. With `check_invoke` the
actions that act are checked as well:

- InvokeCommand with `RepeatMode=DryRun` ("checks the request parameters, the execution
  environment and the Cloud Assistant agent status without running anything", facts 1.1) on one
  Running instance and one command of the region (or the ones given). The API reference does
  not say whether a dry run counts against the daily invocation quota: assume it costs one.
- StopInvocation of an InvokeId that does not exist: the API checks the permission first, so
  `InvalidInvokeId.NotFound` means it was granted. It stops nothing and costs no quota.
- CreateCommand with a command type that does not exist (`InvalidCmdType.NotFound`: nothing is
  created) and DeleteCommand of a CommandId that does not exist (`InvalidCmdId.NotFound`:
  nothing is deleted), the actions of `--script` and `fanout commands --prune`.

Any answer other than a permission refusal after the RAM check (a parameter the API rejects,
an unknown id) proves the permission is there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from fanout.aliyun.client import EcsClient
from fanout.aliyun.endpoints import resolve_endpoint
from fanout.aliyun.permissions import READ_ACTIONS, ram_permission
from fanout.errors import ApiError, CallError, CredentialsError, is_permission_code
from fanout.limits import read_limit

__all__ = ["DRY_RUN_COST", "ActionCheck", "RegionReport", "check_region", "check_regions"]

DRY_RUN_COST = (
    "--check-invoke sends one InvokeCommand with RepeatMode=DryRun per region; the API "
    "reference does not say whether a dry run counts against the daily invocation quota "
    "(max-axt-invocation-daily): count on it costing one. StopInvocation, CreateCommand and "
    "DeleteCommand are checked with an id or type that does not exist: they stop, create and "
    "delete nothing and cost no quota."
)
# A well-formed InvokeId no invocation has: StopInvocation answers InvalidInvokeId.NotFound.
_NO_SUCH_INVOKE_ID = "t-fanoutdoctor00000000000000000"
# A well-formed CommandId no command has (DeleteCommand answers InvalidCmdId.NotFound), and a
# command type the API does not know (CreateCommand answers InvalidCmdType.NotFound).
_NO_SUCH_COMMAND_ID = "c-fanoutdoctor000000"
_NO_SUCH_COMMAND_TYPE = "FanoutDoctorNoSuchType"
_PAGE = 10  # items asked for per listing: the smallest page every action accepts
# Refusals of the request itself (signature, key, token, time): they prove nothing about RAM.
_AUTH_CODES = (
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "InvalidAccessKeySecret",
    "InvalidSecurityToken",
    "InvalidTimeStamp",
    "SignatureNonceUsed",
    "MissingParameter",
)


@dataclass(frozen=True, slots=True)
class ActionCheck:
    """One action's verdict in one region."""

    action: str
    ok: bool
    permission: str  # the RAM permission the action needs
    missing: bool = False  # the permission is missing (the API refused it)
    code: str | None = None  # the API's code when it refused, or answered an error
    detail: str = ""  # what the answer was, in words

    def document(self) -> dict[str, Any]:
        """As `fanout doctor --json` shows it."""
        return {
            "ok": self.ok,
            "permission": self.permission,
            "missing_permission": self.missing,
            "code": self.code,
            "detail": self.detail,
        }


@dataclass(slots=True)
class RegionReport:
    """Every check of one region, with its endpoint and daily invocation quota."""

    region: str
    endpoint: str
    daily_quota: int | None = None
    checks: list[ActionCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)


async def _check(action: str, call: Callable[[], Awaitable[Any]], *, acting: bool = False) -> tuple[ActionCheck, Any]:  # fmt: skip
    """Run one call: OK, the permission missing, or what went wrong (and its result)."""
    permission = ram_permission(action)
    try:
        result = await call()
    except ApiError as err:
        if is_permission_code(err.code):
            return ActionCheck(action, False, err.permission or permission, True, err.code,
                               f"the RAM user or role needs {err.permission or permission}"), None  # fmt: skip
        if acting and err.http_status < 500 and not err.code.startswith(_AUTH_CODES):
            return ActionCheck(action, True, permission, code=err.code,
                               detail=f"permission granted (the API answered {err.code})"), None  # fmt: skip
        return ActionCheck(action, False, permission, code=err.code, detail=str(err)), None
    except (CallError, CredentialsError) as err:
        return ActionCheck(action, False, permission, detail=str(err)), None
    return ActionCheck(action, True, permission, detail="OK"), result


async def check_region(
    client: EcsClient,
    region: str,
    *,
    endpoint: str,
    check_invoke: bool = False,
    command_id: str | None = None,
    instance_id: str | None = None,
) -> RegionReport:
    """Every action fanout needs, once, in `region`."""
    report = RegionReport(region, endpoint)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "DescribeAccountAttributes": lambda: read_limit(client, region),
        "DescribeInstances": lambda: client.call(
            "DescribeInstances", region, {"MaxResults": _PAGE, "Status": "Running"}
        ),
        "DescribeCloudAssistantStatus": lambda: client.call(
            "DescribeCloudAssistantStatus", region, {"MaxResults": _PAGE}
        ),
        "DescribeCommands": lambda: client.call("DescribeCommands", region, {"MaxResults": _PAGE}),
        "DescribeInvocations": lambda: client.call(
            "DescribeInvocations", region, {"MaxResults": _PAGE}
        ),
        "DescribeInvocationResults": lambda: client.call(
            "DescribeInvocationResults", region, {"MaxResults": _PAGE}
        ),
    }
    results: dict[str, Any] = {}
    for action in READ_ACTIONS:
        check, results[action] = await _check(action, calls[action])
        report.checks.append(check)
    limit = results.get("DescribeAccountAttributes")
    report.daily_quota = limit if isinstance(limit, int) else None
    if check_invoke:
        report.checks += await _acting_checks(client, region, results, command_id, instance_id)
    return report


def _first(body: Any, *path: str) -> str | None:
    """The first item's id at `path` of a listing's body (None when there is none)."""
    node = body
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    items = node if isinstance(node, list) else []
    return str(items[0].get(path[-1])) if items and isinstance(items[0], dict) else None


async def _acting_checks(
    client: EcsClient,
    region: str,
    results: dict[str, Any],
    command_id: str | None,
    instance_id: str | None,
) -> list[ActionCheck]:
    """InvokeCommand (a dry run), StopInvocation, CreateCommand and DeleteCommand (of
    nothing)."""
    command = command_id or _first(
        results.get("DescribeCommands"), "Commands", "Command", "CommandId"
    )
    instance = instance_id or _first(
        results.get("DescribeInstances"), "Instances", "Instance", "InstanceId"
    )
    params: dict[str, object] = {
        "CommandId": command or "c-fanoutdoctor0000",
        "InstanceId": [instance or "i-fanoutdoctor00000"],
        "RepeatMode": "DryRun",
    }
    invoke, _ = await _check(
        "InvokeCommand", lambda: client.call("InvokeCommand", region, params), acting=True
    )
    stop, _ = await _check(
        "StopInvocation",
        lambda: client.call("StopInvocation", region, {"InvokeId": _NO_SUCH_INVOKE_ID}),
        acting=True,
    )
    create, _ = await _check(
        "CreateCommand",
        lambda: client.call(
            "CreateCommand",
            region,
            {"Name": "fanout-doctor", "Type": _NO_SUCH_COMMAND_TYPE, "CommandContent": "ZWNobw=="},
        ),
        acting=True,
    )
    delete, _ = await _check(
        "DeleteCommand",
        lambda: client.call("DeleteCommand", region, {"CommandId": _NO_SUCH_COMMAND_ID}),
        acting=True,
    )
    return [invoke, stop, create, delete]


async def check_regions(
    client: EcsClient,
    regions: Sequence[str],
    *,
    network: str,
    endpoint: str | None,
    check_invoke: bool = False,
    command_id: str | None = None,
    instance_id: str | None = None,
) -> list[RegionReport]:
    """`check_region` for every region, all at once."""
    reports: dict[str, RegionReport] = {}

    async def one(region: str) -> None:
        reports[region] = await check_region(
            client,
            region,
            endpoint=resolve_endpoint(region, network=network, override=endpoint),
            check_invoke=check_invoke,
            command_id=command_id,
            instance_id=instance_id,
        )

    async with anyio.create_task_group() as tg:
        for region in dict.fromkeys(regions):
            tg.start_soon(one, region)
    return [reports[r] for r in dict.fromkeys(regions)]

"""ECS API answers as frozen values: the JSON bodies of the actions fanout uses, parsed.

Each list in a body sits in a one-key wrapper object (`Instances.Instance[]`, see
`aliyun-api-facts.md` section 9); missing fields read as empty, never as an exception, because a
newer or older server may leave out fields fanout does not rely on. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

__all__ = [
    "AgentStatus",
    "Command",
    "Instance",
    "InstanceResult",
    "Invocation",
    "InvokeResult",
    "Page",
    "ParameterDefinition",
    "decode_text",
    "parse_account_attributes",
    "parse_agent_statuses",
    "parse_command_id",
    "parse_commands",
    "parse_instances",
    "parse_invocation_results",
    "parse_invocations",
    "parse_invoke",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing and the token of the next (empty when it was the last)."""

    items: tuple[T, ...]
    next_token: str = ""


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """InvokeCommand's answer."""

    invoke_id: str
    request_id: str


@dataclass(frozen=True, slots=True)
class InstanceResult:
    """One instance's result of one invocation.

    DescribeInvocationResults lists these as `InvocationResult[]`, DescribeInvocations as the
    `InvokeInstances.InvokeInstance[]` of each invocation: the same fields, except that the end
    time is `FinishedTime` in the first and `FinishTime` in the second (facts 2.1); both parse
    into `finish_time`.
    """

    invoke_id: str
    instance_id: str
    command_id: str
    status: str  # per-instance InvocationStatus: Pending, Running, Success, Failed, ...
    exit_code: int | None
    output: str
    dropped: int  # bytes of output cut off by the server (output over 24 KB)
    error_code: str
    error_info: str
    start_time: str | None
    finish_time: str | None
    stop_time: str | None
    repeats: int


@dataclass(frozen=True, slots=True)
class Invocation:
    """One invocation (DescribeInvocations) with its overall status."""

    invoke_id: str
    command_id: str
    status: str  # overall InvocationStatus
    creation_time: str | None
    instances: tuple[InstanceResult, ...]


# Instance and AgentStatus are made once per instance of the fleet by every preflight (100 000
# of each for 100 000 targets): as msgspec structs they are built in C (~0.2 us, a frozen
# dataclass takes ~1 us) and stay out of the cyclic garbage collector (gc=False: they hold
# text and a dict of text, never a cycle), which otherwise walks the run's whole heap more
# often. Still frozen values with equality, hashing and keyword or positional construction.


class Instance(msgspec.Struct, frozen=True, gc=False):
    """The preflight view of one ECS instance (DescribeInstances)."""

    instance_id: str
    region: str
    status: str
    network_type: str
    os_type: str
    zone_id: str
    tags: dict[str, str]


class AgentStatus(msgspec.Struct, frozen=True, gc=False):
    """Whether an instance's Cloud Assistant agent is online (DescribeCloudAssistantStatus)."""

    instance_id: str
    online: bool
    version: str
    os_type: str


@dataclass(frozen=True, slots=True)
class Command:
    """A Cloud Assistant command (DescribeCommands); `content` is decoded."""

    command_id: str
    name: str
    type: str
    content: str
    enable_parameter: bool
    parameter_names: tuple[str, ...]
    timeout_s: int
    working_dir: str = ""
    description: str = ""
    provider: str = ""  # a public (common) command's provider; "" for the account's own
    creation_time: str | None = None
    parameter_definitions: tuple[ParameterDefinition, ...] = ()  # public commands' own rules


@dataclass(frozen=True, slots=True)
class ParameterDefinition:
    """A public command's custom parameter as DescribeCommands defines it."""

    name: str
    required: bool
    default: str
    possible_values: tuple[str, ...]


def _is_mapping(value: object) -> bool:
    """A JSON object (a dict, as json.loads makes them, first: the ABC check is slow)."""
    return type(value) is dict or isinstance(value, Mapping)


def _items(body: Mapping[str, Any], *path: str) -> list[Mapping[str, Any]]:
    """The list at `path` (each list sits in a one-key wrapper object); [] when absent."""
    node: Any = body
    for key in path:
        node = node.get(key) if _is_mapping(node) else None
    return [item for item in node or () if _is_mapping(item)]


def _str(item: Mapping[str, Any], key: str) -> str:
    """A field as text ('' when missing or null)."""
    value = item.get(key)
    if type(value) is str:  # nearly always
        return value
    return "" if value is None else str(value)


def _opt_str(item: Mapping[str, Any], key: str) -> str | None:
    """A field as text, None when missing, null or empty."""
    return _str(item, key) or None


def _int(item: Mapping[str, Any], key: str, default: int = 0) -> int:
    """A field as an int (`default` when missing or not a number)."""
    value = _opt_int(item, key)
    return default if value is None else value


def _opt_int(item: Mapping[str, Any], key: str) -> int | None:
    """A field as an int, None when missing or not a number."""
    value = item.get(key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _bool(item: Mapping[str, Any], key: str) -> bool:
    """A JSON boolean, or the strings "true"/"false" in any case."""
    value = item.get(key)
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def decode_text(value: str, encoding: str) -> str:
    """`value` as text: Base64 is decoded (UTF-8, bad bytes replaced); anything else is as is."""
    if encoding.lower() != "base64" or not value:
        return value
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return value


def _page(items: Iterable[T], token: Any) -> Page[T]:
    """A page of parsed items."""
    return Page(tuple(items), "" if token is None else str(token))


def parse_invoke(body: Mapping[str, Any]) -> InvokeResult:
    """InvokeCommand: the InvokeId and RequestId."""
    return InvokeResult(invoke_id=_str(body, "InvokeId"), request_id=_str(body, "RequestId"))


def _instance_result(
    r: Mapping[str, Any], encoding: str, *, invoke_id: str, command_id: str, finish_key: str
) -> InstanceResult:
    """One per-instance entry; `invoke_id` / `command_id` are the entry's own or its parent's."""
    return InstanceResult(
        invoke_id=invoke_id,
        instance_id=_str(r, "InstanceId"),
        command_id=command_id,
        status=_str(r, "InvocationStatus") or _str(r, "InstanceInvokeStatus"),
        exit_code=_opt_int(r, "ExitCode"),
        output=decode_text(_str(r, "Output"), encoding),
        dropped=_int(r, "Dropped"),
        error_code=_str(r, "ErrorCode"),
        error_info=_str(r, "ErrorInfo"),
        start_time=_opt_str(r, "StartTime"),
        finish_time=_opt_str(r, finish_key),
        stop_time=_opt_str(r, "StopTime"),
        repeats=_int(r, "Repeats"),
    )


def parse_invocation_results(
    body: Mapping[str, Any], encoding: str = "PlainText"
) -> Page[InstanceResult]:
    """DescribeInvocationResults: `Invocation.InvocationResults.InvocationResult[]`."""
    wrapper = body.get("Invocation") or {}
    rows = _items(body, "Invocation", "InvocationResults", "InvocationResult")
    return _page(
        (
            _instance_result(
                r,
                encoding,
                invoke_id=_str(r, "InvokeId"),
                command_id=_str(r, "CommandId"),
                finish_key="FinishedTime",
            )
            for r in rows
        ),
        wrapper.get("NextToken") if isinstance(wrapper, Mapping) else None,
    )


def _invocation(
    r: Mapping[str, Any],
    encoding: str,
    statuses: Collection[str] | None,
    wanted: Mapping[str, Collection[str]] | None = None,
) -> Invocation:
    """One `Invocations.Invocation` entry with its instances (only those in `statuses`, and
    only those `wanted` names for it when it names it)."""
    invoke_id, command_id = _str(r, "InvokeId"), _str(r, "CommandId")
    keep = None if wanted is None else wanted.get(invoke_id)
    return Invocation(
        invoke_id=invoke_id,
        command_id=command_id,
        status=_str(r, "InvocationStatus") or _str(r, "InvokeStatus"),
        creation_time=_opt_str(r, "CreationTime"),
        instances=tuple(
            _instance_result(
                i, encoding, invoke_id=invoke_id, command_id=command_id, finish_key="FinishTime"
            )
            for i in _items(r, "InvokeInstances", "InvokeInstance")
            if (
                statuses is None
                or (i.get("InvocationStatus") or i.get("InstanceInvokeStatus")) in statuses
            )
            and (keep is None or i.get("InstanceId") in keep)
        ),
    )


def parse_invocations(
    body: Mapping[str, Any],
    encoding: str = "PlainText",
    *,
    invoke_ids: Collection[str] | None = None,
    statuses: Collection[str] | None = None,
    instance_ids: Mapping[str, Collection[str]] | None = None,
) -> Page[Invocation]:
    """DescribeInvocations: `Invocations.Invocation[].InvokeInstances.InvokeInstance[]`.

    `invoke_ids` keeps only those invocations; `statuses` keeps only instances in those states,
    and `instance_ids` (invoke id -> instance ids) only those instances of the invocations it
    names (a sweep over thousands of running instances then builds objects only for what it
    needs: not the ones it recorded at an earlier sweep).
    """
    return _page(
        (
            _invocation(r, encoding, statuses, instance_ids)
            for r in _items(body, "Invocations", "Invocation")
            if invoke_ids is None or r.get("InvokeId") in invoke_ids
        ),
        body.get("NextToken"),
    )


def parse_instances(body: Mapping[str, Any], region: str) -> Page[Instance]:
    """DescribeInstances: `Instances.Instance[]`, tags flattened into a dict."""
    return _page(
        (
            Instance(
                instance_id=_str(r, "InstanceId"),
                region=_str(r, "RegionId") or region,
                status=_str(r, "Status"),
                network_type=_str(r, "InstanceNetworkType"),
                os_type=_str(r, "OSType"),
                zone_id=_str(r, "ZoneId"),
                tags={_str(t, "TagKey"): _str(t, "TagValue") for t in _items(r, "Tags", "Tag")},
            )
            for r in _items(body, "Instances", "Instance")
        ),
        body.get("NextToken"),
    )


def parse_agent_statuses(body: Mapping[str, Any]) -> Page[AgentStatus]:
    """DescribeCloudAssistantStatus; `CloudAssistantStatus` is the string "true" (any case)."""
    rows = _items(body, "InstanceCloudAssistantStatusSet", "InstanceCloudAssistantStatus")
    return _page(
        (
            AgentStatus(
                instance_id=_str(r, "InstanceId"),
                online=_bool(r, "CloudAssistantStatus"),
                version=_str(r, "CloudAssistantVersion"),
                os_type=_str(r, "OSType"),
            )
            for r in rows
        ),
        body.get("NextToken"),
    )


def parse_commands(body: Mapping[str, Any]) -> Page[Command]:
    """DescribeCommands: `Commands.Command[]`; the content arrives Base64-encoded."""
    return _page(
        (
            Command(
                command_id=_str(r, "CommandId"),
                name=_str(r, "Name"),
                type=_str(r, "Type"),
                content=decode_text(_str(r, "CommandContent"), "Base64"),
                enable_parameter=_bool(r, "EnableParameter"),
                parameter_names=tuple(_parameter_names(r)),
                timeout_s=_int(r, "Timeout"),
                working_dir=_str(r, "WorkingDir"),
                description=_str(r, "Description"),
                provider=_str(r, "Provider"),
                creation_time=_opt_str(r, "CreationTime"),
                parameter_definitions=tuple(_parameter_definitions(r)),
            )
            for r in _items(body, "Commands", "Command")
        ),
        body.get("NextToken"),
    )


def _parameter_names(command: Mapping[str, Any]) -> list[str]:
    """`ParameterNames.ParameterName[]`, a list of strings."""
    wrapper = command.get("ParameterNames")
    names = wrapper.get("ParameterName") if isinstance(wrapper, Mapping) else None
    return [str(n) for n in names or ()]


def _parameter_definitions(command: Mapping[str, Any]) -> list[ParameterDefinition]:
    """`ParameterDefinitions.ParameterDefinition[]` (public commands)."""
    return [
        ParameterDefinition(
            name=_str(d, "ParameterName"),
            required=_bool(d, "Required"),
            default=_str(d, "DefaultValue"),
            possible_values=_possible_values(d),
        )
        for d in _items(command, "ParameterDefinitions", "ParameterDefinition")
    ]


def _possible_values(definition: Mapping[str, Any]) -> tuple[str, ...]:
    """`PossibleValues.PossibleValue[]` of a parameter definition (empty: any value)."""
    wrapper = definition.get("PossibleValues")
    values = wrapper.get("PossibleValue") if isinstance(wrapper, Mapping) else None
    return tuple(str(v) for v in values or () if v is not None)


def parse_command_id(body: Mapping[str, Any]) -> str:
    """CreateCommand: the new CommandId."""
    return _str(body, "CommandId")


def parse_account_attributes(body: Mapping[str, Any]) -> dict[str, list[str]]:
    """DescribeAccountAttributes: attribute name -> its values as text."""
    return {
        _str(item, "AttributeName"): [
            _str(v, "Value") for v in _items(item, "AttributeValues", "ValueItem")
        ]
        for item in _items(body, "AccountAttributeItems", "AccountAttributeItem")
    }

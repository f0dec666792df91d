"""The large answers decoded straight from their bytes into the values fanout keeps.

A DescribeInstances page of 100 instances is ~90 KB of JSON, ~30 fields per instance of which
preflight reads seven; DescribeCloudAssistantStatus sends nine per instance, preflight reads
four. A DescribeInvocations page lists up to 50 invocations of up to 50 instances each, with
~19 fields per instance of which the results stage reads eleven; DescribeInvocationResults
sends ~25 per record. `json.loads` builds every field as a Python object (and the garbage
collector then walks them), and the generic parsers of `fanout.aliyun.responses` walk the dicts
again. msgspec decodes only the fields named below, into untracked structs, and skips the rest
unbuilt.

Only what the schema expects is decoded here: a field of another JSON type, a list item that
is not an object, text that is not UTF-8 or not JSON at all make these return None, and the
caller parses the answer the generic, lenient way instead (`responses.parse_*`). Either way an
answer reads the same: missing and null fields as empty, `CloudAssistantStatus` as "true" in
any case; for the invocation reads, `ExitCode` a JSON integer (the generic parser also takes
numeric text), the status `InvocationStatus` or else `InstanceInvokeStatus`, and the
`invoke_ids` / `statuses` filters of `responses.parse_invocations` alike. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import msgspec

from fanout.aliyun.responses import (
    AgentStatus,
    Instance,
    InstanceResult,
    Invocation,
    Page,
    decode_text,
)

__all__ = [
    "decode_agent_statuses",
    "decode_instances",
    "decode_invocation_results",
    "decode_invocations",
]

# The structs mirror the JSON: attribute names are the API's own field names.


class _Tag(msgspec.Struct, gc=False):
    TagKey: str | None = None
    TagValue: str | None = None


class _Tags(msgspec.Struct, gc=False):
    Tag: list[_Tag] | None = None


class _Instance(msgspec.Struct, gc=False):
    InstanceId: str | None = None
    RegionId: str | None = None
    Status: str | None = None
    InstanceNetworkType: str | None = None
    OSType: str | None = None
    ZoneId: str | None = None
    Tags: _Tags | None = None


class _Instances(msgspec.Struct, gc=False):
    Instance: list[_Instance] | None = None


class _InstancesBody(msgspec.Struct, gc=False):
    NextToken: str | None = None
    Instances: _Instances | None = None


class _Status(msgspec.Struct, gc=False):
    InstanceId: str | None = None
    CloudAssistantStatus: bool | str | None = None
    CloudAssistantVersion: str | None = None
    OSType: str | None = None


class _StatusSet(msgspec.Struct, gc=False):
    InstanceCloudAssistantStatus: list[_Status] | None = None


class _StatusBody(msgspec.Struct, gc=False):
    NextToken: str | None = None
    InstanceCloudAssistantStatusSet: _StatusSet | None = None


class _Execution(msgspec.Struct, gc=False):
    """An `InvokeInstance` (DescribeInvocations) or an `InvocationResult` (...Results) entry."""

    InstanceId: str | None = None
    InvokeId: str | None = None  # results only
    CommandId: str | None = None  # results only
    InvocationStatus: str | None = None
    InstanceInvokeStatus: str | None = None
    ExitCode: int | None = None
    Output: str | None = None
    Dropped: int | None = None
    ErrorCode: str | None = None
    ErrorInfo: str | None = None
    StartTime: str | None = None
    FinishTime: str | None = None  # DescribeInvocations' name
    FinishedTime: str | None = None  # DescribeInvocationResults' name
    StopTime: str | None = None
    Repeats: int | None = None


class _InvokeInstances(msgspec.Struct, gc=False):
    InvokeInstance: list[_Execution] | None = None


class _Invocation(msgspec.Struct, gc=False):
    InvokeId: str | None = None
    CommandId: str | None = None
    InvocationStatus: str | None = None
    InvokeStatus: str | None = None
    CreationTime: str | None = None
    InvokeInstances: _InvokeInstances | None = None


class _Invocations(msgspec.Struct, gc=False):
    Invocation: list[_Invocation] | None = None


class _InvocationsBody(msgspec.Struct, gc=False):
    NextToken: str | None = None
    Invocations: _Invocations | None = None


class _Results(msgspec.Struct, gc=False):
    InvocationResult: list[_Execution] | None = None


class _ResultsWrapper(msgspec.Struct, gc=False):
    NextToken: str | None = None
    InvocationResults: _Results | None = None


class _ResultsBody(msgspec.Struct, gc=False):
    Invocation: _ResultsWrapper | None = None


_INSTANCES = msgspec.json.Decoder(_InstancesBody)
_STATUSES = msgspec.json.Decoder(_StatusBody)
_INVOCATIONS = msgspec.json.Decoder(_InvocationsBody)
_RESULTS = msgspec.json.Decoder(_ResultsBody)


def decode_instances(raw: bytes, region: str) -> Page[Instance] | None:
    """DescribeInstances as `responses.parse_instances` reads it; None: parse it that way."""
    try:
        body = _INSTANCES.decode(raw)
    except msgspec.DecodeError:  # not JSON, not UTF-8, or not the shape above
        return None
    rows = body.Instances.Instance if body.Instances is not None else None
    return Page(tuple(_instance(r, region) for r in rows or ()), body.NextToken or "")


def _instance(r: _Instance, region: str) -> Instance:
    tags = r.Tags.Tag if r.Tags is not None else None
    return Instance(
        instance_id=r.InstanceId or "",
        region=r.RegionId or region,
        status=r.Status or "",
        network_type=r.InstanceNetworkType or "",
        os_type=r.OSType or "",
        zone_id=r.ZoneId or "",
        tags={t.TagKey or "": t.TagValue or "" for t in tags or ()},
    )


def decode_agent_statuses(raw: bytes) -> Page[AgentStatus] | None:
    """DescribeCloudAssistantStatus as `responses.parse_agent_statuses` reads it; None: parse
    it that way."""
    try:
        body = _STATUSES.decode(raw)
    except msgspec.DecodeError:
        return None
    found = body.InstanceCloudAssistantStatusSet
    rows = found.InstanceCloudAssistantStatus if found is not None else None
    return Page(
        tuple(
            AgentStatus(
                instance_id=r.InstanceId or "",
                online=_online(r.CloudAssistantStatus),
                version=r.CloudAssistantVersion or "",
                os_type=r.OSType or "",
            )
            for r in rows or ()
        ),
        body.NextToken or "",
    )


def _online(value: bool | str | None) -> bool:
    """`CloudAssistantStatus`: the string "true" in any case (or a JSON boolean)."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def decode_invocation_results(
    raw: bytes, encoding: str = "PlainText"
) -> Page[InstanceResult] | None:
    """DescribeInvocationResults as `responses.parse_invocation_results` reads it; None: parse
    it that way."""
    try:
        body = _RESULTS.decode(raw)
    except msgspec.DecodeError:
        return None
    wrapper = body.Invocation
    if wrapper is None:
        return Page(())
    rows = wrapper.InvocationResults.InvocationResult if wrapper.InvocationResults else None
    return Page(
        tuple(
            _result(r, encoding, r.InvokeId or "", r.CommandId or "", r.FinishedTime)
            for r in rows or ()
        ),
        wrapper.NextToken or "",
    )


def decode_invocations(
    raw: bytes,
    encoding: str = "PlainText",
    *,
    invoke_ids: Collection[str] | None = None,
    statuses: Collection[str] | None = None,
    instance_ids: Mapping[str, Collection[str]] | None = None,
) -> Page[Invocation] | None:
    """DescribeInvocations as `responses.parse_invocations` reads it (the same filters); None:
    parse it that way."""
    try:
        body = _INVOCATIONS.decode(raw)
    except msgspec.DecodeError:
        return None
    rows = body.Invocations.Invocation if body.Invocations is not None else None
    return Page(
        tuple(
            _invocation(r, encoding, statuses, instance_ids)
            for r in rows or ()
            if invoke_ids is None or r.InvokeId in invoke_ids
        ),
        body.NextToken or "",
    )


def _invocation(
    r: _Invocation,
    encoding: str,
    statuses: Collection[str] | None,
    wanted: Mapping[str, Collection[str]] | None,
) -> Invocation:
    invoke_id, command_id = r.InvokeId or "", r.CommandId or ""
    entries = r.InvokeInstances.InvokeInstance if r.InvokeInstances is not None else None
    keep = None if wanted is None else wanted.get(invoke_id)
    return Invocation(
        invoke_id=invoke_id,
        command_id=command_id,
        status=r.InvocationStatus or r.InvokeStatus or "",
        creation_time=r.CreationTime or None,
        instances=tuple(
            _result(i, encoding, invoke_id, command_id, i.FinishTime)
            for i in entries or ()
            if (statuses is None or (i.InvocationStatus or i.InstanceInvokeStatus) in statuses)
            and (keep is None or i.InstanceId in keep)
        ),
    )


def _result(
    r: _Execution, encoding: str, invoke_id: str, command_id: str, finish_time: str | None
) -> InstanceResult:
    """One per-instance entry, as `responses._instance_result` reads it."""
    return InstanceResult(
        invoke_id=invoke_id,
        instance_id=r.InstanceId or "",
        command_id=command_id,
        status=r.InvocationStatus or r.InstanceInvokeStatus or "",
        exit_code=r.ExitCode,
        output=decode_text(r.Output or "", encoding),
        dropped=r.Dropped or 0,
        error_code=r.ErrorCode or "",
        error_info=r.ErrorInfo or "",
        start_time=r.StartTime or None,
        finish_time=finish_time or None,
        stop_time=r.StopTime or None,
        repeats=r.Repeats or 0,
    )

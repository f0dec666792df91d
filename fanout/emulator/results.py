"""DescribeInvocations and DescribeInvocationResults: following invocations to their results.

Invocations are listed newest first; a NextToken names the sequence number (and, for results,
the instance position) where the next page starts, so paging stays stable and complete while
new invocations arrive. The deprecated PageNumber/PageSize page the same listing.

Results are kept 4 weeks and up to 100 000 records per region (facts 10 [10]): an older
invocation, or one beyond the newest 100 000 records, is no longer listed (nor stoppable).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import Any

from fanout.emulator.executions import (
    Execution,
    Invocation,
    legacy_invoke_status,
)
from fanout.emulator.params import Params, encode_token, page_request, take_page
from fanout.emulator.state import Call
from fanout.emulator.timing import iso_utc
from fanout.emulator.wire import Body, invalid_parameter

__all__ = ["describe_invocation_results", "describe_invocations", "own_invocation", "retained"]

_PAGE = (1, 50)  # MaxResults 1..50
_DEFAULT_PAGE = 10
_TERMINAL_OVERALL = frozenset({"Success", "Failed", "PartialFailed", "Stopped"})
# InvokeStatus filters only an invocation that is not final yet can match (its overall status,
# or the legacy one, is Pending / Running / Scheduled until every execution has ended).
_UNFINISHED_ONLY = frozenset({"Pending", "Running", "Scheduled"})


def _encoding(params: Params) -> bool:
    """True for Base64 (the default), False for PlainText."""
    value = params.get("ContentEncoding") or "Base64"
    if value.lower() not in ("base64", "plaintext"):
        raise invalid_parameter("ContentEncoding", "It must be PlainText or Base64.")
    return value.lower() == "base64"


def _encode(text: str, base64_wanted: bool) -> str:
    return base64.b64encode(text.encode()).decode("ascii") if base64_wanted else text


def retained(call: Call, inv: Invocation) -> bool:
    """True while the API still keeps the invocation's results (4 weeks, 100 000 records)."""
    config, store = call.world.config, call.world.invocations
    if call.now_s - inv.created_s > config.result_retention_s:
        return False
    newer = store.records_by_region.get(inv.region, 0) - inv.records_before
    return newer <= config.result_retention_records


def own_invocation(call: Call, invoke_id: str) -> Invocation | None:
    """The invocation with this id in the call's region, while its results are kept."""
    inv = call.world.invocations.by_id.get(invoke_id)
    if inv is None or inv.region != call.region or not retained(call, inv):
        return None
    return inv


async def describe_invocations(call: Call) -> Body:
    """DescribeInvocations with InvokeId / InstanceId / CommandId / InvokeStatus filters."""
    params = call.params
    paging = page_request(params, "inv", 1, _DEFAULT_PAGE, *_PAGE)
    start = paging.start
    include_output = params.boolean("IncludeOutput")
    b64 = _encoding(params)
    status_filter = params.get("InvokeStatus")

    def wanted(inv: Invocation) -> list[Execution] | None:
        """The invocation's executions if it is listed (None: it is not)."""
        if not _invocation_matches(inv, params):
            return None
        executions = inv.executions(call.now_s)
        if not status_filter:
            return executions
        overall = inv.overall(executions)
        hit = status_filter in (overall, legacy_invoke_status(overall)) or (
            status_filter == "Finished" and overall in _TERMINAL_OVERALL
        )
        return executions if hit else None

    def matching() -> Iterator[tuple[tuple[int], dict[str, Any]]]:
        from_seq = None if start is None else start[0]
        unfinished = status_filter in _UNFINISHED_ONLY
        for inv in _invocations(call, params, from_seq, unfinished_only=unfinished):
            executions = wanted(inv)
            if executions is not None:
                yield (inv.seq,), _invocation_body(inv, executions, include_output, b64)

    page, following = take_page(matching(), paging.size, paging.skip)
    return {
        "TotalCount": _invocation_total(call, params),
        "PageNumber": paging.number,
        "PageSize": paging.size,
        "NextToken": "" if following is None else encode_token("inv", *following),
        "Invocations": {"Invocation": page},
    }


def _invocations(
    call: Call, params: Params, from_seq: int | None, *, unfinished_only: bool = False
) -> Iterator[Invocation]:
    """Candidates newest first, starting at sequence number `from_seq` (inclusive);
    `unfinished_only` leaves out a region's invocations already known to be final."""
    invoke_id = params.get("InvokeId")
    instance_id = params.get("InstanceId")
    if invoke_id:
        inv = own_invocation(call, invoke_id)
        if inv is not None and (from_seq is None or inv.seq <= from_seq):
            yield inv
        return
    if instance_id:
        history = call.world.invocations.of_instance(instance_id)
        for inv, _ in reversed(history):
            if inv.region == call.region and (from_seq is None or inv.seq <= from_seq):
                if not retained(call, inv):
                    return  # older ones are gone too
                yield inv
        return
    below = None if from_seq is None else from_seq + 1
    store = call.world.invocations
    listing = store.region_unfinished_newest_first if unfinished_only else store.region_newest_first
    for inv in listing(call.region, below):
        if not retained(call, inv):
            return  # newest first: every older one is gone too
        yield inv


def _invocation_matches(inv: Invocation, params: Params) -> bool:
    spec = inv.spec
    command = spec.command
    checks = (
        ("CommandId", command.command_id),
        ("CommandName", command.name),
        ("CommandType", command.type),
        ("RepeatMode", spec.repeat_mode),
    )
    if any(params.get(name) and params.get(name) != value for name, value in checks):
        return False
    return not params.get("Timed") or params.boolean("Timed") == spec.timed


def _invocation_total(call: Call, params: Params) -> int:
    """Exact when cheap (one invocation or instance); else the region's invocation count."""
    if params.get("InvokeId") or params.get("InstanceId"):
        return sum(
            1 for inv in _invocations(call, params, None) if _invocation_matches(inv, params)
        )
    return len(call.world.invocations.by_region.get(call.region, []))


def _invocation_body(
    inv: Invocation, executions: list[Execution], include_output: bool, b64: bool
) -> dict[str, Any]:
    spec = inv.spec
    overall = inv.overall(executions)
    return {
        "InvokeId": inv.invoke_id,
        "CommandId": spec.command.command_id,
        "CommandName": spec.command.name,
        "CommandType": spec.command.type,
        "CommandContent": _encode(spec.command.content, b64),
        "CommandDescription": spec.command.description,
        # "{}" without parameters: the SDK model's example (facts 10 [6]), JSON for every reader.
        "Parameters": json.dumps(spec.parameters or {}, ensure_ascii=False),
        "RepeatMode": spec.repeat_mode,
        "Frequency": spec.frequency,
        "Timed": spec.timed,
        "Timeout": spec.timeout_s,
        "Username": spec.username,
        "WorkingDir": spec.working_dir,
        "Launcher": "",
        "TerminationMode": spec.termination_mode,
        "ContainerId": "",
        "ContainerName": "",
        "OssOutputDelivery": "",
        "CreationTime": iso_utc(inv.created_s),
        "InvocationStatus": overall,
        "InvokeStatus": legacy_invoke_status(overall),
        "Tags": {"Tag": []},
        "InvokeInstances": {
            "InvokeInstance": _instance_bodies(inv, executions, include_output, b64)
        },
    }


def _instance_bodies(
    inv: Invocation, executions: list[Execution], include_output: bool, b64: bool
) -> list[dict[str, Any]]:
    """The instance entries; an entry is built once per state an execution goes through."""
    bodies = []
    cache = inv.bodies
    for pos, e in enumerate(executions):
        key = (pos, include_output, b64)
        cached = cache.get(key)
        if cached is not None and cached[0] is e:
            body = cached[1]
        else:
            body = _instance_body(inv, e, include_output, b64)
            cache[key] = (e, body)
        bodies.append(body)
    return bodies


def _instance_body(
    inv: Invocation, e: Execution, include_output: bool, b64: bool
) -> dict[str, Any]:
    return {
        "InstanceId": e.instance_id,
        "InvocationStatus": e.status.value,
        "InstanceInvokeStatus": e.record_status,
        "ExitCode": e.exit_code,
        "Output": _encode(e.output, b64) if include_output else "",
        "Dropped": e.dropped,
        "ErrorCode": e.error_code,
        "ErrorInfo": e.error_info,
        "Repeats": e.repeats,
        "Timed": inv.spec.timed,
        "CreationTime": iso_utc(inv.created_s),
        "StartTime": iso_utc(e.start_s),
        "FinishTime": iso_utc(e.finish_s),
        "StopTime": iso_utc(e.stop_s),
        "UpdateTime": iso_utc(e.update_s),
        "OssOutputStatus": "",
        "OssOutputUri": "",
        "OssOutputErrorCode": "",
        "OssOutputErrorInfo": "",
    }


async def describe_invocation_results(call: Call) -> Body:
    """DescribeInvocationResults: one record per (invocation, instance), wrapper `Invocation`."""
    params = call.params
    paging = page_request(params, "res", 2, _DEFAULT_PAGE, *_PAGE)
    start = paging.start
    b64 = _encoding(params)
    record_filter = params.get("InvokeRecordStatus")
    command_id = params.get("CommandId")

    def matching() -> Iterator[tuple[tuple[int, int], dict[str, Any]]]:
        for inv, pos in _records(call, params, start):
            if command_id and inv.spec.command.command_id != command_id:
                continue
            e = inv.execution(pos, call.now_s)
            if record_filter and record_filter not in (e.record_status, e.status.value):
                continue
            yield (inv.seq, pos), _result_body(inv, e, b64)

    page, following = take_page(matching(), paging.size, paging.skip)
    return {
        "Invocation": {
            "TotalCount": _results_total(call, params),
            "PageNumber": paging.number,
            "PageSize": paging.size,
            "NextToken": "" if following is None else encode_token("res", *following),
            "InvocationResults": {"InvocationResult": page},
        }
    }


def _records(
    call: Call, params: Params, start: tuple[int, ...] | None
) -> Iterator[tuple[Invocation, int]]:
    """(invocation, instance position) pairs: newest invocation first, instances in order."""
    instance_id = params.get("InstanceId")
    pairs: Iterable[tuple[Invocation, int]]
    if instance_id and not params.get("InvokeId"):
        pairs = [
            (inv, pos)
            for inv, pos in reversed(call.world.invocations.of_instance(instance_id))
            if inv.region == call.region and retained(call, inv)
        ]
    else:
        pairs = (
            (inv, pos)
            for inv in _invocations(call, params, None if start is None else start[0])
            for pos in range(len(inv.spec.instance_ids))
            if not instance_id or inv.spec.instance_ids[pos] == instance_id
        )
    for inv, pos in pairs:
        if start is None or inv.seq < start[0] or (inv.seq == start[0] and pos >= start[1]):
            yield inv, pos


def _results_total(call: Call, params: Params) -> int:
    """Exact when cheap (one invocation or instance); else the region's record count."""
    if params.get("InvokeId") or params.get("InstanceId"):
        return sum(1 for _ in _records(call, params, None))
    return call.world.invocations.records_by_region.get(call.region, 0)


def _result_body(inv: Invocation, e: Execution, b64: bool) -> dict[str, Any]:
    return {
        "CommandId": inv.spec.command.command_id,
        "InvokeId": inv.invoke_id,
        "InstanceId": e.instance_id,
        "InvocationStatus": e.status.value,
        "InvokeRecordStatus": e.record_status,
        "ExitCode": e.exit_code,
        "Output": _encode(e.output, b64),
        "Dropped": e.dropped,
        "ErrorCode": e.error_code,
        "ErrorInfo": e.error_info,
        "Repeats": e.repeats,
        "StartTime": iso_utc(e.start_s),
        "FinishedTime": iso_utc(e.finish_s),
        "StopTime": iso_utc(e.stop_s),
        "Username": inv.spec.username,
        "ContainerId": "",
        "ContainerName": "",
        "Launcher": "",
        "TerminationMode": inv.spec.termination_mode,
        "OssOutputDelivery": "",
        "OssOutputStatus": "",
        "OssOutputUri": "",
        "OssOutputErrorCode": "",
        "OssOutputErrorInfo": "",
        "Tags": {"Tag": []},
    }

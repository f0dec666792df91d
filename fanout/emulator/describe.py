"""DescribeInstances and DescribeCloudAssistantStatus: the preflight reads.

Paging never scans the fleet per request: a NextToken is the position of the next instance in
the region's stable order, tag filters start from a per-tag position index, and the filtered
TotalCount is computed once per (filters, fleet version) and cached. Pages of both actions are
assembled from each item's JSON text, written directly (`Rendered`).
"""

from __future__ import annotations

import bisect
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring

from fanout.emulator.executions import ExecutionStatus
from fanout.emulator.fleet import Instance, RegionFleet
from fanout.emulator.params import Params, encode_token, page_request, take_page
from fanout.emulator.state import Call, World
from fanout.emulator.timing import iso_utc
from fanout.emulator.wire import Body, Rendered, invalid_parameter

__all__ = ["describe_cloud_assistant_status", "describe_instances"]

_MAX_INSTANCE_IDS = 100  # DescribeInstances: InstanceIds holds at most 100 ids
_DESCRIBE_INSTANCES_PAGE = (10, 100)  # MaxResults: values below 10 become 10; at most 100
_STATUS_PAGE = (1, 50)  # DescribeCloudAssistantStatus MaxResults 1..50
_AGENT_VERSION = "2.2.3.857"
_HEARTBEAT_PERIOD_S = 60  # the agent reports roughly every minute
_COUNT_CACHE_LIMIT = 256
_FLEET_CREATED = "2026-01-01T00:00Z"
_EXPIRES = "2099-12-31T15:59Z"
_OS_NAMES = {
    "linux": "Alibaba Cloud Linux 3.2104 LTS 64 bit",
    "windows": "Windows Server 2022 Datacenter 64 bit",
}


@dataclass(frozen=True, slots=True)
class _InstanceFilter:
    status: str
    network: str
    zone_id: str
    tags: tuple[tuple[str, str], ...]

    def matches(self, inst: Instance) -> bool:
        if self.status and inst.status != self.status:
            return False
        if self.network and inst.network != self.network:
            return False
        if self.zone_id and inst.zone_id != self.zone_id:
            return False
        return all(tag in inst.tags for tag in self.tags)


async def describe_instances(call: Call) -> Body:
    """DescribeInstances: InstanceIds (JSON array), Status, network, zone, Tag.N; NextToken paging."""
    params = call.params
    fleet = call.world.fleet.regions[call.region]
    low, high = _DESCRIBE_INSTANCES_PAGE
    paging = page_request(params, "di", 1, low, 1, high)
    max_results, start = max(low, paging.size), paging.start
    filters = _InstanceFilter(
        params.get("Status"),
        params.get("InstanceNetworkType").lower(),
        params.get("ZoneId"),
        tuple(params.tags()),
    )
    candidates = _candidates(params, fleet, filters)

    def matching() -> Iterator[tuple[tuple[int], Instance]]:
        first = 0 if start is None else bisect.bisect_left(candidates, start[0])
        for pos in candidates[first:]:
            inst = fleet.instances[pos]
            if filters.matches(inst):
                yield (pos,), inst

    page, following = take_page(matching(), max_results, paging.skip)
    texts = [_instance_json(inst) for inst in page]
    return {
        "TotalCount": _total(call.world, fleet, filters, candidates),
        "PageNumber": paging.number,
        "PageSize": max_results,
        "NextToken": "" if following is None else encode_token("di", *following),
        "Instances": {"Instance": Rendered(texts, lambda: [json.loads(text) for text in texts])},
    }


def _candidates(params: Params, fleet: RegionFleet, filters: _InstanceFilter) -> Sequence[int]:
    """Sorted positions that may match: the named ids, the rarest tag, or the whole region."""
    text = params.get("InstanceIds")
    if text:
        try:
            ids = json.loads(text)
        except json.JSONDecodeError:
            raise invalid_parameter(
                "InstanceIds", "It must be a JSON array of instance ids."
            ) from None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise invalid_parameter("InstanceIds", "It must be a JSON array of instance ids.")
        if len(ids) > _MAX_INSTANCE_IDS:
            raise invalid_parameter("InstanceIds", f"At most {_MAX_INSTANCE_IDS} ids are allowed.")
        return sorted({fleet.by_id[i].index for i in ids if i in fleet.by_id})
    if filters.tags:
        return min((fleet.tag_positions(k, v) for k, v in filters.tags), key=len)
    return range(len(fleet.instances))


def _total(
    world: World, fleet: RegionFleet, filters: _InstanceFilter, candidates: Sequence[int]
) -> int:
    if not (filters.status or filters.network or filters.zone_id or filters.tags):
        return len(candidates)
    if len(candidates) <= _DESCRIBE_INSTANCES_PAGE[1]:
        return sum(1 for pos in candidates if filters.matches(fleet.instances[pos]))
    key = (fleet.region, fleet.version, filters)
    cached = world.count_cache.get(key)
    if cached is None:
        if len(world.count_cache) >= _COUNT_CACHE_LIMIT:
            world.count_cache.clear()
        cached = sum(1 for pos in candidates if filters.matches(fleet.instances[pos]))
        world.count_cache[key] = cached
    return cached


def _ip(index: int) -> str:
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


def _instance_json(inst: Instance) -> str:
    """One `Instances.Instance[]` item as JSON text, written directly (dicts then `json.dumps`
    took ~19 us per instance, 100 per page; this ~2.5). XML parses it back."""
    q = encode_basestring  # a JSON string literal, escaped exactly as json.dumps escapes it
    vpc = inst.network == "vpc"
    ip = f'"{_ip(inst.index)}"'
    tags = ",".join(f'{{"TagKey":{_quoted(k)},"TagValue":{q(v)}}}' for k, v in inst.tags)
    return (
        f'{{"InstanceId":{q(inst.instance_id)},"InstanceName":"fanout-{inst.index}",'
        f'"HostName":"fanout-{inst.index}","Status":{_quoted(inst.status)},'
        f"{_shared_fields(inst.network, inst.os_type, inst.region, inst.zone_id)}"
        f'"StoppedMode":"{"KeepCharging" if inst.status == "Stopped" else "Not-applicable"}",'
        f"{_vpc_fields(inst.region, inst.zone_id) if vpc else _CLASSIC_FIELDS}"
        f'"PrivateIpAddress":{{"IpAddress":[{ip if vpc else ""}]}},"NatIpAddress":""}},'
        f'"InnerIpAddress":{{"IpAddress":[{"" if vpc else ip}]}},'
        f'"PublicIpAddress":{{"IpAddress":[]}},"OperationLocks":{{"LockReason":[]}},'
        f'"Tags":{{"Tag":[{tags}]}}}}'
    )


# The parts of an instance's JSON that many instances share, escaped once.
_quoted = functools.lru_cache(maxsize=1024)(encode_basestring)


@functools.lru_cache(maxsize=1024)
def _shared_fields(network: str, os_type: str, region: str, zone_id: str) -> str:
    """From InstanceNetworkType to ExpiredTime, each followed by a comma."""
    q = encode_basestring
    os_name = q(_OS_NAMES.get(os_type, os_type))
    return (
        f'"InstanceNetworkType":{q(network)},"OSType":{q(os_type)},'
        f'"OSName":{os_name},"OSNameEn":{os_name},"RegionId":{q(region)},"ZoneId":{q(zone_id)},'
        f'"InstanceType":"ecs.g7.large","Cpu":2,"Memory":8192,"InstanceChargeType":"PostPaid",'
        f'"ResourceGroupId":"","CreationTime":"{_FLEET_CREATED}","ExpiredTime":"{_EXPIRES}",'
    )


@functools.lru_cache(maxsize=1024)
def _vpc_fields(region: str, zone_id: str) -> str:
    """The start of VpcAttributes for a VPC instance."""
    q = encode_basestring
    vpc_id, vswitch_id = q(f"vpc-{region}-fanout"), q(f"vsw-{zone_id}-fanout")
    return f'"VpcAttributes":{{"VpcId":{vpc_id},"VSwitchId":{vswitch_id},'


_CLASSIC_FIELDS = '"VpcAttributes":{"VpcId":"","VSwitchId":"",'


@functools.lru_cache(maxsize=64)
def _os_type_shown(os_type: str) -> str:
    """DescribeCloudAssistantStatus' OSType (`Linux`, `Windows`) as a JSON string."""
    return encode_basestring(os_type.capitalize())


async def describe_cloud_assistant_status(call: Call) -> Body:
    """DescribeCloudAssistantStatus: InstanceId.N, or every instance with MaxResults/NextToken."""
    params = call.params
    fleet = call.world.fleet.regions[call.region]
    os_type = params.get("OSType").lower()
    ids = params.repeated("InstanceId")
    if len(ids) > _MAX_INSTANCE_IDS:
        raise invalid_parameter("InstanceId", f"At most {_MAX_INSTANCE_IDS} ids are allowed.")
    low, high = _STATUS_PAGE
    paging = page_request(params, "cas", 1, 10, low, high)
    max_results, start = paging.size, paging.start
    if ids:
        found = [fleet.by_id[i] for i in ids if i in fleet.by_id]
        page = [inst for inst in found if not os_type or inst.os_type == os_type]
        following, total, max_results = None, len(page), max(len(page), 1)
    else:
        first = 0 if start is None else start[0]
        candidates = (
            ((pos,), fleet.instances[pos])
            for pos in range(first, len(fleet.instances))
            if not os_type or fleet.instances[pos].os_type == os_type
        )
        page, following = take_page(candidates, max_results, paging.skip)
        total = len(fleet.instances)
    texts = [_status_json(call, inst) for inst in page]
    return {
        "TotalCount": total,
        "PageNumber": paging.number,
        "PageSize": max_results,
        "NextToken": "" if following is None else encode_token("cas", *following),
        "InstanceCloudAssistantStatusSet": {
            "InstanceCloudAssistantStatus": Rendered(
                texts, lambda: [json.loads(text) for text in texts]
            )
        },
    }


def _status_json(call: Call, inst: Instance) -> str:
    """One `InstanceCloudAssistantStatus[]` item as JSON text (as `_instance_json`)."""
    q = encode_basestring
    online = inst.agent_online and inst.status == "Running"
    history = call.world.invocations.of_instance(inst.instance_id)
    active = (
        sum(
            1
            for inv, pos in history[-_STATUS_PAGE[1] :]
            if inv.execution(pos, call.now_s).status
            in (ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.SCHEDULED)
        )
        if history
        else 0
    )
    heartbeat = iso_utc(call.now_s - inst.index % _HEARTBEAT_PERIOD_S) if online else ""
    last_invoked = iso_utc(history[-1][0].created_s) if history else ""
    return (
        f'{{"InstanceId":{q(inst.instance_id)},"CloudAssistantStatus":"{str(online).lower()}",'
        f'"CloudAssistantVersion":"{_AGENT_VERSION if inst.agent_online else ""}",'
        f'"OSType":{_os_type_shown(inst.os_type)},"LastHeartbeatTime":"{heartbeat}",'
        f'"ActiveTaskCount":{active},"InvocationCount":{len(history)},'
        f'"LastInvokedTime":"{last_invoked}","SupportSessionManager":true}}'
    )

"""The preflight's large answers decoded straight from their bytes into the values fanout keeps.

A DescribeInstances page of 100 instances is ~90 KB of JSON, ~30 fields per instance of which
preflight reads seven; DescribeCloudAssistantStatus sends nine per instance, preflight reads
four. `json.loads` builds every field as a Python object (and the garbage collector then walks
them), and the generic parsers of `fanout.aliyun.responses` walk the dicts again. msgspec decodes
only the fields named below, into untracked structs, and skips the rest unbuilt.

Only what the schema expects is decoded here: a field of another JSON type, a list item that
is not an object, text that is not UTF-8 or not JSON at all make these return None, and the
caller parses the answer the generic, lenient way instead (`responses.parse_*`). Either way an
answer reads the same: missing and null fields as empty, `CloudAssistantStatus` as "true" in
any case. Pure: no I/O.
"""

from __future__ import annotations

import msgspec

from fanout.aliyun.responses import AgentStatus, Instance, Page

__all__ = ["decode_agent_statuses", "decode_instances"]

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


_INSTANCES = msgspec.json.Decoder(_InstancesBody)
_STATUSES = msgspec.json.Decoder(_StatusBody)


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

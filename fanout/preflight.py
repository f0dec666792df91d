"""Preflight: free, read-only Describe calls that find instances InvokeCommand would refuse.

One unusable instance fails a whole InvokeCommand call (spec S9) and the failed call still costs
quota, so instances that do not exist, are not Running (S3), are on the classic network (S2) or
whose Cloud Assistant agent is offline (S4) are excluded before any call is spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from fanout.aliyun.client import EcsClient

__all__ = ["DESCRIBE_INSTANCES_MAX", "STATUS_MAX", "find_unusable", "preflight_region"]

DESCRIBE_INSTANCES_MAX = 100  # facts 2.5: InstanceIds takes at most 100 ids
STATUS_MAX = 50  # facts 2.4: no documented maximum; 50 is the safe page size
# Describe calls in flight per region during preflight: they are throttled per region too.
_PREFLIGHT_CONCURRENCY = 4

REASON_NOT_FOUND = "not found in the region"
REASON_CLASSIC = "classic network, not VPC (spec S2)"
REASON_AGENT = "Cloud Assistant agent not online (spec S4)"


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """`items` cut into slices of at most `size`."""
    return [items[i : i + size] for i in range(0, len(items), size)]


async def find_unusable(
    client: EcsClient, region: str, instance_ids: Sequence[str]
) -> dict[str, str]:
    """Instance id -> why InvokeCommand would refuse it, for the ids given (any number)."""
    unusable: dict[str, str] = {}
    running: list[str] = []
    for chunk in _chunks(instance_ids, DESCRIBE_INSTANCES_MAX):
        found = {
            i.instance_id: i for i in await client.describe_instances(region, instance_ids=chunk)
        }
        for iid in chunk:
            inst = found.get(iid)
            if inst is None:
                unusable[iid] = REASON_NOT_FOUND
            elif inst.status != "Running":
                unusable[iid] = f"status {inst.status}, not Running (spec S3)"
            elif inst.network_type.lower() != "vpc":
                unusable[iid] = REASON_CLASSIC
            else:
                running.append(iid)
    for chunk in _chunks(running, STATUS_MAX):
        online = {
            s.instance_id
            for s in await client.describe_cloud_assistant_status(region, chunk)
            if s.online
        }
        unusable.update({iid: REASON_AGENT for iid in chunk if iid not in online})
    return unusable


async def preflight_region(
    client: EcsClient, region: str, instance_ids: Sequence[str]
) -> dict[str, str]:
    """`find_unusable` over a whole region's targets, a few Describe calls in flight at once."""
    unusable: dict[str, str] = {}
    slots = anyio.CapacityLimiter(_PREFLIGHT_CONCURRENCY)

    async def one(chunk: Sequence[str]) -> None:
        async with slots:
            unusable.update(await find_unusable(client, region, chunk))

    async with anyio.create_task_group() as tg:
        for chunk in _chunks(instance_ids, DESCRIBE_INSTANCES_MAX):
            tg.start_soon(one, chunk)
    return unusable

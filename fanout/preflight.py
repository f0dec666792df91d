"""Preflight: free, read-only Describe calls that find instances InvokeCommand would refuse.

One unusable instance fails a whole InvokeCommand call (spec S9) and the failed call still costs
quota, so instances that do not exist, are not Running (S3), are on the classic network (S2) or
whose Cloud Assistant agent is offline (S4) are excluded before any call is spent.

Also here, because it is a Describe call too: tag targeting (DescribeInstances with tag
filters, all pages). The command check is `fanout.commands` (DescribeCommands per region).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import anyio
import structlog

from fanout.errors import CallError
from fanout.targets import Target

if TYPE_CHECKING:
    from fanout.aliyun.client import EcsClient

__all__ = [
    "DESCRIBE_INSTANCES_MAX",
    "STATUS_MAX",
    "check_credentials",
    "find_unusable",
    "preflight_region",
    "preflight_targets",
    "resolve_tags",
]

log = structlog.get_logger("fanout.preflight")

DESCRIBE_INSTANCES_MAX = 100  # facts 2.5: InstanceIds takes at most 100 ids
# DescribeCloudAssistantStatus takes up to 100 InstanceId.N in the current API reference
# (facts 2.4 left it open; the emulator enforces 100, fanout/emulator/describe.py).
STATUS_MAX = 100
# Describe calls in flight per region by default (Settings.preflight_concurrency): ECS throttles
# per region, so every region runs at once with its own slots.
DEFAULT_PREFLIGHT_CONCURRENCY = 8

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


async def preflight_targets(
    client: EcsClient,
    targets: Sequence[Target],
    *,
    concurrency: int = DEFAULT_PREFLIGHT_CONCURRENCY,
) -> dict[tuple[str, str], str]:
    """(region, id) -> reason for every target InvokeCommand would refuse; every region at once."""
    by_region: dict[str, list[str]] = {}
    for t in targets:
        by_region.setdefault(t.region, []).append(t.instance_id)
    found: dict[str, dict[str, str]] = {}

    async def one(region: str, ids: Sequence[str]) -> None:
        found[region] = await preflight_region(client, region, ids, concurrency=concurrency)

    async with anyio.create_task_group() as tg:
        for region, ids in by_region.items():
            tg.start_soon(one, region, ids)
    return {
        (region, iid): reason for region in sorted(found) for iid, reason in found[region].items()
    }


async def preflight_region(
    client: EcsClient,
    region: str,
    instance_ids: Sequence[str],
    *,
    concurrency: int = DEFAULT_PREFLIGHT_CONCURRENCY,
) -> dict[str, str]:
    """`find_unusable` over a whole region's targets, `concurrency` chunks in flight at once.

    Each chunk of 100 ids is one DescribeInstances then one DescribeCloudAssistantStatus, so the
    calls of different chunks overlap; a throttled region backs off in the client on its own.
    """
    unusable: dict[str, str] = {}
    chunks = iter(_chunks(instance_ids, DESCRIBE_INSTANCES_MAX))

    async def worker() -> None:
        # `concurrency` workers share one iterator: a million targets are not ten thousand
        # tasks created at once, each holding its chunk while it waits for a slot.
        for chunk in chunks:
            unusable.update(await find_unusable(client, region, chunk))

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, concurrency)):
            tg.start_soon(worker)
    return unusable


async def check_credentials(client: EcsClient, regions: Sequence[str], command_id: str) -> None:
    """One free DescribeCommands per region before any InvokeCommand of a stored run (resume):
    a signature, key or token the API refuses is raised; any other failure is left to the run."""
    refused: list[CallError] = []

    async def one(region: str) -> None:
        try:
            await client.describe_commands(region, command_id=command_id)
        except CallError as exc:
            if exc.is_authentication:
                refused.append(exc)

    async with anyio.create_task_group() as tg:
        for region in sorted(set(regions)):
            tg.start_soon(one, region)
    if refused:
        raise refused[0]


async def resolve_tags(
    client: EcsClient, regions: Sequence[str], tags: Mapping[str, str]
) -> list[Target]:
    """Every instance in `regions` that carries all of `tags` (DescribeInstances, every page)."""
    found: dict[str, list[str]] = {}
    failures: list[CallError] = []

    async def one(region: str) -> None:  # pages follow each other; the regions run at once
        try:
            instances = await client.describe_instances(region, tags=tags)
        except CallError as exc:  # raised below, not out of the task group (no ExceptionGroup)
            failures.append(exc)
            return
        # The filter is the server's; checking it again guards against a lax one.
        found[region] = [
            i.instance_id for i in instances if all(i.tags.get(k) == v for k, v in tags.items())
        ]

    async with anyio.create_task_group() as tg:
        for region in dict.fromkeys(regions):
            tg.start_soon(one, region)
    if failures:
        raise failures[0]
    return [Target(region, iid) for region in dict.fromkeys(regions) for iid in found[region]]

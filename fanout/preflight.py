"""Preflight: free, read-only Describe calls that find instances InvokeCommand would refuse.

One unusable instance fails a whole InvokeCommand call (spec S9) and the failed call still costs
quota, so instances that do not exist, are not Running (S3), are on the classic network (S2) or
whose Cloud Assistant agent is offline (S4) are excluded before any call is spent.

Also here, because they are Describe calls too: the command check (DescribeCommands in every
target region, then the pure rules of `fanout.validate`) and tag targeting (DescribeInstances
with tag filters, all pages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import anyio
import structlog

from fanout.errors import CallError
from fanout.targets import Target
from fanout.validate import SpecLike, validate_command

if TYPE_CHECKING:
    from fanout.aliyun.client import EcsClient
    from fanout.aliyun.responses import Command

__all__ = [
    "DESCRIBE_INSTANCES_MAX",
    "STATUS_MAX",
    "check_command",
    "find_unusable",
    "preflight_region",
    "resolve_tags",
]

log = structlog.get_logger("fanout.preflight")

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


# Describe calls in flight while checking commands or resolving tags, all regions together.
_REGION_CONCURRENCY = 4


async def _describe_command(client: EcsClient, region: str, command_id: str) -> Command | None:
    """The command as DescribeCommands shows it in `region` (None: there is none)."""
    found = await client.describe_commands(region, command_id=command_id)
    return next((c for c in found if c.command_id == command_id), None)


async def check_command(
    client: EcsClient,
    regions: Sequence[str],
    spec: SpecLike,
    *,
    content_limit_bytes: int,
    now_s: float,
) -> None:
    """Validate `spec` against the command in every region; ConfigError names what is wrong.

    One DescribeCommands per region, free, so it runs even with --no-preflight. If that call
    itself fails (no permission for DescribeCommands, the API unreachable), the region is not
    checked: a warning is logged and the run goes on (InvokeCommand still enforces every rule).
    """
    found: dict[str, Command | None] = {}
    slots = anyio.CapacityLimiter(_REGION_CONCURRENCY)

    async def one(region: str) -> None:
        async with slots:
            try:
                found[region] = await _describe_command(client, region, spec.command_id)
            except CallError as exc:
                log.warning(
                    "command_not_checked",
                    region=region,
                    command_id=spec.command_id,
                    error=str(exc),
                    hint="DescribeCommands failed; InvokeCommand will apply the rules itself",
                )

    async with anyio.create_task_group() as tg:
        for region in sorted(set(regions)):
            tg.start_soon(one, region)
    for region in sorted(found):
        validate_command(
            found[region],
            spec,
            region=region,
            content_limit_bytes=content_limit_bytes,
            now_s=now_s,
        )


async def resolve_tags(
    client: EcsClient, regions: Sequence[str], tags: Mapping[str, str]
) -> list[Target]:
    """Every instance in `regions` that carries all of `tags` (DescribeInstances, every page)."""
    found: dict[str, list[str]] = {}
    failures: list[CallError] = []
    slots = anyio.CapacityLimiter(_REGION_CONCURRENCY)

    async def one(region: str) -> None:
        async with slots:
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

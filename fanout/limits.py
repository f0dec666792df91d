"""The account's own daily InvokeCommand quota, read per region from the API.

DescribeAccountAttributes reports it per region as `max-axt-invocation-daily` (facts 10 [16]):
the old reference's 5000 is long gone (2 000 - 200 000 by ECS usage, no number at all in the
current one) and the quota also counts executions fanout never sees (console, other tools).
fanout reads it at plan and run time, in every target region at once, and uses it unless
`--daily-quota` (or `daily_quota` in the config) overrides it; then the API's value is still
shown. A region whose limit cannot be read (no permission for DescribeAccountAttributes, the
API unreachable) falls back to the configured value, with one warning for all such regions;
credentials the API refuses (signature, key, token) are raised: nothing else would pass either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import anyio
import structlog

from fanout.errors import CallError
from fanout.ledger import SetQuotaLimit
from fanout.quota import QUOTA_ATTRIBUTE, QuotaPolicy, RegionLimit, RegionQuotas

if TYPE_CHECKING:
    from fanout.aliyun.client import EcsClient

__all__ = ["limit_records", "read_limit", "read_region_quotas", "reread_limit"]

log = structlog.get_logger("fanout.limits")


async def read_limit(client: EcsClient, region: str) -> int:
    """`max-axt-invocation-daily` in `region`; CallError or ValueError when it is not there."""
    values = (await client.describe_account_attributes(region, [QUOTA_ATTRIBUTE])).get(
        QUOTA_ATTRIBUTE
    )
    if not values:
        raise ValueError(f"DescribeAccountAttributes in {region} has no {QUOTA_ATTRIBUTE}")
    limit = int(values[0])
    if limit < 0:
        raise ValueError(f"{QUOTA_ATTRIBUTE} in {region} is negative ({limit})")
    return limit


async def read_region_quotas(
    client: EcsClient, regions: Iterable[str], base: QuotaPolicy, *, configured: int | None
) -> RegionQuotas:
    """Every region's limit: the API's, unless `configured` overrides it; `base` is the
    fallback (and the reserve, mode and time zone)."""
    read: dict[str, int] = {}
    errors: dict[str, str] = {}
    refused: list[CallError] = []

    async def one(region: str) -> None:
        try:
            read[region] = await read_limit(client, region)
        except CallError as exc:
            if exc.is_authentication:  # every call would be refused alike: not a fallback
                refused.append(exc)
            errors[region] = str(exc)
        except ValueError as exc:
            errors[region] = str(exc)

    async with anyio.create_task_group() as tg:
        for region in sorted(set(regions)):
            tg.start_soon(one, region)
    if refused:  # raised here, not out of the task group (no ExceptionGroup)
        raise refused[0]
    limits = _limits(read, errors, base, configured)
    if errors and configured is None:
        log.warning(
            "daily quota not readable",
            attribute=QUOTA_ATTRIBUTE,
            regions=sorted(errors),
            using=base.daily_quota,
            error=next(iter(errors.values())),
            hint="set --daily-quota to the account's quota, or allow ecs:DescribeAccountAttributes",
        )
    return RegionQuotas(base, limits)


def _limits(
    read: dict[str, int], errors: dict[str, str], base: QuotaPolicy, configured: int | None
) -> dict[str, RegionLimit]:
    """Each region's limit from what was read (or why not) and the configured override."""
    limits: dict[str, RegionLimit] = {}
    for region in sorted({*read, *errors}):
        api = read.get(region)
        if configured is not None:
            limits[region] = RegionLimit(configured, "configured", api, errors.get(region))
        elif api is not None:
            limits[region] = RegionLimit(api, "api", api)
        else:
            limits[region] = RegionLimit(base.daily_quota, "default", None, errors[region])
    return limits


async def reread_limit(client: EcsClient, quotas: RegionQuotas, region: str) -> RegionLimit | None:
    """Read `region`'s limit again (it may have been raised meanwhile) unless it is configured;
    the new limit, or None when it was not read."""
    current = quotas.limit_of(region)
    if current is not None and current.source == "configured":
        return None
    try:
        api = await read_limit(client, region)
    except (CallError, ValueError) as exc:
        log.info("daily quota not re-read", region=region, error=str(exc))
        return None
    limit = RegionLimit(api, "api", api)
    quotas.update(region, limit)
    return limit


def limit_records(account: str, quotas: RegionQuotas, now: float) -> list[SetQuotaLimit]:
    """The ledger rows of the limits the API reported (what `fanout quota` shows later)."""
    return [
        SetQuotaLimit(account, region, limit.api_limit, "api", now)
        for region, limit in sorted(quotas.limits.items())
        if limit.api_limit is not None
    ]

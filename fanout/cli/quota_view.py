"""`fanout quota`'s document: per region the limit (the API's, read now or last read; or the
configured override), fanout's own use in the window, what is left, the last refusal, and when
capacity frees (`None`: it is not known)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fanout.ledger import LedgerStore, QuotaRefusal
from fanout.quota import DAY_S, DEFAULT_DAILY_QUOTA, RegionQuotas
from fanout.report import iso
from fanout.settings import Settings

__all__ = ["quota_document", "quota_regions"]


def quota_regions(store: LedgerStore, account: str, settings: Settings, now: float) -> set[str]:
    """The regions the ledger knows for the account: calls in the window, limits, refusals."""
    used = store.quota_used(account, settings.quota.window_start(now))
    refusals = store.quota_refusals(account, since=now - DAY_S)
    return {*used, *store.quota_limits(account), *(r.region for r in refusals)}


def _limit(
    region: str,
    settings: Settings,
    live: RegionQuotas | None,
    stored: tuple[int, str, float] | None,
) -> tuple[int, str, int | None, str | None]:
    """(limit in use, where it comes from, the API's limit, when that was read)."""
    read = live.limit_of(region) if live is not None else None
    api = read.api_limit if read is not None else None
    api_at = "now" if api is not None else None
    if api is None and stored is not None:
        api, api_at = stored[0], iso(stored[2])
    if settings.daily_quota is not None:
        return settings.daily_quota, "configured", api, api_at
    if api is not None:
        return api, "api", api, api_at
    return DEFAULT_DAILY_QUOTA, "default", None, None


def _refusal(refusal: QuotaRefusal | None) -> dict[str, Any] | None:
    """The last refusal as the document shows it."""
    if refusal is None:
        return None
    return {
        "at": iso(refusal.at),
        "code": refusal.code,
        "message": refusal.message,
        "request_id": refusal.request_id,
        "own_calls": refusal.used,
        "limit": refusal.limit,
        "explained": refusal.explained,
        "capacity": "fanout's own calls: frees as the window moves"
        if refusal.explained
        else "unknown: other users of the account's quota",
        "retry_at": iso(refusal.retry_at),
    }


def quota_document(
    store: LedgerStore,
    account: str,
    settings: Settings,
    regions: Sequence[str],
    live: RegionQuotas | None,
    now: float,
) -> dict[str, Any]:
    """The `fanout quota --json` document."""
    base = settings.quota
    start = base.window_start(now)
    used = store.quota_used(account, start)
    stored = store.quota_limits(account)
    last: dict[str, QuotaRefusal] = {}
    for newest in store.quota_refusals(account, since=now - DAY_S):  # newest first
        last.setdefault(newest.region, newest)
    doc_regions: dict[str, Any] = {}
    for region in regions:
        limit, source, api, api_at = _limit(region, settings, live, stored.get(region))
        policy = replace(base, daily_quota=limit)
        count = used.get(region, (0, 0.0))[0]
        left = policy.left(count)
        refusal = last.get(region)
        frees: str | None = None
        if left == 0:
            frees = iso(policy.frees_at(store.quota_times(account, region, start), now))
        if refusal is not None and refusal.retry_at is not None and refusal.retry_at > now:
            frees = iso(refusal.retry_at) if refusal.explained else None
        doc_regions[region] = {
            "limit": limit,
            "limit_source": source,
            "api_limit": api,
            "api_limit_read": api_at,
            "used": count,
            "left": left,
            "next_call_frees_at": frees,
            "last_refusal": _refusal(refusal),
        }
    return {
        "account": account,
        "mode": base.mode.value,
        "daily_quota": settings.daily_quota,
        "reserve": base.reserve,
        "regions": doc_regions,
    }

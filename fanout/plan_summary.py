"""What `fanout plan` reports: per region targets, exclusions, calls, quota left and ETA. Pure.

`plan_document` takes the targets, the preflight's exclusions, the quota already used and `now`
and returns the `fanout plan --json` document (the CLI renders it as text). The ETA spends what
is left of the quota now, then `daily_quota - quota_reserve` per quota day: `days` is the quota
day on which a region's last call goes (1: within the current one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from fanout.plan import Plan, estimate_region, make_plan, parse_waves
from fanout.quota import QuotaPolicy, RegionQuotas
from fanout.report import iso
from fanout.targets import Target

__all__ = ["PLAN_CALL_LATENCY_S", "PlanSettings", "plan_document"]

# Seconds one InvokeCommand takes on the wire, for the ETA when --rate does not bound it.
PLAN_CALL_LATENCY_S = 0.2


class PlanSettings(Protocol):
    """The settings a plan reads (`fanout.settings.Settings` is one)."""

    @property
    def batch_size(self) -> int:
        """Instances per InvokeCommand call."""

    @property
    def quota(self) -> QuotaPolicy:
        """The daily quota policy."""

    @property
    def rate_per_s(self) -> float:
        """InvokeCommand calls per second per region (0: unlimited)."""

    @property
    def region_concurrency(self) -> int:
        """InvokeCommand calls in flight per region."""


def plan_document(
    targets: Sequence[Target],
    excluded: Mapping[tuple[str, str], str],
    settings: PlanSettings,
    used: Mapping[str, tuple[int, float]],
    *,
    duplicates: int,
    now: float,
    quotas: RegionQuotas | None = None,
    waves: str | None = None,
    wave_order: str = "spread",
) -> dict[str, Any]:
    """The `fanout plan` document of `targets` less the `(region, instance_id)` in `excluded`.

    `used` is the quota already spent per region (calls, oldest call) and `duplicates` the number
    of duplicate targets dropped; `now` (epoch seconds) dates the ETAs. `quotas` are the regions'
    daily limits as read from the API (None: the settings' limit everywhere). `waves` and
    `wave_order` cut the plan as `run` will: each wave's instances and calls per region.
    """
    quotas = quotas or RegionQuotas(settings.quota)
    kept = [t for t in targets if (t.region, t.instance_id) not in excluded]
    cuts = parse_waves(waves, len(kept)) if kept else ()
    plan = make_plan(
        "plan", kept, batch_size=settings.batch_size, waves=cuts or None, wave_order=wave_order
    )
    per_region = Counter(t.region for t in targets)
    calls_by_region = Counter(b.region for b in plan.batches)
    reasons_by_region: dict[str, Counter[str]] = {}
    for (region, _iid), reason in excluded.items():
        reasons_by_region.setdefault(region, Counter())[reason] += 1
    regions = {
        region: _region_entry(
            region,
            per_region[region],
            dict(reasons_by_region.get(region, Counter())),
            calls_by_region[region],
            settings,
            quotas,
            used.get(region, (0, 0.0))[0],
            now,
        )
        for region in sorted(per_region)
    }
    last = max(regions.values(), key=lambda r: r["finish_after_s"], default=None)
    return {
        "targets": len(targets),
        "duplicates_dropped": duplicates,
        "batch_size": settings.batch_size,
        "calls_needed": len(plan.batches),
        "excluded": len(excluded),
        "days": max((r["days"] for r in regions.values()), default=0),
        "finishes_at": last["finishes_at"] if last else None,
        "quota_mode": settings.quota.mode.value,
        "regions": regions,
        "waves": _waves(plan),
        "wave_order": wave_order,
        "spends_quota": False,
    }


def _waves(plan: Plan) -> list[dict[str, Any]]:
    """Each wave (from 1) with its instances and calls, in total and per region."""
    waves: dict[int, dict[str, Any]] = {}
    for b in plan.batches:
        wave = waves.setdefault(
            b.wave, {"wave": b.wave + 1, "instances": 0, "calls": 0, "regions": {}}
        )
        wave["instances"] += len(b.instance_ids)
        wave["calls"] += 1
        region = wave["regions"].setdefault(b.region, {"instances": 0, "calls": 0})
        region["instances"] += len(b.instance_ids)
        region["calls"] += 1
    for wave in waves.values():
        wave["regions"] = dict(sorted(wave["regions"].items()))
    return [waves[k] for k in sorted(waves)]


def _region_entry(
    region: str,
    targets: int,
    reasons: dict[str, int],
    calls: int,
    settings: PlanSettings,
    quotas: RegionQuotas,
    used: int,
    now: float,
) -> dict[str, Any]:
    """One region of the plan document: its targets, exclusions, calls, quota and ETA."""
    policy = quotas.policy(region)
    limit = quotas.limit_of(region)
    left = policy.left(used)
    eta = estimate_region(
        region,
        calls,
        quota_left_now=left,
        daily_quota=policy.daily_quota,
        reserve=policy.reserve,
        rate_per_s=settings.rate_per_s or None,
        call_latency_s=PLAN_CALL_LATENCY_S,
        concurrency=settings.region_concurrency,
    )
    return {
        "targets": targets,
        "excluded": sum(reasons.values()),
        "excluded_by_reason": reasons,
        "batches": calls,
        "calls_needed": calls,
        "daily_quota": policy.daily_quota,
        "quota_source": limit.source if limit is not None else "configured",
        "api_daily_quota": limit.api_limit if limit is not None else None,
        "quota_left_now": left,
        "calls_now": min(calls, left),
        "days": eta.days,
        "finish_after_s": round(eta.finish_after_s, 1),
        "finishes_at": iso(now + eta.finish_after_s),
    }

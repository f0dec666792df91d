"""The plan: waves, per-region batches, deterministic ids and ClientTokens, quota ETA. Pure.

`make_plan` cuts an ordered target list into waves (cumulative target counts), each wave into
per-region batches of at most `batch_size` instances: one InvokeCommand call each. The same
inputs always give the same batch ids and ClientTokens, so re-planning the same input resumes a
run instead of invoking anything twice (design I1).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from fanout.errors import ConfigError, TargetError
from fanout.targets import Target

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "WAVE_ORDERS",
    "Batch",
    "Plan",
    "RegionEta",
    "RegionPlan",
    "batch_id",
    "client_token",
    "estimate_region",
    "make_plan",
    "parse_waves",
    "split_batch_id",
]

# why 100: the current per-call InstanceId limit (aliyun-api-facts 1.1: "N = 1 to 100").
MAX_BATCH_SIZE = 100
# why 50: the seed InvokeCommand document's limit, safe for every account (facts, open question 1).
DEFAULT_BATCH_SIZE = 50
# why 64: ClientToken is at most 64 ASCII characters (facts 6.4). "fo1-" + 56 hex = 60.
_TOKEN_PREFIX = "fo1-"  # noqa: S105 - a format prefix, not a secret
_TOKEN_HEX_CHARS = 56
# why 80: batch ids are ledger keys and log fields; long ones fall back to a hashed form.
_MAX_BATCH_ID_CHARS = 80
_BATCH_ID_HASH_CHARS = 20
# A byte that never occurs in run ids, regions or instance ids keeps the hashed fields apart.
_FIELD_SEPARATOR = "\x1f"
_SECONDS_PER_QUOTA_DAY = 86_400.0

_WAVE_COUNT = re.compile(r"[0-9]+")
_WAVE_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")


@dataclass(frozen=True, slots=True)
class Batch:
    """One InvokeCommand call: up to `batch_size` instances of one region, in one wave."""

    batch_id: str
    region: str
    seq: int  # global 0-based running index in (wave, region, chunk) order
    wave: int  # 0-based
    instance_ids: tuple[str, ...]
    client_token: str


@dataclass(frozen=True, slots=True)
class RegionPlan:
    """What one region gets: its targets and the InvokeCommand calls they need."""

    region: str
    targets: int
    batches: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Every batch of a run, in dispatch order."""

    run_id: str
    batch_size: int
    batches: tuple[Batch, ...]
    regions: tuple[RegionPlan, ...]  # sorted by region
    waves: tuple[int, ...]  # cumulative target counts; the last is target_count
    target_count: int


def client_token(run_id: str, region: str, instance_ids: Sequence[str]) -> str:
    """The ClientToken of one call: deterministic, 60 ASCII characters, new for any other ids.

    The ids are hashed in the order given (the order they are sent), so a batch that shrinks
    after bad instances are isolated gets a new token, while a resend of the same batch reuses it.
    """
    text = _FIELD_SEPARATOR.join((run_id, region, *instance_ids))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return f"{_TOKEN_PREFIX}{digest[:_TOKEN_HEX_CHARS]}"


def split_batch_id(parent_id: str, instance_ids: Sequence[str]) -> str:
    """The id of a batch split off `parent_id` with `instance_ids`: deterministic, <= 80 chars."""
    digest = hashlib.sha256(_FIELD_SEPARATOR.join((parent_id, *instance_ids)).encode()).hexdigest()
    readable = f"{parent_id}-s{digest[:8]}"
    if len(readable) <= _MAX_BATCH_ID_CHARS:
        return readable
    return f"s{digest[:_BATCH_ID_HASH_CHARS]}"


def batch_id(run_id: str, region: str, seq: int) -> str:
    """A short, deterministic, readable batch id: `{run_id}-{region}-{seq:06d}` (<= 80 chars)."""
    readable = f"{run_id}-{region}-{seq:06d}"
    if len(readable) <= _MAX_BATCH_ID_CHARS:
        return readable
    digest = hashlib.sha256(f"{run_id}{_FIELD_SEPARATOR}{region}".encode()).hexdigest()
    return f"b{digest[:_BATCH_ID_HASH_CHARS]}-{seq:06d}"


def _wave_size(element: str, total: int) -> int:
    """The cumulative target count one `--waves` element asks for (before capping at total)."""
    if _WAVE_COUNT.fullmatch(element):
        count = int(element)
        if count < 1:
            raise ConfigError(f"--waves: {element!r} must be at least 1")
        return count
    percent = _WAVE_PERCENT.fullmatch(element)
    if percent is None:
        raise ConfigError(
            f"--waves: {element[:40]!r} is neither a target count nor a percentage like '10%'"
        )
    share = Fraction(percent.group(1))  # exact: 10% of 1000 is 100, never 100.00000000000001
    if not 0 < share <= 100:
        raise ConfigError(f"--waves: {element!r} must be above 0% and at most 100%")
    return max(1, math.ceil(share * total / 100))


def parse_waves(spec: str | None, total: int) -> tuple[int, ...]:
    """Cumulative wave sizes for `total` targets from a spec such as `1,10%,50%,100%`.

    Each element is an absolute count or a percentage of `total` (rounded up, at least 1). The
    sizes must not decrease; they are capped at `total`, repeats are merged, and a final wave is
    added when the last one stops short of `total`. No spec means one wave; no targets, none.
    """
    elements = [] if not spec or not spec.strip() else [e.strip() for e in spec.split(",")]
    sizes: list[int] = []
    previous = ("", 0)
    for element in elements:
        if not element:
            raise ConfigError(f"--waves: empty element in {spec!r}")
        size = _wave_size(element, total)
        if size < previous[1]:
            raise ConfigError(
                f"--waves: {element!r} ({size} targets) is smaller than the wave before it "
                f"({previous[0]!r}, {previous[1]} targets); waves are cumulative"
            )
        previous = (element, size)
        capped = min(size, total)
        if capped > 0 and (not sizes or capped > sizes[-1]):
            sizes.append(capped)
    if total > 0 and (not sizes or sizes[-1] < total):
        sizes.append(total)
    return tuple(sizes)


def _check_waves(waves: tuple[int, ...] | None, total: int) -> tuple[int, ...]:
    """The wave bounds to use: given ones must rise strictly and end at `total`."""
    if waves is None:
        return (total,) if total else ()
    bounds = (0, *waves)
    rising = all(a < b for a, b in itertools.pairwise(bounds))
    if not rising or (waves[-1] if waves else 0) != total:
        raise ConfigError(f"waves {waves!r} must rise strictly and end at the target count {total}")
    return waves


def _group(targets: Sequence[Target]) -> dict[str, list[str]]:
    """Instance ids by region, in input order."""
    by_region: dict[str, list[str]] = {}
    for target in targets:
        ids = by_region.get(target.region)
        if ids is None:
            ids = by_region[target.region] = []
        ids.append(target.instance_id)
    return by_region


def _spread(by_region: dict[str, list[str]], bounds: tuple[int, ...]) -> list[dict[str, list[str]]]:
    """Each wave's ids per region: every region gives its share of each cumulative bound.

    A region's cumulative count at bound b is its proportional share of b (largest remainders,
    ties by region name; at least one each once b reaches the number of regions), never less
    than at the bound before; so the waves add up to every target, and a canary as large as the
    number of regions has an instance in each.
    """
    total = sum(len(ids) for ids in by_region.values())
    done = dict.fromkeys(by_region, 0)
    shares: list[dict[str, list[str]]] = []
    for bound in bounds:
        exact = {r: Fraction(len(ids) * bound, total) for r, ids in by_region.items()}
        counts = {r: math.floor(x) for r, x in exact.items()}
        order = sorted(by_region, key=lambda r: (-(exact[r] - counts[r]), r))
        for region in order[: bound - sum(counts.values())]:
            counts[region] += 1
        if bound >= len(by_region):  # large enough to reach every region: at least one each
            for region in sorted(r for r in counts if counts[r] == 0):
                donor = max(counts, key=lambda r: (counts[r], r))
                counts[donor] -= 1
                counts[region] = 1
        wave: dict[str, list[str]] = {}
        for region, ids in by_region.items():
            upto = min(len(ids), max(done[region], counts[region]))
            if upto > done[region]:
                wave[region] = ids[done[region] : upto]
                done[region] = upto
        shares.append(wave)
    return shares


def _check_new(seen: dict[str, set[str]], region: str, ids: list[str]) -> None:
    """Refuse a target given twice (in any wave): it would be invoked twice."""
    known = seen.setdefault(region, set())
    fresh = set(ids)
    if len(fresh) == len(ids) and known.isdisjoint(fresh):
        known |= fresh
        return
    counted: set[str] = set()
    for instance_id in ids:  # find the repeat to name it; a rare path
        if instance_id in known or instance_id in counted:
            raise TargetError("plan", f"target {region},{instance_id} is given twice")
        counted.add(instance_id)


def _cut(
    run_id: str, region: str, ids: list[str], batch_size: int, wave: int, seq: int
) -> list[Batch]:
    """One region's ids of one wave as batches of at most `batch_size`, numbered from `seq`."""
    batches = []
    for offset in range(0, len(ids), batch_size):
        chunk = tuple(ids[offset : offset + batch_size])
        token = client_token(run_id, region, chunk)
        batches.append(Batch(batch_id(run_id, region, seq), region, seq, wave, chunk, token))
        seq += 1
    return batches


# How waves take their targets: from every region in proportion to its targets (the default,
# so a canary has instances in every region), or in input order, one region after another.
WAVE_ORDERS = ("spread", "region-by-region")


def make_plan(
    run_id: str,
    targets: Sequence[Target],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    waves: tuple[int, ...] | None = None,
    wave_order: str = "spread",
) -> Plan:
    """Cut `targets` into waves, and each wave into per-region batches.

    `spread`: wave k takes from each region its share of the first `waves[k]` targets, in
    proportion to the region's targets (each region's own targets in input order);
    `region-by-region`: wave k is the next targets in input order, whatever their region.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"--batch-size: {batch_size} is not between 1 and {MAX_BATCH_SIZE}")
    if wave_order not in WAVE_ORDERS:
        raise ConfigError(f"--wave-order {wave_order!r}: choose from {', '.join(WAVE_ORDERS)}")
    bounds = _check_waves(waves, len(targets))
    if wave_order == "spread":
        shares = _spread(_group(targets), bounds)
    else:
        shares = [_group(targets[a:b]) for a, b in itertools.pairwise((0, *bounds))]
    batches: list[Batch] = []
    seen: dict[str, set[str]] = {}
    for wave, by_region in enumerate(shares):
        for region in sorted(by_region):
            _check_new(seen, region, by_region[region])
            batches += _cut(run_id, region, by_region[region], batch_size, wave, len(batches))
    per_region: dict[str, int] = {}
    for batch in batches:
        per_region[batch.region] = per_region.get(batch.region, 0) + 1
    regions = tuple(RegionPlan(r, len(seen[r]), per_region[r]) for r in sorted(seen))
    return Plan(run_id, batch_size, tuple(batches), regions, bounds, len(targets))


@dataclass(frozen=True, slots=True)
class RegionEta:
    """How long one region's calls take under its daily quota, rate and concurrency."""

    region: str
    calls_needed: int
    quota_left_now: int
    days: int  # the quota day (1 = today) in which the last call goes; 0 when none is needed
    finish_after_s: float  # from now until the last call can be sent


def _throughput_per_s(rate_per_s: float | None, call_latency_s: float, concurrency: int) -> float:
    """Calls per second: the lower of the rate limit and what the concurrency sustains."""
    if rate_per_s is not None and rate_per_s <= 0:
        raise ConfigError(f"--rate: {rate_per_s} must be above 0")
    if concurrency < 1:
        raise ConfigError(f"--concurrency: {concurrency} must be at least 1")
    if call_latency_s < 0:
        raise ConfigError(f"call latency {call_latency_s} s must not be negative")
    limits = [math.inf if rate_per_s is None else rate_per_s]
    if call_latency_s > 0:
        limits.append(concurrency / call_latency_s)
    return min(limits)


def estimate_region(
    region: str,
    calls_needed: int,
    *,
    quota_left_now: int,
    daily_quota: int,
    reserve: int,
    rate_per_s: float | None,
    call_latency_s: float,
    concurrency: int,
) -> RegionEta:
    """When the last of `calls_needed` calls can go, if `daily_quota - reserve` frees every 24 h.

    `quota_left_now` is what may be spent at once (the reserve already kept back). Calls go out
    at the lower of `rate_per_s` (None: unlimited) and `concurrency / call_latency_s`; a day's
    sending that runs past the next quota day simply continues.
    """
    throughput = _throughput_per_s(rate_per_s, call_latency_s, concurrency)
    per_day = daily_quota - reserve
    remaining = max(calls_needed, 0)
    available = max(quota_left_now, 0)
    if remaining > available and per_day <= 0:
        raise ConfigError(
            f"--quota-reserve {reserve} leaves none of --daily-quota {daily_quota} for {region}"
        )
    days, starts_at_s, last_at_s = 0, 0.0, 0.0
    while remaining > 0:
        chunk = min(remaining, available)
        if chunk > 0:
            last_at_s = starts_at_s + (chunk - 1) / throughput
            starts_at_s += chunk / throughput
            remaining -= chunk
        days += 1
        starts_at_s = max(starts_at_s, days * _SECONDS_PER_QUOTA_DAY)
        available = per_day
    return RegionEta(region, max(calls_needed, 0), max(quota_left_now, 0), days, last_at_s)

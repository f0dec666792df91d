"""What a simulated rollout showed: the invariants checked from the emulator's side, the timeline
per region, the calls per region per day and the plan's ETA beside the simulated finish. Pure.

`fanout.simulate` runs the rollout; this module reads what the emulator accepted (every
invocation with its region, time, ClientToken and instances), the ledger's final states and the
plan, and returns data the CLI prints. Times are epoch seconds; `start_s` is the rehearsal's
start, so "day 1" is its first 24 hours.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Accepted",
    "EtaCheck",
    "RegionTimeline",
    "calls_per_day",
    "eta_check",
    "invariant_problems",
    "region_timelines",
    "wave_finish",
]

DAY_S = 86_400.0
_INVOKED_FINAL = frozenset({"succeeded", "failed", "unreachable", "unknown"})
_RESULT_STATES = frozenset({"succeeded", "failed", "unreachable"})  # only after a real call
_QUOTA_REFUSAL = "Invocation.ExceedQuota"


@dataclass(frozen=True, slots=True)
class Accepted:
    """One InvokeCommand the emulator accepted and executed (once per ClientToken)."""

    region: str
    created_s: float
    client_token: str
    instance_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RegionTimeline:
    """One region's simulated day: its waves' first and last calls, when each quota day ran out
    and the next began, and when its last execution finished."""

    region: str
    calls: int
    waves: Mapping[int, tuple[float, float]]  # wave (1-based) -> (first call, last call)
    quota_out: tuple[tuple[float, float], ...]  # (the day's last call, the next day's first)
    finished_s: float | None


@dataclass(frozen=True, slots=True)
class EtaCheck:
    """The plan's ETA beside the simulated finish (seconds after the start).

    `replanned_s` is the same estimate for the calls the quota was actually charged with:
    an attempt whose answer was lost or refused with a 5xx is counted (the API may have
    counted it), so faults can push calls into another quota day that the plan, made before
    any fault, could not foresee. The simulated finish is judged against that estimate.
    """

    planned_s: float
    replanned_s: float
    simulated_s: float
    tolerance_s: float
    per_region: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def difference_s(self) -> float:
        """Simulated minus re-planned."""
        return self.simulated_s - self.replanned_s

    @property
    def within(self) -> bool:
        """True when the difference is within the tolerance."""
        return abs(self.difference_s) <= self.tolerance_s


def invariant_problems(
    accepted: Sequence[Accepted],
    refused: Mapping[str, Mapping[str, Mapping[str, int]]],
    ledger_states: Mapping[tuple[str, str], str],
    targets: int,
    daily_quota: Mapping[str, int],
) -> list[str]:
    """Every broken invariant, one line each (empty: I1, I2 and I3 hold from the emulator's
    side). `refused` is the emulator's refusals per region, action and code; `ledger_states`
    each target's reported final state."""
    return (
        _exactly_once(accepted)
        + _nothing_lost(accepted, ledger_states, targets)
        + _quota_kept(accepted, refused, daily_quota)
    )


def _exactly_once(accepted: Sequence[Accepted]) -> list[str]:
    """I1: no instance is in two accepted invocations."""
    seen = Counter(iid for inv in accepted for iid in inv.instance_ids)
    twice = sorted(iid for iid, n in seen.items() if n > 1)
    if not twice:
        return []
    return [f"I1 exactly once: {len(twice)} instances invoked more than once ({twice[0]}, ...)"]


def _nothing_lost(
    accepted: Sequence[Accepted], ledger_states: Mapping[tuple[str, str], str], targets: int
) -> list[str]:
    """I2: one final state per target; every instance the emulator ran has an outcome of an
    invoked instance in the ledger, and no result is claimed for one it never ran."""
    problems: list[str] = []
    if len(ledger_states) != targets:
        problems.append(
            f"I2 nothing lost: {len(ledger_states)} ledger states for {targets} targets"
        )
    pending = sum(1 for state in ledger_states.values() if state == "pending")
    if pending:
        problems.append(f"I2 nothing lost: {pending} targets still pending at the end")
    ran = {(inv.region, iid) for inv in accepted for iid in inv.instance_ids}
    lost = [key for key in ran if ledger_states.get(key) not in _INVOKED_FINAL]
    if lost:
        region, iid = min(lost)
        problems.append(
            f"I2 nothing lost: {len(lost)} invoked instances without an invoked outcome in the "
            f"ledger ({region}:{iid} is {ledger_states.get((region, iid), 'missing')})"
        )
    claimed = [k for k, s in ledger_states.items() if s in _RESULT_STATES and k not in ran]
    if claimed:
        region, iid = min(claimed)
        problems.append(
            f"I2 nothing lost: {len(claimed)} results for instances never invoked ({region}:{iid})"
        )
    return problems


def _quota_kept(
    accepted: Sequence[Accepted],
    refused: Mapping[str, Mapping[str, Mapping[str, int]]],
    daily_quota: Mapping[str, int],
) -> list[str]:
    """I3: at most the daily quota of calls in any 24 h window per region, and no refusal for
    the quota (fanout alone used the account, so a refusal means it went past it)."""
    problems: list[str] = []
    for region, times in _times_by_region(accepted).items():
        limit = daily_quota.get(region, 0)
        worst = _busiest_window(times)
        if worst > limit:
            problems.append(f"I3 quota: {region}: {worst} calls in 24 h, over its quota of {limit}")
    for region, actions in sorted(refused.items()):
        count = actions.get("InvokeCommand", {}).get(_QUOTA_REFUSAL, 0)
        if count:
            problems.append(f"I3 quota: {region}: {count} InvokeCommand refused {_QUOTA_REFUSAL}")
    return problems


def _busiest_window(times: Sequence[float]) -> int:
    """The most calls in any 24 h window (`times` sorted)."""
    best, low = 0, 0
    for high, moment in enumerate(times):
        while moment - times[low] >= DAY_S:
            low += 1
        best = max(best, high - low + 1)
    return best


def _times_by_region(accepted: Iterable[Accepted]) -> dict[str, list[float]]:
    """Each region's call times, sorted."""
    by_region: dict[str, list[float]] = {}
    for inv in accepted:
        by_region.setdefault(inv.region, []).append(inv.created_s)
    for times in by_region.values():
        times.sort()
    return by_region


def region_timelines(
    accepted: Sequence[Accepted],
    wave_of_token: Mapping[str, int],
    daily_quota: Mapping[str, int],
    finished: Mapping[str, float],
) -> list[RegionTimeline]:
    """Per region: each wave's first and last call, each quota day that ran out (its last
    call, the next day's first), its last execution's finish."""
    waves: dict[str, dict[int, tuple[float, float]]] = {}
    for inv in accepted:
        wave = wave_of_token.get(inv.client_token, 0) + 1
        spans = waves.setdefault(inv.region, {})
        first, last = spans.get(wave, (inv.created_s, inv.created_s))
        spans[wave] = (min(first, inv.created_s), max(last, inv.created_s))
    timelines: list[RegionTimeline] = []
    for region, times in sorted(_times_by_region(accepted).items()):
        limit = max(daily_quota.get(region, 0), 1)
        out = tuple(
            (times[k - 1], times[k]) for k in range(limit, len(times), limit)
        )  # a full day's calls, then a wait: what the quota of one day bought
        timelines.append(
            RegionTimeline(
                region, len(times), dict(sorted(waves[region].items())), out, finished.get(region)
            )
        )
    return timelines


def calls_per_day(accepted: Iterable[Accepted], start_s: float) -> dict[str, dict[int, int]]:
    """Accepted calls per region per simulated day (day 1: the first 24 h after the start)."""
    days: dict[str, Counter[int]] = {}
    for inv in accepted:
        day = int((inv.created_s - start_s) // DAY_S) + 1
        days.setdefault(inv.region, Counter())[day] += 1
    return {region: dict(sorted(c.items())) for region, c in sorted(days.items())}


def wave_finish(
    calls: Mapping[int, Mapping[str, int]],
    past_calls: Mapping[str, Sequence[float]],
    *,
    daily_quota: Mapping[str, int],
    wave_gap_s: float,
    call_gap_s: float,
) -> dict[str, float]:
    """When each region's last call can go (seconds after the start) if waves go in order,
    every region's share of wave w (`calls[w][region]`) under its rolling 24 h quota, and wave
    w + 1 opens `wave_gap_s` after the last call of wave w anywhere (its results collected).

    `fanout plan` estimates each region alone; a wave's barrier makes every region wait for
    the one whose quota ran out, which this estimate follows. `past_calls` are calls already
    charged before the start (negative seconds), `call_gap_s` the time between two calls."""
    sent = {region: sorted(times) for region, times in past_calls.items()}
    last = dict.fromkeys({r for shares in calls.values() for r in shares}, 0.0)
    opens = 0.0
    for wave in sorted(calls):
        wave_last = opens
        for region, count in calls[wave].items():
            moment = opens
            times = sent.setdefault(region, [])
            limit = max(daily_quota.get(region, 1), 1)
            for _ in range(count):
                if len(times) >= limit:  # the limit-th last call must be a day old
                    moment = max(moment, times[-limit] + DAY_S)
                times.append(moment)
                last[region] = moment
                moment += call_gap_s
            wave_last = max(wave_last, last[region])
        opens = wave_last + wave_gap_s
    return last


def eta_check(
    planned: Mapping[str, float],
    replanned: Mapping[str, float],
    simulated: Mapping[str, float],
    *,
    waves: int,
    poll_interval_s: float,
    exec_max_s: float,
    wave_wait_s: float,
) -> EtaCheck:
    """The plan's finish (its last call, seconds after the start, per region; `replanned` for
    the calls charged) beside the simulated finish (the last result). The tolerance is what
    the plan leaves out: per wave and once more at the end, the slowest execution and one poll
    interval, and the bake."""
    per_region = {r: (replanned.get(r, planned[r]), simulated.get(r, 0.0)) for r in sorted(planned)}
    tolerance = (waves + 1) * (exec_max_s + poll_interval_s) + waves * wave_wait_s
    return EtaCheck(
        planned_s=max(planned.values(), default=0.0),
        replanned_s=max(replanned.values(), default=0.0),
        simulated_s=max(simulated.values(), default=0.0),
        tolerance_s=tolerance,
        per_region=per_region,
    )

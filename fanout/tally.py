"""The tally of a run (pure): run events in, counts per region out; the regions of a run's plan.

The runner calls `emit(kind, data)` up to ~20 000 times per run. `ProgressModel.feed` only moves
counters (no I/O, no formatting) and `view(now)` returns a frozen snapshot (`ProgressView`, one
`RegionView` per region) for a view to draw (`fanout.progress` on a terminal). Time is passed in.
`planned_regions` / `stored_regions` are the totals a "run" / "resume" event carries, and
`confirm_summary` the table the confirmation prompt shows.

Events read (data fields beyond `run_id`):
  run / resume  regions {region: {batches, batches_done, instances, <instance state>: n,
                quota_left}}, allowed (the error budget, None: no limit)
  wave_start    wave (1-based), waves          wave        wave (1-based, done), failures
  batch_start   batch_id, region, attempts     batch       batch_id, region, outcome, instances,
                                                           attempts, failures
  instance      region, state, failures        halted      failures, allowed
  quota_wait    regions, until (epoch s)       end         state, exit_code
  batch_split   batch_id, region, instances (a batch split in two: one more call to make)
  wave_wait     wave, wait_s (the bake time left)    wave_check_start / wave_check  wave
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fanout.ledger.model import BatchRecord, InstanceState, RunRecord
from fanout.quota import RegionQuotas

if TYPE_CHECKING:
    from fanout.ledger.store import LedgerStore

__all__ = [
    "RATE_WINDOW_S",
    "ProgressModel",
    "ProgressView",
    "RegionView",
    "confirm_summary",
    "planned_regions",
    "stored_regions",
]

# "Current rate" looks this far back: long enough to smooth single calls, short enough to show a
# region slowing down (throttling, quota) within a few refreshes.
RATE_WINDOW_S = 5.0
_DONE_BATCH_STATES = frozenset({"accepted", "failed", "unknown", "done"})
_CALL_OUTCOMES = frozenset({"accepted", "failed", "unknown"})  # a batch end that made a call
_LEFT_STATES = (InstanceState.PENDING.value, InstanceState.NOT_INVOKED.value)


@dataclass(slots=True)
class _Region:
    """One region's counters while the run goes."""

    batches: int = 0
    batches_done: int = 0
    instances: int = 0
    states: Counter[str] = field(default_factory=Counter)  # instance state -> count
    started: dict[str, int | None] = field(default_factory=dict)  # in flight: id -> attempts
    quota_left: int | None = None
    quota_until: float | None = None  # waiting for quota until this epoch second
    calls: deque[tuple[float, int]] = field(default_factory=deque)  # (when, calls) recent
    calls_total: int = 0
    first_call_s: float | None = None


@dataclass(frozen=True, slots=True)
class RegionView:
    """One region as drawn."""

    region: str
    batches_done: int
    in_flight: int
    batches_left: int
    instances: int
    succeeded: int
    failed: int
    unreachable: int  # the agent or the delivery failed: the command never ran
    excluded: int
    unknown: int
    running: int  # invoked, no result yet
    quota_left: int | None
    rate_per_s: float
    eta_s: float | None
    note: str


@dataclass(frozen=True, slots=True)
class ProgressView:
    """A snapshot of the whole run, for drawing."""

    run_id: str
    wave: int
    waves: int
    waves_done: int
    failures: int
    allowed: int | None
    halted: bool
    ended: str | None  # "finished (exit 1)" once the run ended
    elapsed_s: float
    regions: tuple[RegionView, ...]
    between: str | None = None  # "wave 1 baking: 25s left", "wave 1 check: 20 instances"

    def total(self, name: str) -> int:
        """A count summed over the regions (`succeeded`, `failed`, ...)."""
        return sum(int(getattr(r, name)) for r in self.regions)


class ProgressModel:
    """Run events in, a `ProgressView` out; `now` is passed in (monotonic seconds)."""

    __slots__ = (
        "_bake",
        "_check",
        "_halted",
        "_regions",
        "allowed",
        "ended",
        "failures",
        "run_id",
        "started_s",
        "wave",
        "waves",
        "waves_done",
    )

    def __init__(self) -> None:
        self._regions: dict[str, _Region] = {}
        self.run_id = ""
        self.started_s: float | None = None
        self.wave = self.waves = self.waves_done = self.failures = 0
        self.allowed: int | None = None
        self._halted = False
        self.ended: str | None = None
        self._bake: tuple[int, float] | None = None  # (wave, when its bake time ends: now's)
        self._check: tuple[int, int] | None = None  # (wave, instances) while its check runs

    def feed(self, kind: str, data: Mapping[str, Any], now: float) -> None:
        """Take one run event (unknown kinds are ignored)."""
        if self.started_s is None:
            self.started_s = now
        if "failures" in data:
            self.failures = int(data["failures"])
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, data, now)

    def _region(self, name: str) -> _Region:
        """A region's counters, created when first named."""
        region = self._regions.get(name)
        if region is None:
            region = self._regions[name] = _Region()
        return region

    def _start(self, data: Mapping[str, Any], now: float) -> None:
        """run / resume: the totals, and what a resumed run had done already."""
        self.run_id = str(data.get("run_id", ""))
        self.started_s = now
        allowed = data.get("allowed")
        self.allowed = None if allowed is None else int(allowed)
        for name, totals in (data.get("regions") or {}).items():
            r = self._region(name)
            r.batches = int(totals.get("batches", 0))
            r.batches_done = int(totals.get("batches_done", 0))
            r.instances = int(totals.get("instances", 0))
            quota = totals.get("quota_left")
            r.quota_left = None if quota is None else int(quota)
            r.states.update({s: int(totals[s]) for s in InstanceState if totals.get(s)})

    def _wave_wait(self, data: Mapping[str, Any], now: float) -> None:
        """A wave's bake time starts: the countdown."""
        self._bake = (int(data["wave"]), now + float(data.get("wait_s") or 0.0))

    def _check_start(self, data: Mapping[str, Any], _now: float) -> None:
        """A wave's check runs (its bake time is over)."""
        self._bake = None
        self._check = (int(data["wave"]), int(data.get("instances") or 0))

    def _check_done(self, _data: Mapping[str, Any], _now: float) -> None:
        """A wave's check ended."""
        self._bake = self._check = None

    def _between(self, now: float) -> str | None:
        """What happens between two waves: the bake countdown, or the check running."""
        if self.ended is not None:
            return None
        if self._check is not None:
            return f"wave {self._check[0]} check: {self._check[1]} instances"
        if self._bake is not None:
            left = max(0.0, self._bake[1] - now)
            return f"wave {self._bake[0]} baking: {round(left)}s left"
        return None

    def _wave_start(self, data: Mapping[str, Any], _now: float) -> None:
        """A wave starts dispatching."""
        self._bake = self._check = None
        self.wave = int(data["wave"])
        self.waves = int(data.get("waves", self.waves))

    def _wave_done(self, data: Mapping[str, Any], _now: float) -> None:
        """A wave's results are in."""
        self.waves_done = max(self.waves_done, int(data["wave"]))

    def _batch_start(self, data: Mapping[str, Any], _now: float) -> None:
        """A batch is being dispatched."""
        attempts = data.get("attempts")
        self._region(str(data["region"])).started[str(data["batch_id"])] = attempts

    def _batch_end(self, data: Mapping[str, Any], now: float) -> None:
        """A batch left the invoke stage: accepted, failed, unknown, or parked (quota, stop)."""
        r = self._region(str(data["region"]))
        before = r.started.pop(str(data["batch_id"]), None)
        outcome, n = str(data["outcome"]), int(data.get("instances", 0))
        after = data.get("attempts")
        calls = after - before if before is not None and after is not None else None
        if calls is None:
            calls = 1 if outcome in _CALL_OUTCOMES else 0
        if calls > 0:
            if r.quota_left == 0:  # calls go through again: the quota window moved on
                r.quota_left, r.quota_until = None, None
            r.calls.append((now, calls))
            r.calls_total += calls
            r.first_call_s = now if r.first_call_s is None else r.first_call_s
            r.quota_left = None if r.quota_left is None else max(0, r.quota_left - calls)
            while r.calls and r.calls[0][0] < now - RATE_WINDOW_S:
                r.calls.popleft()
        if outcome == "quota":
            r.quota_left = 0
        elif outcome in _CALL_OUTCOMES:
            r.batches_done += 1
            state = "invoked" if outcome == "accepted" else outcome
            r.states[state] += n
            r.states[InstanceState.PENDING] = max(0, r.states[InstanceState.PENDING] - n)

    def _batch_split(self, data: Mapping[str, Any], _now: float) -> None:
        """A batch was split in two (InstanceIds.ExceedLimit): one more batch in the region."""
        self._region(str(data["region"])).batches += 1

    def _instance(self, data: Mapping[str, Any], _now: float) -> None:
        """An instance reached its final state."""
        r = self._region(str(data.get("region", "?")))
        r.states[str(data["state"])] += 1
        if r.states[InstanceState.INVOKED] > 0:
            r.states[InstanceState.INVOKED] -= 1

    def _halted_event(self, data: Mapping[str, Any], _now: float) -> None:
        """The error budget was exceeded."""
        self._halted = True

    def _quota_wait(self, data: Mapping[str, Any], _now: float) -> None:
        """Regions out of quota, sleeping until `until`."""
        for name in data.get("regions", ()):
            self._region(str(name)).quota_until = float(data["until"])

    def _end(self, data: Mapping[str, Any], _now: float) -> None:
        """The run (this leg of it) ended."""
        self.ended = f"{data.get('state')} (exit {data.get('exit_code')})"

    def view(self, now: float) -> ProgressView:
        """A snapshot for drawing."""
        elapsed = max(0.0, now - (self.started_s if self.started_s is not None else now))
        return ProgressView(
            run_id=self.run_id,
            wave=self.wave,
            waves=self.waves,
            waves_done=self.waves_done,
            failures=self.failures,
            allowed=self.allowed,
            halted=self._halted,
            ended=self.ended,
            elapsed_s=elapsed,
            regions=tuple(
                _region_view(name, r, now, elapsed) for name, r in sorted(self._regions.items())
            ),
            between=self._between(now),
        )


_HANDLERS: dict[str, Callable[[ProgressModel, Mapping[str, Any], float], None]] = {
    "run": ProgressModel._start,
    "resume": ProgressModel._start,
    "wave_start": ProgressModel._wave_start,
    "wave": ProgressModel._wave_done,
    "batch_start": ProgressModel._batch_start,
    "batch": ProgressModel._batch_end,
    "batch_split": ProgressModel._batch_split,
    "instance": ProgressModel._instance,
    "halted": ProgressModel._halted_event,
    "quota_wait": ProgressModel._quota_wait,
    "wave_wait": ProgressModel._wave_wait,
    "wave_check_start": ProgressModel._check_start,
    "wave_check": ProgressModel._check_done,
    "end": ProgressModel._end,
}


def _region_view(name: str, r: _Region, now: float, elapsed_s: float) -> RegionView:
    """One region's counters as numbers to draw: rate over the window, ETA from it."""
    window_s = min(RATE_WINDOW_S, max(elapsed_s, 1.0))
    rate = sum(n for when, n in r.calls if when >= now - window_s) / window_s
    in_flight = len(r.started)
    left = max(0, r.batches - r.batches_done - in_flight)
    average = r.calls_total / max(now - r.first_call_s, 1.0) if r.first_call_s is not None else 0
    speed = rate or average
    eta = (left + in_flight) / speed if speed and left + in_flight else None
    if r.quota_until is not None and left:
        note = f"quota {datetime.fromtimestamp(r.quota_until).strftime('%H:%M')}"  # noqa: DTZ006 - local time for the operator
    elif r.quota_left is not None and left > r.quota_left:
        note, eta = ("no quota" if r.quota_left == 0 else "quota short"), None
    elif left or in_flight:
        note = "dispatching"
    else:
        note = "results" if r.states[InstanceState.INVOKED] else "done"
    return RegionView(
        region=name,
        batches_done=r.batches_done,
        in_flight=in_flight,
        batches_left=left,
        instances=r.instances,
        succeeded=r.states[InstanceState.SUCCEEDED],
        failed=r.states[InstanceState.FAILED],
        unreachable=r.states[InstanceState.UNREACHABLE],
        excluded=r.states[InstanceState.EXCLUDED],
        unknown=r.states[InstanceState.UNKNOWN],
        running=r.states[InstanceState.INVOKED],
        quota_left=r.quota_left,
        rate_per_s=rate,
        eta_s=eta,
        note=note,
    )


def planned_regions(
    batches: Iterable[BatchRecord],
    excluded: Iterable[tuple[str, str]],
    quotas: RegionQuotas,
    quota_used: Mapping[str, tuple[int, float]],
) -> dict[str, dict[str, int]]:
    """The `regions` of a new run's "run" event: batches, instances, exclusions, the daily
    quota (the account's own, or configured) and what is left of it."""
    regions: dict[str, dict[str, int]] = {}

    def region(name: str) -> dict[str, int]:
        used = quota_used.get(name, (0, 0.0))[0]
        policy = quotas.policy(name)
        return regions.setdefault(
            name,
            {
                "batches": 0,
                "instances": 0,
                "excluded": 0,
                "daily_quota": policy.daily_quota,
                "quota_left": policy.left(used),
            },
        )

    for b in batches:
        r = region(b.region)
        r["batches"] += 1
        r["instances"] += len(b.instance_ids)
        r["pending"] = r.get("pending", 0) + len(b.instance_ids)
    for name, _iid in excluded:
        r = region(name)
        r["excluded"] += 1
        r["instances"] += 1
    return dict(sorted(regions.items()))


def stored_regions(
    store: LedgerStore, run: RunRecord, quotas: RegionQuotas, now: float
) -> dict[str, dict[str, int]]:
    """The `regions` of a "resume" event, from the ledger: totals and what is done already."""
    batch_counts = store.batch_counts(run.run_id)
    instance_counts = store.instance_counts(run.run_id)
    used = store.quota_used(run.account, quotas.base.window_start(now))
    regions: dict[str, dict[str, int]] = {}
    for name in sorted({*batch_counts, *instance_counts}):
        by_batch = batch_counts.get(name, {})
        by_state = instance_counts.get(name, {})
        regions[name] = {
            "batches": sum(by_batch.values()),
            "batches_done": sum(n for s, n in by_batch.items() if s in _DONE_BATCH_STATES),
            "instances": sum(by_state.values()),
            **by_state,
            "pending": sum(by_state.get(s, 0) for s in _LEFT_STATES),
            "daily_quota": quotas.policy(name).daily_quota,
            "quota_left": quotas.policy(name).left(used.get(name, (0, 0.0))[0]),
        }
        regions[name].pop(InstanceState.NOT_INVOKED.value, None)
    return regions


def _count(n: int, noun: str) -> str:
    """`1 region`, `2 regions`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def confirm_summary(
    command_id: str, batches: Sequence[tuple[str, int]], quota_left: Mapping[str, int]
) -> str:
    """What the TTY confirmation shows: targets, calls and quota left per region.

    `batches` holds (region, instances) per planned InvokeCommand call.
    """
    calls: Counter[str] = Counter(region for region, _n in batches)
    targets: Counter[str] = Counter()
    for region, n in batches:
        targets[region] += n
    lines = [
        f"About to invoke {command_id} on {_count(sum(targets.values()), 'instance')} in "
        f"{_count(len(calls), 'region')}: {_count(len(batches), 'InvokeCommand call')}.",
        f"  {'region':<20} {'targets':>8} {'calls':>6} {'quota left':>10}",
    ]
    short = []
    for region in sorted(calls):
        left = quota_left.get(region)
        lines.append(
            f"  {region:<20} {targets[region]:>8} {calls[region]:>6} "
            f"{'?' if left is None else left:>10}"
        )
        if left is not None and calls[region] > left:
            short.append(f"{region} ({_count(calls[region] - left, 'call')} over)")
    if short:
        lines.append(
            f"  quota short in {', '.join(short)}: the rest waits for quota "
            "(exit 4 and `fanout resume`, or --wait-for-quota)"
        )
    return "\n".join(lines)

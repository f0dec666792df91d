"""What a run's events add up to (pure): instances and batches by state, API calls, quota,
waves, for metrics and notifications (the live view has its own model, `fanout.tally`).

`RunTotals.feed(kind, data)` is a subscriber of the run's event stream (the runner's `emit`), as
the live view is; metrics (`fanout.metrics`) and notifications (`fanout.notify`) read its
`snapshot()`. Counts follow the events: instance states move as batches are accepted and results
come in, and the `end` event's counts (the ledger's) replace them when the leg ends. `feed` and
`snapshot` may run on different threads (a metrics scrape): one lock guards the counters.

Events read (beyond `run_id`): run/resume `regions` {region: {batches, instances, excluded,
<state>: n, quota_left}}; batch_start `batch_id`; batch `batch_id`, `outcome`, `instances`;
instance `state`; call `action`, `region`, `error_code`; wave_start `wave`, `waves`; wave
`wave`, `failures`; halted `failures`, `allowed`; quota_wait `regions`, `until`; end `state`,
`exit_code`, `instances`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HALT_REASONS", "RunTotals", "TotalsSnapshot"]

# Why a run stopped dispatching, as metrics and notifications name it.
HALT_REASONS = ("budget", "quota", "stop", "fatal", "interrupted")
_END_REASONS = {
    "halted": "budget",
    "quota": "quota",
    "stopped": "stop",
    "fatal": "fatal",
    "interrupted": "interrupted",
}
_INSTANCE_STATES = ("pending", "invoked", "succeeded", "failed", "excluded", "not_invoked")
_REGION_KEYS = frozenset({"batches", "batches_done", "instances", "daily_quota", "quota_left"})


@dataclass(frozen=True, slots=True)
class TotalsSnapshot:
    """The counts at one moment (copies: safe to read on any thread)."""

    run_id: str | None
    instances: Mapping[str, int]
    batches: Mapping[str, int]
    calls: Mapping[tuple[str, str], int]  # (action, region) -> requests sent
    errors: Mapping[tuple[str, str], int]  # (action, error code) -> answered with an error
    quota_used: Mapping[str, int]  # region -> InvokeCommand calls counted in the window
    quota_limits: Mapping[str, int]  # region -> calls its window allows (daily quota - reserve)
    wave: int  # from 1; 0 before the first wave
    waves: int
    failures: int
    allowed: int | None
    halt_reason: str | None
    state: str | None  # the leg's end state, once it ended
    exit_code: int | None


@dataclass(slots=True)
class RunTotals:
    """Run events in, counts out."""

    run_id: str | None = None
    instances: Counter[str] = field(default_factory=Counter)
    batches: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    quota_used: Counter[str] = field(default_factory=Counter)
    wave: int = 0
    waves: int = 0
    failures: int = 0
    allowed: int | None = None
    halt_reason: str | None = None
    state: str | None = None
    exit_code: int | None = None
    quota_limit: int | None = None  # calls a window allows where the run event says none
    quota_reserve: int = 0  # taken off each region's daily quota (the run event's daily_quota)
    quota_limits: dict[str, int] = field(default_factory=dict)  # region -> limit - reserve
    _in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def feed(self, kind: str, data: Mapping[str, Any]) -> None:
        """Take one run event (unknown kinds are ignored)."""
        handler = _HANDLERS.get(kind)
        if handler is not None:
            with self._lock:
                handler(self, data)

    def snapshot(self) -> TotalsSnapshot:
        """A copy of the counts."""
        with self._lock:
            return TotalsSnapshot(
                run_id=self.run_id,
                instances={s: self.instances.get(s, 0) for s in _states(self.instances)},
                batches=dict(self.batches),
                calls=dict(self.calls),
                errors=dict(self.errors),
                quota_used=dict(self.quota_used),
                quota_limits=dict(self.quota_limits),
                wave=self.wave,
                waves=self.waves,
                failures=self.failures,
                allowed=self.allowed,
                halt_reason=self.halt_reason,
                state=self.state,
                exit_code=self.exit_code,
            )

    # --- handlers (called under the lock) --------------------------------------------------

    def _start(self, data: Mapping[str, Any]) -> None:
        """run / resume: totals per region."""
        self.run_id = str(data.get("run_id"))
        self.allowed = data.get("allowed")
        self.instances.clear()
        self.batches.clear()
        for region, counts in dict(data.get("regions") or {}).items():
            batches = int(counts.get("batches", 0))
            done = int(counts.get("batches_done", 0))
            self.batches["pending"] += batches - done
            self.batches["done"] += done
            self.instances["excluded"] += int(counts.get("excluded", 0))
            for state, n in counts.items():
                if state not in _REGION_KEYS and state != "excluded":
                    self.instances[state] += int(n)
            daily = counts.get("daily_quota")  # the account's own per region, or configured
            if daily is not None:
                self.quota_limits[region] = max(int(daily) - self.quota_reserve, 0)
            limit = self.quota_limits.get(region, self.quota_limit)
            left = counts.get("quota_left")
            if limit is not None and left is not None:
                self.quota_used[region] = max(limit - int(left), 0)

    def _batch_start(self, data: Mapping[str, Any]) -> None:
        """A batch left the queue."""
        batch_id = str(data.get("batch_id"))
        if batch_id not in self._in_flight:
            self._in_flight[batch_id] = 1
            self._move(self.batches, "pending", "sending", 1)

    def _batch(self, data: Mapping[str, Any]) -> None:
        """A batch's call ended: accepted, failed, unknown, or put back (quota, stop, fatal)."""
        self._in_flight.pop(str(data.get("batch_id")), None)
        outcome = str(data.get("outcome"))
        n = int(data.get("instances", 0))
        if outcome in ("accepted", "failed", "unknown"):
            self._move(self.batches, "sending", outcome, 1)
            target = "invoked" if outcome == "accepted" else outcome
            self._move(self.instances, "pending", target, n)
        else:
            self._move(self.batches, "sending", "pending", 1)
        self.failures = int(data.get("failures", self.failures))

    def _instance(self, data: Mapping[str, Any]) -> None:
        """One instance's result is in."""
        self._move(self.instances, "invoked", str(data.get("state")), 1)
        self.failures = int(data.get("failures", self.failures))

    def _call(self, data: Mapping[str, Any]) -> None:
        """One API request was answered (or failed on the way)."""
        action, region = str(data.get("action")), str(data.get("region"))
        self.calls[(action, region)] += 1
        code = data.get("error_code")
        if code:
            self.errors[(action, str(code))] += 1
        if action == "InvokeCommand":
            self.quota_used[region] += 1

    def _wave_start(self, data: Mapping[str, Any]) -> None:
        """A wave began (numbered from 1)."""
        self.wave = int(data.get("wave", 0))
        self.waves = int(data.get("waves", self.waves))

    def _wave(self, data: Mapping[str, Any]) -> None:
        """A wave's results are all in."""
        self.failures = int(data.get("failures", self.failures))

    def _halted(self, data: Mapping[str, Any]) -> None:
        """The error budget was exceeded."""
        self.halt_reason = "budget"
        self.failures = int(data.get("failures", self.failures))

    def _quota_wait(self, _data: Mapping[str, Any]) -> None:
        """Dispatching waits for the daily quota."""
        self.halt_reason = self.halt_reason or "quota"

    def _end(self, data: Mapping[str, Any]) -> None:
        """The leg ended: the ledger's counts replace the running ones."""
        self.state = str(data.get("state"))
        self.exit_code = data.get("exit_code")
        self.halt_reason = _END_REASONS.get(self.state, self.halt_reason)
        counts = data.get("instances")
        if isinstance(counts, Mapping):
            self.instances = Counter({str(s): int(n) for s, n in counts.items()})

    @staticmethod
    def _move(counter: Counter[str], source: str, target: str, n: int) -> None:
        """Move `n` from one state to another (never below zero)."""
        moved = min(n, counter.get(source, 0))
        counter[source] -= moved
        counter[target] += n


def _states(counts: Mapping[str, int]) -> list[str]:
    """The usual instance states, then any other seen."""
    return [*_INSTANCE_STATES, *sorted(set(counts) - set(_INSTANCE_STATES))]


_HANDLERS = {
    "run": RunTotals._start,
    "resume": RunTotals._start,
    "batch_start": RunTotals._batch_start,
    "batch": RunTotals._batch,
    "instance": RunTotals._instance,
    "call": RunTotals._call,
    "wave_start": RunTotals._wave_start,
    "wave": RunTotals._wave,
    "halted": RunTotals._halted,
    "quota_wait": RunTotals._quota_wait,
    "end": RunTotals._end,
}

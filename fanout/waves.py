"""Rollout safety: dispatch wave by wave, keep the error budget, pause, wait for quota, decide.

Waves are cumulative shares of the targets (`--waves 1,10%,100%`). A wave's batches are
dispatched, then its results are collected; the next wave starts only when they are all in and
the error budget holds. The budget (`--max-errors N|P%`) counts instances that ended Failed,
Error, Timeout, Invalid or Aborted, and the instances of batch calls that failed permanently;
preflight exclusions and instances refused one by one (isolated) are reported separately.

Overshoot bound: when the budget trips, nothing more is dispatched, but invocations already
accepted keep running and are collected. So at most every instance dispatched and not yet final
at that moment may still fail: never more than the rest of the current wave (plus the batch
calls in flight, at most `--concurrency`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio

from fanout.aliyun.command import CommandSpec
from fanout.errors import ConfigError, ExitCode
from fanout.invoke import BatchEnd, Dispatch, invoke_batch
from fanout.ledger import (
    BatchRecord,
    BatchState,
    InstanceRecord,
    InstanceState,
    LedgerStore,
    RunState,
)
from fanout.results import COUNTED_FAILURES, Collector

__all__ = [
    "ErrorBudget",
    "Leg",
    "dispatch_waves",
    "parse_max_errors",
    "verdict",
    "waits_for_results",
]

Emit = Callable[[str, Mapping[str, object]], None]
OPEN_BATCH_STATES = (BatchState.SENDING, BatchState.UNKNOWN, BatchState.PENDING)
_NO_WAIT_REPEAT_MODES = frozenset({"Period", "EveryReboot", "NextRebootOnly", "DryRun"})
# Workers per concurrency slot: while one batch's call is on the wire, the next batch's intent
# is being committed, so the slots stay busy (the gate still bounds calls in flight).
_WORKERS_PER_SLOT = 2


def waits_for_results(spec: CommandSpec) -> bool:
    """False for periodic and dry-run invocations: they are recorded, not waited for."""
    return not (spec.timed or spec.frequency or spec.repeat_mode in _NO_WAIT_REPEAT_MODES)


def parse_max_errors(spec: str | None, total: int) -> int | None:
    """`N` or `P%` of `total` -> the number of failures allowed (None: no limit)."""
    if spec is None or not spec.strip():
        return None
    text = spec.strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 <= share <= 100:
                raise ValueError
            return math.floor(share / 100 * total)
        allowed = int(text)
    except ValueError:
        msg = f"--max-errors {spec!r}: expected a count N or a share P% (0..100)"
        raise ConfigError(msg) from None
    if allowed < 0:
        msg = f"--max-errors {spec!r}: must not be negative"
        raise ConfigError(msg)
    return allowed


@dataclass(slots=True)
class ErrorBudget:
    """Failures counted so far against the allowance."""

    allowed: int | None
    failures: int = 0

    def add(self, n: int) -> bool:
        """Count `n` failures; True if the budget is now exceeded."""
        self.failures += n
        return self.allowed is not None and self.failures > self.allowed


@dataclass(slots=True)
class Leg:
    """This process's leg of a run: batch ends, the collector, the budget, progress events."""

    d: Dispatch
    emit: Emit
    budget: ErrorBudget
    collector: Collector | None = None
    ends: dict[BatchEnd, int] = field(default_factory=dict)

    def batch_started(self, record: BatchRecord) -> None:
        """A worker took the batch: it is in flight until `batch_ended` (progress only)."""
        self.emit(
            "batch_start",
            {"batch_id": record.batch_id, "region": record.region, "attempts": record.attempts},
        )

    def batch_ended(self, record: BatchRecord, end: BatchEnd, note: str | None) -> None:
        """invoke's callback: follow accepted batches, count permanent failures."""
        self.ends[end] = self.ends.get(end, 0) + 1
        if end is BatchEnd.ACCEPTED and self.collector is not None and record.invoke_id:
            self.collector.follow(record, record.invoke_id)
        if end is BatchEnd.FAILED and note != "isolated":
            self._count(len(record.instance_ids))
        self.emit(
            "batch",
            {
                "run_id": record.run_id,
                "batch_id": record.batch_id,
                "region": record.region,
                "wave": record.wave,
                "outcome": end.value,
                "invoke_id": record.invoke_id,
                "instances": len(record.instance_ids),
                "attempts": record.attempts,
                "failures": self.budget.failures,
            },
        )

    def instance_final(self, record: InstanceRecord) -> None:
        """The collector's callback: count failures the budget covers."""
        if record.state is InstanceState.FAILED and record.invocation_status in COUNTED_FAILURES:
            self._count(1)
        self.emit(
            "instance",
            {
                "instance_id": record.instance_id,
                "region": record.region,
                "state": record.state.value,
                "failures": self.budget.failures,
                "finish_time": record.finish_time,
            },
        )

    def _count(self, n: int) -> None:
        """Add failures; halt dispatching once the budget is exceeded."""
        if self.budget.add(n) and not self.d.over_budget:
            self.d.halt_for_errors()
            self.emit(
                "halted",
                {
                    "run_id": self.d.run_id,
                    "failures": self.budget.failures,
                    "allowed": self.budget.allowed,
                },
            )


async def _reload(store: LedgerStore, run_id: str) -> list[BatchRecord]:
    """The run's batches as stored now."""
    return await anyio.to_thread.run_sync(store.load_batches, run_id)


async def dispatch_waves(
    leg: Leg,
    store: LedgerStore,
    batches: Sequence[BatchRecord],
    *,
    workers: int,
    wait_for_quota: bool,
    pause_after_wave: bool,
) -> None:
    """Dispatch the open batches wave by wave, results in between; wait out the quota if asked."""
    d = leg.d
    open_batches = [b for b in batches if b.state in OPEN_BATCH_STATES]
    # Batches that may already have run are resolved first (same token, same answer).
    open_batches.sort(key=lambda b: (b.wave, b.state is BatchState.PENDING, b.seq))
    waves = sorted({b.wave for b in open_batches})
    total = max((b.wave for b in batches), default=-1) + 1
    for index, wave in enumerate(waves):
        leg.emit("wave_start", {"run_id": d.run_id, "wave": wave + 1, "waves": total})
        todo = [b for b in open_batches if b.wave == wave]
        while todo and not d.halted:
            await _dispatch(d, todo, workers, leg.batch_started)
            if not d.quota_blocked or not wait_for_quota:
                break
            todo = [  # what the quota left open, to be sent once the window frees
                b
                for b in await _reload(store, d.run_id)
                if b.state in OPEN_BATCH_STATES and b.wave == wave
            ]
            if not todo:
                break

            await _sleep_for_quota(d, store, leg.emit)
        if leg.collector is not None:
            await leg.collector.drain(d.abort_event)
        leg.emit("wave", {"run_id": d.run_id, "wave": wave + 1, "failures": leg.budget.failures})
        if d.halted or (d.quota_blocked and not wait_for_quota):
            return
        if pause_after_wave and index < len(waves) - 1:
            d.pause()
            return
    if leg.collector is not None:  # accepted earlier (resume) and not final yet
        await leg.collector.drain(d.abort_event)


async def _dispatch(
    d: Dispatch,
    batches: Sequence[BatchRecord],
    workers: int,
    started: Callable[[BatchRecord], None],
) -> None:
    """Invoke `batches` with workers pulling from one queue; the gate bounds calls in flight."""
    queue = deque(batches)
    await d.ledger.flush()

    async def worker() -> None:
        while queue and not d.halted:
            batch = queue.popleft()
            if batch.region in d.quota_blocked:
                continue
            started(batch)
            await invoke_batch(d, batch)

    async with anyio.create_task_group() as tg:
        for _ in range(min(workers * _WORKERS_PER_SLOT, len(queue))):
            tg.start_soon(worker)
    await d.ledger.flush()


async def _sleep_for_quota(d: Dispatch, store: LedgerStore, emit: Emit) -> None:
    """Sleep until every blocked region can make a call again."""
    until = await quota_frees_at(d, store)
    emit("quota_wait", {"run_id": d.run_id, "regions": sorted(d.quota_blocked), "until": until})
    await d.sleep(max(0.0, until - time.time()) + 1.0)
    d.quota_blocked.clear()


async def quota_frees_at(d: Dispatch, store: LedgerStore) -> float:
    """When every quota-blocked region can make its next call."""
    now = time.time()
    start = d.quota.window_start(now)
    frees = [
        d.quota.frees_at(
            await anyio.to_thread.run_sync(store.quota_times, d.account, region, start), now
        )
        for region in d.quota_blocked
    ]
    return max(frees, default=now)


def verdict(  # noqa: PLR0911 - one return per documented exit code, in priority order
    d: Dispatch, counts: Mapping[str, int], frees_at: float | None
) -> tuple[RunState, ExitCode, str]:
    """The run's state, exit code and a one-line summary."""
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if d.fatal is not None:
        return RunState.FATAL, ExitCode.FATAL_API, f"stopped by a fatal API error: {d.fatal}"
    if d.stop_requested:
        return RunState.STOPPED, ExitCode.INTERRUPTED, f"stopped ({summary}); resumable"
    if d.stopping:
        return RunState.INTERRUPTED, ExitCode.INTERRUPTED, f"interrupted ({summary}); resumable"
    if d.over_budget:
        return (
            RunState.HALTED,
            ExitCode.HALTED,
            f"halted by --max-errors ({summary}); look, then `fanout resume` or `fanout retry`",
        )
    if d.paused:
        return RunState.INTERRUPTED, ExitCode.INTERRUPTED, f"paused after a wave ({summary})"
    open_left = counts.get(InstanceState.PENDING, 0)
    if d.quota_blocked and open_left:
        when = datetime.fromtimestamp(frees_at or time.time(), UTC).isoformat(timespec="seconds")
        return (
            RunState.QUOTA,
            ExitCode.QUOTA,
            f"daily quota spent with {open_left} instances not invoked; capacity frees at {when}",
        )
    good = counts.get(InstanceState.SUCCEEDED, 0) + counts.get(InstanceState.INVOKED, 0)
    if good == sum(counts.values()):
        return RunState.FINISHED, ExitCode.OK, f"finished: {summary}"
    return RunState.FINISHED, ExitCode.FINISHED_WITH_FAILURES, f"finished with problems: {summary}"

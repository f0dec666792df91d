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
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from fanout.aliyun.command import CommandSpec
from fanout.errors import ConfigError
from fanout.halt import HaltReason, RunControl
from fanout.invoke import BatchEnd, BatchOutcome, InvokeContext, invoke_batch
from fanout.ledger import (
    BatchRecord,
    BatchState,
    InstanceRecord,
    InstanceState,
    LedgerStore,
)
from fanout.results import COUNTED_FAILURES, Collector

__all__ = [
    "ErrorBudget",
    "Leg",
    "WaveOptions",
    "dispatch_waves",
    "parse_max_errors",
    "quota_frees_at",
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
    """This process's leg of a run: counts failures against the budget and reports progress."""

    run_id: str
    control: RunControl
    emit: Emit
    budget: ErrorBudget
    ends: dict[BatchEnd, int] = field(default_factory=dict)

    def batch_started(self, record: BatchRecord) -> None:
        """A worker took the batch: it is in flight until `batch_ended` (progress only)."""
        self.emit(
            "batch_start",
            {"batch_id": record.batch_id, "region": record.region, "attempts": record.attempts},
        )

    def batch_ended(self, outcome: BatchOutcome) -> None:
        """Count permanent failures of a batch call and report how the batch ended."""
        record, end = outcome.record, outcome.end
        self.ends[end] = self.ends.get(end, 0) + 1
        if end is BatchEnd.FAILED and outcome.note != "isolated":
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
        if self.budget.add(n) and self.control.halt(HaltReason.BUDGET):
            self.emit(
                "halted",
                {
                    "run_id": self.run_id,
                    "failures": self.budget.failures,
                    "allowed": self.budget.allowed,
                },
            )


async def _reload(store: LedgerStore, run_id: str) -> list[BatchRecord]:
    """The run's batches as stored now."""
    return await anyio.to_thread.run_sync(store.load_batches, run_id)


@dataclass(frozen=True, slots=True)
class WaveOptions:
    """How the waves of this leg are driven."""

    workers: int
    wait_for_quota: bool
    pause_after_wave: bool


async def dispatch_waves(
    ctx: InvokeContext,
    leg: Leg,
    collector: Collector | None,
    store: LedgerStore,
    batches: Sequence[BatchRecord],
    options: WaveOptions,
) -> None:
    """Dispatch the open batches wave by wave, results in between; wait out the quota if asked."""
    control = ctx.control
    open_batches = [b for b in batches if b.state in OPEN_BATCH_STATES]
    # Batches that may already have run are resolved first (same token, same answer).
    open_batches.sort(key=lambda b: (b.wave, b.state is BatchState.PENDING, b.seq))
    waves = sorted({b.wave for b in open_batches})
    total = max((b.wave for b in batches), default=-1) + 1
    for index, wave in enumerate(waves):
        leg.emit("wave_start", {"run_id": ctx.run_id, "wave": wave + 1, "waves": total})
        todo = [b for b in open_batches if b.wave == wave]
        while todo and not control.halted:
            await _dispatch(ctx, leg, collector, todo, options.workers)
            if not control.quota_blocked or not options.wait_for_quota:
                break
            todo = [  # what the quota left open, to be sent once the window frees
                b
                for b in await _reload(store, ctx.run_id)
                if b.state in OPEN_BATCH_STATES and b.wave == wave
            ]
            if not todo:
                break
            await _sleep_for_quota(ctx, store, leg.emit)
        if collector is not None:
            await collector.drain(control.abort_event)
        leg.emit("wave", {"run_id": ctx.run_id, "wave": wave + 1, "failures": leg.budget.failures})
        if control.halted or (control.quota_blocked and not options.wait_for_quota):
            return
        if options.pause_after_wave and index < len(waves) - 1:
            control.halt(HaltReason.PAUSE)
            return
    if collector is not None:  # accepted earlier (resume) and not final yet
        await collector.drain(control.abort_event)


async def _dispatch(
    ctx: InvokeContext,
    leg: Leg,
    collector: Collector | None,
    batches: Sequence[BatchRecord],
    workers: int,
) -> None:
    """Invoke `batches` with workers pulling from one queue; the gate bounds calls in flight."""
    queue = deque(batches)
    await ctx.ledger.flush()

    async def worker() -> None:
        while queue and not ctx.control.halted:
            batch = queue.popleft()
            if ctx.control.is_blocked(batch.region):
                continue
            leg.batch_started(batch)
            outcome = await invoke_batch(ctx, batch)
            invoke_id = outcome.record.invoke_id
            if outcome.end is BatchEnd.ACCEPTED and collector is not None and invoke_id:
                collector.follow(outcome.record, invoke_id)
            leg.batch_ended(outcome)

    async with anyio.create_task_group() as tg:
        for _ in range(min(workers * _WORKERS_PER_SLOT, len(queue))):
            tg.start_soon(worker)
    await ctx.ledger.flush()


async def _sleep_for_quota(ctx: InvokeContext, store: LedgerStore, emit: Emit) -> None:
    """Sleep until every blocked region can make a call again."""
    blocked = sorted(ctx.control.quota_blocked)
    until = await quota_frees_at(ctx, store, blocked)
    emit("quota_wait", {"run_id": ctx.run_id, "regions": blocked, "until": until})
    await ctx.control.sleep(max(0.0, until - ctx.clock.time()) + 1.0)
    ctx.control.unblock_regions()


async def quota_frees_at(ctx: InvokeContext, store: LedgerStore, regions: Sequence[str]) -> float:
    """When every region of `regions` can make its next call."""
    now = ctx.clock.time()
    start = ctx.quota.window_start(now)
    frees = [
        ctx.quota.frees_at(
            await anyio.to_thread.run_sync(store.quota_times, ctx.account, region, start), now
        )
        for region in regions
    ]
    return max(frees, default=now)

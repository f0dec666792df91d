"""Dispatch: every region at once, wave by wave, without one region's limits holding up another.

Each region has its own queue and its own workers (`region_concurrency` calls in flight, its own
rate and throttle pause in the gate); the global `--concurrency` is the gate's FIFO slots, so
regions waiting for one are served in turn. A wave is opened for every region together; it ends
when every region that is not quota-blocked has dispatched its share, and then the wave's
results are collected and judged (`fanout.waves.Leg`) before the next wave opens.

A region whose daily quota runs out drops out of the wave on its own: the other regions finish
the wave and go on. With `--wait-for-quota` the blocked region sleeps until its own window frees,
finishes its share of the old wave, waits for that share to be judged, and only then takes the
next wave that is open; without it, the region stops and the run ends with exit 4.

When the API itself refused a call (`Invocation.ExceedQuota`), the region waits until the
refusal says (its window frees, or the next probe time of `fanout.quota.probe_at`), reads its
limit again (it may have been raised), and then sends one batch alone - the probe: at most one
refused call per probe. Only when that one is accepted does the region go on at full speed. A
region's first call of a leg is such a probe too: when others spent the account's quota, one
refusal says so, not a burst of `--concurrency` of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio

from fanout.halt import HaltReason, RunControl
from fanout.invoke import BatchEnd, InvokeContext, invoke_batch
from fanout.ledger import AppendEvent, BatchRecord, BatchState, LedgerStore, SetQuotaLimit
from fanout.limits import reread_limit
from fanout.results import Collector
from fanout.times import iso
from fanout.waves import Leg, quota_frees_at

__all__ = ["OPEN_BATCH_STATES", "WaveOptions", "dispatch_waves"]

OPEN_BATCH_STATES = (BatchState.SENDING, BatchState.UNKNOWN, BatchState.PENDING)
# Workers per concurrency slot of a region: while one batch's call is on the wire, the next
# batch's intent is being committed, so the slots stay busy (the gate still bounds calls).
_WORKERS_PER_SLOT = 2


@dataclass(frozen=True, slots=True)
class WaveOptions:
    """How the waves of this leg are driven."""

    region_concurrency: int
    wait_for_quota: bool
    pause_after_wave: bool
    wave_wait_s: float = 0.0  # --wave-wait: bake time after a wave's results, before the next
    bake_until: float | None = None  # a bake time a resumed run still owes (epoch s)
    # --wave-check: at the end of a wave's bake time, on its succeeded instances (linked run)
    check: Callable[[int], Awaitable[None]] | None = None


class _Waves:
    """The wave barrier shared by the region loops and the wave loop."""

    __slots__ = ("_changed", "_out", "lagging", "opened", "waves")

    def __init__(self, waves: Sequence[int]) -> None:
        self.waves = list(waves)
        self.opened = {wave: anyio.Event() for wave in waves}
        # Per wave: regions whose share is sent. Lagging regions (their quota ran out) judge
        # their own shares from then on, and no wave waits for them.
        self._out: dict[int, set[str]] = {wave: set() for wave in waves}
        self.lagging: set[str] = set()
        self._changed = anyio.Event()

    def leave(self, wave: int, region: str) -> None:
        """`region` has sent its share of `wave`."""
        self._out[wave].add(region)
        self._changed.set()

    def lag(self, region: str) -> None:
        """`region` is quota-blocked: the waves go on without it."""
        self.lagging.add(region)
        self._changed.set()

    def open_all(self) -> None:
        """No wave will be judged any more (the run halted or ended): release every waiter."""
        for opened in self.opened.values():
            opened.set()

    async def wait_out(self, wave: int, regions: set[str]) -> None:
        """Until every region of `regions` has sent its share of `wave` or is lagging."""
        while not regions <= self._out[wave] | self.lagging:
            self._changed = anyio.Event()
            await self._changed.wait()


async def dispatch_waves(
    ctx: InvokeContext,
    leg: Leg,
    collector: Collector | None,
    store: LedgerStore,
    batches: Sequence[BatchRecord],
    options: WaveOptions,
) -> None:
    """Dispatch the open batches wave by wave, every region at once, results in between."""
    open_batches = [b for b in batches if b.state in OPEN_BATCH_STATES]
    # Batches that may already have run are resolved first (same token, same answer).
    open_batches.sort(key=lambda b: (b.wave, b.state is BatchState.PENDING, b.seq))
    by_region: dict[str, dict[int, list[BatchRecord]]] = {}
    for b in open_batches:
        by_region.setdefault(b.region, {}).setdefault(b.wave, []).append(b)
    waves = _Waves(sorted({b.wave for b in open_batches}))
    total = max((b.wave for b in batches), default=-1) + 1
    region = _Region(ctx, leg, collector, store, options, waves)
    async with anyio.create_task_group() as tg:
        for name, work in by_region.items():
            tg.start_soon(region.run, name, work)
        try:
            await _wave_loop(ctx, leg, collector, options, waves, by_region, total)
        finally:
            waves.open_all()
    if collector is not None:  # accepted earlier (resume), or by regions that caught up
        await collector.drain(ctx.control.abort_event)


async def _wave_loop(
    ctx: InvokeContext,
    leg: Leg,
    collector: Collector | None,
    options: WaveOptions,
    waves: _Waves,
    by_region: dict[str, dict[int, list[BatchRecord]]],
    total: int,
) -> None:
    """Open each wave, wait for every region's share, collect and judge, then the next."""
    control = ctx.control
    if waves.waves and waves.waves[0] > 0:  # a resume: what the wave before still owes
        await _after_wave(ctx, leg, options, waves.waves[0] - 1, options.bake_until)
    for index, wave in enumerate(waves.waves):
        if _halted(control):  # no wave starts once halted (or past the change window)
            return
        leg.emit("wave_start", {"run_id": ctx.run_id, "wave": wave + 1, "waves": total})
        waves.opened[wave].set()
        regions = {name for name, work in by_region.items() if wave in work}
        with anyio.CancelScope() as scope:
            if not control.halt_event.is_set():

                async def on_halt(scope: anyio.CancelScope = scope) -> None:
                    await control.halt_event.wait()
                    scope.cancel()

                async with anyio.create_task_group() as watch:
                    watch.start_soon(on_halt)
                    await waves.wait_out(wave, regions)
                    watch.cancel_scope.cancel()
        if collector is not None:
            await collector.drain(control.abort_event)
        if not _wave_over(control, leg, wave):
            return
        last = index == len(waves.waves) - 1
        if options.pause_after_wave and not last:
            control.halt(HaltReason.PAUSE)
            return
        if not last:
            until = ctx.clock.time() + options.wave_wait_s if options.wave_wait_s > 0 else None
            await _after_wave(ctx, leg, options, wave, until)


async def _after_wave(
    ctx: InvokeContext, leg: Leg, options: WaveOptions, wave: int, bake_until: float | None
) -> None:
    """Between `wave` and the next: its bake time (until `bake_until`), then its check on the
    wave's succeeded instances (a check that already ran is not counted again)."""
    if bake_until is not None:
        await _bake(ctx, leg, wave, bake_until)
    if options.check is not None and not _halted(ctx.control):
        await options.check(wave)


def _wave_over(control: RunControl, leg: Leg, wave: int) -> bool:
    """Report and judge the wave whose results are in; True if the next may start.

    A wave cut short by something other than its failures (a signal, a stop, a fatal answer,
    the change window) has results still out: it is not reported "done" - the halt says why.
    After the error budget's halt the results of what was sent are collected, and the wave is
    reported and judged with them."""
    if control.halted_by(
        HaltReason.SIGNAL, HaltReason.STOP_REQUESTED, HaltReason.FATAL, HaltReason.WINDOW
    ):
        return False
    leg.end_wave(wave)
    return not control.halted


def _halted(control: RunControl) -> bool:
    """Whether the run halted (a call, so that checks before and after an await both stand)."""
    return control.halted


async def _bake(ctx: InvokeContext, leg: Leg, wave: int, until: float) -> None:
    """The bake time after `wave`: journaled (a resume owes the rest), then slept on the run's
    clock; a halt or the change window ends it early."""
    now = ctx.clock.time()
    if until <= now:
        return
    data = {"run_id": ctx.run_id, "wave": wave + 1, "until": until, "wait_s": until - now}
    leg.emit("wave_wait", {**data, "until": iso(until)})  # times out are ISO-8601 (README)
    ctx.ledger.post(AppendEvent(ctx.run_id, "wave_wait", now, data))  # a resume reads epoch s
    await ctx.control.sleep(until - now)


@dataclass(frozen=True, slots=True)
class _Region:
    """The loop each region runs: its share of each open wave, its own quota waits."""

    ctx: InvokeContext
    leg: Leg
    collector: Collector | None
    store: LedgerStore
    options: WaveOptions
    waves: _Waves

    async def run(self, region: str, work: dict[int, list[BatchRecord]]) -> None:
        """Every wave in order: wait for it to open, send this region's share, leave it."""
        control = self.ctx.control
        control.start_probing(region)
        for wave in self.waves.waves:
            todo = work.get(wave, [])
            await self.waves.opened[wave].wait()
            while todo and not control.halted:
                probe = control.probing(region)
                await self._send(region, todo[:1] if probe else todo)  # a probe: one call alone
                if not control.is_blocked(region):
                    if not probe:
                        break
                    control.probe_passed(region)  # accepted: capacity is back, the rest goes
                    todo = await self._left_open(region, wave)
                    continue
                self.waves.lag(region)  # the others go on without this region
                if not self.options.wait_for_quota:
                    return
                await self._sleep_for_quota(region)
                todo = await self._left_open(region, wave)
            self.waves.leave(wave, region)
            if control.halted:
                return
            if region in self.waves.lagging:  # its share is judged before its next wave
                if self.collector is not None:
                    await self.collector.drain(control.abort_event)
                self.leg.judge_wave(wave)

    async def _send(self, region: str, batches: Sequence[BatchRecord]) -> None:
        """Invoke `batches` of one region with its own workers; the gate bounds calls in flight."""
        ctx, leg, collector = self.ctx, self.leg, self.collector
        queue = deque(batches)
        await ctx.ledger.flush()

        async def worker() -> None:
            while queue and not ctx.control.halted and not ctx.control.is_blocked(region):
                batch = queue.popleft()
                leg.batch_started(batch)
                outcome = await invoke_batch(ctx, batch)
                for spawned in outcome.spawned:  # split off (the API takes fewer per call)
                    leg.batch_split(spawned)
                    queue.appendleft(spawned)
                invoke_id = outcome.record.invoke_id
                if outcome.end is BatchEnd.ACCEPTED and collector is not None and invoke_id:
                    collector.follow(outcome.record, invoke_id)
                leg.batch_ended(outcome)

        workers = min(self.options.region_concurrency * _WORKERS_PER_SLOT, len(queue))
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
        await ctx.ledger.flush()

    async def _left_open(self, region: str, wave: int) -> list[BatchRecord]:
        """The region's batches of `wave` the quota left open, as stored now."""
        stored = await anyio.to_thread.run_sync(self.store.load_batches, self.ctx.run_id)
        return [
            b
            for b in stored
            if b.region == region and b.wave == wave and b.state in OPEN_BATCH_STATES
        ]

    async def _sleep_for_quota(self, region: str) -> None:
        """Sleep until `region` can make a call again (its window frees, or its probe is due),
        read its limit again, then let it send (one probe call first after a refusal)."""
        ctx = self.ctx
        until = await quota_frees_at(ctx, self.store, [region])
        block = ctx.control.quota_block(region)
        refused = block is not None and block.refused
        self.leg.emit(
            "quota_wait",
            {
                "run_id": ctx.run_id,
                "regions": [region],
                "until": iso(until),
                "code": block.code if block is not None else None,
                "probe": refused,
            },
        )
        await ctx.control.sleep(max(0.0, until - ctx.clock.time()) + 1.0)
        if ctx.control.halted:
            return
        limit = await reread_limit(ctx.client, ctx.quotas, region)
        if limit is not None:
            ctx.ledger.post(
                SetQuotaLimit(ctx.account, region, limit.limit, limit.source, ctx.clock.time())
            )
        ctx.control.unblock_region(region)

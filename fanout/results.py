"""The results stage: follow every accepted invocation to each instance's final state.

An accepted InvokeCommand only means Cloud Assistant took the command. Per region, the collector
sweeps `DescribeInvocations(CommandId, InvokeStatus=Running)` every `poll_interval_s`: one page
lists 50 running invocations with every instance's status, so instances that finished are
recorded within about one interval, whatever the number of invocations. An invocation that has
left the running list (or never showed up in it) gets one `DescribeInvocationResults(InvokeId)`,
which brings the outputs and settles it. That is about one Describe call per invocation plus
the shared sweep pages. An invocation that is not visible yet right after submit is not an error.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
import structlog
from aiolimiter import AsyncLimiter

from fanout.errors import CallError
from fanout.ledger import (
    BatchRecord,
    BatchState,
    GroupCommitter,
    InstanceRecord,
    InstanceState,
    SetBatch,
    SetInstances,
)

if TYPE_CHECKING:
    from fanout.aliyun.client import EcsClient

__all__ = [
    "COUNTED_FAILURES",
    "SUCCESS_STATUS",
    "TERMINAL_STATUSES",
    "Collector",
    "instance_outcome",
]

SUCCESS_STATUS = "Success"
# facts 2.3: per-instance terminal statuses; Stopped is treated as terminal too (UNCERTAIN there).
TERMINAL_STATUSES = frozenset(
    {
        "Success",
        "Failed",
        "Error",
        "Timeout",
        "Invalid",
        "Aborted",
        "Cancelled",
        "Terminated",
        "Stopped",
    }
)
# The outcomes the error budget counts (issue 4); Cancelled/Terminated/Stopped follow a stop.
COUNTED_FAILURES = frozenset({"Failed", "Error", "Timeout", "Invalid", "Aborted"})
# Describe calls in flight per collector: they cost no quota but are throttled like any API.
_DESCRIBE_CONCURRENCY = 8
# An invocation not (yet) in the running list is fetched after this grace, which doubles while
# it stays pending (an agent that is slow to pick it up), up to the cap.
_PENDING_CAP_S = 30.0

log = structlog.get_logger("fanout.results")
T = TypeVar("T")


class _Result(Protocol):
    """What both DescribeInvocations instances and DescribeInvocationResults records carry."""

    @property
    def instance_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def output(self) -> str: ...
    @property
    def dropped(self) -> int: ...
    @property
    def error_code(self) -> str: ...
    @property
    def error_info(self) -> str: ...
    @property
    def start_time(self) -> str | None: ...


def _cap(text: str, max_bytes: int) -> tuple[str, int]:
    """Text cut to `max_bytes` of UTF-8 and the number of bytes dropped."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text, 0
    return data[:max_bytes].decode(errors="ignore"), len(data) - max_bytes


def instance_outcome(
    batch: BatchRecord,
    invoke_id: str,
    result: _Result,
    finish_time: str | None,
    max_output_bytes: int,
) -> InstanceRecord:
    """The ledger record of one instance's terminal result."""
    output, dropped = _cap(result.output or "", max_output_bytes)
    ok = result.status == SUCCESS_STATUS
    return InstanceRecord(
        run_id=batch.run_id,
        region=batch.region,
        instance_id=result.instance_id,
        batch_id=batch.batch_id,
        state=InstanceState.SUCCEEDED if ok else InstanceState.FAILED,
        reason=None if ok else (result.error_info or f"invocation status {result.status}"),
        invoke_id=invoke_id,
        exit_code=result.exit_code,
        error_code=None if ok else (result.error_code or result.status),
        error_info=result.error_info or None,
        output=output or None,
        dropped=dropped + (result.dropped or 0),
        start_time=result.start_time,
        finish_time=finish_time,
        invocation_status=result.status,
    )


@dataclass(slots=True)
class _Watch:
    """One invocation being followed."""

    batch: BatchRecord
    invoke_id: str
    open_ids: set[str]
    final_ids: set[str] = field(default_factory=set)
    seen_running: bool = False
    fetch_after: float = 0.0
    grace_s: float = 1.0


@dataclass(slots=True)
class Collector:
    """Follows accepted invocations until every instance is final (or the run stops)."""

    client: EcsClient
    ledger: GroupCommitter
    command_id: str
    poll_interval_s: float
    max_output_bytes: int
    on_final: Callable[[InstanceRecord], None] = lambda _r: None
    # Describe calls cost no InvokeCommand quota but are throttled per region like every API.
    describe_rate_per_s: float = 50.0
    describe_calls: int = 0
    _limiters: dict[str, AsyncLimiter] = field(default_factory=dict)
    _watches: dict[str, _Watch] = field(default_factory=dict)
    _changed: anyio.Event = field(default_factory=anyio.Event)
    _idle: anyio.Event = field(default_factory=anyio.Event)
    _closed: bool = False

    def follow(self, batch: BatchRecord, invoke_id: str) -> None:
        """Start following an accepted batch's invocation."""
        grace = max(0.2, self.poll_interval_s)
        self._watches[invoke_id] = _Watch(
            batch,
            invoke_id,
            set(batch.instance_ids),
            fetch_after=time.monotonic() + grace,
            grace_s=grace,
        )
        self._changed.set()

    @property
    def following(self) -> int:
        """Invocations not yet final."""
        return len(self._watches)

    async def drain(self, halt: anyio.Event) -> None:
        """Wait until nothing is followed any more, or `halt` is set."""
        async with anyio.create_task_group() as tg:

            async def on_halt() -> None:
                await halt.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(on_halt)
            while self._watches:
                self._idle = anyio.Event()
                await self._idle.wait()
            tg.cancel_scope.cancel()

    def close(self) -> None:
        """End `run` after the current round."""
        self._closed = True
        self._changed.set()

    async def run(self) -> None:
        """Sweep every region with open invocations, then sleep until the next sweep."""
        while not self._closed:
            if not self._watches:
                self._changed = anyio.Event()
                await self._changed.wait()
                continue
            started = time.monotonic()
            regions = sorted({w.batch.region for w in self._watches.values()})
            async with anyio.create_task_group() as tg:
                for region in regions:
                    tg.start_soon(self._sweep, region)
            if not self._watches:
                self._idle.set()
            await anyio.sleep(max(0.05, self.poll_interval_s - (time.monotonic() - started)))

    def _limiter(self, region: str) -> AsyncLimiter | None:
        """The region's Describe rate limiter (None: unlimited)."""
        if self.describe_rate_per_s <= 0:
            return None
        limiter = self._limiters.get(region)
        if limiter is None:
            limiter = self._limiters[region] = AsyncLimiter(self.describe_rate_per_s, 1.0)
        return limiter

    async def _describe(
        self, region: str, what: str, call: Callable[[], Awaitable[T]], *, metered: bool
    ) -> T | None:
        """One Describe call (counted); None on failure (tried again next sweep).

        `metered` calls (the per-invocation fetches, the bulk) pass the region's rate limiter;
        sweep pages do not queue behind them: they are bounded by `poll_interval_s` already.
        """
        limiter = self._limiter(region) if metered else None
        if limiter is not None:
            await limiter.acquire()
        self.describe_calls += 1
        try:
            return await call()
        except CallError as err:
            log.warning("results poll failed", call=what, error=str(err))
            return None

    async def _sweep(self, region: str) -> None:
        """Record what the running list shows; fetch the invocations that left it."""
        open_ids = {w.invoke_id for w in self._watches.values() if w.batch.region == region}
        running = await self._describe(
            region,
            "DescribeInvocations",
            lambda: self.client.describe_invocations(
                region,
                command_id=self.command_id,
                invoke_status="Running",
                keep_invoke_ids=open_ids,
                keep_statuses=TERMINAL_STATUSES,
            ),
            metered=False,
        )
        if running is None:
            return
        listed = {inv.invoke_id: inv for inv in running}
        now = time.monotonic()
        due: list[_Watch] = []
        for watch in [w for w in self._watches.values() if w.batch.region == region]:
            inv = listed.get(watch.invoke_id)
            if inv is not None:
                watch.seen_running = True
                self._record(watch, inv.instances, with_output=False)
            elif watch.seen_running or now >= watch.fetch_after:
                due.append(watch)
        slots = anyio.CapacityLimiter(_DESCRIBE_CONCURRENCY)
        async with anyio.create_task_group() as tg:
            for watch in due:
                tg.start_soon(self._fetch, slots, watch)

    async def _fetch(self, slots: anyio.CapacityLimiter, watch: _Watch) -> None:
        """Read an invocation's results with outputs; settle it if every instance is final."""
        async with slots:
            results = await self._describe(
                watch.batch.region,
                "DescribeInvocationResults",
                lambda: self.client.describe_invocation_results(
                    watch.batch.region, invoke_id=watch.invoke_id
                ),
                metered=True,
            )
        if results is None:
            return
        self._record(watch, results, with_output=True)
        if watch.open_ids:  # still pending: look again later, less and less often
            watch.seen_running = False
            watch.grace_s = min(_PENDING_CAP_S, watch.grace_s * 2)
            watch.fetch_after = time.monotonic() + watch.grace_s
            return
        self.ledger.post(SetBatch(watch.batch.batch_id, BatchState.DONE, time.time()))
        self._watches.pop(watch.invoke_id, None)

    def _record(self, watch: _Watch, results: Sequence[_Result], *, with_output: bool) -> None:
        """Write terminal results: newly final instances, and outputs of ones already final."""
        records = []
        for result in results:
            iid = result.instance_id
            if result.status not in TERMINAL_STATUSES:
                continue
            first = iid in watch.open_ids
            if not first and not (with_output and iid in watch.final_ids):
                continue
            finish = getattr(result, "finished_time", None) or getattr(result, "finish_time", None)
            record = instance_outcome(
                watch.batch, watch.invoke_id, result, finish, self.max_output_bytes
            )
            records.append(record)
            if first:
                watch.open_ids.discard(iid)
                watch.final_ids.add(iid)
                self.on_final(record)
        if records:
            self.ledger.post(SetInstances(watch.batch.run_id, tuple(records), time.time()))

"""The results stage: follow every accepted invocation to each instance's final state.

An accepted InvokeCommand only means Cloud Assistant took the command. The collector polls
DescribeInvocationResults per invocation (paged, complete), with an interval that starts short
and grows while nothing changes, and writes each instance's terminal state, exit code, error and
output (capped) into the ledger. An invocation that is not visible yet is not an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import structlog

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
    from fanout.aliyun.wire import InvocationResult

__all__ = ["SUCCESS_STATUS", "TERMINAL_STATUSES", "Collector", "instance_outcome"]

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
# Polls grow by this factor while an invocation is unfinished, up to the cap; Describe calls are
# free of quota but throttled per region like every API.
_GROWTH = 1.5
_MAX_INTERVAL_S = 10.0
_DESCRIBE_CONCURRENCY = 8

log = structlog.get_logger("fanout.results")


def _cap(text: str, max_bytes: int) -> tuple[str, int]:
    """Text cut to `max_bytes` of UTF-8 and the number of bytes dropped."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text, 0
    return data[:max_bytes].decode(errors="ignore"), len(data) - max_bytes


def instance_outcome(
    run_id: str, region: str, batch_id: str, result: InvocationResult, max_output_bytes: int
) -> InstanceRecord:
    """The ledger record of one instance's terminal result."""
    output, dropped = _cap(result.output or "", max_output_bytes)
    ok = result.status == SUCCESS_STATUS
    return InstanceRecord(
        run_id=run_id,
        region=region,
        instance_id=result.instance_id,
        batch_id=batch_id,
        state=InstanceState.SUCCEEDED if ok else InstanceState.FAILED,
        reason=None if ok else (result.error_info or f"invocation status {result.status}"),
        invoke_id=result.invoke_id,
        exit_code=result.exit_code,
        error_code=None if ok else (result.error_code or result.status),
        error_info=result.error_info or None,
        output=output,
        dropped=dropped + (result.dropped or 0),
        start_time=result.start_time,
        finish_time=result.finished_time,
        invocation_status=result.status,
    )


@dataclass(slots=True)
class _Watch:
    """One invocation being followed."""

    batch: BatchRecord
    invoke_id: str
    open_ids: set[str]
    next_at: float
    interval_s: float


@dataclass(slots=True)
class Collector:
    """Follows accepted invocations until every instance is final (or the run stops)."""

    run_id: str
    client: EcsClient
    ledger: GroupCommitter
    poll_interval_s: float
    max_output_bytes: int
    on_final: Callable[[InstanceRecord], None] = lambda _r: None
    describe_calls: int = 0
    _watches: dict[str, _Watch] = field(default_factory=dict)
    _changed: anyio.Event = field(default_factory=anyio.Event)
    _idle: anyio.Event = field(default_factory=anyio.Event)
    _closed: bool = False

    def follow(self, batch: BatchRecord, invoke_id: str) -> None:
        """Start following an accepted batch's invocation."""
        now = time.monotonic()
        self._watches[invoke_id] = _Watch(
            batch,
            invoke_id,
            set(batch.instance_ids),
            now + self.poll_interval_s,
            self.poll_interval_s,
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
        """Poll due invocations, sleeping until the next one is due."""
        slots = anyio.CapacityLimiter(_DESCRIBE_CONCURRENCY)
        while not self._closed:
            now = time.monotonic()
            due = [w for w in self._watches.values() if w.next_at <= now]
            if due:
                async with anyio.create_task_group() as tg:
                    for watch in due:
                        tg.start_soon(self._poll_with, slots, watch)
                continue
            wait_s = min((w.next_at for w in self._watches.values()), default=now + 1.0) - now
            self._changed = anyio.Event()
            with anyio.move_on_after(max(0.01, wait_s)):
                await self._changed.wait()

    async def _poll_with(self, slots: anyio.CapacityLimiter, watch: _Watch) -> None:
        """One poll under the Describe concurrency limit."""
        async with slots:
            await self._poll(watch)

    async def _poll(self, watch: _Watch) -> None:
        """Read an invocation's results and record the instances that became final."""
        region = watch.batch.region
        self.describe_calls += 1
        try:
            results = await self.client.describe_invocation_results(
                region, invoke_id=watch.invoke_id
            )
        except CallError as err:
            log.warning("results poll failed", invoke_id=watch.invoke_id, error=str(err))
            results = []
        finished = self._record(watch, results)
        if not watch.open_ids:
            self.ledger.post(SetBatch(watch.batch.batch_id, BatchState.DONE, time.time()))
            self._watches.pop(watch.invoke_id, None)
            if not self._watches:
                self._idle.set()
            return
        if not finished:
            watch.interval_s = min(_MAX_INTERVAL_S, watch.interval_s * _GROWTH)
        watch.next_at = time.monotonic() + watch.interval_s

    def _record(self, watch: _Watch, results: Sequence[InvocationResult]) -> int:
        """Write terminal results of still-open instances; return how many."""
        records = []
        for result in results:
            if result.instance_id in watch.open_ids and result.status in TERMINAL_STATUSES:
                watch.open_ids.discard(result.instance_id)
                records.append(
                    instance_outcome(
                        self.run_id,
                        watch.batch.region,
                        watch.batch.batch_id,
                        result,
                        self.max_output_bytes,
                    )
                )
        if records:
            self.ledger.post(SetInstances(self.run_id, tuple(records), time.time()))
            for record in records:
                self.on_final(record)
        return len(records)

"""The results stage: follow every accepted invocation to each instance's final state.

An accepted InvokeCommand only means Cloud Assistant took the command. Per region, the collector
sweeps `DescribeInvocations(CommandId, InvokeStatus=Running)` every `poll_interval_s` — with the
region's own CommandId, the one its batches invoked (a public command, invoked by its name, is
swept without the filter: its invocations carry an id, not the name) — one page
lists 50 running invocations with every instance's status, so instances that finished are
recorded within about one interval (each page as it arrives), whatever the number of
invocations. An invocation that has left the running list (or never showed up in it) gets one
`DescribeInvocationResults(InvokeId)`, which brings the outputs and settles it; those fetches
run beside the sweeps, metered per region (`describe_rate_per_s`, halved on throttling). That is
about one Describe call per invocation plus the shared sweep pages. An invocation that is not
visible yet right after submit is not an error.

A failed read is classified: throttling and server errors were already retried by the client
(throttling past a whole minute) and are tried again at the next sweep; a refusal that no retry
can change (no RAM permission, credentials refused or expired, a parameter the API rejects)
halts the run at once (exit 6) with one line naming the action and the permission it needs -
never a silent loop.

"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from fanout.clock import SYSTEM_CLOCK, Clock
from fanout.errors import CallError, CallKind
from fanout.gate import per_second
from fanout.halt import HaltReason, RunControl
from fanout.ledger import (
    BatchRecord,
    BatchState,
    GroupCommitter,
    InstanceRecord,
    InstanceState,
    SetBatch,
    SetInstances,
)
from fanout.redaction import redact_text
from fanout.sources import is_public_name

if TYPE_CHECKING:
    from fanout.aliyun.client import EcsClient
    from fanout.aliyun.responses import InstanceResult

__all__ = [
    "COUNTED_FAILURES",
    "SUCCESS_STATUS",
    "TERMINAL_STATUSES",
    "UNREACHABLE_CODES",
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
# Per-instance ErrorCodes of a command that never reached the instance: the agent and network
# group of the SDK models' list and the instance states that prevent delivery (facts 2.3, 10
# [6]). Such an instance is `unreachable`, not `failed`: its command did not run and fail.
UNREACHABLE_CODES = frozenset(
    {
        "ClientNotRunning",
        "ClientNotResponse",
        "ClientNotOnline",
        "ClientNetworkBlocked",
        "ClientIsUpgrading",
        "ClientNeedUpgrade",
        "ClientRestarted",
        "SecurityGroupRuleDenied",
        "DeliveryTimeout",
        "InstanceNotExists",
        "InstanceReleased",
        "InstanceNotRunning",
        "InstanceDeregistered",
    }
)
_NOT_DELIVERED = "Aborted"  # "The command failed to be sent to the instance" (facts 2.3)
# Describe calls in flight per collector: they cost no quota but are throttled like any API.
_DESCRIBE_CONCURRENCY = 8
# Results fetches slow down on throttling to no less than this, and climb back after this long.
_MIN_DESCRIBE_RATE = 1.0
_RECOVER_AFTER_S = 5.0
# An invocation not (yet) in the running list is fetched after this grace, which doubles while
# it stays pending (an agent that is slow to pick it up), up to the cap.
_PENDING_CAP_S = 30.0
# The API keeps results 4 weeks and 100 000 records per region (facts 10 [10]): an invocation it
# has no record of at all, fetch after fetch for about five minutes (an accepted one is listed,
# Pending, at once), is gone; its open instances become `unknown`, saying why.
_GONE_AFTER_EMPTY_FETCHES = 14
_GONE_REASON = (
    "DescribeInvocationResults has no record of the invocation any more (the API keeps results "
    "4 weeks and 100 000 records per region)"
)

log = structlog.get_logger("fanout.results")


def _cap(text: str, max_bytes: int) -> tuple[str, int]:
    """The last `max_bytes` of the UTF-8 text and the number of bytes dropped before them: the
    end of a log holds the errors, and the API keeps the end too (its Dropped, facts 2.1)."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text, 0
    dropped = len(data) - max_bytes
    return data[dropped:].decode(errors="ignore"), dropped


def _final_state(result: InstanceResult) -> InstanceState:
    """Succeeded; unreachable when the command never reached the instance; else failed."""
    if result.status == SUCCESS_STATUS:
        return InstanceState.SUCCEEDED
    if result.error_code in UNREACHABLE_CODES or (
        result.status == _NOT_DELIVERED and not result.error_code
    ):
        return InstanceState.UNREACHABLE
    return InstanceState.FAILED


def instance_outcome(
    batch: BatchRecord,
    invoke_id: str,
    result: InstanceResult,
    max_output_bytes: int,
    secrets: Collection[str] = (),
) -> InstanceRecord:
    """The ledger record of one instance's terminal result (`Dropped` summed with our cut); the
    values of the run's secret parameters are redacted from its output and error text before
    anything is stored (I5)."""
    output, dropped = _cap(redact_text(result.output or "", secrets), max_output_bytes)
    ok = result.status == SUCCESS_STATUS
    return InstanceRecord(
        run_id=batch.run_id,
        region=batch.region,
        instance_id=result.instance_id,
        batch_id=batch.batch_id,
        state=_final_state(result),
        reason=None
        if ok
        else (
            redact_text(result.error_info or "", secrets) or f"invocation status {result.status}"
        ),
        invoke_id=invoke_id,
        exit_code=result.exit_code,
        error_code=None if ok else (result.error_code or result.status),
        error_info=redact_text(result.error_info, secrets) if result.error_info else None,
        output=output or None,
        dropped=dropped + (result.dropped or 0),
        start_time=result.start_time,
        finish_time=result.finish_time,
        invocation_status=result.status,
    )


class _DescribeMeter:
    """A region's rate for results fetches: at most `ceiling` per second; halved whenever the
    API has throttled a read in the region since the last look, and raised by a quarter every
    few seconds without, back up to the ceiling (ECS throttles per API, region and account,
    with other clients of the account sharing the budget: facts 6.2)."""

    __slots__ = (
        "_ceiling",
        "_changed_at",
        "_clock",
        "_floor",
        "_limiter",
        "_seen_throttle",
        "rate",
    )

    def __init__(self, ceiling_per_s: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._ceiling = ceiling_per_s
        self._clock = clock
        self.rate = ceiling_per_s
        self._floor = min(_MIN_DESCRIBE_RATE, ceiling_per_s)
        self._limiter = per_second(ceiling_per_s)
        self._changed_at = clock.monotonic()
        self._seen_throttle = 0.0

    async def acquire(self, throttled_at: float) -> None:
        """Wait for the next fetch's turn; `throttled_at` is when the last throttled read was."""
        now = self._clock.monotonic()
        if throttled_at > self._seen_throttle:
            self._seen_throttle = throttled_at
            self._set(max(self._floor, self.rate / 2), now)
        elif self.rate < self._ceiling and now - self._changed_at >= _RECOVER_AFTER_S:
            self._set(min(self._ceiling, self.rate * 1.25), now)
        await self._limiter.acquire()

    def _set(self, rate: float, now: float) -> None:
        self.rate, self._changed_at = rate, now
        self._limiter = per_second(rate)  # callers already waiting finish on the old one


@dataclass(slots=True)
class _Watch:
    """One invocation being followed."""

    batch: BatchRecord
    invoke_id: str
    # Its instances not final yet; the others of the batch are final (no second set of them:
    # a quota day of a million-instance run follows ten thousand invocations at once).
    open_ids: set[str]
    seen_running: bool = False
    queued: bool = False  # waiting for (or in) its DescribeInvocationResults fetch
    fetch_after: float = 0.0
    grace_s: float = 1.0
    empty_fetches: int = 0  # fetches in a row that found no record of the invocation at all


@dataclass(slots=True)
class Collector:
    """Follows accepted invocations until every instance is final (or the run stops).

    Each region has its own sweep loop and its own fetchers, so a slow region, or a burst of
    invocations finishing together, delays nothing else: a sweep records each page as it
    arrives and hands the invocations that left the running list to the fetchers' queue.
    """

    client: EcsClient
    ledger: GroupCommitter
    poll_interval_s: float
    max_output_bytes: int
    on_final: Callable[[InstanceRecord], None] = lambda _r: None
    # Describe calls cost no InvokeCommand quota but are throttled per region like every API.
    describe_rate_per_s: float = 200.0
    clock: Clock = SYSTEM_CLOCK
    secrets: tuple[str, ...] = ()  # secret parameter values: redacted from stored outputs
    control: RunControl | None = None  # halted (FATAL) when a read is refused for good
    _stopped: bool = False  # a read was refused for good: no more calls
    _meters: dict[str, _DescribeMeter] = field(default_factory=dict)
    _watches: dict[str, _Watch] = field(default_factory=dict)
    # The same watches by region: a sweep looks at its own region's, not at every region's.
    _by_region: dict[str, dict[str, _Watch]] = field(default_factory=dict)
    _regions: set[str] = field(default_factory=set)  # regions whose loop is running
    _changed: anyio.Event = field(default_factory=anyio.Event)
    _idle: anyio.Event = field(default_factory=anyio.Event)

    def follow(self, batch: BatchRecord, invoke_id: str, final: Collection[str] = ()) -> None:
        """Start following an accepted batch's invocation; instances in `final` (recorded by an
        earlier leg) are neither reported nor counted again, only their outputs refreshed."""
        grace = max(0.2, self.poll_interval_s)
        watch = _Watch(
            batch,
            invoke_id,
            set(batch.instance_ids).difference(final),
            fetch_after=self.clock.monotonic() + grace,
            grace_s=grace,
        )
        self._watches[invoke_id] = watch
        self._by_region.setdefault(batch.region, {})[invoke_id] = watch
        self._changed.set()

    async def drain(self, halt: anyio.Event) -> None:
        """Wait until nothing is followed any more, or `halt` is set."""
        async with anyio.create_task_group() as tg:

            async def on_halt() -> None:
                await halt.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(on_halt)
            while self._watches:
                # One event for every waiter: two regions lagging in one wave drain at once,
                # and a second fresh event would leave the first waiter asleep for ever.
                if self._idle.is_set():
                    self._idle = anyio.Event()
                await self._idle.wait()
            tg.cancel_scope.cancel()

    async def run(self) -> None:
        """Start a loop for every region with open invocations, as they appear (until cancelled)."""
        async with anyio.create_task_group() as tg:
            while True:
                self._changed = anyio.Event()
                for region in {r for r, ws in self._by_region.items() if ws} - self._regions:
                    self._regions.add(region)
                    tg.start_soon(self._region_loop, region)
                await self._changed.wait()

    def _open_in(self, region: str) -> list[_Watch]:
        return list(self._by_region.get(region, {}).values())

    async def _region_loop(self, region: str) -> None:
        """Sweep the region every `poll_interval_s` while it has open invocations; fetch the
        ones that left the running list concurrently, never holding up the next sweep."""
        send, receive = anyio.create_memory_object_stream[_Watch](max_buffer_size=math.inf)
        try:
            async with anyio.create_task_group() as tg, send:
                for _ in range(_DESCRIBE_CONCURRENCY):
                    tg.start_soon(self._fetcher, receive.clone())
                receive.close()
                while self._open_in(region) and not self._stopped:
                    started = self.clock.monotonic()
                    for watch in await self._sweep(region):
                        watch.queued = True
                        send.send_nowait(watch)
                    elapsed = self.clock.monotonic() - started
                    await self.clock.sleep(max(0.05, self.poll_interval_s - elapsed))
        finally:
            self._regions.discard(region)
            self._changed.set()  # new invocations may have arrived as this loop ended

    def _meter(self, region: str) -> _DescribeMeter | None:
        """The region's meter for results fetches (None: unlimited)."""
        if self.describe_rate_per_s <= 0:
            return None
        meter = self._meters.get(region)
        if meter is None:
            meter = self._meters[region] = _DescribeMeter(self.describe_rate_per_s, self.clock)
        return meter

    async def _sweep(self, region: str) -> list[_Watch]:
        """Record what the running list shows, page by page; return the invocations due for a
        fetch (they left the list, or never showed up in it within their grace)."""
        watches = self._open_in(region)
        # Each invocation's instances not final yet: the running list repeats the ones that
        # finished at every sweep until the whole invocation has, and parsing them again was
        # most of a sweep's CPU (ten times per instance with 30 s polls and 5-minute commands).
        open_ids = {w.invoke_id: w.open_ids for w in watches}
        listed: set[str] = set()
        command_id = next((w.batch.command_id for w in watches), None)
        pages = self.client.invocation_pages(
            region,
            command_id=None if command_id is None or is_public_name(command_id) else command_id,
            invoke_status="Running",
            keep_invoke_ids=open_ids,
            keep_statuses=TERMINAL_STATUSES,
            keep_instances=open_ids,
        )
        try:
            async with aclosing(pages):
                async for page in pages:
                    for inv in page:
                        watch = self._watches.get(inv.invoke_id)
                        if watch is not None:
                            listed.add(inv.invoke_id)
                            watch.seen_running = True
                            self._record(watch, inv.instances, with_output=False)
                    await self.ledger.room()  # the disk keeps up before the next page
        except CallError as err:
            if not self._refused_for_good(err, region):
                log.warning("results poll failed", call="DescribeInvocations", error=str(err))
            return []  # whatever was listed is recorded; the rest waits for the next sweep
        now = self.clock.monotonic()
        return [
            w
            for w in self._open_in(region)
            if not w.queued
            and w.invoke_id not in listed
            and (w.seen_running or now >= w.fetch_after)
        ]

    async def _fetcher(self, queue: MemoryObjectReceiveStream[_Watch]) -> None:
        """Fetch queued invocations one at a time (a region has several of these)."""
        async with queue:
            async for watch in queue:
                await self._fetch(watch)
                watch.queued = False

    async def _fetch(self, watch: _Watch) -> None:
        """Read an invocation's results with outputs; settle it if every instance is final."""
        region = watch.batch.region
        if self._stopped:
            return
        await self.ledger.room()  # no more reads while the disk is behind with the last ones
        meter = self._meter(region)
        if meter is not None:
            await meter.acquire(self.client.reads_throttled_at(region))
        try:
            results = await self.client.describe_invocation_results(
                region, invoke_id=watch.invoke_id
            )
        except CallError as err:
            if not self._refused_for_good(err, region):
                log.warning("results poll failed", call="DescribeInvocationResults", error=str(err))
            return  # tried again after the next sweep
        self._record(watch, results, with_output=True)
        watch.empty_fetches = 0 if results else watch.empty_fetches + 1
        if watch.open_ids and watch.empty_fetches >= _GONE_AFTER_EMPTY_FETCHES:
            self._gone(watch)
        if watch.open_ids:  # still pending: look again later, less and less often
            watch.seen_running = False
            watch.grace_s = min(_PENDING_CAP_S, watch.grace_s * 2)
            watch.fetch_after = self.clock.monotonic() + watch.grace_s
            return
        self.ledger.post(SetBatch(watch.batch.batch_id, BatchState.DONE, self.clock.time()))
        self._watches.pop(watch.invoke_id, None)
        self._by_region.get(region, {}).pop(watch.invoke_id, None)
        if not self._watches:
            self._idle.set()

    def _gone(self, watch: _Watch) -> None:
        """The API no longer keeps the invocation's results: its open instances are unknown."""
        batch = watch.batch
        records = tuple(
            InstanceRecord(
                run_id=batch.run_id,
                region=batch.region,
                instance_id=iid,
                batch_id=batch.batch_id,
                state=InstanceState.UNKNOWN,
                reason=_GONE_REASON,
                invoke_id=watch.invoke_id,
            )
            for iid in sorted(watch.open_ids)
        )
        log.warning("results gone", invoke_id=watch.invoke_id, instances=len(records))
        self.ledger.post(SetInstances(batch.run_id, records, self.clock.time()))
        for record in records:
            self.on_final(record)
        watch.open_ids.clear()

    def _refused_for_good(self, err: CallError, region: str) -> bool:
        """Halt the run (FATAL) for a refusal no retry can change; False for a passing one."""
        if err.kind not in (CallKind.FATAL, CallKind.BAD_REQUEST):
            return False
        self._stopped = True
        if self.control is not None:
            self.control.halt(HaltReason.FATAL, f"in {region}, {err}")
        log.error("results poll refused", region=region, error=str(err))
        return True

    def _record(
        self, watch: _Watch, results: Sequence[InstanceResult], *, with_output: bool
    ) -> None:
        """Write terminal results: newly final instances, and outputs of ones already final."""
        records = []
        for result in results:
            iid = result.instance_id
            if result.status not in TERMINAL_STATUSES:
                continue
            first = iid in watch.open_ids
            if not first and not (with_output and iid in watch.batch.instance_ids):
                continue  # not open and not one of the batch's final ones
            record = instance_outcome(
                watch.batch, watch.invoke_id, result, self.max_output_bytes, self.secrets
            )
            records.append(record)
            if first:
                watch.open_ids.discard(iid)
                self.on_final(record)
        if records:
            self.ledger.post(SetInstances(watch.batch.run_id, tuple(records), self.clock.time()))

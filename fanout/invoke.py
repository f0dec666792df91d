"""The invoke stage: one batch, one InvokeCommand, every attempt written ahead (invariant I1).

For each attempt the quota reservation and the intent (batch, attempt, ClientToken) are committed
*before* the request is sent. Every re-send of a batch carries the same ClientToken, so the API
answers a repeat with the original InvokeId instead of running the command again. The token
changes only when bad instances are isolated, or a batch is split because the account takes
fewer instances per call (`InstanceIds.ExceedLimit`: refused before anything ran), and only if
no earlier answer was lost.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from fanout.aliyun.command import CommandSpec
from fanout.clock import Backoff, Clock
from fanout.errors import CallError, CallKind, CredentialsExpiredError
from fanout.gate import Gate
from fanout.halt import HaltReason, RunControl
from fanout.ledger import (
    AddBatch,
    BatchRecord,
    BatchState,
    BeginAttempt,
    FinishAttempt,
    GroupCommitter,
    InstanceRecord,
    InstanceState,
    LedgerStore,
    Op,
    ReleaseQuota,
    SetBatch,
    SetInstances,
    ShrinkBatch,
)
from fanout.plan import client_token, split_batch_id
from fanout.preflight import find_unusable
from fanout.quota import QuotaBlock, RegionQuotas
from fanout.refused import block_at_once, quota_refused

if TYPE_CHECKING:
    from fanout.aliyun.client import EcsClient
    from fanout.aliyun.responses import InvokeResult

__all__ = ["BatchEnd", "BatchOutcome", "InvokeContext", "invoke_batch"]

# Isolating bad instances costs one extra call each time; two rounds bound that cost per batch.
_MAX_ISOLATION_ROUNDS = 2
# Throttled attempts of one batch before it is given up (each waits up to a minute in the gate).
_MAX_THROTTLED_ATTEMPTS = 32

log = structlog.get_logger("fanout.invoke")


class BatchEnd(enum.StrEnum):
    """How `invoke_batch` left a batch."""

    ACCEPTED = "accepted"
    FAILED = "failed"
    UNKNOWN = "unknown"
    QUOTA = "quota"  # left pending: the region's quota is spent
    STOPPED = "stopped"  # left pending/unknown: the run is stopping
    FATAL = "fatal"  # left pending/unknown: nothing more may be sent


@dataclass(frozen=True, slots=True)
class InvokeContext:
    """The invoke stage's collaborators for one leg of a run (shared by every batch)."""

    run_id: str
    account: str
    spec: CommandSpec
    client: EcsClient
    ledger: GroupCommitter
    gate: Gate
    quotas: RegionQuotas  # each region's daily limit (the account's own, or configured)
    control: RunControl
    clock: Clock
    max_attempts: int
    store: LedgerStore  # reads: fanout's own calls in a quota window, after a refusal
    # Per region, the most instances a call may name as the API has shown (InstanceIds.
    # ExceedLimit lowers it); batches above it are split before they are sent.
    batch_limits: dict[str, int] = field(default_factory=dict)
    # Per region, the attempts holding a reservation that have not gone on the wire (yet).
    unsent: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    # Per region, the attempts withdrawn unsent: their reservations go back through the group
    # committer, so a read of the ledger right after may still see them.
    withdrawn: dict[str, set[tuple[str, int]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """How `invoke_batch` left a batch: the record as it now stands, and why."""

    record: BatchRecord
    end: BatchEnd
    note: str | None = None  # "isolated": every instance was refused individually
    spawned: tuple[BatchRecord, ...] = ()  # batches split off this one, pending: send them too
    refusal: QuotaBlock | None = None  # the API refused it for the daily quota


@dataclass(slots=True)
class _Batch:
    """The mutable view of one batch while it is being invoked."""

    record: BatchRecord
    instance_ids: tuple[str, ...]
    token: str
    attempt: int
    maybe_applied: bool
    state: BatchState
    isolations: int = 0
    throttled: int = 0  # attempts the server throttled (never applied)
    invoke_id: str | None = None
    note: str | None = None  # "isolated": every instance was refused individually
    refusal: QuotaBlock | None = None
    backoff: Backoff = field(default_factory=Backoff)
    spawned: list[BatchRecord] = field(default_factory=list)


async def invoke_batch(d: InvokeContext, record: BatchRecord) -> BatchOutcome:
    """Send one batch until it is accepted, failed, unknown, or must wait (quota, stop, fatal)."""
    b = _Batch(
        record=record,
        instance_ids=record.instance_ids,
        token=record.client_token,
        attempt=record.attempts,
        maybe_applied=record.maybe_applied,
        state=record.state,
    )
    started = d.clock.monotonic()
    end = await _attempts(d, b)
    final = replace(
        record,
        instance_ids=b.instance_ids,
        client_token=b.token,
        invoke_id=b.invoke_id,
        attempts=b.attempt,
    )
    log.info(
        "batch",
        run_id=d.run_id,
        batch_id=record.batch_id,
        region=record.region,
        attempt=b.attempt,
        outcome=end.value,
        instances=len(b.instance_ids),
        duration_s=round(d.clock.monotonic() - started, 3),
    )
    return BatchOutcome(final, end, b.note, tuple(b.spawned), b.refusal)


async def _attempts(d: InvokeContext, b: _Batch) -> BatchEnd:
    """The attempt loop."""
    region = b.record.region
    while True:
        if d.control.halted:
            return _park(d, b, BatchEnd.FATAL if d.control.fatal else BatchEnd.STOPPED)
        if d.control.is_blocked(region):
            return _park(d, b, BatchEnd.QUOTA)
        await _fit(d, b)  # split first if the region takes fewer instances per call
        try:
            # The region admits the batch (its throttle pause and rate) before any intent is
            # written, so no quota is reserved for a batch that could not go now; the intent is
            # durable before the region's call slot and the global one are taken, so the commit
            # of the next intents overlaps the calls on the wire (at most 2 x --concurrency
            # ahead) and a region's slots are never held waiting for a commit.
            async with d.gate.admitted(region):
                if d.control.halted or d.control.is_blocked(region):
                    continue  # decided at the top of the loop, nothing written
                if not await _begin(d, b):
                    d.control.block_region(region)
                    return _park(d, b, BatchEnd.QUOTA)
                result = await _send(d, b)
        except CallError as err:
            end = await _failed_attempt(d, b, err)
            if end is not None:
                return end
            continue
        if result is None:  # halted or blocked between the intent and the send: nothing went out
            return _not_sent(d, b)
        d.gate.succeeded(region)
        b.invoke_id = result.invoke_id
        now = d.clock.time()
        d.ledger.post(
            FinishAttempt(
                b.record.batch_id,
                b.attempt,
                "accepted",
                now,
                request_id=result.request_id,
                invoke_id=result.invoke_id,
            ),
            # Its instances are now reported `invoked` through the batch: no per-row write.
            SetBatch(b.record.batch_id, BatchState.ACCEPTED, now, invoke_id=result.invoke_id),
        )
        return BatchEnd.ACCEPTED


async def _send(d: InvokeContext, b: _Batch) -> InvokeResult | None:
    """Take a global call slot and send; None if the run halted, or the API refused a call of the
    region for the quota, while waiting: nothing was sent. (A reservation granted before fanout's
    own count reached the limit is within it: that call still goes.)"""
    region = b.record.region
    async with d.gate.sending(region):
        block = d.control.quota_block(region)
        refused = block is not None and block.refused and d.control.is_blocked(region)
        if d.control.halted or refused:
            return None
        d.unsent.get(region, set()).discard((b.record.batch_id, b.attempt))
        # A CommandId belongs to one region: each batch invokes its region's own.
        spec = d.spec.for_command(b.record.command_id or d.spec.command_id)
        try:
            return await d.client.invoke_command(region, spec, b.instance_ids, client_token=b.token)
        except CallError as err:
            if err.kind is CallKind.QUOTA:  # before the slot goes back: nothing else goes out
                block_at_once(d, region, err)
            raise


async def _begin(d: InvokeContext, b: _Batch) -> bool:
    """Reserve quota and commit the intent; False if the quota is spent."""
    now = d.clock.time()
    policy = d.quotas.policy(b.record.region)
    op = BeginAttempt(
        run_id=d.run_id,
        batch_id=b.record.batch_id,
        region=b.record.region,
        attempt=b.attempt + 1,
        client_token=b.token,
        account=d.account,
        window_start=policy.window_start(now),
        limit=policy.limit,
        now=now,
    )
    # Counted unsent from before the reservation can exist until the call goes on the wire, so
    # a refusal's reading of the ledger never takes a reservation for one of fanout's calls.
    unsent, key = d.unsent.setdefault(b.record.region, set()), (b.record.batch_id, b.attempt + 1)
    unsent.add(key)
    granted = False
    try:
        (answer,) = await d.ledger.submit(op)
        granted = bool(answer)
    finally:
        if not granted:
            unsent.discard(key)
    if not granted:
        return False
    b.attempt += 1
    b.state = BatchState.SENDING
    return True


def _not_sent(d: InvokeContext, b: _Batch) -> BatchEnd:
    """The attempt waited at the gate while the run halted or its region was blocked."""
    _withdraw(d, b)
    if not d.control.halted:
        return _park(d, b, BatchEnd.QUOTA)
    return _park(d, b, BatchEnd.FATAL if d.control.fatal else BatchEnd.STOPPED)


def _withdraw(d: InvokeContext, b: _Batch) -> None:
    """The attempt was reserved but never sent: its reservation goes back."""
    region, batch_id = b.record.region, b.record.batch_id
    d.ledger.post(
        FinishAttempt(batch_id, b.attempt, "withdrawn", d.clock.time()),
        ReleaseQuota(d.account, region, d.run_id, batch_id, b.attempt),
    )
    d.unsent.get(region, set()).discard((batch_id, b.attempt))
    d.withdrawn.setdefault(region, set()).add((batch_id, b.attempt))


def _park(d: InvokeContext, b: _Batch, end: BatchEnd) -> BatchEnd:
    """Leave the batch for a later resume: pending if nothing can have run, else unknown."""
    if b.state is BatchState.SENDING:
        state = BatchState.UNKNOWN if b.maybe_applied else BatchState.PENDING
        d.ledger.post(
            SetBatch(b.record.batch_id, state, d.clock.time(), maybe_applied=b.maybe_applied)
        )
    return end


def _settle(d: InvokeContext, b: _Batch, state: BatchState, err: CallError) -> None:
    """Finish the batch as FAILED or UNKNOWN, its instances with it."""
    instance_state = InstanceState.FAILED if state is BatchState.FAILED else InstanceState.UNKNOWN
    d.ledger.post(
        SetBatch(
            b.record.batch_id,
            state,
            d.clock.time(),
            error_code=err.code,
            error_message=str(err),
            maybe_applied=b.maybe_applied,
            instance_state=instance_state,
        )
    )


async def _failed_attempt(d: InvokeContext, b: _Batch, err: CallError) -> BatchEnd | None:
    """Record a failed attempt and decide: None to try again, or how the batch ends."""
    d.ledger.post(
        FinishAttempt(
            b.record.batch_id,
            b.attempt,
            err.kind.value,
            d.clock.time(),
            request_id=err.request_id,
            error_code=err.code,
            http_status=err.http_status,
            message=str(err)[:500],
        )
    )
    if err.kind is CallKind.AMBIGUOUS:
        b.maybe_applied = True
    if err.kind in (CallKind.RETRYABLE, CallKind.AMBIGUOUS):
        return await _retry_later(d, b, err)
    if err.kind is CallKind.QUOTA:  # authoritative: the region stops; the attempt used nothing
        b.refusal = await quota_refused(d, b.record.batch_id, b.record.region, b.attempt, err)
        return _park(d, b, BatchEnd.QUOTA)
    if err.kind is CallKind.PER_INSTANCE and not b.maybe_applied:
        return await _isolate(d, b, err)
    if err.kind is CallKind.TOO_MANY_INSTANCES and not b.maybe_applied and len(b.instance_ids) > 1:
        # Refused before anything ran: the region takes fewer per call. Halve what it is known
        # to take; `_fit` splits this batch (new tokens) before the next attempt.
        region, size = b.record.region, len(b.instance_ids)
        d.batch_limits[region] = min(d.batch_limits.get(region, size), size // 2)
        log.warning("batch too large", region=region, instances=size, limit=size // 2)
        return None
    if err.kind is CallKind.FATAL:
        d.control.halt(HaltReason.FATAL, str(err))
        if isinstance(err, CredentialsExpiredError):  # raised before sending: nothing went out
            _withdraw(d, b)
        return _park(d, b, BatchEnd.FATAL)
    if err.kind is CallKind.BAD_REQUEST:  # every batch would fail the same way: stop the run
        d.control.halt(HaltReason.FATAL, str(err))
    state = BatchState.UNKNOWN if b.maybe_applied else BatchState.FAILED
    _settle(d, b, state, err)
    return BatchEnd.UNKNOWN if b.maybe_applied else BatchEnd.FAILED


async def _retry_later(d: InvokeContext, b: _Batch, err: CallError) -> BatchEnd | None:
    """Back off and try again with the same token, unless attempts are used up.

    A throttled attempt was refused before it was applied, so it does not use up one of the
    batch's `max_attempts`: a region throttled hard slows down, its batches do not fail. A
    server that throttles a batch `_MAX_THROTTLED_ATTEMPTS` times (about half an hour at
    the gate's one-minute ceiling) fails it all the same.
    """
    if err.is_throttling:
        b.throttled += 1
    if b.attempt - b.throttled >= d.max_attempts or b.throttled >= _MAX_THROTTLED_ATTEMPTS:
        state = BatchState.UNKNOWN if b.maybe_applied else BatchState.FAILED
        _settle(d, b, state, err)
        return BatchEnd.UNKNOWN if b.maybe_applied else BatchEnd.FAILED
    delay = b.backoff.next_delay_s(err.retry_after_s)
    if err.is_throttling:
        delay = max(delay, d.gate.throttled(b.record.region, err.retry_after_s))
    await d.control.sleep(delay)
    return None


async def _fit(d: InvokeContext, b: _Batch) -> None:
    """Split the batch in two (its first half keeps it, a new batch takes the rest, each with a
    new ClientToken) until it fits the region's known per-call limit. Never a batch whose token
    may have been applied: that one is only ever re-sent as it is."""
    limit = d.batch_limits.get(b.record.region)
    while limit is not None and len(b.instance_ids) > limit and not b.maybe_applied:
        half = (len(b.instance_ids) + 1) // 2
        keep, move = b.instance_ids[:half], b.instance_ids[half:]
        now = d.clock.time()
        rest = BatchRecord(
            batch_id=split_batch_id(b.record.batch_id, move),
            run_id=d.run_id,
            region=b.record.region,
            seq=b.record.seq,
            wave=b.record.wave,
            instance_ids=move,
            client_token=client_token(d.run_id, b.record.region, move),
            state=BatchState.PENDING,
            command_id=b.record.command_id,
        )
        b.token = client_token(d.run_id, b.record.region, keep)
        ops: list[Op] = []
        if b.state is not BatchState.PENDING:  # an attempt was refused: nothing ran
            ops.append(SetBatch(b.record.batch_id, BatchState.PENDING, now))
        ops += [ShrinkBatch(b.record.batch_id, keep, b.token, now), AddBatch(rest, now)]
        await d.ledger.submit(*ops)
        b.state, b.instance_ids = BatchState.PENDING, keep
        b.spawned.append(rest)


async def _isolate(d: InvokeContext, b: _Batch, err: CallError) -> BatchEnd | None:
    """Find the unusable instances (free Describe calls), fail them, and go on with the rest."""
    unusable: dict[str, str] = {}
    if b.isolations < _MAX_ISOLATION_ROUNDS:
        try:
            unusable = await find_unusable(d.client, b.record.region, b.instance_ids)
        except CallError as read_err:  # cannot tell which: the batch fails with the API's answer
            if read_err.kind is CallKind.FATAL:
                d.control.halt(HaltReason.FATAL, str(read_err))
                return _park(d, b, BatchEnd.FATAL)
    if not unusable:
        _settle(d, b, BatchState.FAILED, err)
        return BatchEnd.FAILED
    b.isolations += 1
    now = d.clock.time()
    remaining = tuple(i for i in b.instance_ids if i not in unusable)
    records = tuple(
        InstanceRecord(
            run_id=d.run_id,
            region=b.record.region,
            instance_id=iid,
            batch_id=b.record.batch_id,
            state=InstanceState.FAILED,
            reason=reason,
            error_code=err.code,
        )
        for iid, reason in unusable.items()
    )
    ops: list[Op] = [
        SetBatch(b.record.batch_id, BatchState.PENDING, now),
        SetInstances(d.run_id, records, now),
    ]
    b.state = BatchState.PENDING
    if not remaining:
        b.note = "isolated"
        ops.append(SetBatch(b.record.batch_id, BatchState.FAILED, now, error_code=err.code))
        await d.ledger.submit(*ops)
        return BatchEnd.FAILED
    b.token = client_token(d.run_id, b.record.region, remaining)
    b.instance_ids = remaining
    ops.append(ShrinkBatch(b.record.batch_id, remaining, b.token, now))
    await d.ledger.submit(*ops)
    return None

"""The write operations on PostgreSQL: one handler per `Op`, all inside one transaction.

Semantics are those of the SQLite store (`sqlite.py`), statement for statement. What differs is
how a quota reservation is made atomic: SQLite holds one write lock for the whole file; here
`lock_keys` takes a transaction-scoped advisory lock per (account, region) before any
window is counted, so runners on different hosts reserve one region's calls one at a time while
other regions proceed in parallel. The transaction must run at READ COMMITTED: each statement
then reads what was committed before it started, i.e. after the lock was granted.

Leases (run ownership) work across hosts by time, as on SQLite, plus one PostgreSQL fact: the
holder also keeps a session-level advisory lock on the run for as long as its connection lives.
When a live-looking lease's holder held that lock and another session can now take it, the
holder's session is gone (process killed, host down and its connection reset), and the lease
is taken over at once instead of after it expires. Host names and pids are never trusted for
that: two hosts may well share a name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import Cursor
from psycopg.rows import TupleRow

from fanout.errors import LedgerError, RunNotFoundError, TransitionError
from fanout.ledger.model import (
    BATCH_TRANSITIONS,
    INSTANCE_TRANSITIONS,
    RUN_TRANSITIONS,
    AcquireLease,
    AppendEvent,
    BatchState,
    BeginAttempt,
    FinishAttempt,
    InstanceState,
    Op,
    RunState,
    SetBatch,
    SetInstances,
    SetRun,
    ShrinkBatch,
    check_transition,
    predecessors,
)
from fanout.ledger.pg_schema import EVENTS_LOCK_CLASS, FANOUT_LOCK_CLASS, RUN_LOCK_CLASS

__all__ = ["Group", "apply_one", "lock_keys", "quota_lock_id"]


@dataclass(slots=True)
class Group:
    """State shared by the operations of one transaction."""

    cur: Cursor[TupleRow]
    leases: dict[str, str]  # run id -> owner, for every lease this store holds (committed)
    run_locks: set[str]  # runs whose session lock this connection holds (not transactional)
    granted: dict[str, str] = field(default_factory=dict)  # leases granted in this group
    quota_used: dict[tuple[str, str], int] = field(default_factory=dict)
    fenced: set[str] = field(default_factory=set)  # runs whose lease was checked in this group


def _lock_id(*parts: str) -> int:
    """A stable signed 32-bit advisory lock key for `parts`.

    Computed here, not with the server's hashtext(), so every fanout and server version agrees
    on it and a group's keys can be sorted before locking.
    """
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def quota_lock_id(account: str, region: str) -> int:
    """The advisory lock key of one quota counter."""
    return _lock_id(account, region)


def lock_keys(cur: Cursor[TupleRow], ops: Sequence[Op]) -> None:
    """Take the group's advisory locks, all up front and in one global order (no deadlocks).

    - one per (account, region) reserved from: a window is counted and a call reserved by one
      transaction at a time, whichever host it comes from (I3);
    - one per run whose journal is appended to: event ids then grow in commit order per run,
      so a reader that remembers the last id it saw (the stop-request poll) misses none.
    """
    keys: set[tuple[int, int]] = set()
    for op in ops:
        if isinstance(op, BeginAttempt):
            keys.add((FANOUT_LOCK_CLASS, quota_lock_id(op.account, op.region)))
        elif isinstance(op, AppendEvent):
            keys.add((EVENTS_LOCK_CLASS, _lock_id(op.run_id)))
    for classid, objid in sorted(keys):
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (classid, objid))


def apply_one(group: Group, op: Op) -> object:  # noqa: PLR0911 - one line per operation type
    """Dispatch one operation."""
    cur = group.cur
    if isinstance(op, BeginAttempt):
        return _begin_attempt(group, op)
    if isinstance(op, FinishAttempt):
        _finish_attempt(cur, op)
        return None
    if isinstance(op, SetBatch):
        _set_batch(cur, op)
        return None
    if isinstance(op, ShrinkBatch):
        _shrink_batch(cur, op)
        return None
    if isinstance(op, SetInstances):
        _set_instances(cur, op)
        return None
    if isinstance(op, SetRun):
        _set_run(cur, op)
        return None
    if isinstance(op, AppendEvent):
        cur.execute(
            "INSERT INTO events (run_id, ts, kind, data) VALUES (%s, %s, %s, %s::jsonb)",
            (op.run_id, op.now, op.kind, json.dumps(op.data, default=str)),
        )
        return None
    return _acquire_lease(group, op)


def _check_fence(group: Group, run_id: str) -> None:
    """Refuse new intents for a run whose lease this store held and another owner took over.

    `FOR SHARE` makes a concurrent takeover wait for this transaction (or this one see it), so
    the new owner loads the run's batches only after every intent written under the old lease.
    """
    owner = group.leases.get(run_id)
    if owner is None or run_id in group.fenced or run_id in group.granted:
        return
    row = group.cur.execute(
        "SELECT lease_owner, lease_until FROM runs WHERE run_id = %s FOR SHARE", (run_id,)
    ).fetchone()
    if row is not None and row[0] != owner:
        msg = (
            f"run {run_id}: the lease was taken over by {row[0]}; this runner ({owner}) "
            "stops dispatching"
        )
        raise LedgerError(msg)
    group.fenced.add(run_id)


def _begin_attempt(group: Group, op: BeginAttempt) -> bool:
    """Count the window, reserve one call if it fits, record the attempt, mark the batch SENDING."""
    _check_fence(group, op.run_id)
    cur = group.cur
    key = (op.account, op.region)
    used = group.quota_used.get(key)
    if used is None:
        row = cur.execute(
            "SELECT COUNT(*) FROM quota_calls WHERE account = %s AND region = %s AND ts > %s",
            (op.account, op.region, op.window_start),
        ).fetchone()
        assert row is not None
        used = int(row[0])
    if used >= op.limit:
        group.quota_used[key] = used
        return False
    group.quota_used[key] = used + 1
    cur.execute(
        "INSERT INTO quota_calls VALUES (%s, %s, %s, %s, %s, %s)",
        (op.account, op.region, op.now, op.run_id, op.batch_id, op.attempt),
    )
    cur.execute(
        "INSERT INTO attempts (batch_id, attempt, client_token, sent_at) VALUES (%s, %s, %s, %s)",
        (op.batch_id, op.attempt, op.client_token, op.now),
    )
    _update_batch_state(cur, op.batch_id, BatchState.SENDING, op.now, attempts=op.attempt)
    return True


def _update_batch_state(
    cur: Cursor[TupleRow], batch_id: str, state: BatchState, now: float, **extra: object
) -> None:
    """Checked state change of one batch, with extra columns set alongside."""
    allowed = [s.value for s in predecessors(BATCH_TRANSITIONS, state)]
    sets = "".join(f", {column} = %s" for column in extra)
    cur.execute(
        f"UPDATE batches SET state = %s, updated_at = %s{sets} "
        "WHERE batch_id = %s AND state = ANY(%s)",
        (state.value, now, *extra.values(), batch_id, allowed),
    )
    if cur.rowcount != 1:
        row = cur.execute("SELECT state FROM batches WHERE batch_id = %s", (batch_id,)).fetchone()
        if row is None:
            msg = f"batch {batch_id}: no such batch"
            raise TransitionError(msg)
        check_transition(BATCH_TRANSITIONS, BatchState(row[0]), state, f"batch {batch_id}")


def _finish_attempt(cur: Cursor[TupleRow], op: FinishAttempt) -> None:
    """Record the end of an attempt."""
    cur.execute(
        "UPDATE attempts SET finished_at = %s, outcome = %s, request_id = %s, invoke_id = %s, "
        "error_code = %s, http_status = %s, message = %s WHERE batch_id = %s AND attempt = %s",
        (
            op.now,
            op.outcome,
            op.request_id,
            op.invoke_id,
            op.error_code,
            op.http_status,
            op.message,
            op.batch_id,
            op.attempt,
        ),
    )


def _set_batch(cur: Cursor[TupleRow], op: SetBatch) -> None:
    """Checked batch transition, and its open instances with it."""
    extra: dict[str, object] = {"error_code": op.error_code, "error_message": op.error_message}
    if op.invoke_id is not None:
        extra["invoke_id"] = op.invoke_id
    if op.maybe_applied is not None:
        extra["maybe_applied"] = op.maybe_applied
    _update_batch_state(cur, op.batch_id, op.state, op.now, **extra)
    if op.instance_state is None:
        return
    allowed = [s.value for s in predecessors(INSTANCE_TRANSITIONS, op.instance_state)]
    cur.execute(
        "UPDATE instances SET state = %s, invoke_id = COALESCE(%s, invoke_id), "
        "error_code = COALESCE(%s, error_code), reason = COALESCE(%s, reason), updated_at = %s "
        "WHERE batch_id = %s AND state = ANY(%s)",
        (
            op.instance_state.value,
            op.invoke_id,
            op.error_code,
            op.error_message,
            op.now,
            op.batch_id,
            allowed,
        ),
    )


def _shrink_batch(cur: Cursor[TupleRow], op: ShrinkBatch) -> None:
    """Replace a pending batch's instance set and token."""
    cur.execute(
        "UPDATE batches SET instance_ids = %s, client_token = %s, updated_at = %s "
        "WHERE batch_id = %s AND state = %s AND NOT maybe_applied",
        (",".join(op.instance_ids), op.client_token, op.now, op.batch_id, BatchState.PENDING.value),
    )
    if cur.rowcount != 1:
        msg = f"batch {op.batch_id}: only a pending batch that never may have run can shrink"
        raise TransitionError(msg)


def _set_instances(cur: Cursor[TupleRow], op: SetInstances) -> None:
    """Checked transitions of individual instances, with their outcome details."""
    for rec in op.records:
        allowed = [s.value for s in predecessors(INSTANCE_TRANSITIONS, rec.state)]
        cur.execute(
            "UPDATE instances SET state = %s, reason = %s, invoke_id = COALESCE(%s, invoke_id), "
            "exit_code = %s, error_code = %s, error_info = %s, output = %s, dropped = %s, "
            "start_time = %s, finish_time = %s, invocation_status = %s, updated_at = %s "
            "WHERE run_id = %s AND region = %s AND instance_id = %s AND state = ANY(%s)",
            (
                rec.state.value,
                rec.reason,
                rec.invoke_id,
                rec.exit_code,
                rec.error_code,
                rec.error_info,
                rec.output,
                rec.dropped,
                rec.start_time,
                rec.finish_time,
                rec.invocation_status,
                op.now,
                rec.run_id,
                rec.region,
                rec.instance_id,
                allowed,
            ),
        )
        if cur.rowcount != 1:
            row = cur.execute(
                "SELECT state FROM instances WHERE run_id = %s AND region = %s "
                "AND instance_id = %s",
                (rec.run_id, rec.region, rec.instance_id),
            ).fetchone()
            what = f"instance {rec.region}/{rec.instance_id}"
            if row is None:
                msg = f"{what}: not in run {rec.run_id}"
                raise TransitionError(msg)
            check_transition(INSTANCE_TRANSITIONS, InstanceState(row[0]), rec.state, what)


def _set_run(cur: Cursor[TupleRow], op: SetRun) -> None:
    """Checked run transition."""
    row = cur.execute(
        "SELECT state FROM runs WHERE run_id = %s FOR UPDATE", (op.run_id,)
    ).fetchone()
    if row is None:
        msg = f"no run {op.run_id!r}"
        raise RunNotFoundError(msg)
    check_transition(RUN_TRANSITIONS, RunState(row[0]), op.state, f"run {op.run_id}")
    cur.execute(
        "UPDATE runs SET state = %s, updated_at = %s, exit_code = COALESCE(%s, exit_code) "
        "WHERE run_id = %s",
        (op.state.value, op.now, op.exit_code, op.run_id),
    )


def _try_run_lock(group: Group, run_id: str) -> bool:
    """Take the run's session lock if no other session holds it; True if this one holds it."""
    if run_id not in group.run_locks:
        row = group.cur.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (RUN_LOCK_CLASS, _lock_id("run", run_id))
        ).fetchone()
        if row is None or not row[0]:
            return False
        group.run_locks.add(run_id)
    return True


def _release_run_lock(group: Group, run_id: str) -> None:
    """Give the run's session lock back (the lease was released)."""
    if run_id in group.run_locks:
        group.cur.execute(
            "SELECT pg_advisory_unlock(%s, %s)", (RUN_LOCK_CLASS, _lock_id("run", run_id))
        )
        group.run_locks.discard(run_id)


def _acquire_lease(group: Group, op: AcquireLease) -> tuple[bool, str | None, float | None]:
    """Take the lease if free, expired, ours, forced, or its holder's session is gone."""
    cur = group.cur
    row = cur.execute(
        "SELECT lease_owner, lease_until, lease_locked FROM runs WHERE run_id = %s FOR UPDATE",
        (op.run_id,),
    ).fetchone()
    if row is None:
        msg = f"no run {op.run_id!r}"
        raise RunNotFoundError(msg)
    holder, until, locked = row
    free = holder is None or holder == op.owner or until is None or until < op.now or op.force
    if not free and locked and op.run_id not in group.run_locks:
        free = _try_run_lock(group, op.run_id)  # free: the holder's connection is gone
    if not free:
        return False, holder, until
    if op.until <= op.now:  # a release: the lease ends now
        _release_run_lock(group, op.run_id)
        held = False
    else:
        held = _try_run_lock(group, op.run_id)
    cur.execute(
        "UPDATE runs SET lease_owner = %s, lease_until = %s, lease_locked = %s WHERE run_id = %s",
        (op.owner, op.until, held, op.run_id),
    )
    group.granted[op.run_id] = op.owner
    return True, op.owner, op.until

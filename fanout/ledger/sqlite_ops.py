"""The write operations on SQLite: one handler per `Op`, pure SQL over one cursor, all inside
the one `BEGIN IMMEDIATE` transaction of `SqliteLedger.apply` (which maps sqlite3's errors).

Semantics are shared with the PostgreSQL store (`pg_ops.py`), operation for operation; the
statements and their arguments that both write are in `writes.py`. SQLite holds one write lock
for the whole file, so counting a quota window and reserving a call in it are atomic here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence

from fanout.errors import RunNotFoundError, TransitionError
from fanout.ledger import command_rows, writes
from fanout.ledger.model import (
    BATCH_TRANSITIONS,
    INSTANCE_TRANSITIONS,
    RUN_TRANSITIONS,
    AcquireLease,
    AddBatch,
    AppendEvent,
    BatchState,
    BeginAttempt,
    ClaimCommand,
    DropCommand,
    FinishAttempt,
    InstanceState,
    Op,
    RecordCommand,
    ReleaseQuota,
    RunState,
    SetBatch,
    SetInstances,
    SetQuotaLimit,
    SetRegionCommand,
    SetRun,
    ShrinkBatch,
    check_transition,
)
from fanout.ledger.rows import BATCH_COLUMNS, batch_row

__all__ = ["apply_one", "insert_chunks", "placeholders"]

# S608 (SQL built from strings) is silenced on three statements below: their text comes only from
# module constants and `?` placeholders, never from input (as in `sqlite.py`, `pg_ops.py`).

# Rows per executemany chunk when creating a run: bounds memory for million-target runs.
_INSERT_CHUNK = 20_000


def placeholders(states: Sequence[str]) -> str:
    """`?, ?, ?` for an IN clause."""
    return ", ".join("?" for _ in states)


def apply_one(  # noqa: PLR0911 - one dispatch line per operation type reads best
    cur: sqlite3.Cursor, op: Op, quota_cache: dict[tuple[str, str], int]
) -> object:
    """Dispatch one operation."""
    if isinstance(op, BeginAttempt):
        return _begin_attempt(cur, op, quota_cache)
    if isinstance(op, FinishAttempt):
        _finish_attempt(cur, op)
        return None
    if isinstance(op, SetBatch | ShrinkBatch | AddBatch | SetInstances):
        _batch_op(cur, op)
        return None
    if isinstance(op, SetRun):
        _set_run(cur, op)
        return None
    if isinstance(op, AppendEvent):
        cur.execute(
            "INSERT INTO events (run_id, ts, kind, data) VALUES (?, ?, ?, ?)",
            (op.run_id, op.now, op.kind, json.dumps(op.data, default=str)),
        )
        return None
    if isinstance(op, ReleaseQuota | SetQuotaLimit):
        _quota_fact(cur, op, quota_cache)
        return None
    if isinstance(op, AcquireLease):
        return _acquire_lease(cur, op)
    return _command_op(cur, op)


def _batch_op(cur: sqlite3.Cursor, op: SetBatch | ShrinkBatch | AddBatch | SetInstances) -> None:
    """The checked changes of batches and their instances (as pg_ops)."""
    if isinstance(op, SetBatch):
        _set_batch(cur, op)
    elif isinstance(op, ShrinkBatch):
        _shrink_batch(cur, op)
    elif isinstance(op, AddBatch):
        _add_batch(cur, op)
    else:
        _set_instances(cur, op)


def _command_op(
    cur: sqlite3.Cursor, op: ClaimCommand | RecordCommand | DropCommand | SetRegionCommand
) -> object:
    """The operations on commands fanout creates (`command_rows`)."""
    if isinstance(op, ClaimCommand):
        rec = op.record
        key = command_rows.key_args(rec.account, rec.region, rec.name)
        row = cur.execute(
            f"SELECT {command_rows.COMMAND_COLUMNS} FROM commands WHERE {command_rows.KEY}", key
        ).fetchone()
        granted, after = command_rows.claim(
            None if row is None else command_rows.command_from_row(row), op
        )
        if granted:
            cur.execute(command_rows.UPSERT, command_rows.command_row(after))
        return granted, after
    if isinstance(op, RecordCommand):
        cur.execute(command_rows.UPSERT, command_rows.record_args(op))
    elif isinstance(op, DropCommand):
        cur.execute(command_rows.DROP, command_rows.drop_args(op))
    else:
        cur.execute(command_rows.SET_REGION_COMMAND, command_rows.set_region_args(op))
    return None


def _quota_fact(
    cur: sqlite3.Cursor, op: ReleaseQuota | SetQuotaLimit, quota_cache: dict[tuple[str, str], int]
) -> None:
    """A reservation given back (with the API's refusal, if that was why), or a limit read."""
    if isinstance(op, SetQuotaLimit):
        cur.execute(writes.QUOTA_LIMIT, writes.quota_limit_args(op))
        return
    cur.execute(writes.RELEASE_QUOTA_CALL, writes.release_quota_call_args(op))
    if op.refusal is not None:
        cur.execute(writes.QUOTA_REFUSAL, writes.quota_refusal_args(op.refusal))
    quota_cache.pop((op.account, op.region), None)  # counted again if needed


def insert_chunks(cur: sqlite3.Cursor, sql: str, rows: Iterator[tuple[object, ...]]) -> None:
    """executemany in bounded chunks."""
    chunk: list[tuple[object, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= _INSERT_CHUNK:
            cur.executemany(sql, chunk)
            chunk.clear()
    if chunk:
        cur.executemany(sql, chunk)


def _begin_attempt(
    cur: sqlite3.Cursor, op: BeginAttempt, quota_cache: dict[tuple[str, str], int]
) -> bool:
    """Count the window, reserve one call if it fits, record the attempt, mark the batch SENDING."""
    key = (op.account, op.region)
    used = quota_cache.get(key)
    if used is None:
        row = cur.execute(
            "SELECT COUNT(*) FROM quota_calls WHERE account = ? AND region = ? AND ts > ?",
            (op.account, op.region, op.window_start),
        ).fetchone()
        used = int(row[0])
    if used >= op.limit:
        quota_cache[key] = used
        return False
    quota_cache[key] = used + 1
    cur.execute(writes.QUOTA_CALL, writes.quota_call_args(op))
    cur.execute(writes.ATTEMPT, writes.attempt_args(op))
    _update_batch_state(cur, op.batch_id, BatchState.SENDING, op.now, attempts=op.attempt)
    return True


def _update_batch_state(
    cur: sqlite3.Cursor, batch_id: str, state: BatchState, now: float, **extra: object
) -> None:
    """Checked state change of one batch, with extra columns set alongside."""
    allowed = writes.allowed_before(BATCH_TRANSITIONS, state)
    sets = "".join(f", {column} = ?" for column in extra)
    cur.execute(
        f"UPDATE batches SET state = ?, updated_at = ?{sets} "
        f"WHERE batch_id = ? AND state IN ({placeholders(allowed)})",
        (state.value, now, *extra.values(), batch_id, *allowed),
    )
    if cur.rowcount != 1:
        row = cur.execute("SELECT state FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if row is None:
            msg = f"batch {batch_id}: no such batch"
            raise TransitionError(msg)
        check_transition(BATCH_TRANSITIONS, BatchState(row[0]), state, f"batch {batch_id}")


def _finish_attempt(cur: sqlite3.Cursor, op: FinishAttempt) -> None:
    """Record the end of an attempt."""
    cur.execute(writes.FINISH_ATTEMPT, writes.finish_attempt_args(op))


def _set_batch(cur: sqlite3.Cursor, op: SetBatch) -> None:
    """Checked batch transition, and its open instances with it."""
    _update_batch_state(cur, op.batch_id, op.state, op.now, **writes.batch_extra(op))
    if op.instance_state is None:
        return
    allowed = writes.allowed_before(INSTANCE_TRANSITIONS, op.instance_state)
    cur.execute(
        f"UPDATE instances SET {writes.BATCH_INSTANCES_SET} "
        f"WHERE batch_id = ? AND state IN ({placeholders(allowed)})",
        (*writes.batch_instances_args(op), op.batch_id, *allowed),
    )


def _shrink_batch(cur: sqlite3.Cursor, op: ShrinkBatch) -> None:
    """Replace a pending batch's instance set and token."""
    cur.execute(
        "UPDATE batches SET instance_ids = ?, client_token = ?, updated_at = ? "
        "WHERE batch_id = ? AND state = ? AND maybe_applied = 0",
        (",".join(op.instance_ids), op.client_token, op.now, op.batch_id, BatchState.PENDING),
    )
    if cur.rowcount != 1:
        msg = f"batch {op.batch_id}: only a pending batch that never may have run can shrink"
        raise TransitionError(msg)


def _add_batch(cur: sqlite3.Cursor, op: AddBatch) -> None:
    """Insert a batch split off another, and move its (pending) instances to it."""
    batch = op.batch
    cur.execute(
        f"INSERT INTO batches ({BATCH_COLUMNS}, updated_at) VALUES ({placeholders(['?'] * 15)})",
        (*batch_row(batch), op.now),
    )
    moved = 0
    for instance_id in batch.instance_ids:
        cur.execute(
            "UPDATE instances SET batch_id = ?, updated_at = ? WHERE run_id = ? AND region = ? "
            "AND instance_id = ? AND state = ?",
            (
                batch.batch_id,
                op.now,
                batch.run_id,
                batch.region,
                instance_id,
                InstanceState.PENDING,
            ),
        )
        moved += cur.rowcount
    if moved != len(batch.instance_ids):
        msg = f"batch {batch.batch_id}: only pending instances can move to a split batch"
        raise TransitionError(msg)


def _set_instances(cur: sqlite3.Cursor, op: SetInstances) -> None:
    """Checked transitions of individual instances, with their outcome details."""
    for rec in op.records:
        allowed = writes.allowed_before(INSTANCE_TRANSITIONS, rec.state)
        cur.execute(
            f"UPDATE instances SET {writes.INSTANCE_OUTCOME_SET} "
            "WHERE run_id = ? AND region = ? AND instance_id = ? "
            f"AND state IN ({placeholders(allowed)})",
            (
                *writes.instance_outcome_args(rec, op.now),
                rec.run_id,
                rec.region,
                rec.instance_id,
                *allowed,
            ),
        )
        if cur.rowcount != 1:
            row = cur.execute(
                "SELECT state FROM instances WHERE run_id = ? AND region = ? AND instance_id = ?",
                (rec.run_id, rec.region, rec.instance_id),
            ).fetchone()
            what = f"instance {rec.region}/{rec.instance_id}"
            if row is None:
                msg = f"{what}: not in run {rec.run_id}"
                raise TransitionError(msg)
            check_transition(INSTANCE_TRANSITIONS, InstanceState(row[0]), rec.state, what)


def _set_run(cur: sqlite3.Cursor, op: SetRun) -> None:
    """Checked run transition."""
    row = cur.execute("SELECT state FROM runs WHERE run_id = ?", (op.run_id,)).fetchone()
    if row is None:
        msg = f"no run {op.run_id!r}"
        raise RunNotFoundError(msg)
    check_transition(RUN_TRANSITIONS, RunState(row[0]), op.state, f"run {op.run_id}")
    cur.execute(writes.SET_RUN, writes.set_run_args(op))


def _acquire_lease(cur: sqlite3.Cursor, op: AcquireLease) -> tuple[bool, str | None, float | None]:
    """Take the lease if free, expired, ours, or forced; renew it only while it is ours."""
    if op.renew:
        cur.execute(
            "UPDATE runs SET lease_until = ? WHERE run_id = ? AND lease_owner = ?",
            (op.until, op.run_id, op.owner),
        )
    else:
        cur.execute(
            "UPDATE runs SET lease_owner = ?, lease_until = ? WHERE run_id = ? AND "
            "(lease_owner IS NULL OR lease_owner = ? OR lease_until < ? OR ?)",
            (op.owner, op.until, op.run_id, op.owner, op.now, int(op.force)),
        )
    if cur.rowcount == 1:
        return True, op.owner, op.until
    row = cur.execute(
        "SELECT lease_owner, lease_until FROM runs WHERE run_id = ?", (op.run_id,)
    ).fetchone()
    if row is None:
        msg = f"no run {op.run_id!r}"
        raise RunNotFoundError(msg)
    return False, row[0], row[1]

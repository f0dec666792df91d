"""The write operations on PostgreSQL: one handler per `Op`, all inside one transaction.

Semantics are those of the SQLite store (`sqlite.py`), operation for operation. What differs is
how a quota reservation is made atomic: SQLite holds one write lock for the whole file; here
`prepare` takes a transaction-scoped advisory lock per (account, region) before any
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import Cursor
from psycopg.rows import TupleRow

from fanout.errors import LeaseLostError, RunNotFoundError, TransitionError
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
    InstanceRecord,
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
from fanout.ledger.pg_schema import EVENTS_LOCK_CLASS, FANOUT_LOCK_CLASS, RUN_LOCK_CLASS
from fanout.ledger.rows import BATCH_COLUMNS, batch_row

__all__ = ["Group", "apply_one", "prepare", "quota_lock_id"]

Row = tuple[Any, ...]
# The statements shared with the SQLite store, with PostgreSQL's placeholders.
_QUOTA_CALL = writes.pg(writes.QUOTA_CALL)
_ATTEMPT = writes.pg(writes.ATTEMPT)
_FINISH_ATTEMPT = writes.pg(writes.FINISH_ATTEMPT)
_SET_RUN = writes.pg(writes.SET_RUN)
_INSTANCE_OUTCOME_SET = writes.pg(writes.INSTANCE_OUTCOME_SET)
_BATCH_INSTANCES_SET = writes.pg(writes.BATCH_INSTANCES_SET)
_COMMAND_UPSERT = writes.pg(command_rows.UPSERT)
_COMMAND_DROP = writes.pg(command_rows.DROP)
_SET_REGION_COMMAND = writes.pg(command_rows.SET_REGION_COMMAND)
_COMMAND_FOR_UPDATE = writes.pg(
    f"SELECT {command_rows.COMMAND_COLUMNS} FROM commands WHERE {command_rows.KEY} FOR UPDATE"
)
_RELEASE_QUOTA_CALL = writes.pg(writes.RELEASE_QUOTA_CALL)
_QUOTA_REFUSAL = writes.pg(writes.QUOTA_REFUSAL)
_QUOTA_LIMIT = writes.pg(writes.QUOTA_LIMIT)


@dataclass(slots=True)
class Group:
    """State shared by the operations of one transaction.

    The group runs in pipeline mode: statements whose result is not needed at once are sent
    without waiting for the server. A checked update returns the row's state before it, and
    its check runs when the results are in (`run_checks`, before COMMIT): a failed check
    raises as at once would, and the whole group is rolled back either way.
    """

    cur: Cursor[TupleRow]
    leases: dict[str, str]  # run id -> owner, for every lease this store holds (committed)
    run_locks: set[str]  # runs whose session lock this connection holds (not transactional)
    # The runs of run_locks when the group began: taking one in the group proves its holder gone.
    locked_before: frozenset[str] = field(init=False)
    granted: dict[str, str] = field(default_factory=dict)  # leases granted in this group
    quota_used: dict[tuple[str, str], int] = field(default_factory=dict)
    fenced: set[str] = field(default_factory=set)  # runs whose lease was checked in this group
    checks: list[Callable[[], None]] = field(default_factory=list)  # run once results are in

    def __post_init__(self) -> None:
        self.locked_before = frozenset(self.run_locks)

    def checked(
        self, sql: str, args: Sequence[object], check: Callable[[Row | None], None]
    ) -> None:
        """Send one statement returning one row now; `check` that row once results are in."""
        cur = self.cur.connection.cursor()
        cur.execute(sql, args)
        self.checks.append(lambda: check(cur.fetchone()))

    def run_checks(self) -> None:
        """Every deferred check, in the order the statements were sent."""
        for check in self.checks:
            check()
        self.checks.clear()


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


def prepare(group: Group, ops: Sequence[Op]) -> None:
    """Take the group's advisory locks, then count every quota window it reserves from.

    Locks are all taken up front and in one global order (no deadlocks):
    - one per (account, region) reserved from: a window is counted and a call reserved by one
      transaction at a time, whichever host it comes from (I3);
    - one per run whose journal is appended to: event ids then grow in commit order per run,
      so a reader that remembers the last id it saw (the stop-request poll) misses none.
    The windows are counted in one statement (one round trip), each from the first reservation
    of its key in the group, and kept as the group's count cache.
    """
    keys: set[tuple[int, int]] = set()
    windows: dict[tuple[str, str], float] = {}
    for op in ops:
        if isinstance(op, BeginAttempt):
            keys.add((FANOUT_LOCK_CLASS, quota_lock_id(op.account, op.region)))
            windows.setdefault((op.account, op.region), op.window_start)
        elif isinstance(op, AppendEvent):
            keys.add((EVENTS_LOCK_CLASS, _lock_id(op.run_id)))
    cur = group.cur
    for classid, objid in sorted(keys):
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (classid, objid))
    if not windows:
        return
    accounts, regions = [a for a, _r in windows], [r for _a, r in windows]
    rows = cur.execute(
        "SELECT k.n, (SELECT COUNT(*) FROM quota_calls q "
        "WHERE q.account = k.account AND q.region = k.region AND q.ts > k.since) "
        "FROM unnest(%s::text[], %s::text[], %s::float8[]) "
        "WITH ORDINALITY AS k(account, region, since, n)",
        (accounts, regions, list(windows.values())),
    ).fetchall()
    for n, used in rows:
        group.quota_used[(accounts[n - 1], regions[n - 1])] = int(used)


def apply_one(group: Group, op: Op) -> object:  # noqa: PLR0911 - one line per operation type
    """Dispatch one operation."""
    cur = group.cur
    if isinstance(op, BeginAttempt):
        return _begin_attempt(group, op)
    if isinstance(
        op,
        (FinishAttempt, SetBatch, ShrinkBatch, AddBatch, SetInstances, SetRun, SetRegionCommand),
    ):
        _check_fences(group)
    if isinstance(op, FinishAttempt):
        _finish_attempt(cur, op)
        return None
    if isinstance(op, SetRun):
        _set_run(cur, op)
        return None
    if isinstance(op, SetBatch | ShrinkBatch | AddBatch | SetInstances):
        _batch_op(group, op)
        return None
    if isinstance(op, AppendEvent):
        cur.execute(
            "INSERT INTO events (run_id, ts, kind, data) VALUES (%s, %s, %s, %s::jsonb)",
            (op.run_id, op.now, op.kind, json.dumps(op.data, default=str)),
        )
        return None
    if isinstance(op, ReleaseQuota | SetQuotaLimit):
        _quota_fact(group, op)
        return None
    if isinstance(op, AcquireLease):
        return _acquire_lease(group, op)
    return _command_op(cur, op)


def _batch_op(group: Group, op: SetBatch | ShrinkBatch | AddBatch | SetInstances) -> None:
    """The checked changes of batches and their instances."""
    if isinstance(op, SetBatch):
        _set_batch(group, op)
    elif isinstance(op, ShrinkBatch):
        _shrink_batch(group, op)
    elif isinstance(op, AddBatch):
        _add_batch(group, op)
    else:
        _set_instances(group, op)


def _command_op(
    cur: Cursor[TupleRow], op: ClaimCommand | RecordCommand | DropCommand | SetRegionCommand
) -> object:
    """The operations on commands fanout creates (`command_rows`). A claim locks the row (or,
    when there is none, waits on a concurrent insert of it) before deciding."""
    if isinstance(op, ClaimCommand):
        rec = op.record
        key = command_rows.key_args(rec.account, rec.region, rec.name)
        row = cur.execute(_COMMAND_FOR_UPDATE, key).fetchone()
        if row is None:  # no row yet: insert the claim unless a concurrent claim just did
            granted, after = command_rows.claim(None, op)
            inserted = cur.execute(
                writes.pg(
                    f"INSERT INTO commands ({command_rows.COMMAND_COLUMNS}) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1"
                ),
                command_rows.command_row(after),
            ).fetchone()
            if inserted is not None:
                return granted, after
            row = cur.execute(_COMMAND_FOR_UPDATE, key).fetchone()
        granted, after = command_rows.claim(
            None if row is None else command_rows.command_from_row(row), op
        )
        if granted:
            cur.execute(_COMMAND_UPSERT, command_rows.command_row(after))
        return granted, after
    if isinstance(op, RecordCommand):
        cur.execute(_COMMAND_UPSERT, command_rows.record_args(op))
    elif isinstance(op, DropCommand):
        cur.execute(_COMMAND_DROP, command_rows.drop_args(op))
    else:
        cur.execute(_SET_REGION_COMMAND, command_rows.set_region_args(op))
    return None


def _quota_fact(group: Group, op: ReleaseQuota | SetQuotaLimit) -> None:
    """A reservation given back (with the API's refusal, if that was why), or a limit read."""
    if isinstance(op, SetQuotaLimit):
        group.cur.execute(_QUOTA_LIMIT, writes.quota_limit_args(op))
        return
    group.cur.execute(_RELEASE_QUOTA_CALL, writes.release_quota_call_args(op))
    if op.refusal is not None:
        group.cur.execute(_QUOTA_REFUSAL, writes.quota_refusal_args(op.refusal))
    key = (op.account, op.region)
    if key in group.quota_used:  # the group's count of that window: one call fewer
        group.quota_used[key] = max(0, group.quota_used[key] - 1)


def _check_fences(group: Group) -> None:
    """`_check_fence` for every run whose lease this store holds.

    Not only new intents: after a takeover the old runner must not record anything more — an
    acceptance it writes late would race the new runner's re-send of the same batch (whose same
    ClientToken makes that re-send safe). A runner drives one run, so this is one check a group.
    """
    for run_id in tuple(group.leases):
        _check_fence(group, run_id)


def _check_fence(group: Group, run_id: str) -> None:
    """Refuse new intents for a run whose lease this store held and another owner took over.

    `FOR SHARE` makes a concurrent takeover wait for this transaction (or this one see it), so
    the new owner loads the run's batches only after every intent written under the old lease.
    The check runs before COMMIT; a refusal rolls the whole group back.
    """
    owner = group.leases.get(run_id)
    if owner is None or run_id in group.fenced or run_id in group.granted:
        return
    group.fenced.add(run_id)

    def check(row: Row | None) -> None:
        if row is not None and row[0] != owner:
            msg = (
                f"run {run_id}: the lease was taken over by {row[0]}; this runner ({owner}) "
                "stops dispatching"
            )
            raise LeaseLostError(msg)

    group.checked("SELECT lease_owner FROM runs WHERE run_id = %s FOR SHARE", (run_id,), check)


def _begin_attempt(group: Group, op: BeginAttempt) -> bool:
    """Count the window, reserve one call if it fits, record the attempt, mark the batch SENDING."""
    _check_fence(group, op.run_id)
    cur = group.cur
    key = (op.account, op.region)
    used = group.quota_used[key]  # counted by `prepare`
    if used >= op.limit:
        group.quota_used[key] = used
        return False
    group.quota_used[key] = used + 1
    cur.execute(_QUOTA_CALL, writes.quota_call_args(op))
    cur.execute(_ATTEMPT, writes.attempt_args(op))
    _update_batch_state(group, op.batch_id, BatchState.SENDING, op.now, attempts=op.attempt)
    return True


def _update_batch_state(
    group: Group, batch_id: str, state: BatchState, now: float, **extra: object
) -> None:
    """Checked state change of one batch, with extra columns set alongside."""
    allowed = writes.allowed_before(BATCH_TRANSITIONS, state)
    sets = "".join(f", {column} = %s" for column in extra)

    def check(row: Row | None) -> None:
        before, changed = row or (None, 0)
        if changed != 1:
            if before is None:
                msg = f"batch {batch_id}: no such batch"
                raise TransitionError(msg)
            check_transition(BATCH_TRANSITIONS, BatchState(before), state, f"batch {batch_id}")

    group.checked(
        "WITH before AS (SELECT state FROM batches WHERE batch_id = %s), "
        f"changed AS (UPDATE batches SET state = %s, updated_at = %s{sets} "
        "WHERE batch_id = %s AND state = ANY(%s) RETURNING 1) "
        "SELECT (SELECT state FROM before), (SELECT COUNT(*) FROM changed)",
        (batch_id, state.value, now, *extra.values(), batch_id, allowed),
        check,
    )


def _finish_attempt(cur: Cursor[TupleRow], op: FinishAttempt) -> None:
    """Record the end of an attempt."""
    cur.execute(_FINISH_ATTEMPT, writes.finish_attempt_args(op))


def _set_batch(group: Group, op: SetBatch) -> None:
    """Checked batch transition, and its open instances with it."""
    _update_batch_state(group, op.batch_id, op.state, op.now, **writes.batch_extra(op))
    if op.instance_state is None:
        return
    allowed = writes.allowed_before(INSTANCE_TRANSITIONS, op.instance_state)
    group.cur.execute(
        f"UPDATE instances SET {_BATCH_INSTANCES_SET} WHERE batch_id = %s AND state = ANY(%s)",
        (*writes.batch_instances_args(op), op.batch_id, allowed),
    )


def _shrink_batch(group: Group, op: ShrinkBatch) -> None:
    """Replace a pending batch's instance set and token."""

    def check(row: Row | None) -> None:
        if row is None or row[0] != 1:
            msg = f"batch {op.batch_id}: only a pending batch that never may have run can shrink"
            raise TransitionError(msg)

    group.checked(
        "WITH changed AS (UPDATE batches SET instance_ids = %s, client_token = %s, "
        "updated_at = %s WHERE batch_id = %s AND state = %s AND NOT maybe_applied RETURNING 1) "
        "SELECT COUNT(*) FROM changed",
        (",".join(op.instance_ids), op.client_token, op.now, op.batch_id, BatchState.PENDING.value),
        check,
    )


def _add_batch(group: Group, op: AddBatch) -> None:
    """Insert a batch split off another, and move its (pending) instances to it."""
    batch = op.batch
    group.cur.execute(
        f"INSERT INTO batches ({BATCH_COLUMNS}, updated_at) VALUES ({', '.join(['%s'] * 15)})",
        (*batch_row(batch), op.now),
    )

    def check(row: Row | None) -> None:
        if row is None or row[0] != len(batch.instance_ids):
            msg = f"batch {batch.batch_id}: only pending instances can move to a split batch"
            raise TransitionError(msg)

    group.checked(
        "WITH moved AS (UPDATE instances SET batch_id = %s, updated_at = %s WHERE run_id = %s "
        "AND region = %s AND instance_id = ANY(%s) AND state = %s RETURNING 1) "
        "SELECT COUNT(*) FROM moved",
        (
            batch.batch_id,
            op.now,
            batch.run_id,
            batch.region,
            list(batch.instance_ids),
            InstanceState.PENDING.value,
        ),
        check,
    )


def _instance_check(rec: InstanceRecord) -> Callable[[Row | None], None]:
    """The check of one instance's transition, given (state before, rows changed)."""

    def check(row: Row | None) -> None:
        before, changed = row or (None, 0)
        if changed != 1:
            what = f"instance {rec.region}/{rec.instance_id}"
            if before is None:
                msg = f"{what}: not in run {rec.run_id}"
                raise TransitionError(msg)
            check_transition(INSTANCE_TRANSITIONS, InstanceState(before), rec.state, what)

    return check


def _set_instances(group: Group, op: SetInstances) -> None:
    """Checked transitions of individual instances, with their outcome details."""
    for rec in op.records:
        allowed = writes.allowed_before(INSTANCE_TRANSITIONS, rec.state)
        key = (rec.run_id, rec.region, rec.instance_id)
        group.checked(
            "WITH before AS (SELECT state FROM instances "
            "WHERE run_id = %s AND region = %s AND instance_id = %s), "
            f"changed AS (UPDATE instances SET {_INSTANCE_OUTCOME_SET} "
            "WHERE run_id = %s AND region = %s AND instance_id = %s AND state = ANY(%s) "
            "RETURNING 1) "
            "SELECT (SELECT state FROM before), (SELECT COUNT(*) FROM changed)",
            (*key, *writes.instance_outcome_args(rec, op.now), *key, allowed),
            _instance_check(rec),
        )


def _set_run(cur: Cursor[TupleRow], op: SetRun) -> None:
    """Checked run transition."""
    row = cur.execute(
        "SELECT state FROM runs WHERE run_id = %s FOR UPDATE", (op.run_id,)
    ).fetchone()
    if row is None:
        msg = f"no run {op.run_id!r}"
        raise RunNotFoundError(msg)
    check_transition(RUN_TRANSITIONS, RunState(row[0]), op.state, f"run {op.run_id}")
    cur.execute(_SET_RUN, writes.set_run_args(op))


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


_LEASE_ROW = "SELECT lease_owner, lease_until, lease_locked FROM runs WHERE run_id = %s"


def _acquire_lease(group: Group, op: AcquireLease) -> tuple[bool, str | None, float | None]:
    """Take the lease if free, expired, ours, forced, or its holder's session is gone.

    The run's row is locked without waiting first (SKIP LOCKED). When a transaction in flight
    holds it - perhaps a runner stopped inside one, which is ended only after a while (see
    postgres.py) - a request the committed row already refuses is refused at once; only one
    that may be granted waits for the row (bounded by lock_timeout, then retried).
    """
    row = _lease_row(group, op.run_id, " FOR UPDATE SKIP LOCKED")
    if row is None:  # locked by a transaction in flight (or no such run)
        refusal = _refusal(group, op, _existing_lease_row(group, op.run_id, ""))
        if refusal is not None:
            return refusal
        row = _existing_lease_row(group, op.run_id, " FOR UPDATE")
    refusal = _refusal(group, op, row)
    if refusal is not None:
        return refusal
    if op.until <= op.now:  # a release: the lease ends now
        _release_run_lock(group, op.run_id)
        held = False
    else:
        held = _try_run_lock(group, op.run_id)
    group.cur.execute(
        "UPDATE runs SET lease_owner = %s, lease_until = %s, lease_locked = %s WHERE run_id = %s",
        (op.owner, op.until, held, op.run_id),
    )
    group.granted[op.run_id] = op.owner
    return True, op.owner, op.until


def _lease_row(group: Group, run_id: str, lock: str) -> Row | None:
    """The run's (lease_owner, lease_until, lease_locked), read with `lock`; None if not read."""
    return group.cur.execute(_LEASE_ROW + lock, (run_id,)).fetchone()


def _existing_lease_row(group: Group, run_id: str, lock: str) -> Row:
    """`_lease_row`, or RunNotFoundError when there is no such run."""
    row = _lease_row(group, run_id, lock)
    if row is None:
        msg = f"no run {run_id!r}"
        raise RunNotFoundError(msg)
    return row


def _refusal(
    group: Group, op: AcquireLease, row: Row
) -> tuple[bool, str | None, float | None] | None:
    """The answer refusing `op` given the run's lease row, or None if the lease is free for it."""
    holder, until, locked = row
    if op.renew and holder != op.owner:  # lost (taken over): never taken back by a renewal
        return False, holder, until
    free = holder is None or holder == op.owner or until is None or until < op.now or op.force
    if not free and locked and op.run_id not in group.locked_before:
        free = _try_run_lock(group, op.run_id)  # free: the holder's connection is gone
    return None if free else (False, holder, until)

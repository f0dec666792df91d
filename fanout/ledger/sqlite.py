"""The embedded ledger: one SQLite file (WAL, mode 0600), shared safely by concurrent processes.

Every group of operations is one `BEGIN IMMEDIATE` transaction, so quota reservations are atomic
across processes: the write lock is held from counting the window to inserting the reservation.
sqlite3 errors are mapped to `LedgerError` (naming the file) at one boundary, `_storage`, which
wraps every method that touches the connection; nothing from sqlite3 leaves this module.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from fanout.errors import LedgerError, RunNotFoundError, TransitionError
from fanout.ledger import writes
from fanout.ledger.model import (
    BATCH_TRANSITIONS,
    INSTANCE_TRANSITIONS,
    RUN_TRANSITIONS,
    AcquireLease,
    AppendEvent,
    BatchRecord,
    BatchState,
    BeginAttempt,
    FinishAttempt,
    InstanceRecord,
    InstanceState,
    Op,
    RunRecord,
    RunState,
    SetBatch,
    SetInstances,
    SetRun,
    ShrinkBatch,
    check_transition,
)
from fanout.ledger.reads import LedgerReads
from fanout.ledger.rows import (
    BATCH_COLUMNS,
    INSTANCE_COLUMNS,
    RUN_COLUMNS,
    batch_row,
    instance_row,
    run_row,
)
from fanout.ledger.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["SqliteLedger"]

# Waiting this long for another process's write lock is normal under load; longer means stuck.
_BUSY_TIMEOUT_MS = 60_000
# The first 16 bytes of every SQLite 3 database file (an empty file is a new ledger).
_SQLITE_HEADER = b"SQLite format 3\x00"
# Rows per executemany chunk when creating a run: bounds memory for million-target runs.
_INSERT_CHUNK = 20_000


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _storage(
    what: str,
) -> Callable[
    [Callable[Concatenate[SqliteLedger, _P], _R]], Callable[Concatenate[SqliteLedger, _P], _R]
]:
    """The one boundary: a sqlite3 error in the wrapped method leaves as a LedgerError that
    names the file and what was being done (`what`), with the driver's error as its cause."""

    def wrap(
        method: Callable[Concatenate[SqliteLedger, _P], _R],
    ) -> Callable[Concatenate[SqliteLedger, _P], _R]:
        @functools.wraps(method)
        def mapped(self: SqliteLedger, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                msg = f"{self.path}: ledger {what} failed ({_reason(exc)})"
                raise LedgerError(msg) from exc

        return mapped

    return wrap


def _reason(exc: sqlite3.Error) -> str:
    """A driver error as one line: its message, or its type when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _create_private(path: Path) -> None:
    """Create the file 0600 before SQLite does (its -wal/-shm files copy this mode: I5), or
    check that the existing one is a SQLite database."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        msg = f"{path}: cannot open the ledger file ({exc.strerror or exc})"
        raise LedgerError(msg) from exc
    if header not in (b"", _SQLITE_HEADER):
        msg = f"{path}: not a fanout ledger (not a SQLite database); left untouched"
        raise LedgerError(msg)


def _refuse_foreign_database(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse another application's SQLite database before changing anything in it."""
    tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"))
    if tables and "meta" not in tables:
        conn.close()
        msg = (
            f"{path}: not a fanout ledger (a SQLite database with other tables: "
            f"{', '.join(tables[:3])}); left untouched"
        )
        raise LedgerError(msg)


def _placeholders(states: Sequence[str]) -> str:
    """`?, ?, ?` for an IN clause."""
    return ", ".join("?" for _ in states)


class SqliteLedger(LedgerReads):
    """A ledger in one SQLite file; safe to share between processes on one host."""

    __slots__ = ("_conn", "_lock", "path")

    # Every process sharing the file runs on this host: a lease holder whose pid is gone is gone.
    local = True

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        _create_private(path)
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=60
            )
            _refuse_foreign_database(self._conn, path)
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._migrate()
        except sqlite3.Error as exc:
            msg = f"{path}: not a usable fanout ledger ({_reason(exc)})"
            raise LedgerError(msg) from exc
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------

    @_storage("close")
    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one transaction per step."""
        self._conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            msg = (
                f"{self.path}: ledger schema {current} is newer than this fanout ({SCHEMA_VERSION})"
            )
            raise LedgerError(msg)
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            self._conn.execute("BEGIN IMMEDIATE")
            again = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'")
            row = again.fetchone()
            if row and int(row[0]) >= version:  # another process migrated meanwhile
                self._conn.execute("ROLLBACK")
                continue
            for statement in sql.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),)
            )
            self._conn.execute("COMMIT")

    def _transaction(self) -> _Transaction:
        """A `BEGIN IMMEDIATE` transaction holding the in-process lock."""
        return _Transaction(self._conn, self._lock)

    # --- writes --------------------------------------------------------------------------

    @_storage("write")
    def create_run(
        self,
        run: RunRecord,
        batches: Sequence[BatchRecord],
        extra_instances: Sequence[InstanceRecord] = (),
    ) -> None:
        """Store a new run, its batches and one pending row per batched instance."""
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM runs WHERE run_id = ?", (run.run_id,)).fetchone():
                msg = f"run {run.run_id} already exists"
                raise LedgerError(msg)
            cur.execute(
                f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({_placeholders(['?'] * 14)})",
                run_row(run),
            )
            now = run.created_at
            cur.executemany(
                f"INSERT INTO batches ({BATCH_COLUMNS}, updated_at) "
                f"VALUES ({_placeholders(['?'] * 14)})",
                ((*batch_row(b), now) for b in batches),
            )
            rows = (
                (run.run_id, b.region, iid, b.batch_id, InstanceState.PENDING.value, now)
                for b in batches
                for iid in b.instance_ids
            )
            _insert_chunks(
                cur,
                "INSERT INTO instances (run_id, region, instance_id, batch_id, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            cur.executemany(
                f"INSERT INTO instances ({INSTANCE_COLUMNS}, updated_at) "
                f"VALUES ({_placeholders(['?'] * 16)})",
                ((*instance_row(i), now) for i in extra_instances),
            )

    @_storage("write")
    def apply(self, ops: Sequence[Op]) -> list[object]:
        """Apply operations in order in one transaction; one result per operation."""
        with self._transaction() as cur:
            quota_cache: dict[tuple[str, str], int] = {}
            return [self._apply_one(cur, op, quota_cache) for op in ops]

    def _apply_one(  # noqa: PLR0911 - one dispatch line per operation type reads best
        self, cur: sqlite3.Cursor, op: Op, quota_cache: dict[tuple[str, str], int]
    ) -> object:
        """Dispatch one operation."""
        if isinstance(op, BeginAttempt):
            return _begin_attempt(cur, op, quota_cache)
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
                "INSERT INTO events (run_id, ts, kind, data) VALUES (?, ?, ?, ?)",
                (op.run_id, op.now, op.kind, json.dumps(op.data, default=str)),
            )
            return None
        return _acquire_lease(cur, op)

    # --- reads ---------------------------------------------------------------------------

    @property
    def _ledger_name(self) -> str:
        """This ledger's path, for messages."""
        return str(self.path)

    @_storage("read")
    def _query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        """Run one read query under the lock (every read of `LedgerReads` comes here)."""
        with self._lock:
            return self._conn.execute(sql, args).fetchall()


class _Transaction:
    """`with` block: BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error."""

    __slots__ = ("_conn", "_lock")

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self._lock = lock

    def __enter__(self) -> sqlite3.Cursor:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._conn.cursor()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._rollback()  # a failed COMMIT leaves the transaction open
                    raise
            else:
                self._rollback()
        finally:
            self._lock.release()

    def _rollback(self) -> None:
        """ROLLBACK, unless SQLite already rolled back (it does after some errors)."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


# --- operation handlers (pure SQL over one cursor) ------------------------------------------


def _insert_chunks(cur: sqlite3.Cursor, sql: str, rows: Iterator[tuple[object, ...]]) -> None:
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
        f"WHERE batch_id = ? AND state IN ({_placeholders(allowed)})",
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
        f"WHERE batch_id = ? AND state IN ({_placeholders(allowed)})",
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


def _set_instances(cur: sqlite3.Cursor, op: SetInstances) -> None:
    """Checked transitions of individual instances, with their outcome details."""
    for rec in op.records:
        allowed = writes.allowed_before(INSTANCE_TRANSITIONS, rec.state)
        cur.execute(
            f"UPDATE instances SET {writes.INSTANCE_OUTCOME_SET} "
            "WHERE run_id = ? AND region = ? AND instance_id = ? "
            f"AND state IN ({_placeholders(allowed)})",
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
    """Take the lease if free, expired, ours, or forced."""
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

"""The embedded ledger: one SQLite file (WAL, mode 0600), shared safely by concurrent processes.

Every group of operations is one `BEGIN IMMEDIATE` transaction, so quota reservations are atomic
across processes: the write lock is held from counting the window to inserting the reservation.
The operation handlers are in `sqlite_ops.py`, the schema in `schema.py`.
sqlite3 errors are mapped to `LedgerError` (naming the file) at one boundary, `_storage`, which
wraps every method that touches the connection; nothing from sqlite3 leaves this module.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from fanout.errors import LedgerError
from fanout.ledger.model import BatchRecord, InstanceRecord, InstanceState, Op, RunRecord
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
from fanout.ledger.sqlite_ops import apply_one, insert_chunks, placeholders

__all__ = ["SqliteLedger"]

# Waiting this long for another process's write lock is normal under load; longer means stuck.
_BUSY_TIMEOUT_MS = 60_000
# The first 16 bytes of every SQLite 3 database file (an empty file is a new ledger).
_SQLITE_HEADER = b"SQLite format 3\x00"

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
                f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({placeholders(['?'] * 14)})",
                run_row(run),
            )
            now = run.created_at
            cur.executemany(
                f"INSERT INTO batches ({BATCH_COLUMNS}, updated_at) "
                f"VALUES ({placeholders(['?'] * 15)})",
                ((*batch_row(b), now) for b in batches),
            )
            rows = (
                (run.run_id, b.region, iid, b.batch_id, InstanceState.PENDING.value, now)
                for b in batches
                for iid in b.instance_ids
            )
            insert_chunks(
                cur,
                "INSERT INTO instances (run_id, region, instance_id, batch_id, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            cur.executemany(
                f"INSERT INTO instances ({INSTANCE_COLUMNS}, updated_at) "
                f"VALUES ({placeholders(['?'] * 16)})",
                ((*instance_row(i), now) for i in extra_instances),
            )

    @_storage("write")
    def apply(self, ops: Sequence[Op]) -> list[object]:
        """Apply operations in order in one transaction; one result per operation."""
        with self._transaction() as cur:
            quota_cache: dict[tuple[str, str], int] = {}
            return [apply_one(cur, op, quota_cache) for op in ops]

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

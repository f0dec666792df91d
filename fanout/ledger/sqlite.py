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
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote

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
from fanout.ledger.schema import LEDGER_TABLES, MIGRATIONS, READ_INDEXES, SCHEMA_VERSION
from fanout.ledger.sqlite_ops import apply_one, insert_chunks, placeholders

__all__ = ["SqliteLedger", "check_usable", "is_empty_ledger"]

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


def _kind_of(mode: int) -> str | None:
    """What a file that is not a regular file is, for a message (None: a regular file)."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    for test, name in kinds:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def _existing(path: Path) -> os.stat_result | None:
    """The file's status (links followed), None if there is none; LedgerError if it cannot be
    a ledger: a ledger is a regular file (never a device, FIFO, socket or directory)."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        msg = f"{path}: cannot use this ledger location ({exc.strerror or exc})"
        raise LedgerError(msg) from None
    kind = _kind_of(status.st_mode)
    if kind is not None:
        msg = f"{path}: is {kind}; a ledger must be a regular file (or not exist yet)"
        raise LedgerError(msg)
    return status


def _make_folders(folder: Path) -> None:
    """Create the missing folders of `folder`, each mode 0700 whatever the umask (I5)."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by another process meanwhile
        created.chmod(0o700)


def _read_header(fd: int) -> bytes:
    """The first bytes of an open file (the SQLite magic, or not)."""
    return os.pread(fd, len(_SQLITE_HEADER), 0)


def _create_private(path: Path) -> None:
    """Make sure `path` is a fanout ledger file this process may write: create it 0600 in 0700
    folders if absent (SQLite's -wal/-shm files copy its mode: I5), else check that it is a
    regular file holding a SQLite database, or an empty file of this user's (a new ledger).

    Nothing is opened, created or changed through a device, FIFO or directory, and a file of
    another user's is never taken over or chmod-ed.
    """
    try:
        status = _existing(path)
        if status is None:
            _make_folders(path.parent)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:  # created by another process meanwhile: use it as it is
                _create_private(path)
                return
            try:
                os.fchmod(fd, 0o600)  # the umask may have taken the owner's write bit
            finally:
                os.close(fd)
            return
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):  # replaced between stat and open
                msg = f"{path}: is {_kind_of(opened.st_mode)}; a ledger must be a regular file"
                raise LedgerError(msg)
            header = _read_header(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        msg = f"{path}: cannot open the ledger file ({exc.strerror or exc})"
        raise LedgerError(msg) from exc
    _check_taken_over(path, opened, header)


def _check_taken_over(path: Path, status: os.stat_result, header: bytes) -> None:
    """Refuse an existing file that is not a ledger fanout may use; tighten a loose mode of
    this user's own ledger to 0600."""
    own = status.st_uid == os.geteuid()
    if header == b"" and not own:
        msg = (
            f"{path}: an empty file of another user's (uid {status.st_uid}) is not a fanout "
            "ledger; left untouched"
        )
        raise LedgerError(msg)
    if header not in (b"", _SQLITE_HEADER):
        msg = f"{path}: not a fanout ledger (not a SQLite database); left untouched"
        raise LedgerError(msg)
    if own and status.st_mode & 0o077:
        try:
            path.chmod(0o600)
        except OSError as exc:
            msg = f"{path}: cannot make the ledger private ({exc.strerror or exc})"
            raise LedgerError(msg) from exc


def _refuse_foreign_database(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse another application's SQLite database before changing anything in it."""
    tables = _tables(conn)
    if tables and "meta" not in tables:
        conn.close()
        msg = (
            f"{path}: not a fanout ledger (a SQLite database with other tables: "
            f"{', '.join(sorted(tables)[:3])}); left untouched"
        )
        raise LedgerError(msg)


def _tables(conn: sqlite3.Connection) -> set[str]:
    """The names of the database's tables."""
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The ledger's schema version (0: none yet), or LedgerError if the value is damaged."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return 0
    try:
        return int(str(row[0]).strip())
    except ValueError:
        msg = f"{path}: damaged ledger (schema version {str(row[0])[:20]!r} is not a number)"
        raise LedgerError(msg) from None


def _uri(path: Path, mode: str) -> str:
    """An SQLite URI for `path` (absolute, quoted) with `mode` (rw, ro) or `immutable`."""
    query = "immutable=1" if mode == "immutable" else f"mode={mode}"
    return f"file:{quote(str(path.absolute()))}?{query}"


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the existing ledger at `path`, creating and changing nothing.

    A ledger being written has its -wal file: it is read through it (`mode=ro`). Without one,
    every change is in the database file, and SQLite would create -wal and -shm files even for
    a read-only connection: it is read as `immutable` instead, which creates nothing.
    """
    status = _existing(path)
    if status is None:
        msg = f"{path}: there is no ledger here"
        raise LedgerError(msg)
    _check_header(path)
    live = Path(f"{path}-wal").exists()
    try:
        conn = sqlite3.connect(
            _uri(path, "ro" if live else "immutable"),
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=60,
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        _refuse_foreign_database(conn, path)
        version = _schema_version(conn, path) if _tables(conn) else 0
        if version != SCHEMA_VERSION:
            conn.close()
            newer = "newer" if version > SCHEMA_VERSION else "older"
            msg = (
                f"{path}: ledger schema {version} is {newer} than this fanout's "
                f"({SCHEMA_VERSION}); a command that writes (run, resume) migrates an older one"
            )
            raise LedgerError(msg)
        _check_complete(conn, path)
    except sqlite3.Error as exc:
        msg = f"{path}: not a usable fanout ledger ({_reason(exc)})"
        raise LedgerError(msg) from exc
    return conn


def check_usable(path: Path) -> None:
    """Refuse, without opening anything for writing, a path whose file cannot become or be a
    ledger: not a regular file, or a non-empty file that is not a SQLite database."""
    status = _existing(path)
    if status is None or status.st_size == 0:
        return
    _check_header(path)


def _check_header(path: Path) -> None:
    """Refuse a file that is not a SQLite database (read without following a FIFO's block)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            header = _read_header(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        msg = f"{path}: cannot open the ledger file ({exc.strerror or exc})"
        raise LedgerError(msg) from exc
    if header != _SQLITE_HEADER:
        msg = f"{path}: not a fanout ledger (not a SQLite database); left untouched"
        raise LedgerError(msg)


def is_empty_ledger(path: Path) -> bool:
    """True if there is no ledger at `path` yet: no file, or an empty one (nothing to read).

    LedgerError if the path cannot hold a ledger (a device, FIFO, directory, ...)."""
    status = _existing(path)
    return status is None or status.st_size == 0


def _check_complete(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a ledger that lost one of its tables."""
    missing = sorted(set(LEDGER_TABLES) - _tables(conn))
    if missing:
        msg = f"{path}: damaged ledger (table {', '.join(missing)} is missing)"
        raise LedgerError(msg)


class SqliteLedger(LedgerReads):
    """A ledger in one SQLite file; safe to share between processes on one host."""

    __slots__ = ("_conn", "_lock", "path")

    # Every process sharing the file runs on this host: a lease holder whose pid is gone is gone.
    local = True

    def __init__(self, path: Path, *, synchronous: str = "FULL", read_only: bool = False) -> None:
        """Open (creating and migrating if needed) the ledger at `path`; with `read_only`, open
        an existing one without creating, migrating or changing any file (`runs`, `status`)."""
        self.path = path
        if read_only:
            self._conn = _connect_read_only(path)
            self._lock = threading.Lock()
            return
        _create_private(path)
        try:
            self._conn = sqlite3.connect(
                _uri(path, "rw"),
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=60,
            )
            _refuse_foreign_database(self._conn, path)
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._migrate()
            _check_complete(self._conn, path)
            for statement in READ_INDEXES:  # no-ops once they exist
                self._conn.execute(statement)
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
        current = _schema_version(self._conn, self.path)
        if current > SCHEMA_VERSION:
            msg = (
                f"{self.path}: ledger schema {current} is newer than this fanout ({SCHEMA_VERSION})"
            )
            raise LedgerError(msg)
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            self._conn.execute("BEGIN IMMEDIATE")
            if _schema_version(self._conn, self.path) >= version:  # migrated meanwhile
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

"""The shared ledger: one PostgreSQL database, used by runners on many hosts at once.

Same interface and semantics as the SQLite store (`sqlite.py`); the operation handlers are in
`pg_ops.py`, the schema in `pg_schema.py`. One connection per process (calls are serialised by a
lock, as the SQLite store's are), autocommit for reads, one READ COMMITTED transaction per
group of writes. psycopg errors are mapped to `LedgerError` here and only here (`_driver_errors`,
around every use of the connection), with the URL's password redacted.

A runner stopped at any moment (SIGSTOP, a frozen VM, a partitioned host) blocks the others for
a bounded time: a session stalled inside a transaction for `_IDLE_IN_TRANSACTION_TIMEOUT_MS` is
ended - by the server where its timeout applies, else (stopped in the middle of a pipelined
group, or after a Flush) by the first runner whose lock wait times out (`_LOCK_TIMEOUT_MS`) - so a lock
is waited for at most about 10 + 2 s after the stall began, and a group gives up after 60 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import structlog
from psycopg import Cursor, IsolationLevel
from psycopg.rows import TupleRow

from fanout.errors import LedgerError
from fanout.ledger.location import location_password, redact_location
from fanout.ledger.model import (
    BatchRecord,
    InstanceRecord,
    InstanceState,
    Op,
    RunRecord,
)
from fanout.ledger.pg_ops import Group, apply_one, prepare
from fanout.ledger.pg_schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION
from fanout.ledger.reads import LedgerReads
from fanout.ledger.rows import (
    BATCH_COLUMNS,
    INSTANCE_COLUMNS,
    RUN_COLUMNS,
    batch_row,
    instance_row,
    run_row,
)

__all__ = ["PostgresLedger"]

log = structlog.get_logger("fanout.ledger")

# A server that does not answer a connection in this long is down or unreachable.
_CONNECT_TIMEOUT_S = 10
# Leases and quota windows compare the runners' clocks; more skew than this deserves a warning.
_MAX_CLOCK_SKEW_S = 5.0
# fanout issues a group's statements back to back (milliseconds). A session that sits this long
# inside a transaction waiting for its runner is stalled (process stopped, VM frozen, host
# partitioned) and is ended, so the locks it holds (quota, a run's row) block no other runner for
# longer: by the server's idle_in_transaction_session_timeout where it applies, else by the
# runner it blocks (`_end_stalled_sessions`). It does not apply to a runner stopped in the
# middle of a pipelined group: the server waits for the rest ("active", ClientRead) with no
# timer; nor after a Flush message that followed the group's Sync (psycopg sends one to fetch
# results): that disarms the timer and the session stays "idle in transaction" for ever.
_IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000
# A statement that waits this long for a lock gives up; its group is rolled back and retried
# once the stalled sessions are ended. Runners hold these locks for milliseconds.
_LOCK_TIMEOUT_MS = 2_000
# A group whose locks stay unavailable this long fails (LedgerError): a stalled session this
# role may not end (another role's), or one that is not fanout's.
_LOCK_WAIT_LIMIT_S = 60.0
# How fanout's sessions name themselves (pg_stat_activity.application_name).
_APPLICATION_NAME = "fanout"
# fanout's sessions of this database stalled inside a transaction: the server is waiting for the
# client (ClientRead) and has been since its last statement started or ended, over the limit ago.
# Not a COPY: a new run's rows stream in one statement that may well outlast the limit, and
# nobody waits for the locks it holds (its own new rows).
_STALLED_SESSIONS = (
    "SELECT pid, client_addr, client_port, pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = %s "
    "AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)') "
    "AND wait_event = 'ClientRead' AND xact_start IS NOT NULL AND query NOT LIKE 'COPY %%' "
    "AND state_change < clock_timestamp() - make_interval(secs => %s)"
)


class PostgresLedger(LedgerReads):
    """A ledger in one PostgreSQL database; safe to share between processes on many hosts."""

    __slots__ = ("_conn", "_leases", "_lock", "_password", "_run_locks", "location")

    # Holders of a run's lease may be on other hosts: a pid that is gone here proves nothing
    # (a holder whose connection is gone is detected by its session lock instead, in pg_ops).
    local = False

    def __init__(self, url: str) -> None:
        self.location = redact_location(url)
        self._password = location_password(url)
        self._lock = threading.Lock()
        self._leases: dict[str, str] = {}  # run id -> owner, for the leases this store holds
        self._run_locks: set[str] = set()  # runs whose session lock this connection holds
        with self._driver_errors("cannot connect"):
            self._conn = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT_S,
                application_name=_APPLICATION_NAME,
            )
        try:
            with self._driver_errors("not a usable fanout ledger"):
                # Quota counting relies on each statement seeing what committed before it started.
                self._conn.isolation_level = IsolationLevel.READ_COMMITTED
                self._conn.execute(
                    f"SET idle_in_transaction_session_timeout = {_IDLE_IN_TRANSACTION_TIMEOUT_MS}"
                )
                self._migrate()
                self._conn.execute(f"SET lock_timeout = {_LOCK_TIMEOUT_MS}")
                self._check_clock()
        except LedgerError:
            self._conn.close()
            raise

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection."""
        with self._driver_errors("close"):
            self._conn.close()

    def _reason(self, exc: BaseException) -> str:
        """A driver error as one line, never with the password in it."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text.replace(self._password, "***") if self._password else text

    @contextmanager
    def _driver_errors(self, doing: str = "") -> Iterator[None]:
        """The one boundary: a psycopg error leaves as a LedgerError naming the ledger (its
        password redacted) and what was being done, with the driver's error as its cause."""
        try:
            yield
        except psycopg.Error as exc:
            reason = self._reason(exc)
            msg = f"{self.location}: {f'{doing} ({reason})' if doing else reason}"
            raise LedgerError(msg) from exc

    def _version(self, value: object) -> int:
        """A stored schema version, or LedgerError if it is damaged."""
        try:
            return int(str(value).strip())
        except ValueError:
            msg = f"{self.location}: damaged ledger (schema version {str(value)[:20]!r} is not a number)"
            raise LedgerError(msg) from None

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION; concurrent openers wait on one advisory lock."""
        conn = self._conn
        conn.execute("SELECT pg_advisory_lock(%s, %s)", MIGRATION_LOCK)
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            current = self._version(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                msg = f"{self.location}: ledger schema {current} is newer than this fanout ({SCHEMA_VERSION})"
                raise LedgerError(msg)
            for version, sql in MIGRATIONS:
                if version <= current:
                    continue
                with conn.transaction():
                    for statement in sql.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(
                        "INSERT INTO meta VALUES ('schema_version', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        (str(version),),
                    )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", MIGRATION_LOCK)

    def _check_clock(self) -> None:
        """Warn when this host's clock and the server's disagree (leases compare clocks)."""
        row = self._conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
        skew_s = time.time() - float(row[0]) if row else 0.0
        if abs(skew_s) > _MAX_CLOCK_SKEW_S:
            log.warning("ledger clock skew", ledger=self.location, skew_s=round(skew_s, 1))

    @contextmanager
    def _transaction(self) -> Iterator[Cursor[TupleRow]]:
        """One READ COMMITTED transaction under the in-process lock; driver errors mapped."""
        with (
            self._lock,
            self._driver_errors(),
            self._conn.transaction(),
            self._conn.cursor() as cur,
        ):
            yield cur

    # --- writes --------------------------------------------------------------------------

    def create_run(
        self,
        run: RunRecord,
        batches: Sequence[BatchRecord],
        extra_instances: Sequence[InstanceRecord] = (),
    ) -> None:
        """Store a new run, its batches and one pending row per batched instance."""
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM runs WHERE run_id = %s", (run.run_id,)).fetchone():
                msg = f"run {run.run_id} already exists"
                raise LedgerError(msg)
            cur.execute(
                f"INSERT INTO runs ({RUN_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s, %s, %s)",
                run_row(run),
            )
            now = run.created_at
            with cur.copy(f"COPY batches ({BATCH_COLUMNS}, updated_at) FROM STDIN") as copy:
                for b in batches:
                    copy.write_row((*batch_row(b), now))
            with cur.copy(
                "COPY instances (run_id, region, instance_id, batch_id, state, updated_at) "
                "FROM STDIN"
            ) as copy:
                pending = InstanceState.PENDING.value
                for b in batches:
                    for iid in b.instance_ids:
                        copy.write_row((run.run_id, b.region, iid, b.batch_id, pending, now))
            cur.executemany(
                f"INSERT INTO instances ({INSTANCE_COLUMNS}, updated_at) VALUES "
                f"({', '.join(['%s'] * 16)})",
                [(*instance_row(i), now) for i in extra_instances],
            )

    def apply(self, ops: Sequence[Op]) -> list[object]:
        """Apply operations in order in one transaction; one result per operation.

        Pipelined: statements are sent without waiting for each answer, except where a
        result decides what comes next (a quota count, a lease); checks run before COMMIT.
        A lock wait that times out rolls the group back; it is retried after the stalled
        sessions that may hold the lock are ended, for up to `_LOCK_WAIT_LIMIT_S`.
        """
        with self._lock, self._driver_errors():
            started = time.monotonic()
            while True:
                try:
                    results, granted = self._apply_group(ops)
                    break
                except psycopg.errors.LockNotAvailable as exc:
                    if time.monotonic() - started >= _LOCK_WAIT_LIMIT_S:
                        msg = (
                            f"{self.location}: locks held by another session for over "
                            f"{_LOCK_WAIT_LIMIT_S:.0f} s ({self._reason(exc)}); a stalled runner's "
                            "session is ended only by the same role (or one with pg_signal_backend)"
                        )
                        raise LedgerError(msg) from exc
                self._end_stalled_sessions()
        self._leases.update(granted)  # only once committed
        return results

    def _apply_group(self, ops: Sequence[Op]) -> tuple[list[object], dict[str, str]]:
        """One attempt at `apply`: the results and the leases granted (committed)."""
        with (
            self._conn.pipeline() as pipeline,
            self._conn.transaction(),
            self._conn.cursor() as cur,
        ):
            group = Group(cur, self._leases, self._run_locks)
            prepare(group, ops)
            results = [apply_one(group, op) for op in ops]
            pipeline.sync()
            group.run_checks()
        return results, group.granted

    def _end_stalled_sessions(self) -> None:
        """End fanout's sessions stalled inside a transaction (`_STALLED_SESSIONS`): what the
        server's idle_in_transaction_session_timeout does, for the sessions it does not cover."""
        stalled_s = _IDLE_IN_TRANSACTION_TIMEOUT_MS / 1000
        try:
            ended = self._conn.execute(_STALLED_SESSIONS, (_APPLICATION_NAME, stalled_s)).fetchall()
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("stalled ledger session not ended", reason=self._reason(exc))
            return
        for pid, addr, port, _done in ended:
            log.warning(
                "stalled ledger session ended",
                pid=pid,
                client=f"{addr}:{port}",
                stalled_s=stalled_s,
            )

    # --- reads ---------------------------------------------------------------------------

    @property
    def _ledger_name(self) -> str:
        """This ledger's URL with the password redacted, for messages."""
        return self.location

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        """Run one read query under the lock (autocommit: it sees every committed write).

        The shared queries mark arguments with `?`; psycopg wants `%s`.
        """
        with self._lock, self._driver_errors():
            return self._conn.execute(sql.replace("?", "%s"), args).fetchall()

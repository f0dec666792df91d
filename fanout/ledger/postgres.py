"""The shared ledger: one PostgreSQL database, used by runners on many hosts at once.

Same interface and semantics as the SQLite store (`sqlite.py`); the operation handlers are in
`pg_ops.py`, the schema in `pg_schema.py`. One connection per process (calls are serialised by a
lock, as the SQLite store's are), autocommit for reads, one READ COMMITTED transaction per
group of writes. psycopg errors are mapped to `LedgerError` here and only here, with the URL's
password redacted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import structlog
from psycopg import Cursor, IsolationLevel
from psycopg.rows import TupleRow

from fanout.errors import LedgerError, RunNotFoundError
from fanout.ledger.location import location_password, redact_location
from fanout.ledger.model import (
    BatchRecord,
    BatchState,
    InstanceRecord,
    InstanceState,
    Op,
    RunRecord,
    RunState,
)
from fanout.ledger.pg_ops import Group, apply_one, prepare
from fanout.ledger.pg_schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION

__all__ = ["PostgresLedger"]

log = structlog.get_logger("fanout.ledger")

# A server that does not answer a connection in this long is down or unreachable.
_CONNECT_TIMEOUT_S = 10
# Leases and quota windows compare the runners' clocks; more skew than this deserves a warning.
_MAX_CLOCK_SKEW_S = 5.0
# fanout issues a group's statements back to back (milliseconds). A session that sits this long
# inside a transaction is stalled (process stopped, host partitioned): the server ends it, so
# the quota locks it holds do not block the runners on other hosts.
_IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000

_RUN_COLUMNS = (
    "run_id, created_at, updated_at, state, command_id, account, target_count, parameters, "
    "secret_keys, options, parent_run_id, exit_code, lease_owner, lease_until"
)
_BATCH_COLUMNS = (
    "batch_id, run_id, region, seq, wave, instance_ids, client_token, state, attempts, "
    "maybe_applied, invoke_id, error_code, error_message"
)
_INSTANCE_COLUMNS = (
    "run_id, region, instance_id, batch_id, state, reason, invoke_id, exit_code, error_code, "
    "error_info, output, dropped, start_time, finish_time, invocation_status"
)
# As in the SQLite store: a pending row of an accepted batch is reported `invoked`, with the
# batch's InvokeId (the acceptance is stored once, on the batch).
_ACCEPTED = "('accepted', 'done')"
_REPORTED_STATE = (
    f"CASE WHEN i.state = 'pending' AND b.state IN {_ACCEPTED} THEN 'invoked' ELSE i.state END"
)
_REPORTED_COLUMNS = (
    "i.run_id, i.region, i.instance_id, i.batch_id, "
    f"{_REPORTED_STATE}, i.reason, "
    f"COALESCE(i.invoke_id, CASE WHEN b.state IN {_ACCEPTED} THEN b.invoke_id END), "
    "i.exit_code, i.error_code, i.error_info, i.output, i.dropped, i.start_time, i.finish_time, "
    "i.invocation_status"
)
_REPORTED_FROM = "instances i LEFT JOIN batches b ON b.batch_id = i.batch_id"


class PostgresLedger:
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
        try:
            self._conn = psycopg.connect(
                url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S, application_name="fanout"
            )
        except psycopg.Error as exc:
            msg = f"{self.location}: cannot connect ({self._reason(exc)})"
            raise LedgerError(msg) from exc
        try:
            # Quota counting relies on each statement seeing what committed before it started.
            self._conn.isolation_level = IsolationLevel.READ_COMMITTED
            self._conn.execute(
                f"SET idle_in_transaction_session_timeout = {_IDLE_IN_TRANSACTION_TIMEOUT_MS}"
            )
            self._migrate()
            self._check_clock()
        except psycopg.Error as exc:
            self._conn.close()
            msg = f"{self.location}: not a usable fanout ledger ({self._reason(exc)})"
            raise LedgerError(msg) from exc
        except LedgerError:
            self._conn.close()
            raise

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _reason(self, exc: BaseException) -> str:
        """A driver error as one line, never with the password in it."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text.replace(self._password, "***") if self._password else text

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION; concurrent openers wait on one advisory lock."""
        conn = self._conn
        conn.execute("SELECT pg_advisory_lock(%s, %s)", MIGRATION_LOCK)
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            current = int(row[0]) if row else 0
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
        with self._lock:
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                msg = f"{self.location}: {self._reason(exc)}"
                raise LedgerError(msg) from exc

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
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s, %s, %s)",
                _run_row(run),
            )
            now = run.created_at
            with cur.copy(f"COPY batches ({_BATCH_COLUMNS}, updated_at) FROM STDIN") as copy:
                for b in batches:
                    copy.write_row((*_batch_row(b), now))
            with cur.copy(
                "COPY instances (run_id, region, instance_id, batch_id, state, updated_at) "
                "FROM STDIN"
            ) as copy:
                pending = InstanceState.PENDING.value
                for b in batches:
                    for iid in b.instance_ids:
                        copy.write_row((run.run_id, b.region, iid, b.batch_id, pending, now))
            cur.executemany(
                f"INSERT INTO instances ({_INSTANCE_COLUMNS}, updated_at) VALUES "
                f"({', '.join(['%s'] * 16)})",
                [(*_instance_row(i), now) for i in extra_instances],
            )

    def apply(self, ops: Sequence[Op]) -> list[object]:
        """Apply operations in order in one transaction; one result per operation.

        Pipelined: statements are sent without waiting for each answer, except where a
        result decides what comes next (a quota count, a lease); checks run before COMMIT.
        """
        with self._lock:
            try:
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
            except psycopg.Error as exc:
                msg = f"{self.location}: {self._reason(exc)}"
                raise LedgerError(msg) from exc
        self._leases.update(group.granted)  # only once committed
        return results

    # --- reads ---------------------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[TupleRow]:
        """Run one read query under the lock (autocommit: it sees every committed write)."""
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except psycopg.Error as exc:
                msg = f"{self.location}: {self._reason(exc)}"
                raise LedgerError(msg) from exc

    def get_run(self, run_id: str) -> RunRecord:
        """One run, or RunNotFoundError."""
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = %s", (run_id,))
        if not rows:
            msg = f"no run {run_id!r} in ledger {self.location}"
            raise RunNotFoundError(msg)
        return _run_from_row(rows[0])

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        """The newest runs first."""
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at DESC LIMIT %s", (limit,)
        )
        return [_run_from_row(r) for r in rows]

    def load_batches(self, run_id: str) -> list[BatchRecord]:
        """Every batch of a run in dispatch order."""
        rows = self._query(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE run_id = %s ORDER BY seq", (run_id,)
        )
        return [_batch_from_row(r) for r in rows]

    def instance_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Instance counts by region, then by state."""
        counts: dict[str, dict[str, int]] = {}
        for region, state, n in self._query(
            f"SELECT i.region, {_REPORTED_STATE} AS s, COUNT(*) FROM {_REPORTED_FROM} "
            "WHERE i.run_id = %s GROUP BY i.region, s",
            (run_id,),
        ):
            counts.setdefault(region, {})[state] = n
        return counts

    def batch_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Batch counts by region, then by state."""
        counts: dict[str, dict[str, int]] = {}
        for region, state, n in self._query(
            "SELECT region, state, COUNT(*) FROM batches WHERE run_id = %s GROUP BY region, state",
            (run_id,),
        ):
            counts.setdefault(region, {})[state] = n
        return counts

    def iter_instances(self, run_id: str) -> Iterator[InstanceRecord]:
        """Every instance row of a run, ordered by region and id."""
        rows = self._query(
            f"SELECT {_REPORTED_COLUMNS} FROM {_REPORTED_FROM} WHERE i.run_id = %s "
            "ORDER BY i.region, i.instance_id",
            (run_id,),
        )
        return (_instance_from_row(r) for r in rows)

    def instances_of_batch(self, batch_id: str) -> list[InstanceRecord]:
        """The instance rows that were planned into one batch."""
        rows = self._query(
            f"SELECT {_REPORTED_COLUMNS} FROM {_REPORTED_FROM} WHERE i.batch_id = %s", (batch_id,)
        )
        return [_instance_from_row(r) for r in rows]

    def events(
        self, run_id: str, after_id: int = 0
    ) -> list[tuple[int, float, str, dict[str, Any]]]:
        """The run's journal after `after_id`."""
        rows = self._query(
            "SELECT id, ts, kind, data FROM events WHERE run_id = %s AND id > %s ORDER BY id",
            (run_id, after_id),
        )
        return [(i, ts, kind, data) for i, ts, kind, data in rows]

    def attempts(self, batch_id: str) -> list[dict[str, Any]]:
        """Every attempt of a batch, oldest first."""
        rows = self._query(
            "SELECT attempt, client_token, sent_at, finished_at, outcome, request_id, invoke_id,"
            " error_code, http_status FROM attempts WHERE batch_id = %s ORDER BY attempt",
            (batch_id,),
        )
        keys = (
            *("attempt", "client_token", "sent_at", "finished_at", "outcome", "request_id"),
            *("invoke_id", "error_code", "http_status"),
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def quota_used(self, account: str, window_start: float) -> dict[str, tuple[int, float]]:
        """Per region: calls counted since `window_start` and the oldest of them."""
        rows = self._query(
            "SELECT region, COUNT(*), MIN(ts) FROM quota_calls WHERE account = %s AND ts > %s "
            "GROUP BY region",
            (account, window_start),
        )
        return {region: (n, oldest) for region, n, oldest in rows}

    def quota_times(self, account: str, region: str, window_start: float) -> list[float]:
        """The times of the calls counted in the window, oldest first."""
        rows = self._query(
            "SELECT ts FROM quota_calls WHERE account = %s AND region = %s AND ts > %s ORDER BY ts",
            (account, region, window_start),
        )
        return [r[0] for r in rows]


# --- row <-> record ---------------------------------------------------------------------------


def _run_row(run: RunRecord) -> tuple[object, ...]:
    """RunRecord as a runs row (JSON columns as text, cast to jsonb by the statement)."""
    return (
        run.run_id,
        run.created_at,
        run.updated_at,
        run.state.value,
        run.command_id,
        run.account,
        run.target_count,
        json.dumps(dict(run.parameters)),
        json.dumps(list(run.secret_keys)),
        json.dumps(dict(run.options), default=str),
        run.parent_run_id,
        run.exit_code,
        run.lease_owner,
        run.lease_until,
    )


def _run_from_row(row: TupleRow) -> RunRecord:
    """A runs row as RunRecord."""
    return RunRecord(
        run_id=row[0],
        created_at=row[1],
        updated_at=row[2],
        state=RunState(row[3]),
        command_id=row[4],
        account=row[5],
        target_count=row[6],
        parameters=row[7],
        secret_keys=tuple(row[8]),
        options=row[9],
        parent_run_id=row[10],
        exit_code=row[11],
        lease_owner=row[12],
        lease_until=row[13],
    )


def _batch_row(b: BatchRecord) -> tuple[object, ...]:
    """BatchRecord as a batches row (without updated_at)."""
    return (
        b.batch_id,
        b.run_id,
        b.region,
        b.seq,
        b.wave,
        ",".join(b.instance_ids),
        b.client_token,
        b.state.value,
        b.attempts,
        b.maybe_applied,
        b.invoke_id,
        b.error_code,
        b.error_message,
    )


def _batch_from_row(row: TupleRow) -> BatchRecord:
    """A batches row as BatchRecord."""
    return BatchRecord(
        batch_id=row[0],
        run_id=row[1],
        region=row[2],
        seq=row[3],
        wave=row[4],
        instance_ids=tuple(row[5].split(",")) if row[5] else (),
        client_token=row[6],
        state=BatchState(row[7]),
        attempts=row[8],
        maybe_applied=row[9],
        invoke_id=row[10],
        error_code=row[11],
        error_message=row[12],
    )


def _instance_row(i: InstanceRecord) -> tuple[object, ...]:
    """InstanceRecord as an instances row (without updated_at)."""
    return (
        i.run_id,
        i.region,
        i.instance_id,
        i.batch_id,
        i.state.value,
        i.reason,
        i.invoke_id,
        i.exit_code,
        i.error_code,
        i.error_info,
        i.output,
        i.dropped,
        i.start_time,
        i.finish_time,
        i.invocation_status,
    )


def _instance_from_row(row: TupleRow) -> InstanceRecord:
    """An instances row as InstanceRecord."""
    return InstanceRecord(
        run_id=row[0],
        region=row[1],
        instance_id=row[2],
        batch_id=row[3],
        state=InstanceState(row[4]),
        reason=row[5],
        invoke_id=row[6],
        exit_code=row[7],
        error_code=row[8],
        error_info=row[9],
        output=row[10],
        dropped=row[11] or 0,
        start_time=row[12],
        finish_time=row[13],
        invocation_status=row[14],
    )

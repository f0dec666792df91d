"""The ledger's read queries, written once for both stores (SQL with `?` placeholders).

A store provides `_query(sql, args)` (PostgreSQL turns `?` into `%s`) and `_ledger_name`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from fanout.errors import RunNotFoundError
from fanout.ledger.command_rows import COMMAND_COLUMNS, KEY, command_from_row, key_args
from fanout.ledger.model import (
    BatchRecord,
    BatchState,
    BatchTimes,
    CommandRecord,
    InstanceRecord,
    InstanceState,
    QuotaRefusal,
    RunRecord,
)
from fanout.ledger.rows import (
    ACCEPTED,
    BATCH_COLUMNS,
    REPORTED_COLUMNS,
    REPORTED_FROM,
    RUN_COLUMNS,
    batch_from_row,
    instance_from_row,
    run_from_row,
)

__all__ = ["LedgerReads"]

# A batch in one of these states has ended: its `updated_at` is when (never left again).
_ENDED_BATCH_STATES = frozenset({BatchState.DONE.value, BatchState.FAILED.value})


def _json_object(value: Any) -> dict[str, Any]:
    """An event's data: JSON text in SQLite, already decoded in PostgreSQL."""
    decoded: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
    return decoded


class LedgerReads:
    """Every read of the LedgerStore protocol, on top of one `_query` per store."""

    __slots__ = ()

    @property
    def _ledger_name(self) -> str:
        """How messages name this ledger (never with a password)."""
        raise NotImplementedError

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        """Run one read query; `?` marks each argument."""
        raise NotImplementedError

    def get_run(self, run_id: str) -> RunRecord:
        """One run, or RunNotFoundError."""
        rows = self._query(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            msg = f"no run {run_id!r} in ledger {self._ledger_name}"
            raise RunNotFoundError(msg)
        return run_from_row(rows[0])

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        """The newest runs first."""
        rows = self._query(
            f"SELECT {RUN_COLUMNS} FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)
        )
        return [run_from_row(r) for r in rows]

    def child_runs(self, run_id: str) -> list[RunRecord]:
        """The runs linked to `run_id` (its retries, rollbacks and wave checks), oldest first."""
        rows = self._query(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE parent_run_id = ? ORDER BY created_at",
            (run_id,),
        )
        return [run_from_row(r) for r in rows]

    def load_batches(self, run_id: str) -> list[BatchRecord]:
        """Every batch of a run in dispatch order."""
        rows = self._query(
            f"SELECT {BATCH_COLUMNS} FROM batches WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        return [batch_from_row(r) for r in rows]

    def instance_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Instance counts by region, then by state (as reported: see `REPORTED_STATE`)."""
        # Counted in the database, from the `instances_by_state` index: a few dozen rows come
        # back for a million instances. Only pending rows need their batch (a pending row of an
        # accepted batch is reported `invoked`): counted per batch from `instances_pending`,
        # and only when there are any (never for a run that has ended).
        counts: dict[str, dict[str, int]] = {}
        for state, region, n in self._query(
            "SELECT state, region, COUNT(*) FROM instances WHERE run_id = ? GROUP BY state, region",
            (run_id,),
        ):
            counts.setdefault(region, {})[state] = n
        pending = InstanceState.PENDING.value
        if any(pending in per_state for per_state in counts.values()):
            self._count_invoked(run_id, counts)
        return counts

    def _count_invoked(self, run_id: str, counts: dict[str, dict[str, int]]) -> None:
        """Move the pending rows of accepted batches to `invoked` in `counts`."""
        accepted = {
            batch_id
            for (batch_id,) in self._query(
                f"SELECT batch_id FROM batches WHERE run_id = ? AND state IN {ACCEPTED}",
                (run_id,),
            )
        }
        pending, invoked = InstanceState.PENDING.value, InstanceState.INVOKED.value
        for batch_id, region, n in self._query(
            "SELECT batch_id, region, COUNT(*) FROM instances "
            "WHERE run_id = ? AND state = 'pending' GROUP BY batch_id, region",
            (run_id,),
        ):
            per_state = counts.get(region, {})
            # Two reads, two snapshots: a row that left `pending` in between is not moved.
            moved = min(n, per_state.get(pending, 0)) if batch_id in accepted else 0
            if moved:
                per_state[pending] -= moved
                per_state[invoked] = per_state.get(invoked, 0) + moved
                if not per_state[pending]:
                    del per_state[pending]

    def batch_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Batch counts by region, then by state."""
        counts: dict[str, dict[str, int]] = {}
        for region, state, n in self._query(
            "SELECT region, state, COUNT(*) FROM batches WHERE run_id = ? GROUP BY region, state",
            (run_id,),
        ):
            counts.setdefault(region, {})[state] = n
        return counts

    def iter_instances(self, run_id: str) -> Iterator[InstanceRecord]:
        """Every instance row of a run, ordered by region and id."""
        rows = self._query(
            f"SELECT {REPORTED_COLUMNS} FROM {REPORTED_FROM} WHERE i.run_id = ? "
            "ORDER BY i.region, i.instance_id",
            (run_id,),
        )
        return (instance_from_row(r) for r in rows)

    def failure_tally(self, run_id: str) -> list[tuple[str, str, str, bool, int]]:
        """The run's failed and unreachable instances of a batch, counted by (batch_id, state,
        invocation_status or "", whether a reason is given): what a resume's error budget
        carries, counted by the database instead of read row by row (`iter_instances` built
        an InstanceRecord per instance on every leg of a run)."""
        rows = self._query(
            "SELECT batch_id, state, COALESCE(invocation_status, ''), "
            "CASE WHEN reason IS NULL OR reason = '' THEN 0 ELSE 1 END, COUNT(*) "
            "FROM instances WHERE run_id = ? AND batch_id IS NOT NULL AND state IN (?, ?) "
            "GROUP BY 1, 2, 3, 4",
            (run_id, InstanceState.FAILED.value, InstanceState.UNREACHABLE.value),
        )
        return [(batch, state, status, bool(reason), n) for batch, state, status, reason, n in rows]

    def instances_of_batch(self, batch_id: str) -> list[InstanceRecord]:
        """The instance rows that were planned into one batch."""
        rows = self._query(
            f"SELECT {REPORTED_COLUMNS} FROM {REPORTED_FROM} WHERE i.batch_id = ?", (batch_id,)
        )
        return [instance_from_row(r) for r in rows]

    def events(
        self, run_id: str, after_id: int = 0
    ) -> list[tuple[int, float, str, dict[str, Any]]]:
        """The run's journal after `after_id`."""
        rows = self._query(
            "SELECT id, ts, kind, data FROM events WHERE run_id = ? AND id > ? ORDER BY id",
            (run_id, after_id),
        )
        return [(i, ts, kind, _json_object(data)) for i, ts, kind, data in rows]

    def batch_times(self, run_id: str) -> dict[str, BatchTimes]:
        """When each sent batch of a run was first sent, accepted and ended (epoch seconds).

        `ended_at` is the time of the batch's final state (`done`: every result recorded;
        `failed`), the batch's `updated_at`: a final batch state is never left. Batches never
        sent are absent.
        """
        rows = self._query(
            "SELECT b.batch_id, MIN(a.sent_at), "
            "MAX(CASE WHEN a.outcome = 'accepted' THEN a.finished_at END), b.state, b.updated_at "
            "FROM batches b JOIN attempts a ON a.batch_id = b.batch_id WHERE b.run_id = ? "
            "GROUP BY b.batch_id, b.state, b.updated_at",
            (run_id,),
        )
        return {
            batch_id: BatchTimes(
                sent_at=sent_at,
                accepted_at=accepted_at,
                ended_at=updated_at if state in _ENDED_BATCH_STATES else None,
            )
            for batch_id, sent_at, accepted_at, state, updated_at in rows
        }

    def attempts(self, batch_id: str) -> list[dict[str, Any]]:
        """Every attempt of a batch, oldest first."""
        rows = self._query(
            "SELECT attempt, client_token, sent_at, finished_at, outcome, request_id, invoke_id,"
            " error_code, http_status FROM attempts WHERE batch_id = ? ORDER BY attempt",
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
            "SELECT region, COUNT(*), MIN(ts) FROM quota_calls WHERE account = ? AND ts > ? "
            "GROUP BY region",
            (account, window_start),
        )
        return {region: (n, oldest) for region, n, oldest in rows}

    def quota_times(self, account: str, region: str, window_start: float) -> list[float]:
        """The times of the calls counted in the window, oldest first."""
        rows = self._query(
            "SELECT ts FROM quota_calls WHERE account = ? AND region = ? AND ts > ? ORDER BY ts",
            (account, region, window_start),
        )
        return [r[0] for r in rows]

    def command_ids(self, run_id: str) -> dict[str, str | None]:
        """Each region's CommandId of a run (None: its command is not created yet)."""
        rows = self._query(
            "SELECT region, MAX(command_id) FROM batches WHERE run_id = ? GROUP BY region",
            (run_id,),
        )
        return dict(sorted(rows))

    def command_records(self, account: str | None = None) -> list[CommandRecord]:
        """The commands fanout created from scripts (every state), by account, region, name."""
        where, args = ("WHERE account = ?", (account,)) if account else ("", ())
        rows = self._query(
            f"SELECT {COMMAND_COLUMNS} FROM commands {where} ORDER BY account, region, name",
            args,
        )
        return [command_from_row(r) for r in rows]

    def command_record(self, account: str, region: str, name: str) -> CommandRecord | None:
        """One command fanout created (or claimed to create), None if there is no such row."""
        rows = self._query(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE {KEY}", key_args(account, region, name)
        )
        return command_from_row(rows[0]) if rows else None

    def command_runs(self, region: str, command_id: str) -> list[str]:
        """The runs whose batches in `region` invoke `command_id`, oldest first."""
        rows = self._query(
            "SELECT DISTINCT b.run_id, r.created_at FROM batches b "
            "JOIN runs r ON r.run_id = b.run_id WHERE b.region = ? AND b.command_id = ? "
            "ORDER BY r.created_at",
            (region, command_id),
        )
        return [r[0] for r in rows]

    def quota_reservations(
        self, account: str, region: str, window_start: float
    ) -> list[tuple[float, str, int]]:
        """The calls counted in the window as (time, batch id, attempt), oldest first."""
        rows = self._query(
            "SELECT ts, batch_id, attempt FROM quota_calls WHERE account = ? AND region = ? "
            "AND ts > ? ORDER BY ts",
            (account, region, window_start),
        )
        return [(ts, batch_id, attempt) for ts, batch_id, attempt in rows]

    def quota_limits(self, account: str) -> dict[str, tuple[int, str, float]]:
        """Per region: the daily limit last read or configured, its source, when."""
        rows = self._query(
            "SELECT region, daily_limit, source, read_at FROM quota_limits WHERE account = ?",
            (account,),
        )
        return {region: (limit, source, at) for region, limit, source, at in rows}

    def quota_refusals(self, account: str, since: float = 0.0) -> list[QuotaRefusal]:
        """The API's quota refusals after `since`, newest first."""
        rows = self._query(
            "SELECT account, region, ts, code, message, request_id, used, quota_limit, "
            "explained, retry_at, run_id, batch_id, attempt FROM quota_refusals "
            "WHERE account = ? AND ts > ? ORDER BY ts DESC",
            (account, since),
        )
        return [
            QuotaRefusal(
                account=r[0],
                region=r[1],
                at=r[2],
                code=r[3],
                message=r[4] or "",
                request_id=r[5],
                used=r[6],
                limit=r[7],
                explained=bool(r[8]),
                retry_at=r[9],
                run_id=r[10],
                batch_id=r[11],
                attempt=r[12],
            )
            for r in rows
        ]

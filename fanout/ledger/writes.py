"""The write statements both stores send, with their arguments, written once.

Placeholders are SQLite's `?`; the PostgreSQL store turns them into `%s` (`pg`). What differs
between the stores stays in each: how a transition is checked (SQLite reads the row after an
update that changed nothing; PostgreSQL returns the state before from the same pipelined
statement), state lists (`IN (?, ...)` resp. `= ANY(%s)`), locks and leases.
"""

from __future__ import annotations

from collections.abc import Mapping

from fanout.ledger.model import (
    BeginAttempt,
    FinishAttempt,
    InstanceRecord,
    QuotaRefusal,
    ReleaseQuota,
    S,
    SetBatch,
    SetQuotaLimit,
    SetRun,
    predecessors,
)

__all__ = [
    "ATTEMPT",
    "BATCH_INSTANCES_SET",
    "FINISH_ATTEMPT",
    "INSTANCE_OUTCOME_SET",
    "QUOTA_CALL",
    "QUOTA_LIMIT",
    "QUOTA_REFUSAL",
    "RELEASE_QUOTA_CALL",
    "SET_RUN",
    "allowed_before",
    "attempt_args",
    "batch_extra",
    "batch_instances_args",
    "finish_attempt_args",
    "instance_outcome_args",
    "pg",
    "quota_call_args",
    "quota_limit_args",
    "quota_refusal_args",
    "release_quota_call_args",
    "set_run_args",
]

QUOTA_CALL = "INSERT INTO quota_calls VALUES (?, ?, ?, ?, ?, ?)"
# A refused attempt used no quota: its reservation goes.
RELEASE_QUOTA_CALL = (
    "DELETE FROM quota_calls WHERE account = ? AND region = ? AND run_id = ? AND batch_id = ? "
    "AND attempt = ?"
)
QUOTA_REFUSAL = (
    "INSERT INTO quota_refusals (account, region, ts, code, message, request_id, used, "
    "quota_limit, explained, retry_at, run_id, batch_id, attempt) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
QUOTA_LIMIT = (
    "INSERT INTO quota_limits (account, region, daily_limit, source, read_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account, region) DO UPDATE SET "
    "daily_limit = excluded.daily_limit, source = excluded.source, read_at = excluded.read_at"
)
ATTEMPT = "INSERT INTO attempts (batch_id, attempt, client_token, sent_at) VALUES (?, ?, ?, ?)"
FINISH_ATTEMPT = (
    "UPDATE attempts SET finished_at = ?, outcome = ?, request_id = ?, invoke_id = ?, "
    "error_code = ?, http_status = ?, message = ? WHERE batch_id = ? AND attempt = ?"
)
SET_RUN = (
    "UPDATE runs SET state = ?, updated_at = ?, exit_code = COALESCE(?, exit_code) WHERE run_id = ?"
)
# SET clauses; each store adds its own WHERE (and the check of the transition).
INSTANCE_OUTCOME_SET = (
    "state = ?, reason = ?, invoke_id = COALESCE(?, invoke_id), exit_code = ?, error_code = ?, "
    "error_info = ?, output = ?, dropped = ?, start_time = ?, finish_time = ?, "
    "invocation_status = ?, updated_at = ?"
)
BATCH_INSTANCES_SET = (
    "state = ?, invoke_id = COALESCE(?, invoke_id), error_code = COALESCE(?, error_code), "
    "reason = COALESCE(?, reason), updated_at = ?"
)


def pg(sql: str) -> str:
    """The statement with PostgreSQL's placeholders."""
    return sql.replace("?", "%s")


def allowed_before(table: Mapping[S, frozenset[S]], new: S) -> list[str]:
    """The stored values of every state from which `new` may be reached."""
    return [state.value for state in predecessors(table, new)]


def quota_call_args(op: BeginAttempt) -> tuple[object, ...]:
    return (op.account, op.region, op.now, op.run_id, op.batch_id, op.attempt)


def release_quota_call_args(op: ReleaseQuota) -> tuple[object, ...]:
    return (op.account, op.region, op.run_id, op.batch_id, op.attempt)


def quota_refusal_args(r: QuotaRefusal) -> tuple[object, ...]:
    return (
        r.account,
        r.region,
        r.at,
        r.code,
        r.message,
        r.request_id,
        r.used,
        r.limit,
        r.explained,
        r.retry_at,
        r.run_id,
        r.batch_id,
        r.attempt,
    )


def quota_limit_args(op: SetQuotaLimit) -> tuple[object, ...]:
    return (op.account, op.region, op.limit, op.source, op.now)


def attempt_args(op: BeginAttempt) -> tuple[object, ...]:
    return (op.batch_id, op.attempt, op.client_token, op.now)


def finish_attempt_args(op: FinishAttempt) -> tuple[object, ...]:
    return (
        op.now,
        op.outcome,
        op.request_id,
        op.invoke_id,
        op.error_code,
        op.http_status,
        op.message,
        op.batch_id,
        op.attempt,
    )


def set_run_args(op: SetRun) -> tuple[object, ...]:
    return (op.state.value, op.now, op.exit_code, op.run_id)


def instance_outcome_args(rec: InstanceRecord, now: float) -> tuple[object, ...]:
    """The values of `INSTANCE_OUTCOME_SET`."""
    return (
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
        now,
    )


def batch_extra(op: SetBatch) -> dict[str, object]:
    """The columns a batch transition sets beside its state."""
    extra: dict[str, object] = {"error_code": op.error_code, "error_message": op.error_message}
    if op.invoke_id is not None:
        extra["invoke_id"] = op.invoke_id
    if op.maybe_applied is not None:
        extra["maybe_applied"] = op.maybe_applied  # SQLite stores a bool as 0 / 1
    return extra


def batch_instances_args(op: SetBatch) -> tuple[object, ...]:
    """The values of `BATCH_INSTANCES_SET` (for a SetBatch with an instance state)."""
    assert op.instance_state is not None
    return (op.instance_state.value, op.invoke_id, op.error_code, op.error_message, op.now)

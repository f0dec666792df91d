"""Rows <-> records, shared by the SQLite and PostgreSQL stores (same columns, same meaning)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fanout.ledger.model import (
    BatchRecord,
    BatchState,
    InstanceRecord,
    InstanceState,
    RunRecord,
    RunState,
)

__all__ = [
    "ACCEPTED",
    "BATCH_COLUMNS",
    "INSTANCE_COLUMNS",
    "REPORTED_COLUMNS",
    "REPORTED_FROM",
    "REPORTED_STATE",
    "RUN_COLUMNS",
    "batch_from_row",
    "batch_row",
    "instance_from_row",
    "instance_row",
    "run_from_row",
    "run_row",
]

RUN_COLUMNS = (
    "run_id, created_at, updated_at, state, command_id, account, target_count, parameters, "
    "secret_keys, options, parent_run_id, exit_code, lease_owner, lease_until"
)
BATCH_COLUMNS = (
    "batch_id, run_id, region, seq, wave, instance_ids, client_token, state, attempts, "
    "maybe_applied, invoke_id, error_code, error_message, command_id"
)
INSTANCE_COLUMNS = (
    "run_id, region, instance_id, batch_id, state, reason, invoke_id, exit_code, error_code, "
    "error_info, output, dropped, start_time, finish_time, invocation_status"
)
# A pending row of an accepted batch is reported `invoked`, with the batch's InvokeId: the
# acceptance is stored once, on the batch, not copied into 50 instance rows.
ACCEPTED = "('accepted', 'done')"
REPORTED_STATE = (
    f"CASE WHEN i.state = 'pending' AND b.state IN {ACCEPTED} THEN 'invoked' ELSE i.state END"
)
REPORTED_COLUMNS = (
    "i.run_id, i.region, i.instance_id, i.batch_id, "
    f"{REPORTED_STATE}, i.reason, "
    f"COALESCE(i.invoke_id, CASE WHEN b.state IN {ACCEPTED} THEN b.invoke_id END), "
    "i.exit_code, i.error_code, i.error_info, i.output, i.dropped, i.start_time, i.finish_time, "
    "i.invocation_status"
)
REPORTED_FROM = "instances i LEFT JOIN batches b ON b.batch_id = i.batch_id"


def _json(value: Any) -> Any:
    """A JSON column: text in SQLite, already decoded (jsonb) in PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def run_row(run: RunRecord) -> tuple[object, ...]:
    """RunRecord as a runs row."""
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


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A runs row as RunRecord."""
    return RunRecord(
        run_id=row[0],
        created_at=row[1],
        updated_at=row[2],
        state=RunState(row[3]),
        command_id=row[4],
        account=row[5],
        target_count=row[6],
        parameters=_json(row[7]),
        secret_keys=tuple(_json(row[8])),
        options=_json(row[9]),
        parent_run_id=row[10],
        exit_code=row[11],
        lease_owner=row[12],
        lease_until=row[13],
    )


def batch_row(b: BatchRecord) -> tuple[object, ...]:
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
        b.command_id,
    )


def batch_from_row(row: Sequence[Any]) -> BatchRecord:
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
        maybe_applied=bool(row[9]),
        invoke_id=row[10],
        error_code=row[11],
        error_message=row[12],
        command_id=row[13],
    )


def instance_row(i: InstanceRecord) -> tuple[object, ...]:
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


def instance_from_row(row: Sequence[Any]) -> InstanceRecord:
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

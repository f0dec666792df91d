"""The `commands` table (commands fanout creates from a script), shared by both stores: rows <->
records, the claim decision, and the write statements (SQLite's `?`; PostgreSQL's via
`writes.pg`). Each store reads the row under its own lock, decides with `claim`, and writes.

A claim is the CreateCommand intent: it is committed before CreateCommand is sent, and only the
claim's holder may create the command until the claim expires or its holder is known gone, so
two fanout processes creating one command in one region take turns through the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fanout.ledger.model import (
    ClaimCommand,
    CommandRecord,
    CommandState,
    DropCommand,
    RecordCommand,
    SetRegionCommand,
)

__all__ = [
    "COMMAND_COLUMNS",
    "DROP",
    "KEY",
    "SET_REGION_COMMAND",
    "UPSERT",
    "claim",
    "command_from_row",
    "command_row",
    "drop_args",
    "key_args",
    "record_args",
    "set_region_args",
]

COMMAND_COLUMNS = (
    "account, region, name, content_hash, command_type, state, command_id, owner, "
    "claimed_until, created_at, updated_at, run_id"
)
KEY = "account = ? AND region = ? AND name = ?"
# One statement writes a claim or a recorded id, whether the row exists or not (both stores
# know INSERT ... ON CONFLICT); created_at is kept from the first time the command existed.
UPSERT = (
    f"INSERT INTO commands ({COMMAND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (account, region, name) DO UPDATE SET content_hash = excluded.content_hash, "
    "command_type = excluded.command_type, state = excluded.state, "
    "command_id = excluded.command_id, owner = excluded.owner, "
    "claimed_until = excluded.claimed_until, "
    "created_at = COALESCE(commands.created_at, excluded.created_at), "
    "updated_at = excluded.updated_at, run_id = COALESCE(commands.run_id, excluded.run_id)"
)
DROP = (
    f"UPDATE commands SET state = ?, owner = NULL, claimed_until = NULL, updated_at = ? WHERE {KEY}"
)
SET_REGION_COMMAND = "UPDATE batches SET command_id = ? WHERE run_id = ? AND region = ?"


def command_row(c: CommandRecord) -> tuple[object, ...]:
    """A CommandRecord as a commands row."""
    return (
        c.account,
        c.region,
        c.name,
        c.content_hash,
        c.command_type,
        c.state.value,
        c.command_id,
        c.owner,
        c.claimed_until,
        c.created_at,
        c.updated_at,
        c.run_id,
    )


def command_from_row(row: Sequence[Any]) -> CommandRecord:
    """A commands row as a CommandRecord."""
    return CommandRecord(
        account=row[0],
        region=row[1],
        name=row[2],
        content_hash=row[3],
        command_type=row[4],
        state=CommandState(row[5]),
        command_id=row[6],
        owner=row[7],
        claimed_until=row[8],
        created_at=row[9],
        updated_at=row[10],
        run_id=row[11],
    )


def key_args(account: str, region: str, name: str) -> tuple[object, ...]:
    """The arguments of `KEY`."""
    return (account, region, name)


def claim(current: CommandRecord | None, op: ClaimCommand) -> tuple[bool, CommandRecord]:
    """Whether `op` gets the claim, given the row as it stands, and the row after it.

    Granted over no row or a deleted one, over this owner's own claim, over an expired claim,
    or with `force` (its holder is known gone); never over a created command, and never while
    another holder's claim runs.
    """
    wanted = replace(op.record, state=CommandState.CREATING, command_id=None, updated_at=op.now)
    if current is None or current.state is CommandState.DELETED:
        return True, wanted
    if current.state is CommandState.CREATED:
        return False, current
    expired = current.claimed_until is None or current.claimed_until < op.now
    if current.owner == op.record.owner or expired or op.force:
        return True, replace(wanted, created_at=current.created_at, run_id=current.run_id)
    return False, current


def record_args(op: RecordCommand) -> tuple[object, ...]:
    """`UPSERT` arguments for a recorded (created or found) command."""
    return command_row(
        replace(
            op.record,
            state=CommandState.CREATED,
            command_id=op.command_id,
            owner=None,
            claimed_until=None,
            created_at=op.record.created_at or op.now,
            updated_at=op.now,
        )
    )


def drop_args(op: DropCommand) -> tuple[object, ...]:
    """`DROP` arguments."""
    return (CommandState.DELETED.value, op.now, op.account, op.region, op.name)


def set_region_args(op: SetRegionCommand) -> tuple[object, ...]:
    """`SET_REGION_COMMAND` arguments."""
    return (op.command_id, op.run_id, op.region)

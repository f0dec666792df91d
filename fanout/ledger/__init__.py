"""The durable ledger: runs, batches, attempts, instances, quota calls and the event journal.

The runner reaches storage only through `LedgerStore` (`store.py`, with `open_ledger`) and
`GroupCommitter` (`group.py`, which turns many tasks' writes into one transaction). Two
backends: a SQLite file for one host (`sqlite.py`) and a PostgreSQL database shared by runners
on many hosts (`postgres.py`, DESIGN section 6). They share their rows (`rows.py`), read queries
(`reads.py`) and write statements (`writes.py`); the states and records are in `model.py`.

Names are loaded on first use (PEP 562): the pure parts (`model`, `rows`, `writes`) are imported
by pure modules such as `fanout.report`, which must not load anyio or sqlite3 through this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fanout._lazy import lazy_getattr

if TYPE_CHECKING:
    from fanout.ledger.group import GroupCommitter
    from fanout.ledger.location import is_postgres_location, redact_location
    from fanout.ledger.model import (
        AcquireLease,
        AddBatch,
        AppendEvent,
        BatchRecord,
        BatchState,
        BatchTimes,
        BeginAttempt,
        ClaimCommand,
        CommandRecord,
        CommandState,
        DropCommand,
        FinishAttempt,
        InstanceRecord,
        InstanceState,
        Op,
        QuotaRefusal,
        RecordCommand,
        ReleaseQuota,
        RunRecord,
        RunState,
        SetBatch,
        SetInstances,
        SetQuotaLimit,
        SetRegionCommand,
        SetRun,
        ShrinkBatch,
    )
    from fanout.ledger.store import (
        NO_LEDGER,
        LedgerStore,
        check_ledger_location,
        default_ledger_location,
        ledger_exists,
        open_existing_ledger,
        open_ledger,
    )

# Public name -> the module that defines it (read by tests/test_architecture.py).
_EXPORTS = {
    "AcquireLease": "fanout.ledger.model",
    "AddBatch": "fanout.ledger.model",
    "AppendEvent": "fanout.ledger.model",
    "BatchRecord": "fanout.ledger.model",
    "BatchState": "fanout.ledger.model",
    "BatchTimes": "fanout.ledger.model",
    "BeginAttempt": "fanout.ledger.model",
    "ClaimCommand": "fanout.ledger.model",
    "CommandRecord": "fanout.ledger.model",
    "CommandState": "fanout.ledger.model",
    "DropCommand": "fanout.ledger.model",
    "FinishAttempt": "fanout.ledger.model",
    "GroupCommitter": "fanout.ledger.group",
    "InstanceRecord": "fanout.ledger.model",
    "InstanceState": "fanout.ledger.model",
    "LedgerStore": "fanout.ledger.store",
    "NO_LEDGER": "fanout.ledger.store",
    "Op": "fanout.ledger.model",
    "RecordCommand": "fanout.ledger.model",
    "QuotaRefusal": "fanout.ledger.model",
    "ReleaseQuota": "fanout.ledger.model",
    "RunRecord": "fanout.ledger.model",
    "RunState": "fanout.ledger.model",
    "SetBatch": "fanout.ledger.model",
    "SetInstances": "fanout.ledger.model",
    "SetRegionCommand": "fanout.ledger.model",
    "SetQuotaLimit": "fanout.ledger.model",
    "SetRun": "fanout.ledger.model",
    "ShrinkBatch": "fanout.ledger.model",
    "check_ledger_location": "fanout.ledger.store",
    "default_ledger_location": "fanout.ledger.store",
    "is_postgres_location": "fanout.ledger.location",
    "ledger_exists": "fanout.ledger.store",
    "open_existing_ledger": "fanout.ledger.store",
    "open_ledger": "fanout.ledger.store",
    "redact_location": "fanout.ledger.location",
}

__all__ = [
    "NO_LEDGER",
    "AcquireLease",
    "AddBatch",
    "AppendEvent",
    "BatchRecord",
    "BatchState",
    "BatchTimes",
    "BeginAttempt",
    "ClaimCommand",
    "CommandRecord",
    "CommandState",
    "DropCommand",
    "FinishAttempt",
    "GroupCommitter",
    "InstanceRecord",
    "InstanceState",
    "LedgerStore",
    "Op",
    "QuotaRefusal",
    "RecordCommand",
    "ReleaseQuota",
    "RunRecord",
    "RunState",
    "SetBatch",
    "SetInstances",
    "SetQuotaLimit",
    "SetRegionCommand",
    "SetRun",
    "ShrinkBatch",
    "check_ledger_location",
    "default_ledger_location",
    "is_postgres_location",
    "ledger_exists",
    "open_existing_ledger",
    "open_ledger",
    "redact_location",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)

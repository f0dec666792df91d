"""The SQLite schema as numbered migrations; a ledger is brought to the newest on open."""

from __future__ import annotations

__all__ = ["LEDGER_TABLES", "MIGRATIONS", "READ_INDEXES", "SCHEMA_VERSION"]

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, created_at REAL NOT NULL, updated_at REAL NOT NULL,
            state TEXT NOT NULL, command_id TEXT NOT NULL, account TEXT NOT NULL,
            target_count INTEGER NOT NULL, parameters TEXT NOT NULL, secret_keys TEXT NOT NULL,
            options TEXT NOT NULL, parent_run_id TEXT, exit_code INTEGER,
            lease_owner TEXT, lease_until REAL
        );
        CREATE TABLE batches (
            batch_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, region TEXT NOT NULL,
            seq INTEGER NOT NULL, wave INTEGER NOT NULL, instance_ids TEXT NOT NULL,
            client_token TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            maybe_applied INTEGER NOT NULL DEFAULT 0, invoke_id TEXT, error_code TEXT,
            error_message TEXT, updated_at REAL NOT NULL
        );
        CREATE INDEX batches_by_run ON batches (run_id, seq);
        CREATE TABLE attempts (
            batch_id TEXT NOT NULL, attempt INTEGER NOT NULL, client_token TEXT NOT NULL,
            sent_at REAL NOT NULL, finished_at REAL, outcome TEXT, request_id TEXT,
            invoke_id TEXT, error_code TEXT, http_status INTEGER, message TEXT,
            PRIMARY KEY (batch_id, attempt)
        );
        CREATE TABLE instances (
            run_id TEXT NOT NULL, region TEXT NOT NULL, instance_id TEXT NOT NULL,
            batch_id TEXT, state TEXT NOT NULL, reason TEXT, invoke_id TEXT, exit_code INTEGER,
            error_code TEXT, error_info TEXT, output TEXT, dropped INTEGER NOT NULL DEFAULT 0,
            start_time TEXT, finish_time TEXT, invocation_status TEXT, updated_at REAL NOT NULL,
            PRIMARY KEY (run_id, region, instance_id)
        ) WITHOUT ROWID;
        CREATE INDEX instances_by_batch ON instances (batch_id);
        CREATE TABLE quota_calls (
            account TEXT NOT NULL, region TEXT NOT NULL, ts REAL NOT NULL,
            run_id TEXT NOT NULL, batch_id TEXT NOT NULL, attempt INTEGER NOT NULL
        );
        CREATE INDEX quota_window ON quota_calls (account, region, ts);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, ts REAL NOT NULL,
            kind TEXT NOT NULL, data TEXT NOT NULL
        );
        CREATE INDEX events_by_run ON events (run_id, id);
        """,
    ),
    (
        # 2: a CommandId per batch (a CommandId belongs to one region: each region of a run has
        # its own; batches of older runs take their run's), and the commands fanout creates from
        # a script (`--script`): the CreateCommand intent, then the id, per account and region.
        2,
        """
        ALTER TABLE batches ADD COLUMN command_id TEXT;
        UPDATE batches SET command_id = (
            SELECT r.command_id FROM runs r WHERE r.run_id = batches.run_id
        );
        CREATE INDEX batches_by_command ON batches (region, command_id);
        CREATE TABLE commands (
            account TEXT NOT NULL, region TEXT NOT NULL, name TEXT NOT NULL,
            content_hash TEXT NOT NULL, command_type TEXT NOT NULL, state TEXT NOT NULL,
            command_id TEXT, owner TEXT, claimed_until REAL, created_at REAL,
            updated_at REAL NOT NULL, run_id TEXT,
            PRIMARY KEY (account, region, name)
        );
        """,
    ),
    (
        # 3 (issue 14): the API's refusals (Invocation.ExceedQuota) and the limit it reports
        # (DescribeAccountAttributes max-axt-invocation-daily); instances may now be
        # `unreachable` (a state older fanouts do not know: this version keeps them out).
        3,
        """
        CREATE TABLE quota_refusals (
            account TEXT NOT NULL, region TEXT NOT NULL, ts REAL NOT NULL, code TEXT NOT NULL,
            message TEXT, request_id TEXT, used INTEGER NOT NULL, quota_limit INTEGER,
            explained INTEGER NOT NULL, retry_at REAL, run_id TEXT, batch_id TEXT, attempt INTEGER
        );
        CREATE INDEX quota_refusals_by_region ON quota_refusals (account, region, ts);
        CREATE TABLE quota_limits (
            account TEXT NOT NULL, region TEXT NOT NULL, daily_limit INTEGER NOT NULL,
            source TEXT NOT NULL, read_at REAL NOT NULL, PRIMARY KEY (account, region)
        );
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
# Indexes that only make reads fast (issue 18): `fanout status` of a 1 000 000-instance run counts
# its instances by state from `instances_by_state` (a tenth of the table's bytes) instead of
# reading every row, and its still-pending instances per batch from `instances_pending` (only
# pending rows: empty once a run has ended). They hold no fact of their own, so they have no
# schema version: a ledger with or without them is the same ledger to every fanout (an older one
# reads and writes it alike; a read works without them, only slower). A writer creates them on
# open, a one-off cost on a ledger made before them (seconds at a million instances). `state`
# in the partial index, constant as it is there, lets SQLite count from the index alone.
READ_INDEXES = (
    "CREATE INDEX IF NOT EXISTS instances_by_state ON instances (run_id, state, region)",
    "CREATE INDEX IF NOT EXISTS instances_pending ON instances (run_id, state, batch_id) "
    "WHERE state = 'pending'",
)
# Every table a complete ledger has (a ledger missing one is damaged, never repaired silently).
LEDGER_TABLES = ("meta", "runs", "batches", "attempts", "instances", "quota_calls", "events")

"""The PostgreSQL schema as numbered migrations; a ledger is brought to the newest on open.

The tables mirror the SQLite schema (`schema.py`) column for column, with PostgreSQL types:
times are epoch seconds (`double precision`, as the records carry them), JSON is `jsonb`,
flags are `boolean`; `runs.lease_locked` (the holder also holds its session lock) is the one
addition. Each step runs in its own transaction under a session advisory lock, so
hosts opening one database at the same time migrate it once.
"""

from __future__ import annotations

__all__ = [
    "EVENTS_LOCK_CLASS",
    "FANOUT_LOCK_CLASS",
    "MIGRATIONS",
    "MIGRATION_LOCK",
    "RUN_LOCK_CLASS",
    "SCHEMA_VERSION",
]

# pg_advisory_lock(classid, objid) keys: the class is fanout's own ("fnot" in ASCII), so fanout
# never waits on another application's advisory locks in a shared database.
FANOUT_LOCK_CLASS = 0x666E6F74
EVENTS_LOCK_CLASS = FANOUT_LOCK_CLASS + 1  # per-run journal appends (see pg_ops.prepare)
MIGRATION_LOCK = (FANOUT_LOCK_CLASS + 2, 0)  # schema migrations, one opener at a time
RUN_LOCK_CLASS = FANOUT_LOCK_CLASS + 3  # a lease holder's session lock (see pg_ops)

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE runs (
            run_id text PRIMARY KEY, created_at double precision NOT NULL,
            updated_at double precision NOT NULL, state text NOT NULL, command_id text NOT NULL,
            account text NOT NULL, target_count integer NOT NULL, parameters jsonb NOT NULL,
            secret_keys jsonb NOT NULL, options jsonb NOT NULL, parent_run_id text,
            exit_code integer, lease_owner text, lease_until double precision,
            lease_locked boolean NOT NULL DEFAULT false
        );
        CREATE INDEX runs_by_created ON runs (created_at DESC);
        CREATE TABLE batches (
            batch_id text PRIMARY KEY, run_id text NOT NULL,
            region text NOT NULL, seq integer NOT NULL, wave integer NOT NULL,
            instance_ids text NOT NULL, client_token text NOT NULL, state text NOT NULL,
            attempts integer NOT NULL DEFAULT 0, maybe_applied boolean NOT NULL DEFAULT false,
            invoke_id text, error_code text, error_message text,
            updated_at double precision NOT NULL
        );
        CREATE INDEX batches_by_run ON batches (run_id, seq);
        CREATE TABLE attempts (
            batch_id text NOT NULL, attempt integer NOT NULL,
            client_token text NOT NULL, sent_at double precision NOT NULL,
            finished_at double precision, outcome text, request_id text, invoke_id text,
            error_code text, http_status integer, message text,
            PRIMARY KEY (batch_id, attempt)
        );
        CREATE TABLE instances (
            run_id text NOT NULL, region text NOT NULL,
            instance_id text NOT NULL, batch_id text, state text NOT NULL, reason text,
            invoke_id text, exit_code integer, error_code text, error_info text, output text,
            dropped integer NOT NULL DEFAULT 0, start_time text, finish_time text,
            invocation_status text, updated_at double precision NOT NULL,
            PRIMARY KEY (run_id, region, instance_id)
        );
        CREATE INDEX instances_by_batch ON instances (batch_id);
        CREATE TABLE quota_calls (
            account text NOT NULL, region text NOT NULL, ts double precision NOT NULL,
            run_id text NOT NULL, batch_id text NOT NULL, attempt integer NOT NULL
        );
        CREATE INDEX quota_window ON quota_calls (account, region, ts);
        CREATE TABLE events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id text NOT NULL,
            ts double precision NOT NULL, kind text NOT NULL, data jsonb NOT NULL
        );
        CREATE INDEX events_by_run ON events (run_id, id);
        """,
    ),
    (
        # 2: as SQLite's migration 2 (schema.py): a CommandId per batch, and the commands
        # fanout creates from a script, per account and region.
        2,
        """
        ALTER TABLE batches ADD COLUMN command_id text;
        UPDATE batches b SET command_id = r.command_id FROM runs r WHERE r.run_id = b.run_id;
        CREATE INDEX batches_by_command ON batches (region, command_id);
        CREATE TABLE commands (
            account text NOT NULL, region text NOT NULL, name text NOT NULL,
            content_hash text NOT NULL, command_type text NOT NULL, state text NOT NULL,
            command_id text, owner text, claimed_until double precision,
            created_at double precision, updated_at double precision NOT NULL, run_id text,
            PRIMARY KEY (account, region, name)
        );
        """,
    ),
    (
        # 3 (issue 14, as in schema.py): the API's quota refusals, the limits it reports, and
        # the `unreachable` instance state that older fanouts do not know.
        3,
        """
        CREATE TABLE quota_refusals (
            account text NOT NULL, region text NOT NULL, ts double precision NOT NULL,
            code text NOT NULL, message text, request_id text, used integer NOT NULL,
            quota_limit integer, explained boolean NOT NULL, retry_at double precision,
            run_id text, batch_id text, attempt integer
        );
        CREATE INDEX quota_refusals_by_region ON quota_refusals (account, region, ts);
        CREATE TABLE quota_limits (
            account text NOT NULL, region text NOT NULL, daily_limit integer NOT NULL,
            source text NOT NULL, read_at double precision NOT NULL,
            PRIMARY KEY (account, region)
        );
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

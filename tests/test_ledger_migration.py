"""Schema 3 (issue 14) on both backends: a ledger written by schema 1 or 2 is migrated in place,
keeps what it held, and then records quota refusals, API limits and `unreachable` instances."""

from __future__ import annotations

import time

import pytest

from fanout.ledger import (
    InstanceRecord,
    InstanceState,
    QuotaRefusal,
    ReleaseQuota,
    SetInstances,
    SetQuotaLimit,
    is_postgres_location,
    open_ledger,
    pg_schema,
    schema,
)
from tests.conftest import both_backends, ledger_sql

ACCOUNT = "acct"
REGION = "cn-hangzhou"


def _older_schema(location: str, now: float, version: int) -> None:
    """Write the schema up to `version` and a run with two reserved quota calls, as fanout
    before issue 14 did."""
    postgres = is_postgres_location(location)
    migrations = pg_schema.MIGRATIONS if postgres else schema.MIGRATIONS
    statements = [s for _v, sql in migrations[:version] for s in sql.split(";") if s.strip()]
    false = "false" if postgres else "0"
    statements += [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
        f"INSERT INTO meta VALUES ('schema_version', '{version}')",
        "INSERT INTO runs VALUES ('r-old', 1, 1, 'running', 'c-1', 'acct', 1, '{}', '[]', '{}', "
        "NULL, NULL, NULL, NULL" + (", false)" if postgres else ")"),
        "INSERT INTO batches (batch_id, run_id, region, seq, wave, instance_ids, client_token, "
        "state, attempts, maybe_applied, invoke_id, error_code, error_message, updated_at) "
        f"VALUES ('b-0', 'r-old', '{REGION}', 0, 0, 'i-a', 'tok', 'accepted', 1, {false}, 't-1', "
        "NULL, NULL, 1)",
        f"INSERT INTO instances (run_id, region, instance_id, batch_id, state, updated_at) "
        f"VALUES ('r-old', '{REGION}', 'i-a', 'b-0', 'pending', 1)",
        f"INSERT INTO quota_calls VALUES ('{ACCOUNT}', '{REGION}', {now - 60}, 'r-old', 'b-0', 1)",
        f"INSERT INTO quota_calls VALUES ('{ACCOUNT}', '{REGION}', {now - 30}, 'r-old', 'b-0', 2)",
    ]
    for statement in statements:
        ledger_sql(location, statement)


@pytest.mark.parametrize("version", [1, 2])
@both_backends
def test_an_older_ledger_is_migrated_and_takes_the_new_facts(
    ledger_location: str, version: int
) -> None:
    """Opening a schema-1 or schema-2 ledger brings it to schema 3 without losing its rows;
    then a refusal gives its attempt's reservation back and is listed, a limit is kept per
    (account, region) (the last one read wins), and an instance may become `unreachable`."""
    assert schema.SCHEMA_VERSION == pg_schema.SCHEMA_VERSION == 3
    now = time.time()
    _older_schema(ledger_location, now, version)
    store = open_ledger(ledger_location)
    try:
        assert ledger_sql(ledger_location, "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]  # fmt: skip
        assert store.get_run("r-old").run_id == "r-old"
        assert store.command_ids("r-old") == {REGION: "c-1" if version == 1 else None}
        assert store.quota_used(ACCOUNT, now - 86_400)[REGION][0] == 2
        refusal = QuotaRefusal(
            account=ACCOUNT,
            region=REGION,
            at=now,
            code="Invocation.ExceedQuota",
            message="The invocation quota in the current region has been reached for today.",
            request_id="REQ-1",
            used=1,
            limit=5,
            explained=False,
            retry_at=now + 900,
            run_id="r-old",
            batch_id="b-0",
            attempt=2,
        )
        store.apply([ReleaseQuota(ACCOUNT, REGION, "r-old", "b-0", 2, refusal)])
        assert store.quota_used(ACCOUNT, now - 86_400)[REGION][0] == 1  # attempt 2 used nothing
        assert store.quota_refusals(ACCOUNT) == [refusal]
        store.apply([SetQuotaLimit(ACCOUNT, REGION, 5, "api", now)])
        store.apply([SetQuotaLimit(ACCOUNT, REGION, 7, "configured", now + 1)])
        assert store.quota_limits(ACCOUNT) == {REGION: (7, "configured", now + 1)}
        lost = InstanceRecord(
            "r-old", REGION, "i-a", "b-0", InstanceState.UNREACHABLE, error_code="ClientNotRunning"
        )
        store.apply([SetInstances("r-old", (lost,), now)])
        assert store.instance_counts("r-old") == {REGION: {"unreachable": 1}}
    finally:
        store.close()

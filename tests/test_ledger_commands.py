"""The ledger's commands (schema 2), on both backends: the migration that gives every batch a
CommandId, the CreateCommand claim (intent first, one holder at a time), recorded ids, and
which runs used a command."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from fanout.ledger import (
    BatchRecord,
    BatchState,
    ClaimCommand,
    CommandRecord,
    CommandState,
    DropCommand,
    LedgerStore,
    RecordCommand,
    RunRecord,
    RunState,
    SetRegionCommand,
    is_postgres_location,
    open_ledger,
    pg_schema,
    schema,
)
from tests.conftest import both_backends, ledger_sql

pytestmark = both_backends


def _command(
    owner: str = "host:1", ttl_s: float = 60.0, region: str = "cn-hangzhou"
) -> CommandRecord:
    return CommandRecord(
        account="acct",
        region=region,
        name="fanout-0123456789abcdef",
        content_hash="0123456789abcdef" * 4,
        command_type="RunShellScript",
        state=CommandState.CREATING,
        owner=owner,
        claimed_until=time.time() + ttl_s,
        run_id="r-1",
    )


def _claim(
    store: LedgerStore, record: CommandRecord, *, force: bool = False
) -> tuple[bool, CommandRecord]:
    (result,) = store.apply([ClaimCommand(record, time.time(), force=force)])
    assert isinstance(result, tuple)
    granted, row = result
    assert isinstance(row, CommandRecord)
    return bool(granted), row


@pytest.fixture
def store(ledger_location: str) -> Iterator[LedgerStore]:
    opened = open_ledger(ledger_location)
    yield opened
    opened.close()


def test_a_v1_ledger_gets_a_command_id_on_every_batch(ledger_location: str) -> None:
    """Migration 2 (both backends): a ledger made by schema 1 is brought to 2 on open; its
    batches take their run's CommandId and the commands table is there, empty."""
    migrations = (
        pg_schema.MIGRATIONS if is_postgres_location(ledger_location) else schema.MIGRATIONS
    )
    if not is_postgres_location(ledger_location):  # what SqliteLedger does before migrating
        ledger_sql(ledger_location, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    else:
        ledger_sql(ledger_location, "CREATE TABLE meta (key text PRIMARY KEY, value text)")
    for statement in migrations[0][1].split(";"):
        if statement.strip():
            ledger_sql(ledger_location, statement)
    ledger_sql(ledger_location, "INSERT INTO meta VALUES ('schema_version', '1')")
    ledger_sql(
        ledger_location,
        "INSERT INTO runs (run_id, created_at, updated_at, state, command_id, account, "
        "target_count, parameters, secret_keys, options) VALUES "
        "('r-old', 1, 1, 'finished', 'c-old', 'acct', 2, '{}', '[]', '{}')",
    )
    for seq, region in enumerate(("cn-hangzhou", "cn-beijing")):
        ledger_sql(
            ledger_location,
            "INSERT INTO batches (batch_id, run_id, region, seq, wave, instance_ids, "
            f"client_token, state, updated_at) VALUES ('b{seq}', 'r-old', '{region}', {seq}, 0, "
            f"'i-{seq}', 'tok-{seq}', 'done', 1)",
        )
    store = open_ledger(ledger_location)
    try:
        assert store.command_ids("r-old") == {"cn-beijing": "c-old", "cn-hangzhou": "c-old"}
        assert [b.command_id for b in store.load_batches("r-old")] == ["c-old", "c-old"]
        assert store.command_records() == []
        assert store.command_runs("cn-beijing", "c-old") == ["r-old"]
    finally:
        store.close()
    (version,) = ledger_sql(ledger_location, "SELECT value FROM meta WHERE key='schema_version'")
    # Migrated through 2 to the newest (3: issue 14's quota facts, tests/test_ledger_migration).
    assert int(version[0]) == 3 == schema.SCHEMA_VERSION == pg_schema.SCHEMA_VERSION


def test_claim_is_one_holder_at_a_time(store: LedgerStore) -> None:
    """The first claim is granted; another owner's waits while it runs, takes it once it
    expires or with force (its holder is gone); the holder may claim again."""
    granted, row = _claim(store, _command())
    assert granted
    assert (row.state, row.owner) == (CommandState.CREATING, "host:1")
    assert store.command_record("acct", "cn-hangzhou", row.name) == row
    assert _claim(store, _command(owner="host:2"))[0] is False
    assert _claim(store, _command(owner="host:1"))[0] is True
    assert _claim(store, _command(owner="host:2"), force=True)[0] is True
    assert _claim(store, _command(owner="host:3", ttl_s=-1.0))[0] is False  # host:2's runs
    expired = _command(owner="host:2", ttl_s=-1.0)
    assert _claim(store, expired)[0] is True  # host:2 itself, now with a deadline passed
    assert _claim(store, _command(owner="host:3"))[0] is True  # the expired claim is taken


def test_recorded_command_is_never_claimed_again_until_dropped(store: LedgerStore) -> None:
    """A recorded CommandId ends the claim; nobody claims over it (force included) until the
    command is dropped (pruned or found gone); created_at stays the first creation's."""
    record = _command()
    _claim(store, record)
    store.apply([RecordCommand(record, "c-abc", 1000.0)])
    row = store.command_record("acct", "cn-hangzhou", record.name)
    assert row is not None
    assert (row.state, row.command_id, row.owner, row.created_at) == (
        CommandState.CREATED,
        "c-abc",
        None,
        1000.0,
    )
    granted, current = _claim(store, _command(owner="host:9"), force=True)
    assert (granted, current.command_id) == (False, "c-abc")
    store.apply([DropCommand("acct", "cn-hangzhou", record.name, 1001.0)])
    assert store.command_records()[0].state is CommandState.DELETED
    assert _claim(store, _command(owner="host:9"))[0] is True
    store.apply([RecordCommand(record, "c-new", 1002.0)])
    again = store.command_record("acct", "cn-hangzhou", record.name)
    assert again is not None
    assert (again.command_id, again.created_at) == ("c-new", 1000.0)


def test_region_command_and_the_runs_that_use_it(store: LedgerStore) -> None:
    """SetRegionCommand gives one region's batches of a run their CommandId; command_runs
    lists the runs that invoke an id in a region."""
    now = time.time()
    run = RunRecord("r-1", now, now, RunState.CREATED, "fanout-x", "acct", 2)
    batches = [
        BatchRecord("b0", "r-1", "cn-hangzhou", 0, 0, ("i-0",), "t0", BatchState.PENDING),
        BatchRecord(
            "b1", "r-1", "cn-beijing", 1, 0, ("i-1",), "t1", BatchState.PENDING, command_id="c-bj"
        ),
    ]
    store.create_run(run, batches)
    assert store.command_ids("r-1") == {"cn-beijing": "c-bj", "cn-hangzhou": None}
    store.apply([SetRegionCommand("r-1", "cn-hangzhou", "c-hz", now)])
    assert store.command_ids("r-1") == {"cn-beijing": "c-bj", "cn-hangzhou": "c-hz"}
    assert [b.command_id for b in store.load_batches("r-1")] == ["c-hz", "c-bj"]
    assert store.command_runs("cn-hangzhou", "c-hz") == ["r-1"]
    assert store.command_runs("cn-beijing", "c-hz") == []


def test_concurrent_claims_grant_one(ledger_location: str) -> None:
    """Eight connections claiming one command at once: exactly one is granted."""
    stores = [open_ledger(ledger_location) for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def claim(index: int) -> None:
        barrier.wait()
        results.append(_claim(stores[index], _command(owner=f"host:{index}"))[0])

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for opened in stores:
        opened.close()
    assert sorted(results) == [False] * 7 + [True]

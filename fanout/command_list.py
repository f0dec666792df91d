"""`fanout commands`: the commands fanout created from scripts, per region, and `--prune`.

A region keeps 500 to 50 000 commands, by account (the create-a-command guide; the account's own
number is DescribeAccountAttributes `max-axt-command-count`), and every `--script` that changes
creates one more in each target region. The listing comes from the ledger (name, id, content
hash, when created, the runs that used it); the region's count and quota come from the API
when it can be asked. `prune` deletes, with DeleteCommand, the commands fanout created that no
open run uses — never a command the ledger does not record as fanout's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from fanout.clock import SYSTEM_CLOCK, Clock
from fanout.errors import CallError
from fanout.ledger import CommandRecord, CommandState, DropCommand, LedgerStore, RunState

if TYPE_CHECKING:
    from fanout.aliyun.client import EcsClient

__all__ = [
    "COMMAND_QUOTA_ATTRIBUTE",
    "FINAL_RUN_STATES",
    "PruneResult",
    "command_listing",
    "prune_commands",
    "region_counts",
]

# DescribeAccountAttributes: the commands an account may keep per region (create-a-command guide).
COMMAND_QUOTA_ATTRIBUTE = "max-axt-command-count"
# A run in one of these states sends nothing more, unless retried (a retry re-creates a
# script's command if it was pruned): its commands may go.
FINAL_RUN_STATES = frozenset({RunState.FINISHED, RunState.STOPPED})


def _iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC (as every --json document writes times)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What `--prune` did with one command."""

    region: str
    name: str
    command_id: str
    deleted: bool
    why: str  # "deleted", or why it was kept


def _entry(store: LedgerStore, record: CommandRecord) -> dict[str, object]:
    """One command of the listing, with the runs that invoked it (and those still open)."""
    runs = store.command_runs(record.region, record.command_id) if record.command_id else []
    open_runs = [r for r in runs if store.get_run(r).state not in FINAL_RUN_STATES]
    return {
        "name": record.name,
        "command_id": record.command_id,
        "content_hash": record.content_hash,
        "type": record.command_type,
        "state": record.state.value,
        "created_at": _iso(record.created_at),
        "created_by_run": record.run_id,
        "runs": runs,
        "open_runs": open_runs,
    }


def command_listing(store: LedgerStore, account: str | None) -> dict[str, object]:
    """The `fanout commands --json` document without the API's numbers: per region, the
    commands fanout created (every state; `deleted` ones were pruned or found gone)."""
    regions: dict[str, dict[str, object]] = {}
    for record in store.command_records(account):
        region = regions.setdefault(record.region, {"kept_by_fanout": 0, "commands": []})
        entries = region["commands"]
        assert isinstance(entries, list)
        entries.append({"account": record.account, **_entry(store, record)})
        if record.state is CommandState.CREATED:
            kept = region["kept_by_fanout"]
            assert isinstance(kept, int)
            region["kept_by_fanout"] = kept + 1
    return {"account": account, "regions": dict(sorted(regions.items()))}


async def region_counts(client: EcsClient, regions: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per region, how many commands the account keeps and may keep (what could be asked)."""
    counts: dict[str, dict[str, int]] = {}

    async def one(region: str) -> None:
        found: dict[str, int] = {}
        try:
            found["commands_in_region"] = await client.count_commands(region)
            values = await client.describe_account_attributes(region, [COMMAND_QUOTA_ATTRIBUTE])
            quota = next(iter(values.get(COMMAND_QUOTA_ATTRIBUTE, [])), "")
            if quota.isdigit():
                found["command_quota"] = int(quota)
        except CallError:
            pass  # the listing stands without the API's numbers
        counts[region] = found

    async with anyio.create_task_group() as tg:
        for region in regions:
            tg.start_soon(one, region)
    return counts


async def prune_commands(
    store: LedgerStore,
    client: EcsClient,
    *,
    account: str | None,
    clock: Clock = SYSTEM_CLOCK,
) -> list[PruneResult]:
    """DeleteCommand for every command fanout created that no open run uses."""
    results: list[PruneResult] = []
    records = await anyio.to_thread.run_sync(store.command_records, account)
    for record in records:
        if record.state is not CommandState.CREATED or not record.command_id:
            continue
        entry = await anyio.to_thread.run_sync(_entry, store, record)
        open_runs = entry["open_runs"]
        assert isinstance(open_runs, list)
        if open_runs:
            why = f"used by open run {', '.join(map(str, open_runs))}"
            results.append(PruneResult(record.region, record.name, record.command_id, False, why))
            continue
        results.append(await _delete(store, client, record, clock))
    return results


async def _delete(
    store: LedgerStore, client: EcsClient, record: CommandRecord, clock: Clock
) -> PruneResult:
    """DeleteCommand one command; a command already gone is recorded as deleted too."""
    assert record.command_id is not None
    try:
        await client.delete_command(record.region, record.command_id)
        why = "deleted"
    except CallError as exc:
        if not exc.code.startswith("InvalidCmdId.NotFound"):
            # InvalidStatus.CmdIdInUse: an invocation of it is still running (periodic, --no-wait)
            return PruneResult(record.region, record.name, record.command_id, False, exc.code)
        why = "already gone"
    drop = DropCommand(record.account, record.region, record.name, clock.time())
    await anyio.to_thread.run_sync(store.apply, [drop])
    return PruneResult(record.region, record.name, record.command_id, True, why)

"""`fanout commands [--prune]`: the commands fanout created from scripts, per region."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from fanout import eventloop
from fanout.aliyun.keys import account_key
from fanout.cli.exits import guarded
from fanout.cli.options import SpendFlags, credentials_for, ledger_for, spend_options
from fanout.command_list import PruneResult, command_listing, prune_commands, region_counts
from fanout.errors import CredentialsError
from fanout.runner import client_for

__all__ = ["COMMANDS"]


@click.command("commands")
@click.option(
    "--prune",
    is_flag=True,
    help="DeleteCommand every command fanout created that no open run uses.",
)
@click.option(
    "--account",
    help="Only this account's commands (default: every account; --prune: the credentials').",
)
@spend_options
@guarded
def commands_command(prune: bool, account: str | None, spend: SpendFlags) -> None:
    """List, per region, the commands fanout created from --script (name, id, content hash,
    when, the runs that used them), with the region's command count and quota when the API
    can tell; --prune deletes those no open run uses, never another tool's.

    \b
    A region keeps 500 to 50 000 commands (the account's max-axt-command-count): a script
    that changes often leaves one command per version in every region it ran in.
    \b
    fanout commands
    fanout commands --prune --json | jq '.pruned[] | select(.deleted)'
    """
    settings = spend.settings()
    store = ledger_for(settings)
    regions = sorted({r.region for r in store.command_records(account)})
    try:
        credentials = credentials_for(settings)
    except CredentialsError as exc:
        if prune:
            raise
        click.echo(f"fanout: warning: no region counts without credentials: {exc}", err=True)
        credentials = None
    counts: dict[str, dict[str, int]] = {}
    pruned: list[PruneResult] = []
    if credentials is not None:

        async def ask() -> None:
            async with client_for(settings, credentials) as client:
                if prune:  # only the account these credentials act for
                    mine = account or settings.account or account_key(credentials)
                    pruned.extend(await prune_commands(store, client, account=mine))
                counts.update(await region_counts(client, regions))

        eventloop.run(ask)
    doc: dict[str, Any] = command_listing(store, account)
    for region, found in counts.items():
        doc["regions"].setdefault(region, {"kept_by_fanout": 0, "commands": []}).update(found)
    if prune:
        doc["pruned"] = [_pruned(p) for p in pruned]
    click.echo(_json(doc) if spend.common.as_json else _text(doc))


def _pruned(result: PruneResult) -> dict[str, object]:
    return {
        "region": result.region,
        "name": result.name,
        "command_id": result.command_id,
        "deleted": result.deleted,
        "why": result.why,
    }


def _json(doc: Mapping[str, Any]) -> str:
    import json  # noqa: PLC0415 - only for --json

    return json.dumps(doc, indent=2)


def _text(doc: Mapping[str, Any]) -> str:
    """The listing as lines: a region header with its counts, then one line per command."""
    lines: list[str] = []
    for region, data in doc["regions"].items():
        quota = data.get("command_quota")
        total = data.get("commands_in_region")
        counts = f"{data.get('kept_by_fanout', 0)} kept by fanout"
        if total is not None:
            counts += f", {total} in the region" + (f" (quota {quota})" if quota else "")
        lines.append(f"{region}: {counts}")
        for c in data.get("commands", []):
            runs = ", ".join(c["runs"]) or "no run"
            lines.append(
                f"  {c['name']}  {c['command_id'] or '-'}  {c['state']}  {c['created_at'] or '-'}"
                f"  sha256 {c['content_hash'][:16]}  runs: {runs}"
            )
    for p in doc.get("pruned", []):
        verb = "deleted" if p["deleted"] else "kept"
        lines.append(f"{verb} {p['region']} {p['name']} {p['command_id']}: {p['why']}")
    return "\n".join(lines) or "no commands created by fanout in this ledger"


COMMANDS = (commands_command,)

"""The commands that only read the ledger for a glance: `status` (one run's progress) and `runs`
(the runs in the ledger). They load the ledger and the report's rendering, never the HTTP
client, the runner or the emulator: a person waits for them (issue 18: `fanout status` of a
1 000 000-instance run within 2 s)."""

from __future__ import annotations

import time

import click

from fanout.cli.exits import guarded
from fanout.cli.options import CommonFlags, common_options, reader_for, settings_from
from fanout.cli.views import Out, runs_text
from fanout.lease import lease_holder
from fanout.linked import kind_of, linked_entries
from fanout.report import iso, run_summary, status_document

__all__ = ["COMMANDS"]

# `runs --limit`: more runs than any ledger holds, bounded so the number stays a number SQLite
# can take.
_MAX_RUNS_LISTED = 1_000_000


@click.command("status")
@click.argument("run_id")
@common_options
@guarded
def status_command(run_id: str, common: CommonFlags) -> None:
    """Progress of one run: instances and batches by state, per region.

    \b
    fanout status r20261128-063512-a1b2c3 --json | jq .instances
    """
    store = reader_for(settings_from(common.config_file, ledger=common.ledger), run_id=run_id)
    assert store is not None
    run = store.get_run(run_id)
    doc = status_document(
        run,
        store.instance_counts(run_id),
        store.batch_counts(run_id),
        store.command_ids(run_id),
        lease_holder(run, time.time(), local=store.local),
        linked_entries(store, run_id),
    )
    Out(as_json=common.as_json).document(doc, run_summary(doc))


@click.command("runs")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(min=1, max=_MAX_RUNS_LISTED)
)
@common_options
@guarded
def runs_command(limit: int, common: CommonFlags) -> None:
    """List the runs in the ledger, newest first.

    \b
    fanout runs --limit 5
    fanout runs --json | jq -r '.[] | select(.state == "halted") | .run_id'
    """
    store = reader_for(settings_from(common.config_file, ledger=common.ledger))
    doc = [
        {
            "run_id": r.run_id,
            "state": r.state.value,
            "exit_code": r.exit_code,
            "command_id": r.command_id,
            "target_count": r.target_count,
            "created_at": iso(r.created_at),
            "parent_run_id": r.parent_run_id,
            "kind": kind_of(r),
        }
        for r in (store.list_runs(limit) if store is not None else [])
    ]
    Out(as_json=common.as_json).document(doc, runs_text(doc))


COMMANDS = (status_command, runs_command)

"""`fanout status`, `runs`, `report` and `quota`: read the ledger, spend nothing."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import click

from fanout.cli.app import Out, common_options, guarded, ledger_for, settings_from
from fanout.errors import ConfigError
from fanout.ledger import LedgerStore, RunRecord
from fanout.report import iso, render_report, roll_up, run_summary, status_document

__all__ = ["COMMANDS"]


@click.command("status")
@click.argument("run_id")
@common_options
@guarded
def status_command(run_id: str, **opts: Any) -> None:
    """Progress of one run: instances and batches by state, per region.

    \b
    fanout status r20261128-063512-a1b2c3 --json | jq .instances
    """
    store = ledger_for(settings_from(opts["config_file"], ledger=opts["ledger"]), run_id=run_id)
    run = store.get_run(run_id)
    doc = status_document(run, store.instance_counts(run_id), store.batch_counts(run_id))
    Out(as_json=opts["as_json"]).document(doc, run_summary(doc))


@click.command("runs")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@common_options
@guarded
def runs_command(limit: int, **opts: Any) -> None:
    """List the runs in the ledger, newest first.

    \b
    fanout runs --limit 5
    fanout runs --json | jq -r '.[] | select(.state == "halted") | .run_id'
    """
    store = ledger_for(settings_from(opts["config_file"], ledger=opts["ledger"]))
    runs = store.list_runs(limit)
    doc = [
        {
            "run_id": r.run_id,
            "state": r.state.value,
            "exit_code": r.exit_code,
            "command_id": r.command_id,
            "target_count": r.target_count,
            "created_at": iso(r.created_at),
            "parent_run_id": r.parent_run_id,
        }
        for r in runs
    ]
    lines = [
        f"{d['run_id']}  {d['state']:<11} exit={d['exit_code']!s:<4} {d['target_count']:>8} targets"
        f"  {d['command_id']}  {d['created_at']}"
        for d in doc
    ]
    Out(as_json=opts["as_json"]).document(doc, "\n".join(lines) or "no runs")


@click.command("report")
@click.argument("run_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@common_options
@guarded
def report_command(run_id: str, fmt: str, **opts: Any) -> None:
    """Per-instance results of a run (every target, with region, batch, state and codes).

    \b
    fanout report r20261128-063512-a1b2c3 --format csv > results.csv
    """
    store = ledger_for(settings_from(opts["config_file"], ledger=opts["ledger"]), run_id=run_id)
    run = store.get_run(run_id)
    retries = _retries_of(store, run_id)
    records = roll_up(
        store.iter_instances(run_id), (store.iter_instances(r.run_id) for r in retries)
    )
    click.echo(
        render_report(
            records,
            run,
            "json" if opts["as_json"] else fmt,
            {r.run_id: r.state for r in retries},
        ),
        nl=False,
    )


def _retries_of(store: LedgerStore, run_id: str) -> list[RunRecord]:
    """Every run linked to `run_id` by retry, transitively, oldest first."""
    runs = store.list_runs(limit=100_000)
    found: list[RunRecord] = []
    parents = {run_id}
    for run in sorted(runs, key=lambda r: r.created_at):
        if run.parent_run_id in parents:
            found.append(run)
            parents.add(run.run_id)
    return found


@click.command("quota")
@click.option("--account", help="Quota account (default: the access key id).")
@click.option("--daily-quota", type=int)
@click.option("--quota-reserve", type=int)
@common_options
@guarded
def quota_command(account: str | None, **opts: Any) -> None:
    """Calls used and left per region in the current quota day, and when capacity frees.

    \b
    fanout quota
    fanout quota --account LTAI5t... --json | jq '.regions["cn-hangzhou"].left'
    """
    settings = settings_from(
        opts["config_file"],
        ledger=opts["ledger"],
        account=account,
        daily_quota=opts["daily_quota"],
        quota_reserve=opts["quota_reserve"],
    )
    account = settings.account or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    if not account:
        raise ConfigError("--account: give the quota account (or set ALIBABA_CLOUD_ACCESS_KEY_ID)")
    store = ledger_for(settings)
    policy = settings.quota
    now = time.time()
    start = policy.window_start(now)
    regions = {}
    for region, (used, _oldest) in sorted(store.quota_used(account, start).items()):
        times = store.quota_times(account, region, start)
        regions[region] = {
            "used": used,
            "left": policy.left(used),
            "limit": policy.limit,
            "next_call_frees_at": iso(policy.frees_at(times, now))
            if policy.left(used) == 0
            else None,
        }
    doc = {
        "account": account,
        "mode": policy.mode.value,
        "daily_quota": policy.daily_quota,
        "reserve": policy.reserve,
        "regions": regions,
    }
    lines = [f"account {account}: {policy.mode.value} window, {policy.limit} calls/region/day"]
    lines += [
        f"  {r}: {d['used']} used, {d['left']} left"
        + (f", frees at {d['next_call_frees_at']}" if d["next_call_frees_at"] else "")
        for r, d in regions.items()
    ]
    if not regions:
        lines.append("  no calls counted in the current window")
    Out(as_json=opts["as_json"]).document(doc, "\n".join(lines))


def plan_text(doc: Mapping[str, Any]) -> str:
    """The plan as a human table."""
    dropped = (
        f", {doc['duplicates_dropped']} duplicates dropped" if doc["duplicates_dropped"] else ""
    )
    lines = [
        f"{doc['targets']} targets{dropped}, {doc['excluded']} excluded, {doc['calls_needed']} "
        f"InvokeCommand calls (batches of {doc['batch_size']}); nothing was spent",
        f"{'region':<20} {'targets':>8} {'excluded':>8} {'calls':>6} {'quota left':>10} "
        f"{'day':>4}  finishes",
    ]
    for region, r in doc["regions"].items():
        lines.append(
            f"{region:<20} {r['targets']:>8} {r['excluded']:>8} {r['calls_needed']:>6} "
            f"{r['quota_left_now']:>10} {r['days']:>4}  {r['finishes_at']}"
        )
        lines += [f"    excluded: {n} {reason}" for reason, n in r["excluded_by_reason"].items()]
    if doc["days"] > 1:
        short = [name for name, r in doc["regions"].items() if r["days"] > 1]
        lines.append(
            f"the daily quota is short in {', '.join(short)}: the last call goes on quota day "
            f"{doc['days']} ({doc['finishes_at']}); `fanout run --wait-for-quota` waits it out, "
            "or exit 4 and `fanout resume` each day"
        )
    return "\n".join(lines)


COMMANDS = (status_command, runs_command, report_command, quota_command)

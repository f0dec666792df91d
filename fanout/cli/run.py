"""`fanout plan`, `run`, `resume` and `demo`: the commands that can spend quota (plan never does)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import click

from fanout import eventloop
from fanout.aliyun.keys import account_key
from fanout.cli.consent import confirm_plan, linked_note, require_consent
from fanout.cli.exits import guarded
from fanout.cli.inputs import ParamInput, parse_not_after, read_rollout, secret_values
from fanout.cli.options import (
    RolloutFlags,
    SpendFlags,
    WatchFlags,
    credentials_for,
    ledger_for,
    param_options,
    reader_for,
    rollout_options,
    spend_options,
    watch_options,
)
from fanout.cli.views import Out, finish, plan_text
from fanout.clock import SYSTEM_CLOCK
from fanout.control import is_done
from fanout.dispatch import OPEN_BATCH_STATES
from fanout.errors import DeclinedError, ExitCode
from fanout.launch import linked_runs, prepare_run, preview_preflight, store_and_drive
from fanout.ledger import (
    NO_LEDGER,
    LedgerStore,
    check_ledger_location,
    default_ledger_location,
)
from fanout.logs import configure_logging
from fanout.plan_summary import plan_document
from fanout.report import iso, status_document
from fanout.request import ResumeRequest
from fanout.runner import Emit, RunOutcome, resume_run
from fanout.settings import Settings
from fanout.watch import Watchers, WatchOptions, check_watch_options
from fanout.waves import parse_max_errors

__all__ = ["COMMANDS"]


def checked_watch(watch: WatchFlags, settings: Settings) -> WatchOptions:
    """The run's metrics, notification and report-file options, checked (exit 2) before any
    call: a command calls this first."""
    return check_watch_options(
        WatchOptions(
            metrics_file=watch.metrics_file,
            metrics_port=watch.metrics_port,
            notify=watch.notify_urls or settings.notify or (),
            notify_format=watch.notify_format or settings.notify_format,
            html_report=watch.html_report,
        )
    )


def run_watched(
    watch: WatchOptions,
    settings: Settings,
    store: LedgerStore,
    out: Out,
    start: Callable[[Emit], Awaitable[RunOutcome]],
) -> RunOutcome:
    """Run `start(emit)` with the run's metrics, notifications and report file subscribed to
    its events beside the output; they are closed (last notification sent, last metrics
    written) before the command exits."""
    watchers = Watchers(
        watch,
        store,
        quota_limit=settings.quota.limit,
        quota_reserve=settings.quota.reserve,
    )
    if watchers.server is not None:
        click.echo(f"metrics: {watchers.server.url}", err=True)
    try:
        outcome: RunOutcome = eventloop.run(lambda: start(watchers.emit(out.event)))
    finally:
        watchers.close()
    return outcome


@click.command("run")
@rollout_options
@watch_options
@guarded
def run_command(rollout: RolloutFlags, spend: SpendFlags, watch: WatchFlags) -> None:
    """Plan and execute: invoke the command on every target, batch by batch.

    \b
    Secret parameter values: --param-file FILE (or -), --params-json @FILE, or
    FANOUT_PARAM_<NAME> variables, never --param (every user can read a command line).
    \b
    fanout run --script deploy.sh --targets hosts.txt --region cn-hangzhou --yes
    fanout run --command-name deploy --instance-id cn-beijing:i-abc --param version=1.2
    fanout run --command-id cn-hangzhou=c-aaa --command-id cn-beijing=c-bbb --targets hosts.txt
    fanout run --command-id c-xxx --targets hosts.txt --param-file secrets.env --yes
    """
    read = read_rollout(rollout, spend)
    request, settings, credentials = read.request, read.settings, read.credentials
    watching = checked_watch(watch, settings)
    out = Out(as_json=spend.common.as_json)
    parse_max_errors(request.max_errors, len(request.targets))
    ask = require_consent("run", yes=spend.yes)
    location = settings.ledger or default_ledger_location()
    check_ledger_location(location)  # before the preflight: a bad ledger costs no calls
    account = settings.account or account_key(credentials)
    # Only read to show the quota left: the ledger is created after the checks and the
    # preflight, so a refusal there (or "no") leaves no run and no file behind.
    confirm = (
        confirm_plan(request.spec.command_id, None, settings, account, note=linked_note(request))
        if ask
        else None
    )
    reader = reader_for(settings)
    prepared = eventloop.run(
        lambda: prepare_run(
            settings, credentials, request, reader=reader or NO_LEDGER, confirm=confirm
        ),
    )
    if reader is not None:
        reader.close()
    store = ledger_for(settings)
    for dup in read.duplicates:
        click.echo(f"{dup.location}: duplicate of {dup.first_location}, dropped", err=True)
    outcome = run_watched(
        watching,
        settings,
        store,
        out,
        lambda emit: store_and_drive(settings, credentials, store, prepared, emit=emit),
    )
    finish(outcome, out)


@click.command("plan")
@rollout_options
@guarded
def plan_command(rollout: RolloutFlags, spend: SpendFlags) -> None:
    """Everything `run` does before the first InvokeCommand; spends no quota.

    \b
    Parses and validates the targets, runs the read-only preflight (unless --no-preflight),
    and prints batches, InvokeCommand calls needed vs quota left per region, and the ETA.
    \b
    fanout plan --script deploy.sh --targets hosts.txt --region cn-hangzhou
    """
    read = read_rollout(rollout, spend)
    request, settings, credentials = read.request, read.settings, read.credentials
    account = settings.account or account_key(credentials)
    store = reader_for(settings) or NO_LEDGER  # plan spends nothing and creates nothing
    # The command is checked even with --no-preflight (one free DescribeCommands per region);
    # a script's command is looked up, never created.
    excluded, resolution, quotas = eventloop.run(
        lambda: preview_preflight(
            settings,
            credentials,
            request.targets,
            request.spec,
            source=request.source,
            store=store,
            instances=request.preflight,
        ),
    )
    now = time.time()
    start = settings.quota.window_start(now)
    used = store.quota_used(account, start) if account else {}
    doc = plan_document(
        request.targets,
        excluded,
        settings,
        used,
        duplicates=len(read.duplicates),
        now=now,
        quotas=quotas,
        waves=request.waves,
        wave_order=request.wave_order,
    )
    if resolution is not None:
        doc["command"] = resolution.summary()
    Out(as_json=spend.common.as_json).document(doc, plan_text(doc))


def _warn_takeover(run_id: str, store: LedgerStore) -> None:
    """`resume --force`: say on stderr whose live lease is being taken, and what follows."""
    run = store.get_run(run_id)
    if run.lease_owner is None or (run.lease_until or 0.0) <= time.time():
        return
    click.echo(
        f"fanout: warning: --force: taking run {run_id} over from {run.lease_owner} "
        f"(its lease runs until {iso(run.lease_until or 0.0)}). If that runner is still "
        "alive it must be stopped: its calls in flight are re-sent here with the same "
        "ClientToken (no instance runs twice) and, on a PostgreSQL ledger, it is refused "
        "any new call.",
        err=True,
    )


def _with_param_options(func: Callable[..., None]) -> Callable[..., None]:
    """`--param`, `--params-json`, `--param-file`: the secret values of a stored run again."""
    for option in reversed(param_options()):
        func = option(func)
    return func


@click.command("resume")
@click.argument("run_id")
@_with_param_options
@click.option(
    "--force",
    is_flag=True,
    help="Take the run over even while another runner holds its lease (warns first).",
)
@click.option("--not-after", help="End of this leg's change window (as for run).")
@click.option(
    "--max-errors",
    help="A new run-wide budget, N or P% of the run's targets, from now on (kept for later "
    "resumes). The run's earlier failures count: a run halted by its budget needs a larger one.",
)
@click.option(
    "--wave-max-failures",
    help="A new per-wave budget, N or P% of each wave, from now on (kept for later resumes).",
)
@spend_options
@watch_options
@guarded
def resume_command(
    run_id: str,
    params: tuple[str, ...],
    params_json: str | None,
    param_file: str | None,
    force: bool,
    not_after: str | None,
    max_errors: str | None,
    wave_max_failures: str | None,
    spend: SpendFlags,
    watch: WatchFlags,
) -> None:
    """Continue a run that was interrupted, halted by quota, or crashed.

    One runner drives a run at a time: while another holds its lease (renewed as it runs),
    resume exits 2 naming the holder and until when; --force takes it over regardless.
    A run with secret parameters needs their values again (never stored; checked against the
    run's fingerprints): --param-file, --params-json @FILE or FANOUT_PARAM_<NAME>.

    \b
    fanout resume r20261128-063512-a1b2c3 --yes
    fanout resume r20261128-063512-a1b2c3 --param-file secrets.env --yes
    fanout resume r20261128-063512-a1b2c3 --max-errors 2% --yes   (after exit 3, a look)
    """
    parse_max_errors(max_errors, 1)
    parse_max_errors(wave_max_failures, 1, flag="--wave-max-failures")
    ask = require_consent("resume", yes=spend.yes)
    settings = spend.settings()
    watching = checked_watch(watch, settings)
    out = Out(as_json=spend.common.as_json)
    request = ResumeRequest(
        run_id=run_id,
        secret_params=secret_values(ParamInput(params, params_json, param_file), os.environ),
        wait=spend.wait,
        wait_for_quota=spend.wait_for_quota,
        force_lease=force,
        not_after=parse_not_after(not_after, time.time()),
        max_errors=max_errors,
        wave_max_failures=wave_max_failures,
    )
    store = ledger_for(settings, run_id=run_id)
    _nothing_to_resume(store, run_id, out)
    credentials = credentials_for(settings)
    if request.force_lease:
        _warn_takeover(run_id, store)
    if ask:
        _confirm_resume(store, run_id)
    outcome = run_watched(
        watching,
        settings,
        store,
        out,
        lambda emit: resume_run(
            settings,
            credentials,
            store,
            request,
            emit=emit,
            linked=linked_runs(settings, credentials, store, SYSTEM_CLOCK, handle_signals=True),
        ),
    )
    finish(outcome, out)


def _nothing_to_resume(store: LedgerStore, run_id: str, out: Out) -> None:
    """A run that finished (or was stopped) with every batch closed: say so as its `end`,
    send nothing, and exit with the run's own exit code (a script sees its outcome)."""
    run = store.get_run(run_id)
    if not is_done(store, run) or run.exit_code is None:
        return
    doc = status_document(run, store.instance_counts(run_id), store.batch_counts(run_id))
    retry = f"; `fanout retry {run_id}` tries again what did not succeed" if run.exit_code else ""
    message = f"run {run_id} is {run.state.value}: nothing to resume, nothing sent{retry}"
    outcome = RunOutcome(run_id, run.state, ExitCode(run.exit_code), message)
    data = {"run_id": run_id, "state": run.state.value, "exit_code": run.exit_code}
    out.event("end", {**data, "instances": doc["instances"], "message": message, "quota": {}})
    finish(outcome, out)


def _confirm_resume(store: LedgerStore, run_id: str) -> None:
    """Ask on the terminal before a resume sends the batches still open."""
    left = [b for b in store.load_batches(run_id) if b.state in OPEN_BATCH_STATES]
    instances = sum(len(b.instance_ids) for b in left)
    regions = sorted({b.region for b in left})
    click.echo(
        f"Resume {run_id}: {len(left)} InvokeCommand call{'s' if len(left) != 1 else ''} "
        f"({instances} instances) not yet accepted, in {', '.join(regions) or 'no region'}.",
        err=True,
    )
    if not click.confirm("Go ahead?", default=False, err=True):
        raise DeclinedError("answered no: nothing sent")


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo's ledger and report (default: fanout-demo in the temp folder).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Run events as JSON lines; the last is the status."
)
@click.option("--clean", is_flag=True, help="Remove the demo's ledger and report, run nothing.")
@guarded
def demo_command(folder: Path | None, as_json: bool, clean: bool) -> None:
    """Run a 10 000-instance, 3-region rollout of a deploy.sh in waves against the built-in
    emulator: the script is created as a command in each region (--script), as on the real cloud.

    \b
    The fleet has a few stopped, classic-network and agent-offline instances (excluded by
    preflight) and some failing executions, as a real fleet does. Exits 0 when every target
    is accounted for in the ledger; the run itself finishes with problems (its exit would be 1).
    \b
    The ledger and the run's HTML report are written to --dir (default: fanout-demo in the
    temporary directory, cleared of the previous demo first); both paths are printed.
    \b
    fanout demo
    fanout demo --dir ./demo --json | tail -n 1 | jq .instances
    fanout demo --clean
    """
    from fanout.demo import clean_demo, run_demo  # noqa: PLC0415 - the emulator: demo only

    configure_logging("warning")
    if clean:
        removed = clean_demo(folder)
        for path in removed:
            click.echo(f"removed {path}", err=True)
        if not removed:
            click.echo("no demo files to remove", err=True)
        return
    out = Out(as_json=as_json)
    result = eventloop.run(lambda: run_demo(folder, emit=out.event))
    counts = result.status["instances"]
    assert isinstance(counts, dict)
    complete = sum(counts.values()) == result.status["target_count"]
    if as_json:  # one more JSON line, so that all of stdout is JSON lines
        out.event(
            "status", dict(result.status, ledger=str(result.ledger), report=str(result.report))
        )
    else:
        click.echo(result.summary)
        click.echo(
            f"\nscript: {result.ledger.parent / 'deploy.sh'} (the same on the real cloud: "
            "fanout run --script deploy.sh --targets hosts.txt)",
            err=True,
        )
        click.echo(f"ledger: {result.ledger}", err=True)
        click.echo(f"report: {result.report}", err=True)
        click.echo(f"  fanout status {result.outcome.run_id} --ledger {result.ledger}", err=True)
        click.echo(f"  fanout report {result.outcome.run_id} --ledger {result.ledger}", err=True)
        dir_flag = f" --dir {folder}" if folder is not None else ""
        click.echo(f"  fanout demo --clean{dir_flag}", err=True)
    code = 0 if complete and result.outcome.exit_code <= 1 else int(result.outcome.exit_code)
    if code == 0 and result.outcome.exit_code and not as_json:
        click.echo(
            f"demo: exit 0 - the run's exit {int(result.outcome.exit_code)} comes from the "
            "failures the demo fleet stages; every target is accounted for in the ledger",
            err=True,
        )
    sys.exit(code)


COMMANDS = (plan_command, run_command, resume_command, demo_command)

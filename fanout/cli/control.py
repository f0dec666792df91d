"""The commands that act on stored runs: `report` and `quota` read the ledger and spend nothing;
`retry` starts a linked run; `stop` stops one, from any host. (`status` and `runs`, which only
read the ledger, are in `fanout.cli.status`.)"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from fanout import eventloop
from fanout.aliyun.credentials import CredentialSource
from fanout.aliyun.keys import account_key
from fanout.cli.consent import confirm_plan, linked_note, require_consent
from fanout.cli.exits import fail, guarded
from fanout.cli.inputs import ParamInput, checked_regions, secret_values
from fanout.cli.options import (
    SECONDS,
    CommonFlags,
    SpendFlags,
    WatchFlags,
    common_options,
    credentials_for,
    ledger_for,
    param_options,
    reader_for,
    settings_from,
    spend_options,
    watch_options,
)
from fanout.cli.quota_view import quota_document, quota_regions
from fanout.cli.run import checked_watch, run_watched
from fanout.cli.views import Out, finish, nothing_linked, quota_text, stop_text
from fanout.control import (
    RETRY_CHOICES,
    StopOptions,
    StopResult,
    is_done,
    retry_targets,
    run_source,
    run_spec,
    stop_run,
)
from fanout.errors import ConfigError, CredentialsError, ExitCode
from fanout.launch import start_run
from fanout.ledger import NO_LEDGER, LedgerStore
from fanout.linked import stored_source
from fanout.quota import RegionQuotas
from fanout.report import (
    REPORTED_STATES,
    ReportFilter,
    render_report,
    roll_up,
)
from fanout.report_io import (
    check_output_file,
    html_report,
    linked_sections,
    retries_of,
    write_file,
)
from fanout.request import RunRequest
from fanout.runner import account_quotas, client_for
from fanout.settings import Settings

__all__ = ["COMMANDS"]


@click.command("report")
@click.argument("run_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "html"]),
    default="table",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report to this file (replaced whole) instead of stdout.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice((*REPORTED_STATES, "pending")),
    help="Only instances in this state (repeatable).",
)
@click.option("--region", "regions", multiple=True, help="Only this region (repeatable).")
@click.option(
    "--wave",
    "waves",
    multiple=True,
    type=click.IntRange(min=1),
    help="Only this wave, from 1 (repeatable).",
)
@click.option(
    "--error-code",
    "error_codes",
    multiple=True,
    help="Only instances with this error code (repeatable).",
)
@common_options
@guarded
def report_command(
    run_id: str,
    fmt: str,
    output: Path | None,
    states: tuple[str, ...],
    regions: tuple[str, ...],
    waves: tuple[int, ...],
    error_codes: tuple[str, ...],
    common: CommonFlags,
) -> None:
    """Per-instance results of a run and its retries (every target, with region, wave, batch,
    state, codes and reason).

    \b
    fanout report r20261128-063512-a1b2c3 --format csv > results.csv
    fanout report r20261128-063512-a1b2c3 --state failed --region cn-hangzhou
    fanout report r20261128-063512-a1b2c3 --format html -o report.html
    \b
    The HTML page is one self-contained file (nothing is fetched when it is opened): timeline,
    breakdowns, failures grouped by output, and the instance table to sort and filter.
    """
    if output is not None:
        check_output_file(output, "--output")
    store = reader_for(settings_from(common.config_file, ledger=common.ledger), run_id=run_id)
    assert store is not None
    only = ReportFilter(
        frozenset(states), frozenset(regions), frozenset(waves), frozenset(error_codes)
    )
    fmt = "json" if common.as_json else fmt
    if fmt == "html":
        if only:
            raise ConfigError(
                "--state/--region/--wave/--error-code filter table, csv and json reports; "
                "the HTML page filters in the browser"
            )
        text = html_report(store, run_id)
    else:
        text = _text_report(store, run_id, fmt, only)
    if output is None:
        click.echo(text, nl=False)
        return
    write_file(output, text)
    click.echo(f"report: {output}", err=True)


def _text_report(store: LedgerStore, run_id: str, fmt: str, only: ReportFilter) -> str:
    """The table, JSON or CSV report of a run with its retries rolled up."""
    run = store.get_run(run_id)
    retries = retries_of(store, run_id)
    records = roll_up(
        store.iter_instances(run_id), (store.iter_instances(r.run_id) for r in retries)
    )
    batches = {r.run_id: store.load_batches(r.run_id) for r in (run, *retries)}
    waves = {b.batch_id: b.wave + 1 for listed in batches.values() for b in listed}
    own = {(b.region, iid): b.wave + 1 for b in batches[run.run_id] for iid in b.instance_ids}
    states = {r.run_id: r.state for r in retries}
    return render_report(
        records,
        run,
        fmt,
        states,
        waves,
        only,
        store.command_ids(run_id),
        instance_waves=own,
        linked=linked_sections(store, run_id),
    )


@click.command("quota")
@click.option("--account", help="Quota account (default: the access key id).")
@click.option(
    "--region",
    "regions",
    multiple=True,
    help="Show only this region (repeatable; default: every region the ledger knows for the "
    "account, and the configured region).",
)
@click.option("--daily-quota", type=int, help="Override the account's limit (as run does).")
@click.option("--quota-reserve", type=int, help="Calls per region left for others.")
@click.option("--endpoint", help="API endpoint URL for every region (e.g. the emulator).")
@click.option("--profile", help="Credentials profile (aliyun CLI / credentials.ini).")
@click.option("--ca-bundle", type=click.Path(dir_okay=False), help="Extra trusted CA (PEM).")
@click.option("--offline", is_flag=True, help="Only what the ledger holds: no API call.")
@common_options
@guarded
def quota_command(
    account: str | None,
    regions: tuple[str, ...],
    daily_quota: int | None,
    quota_reserve: int | None,
    endpoint: str | None,
    profile: str | None,
    ca_bundle: str | None,
    offline: bool,
    common: CommonFlags,
) -> None:
    """Per region: the account's daily limit as the API reports it, fanout's own use in the
    window, the last refusal, and when capacity frees.

    \b
    The limit is read live (DescribeAccountAttributes max-axt-invocation-daily, free) for
    the --region given, else every region the ledger knows (and the configured region);
    --offline shows the last one read.
    \b
    fanout quota --region cn-hangzhou
    fanout quota --json | jq '.regions["cn-hangzhou"].last_refusal'
    """
    regions = checked_regions(regions)
    settings = settings_from(
        common.config_file,
        ledger=common.ledger,
        account=account,
        daily_quota=daily_quota,
        quota_reserve=quota_reserve,
        endpoint=endpoint,
        profile=profile,
        ca_bundle=ca_bundle,
    )
    credentials = None if offline else _optional_credentials(settings)
    account = (
        settings.account
        or (account_key(credentials) if credentials is not None else None)
        or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    )
    if not account:
        raise ConfigError("--account: give the quota account (or set ALIBABA_CLOUD_ACCESS_KEY_ID)")
    store = reader_for(settings) or NO_LEDGER  # quota reads; it creates no ledger
    now = time.time()
    if regions:
        known = set(regions)
    else:
        known = quota_regions(store, account, settings, now)
        if settings.region:
            known.add(checked_regions((settings.region,))[0])
    live = None
    if credentials is not None and known:

        async def read() -> RegionQuotas:
            async with client_for(settings, credentials) as client:
                return await account_quotas(settings, client, sorted(known))

        live = eventloop.run(read)
    doc = quota_document(store, account, settings, sorted(known), live, now)
    Out(as_json=common.as_json).document(doc, quota_text(doc))


def _optional_credentials(settings: Settings) -> CredentialSource | None:
    """Credentials when the chain has some (the limits are then read live), else None."""
    try:
        return credentials_for(settings)
    except CredentialsError:
        return None


def _text(options: Mapping[str, object], name: str) -> str | None:
    """A string option stored with a run."""
    value = options.get(name)
    return value if isinstance(value, str) else None


def inherited_pacing(
    settings: Settings, spend: SpendFlags, options: Mapping[str, object]
) -> Settings:
    """`settings` with the original run's batch size, concurrency and rate where no flag
    set them (a retry paces like the run it retries)."""
    given = {"concurrency": spend.concurrency, "rate_per_s": spend.rate_per_s}
    changes: dict[str, Any] = {}
    for name in ("batch_size", "concurrency", "region_concurrency", "rate_per_s"):
        value = options.get(name)
        if given.get(name) is None and isinstance(value, int | float):
            changes[name] = value
    return dataclasses.replace(settings, **changes)


def _with_param_options(func: Callable[..., None]) -> Callable[..., None]:
    """`--param`, `--params-json`, `--param-file`: the secret values of the run again."""
    for option in reversed(param_options()):
        func = option(func)
    return func


@click.command("retry")
@click.argument("run_id")
@click.option(
    "--only",
    default=",".join(RETRY_CHOICES),
    show_default=True,
    help="Which instances: any of failed, unreachable, unknown, not-invoked (comma-separated).",
)
@_with_param_options
@click.option("--waves", help="Cumulative wave sizes for the retry run (default: the run's).")
@click.option("--max-errors", help="Halt the retry after N or P% failed (default: the run's).")
@click.option("--wave-max-failures", help="Per-wave failure budget (default: the run's).")
@click.option(
    "--count-unreachable",
    is_flag=True,
    help="Count unreachable instances against --max-errors (default: as the run did).",
)
@click.option("--no-preflight", is_flag=True, help="Skip the Describe checks.")
@spend_options
@watch_options
@guarded
def retry_command(
    run_id: str,
    only: str,
    params: tuple[str, ...],
    params_json: str | None,
    param_file: str | None,
    waves: str | None,
    max_errors: str | None,
    wave_max_failures: str | None,
    count_unreachable: bool,
    no_preflight: bool,
    spend: SpendFlags,
    watch: WatchFlags,
) -> None:
    """A new attempt, as a linked run, for the instances that did not succeed.

    \b
    Same command and parameters; the instances are chosen by their reported state and
    re-batched. Waves, budgets and pacing are the original run's unless given here, and so
    are its wave check and its rollback on halt. The
    retry's results roll up into the original run's report. Secret parameter values are given
    again (--param-file, --params-json @FILE or FANOUT_PARAM_<NAME>) and must be the ones the
    run started with.
    \b
    fanout retry r20261128-063512-a1b2c3 --only failed --yes
    fanout retry r20261128-063512-a1b2c3 --param-file secrets.env --yes
    """
    ask = require_consent("retry", yes=spend.yes)
    settings = spend.settings()
    watching = checked_watch(watch, settings)
    out = Out(as_json=spend.common.as_json)
    secrets = secret_values(ParamInput(params, params_json, param_file), os.environ)
    store = ledger_for(settings, run_id=run_id)
    parent = store.get_run(run_id)
    settings = inherited_pacing(settings, spend, parent.options)
    spec = run_spec(parent, secrets)
    chosen = {part.strip() for part in only.split(",") if part.strip()}
    targets = retry_targets(store, parent, chosen, now=time.time())
    if not targets:
        nothing_linked(out, run_id, f"nothing to retry in {run_id} ({only}): nothing sent")
        return
    credentials = credentials_for(settings)
    wait = parent.options.get("wait") if spend.wait is None else spend.wait
    request = RunRequest(
        targets=targets,
        spec=spec,
        source=run_source(parent),
        secret_keys=parent.secret_keys,
        waves=waves if waves is not None else _text(parent.options, "waves"),
        wave_order=_text(parent.options, "wave_order") or "spread",
        max_errors=max_errors if max_errors is not None else _text(parent.options, "max_errors"),
        wave_max_failures=(
            wave_max_failures
            if wave_max_failures is not None
            else _text(parent.options, "wave_max_failures")
        ),
        wave_wait_s=float(parent.options.get("wave_wait_s") or 0.0),  # type: ignore[arg-type]
        pause_after_wave=bool(parent.options.get("pause_after_wave")),
        preflight=not no_preflight,
        wait=bool(wait),
        wait_for_quota=spend.wait_for_quota,
        strict=bool(parent.options.get("strict")),
        parent_run_id=run_id,
        allow_short_secret=True,  # the parent's values, checked against its fingerprints
        count_unreachable=count_unreachable or bool(parent.options.get("count_unreachable")),
        wave_check=stored_source(parent, "wave_check"),
        on_halt=stored_source(parent, "on_halt"),
        on_halt_scope=_text(parent.options, "on_halt_scope") or "succeeded",
    )
    account = settings.account or account_key(credentials)
    note = linked_note(request)
    confirm = confirm_plan(spec.command_id, store, settings, account, note=note) if ask else None
    outcome = run_watched(
        watching,
        settings,
        store,
        out,
        lambda emit: start_run(settings, credentials, store, request, emit=emit, confirm=confirm),
    )
    finish(outcome, out)


@click.command("stop")
@click.argument("run_id")
@click.option(
    "--wait-s",
    default=30.0,
    show_default=True,
    type=SECONDS,
    help="How long to wait for the runner to let go of the run (0 to 86400).",
)
@click.option(
    "--stop-timeout",
    "stop_timeout_s",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to keep retrying StopInvocation on transient errors.",
)
@click.option(
    "--collect-timeout",
    "collect_timeout_s",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for the stopped instances' final states (--no-wait: none).",
)
@spend_options
@guarded
def stop_command(
    run_id: str,
    wait_s: float,
    stop_timeout_s: float,
    collect_timeout_s: float,
    spend: SpendFlags,
) -> None:
    """Stop a run: no more dispatching, StopInvocation for running invocations, their final
    states collected, the run marked stopped.

    \b
    Works on a run driven by another process or host (the request goes through the ledger).
    Exits 0 when everything asked was stopped; 6 naming the invocations StopInvocation could
    not reach before --stop-timeout.
    fanout stop r20261128-063512-a1b2c3
    """
    settings = spend.settings()
    store = ledger_for(settings, run_id=run_id)
    run = store.get_run(run_id)
    out = Out(as_json=spend.common.as_json)
    if is_done(store, run):  # nothing in flight, nothing to dispatch: nothing is sent
        doc = _stop_document(StopResult(run_id, run.state, 0, 0, runner_released=True))
        out.document(
            {**doc, "nothing_to_stop": True},
            f"run {run_id} is already {run.state.value}: nothing to stop, nothing sent",
        )
        return
    credentials = credentials_for(settings)

    options = StopOptions(
        wait_s=wait_s,
        stop_timeout_s=stop_timeout_s,
        collect=spend.wait is not False,
        collect_timeout_s=collect_timeout_s,
        max_output_bytes=settings.max_output_bytes,
    )

    async def stop() -> StopResult:
        async with client_for(settings, credentials) as client:
            return await stop_run(store, client, run_id, options)

    result = eventloop.run(stop)
    doc = _stop_document(result)
    out.document({**doc, "nothing_to_stop": False}, stop_text(doc))
    if result.not_stopped:
        fail(
            f"StopInvocation did not get through for {len(result.not_stopped)} invocation(s) "
            f"within --stop-timeout: {', '.join(result.not_stopped)}; run `fanout stop` again",
            ExitCode.FATAL_API,
        )


def _stop_document(result: StopResult) -> dict[str, object]:
    """The `fanout stop --json` document of what was done."""
    return {
        "run_id": result.run_id,
        "state": result.state.value,
        "stop_calls": result.stop_calls,
        "instances_stopped": result.instances_stopped,
        "runner_released": result.runner_released,
        "not_stopped": list(result.not_stopped),
        "still_running": result.still_running,
    }


COMMANDS = (
    report_command,
    quota_command,
    retry_command,
    stop_command,
)

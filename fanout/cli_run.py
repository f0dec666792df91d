"""`fanout plan`, `run` and `resume`: the commands that can spend quota (plan never does)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from fanout.aliyun.credentials import Credentials, load_credentials
from fanout.aliyun.endpoints import KNOWN_REGIONS
from fanout.cli import Out, common_options, guarded, ledger_for, refuse, settings_from
from fanout.errors import ConfigError, TargetError
from fanout.invoke import CommandSpec
from fanout.logs import configure_logging, register_secret
from fanout.params import parse_params
from fanout.plan import estimate_region, make_plan, parse_waves
from fanout.report import iso
from fanout.runner import RunOutcome, RunRequest, preview_preflight, resume_run, start_run
from fanout.secrets import is_secret_key
from fanout.settings import Settings
from fanout.targets import Target, TargetList, merge_targets, parse_instance_ids, parse_target_text
from fanout.waves import parse_max_errors

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])


def _spend_options(func: F) -> F:
    """Options of every command that can spend quota."""
    for option in reversed(
        [
            click.option(
                "--endpoint", help="API endpoint URL for every region (e.g. the emulator)."
            ),
            click.option(
                "--ca-bundle", type=click.Path(dir_okay=False), help="Extra trusted CA (PEM)."
            ),
            click.option("--profile", help="Credentials profile (aliyun CLI / credentials.ini)."),
            click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation."),
            click.option(
                "--wait/--no-wait",
                default=None,
                help="Follow every instance to its result (default) or only submit.",
            ),
            click.option(
                "--wait-for-quota",
                is_flag=True,
                help="Sleep until quota frees instead of exiting 4.",
            ),
            click.option(
                "--concurrency", type=int, help="InvokeCommand calls in flight (all regions)."
            ),
            click.option(
                "--rate",
                "rate_per_s",
                type=float,
                help="Calls per second per region (0: no limit).",
            ),
            click.option("--daily-quota", type=int, help="InvokeCommand calls per region per day."),
            click.option("--quota-reserve", type=int, help="Calls per region left for others."),
        ]
    ):
        func = option(func)
    return common_options(func)


def _run_options(func: F) -> F:
    """Targets, command and batching options of `plan` and `run`."""
    for option in reversed(
        [
            click.option(
                "--command-id", required=True, help="The Cloud Assistant command (c-...)."
            ),
            click.option("--targets", "targets_file", help="Target file, or - for stdin."),
            click.option(
                "--instance-id", "instance_ids", multiple=True, help="A target (repeatable)."
            ),
            click.option("--tag", "tags", multiple=True, help="KEY=VALUE tag filter (repeatable)."),
            click.option(
                "--region", "regions", multiple=True, help="Region for bare ids / tag queries."
            ),
            click.option(
                "--param", "params", multiple=True, help="KEY=VALUE parameter (repeatable)."
            ),
            click.option("--params-json", help="Parameters as a JSON object, or @FILE."),
            click.option(
                "--secret-param",
                "secret_params",
                multiple=True,
                help="A parameter whose value is secret (never logged or stored).",
            ),
            click.option(
                "--timed", is_flag=True, default=None, help="Periodic (needs --frequency)."
            ),
            click.option("--frequency", help="Schedule: cron with seconds, rate(...) or at(...)."),
            click.option(
                "--repeat-mode",
                type=click.Choice(["Once", "Period", "NextRebootOnly", "EveryReboot", "DryRun"]),
            ),
            click.option(
                "--timeout", "timeout_s", type=click.IntRange(min=10), help="Seconds (>= 10)."
            ),
            click.option("--username", help="User to run as on the instance."),
            click.option("--working-dir", help="Working directory on the instance."),
            click.option(
                "--batch-size", type=int, help="Instances per call (default 50, max 100)."
            ),
            click.option("--waves", help="Cumulative wave sizes, e.g. 1,10%,50%,100%."),
            click.option("--max-errors", help="Halt after N or P% failed instances."),
            click.option("--pause-after-wave", is_flag=True, help="Stop after each wave (exit 5)."),
            click.option("--no-preflight", is_flag=True, help="Skip the Describe checks."),
        ]
    ):
        func = option(func)
    return _spend_options(func)


def _read_targets(
    targets_file: str | None,
    instance_ids: Sequence[str],
    regions: Sequence[str],
    settings: Settings,
) -> TargetList:
    """Every target from the file/stdin and the flags, validated and deduplicated."""
    default_region = regions[0] if len(regions) == 1 else settings.region
    lists = []
    if targets_file:
        if targets_file == "-":
            data, source = sys.stdin.buffer.read(), "<stdin>"
        else:
            try:
                data, source = Path(targets_file).read_bytes(), targets_file
            except OSError as exc:
                raise TargetError(targets_file, f"cannot read ({exc.strerror})") from exc
        lists.append(
            parse_target_text(
                data, source=source, default_region=default_region, known_regions=KNOWN_REGIONS
            )
        )
    if instance_ids:
        lists.append(
            parse_instance_ids(
                instance_ids, default_region=default_region, known_regions=KNOWN_REGIONS
            )
        )
    if not lists:
        raise TargetError("targets", "no targets: give --targets FILE, --instance-id or --tag")
    return merge_targets(*lists)


def _read_params(
    params: Sequence[str], params_json: str | None, secret_params: Sequence[str]
) -> tuple[dict[str, str] | None, tuple[str, ...]]:
    """Parameters from --param / --params-json, and the keys whose values are secret."""
    text = params_json
    if params_json is not None and params_json.startswith("@"):
        try:
            text = Path(params_json[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            msg = f"--params-json {params_json}: cannot read ({exc.strerror})"
            raise ConfigError(msg) from exc
    result = parse_params(params, text)
    unknown = [k for k in secret_params if k not in (result or {})]
    if unknown:
        raise ConfigError(f"--secret-param {unknown[0]!r}: no such parameter given")
    secret_keys = tuple(sorted({*secret_params, *(k for k in result or {} if is_secret_key(k))}))
    return result, secret_keys


def _spec(command_id: str, params: dict[str, str] | None, opts: dict[str, Any]) -> CommandSpec:
    """The command spec, with the client-side schedule checks."""
    if opts["timed"] and not opts["frequency"]:
        raise ConfigError("--timed needs --frequency (spec S7, MissingParam.Frequency)")
    return CommandSpec(
        command_id=command_id,
        parameters=params,
        timed=opts["timed"],
        frequency=opts["frequency"],
        repeat_mode=opts["repeat_mode"],
        timeout_s=opts["timeout_s"],
        username=opts["username"],
        working_dir=opts["working_dir"],
    )


def _settings(opts: dict[str, Any]) -> Settings:
    """Settings from config/env with this command's flags on top."""
    return settings_from(
        opts.get("config_file"),
        ledger=opts.get("ledger"),
        endpoint=opts.get("endpoint"),
        ca_bundle=opts.get("ca_bundle"),
        profile=opts.get("profile"),
        batch_size=opts.get("batch_size"),
        concurrency=opts.get("concurrency"),
        rate_per_s=opts.get("rate_per_s"),
        daily_quota=opts.get("daily_quota"),
        quota_reserve=opts.get("quota_reserve"),
    )


def _credentials(settings: Settings) -> Credentials:
    """Credentials from the chain, registered for redaction."""
    credentials = load_credentials(profile=settings.profile)
    register_secret(credentials.access_key_secret)
    register_secret(credentials.security_token)
    return credentials


def _refuse_unimplemented(opts: dict[str, Any]) -> None:
    """Options whose behaviour is not built yet are refused, never ignored."""
    if opts.get("tags"):
        refuse("--tag")


def _confirm(opts: dict[str, Any], targets: Sequence[Target], batches: int) -> None:
    """Ask on a TTY before quota is spent (never without one; --yes skips)."""
    if opts.get("yes") or not (sys.stdin.isatty() and sys.stderr.isatty()):
        return
    regions = len({t.region for t in targets})
    click.confirm(
        f"Invoke {opts['command_id']} on {len(targets)} instances in {regions} regions "
        f"({batches} InvokeCommand calls)?",
        abort=True,
        err=True,
    )


def _finish(outcome: RunOutcome, out: Out) -> None:
    """Print the last line and exit with the run's code."""
    if not out.json:
        click.echo(outcome.message, err=True)
    sys.exit(int(outcome.exit_code))


@click.command("run")
@_run_options
@guarded
def run_command(**opts: Any) -> None:
    """Plan and execute: invoke the command on every target, batch by batch.

    \b
    fanout run --command-id c-xxx --targets hosts.txt --region cn-hangzhou --yes
    fanout run --command-id c-xxx --instance-id cn-beijing:i-abc --param version=1.2
    """
    configure_logging(opts["log_level"])
    _refuse_unimplemented(opts)
    settings = _settings(opts)
    out = Out(as_json=opts["as_json"])
    target_list = _read_targets(
        opts["targets_file"], opts["instance_ids"], opts["regions"], settings
    )
    params, secret_keys = _read_params(opts["params"], opts["params_json"], opts["secret_params"])
    for key in secret_keys:
        register_secret((params or {}).get(key))
    spec = _spec(opts["command_id"], params, opts)
    parse_waves(opts["waves"], len(target_list.targets))
    parse_max_errors(opts["max_errors"], len(target_list.targets))
    credentials = _credentials(settings)
    store = ledger_for(settings)
    plan = make_plan("preview", target_list.targets, batch_size=settings.batch_size)
    _confirm(opts, target_list.targets, len(plan.batches))
    for dup in target_list.duplicates:
        click.echo(f"{dup.location}: duplicate of {dup.first_location}, dropped", err=True)
    request = RunRequest(
        targets=target_list.targets,
        spec=spec,
        secret_keys=secret_keys,
        waves=opts["waves"],
        max_errors=opts["max_errors"],
        pause_after_wave=opts["pause_after_wave"],
        preflight=not opts["no_preflight"],
        wait=opts["wait"] is not False,
        wait_for_quota=opts["wait_for_quota"],
    )
    outcome = anyio.run(
        lambda: start_run(settings, credentials, store, request, emit=out.event), backend="asyncio"
    )
    _finish(outcome, out)


def _plan_document(
    targets: Sequence[Target],
    excluded: dict[tuple[str, str], str],
    settings: Settings,
    used: dict[str, tuple[int, float]],
    duplicates: int,
) -> dict[str, Any]:
    """The `fanout plan` document: per region targets, exclusions, calls, quota and ETA."""
    kept = [t for t in targets if (t.region, t.instance_id) not in excluded]
    plan = make_plan("plan", kept, batch_size=settings.batch_size)
    policy = settings.quota
    regions: dict[str, Any] = {}
    now = time.time()
    for region in sorted({t.region for t in targets}):
        reasons: dict[str, int] = {}
        for (r, _iid), reason in excluded.items():
            if r == region:
                reasons[reason] = reasons.get(reason, 0) + 1
        calls = sum(1 for b in plan.batches if b.region == region)
        left = policy.left(used.get(region, (0, 0.0))[0])
        eta = estimate_region(
            region,
            calls,
            quota_left_now=left,
            daily_quota=policy.daily_quota,
            reserve=policy.reserve,
            rate_per_s=settings.rate_per_s or None,
            call_latency_s=0.2,
            concurrency=settings.region_concurrency,
        )
        regions[region] = {
            "targets": sum(1 for t in targets if t.region == region),
            "excluded": sum(reasons.values()),
            "excluded_by_reason": reasons,
            "batches": calls,
            "calls_needed": calls,
            "quota_left_now": left,
            "days": eta.days,
            "finish_after_s": round(eta.finish_after_s, 1),
            "finishes_at": iso(now + eta.finish_after_s),
        }
    return {
        "targets": len(targets),
        "duplicates_dropped": duplicates,
        "batch_size": settings.batch_size,
        "calls_needed": len(plan.batches),
        "excluded": len(excluded),
        "regions": regions,
        "spends_quota": False,
    }


def _plan_text(doc: dict[str, Any]) -> str:
    """The plan as a human table."""
    lines = [
        f"{doc['targets']} targets, {doc['excluded']} excluded, {doc['calls_needed']} InvokeCommand "
        f"calls (batches of {doc['batch_size']}); nothing was spent",
        f"{'region':<20} {'targets':>8} {'excluded':>8} {'calls':>6} {'quota left':>10} "
        f"{'days':>4}  finishes",
    ]
    for region, r in doc["regions"].items():
        lines.append(
            f"{region:<20} {r['targets']:>8} {r['excluded']:>8} {r['calls_needed']:>6} "
            f"{r['quota_left_now']:>10} {r['days']:>4}  {r['finishes_at']}"
        )
        lines += [f"    excluded: {n} {reason}" for reason, n in r["excluded_by_reason"].items()]
    return "\n".join(lines)


@click.command("plan")
@_run_options
@guarded
def plan_command(**opts: Any) -> None:
    """Everything `run` does before the first InvokeCommand; spends no quota.

    \b
    Parses and validates the targets, runs the read-only preflight (unless --no-preflight),
    and prints batches, InvokeCommand calls needed vs quota left per region, and the ETA.
    \b
    fanout plan --command-id c-xxx --targets hosts.txt --region cn-hangzhou
    """
    configure_logging(opts["log_level"])
    _refuse_unimplemented(opts)
    settings = _settings(opts)
    target_list = _read_targets(
        opts["targets_file"], opts["instance_ids"], opts["regions"], settings
    )
    params, _secret_keys = _read_params(opts["params"], opts["params_json"], opts["secret_params"])
    _spec(opts["command_id"], params, opts)
    parse_waves(opts["waves"], len(target_list.targets))
    excluded: dict[tuple[str, str], str] = {}
    account = settings.account
    if not opts["no_preflight"]:
        credentials = _credentials(settings)
        account = account or credentials.access_key_id
        excluded = anyio.run(
            lambda: preview_preflight(settings, credentials, target_list.targets), backend="asyncio"
        )
    store = ledger_for(settings)
    used = store.quota_used(account, settings.quota.window_start(time.time())) if account else {}
    doc = _plan_document(target_list.targets, excluded, settings, used, len(target_list.duplicates))
    Out(as_json=opts["as_json"]).document(doc, _plan_text(doc))


@click.command("resume")
@click.argument("run_id")
@click.option("--param", "params", multiple=True, help="KEY=VALUE for each secret parameter.")
@_spend_options
@guarded
def resume_command(run_id: str, **opts: Any) -> None:
    """Continue a run that was interrupted, halted by quota, or crashed.

    \b
    fanout resume r20261128-063512-a1b2c3 --yes
    """
    configure_logging(opts["log_level"])
    settings = _settings(opts)
    out = Out(as_json=opts["as_json"])
    secret_params, _ = _read_params(opts["params"], None, ())
    for value in (secret_params or {}).values():
        register_secret(value)
    credentials = _credentials(settings)
    store = ledger_for(settings)
    outcome = anyio.run(
        lambda: resume_run(
            settings,
            credentials,
            store,
            run_id,
            secret_params=secret_params or {},
            emit=out.event,
            wait_for_quota=opts["wait_for_quota"],
            wait=opts["wait"],
        ),
        backend="asyncio",
    )
    _finish(outcome, out)


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the demo ledger (default: a new temporary folder).",
)
@click.option("--json", "as_json", is_flag=True, help="Run events as JSON lines, then the status.")
@guarded
def demo_command(folder: Path | None, as_json: bool) -> None:
    """Run a 10 000-instance, 3-region rollout in waves against the built-in emulator.

    \b
    The fleet has a few stopped, classic-network and agent-offline instances (excluded by
    preflight) and some failing executions, as a real fleet does. Exits 0 when every target
    is accounted for in the ledger; the run itself finishes with problems (its exit would be 1).
    """
    from fanout.demo import run_demo  # noqa: PLC0415 - the emulator is only loaded for the demo

    configure_logging("warning")
    out = Out(as_json=as_json)
    result = anyio.run(lambda: run_demo(folder, emit=out.event), backend="asyncio")
    counts = result.status["instances"]
    assert isinstance(counts, dict)
    complete = sum(counts.values()) == result.status["target_count"]
    out.document(dict(result.status, ledger=str(result.ledger)), result.summary)
    if not as_json:
        click.echo(f"\nledger: {result.ledger}", err=True)
        click.echo(f"  fanout status {result.outcome.run_id} --ledger {result.ledger}", err=True)
        click.echo(f"  fanout report {result.outcome.run_id} --ledger {result.ledger}", err=True)
    sys.exit(0 if complete and result.outcome.exit_code <= 1 else int(result.outcome.exit_code))


COMMANDS = (plan_command, run_command, resume_command, demo_command)

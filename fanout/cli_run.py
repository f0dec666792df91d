"""`fanout plan`, `run` and `resume`: the commands that can spend quota (plan never does)."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials, load_credentials
from fanout.aliyun.endpoints import KNOWN_REGIONS
from fanout.cli import Out, common_options, guarded, ledger_for, settings_from
from fanout.errors import ConfigError, TargetError
from fanout.ledger import LedgerStore
from fanout.logs import configure_logging, register_secret
from fanout.params import parse_params
from fanout.plan import Batch, estimate_region, make_plan, parse_waves
from fanout.preflight import resolve_tags
from fanout.redaction import is_secret_key
from fanout.report import iso
from fanout.request import ResumeRequest, RunRequest
from fanout.runner import (
    RunOutcome,
    client_for,
    preview_preflight,
    resume_run,
    start_run,
)
from fanout.settings import Settings, config_file_location, load_rollout
from fanout.tally import confirm_summary
from fanout.targets import Target, TargetList, merge_targets, parse_instance_ids, parse_target_text
from fanout.validate import check_schedule
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
            click.option("--command-id", help="The Cloud Assistant command (c-...); required."),
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
    *,
    tagged: bool = False,
) -> TargetList:
    """Every target from the file/stdin and the flags, validated and deduplicated.

    With `tagged` (a `--tag` query follows) having no explicit target is fine.
    """
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
        if tagged:
            return TargetList(())
        raise TargetError("targets", "no targets: give --targets FILE, --instance-id or --tag")
    return merge_targets(*lists)


# DescribeInstances takes at most 20 Tag.N filters (aliyun-api-facts, DescribeInstances).
_MAX_TAG_FILTERS = 20


def _parse_tags(items: Sequence[str]) -> dict[str, str]:
    """`--tag KEY=VALUE` items as one filter (every pair must match)."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value:
            raise ConfigError(f"--tag {item!r}: expected KEY=VALUE (both non-empty)")
        if key in tags:
            raise ConfigError(f"--tag {key!r}: given twice (every tag must match: use one value)")
        tags[key] = value
    if len(tags) > _MAX_TAG_FILTERS:
        raise ConfigError(
            f"--tag: {len(tags)} tags, DescribeInstances takes at most {_MAX_TAG_FILTERS}"
        )
    return tags


def _tag_regions(regions: Sequence[str], settings: Settings) -> tuple[str, ...]:
    """The regions a tag query searches: every --region, else the configured region."""
    chosen = tuple(dict.fromkeys(regions)) or ((settings.region,) if settings.region else ())
    if not chosen:
        raise ConfigError("--tag needs --region (repeatable): the regions to search")
    for region in chosen:  # validated like a target's region (TargetError names --region)
        parse_instance_ids((), default_region=region, known_regions=KNOWN_REGIONS)
    return chosen


def _with_tagged(
    explicit: TargetList,
    tags: dict[str, str],
    regions: Sequence[str],
    settings: Settings,
    credentials: Credentials,
) -> TargetList:
    """The explicit targets, then every instance carrying all `tags` in `regions` (duplicates dropped)."""
    if not tags:
        return explicit

    async def resolve() -> list[Target]:
        async with client_for(settings, credentials) as client:
            return await resolve_tags(client, regions, tags)

    found = anyio.run(resolve, backend="asyncio")
    label = ",".join(f"{k}={v}" for k, v in tags.items())
    if found:
        text = "".join(f"{t.region},{t.instance_id}\n" for t in found)
        tagged = parse_target_text(
            text, source=f"--tag {label}", default_region=None, known_regions=KNOWN_REGIONS
        )
        explicit = merge_targets(explicit, tagged)
    if not explicit.targets:
        raise TargetError("--tag", f"no instance in {', '.join(regions)} carries {label}")
    return explicit


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
    """The command spec, with the client-side schedule checks (spec S7)."""
    spec = CommandSpec(
        command_id=command_id,
        parameters=params,
        timed=opts["timed"],
        frequency=opts["frequency"],
        repeat_mode=opts["repeat_mode"],
        timeout_s=opts["timeout_s"],
        username=opts["username"],
        working_dir=opts["working_dir"],
    )
    check_schedule(spec, time.time())
    return spec


def _inputs(
    opts: dict[str, Any], settings: Settings
) -> tuple[TargetList, CommandSpec, tuple[str, ...], Credentials]:
    """What `plan` and `run` read before any InvokeCommand: targets (tag queries resolved),
    the command spec with its offline checks, the secret parameter keys, and credentials.

    Everything that needs no API call is refused first; a tag query is the only call made here.
    """
    tags = _parse_tags(opts["tags"])
    tag_regions = _tag_regions(opts["regions"], settings) if tags else ()
    explicit = _read_targets(
        opts["targets_file"], opts["instance_ids"], opts["regions"], settings, tagged=bool(tags)
    )
    params, secret_keys = _read_params(opts["params"], opts["params_json"], opts["secret_params"])
    for key in secret_keys:
        register_secret((params or {}).get(key))
    spec = _spec(opts["command_id"], params, opts)
    parse_waves(opts["waves"], len(explicit.targets))  # its syntax, before any call
    credentials = _credentials(settings)
    target_list = _with_tagged(explicit, tags, tag_regions, settings, credentials)
    parse_waves(opts["waves"], len(target_list.targets))
    return target_list, spec, secret_keys, credentials


def _apply_rollout(opts: dict[str, Any]) -> None:
    """Fill the flags not given on the command line from the config file's `[rollout]` table."""
    config = opts.get("config_file") or config_file_location(os.environ)
    for key, value in load_rollout(config).items():
        name = "targets_file" if key == "targets" else key
        if name == "params":
            from_flags = dict(item.partition("=")[::2] for item in opts["params"])
            opts["params"] = tuple(f"{k}={v}" for k, v in {**value, **from_flags}.items())
        elif opts.get(name) in (None, (), False):
            opts[name] = tuple(value) if isinstance(value, list) else value
    if not opts.get("command_id"):
        msg = "--command-id is required (or command_id in the config file's [rollout] table)"
        raise ConfigError(msg)


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


def _confirm(
    opts: dict[str, Any],
    batches: Sequence[Batch],
    store: LedgerStore,
    settings: Settings,
    account: str,
) -> None:
    """Show the plan and ask on a TTY before quota is spent (never without one; --yes skips)."""
    if opts.get("yes") or not (sys.stdin.isatty() and sys.stderr.isatty()):
        return
    used = store.quota_used(account, settings.quota.window_start(time.time()))
    left = {b.region: settings.quota.left(used.get(b.region, (0, 0.0))[0]) for b in batches}
    calls = [(b.region, len(b.instance_ids)) for b in batches]
    click.echo(confirm_summary(opts["command_id"], calls, left), err=True)
    click.confirm("Go ahead?", abort=True, err=True)


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
    _apply_rollout(opts)
    settings = _settings(opts)
    out = Out(as_json=opts["as_json"])
    target_list, spec, secret_keys, credentials = _inputs(opts, settings)
    parse_max_errors(opts["max_errors"], len(target_list.targets))
    store = ledger_for(settings)
    plan = make_plan("preview", target_list.targets, batch_size=settings.batch_size)
    _confirm(opts, plan.batches, store, settings, settings.account or credentials.access_key_id)
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


# Seconds one InvokeCommand takes on the wire, for the ETA when --rate does not bound it.
_PLAN_CALL_LATENCY_S = 0.2


def _plan_document(
    targets: Sequence[Target],
    excluded: dict[tuple[str, str], str],
    settings: Settings,
    used: dict[str, tuple[int, float]],
    duplicates: int,
) -> dict[str, Any]:
    """The `fanout plan` document: per region targets, exclusions, calls, quota and ETA.

    The ETA spends what is left of the quota now, then `daily_quota - quota_reserve` per quota
    day: `days` is the quota day on which a region's last call goes (1: within the current one).
    """
    kept = [t for t in targets if (t.region, t.instance_id) not in excluded]
    plan = make_plan("plan", kept, batch_size=settings.batch_size)
    policy = settings.quota
    per_region = Counter(t.region for t in targets)
    calls_by_region = Counter(b.region for b in plan.batches)
    reasons_by_region: dict[str, Counter[str]] = {}
    for (region, _iid), reason in excluded.items():
        reasons_by_region.setdefault(region, Counter())[reason] += 1
    regions: dict[str, Any] = {}
    now = time.time()
    for region in sorted(per_region):
        reasons = dict(reasons_by_region.get(region, Counter()))
        calls = calls_by_region[region]
        left = policy.left(used.get(region, (0, 0.0))[0])
        eta = estimate_region(
            region,
            calls,
            quota_left_now=left,
            daily_quota=policy.daily_quota,
            reserve=policy.reserve,
            rate_per_s=settings.rate_per_s or None,
            call_latency_s=_PLAN_CALL_LATENCY_S,
            concurrency=settings.region_concurrency,
        )
        regions[region] = {
            "targets": per_region[region],
            "excluded": sum(reasons.values()),
            "excluded_by_reason": reasons,
            "batches": calls,
            "calls_needed": calls,
            "quota_left_now": left,
            "calls_now": min(calls, left),
            "days": eta.days,
            "finish_after_s": round(eta.finish_after_s, 1),
            "finishes_at": iso(now + eta.finish_after_s),
        }
    last = max(regions.values(), key=lambda r: r["finish_after_s"], default=None)
    return {
        "targets": len(targets),
        "duplicates_dropped": duplicates,
        "batch_size": settings.batch_size,
        "calls_needed": len(plan.batches),
        "excluded": len(excluded),
        "days": max((r["days"] for r in regions.values()), default=0),
        "finishes_at": last["finishes_at"] if last else None,
        "quota_mode": policy.mode.value,
        "regions": regions,
        "spends_quota": False,
    }


def _plan_text(doc: dict[str, Any]) -> str:
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
    _apply_rollout(opts)
    settings = _settings(opts)
    target_list, spec, _secret_keys, credentials = _inputs(opts, settings)
    account = settings.account or credentials.access_key_id
    # The command is checked even with --no-preflight (one free DescribeCommands per region).
    excluded = anyio.run(
        lambda: preview_preflight(
            settings, credentials, target_list.targets, spec, instances=not opts["no_preflight"]
        ),
        backend="asyncio",
    )
    store = ledger_for(settings)
    used = store.quota_used(account, settings.quota.window_start(time.time())) if account else {}
    doc = _plan_document(target_list.targets, excluded, settings, used, len(target_list.duplicates))
    Out(as_json=opts["as_json"]).document(doc, _plan_text(doc))


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


@click.command("resume")
@click.argument("run_id")
@click.option("--param", "params", multiple=True, help="KEY=VALUE for each secret parameter.")
@click.option(
    "--force",
    is_flag=True,
    help="Take the run over even while another runner holds its lease (warns first).",
)
@_spend_options
@guarded
def resume_command(run_id: str, **opts: Any) -> None:
    """Continue a run that was interrupted, halted by quota, or crashed.

    One runner drives a run at a time: while another holds its lease (renewed as it runs),
    resume exits 2 naming the holder and until when; --force takes it over regardless.

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
    store = ledger_for(settings, run_id=run_id)
    if opts["force"]:
        _warn_takeover(run_id, store)
    outcome = anyio.run(
        lambda: resume_run(
            settings,
            credentials,
            store,
            ResumeRequest(
                run_id,
                secret_params or {},
                wait=opts["wait"],
                wait_for_quota=opts["wait_for_quota"],
                force_lease=opts["force"],
            ),
            emit=out.event,
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
@click.option(
    "--json", "as_json", is_flag=True, help="Run events as JSON lines; the last is the status."
)
@guarded
def demo_command(folder: Path | None, as_json: bool) -> None:
    """Run a 10 000-instance, 3-region rollout in waves against the built-in emulator.

    \b
    The fleet has a few stopped, classic-network and agent-offline instances (excluded by
    preflight) and some failing executions, as a real fleet does. Exits 0 when every target
    is accounted for in the ledger; the run itself finishes with problems (its exit would be 1).
    \b
    fanout demo
    fanout demo --dir ./demo --json | tail -n 1 | jq .instances
    """
    from fanout.demo import run_demo  # noqa: PLC0415 - the emulator is only loaded for the demo

    configure_logging("warning")
    out = Out(as_json=as_json)
    result = anyio.run(lambda: run_demo(folder, emit=out.event), backend="asyncio")
    counts = result.status["instances"]
    assert isinstance(counts, dict)
    complete = sum(counts.values()) == result.status["target_count"]
    if as_json:  # one more JSON line, so that all of stdout is JSON lines
        out.event("status", dict(result.status, ledger=str(result.ledger)))
    else:
        click.echo(result.summary)
        click.echo(f"\nledger: {result.ledger}", err=True)
        click.echo(f"  fanout status {result.outcome.run_id} --ledger {result.ledger}", err=True)
        click.echo(f"  fanout report {result.outcome.run_id} --ledger {result.ledger}", err=True)
    sys.exit(0 if complete and result.outcome.exit_code <= 1 else int(result.outcome.exit_code))


COMMANDS = (plan_command, run_command, resume_command, demo_command)

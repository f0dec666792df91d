"""`fanout emulator`: serve the emulator until SIGINT/SIGTERM.

The first stdout line is exactly `fanout emulator listening on http://127.0.0.1:PORT`
(`https://` with `--tls`, followed by `certificate: PATH`), flushed, so scripts can read it.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path

import click

from fanout.emulator.actions import ACTIONS
from fanout.emulator.commands import CommandCatalog
from fanout.emulator.config import (
    AGENT_FAILURE_CODES,
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_CONTENT_LIMIT_BYTES,
    STOP_MODES,
    THROTTLE_CODES,
    EmulatorConfig,
)
from fanout.emulator.fleet import Fleet
from fanout.emulator.server import Emulator, EmulatorStartError

__all__ = ["emulator_command", "fleet_listing"]

_FRACTION = click.FloatRange(0.0, 1.0)


def _split_list(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    if not items:
        raise click.BadParameter("give at least one comma-separated name")
    return items


def _exec_seconds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    low_text, sep, high_text = value.partition(":")
    try:
        low = float(low_text)
        high = float(high_text) if sep else low
    except ValueError:
        raise click.BadParameter("expected MIN:MAX in seconds, e.g. 1:5") from None
    if not 0 <= low <= high:
        raise click.BadParameter("expected 0 <= MIN <= MAX")
    return low, high


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port (0 = a free port).",
)
@click.option(
    "--regions",
    default="cn-hangzhou",
    show_default=True,
    callback=_split_list,
    help="Comma-separated region ids.",
)
@click.option("--instances-per-region", type=click.IntRange(0), default=100, show_default=True)
@click.option(
    "--fleet",
    "fleet_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON list of instances (replaces generation).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for ids, executions and faults."
)
@click.option("--stopped-fraction", type=_FRACTION, default=0.0, show_default=True)
@click.option("--classic-fraction", type=_FRACTION, default=0.0, show_default=True)
@click.option("--agent-offline-fraction", type=_FRACTION, default=0.0, show_default=True)
@click.option(
    "--exec-seconds",
    default="0:0",
    show_default=True,
    callback=_exec_seconds,
    help="Simulated run time MIN:MAX.",
)
@click.option("--exec-failure-fraction", type=_FRACTION, default=0.0, show_default=True)
@click.option(
    "--agent-failure",
    "agent_failure_items",
    multiple=True,
    help="CODE=F: that share of executions is never delivered, Aborted with CODE "
    f"({', '.join(AGENT_FAILURE_CODES)}); repeatable.",
)
@click.option(
    "--output-bytes",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Simulated output per execution (the API keeps the last 24 KB, Dropped counts the rest).",
)
@click.option(
    "--stop-mode",
    type=click.Choice(STOP_MODES),
    default="cancel-pending",
    show_default=True,
    help="StopInvocation: cancel pending executions only (the API reference), or also terminate "
    "running ones.",
)
@click.option(
    "--deny-action",
    "denied_actions",
    multiple=True,
    help="Answer this action with Forbidden.RAM, as for a RAM user without ecs:ACTION (repeatable).",
)
@click.option("--latency-ms", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option(
    "--error-rate",
    type=_FRACTION,
    default=0.0,
    show_default=True,
    help="InternalError.Dispatch (500).",
)
@click.option(
    "--throttle-rate",
    type=_FRACTION,
    default=0.0,
    show_default=True,
    help="Share of (region, action) windows throttled whole (HTTP 400, --throttle-code).",
)
@click.option(
    "--drop-rate",
    type=_FRACTION,
    default=0.0,
    show_default=True,
    help="Close the connection; request not applied.",
)
@click.option(
    "--accept-then-drop-rate",
    type=_FRACTION,
    default=0.0,
    show_default=True,
    help="Apply InvokeCommand/StopInvocation, then lose the response.",
)
@click.option(
    "--fault-actions",
    callback=_split_list,
    help="Comma-separated actions the faults apply to (default: all).",
)
@click.option(
    "--qps",
    "qps_items",
    multiple=True,
    help="Calls per second per region and action: N for every region, or REGION=N (repeatable).",
)
@click.option(
    "--throttle-window-s",
    type=click.FloatRange(0, min_open=True),
    default=60.0,
    show_default=True,
    help="Throttling window: --qps and --throttle-rate count per window (ECS: one minute).",
)
@click.option(
    "--throttle-code",
    type=click.Choice(THROTTLE_CODES),
    default="Throttling",
    show_default=True,
    help="The Code of a throttled answer (HTTP 400).",
)
@click.option(
    "--throttle-retry-after",
    is_flag=True,
    help="Send x-acs-retry-after (ms to the window's end) with throttled answers.",
)
@click.option(
    "--daily-quota",
    type=click.IntRange(0),
    default=5000,
    show_default=True,
    help="InvokeCommand calls per region per day.",
)
@click.option(
    "--max-instances-per-call", type=click.IntRange(1, 100), default=50, show_default=True
)
@click.option(
    "--content-limit-bytes",
    type=click.IntRange(1),
    default=DEMO_CONTENT_LIMIT_BYTES,
    show_default=True,
    help="Base64 of a command's content plus its parameters, at most (18 KB: the reference).",
)
@click.option("--access-key-id", default=DEMO_ACCESS_KEY_ID, show_default=True)
@click.option(
    "--access-key-secret",
    default=DEMO_ACCESS_KEY_SECRET,
    help="Secret of --access-key-id (default: the demo secret).",
)
@click.option(
    "--sts-token", "sts_tokens", multiple=True, help="An accepted SecurityToken (repeatable)."
)
@click.option(
    "--max-clock-skew-s", type=click.FloatRange(0, min_open=True), default=900.0, show_default=True
)
@click.option(
    "--time-scale",
    type=click.FloatRange(0, 1_000_000, min_open=True),
    default=1.0,
    show_default=True,
    help="Emulator seconds per wall-clock second: executions, quota days, throttle windows "
    "and answer timestamps run N times faster (fanout simulate shares one clock instead).",
)
@click.option("--tls", is_flag=True, help="Serve HTTPS with a self-signed certificate.")
@click.option(
    "--list",
    "list_only",
    is_flag=True,
    help="Print the fleet these options make (instances with status, network, agent, tags) "
    "and each region's commands, then exit without serving.",
)
@click.option(
    "--ram-role",
    help="Serve the instance metadata service (/latest/...) with this RAM role's STS credentials.",
)
@click.option(
    "--sts-ttl-s",
    type=click.FloatRange(0, min_open=True),
    default=21600.0,
    show_default=True,
    help="Lifetime of the metadata service's STS credentials.",
)
@click.option(
    "--result-retention-s",
    type=click.FloatRange(0, min_open=True),
    default=28 * 86400.0,
    show_default=True,
    help="How long invocation results are kept (the API: 4 weeks).",
)
@click.option(
    "--result-retention-records",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Invocation records kept per region (the API: 100 000).",
)
def emulator_command(
    *,
    list_only: bool,
    regions: tuple[str, ...],
    fault_actions: tuple[str, ...] | None,
    access_key_id: str,
    access_key_secret: str,
    sts_tokens: tuple[str, ...],
    qps_items: tuple[str, ...],
    agent_failure_items: tuple[str, ...],
    denied_actions: tuple[str, ...],
    **options: object,
) -> None:
    """Serve the local ECS API emulator until interrupted.

    \b
    fanout emulator --port 0 --regions cn-hangzhou,cn-beijing --instances-per-region 1000
    fanout emulator --port 8080 --exec-failure-fraction 0.05 --throttle-rate 0.1 --tls
    fanout emulator --daily-quota 5 --deny-action DescribeInvocations --ram-role demo
    fanout emulator --time-scale 3600 --exec-seconds 600:3600 --daily-quota 50
    \b
    The demo fleet and commands (deterministic from --seed and the fleet options):
      fanout emulator --regions cn-hangzhou,cn-beijing --instances-per-region 5 --list
    prints every instance (id, status, network, agent, OS, tags env=prod|staging,
    role=web|db|cache, fanout:index=N) and each region's commands; the first column is a
    target line:  ... --list | grep -v '^#' | cut -f1 > hosts.txt.  Each region has its own
    CommandIds (as on the real cloud): the demo commands are named fanout-demo (a greeting)
    and fanout-demo-deploy (parameters name, version) in every region; public commands
    (ACS-ECS-Demo...) are listed by DescribeCommands with --provider AlibabaCloud. So:
      fanout run --command-name fanout-demo --tag role=web --region cn-hangzhou --yes
      fanout run --script deploy.sh --tag env=prod --region cn-hangzhou --region cn-beijing
    While it runs, GET /_emulator/state shows per region the calls by action, the quota used
    and the commands (with CreateCommand's), and every invocation with its parameters.
    """
    if list_only:
        click.echo(fleet_listing(_listing_config(regions, options)), nl=False)
        return
    qps, region_qps = _parse_qps(qps_items)
    agent_failures = _parse_fractions(agent_failure_items, "--agent-failure")
    unknown = sorted(set(denied_actions) - set(ACTIONS))
    if unknown:  # a misspelt action would otherwise deny nothing, silently
        raise click.UsageError(
            f"--deny-action {', '.join(unknown)}: not an action the emulator answers "
            f"(known: {', '.join(sorted(ACTIONS))})"
        )
    try:
        config = EmulatorConfig(
            regions=regions,
            qps=qps,
            region_qps=region_qps,
            fault_actions=None if fault_actions is None else frozenset(fault_actions),
            access_keys={access_key_id: access_key_secret},
            sts_tokens=frozenset(sts_tokens),
            agent_failures=agent_failures,
            denied_actions=frozenset(denied_actions),
            **options,  # type: ignore[arg-type]
        )
    except TypeError as exc:  # pragma: no cover - option names mirror the config fields
        raise click.UsageError(str(exc)) from exc
    problems = config.problems()
    if problems:
        raise click.UsageError("; ".join(problems))
    try:
        asyncio.run(_serve(config))
    except EmulatorStartError as exc:
        raise click.ClickException(str(exc)) from exc


def _listing_config(regions: tuple[str, ...], options: dict[str, object]) -> EmulatorConfig:
    """The config `--list` describes: the fleet options as given (faults do not matter)."""
    fleet_fields = (
        "instances_per_region",
        "fleet_file",
        "seed",
        "stopped_fraction",
        "classic_fraction",
        "agent_offline_fraction",
    )
    return EmulatorConfig(
        regions=regions,
        **{name: options[name] for name in fleet_fields},  # type: ignore[arg-type]
    )


def fleet_listing(config: EmulatorConfig) -> str:
    """Every instance and every region's commands of the fleet `config` makes, as text."""
    fleet = Fleet.from_config(config)
    catalog = CommandCatalog(fleet.regions, 0.0, random.Random(f"cmd:{config.seed}"))
    lines: list[str] = []
    for region, region_fleet in sorted(fleet.regions.items()):
        lines.append(f"# {region}: {len(region_fleet.instances)} instances")
        lines.append("# instance_id\tstatus\tnetwork\tagent\tos\ttags")
        for inst in region_fleet.instances:
            tags = ",".join(f"{k}={v}" for k, v in inst.tags)
            agent = "online" if inst.agent_online else "offline"
            lines.append(
                f"{region}:{inst.instance_id}\t{inst.status}\t{inst.network}\t{agent}\t"
                f"{inst.os_type}\t{tags}"
            )
        lines.append(f"# {region} commands (command_id\tname)")
        lines += [f"#   {c.command_id}\t{c.name}" for c in catalog.in_region(region)]
        lines.append(
            f"# {region} public commands (name\tprovider: --command-name NAME --provider PROVIDER)"
        )
        lines += [f"#   {c.name}\t{c.provider}" for c in catalog.all_public_in(region)]
    return "\n".join(lines) + "\n"


def _parse_qps(items: tuple[str, ...]) -> tuple[float | None, dict[str, float]]:
    """`--qps N` (every region) and `--qps REGION=N` items."""
    default: float | None = None
    per_region: dict[str, float] = {}
    for item in items:
        region, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise click.BadParameter(
                f"{item!r}: expected N or REGION=N", param_hint="--qps"
            ) from None
        if not number > 0 or number == float("inf"):
            raise click.BadParameter(f"{item!r}: N must be a positive number", param_hint="--qps")
        if sep:
            per_region[region] = number
        else:
            default = number
    return default, per_region


def _parse_fractions(items: tuple[str, ...], flag: str) -> dict[str, float]:
    """`CODE=F` items (F within 0..1)."""
    found: dict[str, float] = {}
    for item in items:
        code, sep, value = item.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not sep or not code or not 0 <= share <= 1:
            raise click.BadParameter(f"{item!r}: expected CODE=F with F in 0..1", param_hint=flag)
        found[code] = share
    return found


async def _serve(config: EmulatorConfig) -> None:
    emulator = Emulator(config)
    await emulator.start()
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (
            signal.SIGINT,
            signal.SIGTERM,
        ):  # before the first line: scripts may signal at once
            loop.add_signal_handler(signum, stop.set)
        click.echo(f"fanout emulator listening on {emulator.url}")
        if emulator.cert_path is not None:
            click.echo(f"certificate: {emulator.cert_path}")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await emulator.close()


if __name__ == "__main__":  # `python -m fanout.emulator.cli`, without the main CLI
    emulator_command(prog_name="fanout emulator")

"""The options commands share, each group handed to the command as one typed value.

`common_options` gives a command `common: CommonFlags`, `spend_options` (the commands that can
spend quota) `spend: SpendFlags` and `rollout_options` (`plan`, `run`) `rollout: RolloutFlags`
besides; click's keyword arguments never travel further than the command function. Settings,
the ledger and credentials are opened here the same way for every command.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fanout import values
from fanout.aliyun.credentials import CredentialSource, load_credentials
from fanout.aliyun.endpoints import is_loopback
from fanout.errors import RunNotFoundError
from fanout.ledger import (
    LedgerStore,
    default_ledger_location,
    ledger_exists,
    open_existing_ledger,
    open_ledger,
)
from fanout.logs import configure_logging, register_credentials
from fanout.plan import WAVE_ORDERS
from fanout.settings import Settings, load_settings

__all__ = [
    "SECONDS",
    "CommonFlags",
    "RolloutFlags",
    "SpendFlags",
    "WatchFlags",
    "common_options",
    "credentials_for",
    "ledger_for",
    "param_options",
    "reader_for",
    "rollout_options",
    "settings_from",
    "spend_options",
    "watch_options",
]

Command = Callable[..., None]


class _Seconds(click.ParamType):  # type: ignore[type-arg]
    """A finite number of seconds, 0 to a day (`nan` and `inf` are refused, not waited for)."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return values.number(value, low=0.0, high=86_400.0)
        except values.ValueRuleError as exc:
            self.fail(str(exc), param, ctx)


SECONDS = _Seconds()


@dataclass(frozen=True, slots=True)
class CommonFlags:
    """The options every command takes."""

    config_file: Path | None
    ledger: str | None
    as_json: bool
    log_level: str


@dataclass(frozen=True, slots=True)
class SpendFlags:
    """The options of every command that can spend quota (None: not given)."""

    common: CommonFlags
    endpoint: str | None
    insecure_http: bool
    ca_bundle: str | None
    profile: str | None
    yes: bool
    wait: bool | None
    wait_for_quota: bool
    concurrency: int | None
    rate_per_s: float | None
    daily_quota: int | None
    quota_reserve: int | None

    def settings(
        self, *, batch_size: int | None = None, content_limit_bytes: int | None = None
    ) -> Settings:
        """Settings from the config file and the environment with these flags on top; a plain
        http:// endpoint on another host (allowed by --insecure-http) is warned about."""
        settings = settings_from(
            self.common.config_file,
            ledger=self.common.ledger,
            endpoint=self.endpoint,
            insecure_http=self.insecure_http or None,
            ca_bundle=self.ca_bundle,
            profile=self.profile,
            batch_size=batch_size,
            content_limit_bytes=content_limit_bytes,
            concurrency=self.concurrency,
            rate_per_s=self.rate_per_s,
            daily_quota=self.daily_quota,
            quota_reserve=self.quota_reserve,
        )
        endpoint = settings.endpoint or ""
        if endpoint.startswith("http://") and not is_loopback(endpoint):
            click.echo(
                f"fanout: warning: --insecure-http: every request to {endpoint} goes in clear "
                "text (signed requests, parameters and any STS token can be read on the way)",
                err=True,
            )
        return settings


@dataclass(frozen=True, slots=True)
class RolloutFlags:
    """What `plan` and `run` were told on the command line: targets, command, waves, budget.

    Empty or None where not given; the config file's `[rollout]` table fills those
    (`fanout.cli.inputs.with_rollout_table`).
    """

    command_id: tuple[str, ...]  # `c-...` (every region) or `REGION=c-...` items
    command_name: str | None
    provider: str | None
    script: str | None
    command_type: str | None  # --type: the script's command type
    command_timeout_s: int | None  # --command-timeout: the script's command's own Timeout
    enable_parameter: bool
    targets_file: str | None
    instance_ids: tuple[str, ...]
    tags: tuple[str, ...]
    regions: tuple[str, ...]
    params: tuple[str, ...]
    params_json: str | None
    param_file: str | None
    secret_params: tuple[str, ...]
    allow_short_secret: bool
    timed: bool | None
    frequency: str | None
    repeat_mode: str | None
    timeout_s: int | None
    username: str | None
    working_dir: str | None
    windows_password_name: str | None
    container_id: str | None
    container_name: str | None
    termination_mode: str | None
    launcher: str | None
    resource_group_id: str | None
    oss_output: str | None
    invocation_tags: tuple[str, ...]
    content_limit_bytes: int | None
    batch_size: int | None
    waves: str | None
    wave_order: str | None
    max_errors: str | None
    wave_max_failures: str | None
    wave_wait: str | None
    count_unreachable: bool
    pause_after_wave: bool
    no_preflight: bool
    strict: bool
    not_after: str | None
    allow_overlap: bool
    # Linked runs (fanout.linked): a check after each wave's bake time, a rollback on halt.
    wave_check_command_id: tuple[str, ...]
    wave_check_command_name: str | None
    wave_check_script: str | None
    on_halt_command_id: tuple[str, ...]
    on_halt_command_name: str | None
    on_halt_script: str | None
    on_halt_scope: str | None


@dataclass(frozen=True, slots=True)
class WatchFlags:
    """Metrics, notifications and the report file of `run`, `resume` and `retry`."""

    metrics_file: Path | None
    metrics_port: int | None
    notify_urls: tuple[str, ...]
    notify_format: str | None
    html_report: Path | None


def _collected(
    cls: type[Any], name: str, options: list[Callable[[Command], Command]]
) -> Callable[[Command], Command]:
    """A decorator adding `options` to a command, whose values reach it as one `cls`, `name`."""
    names = [field.name for field in dataclasses.fields(cls)]

    def decorate(func: Command) -> Command:
        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> None:
            values = {key: kwargs.pop(key) for key in names}
            func(*args, **kwargs, **{name: cls(**values)})

        decorated: Command = command
        for option in reversed(options):
            decorated = option(decorated)
        return decorated

    return decorate


def param_options() -> list[Callable[[Command], Command]]:
    """`--param`, `--params-json` and `--param-file`: the parameter sources of run, plan, resume
    and retry (also `FANOUT_PARAM_<NAME>` variables). Only `--param` puts a value on the command
    line, where every local user can read it: secret values go in a file, stdin or the env."""
    return [
        click.option(
            "--param",
            "params",
            multiple=True,
            help="KEY=VALUE parameter (repeatable; visible in ps: not for secrets).",
        ),
        click.option("--params-json", help="Parameters as a JSON object, @FILE, or @- for stdin."),
        click.option(
            "--param-file",
            help="KEY=VALUE lines (one per parameter), or - for stdin; for secret values.",
        ),
    ]


def linked_source_options(
    flag_prefix: str, name_prefix: str, what: str
) -> list[Callable[[Command], Command]]:
    """A linked run's command source, as `run` takes its own: `{flag_prefix}command-id`
    (c-... or REGION=c-..., repeatable), `{flag_prefix}command-name`, `{flag_prefix}script`."""
    return [
        click.option(
            f"{flag_prefix}command-id",
            f"{name_prefix}command_id",
            multiple=True,
            help=f"{what}: this CommandId (c-..., or REGION=c-... repeatable).",
        ),
        click.option(
            f"{flag_prefix}command-name",
            f"{name_prefix}command_name",
            help=f"{what}: the command of this name in each region.",
        ),
        click.option(
            f"{flag_prefix}script",
            f"{name_prefix}script",
            help=f"{what}: this script, created as a command in each region.",
        ),
    ]


_COMMON = _collected(
    CommonFlags,
    "common",
    [
        click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path),
            help="Settings file (TOML); default $FANOUT_CONFIG.",
        ),
        click.option(
            "--ledger",
            help="Ledger: a SQLite path or postgresql:// URL "
            "(default $FANOUT_LEDGER, else XDG state).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
        click.option(
            "--log-level",
            default="warning",
            show_default=True,
            type=click.Choice(["debug", "info", "warning", "error"]),
        ),
    ],
)

_SPEND = _collected(
    SpendFlags,
    "spend",
    [
        click.option("--endpoint", help="API endpoint URL for every region (e.g. the emulator)."),
        click.option(
            "--insecure-http",
            is_flag=True,
            help="Allow a plain http:// endpoint on another host (warned about on every run).",
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
    ],
)

_ROLLOUT = _collected(
    RolloutFlags,
    "rollout",
    [
        click.option(
            "--command-id",
            "command_id",
            multiple=True,
            help="Command source: c-... (it must exist in every target region), or REGION=c-... "
            "(repeatable: each region's own id); a public ACS-... name with --provider.",
        ),
        click.option(
            "--command-name",
            help="Command source: the command of this name in each region (DescribeCommands).",
        ),
        click.option(
            "--provider",
            help="A public command's provider (AlibabaCloud, ...) for --command-name/--command-id.",
        ),
        click.option(
            "--script",
            help="Command source: a script file; fanout creates it as a command in each region "
            "(named fanout-<content hash>, reused by later runs).",
        ),
        click.option(
            "--type",
            "command_type",
            help="--script's type: RunShellScript, RunBatScript or RunPowerShellScript "
            "(default: from the file's extension, else RunShellScript).",
        ),
        click.option(
            "--command-timeout",
            "command_timeout_s",
            type=int,
            help="--script's command Timeout in seconds (CreateCommand's default: 60).",
        ),
        click.option(
            "--enable-parameter",
            is_flag=True,
            help="--script's {{name}} placeholders become custom parameters (default off).",
        ),
        click.option("--targets", "targets_file", help="Target file, or - for stdin."),
        click.option("--instance-id", "instance_ids", multiple=True, help="A target (repeatable)."),
        click.option("--tag", "tags", multiple=True, help="KEY=VALUE tag filter (repeatable)."),
        click.option(
            "--region", "regions", multiple=True, help="Region for bare ids / tag queries."
        ),
        *param_options(),
        click.option(
            "--secret-param",
            "secret_params",
            multiple=True,
            help="A parameter whose value is secret (never logged or stored).",
        ),
        click.option(
            "--allow-short-secret",
            is_flag=True,
            help="Accept secret values shorter than 8 characters (redacted imperfectly).",
        ),
        click.option("--timed", is_flag=True, default=None, help="Periodic (needs --frequency)."),
        click.option("--frequency", help="Schedule: cron with seconds, rate(...) or at(...)."),
        click.option(
            "--repeat-mode",
            type=click.Choice(["Once", "Period", "NextRebootOnly", "EveryReboot", "DryRun"]),
        ),
        click.option("--timeout", "timeout_s", type=int, help="Seconds, 10 to 86400."),
        click.option("--username", help="User to run as on the instance (<= 255 characters)."),
        click.option(
            "--working-dir", help="Working directory on the instance (<= 200 characters)."
        ),
        click.option(
            "--batch-size",
            type=int,
            help="Instances per call (default 50; at most max_batch_size, 50 unless raised).",
        ),
        click.option(
            "--windows-password-name",
            help="Windows: the OOS Parameter Store name of --username's password.",
        ),
        click.option("--container-id", help="Run in this container (64 hex digits, docker://...)."),
        click.option("--container-name", help="Run in the container of this name."),
        click.option(
            "--termination-mode", help="On stop or timeout, kill: Process or ProcessTree."
        ),
        click.option("--launcher", help="The launcher of the script (<= 1 KB)."),
        click.option("--resource-group-id", help="Resource group of the invocations (rg-...)."),
        click.option(
            "--oss-output",
            help="Deliver outputs to OSS: oss://BUCKET/PREFIX (or BUCKET/PREFIX); no 24 KB cap.",
        ),
        click.option(
            "--invocation-tag",
            "invocation_tags",
            multiple=True,
            help="KEY=VALUE tag on the invocations (repeatable, at most 20).",
        ),
        click.option(
            "--content-limit-bytes",
            type=int,
            help="Base64 of content + parameters, at most (default 18432: the reference's 18 KB).",
        ),
        click.option("--waves", help="Cumulative wave sizes, e.g. 1,10%,50%,100%."),
        click.option(
            "--wave-order",
            type=click.Choice(WAVE_ORDERS),
            help="spread (default: every wave from every region) or region-by-region.",
        ),
        click.option("--max-errors", help="Halt after N or P% failed instances (the whole run)."),
        click.option(
            "--wave-max-failures",
            help="A wave passes only with at most N or P% of its instances failed "
            "(default: the --max-errors share).",
        ),
        click.option(
            "--wave-wait",
            help="Bake time after each wave's results are in, before the next wave "
            "(e.g. 30s, 5m, 1h). Without a --wave-check-... command it only delays the next "
            "wave: failures that show later are not seen by fanout.",
        ),
        click.option(
            "--count-unreachable",
            is_flag=True,
            help="Count unreachable instances (agent or delivery failed) against --max-errors.",
        ),
        click.option("--pause-after-wave", is_flag=True, help="Stop after each wave (exit 5)."),
        click.option("--no-preflight", is_flag=True, help="Skip the Describe checks."),
        click.option("--strict", is_flag=True, help="Preflight exclusions make the run exit 1."),
        click.option(
            "--not-after",
            help="End of the change window: ISO-8601 time (UTC unless an offset is given) or "
            "+DURATION (+90s, +30m, +2h); no batch is sent and no wave starts after it (exit 5).",
        ),
        click.option(
            "--allow-overlap",
            is_flag=True,
            help="Run even on instances another run in progress may still invoke.",
        ),
        *linked_source_options(
            "--wave-check-",
            "wave_check_",
            "Wave check: at the end of each wave's --wave-wait, on the wave's succeeded "
            "instances; those it does not succeed on count against the wave's budget",
        ),
        *linked_source_options(
            "--on-halt-",
            "on_halt_",
            "Rollback: when the run halts on its error budget (exit 3), on the instances that "
            "succeeded (or --on-halt-scope all-invoked)",
        ),
        click.option(
            "--on-halt-scope",
            type=click.Choice(["succeeded", "all-invoked"]),
            help="Which instances the --on-halt-... command runs on (default succeeded).",
        ),
    ],
)


_WATCH = _collected(
    WatchFlags,
    "watch",
    [
        click.option(
            "--metrics-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write OpenMetrics text here while the run lives (replaced atomically).",
        ),
        click.option(
            "--metrics-port",
            type=click.IntRange(0, 65535),
            help="Serve /metrics on 127.0.0.1:PORT while the run lives (0: any free port).",
        ),
        click.option(
            "--notify",
            "notify_urls",
            multiple=True,
            help="POST wave done / halt / end to this webhook (repeatable; config notify).",
        ),
        click.option(
            "--notify-format",
            type=click.Choice(["json", "dingtalk", "slack"]),
            help="Shape of the notification body (default json; config notify_format).",
        ),
        click.option(
            "--html-report",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the HTML report here when the run ends (named in notifications).",
        ),
    ],
)


def watch_options(func: Command) -> Command:
    """Metrics, notification and report-file options (`run`, `resume`, `retry`); the command
    gets `watch: WatchFlags`."""
    return _WATCH(func)


def common_options(func: Command) -> Command:
    """Options every command takes; the command gets `common: CommonFlags`, with logging
    configured from `--log-level` onto stderr first (stdout is for documents and --json)."""

    @functools.wraps(func)
    def logged(*args: Any, common: CommonFlags, **kwargs: Any) -> None:
        configure_logging(common.log_level)
        func(*args, common=common, **kwargs)

    return _COMMON(logged)


def spend_options(func: Command) -> Command:
    """Options of every command that can spend quota; the command gets `spend: SpendFlags`."""
    return common_options(_SPEND(func))


def rollout_options(func: Command) -> Command:
    """Targets, command and batching options of `plan` and `run`, then the spending ones; the
    command gets `rollout: RolloutFlags` and `spend: SpendFlags`."""
    return spend_options(_ROLLOUT(func))


def settings_from(config_file: Path | None, **flags: object) -> Settings:
    """Load settings with these flags on top."""
    return load_settings(config_file=config_file, flags=flags)


def ledger_for(settings: Settings, *, run_id: str | None = None) -> LedgerStore:
    """Open the configured ledger to write to it; with `run_id`, refuse to create one (the run
    must exist)."""
    location = settings.ledger or default_ledger_location()
    if run_id is not None and not ledger_exists(location):
        msg = f"no run {run_id!r}: there is no ledger at {location}"
        raise RunNotFoundError(msg)
    return open_ledger(location)


def reader_for(settings: Settings, *, run_id: str | None = None) -> LedgerStore | None:
    """Open the configured ledger to read it, creating and changing nothing (None: there is no
    ledger yet); with `run_id`, no ledger means no such run."""
    location = settings.ledger or default_ledger_location()
    store = open_existing_ledger(location)
    if store is None and run_id is not None:
        msg = f"no run {run_id!r}: there is no ledger at {location}"
        raise RunNotFoundError(msg)
    return store


def credentials_for(settings: Settings) -> CredentialSource:
    """Credentials from the chain, registered for redaction (renewed ones too)."""
    credentials = load_credentials(
        profile=settings.profile, metadata_endpoint=settings.metadata_endpoint
    )
    register_credentials(credentials)
    return credentials

"""From the command line to a `RunRequest`: flags, the config file's `[rollout]` table, target
files, tag queries and parameters, read and checked before any InvokeCommand.

`read_rollout` is the one place where `plan` and `run` build their request. Everything that
needs no API call is refused first; a tag query is the only call made here.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from fanout import eventloop
from fanout.aliyun.command import CommandSpec, oss_output_delivery
from fanout.aliyun.credentials import CredentialSource
from fanout.aliyun.endpoints import KNOWN_REGIONS
from fanout.cli.options import RolloutFlags, SpendFlags, credentials_for
from fanout.errors import ConfigError, TargetError, UsageError
from fanout.fingerprints import check_secret_lengths
from fanout.logs import register_secret
from fanout.params import (
    merge_params,
    params_from_env,
    params_from_file,
    params_from_items,
    params_from_json,
)
from fanout.plan import WAVE_ORDERS, parse_waves
from fanout.preflight import resolve_tags
from fanout.redaction import is_secret_key
from fanout.request import RunRequest
from fanout.runner import client_for
from fanout.settings import RolloutTable, Settings, config_file_location, load_rollout
from fanout.sources import (
    DEFAULT_SCRIPT_TIMEOUT_S,
    CommandIdSource,
    CommandNameSource,
    CommandSource,
    ScriptSource,
    check_script,
    label,
    missing_regions,
    parse_command_ids,
    type_for_path,
)
from fanout.targets import (
    Duplicate,
    Target,
    TargetList,
    merge_targets,
    parse_instance_ids,
    parse_target_text,
)
from fanout.validate import check_spec
from fanout.waves import parse_max_errors

__all__ = [
    "ParamInput",
    "Rollout",
    "read_command_source",
    "read_params",
    "read_rollout",
    "secret_keys_of",
    "secret_values",
    "with_rollout_table",
]

# DescribeInstances takes at most 20 Tag.N filters (aliyun-api-facts, DescribeInstances).
_MAX_TAG_FILTERS = 20
# A command's Timeout: at least 10 seconds (InvokeCommand and CreateCommand references).
_MIN_TIMEOUT_S = 10


@dataclass(frozen=True, slots=True)
class Rollout:
    """A rollout as the command line asks for it, and what reading it took."""

    request: RunRequest
    settings: Settings
    credentials: CredentialSource
    duplicates: tuple[Duplicate, ...]  # dropped from the targets, reported by `run`


@dataclass(frozen=True, slots=True)
class ParamInput:
    """Where the parameter values of a command come from (see `fanout.params`)."""

    params: tuple[str, ...] = ()  # --param KEY=VALUE (on the command line: not for secrets)
    params_json: str | None = None  # --params-json JSON | @FILE | @-
    param_file: str | None = None  # --param-file FILE | -


# The flag of each RolloutFlags field, for messages about values given there.
_FLAGS = {
    "command_id": "--command-id",
    "targets_file": "--targets",
    "instance_ids": "--instance-id",
    "tags": "--tag",
    "regions": "--region",
    "params": "--param",
    "params_json": "--params-json",
    "param_file": "--param-file",
    "secret_params": "--secret-param",
    "timed": "--timed",
    "frequency": "--frequency",
    "repeat_mode": "--repeat-mode",
    "timeout_s": "--timeout",
    "username": "--username",
    "working_dir": "--working-dir",
    "windows_password_name": "--windows-password-name",
    "container_id": "--container-id",
    "container_name": "--container-name",
    "termination_mode": "--termination-mode",
    "launcher": "--launcher",
    "resource_group_id": "--resource-group-id",
    "oss_output": "--oss-output",
    "invocation_tags": "--invocation-tag",
    "batch_size": "--batch-size",
    "waves": "--waves",
    "max_errors": "--max-errors",
}
# Parameter files and JSON documents are small (P4: 16 KB after Base64); more is a mistake.
_MAX_PARAM_BYTES = 1024 * 1024
_STDIN = "-"


def read_rollout(
    flags: RolloutFlags, spend: SpendFlags, *, credentials: CredentialSource | None = None
) -> Rollout:
    """The request of `plan` / `run`: the flags over the `[rollout]` table, the targets (tag
    queries resolved), the command spec with its offline checks, waves, budget and waiting.

    Every value is checked by the rule its option has wherever it was given; a refusal names the
    flag, or the config file's line."""
    config = spend.common.config_file or config_file_location(os.environ)
    table = load_rollout(config)
    flags, sources = with_rollout_table(flags, table)
    if credentials is not None and flags.tags:  # fanout simulate: its emulator has no tag API
        raise UsageError("--tag: a simulation's targets are --targets, --instance-id or a fleet")
    _one_reader_of_stdin(flags)
    settings = spend.settings(
        batch_size=flags.batch_size, content_limit_bytes=flags.content_limit_bytes
    )
    params = read_params(
        ParamInput(flags.params, flags.params_json, flags.param_file),
        env=os.environ,
        table=(table.values.get("params"), table.sources.get("params", "")),
    )
    secret_keys = secret_keys_of(params, flags.secret_params)
    for key in secret_keys:
        register_secret((params or {}).get(key))
    check_secret_lengths(params, secret_keys, allow_short=flags.allow_short_secret)
    source = read_command_source(flags, params, settings.content_limit_bytes)
    wave_check = read_linked_source(
        "--wave-check-",
        flags.wave_check_command_id,
        flags.wave_check_command_name,
        flags.wave_check_script,
        settings.content_limit_bytes,
    )
    on_halt = read_linked_source(
        "--on-halt-",
        flags.on_halt_command_id,
        flags.on_halt_command_name,
        flags.on_halt_script,
        settings.content_limit_bytes,
    )
    if flags.on_halt_scope and on_halt is None:
        raise ConfigError("--on-halt-scope: only with an --on-halt-... command")
    if wave_check is not None and not flags.waves:
        raise ConfigError("--wave-check-...: only with --waves (it runs between waves)")
    if wave_check is not None and spend.wait is False:
        raise ConfigError("--wave-check-...: not with --no-wait (it needs the wave's results)")
    tags = _parse_tags(flags.tags)
    tag_regions = _tag_regions(flags.regions, settings) if tags else ()
    explicit = _read_targets(flags, settings, tagged=bool(tags))
    for given in (source, wave_check, on_halt):
        if given is not None:
            _refuse_unmapped(given, [t.region for t in explicit.targets], tag_regions)
    spec = _spec(flags, label(source), params, sources)
    parse_waves(flags.waves, len(explicit.targets))  # its syntax, before any call
    _check_budgets(flags)
    parse_not_after(flags.not_after, time.time())
    parse_duration(flags.wave_wait, "--wave-wait")
    # `credentials` given: fanout simulate's (the emulator's pair); the chain is not read.
    credentials = credentials or credentials_for(settings)
    target_list = _with_tagged(explicit, tags, tag_regions, settings, credentials)
    parse_waves(flags.waves, len(target_list.targets))
    request = RunRequest(
        targets=target_list.targets,
        spec=spec,
        source=source,
        secret_keys=secret_keys,
        waves=flags.waves,
        wave_order=flags.wave_order or "spread",
        max_errors=flags.max_errors,
        wave_max_failures=flags.wave_max_failures,
        wave_wait_s=parse_duration(flags.wave_wait, "--wave-wait"),
        count_unreachable=flags.count_unreachable,
        pause_after_wave=flags.pause_after_wave,
        preflight=not flags.no_preflight,
        wait=spend.wait is not False,
        wait_for_quota=spend.wait_for_quota,
        strict=flags.strict,
        not_after=parse_not_after(flags.not_after, time.time()),
        allow_overlap=flags.allow_overlap,
        allow_short_secret=flags.allow_short_secret,
        wave_check=wave_check,
        on_halt=on_halt,
        on_halt_scope=flags.on_halt_scope or "succeeded",
    )
    return Rollout(request, settings, credentials, target_list.duplicates)


_DURATION = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


_PLAIN_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration(text: str | None, flag: str) -> float:
    """`30s`, `5m`, `1h`, `1d` or plain seconds -> seconds (None: 0)."""
    if text is None:
        return 0.0
    match = _PLAIN_DURATION.match(text.strip())
    if not match:
        msg = f"{flag} {text!r}: expected a duration such as 30s, 5m or 1h"
        raise ConfigError(msg)
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def parse_not_after(text: str | None, now: float) -> float | None:
    """`--not-after`: an ISO-8601 time (UTC without an offset) or `+DURATION`; epoch seconds.

    A time already past is refused: the run could send nothing.
    """
    if text is None:
        return None
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        when = now + float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            msg = f"--not-after {text!r}: expected an ISO-8601 time or +DURATION (+30m, +2h)"
            raise ConfigError(msg) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        when = moment.timestamp()
    if when <= now:
        msg = f"--not-after {text!r}: that time has passed"
        raise ConfigError(msg)
    return when


def _check_budgets(flags: RolloutFlags) -> None:
    """The wave order and both error budgets, refused before any call when malformed."""
    if flags.wave_order is not None and flags.wave_order not in WAVE_ORDERS:
        msg = f"--wave-order {flags.wave_order!r}: choose from {', '.join(WAVE_ORDERS)}"
        raise ConfigError(msg)
    parse_max_errors(flags.max_errors, 1)
    parse_max_errors(flags.wave_max_failures, 1, flag="--wave-max-failures")


def with_rollout_table(
    flags: RolloutFlags, table: RolloutTable
) -> tuple[RolloutFlags, dict[str, str]]:
    """The flags, those not given filled from a `[rollout]` table (`load_rollout` checked its
    types), and where each value came from (the flag, or `file:line: [rollout] key`).

    The table's `params` are not merged here: they are one layer of `read_params`."""
    changes: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key, value in table.values.items():
        name = _TABLE_FLAGS.get(key, key)
        if name == "params":
            continue
        if getattr(flags, name) in (None, (), False) and name not in changes:
            changes[name] = _flag_value(key, value)
            sources[name] = table.sources[key]
    for name, flag in _FLAGS.items():
        if name not in sources and getattr(flags, name) not in (None, (), False):
            sources[name] = flag
    return dataclasses.replace(flags, **changes), sources  # type: ignore[arg-type]


# `[rollout]` keys whose flag field has another name.
_TABLE_FLAGS = {
    "targets": "targets_file",
    "command_ids": "command_id",
    "wave_check_command_ids": "wave_check_command_id",
    "on_halt_command_ids": "on_halt_command_id",
}
# `[rollout]` keys of one CommandId for every region: the one item of their repeatable flag.
_ONE_ID_KEYS = frozenset({"command_id", "wave_check_command_id", "on_halt_command_id"})


def _flag_value(key: str, value: object) -> object:
    """A `[rollout]` value as its flag field holds it: lists and `KEY=VALUE` tables as tuples,
    `command_id` (one id) as the one item of `--command-id`."""
    if key in _ONE_ID_KEYS:
        return (value,)
    if isinstance(value, dict):
        return tuple(f"{k}={v}" for k, v in value.items())
    return tuple(value) if isinstance(value, list) else value


def read_command_source(
    flags: RolloutFlags, params: Mapping[str, str] | None, content_limit_bytes: int
) -> CommandSource:
    """The one command source of `plan` / `run`, with every check that needs no call (a
    script's size against the content limit, its parameters, the flags that go with it)."""
    given = [
        name
        for name, value in (
            ("--command-id", flags.command_id),
            ("--command-name", flags.command_name),
            ("--script", flags.script),
        )
        if value
    ]
    if len(given) != 1:
        what = f"got {' and '.join(given)}" if given else "none given"
        raise ConfigError(
            f"give exactly one command source ({what}): --command-id c-... (it exists in every "
            "target region), --command-id REGION=c-... (repeatable), --command-name NAME, or "
            "--script FILE (or one of command_id, command_ids, command_name, script in [rollout])"
        )
    script_only = [
        flag
        for flag, value in (
            ("--type", flags.command_type),
            ("--command-timeout", flags.command_timeout_s),
            ("--enable-parameter", flags.enable_parameter),
        )
        if value
    ]
    if script_only and not flags.script:
        raise ConfigError(f"{', '.join(script_only)}: only with --script (they define its command)")
    if flags.script:
        if flags.provider:
            raise ConfigError(
                "--provider: only with --command-name or --command-id (a public command)"
            )
        return _read_script(flags, params, content_limit_bytes)
    if flags.command_name:
        return CommandNameSource(flags.command_name.strip(), flags.provider)
    source = parse_command_ids(flags.command_id)
    if flags.provider:
        if not isinstance(source, CommandIdSource):
            raise ConfigError(
                "--provider: a public command has one name in every region, not REGION=..."
            )
        return CommandIdSource(source.command_id, flags.provider)
    return source


def read_linked_source(
    flag_prefix: str,
    command_ids: Sequence[str],
    command_name: str | None,
    script_path: str | None,
    content_limit_bytes: int,
) -> CommandSource | None:
    """A linked run's command source (`--wave-check-...`, `--on-halt-...`, `fanout rollback`'s
    own): at most one, checked as `run` checks its own, before any call (None: none given)."""
    given = [
        f"{flag_prefix}{name}"
        for name, value in (
            ("command-id", command_ids),
            ("command-name", command_name),
            ("script", script_path),
        )
        if value
    ]
    if len(given) > 1:
        raise ConfigError(f"give one command source, not {' and '.join(given)}")
    if script_path:
        script = ScriptSource(
            content=_read_script_text(script_path, f"{flag_prefix}script"),
            command_type=type_for_path(script_path),
            path=script_path,
        )
        check_script(script, None, content_limit_bytes=content_limit_bytes)
        return script
    if command_name:
        if not command_name.strip():
            raise ConfigError(f"{flag_prefix}command-name: empty")
        return CommandNameSource(command_name.strip())
    return parse_command_ids(command_ids) if command_ids else None


def _read_script_text(path: str, flag: str) -> str:
    """A script file's text (UTF-8), or a one-line refusal."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{flag} {path}: not UTF-8 text (byte {exc.start})") from exc


def _read_script(
    flags: RolloutFlags, params: Mapping[str, str] | None, content_limit_bytes: int
) -> ScriptSource:
    """`--script FILE` as the command fanout creates, checked before any call."""
    assert flags.script is not None
    path = flags.script
    content = _read_script_text(path, "--script")
    if flags.command_timeout_s is not None and flags.command_timeout_s < _MIN_TIMEOUT_S:
        raise ConfigError(
            f"--command-timeout {flags.command_timeout_s}: at least {_MIN_TIMEOUT_S} seconds"
        )
    script = ScriptSource(
        content=content,
        command_type=flags.command_type or type_for_path(path),
        working_dir=flags.working_dir,
        timeout_s=flags.command_timeout_s or DEFAULT_SCRIPT_TIMEOUT_S,
        enable_parameter=flags.enable_parameter,
        path=path,
    )
    for text in check_script(script, params, content_limit_bytes=content_limit_bytes):
        click.echo(
            f"fanout: warning: {path}: {text} is sent as it is (custom parameters are not "
            "enabled; --enable-parameter makes {{name}} placeholders parameters)",
            err=True,
        )
    return script


def _refuse_unmapped(
    source: CommandSource, regions: Sequence[str], tag_regions: Sequence[str]
) -> None:
    """`--command-id REGION=c-...`: every target region needs its entry, before any call."""
    lacking = missing_regions(source, [*regions, *tag_regions])
    if lacking:
        raise ConfigError(
            f"--command-id: no REGION=c-... entry for {', '.join(lacking)} (a CommandId belongs "
            "to one region: each target region needs its own)"
        )


def read_params(
    given: ParamInput,
    *,
    env: Mapping[str, str],
    table: tuple[Mapping[str, str] | None, str] = (None, ""),
) -> dict[str, str] | None:
    """Parameters from every source, later winning for a name: `FANOUT_PARAM_<NAME>`, the
    `[rollout] params` table, `--params-json`, `--param-file`, `--param` (None: none given)."""
    table_params, table_source = table
    json_text = given.params_json
    json_where = "--params-json"
    if json_text is not None and json_text.startswith("@"):
        json_where = f"--params-json {json_text}"
        json_text = _read_param_text(json_text[1:], json_where)
    file_params = None
    if given.param_file is not None:
        where = "<stdin>" if given.param_file == _STDIN else given.param_file
        text = _read_param_text(given.param_file, f"--param-file {given.param_file}")
        file_params = params_from_file(text, where)
    from_env = params_from_env(env) or None
    return merge_params(
        [
            from_env,
            _table_params(table_params, table_source),
            params_from_json(json_text, json_where) if json_text is not None else None,
            file_params,
            params_from_items(given.params) if given.params else None,
        ]
    )


def _table_params(params: Mapping[str, str] | None, where: str) -> dict[str, str] | None:
    """The table's params (names checked like any other source's)."""
    if params is None:
        return None
    for key in params:
        if not key:
            raise ConfigError(f"{where}: a parameter name may not be empty (spec P2)")
    return dict(params)


def _read_param_text(name: str, where: str) -> str:
    """The text of a parameter file (`-`: stdin), UTF-8, at most `_MAX_PARAM_BYTES`."""
    try:
        if name == _STDIN:
            data = sys.stdin.buffer.read(_MAX_PARAM_BYTES + 1)
        else:
            with Path(name).open("rb") as file:
                data = file.read(_MAX_PARAM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > _MAX_PARAM_BYTES:
        raise ConfigError(f"{where}: more than {_MAX_PARAM_BYTES} bytes (parameters are small)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{where}: line {line} is not valid UTF-8") from None


def _one_reader_of_stdin(flags: RolloutFlags) -> None:
    """Refuse two inputs that both read standard input."""
    readers = [
        flag
        for flag, value in (
            ("--targets -", flags.targets_file),
            ("--param-file -", flags.param_file),
            ("--params-json @-", (flags.params_json or "").replace("@-", _STDIN, 1)),
        )
        if value == _STDIN
    ]
    if len(readers) > 1:
        raise ConfigError(f"{' and '.join(readers)}: only one input can be read from stdin")


def secret_keys_of(
    params: Mapping[str, str] | None, secret_params: Sequence[str]
) -> tuple[str, ...]:
    """The secret parameters: those named by --secret-param (each must be given), and those
    whose name looks like a secret."""
    unknown = [k for k in secret_params if k not in (params or {})]
    if unknown:
        raise ConfigError(f"--secret-param {unknown[0]!r}: no such parameter given")
    return tuple(sorted({*secret_params, *(k for k in params or {} if is_secret_key(k))}))


def secret_values(given: ParamInput, env: Mapping[str, str]) -> dict[str, str]:
    """The secret values `resume` / `retry` are given again (they are never stored), from any
    parameter source; registered for redaction."""
    values = read_params(given, env=env) or {}
    for value in values.values():
        register_secret(value)
    return values


def _read_targets(flags: RolloutFlags, settings: Settings, *, tagged: bool) -> TargetList:
    """Every target from the file/stdin and the flags, validated and deduplicated.

    With `tagged` (a `--tag` query follows) having no explicit target is fine.
    """
    regions = flags.regions
    default_region = regions[0] if len(regions) == 1 else settings.region
    lists = []
    if flags.targets_file:
        lists.append(_read_target_file(flags.targets_file, default_region))
    if flags.instance_ids:
        lists.append(
            parse_instance_ids(
                flags.instance_ids, default_region=default_region, known_regions=KNOWN_REGIONS
            )
        )
    if not lists:
        if tagged:
            return TargetList(())
        raise TargetError("targets", "no targets: give --targets FILE, --instance-id or --tag")
    return merge_targets(*lists)


def _read_target_file(targets_file: str, default_region: str | None) -> TargetList:
    """The targets of a file, or of stdin for `-`."""
    if targets_file == "-":
        data, source = sys.stdin.buffer.read(), "<stdin>"
    else:
        try:
            data, source = Path(targets_file).read_bytes(), targets_file
        except OSError as exc:
            raise TargetError(targets_file, f"cannot read ({exc.strerror})") from exc
    return parse_target_text(
        data, source=source, default_region=default_region, known_regions=KNOWN_REGIONS
    )


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


def checked_regions(regions: Sequence[str]) -> tuple[str, ...]:
    """`regions` without repeats, each a known region (refused, exit 2, naming --region, as a
    target's region is)."""
    chosen = tuple(dict.fromkeys(regions))
    for region in chosen:
        parse_instance_ids((), default_region=region, known_regions=KNOWN_REGIONS)
    return chosen


def _tag_regions(regions: Sequence[str], settings: Settings) -> tuple[str, ...]:
    """The regions a tag query searches: every --region, else the configured region."""
    chosen = tuple(dict.fromkeys(regions)) or ((settings.region,) if settings.region else ())
    if not chosen:
        raise ConfigError("--tag needs --region (repeatable): the regions to search")
    return checked_regions(chosen)  # validated like a target's region (names --region)


def _with_tagged(
    explicit: TargetList,
    tags: dict[str, str],
    regions: Sequence[str],
    settings: Settings,
    credentials: CredentialSource,
) -> TargetList:
    """The explicit targets, then every instance carrying all `tags` in `regions` (duplicates dropped)."""
    if not tags:
        return explicit

    async def resolve() -> list[Target]:
        async with client_for(settings, credentials) as client:
            return await resolve_tags(client, regions, tags)

    found = eventloop.run(resolve)
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


def _spec(
    flags: RolloutFlags,
    command_id: str,
    params: dict[str, str] | None,
    sources: Mapping[str, str],
) -> CommandSpec:
    """The command spec, every option checked by its rule (`fanout.validate.check_spec`), a
    refusal naming the flag or the config file's line the value came from."""
    spec = CommandSpec(
        command_id=command_id,
        parameters=params,
        timed=flags.timed,
        frequency=flags.frequency,
        repeat_mode=flags.repeat_mode,
        timeout_s=flags.timeout_s,
        username=flags.username,
        working_dir=flags.working_dir,
        windows_password_name=flags.windows_password_name,
        container_id=flags.container_id,
        container_name=flags.container_name,
        termination_mode=flags.termination_mode,
        launcher=flags.launcher,
        resource_group_id=flags.resource_group_id,
        oss_output_delivery=oss_output_delivery(flags.oss_output) if flags.oss_output else None,
        invocation_tags=_invocation_tags(flags.invocation_tags),
    )
    where = {name: sources[field] for name, field in _SPEC_SOURCES.items() if field in sources}
    where["parameters"] = "parameters"
    check_spec(spec, time.time(), where)
    return spec


# CommandSpec field -> the RolloutFlags field it is read from.
_SPEC_SOURCES = {
    "command_id": "command_id",
    "timed": "timed",
    "frequency": "frequency",
    "repeat_mode": "repeat_mode",
    "timeout_s": "timeout_s",
    "username": "username",
    "working_dir": "working_dir",
    "windows_password_name": "windows_password_name",
    "container_id": "container_id",
    "container_name": "container_name",
    "termination_mode": "termination_mode",
    "launcher": "launcher",
    "resource_group_id": "resource_group_id",
    "oss_output_delivery": "oss_output",
    "invocation_tags": "invocation_tags",
}


def _invocation_tags(items: Sequence[str]) -> dict[str, str] | None:
    """`--invocation-tag KEY=VALUE` items (None: none given)."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--invocation-tag {item[:40]!r}: expected KEY=VALUE")
        if key in tags:
            raise ConfigError(f"--invocation-tag {key[:40]!r}: given twice")
        tags[key] = value
    return tags or None

"""Validation of a run's command, parameters and schedule before any InvokeCommand. Pure.

A mistake here fails every batch of a run the same way, and every failed call still costs one of
the region's daily calls, so each rule InvokeCommand applies to the request as a whole is
checked first, against the command as DescribeCommands returns it. Each refusal is a
`ConfigError` (exit 2) whose one-line message names the rule (`spec P4`, `spec S11`, ...).
Parameter values never appear in a message: they may be secrets.

`check_spec` applies the rules that need no API call to every option of a `CommandSpec`, from
whatever source (a flag, the config file's `[rollout]` table, the Python API), each refusal
naming that source: Timeout an integer of 10..86400 seconds, Username at most 255 characters,
WorkingDir at most 200, RepeatMode one of the five, the command id and every parameter name
text without control characters, parameter values valid UTF-8 without NUL (aliyun-api-facts
1.1 and 6.3: Username.ExceedLimit, InvalidParameter.WorkingDir, InvalidRepeatMode.NotFound).

Rules (reference/InvokeCommand.md): P1 at most 10 parameters; P2 a name is non-empty and at most
64 characters; P3 a value may be empty; P4 Base64(content) + Base64(parameters JSON) within the
size limit (the `content_limit_bytes` setting, 18 KB by default: see `content_limit_note`); P5
names are a subset of the command's; P6 / Parameter.Disabled no parameters for a command that
does not enable them; S11 a command that defines parameters needs `Parameters`; S7 a periodic
invocation needs a valid `Frequency` whose runs are at least 10 seconds apart. A public command
also defines which of its parameters are required and which values each allows.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Protocol

from fanout import values
from fanout.aliyun.command import SPEC_OPTIONS, CommandSpec, check_options
from fanout.aliyun.responses import Command
from fanout.aliyun.wire import compact_json
from fanout.errors import ConfigError
from fanout.schedule import Frequency, FrequencyError, parse

__all__ = [
    "DEFAULT_CONTENT_LIMIT_BYTES",
    "MAX_KEY_CHARS",
    "MAX_PARAMETERS",
    "MAX_USERNAME_CHARS",
    "MAX_WORKING_DIR_CHARS",
    "REPEAT_MODES",
    "TIMEOUT_RANGE_S",
    "SpecLike",
    "check_parameters",
    "check_schedule",
    "check_spec",
    "content_limit_note",
    "encoded_size",
    "validate_command",
]

MAX_PARAMETERS = 10  # spec P1
MAX_KEY_CHARS = 64  # spec P2
# Spec P4's limit for a saved command: 18 KB after Base64 in the current InvokeCommand reference
# (changes up to 2025-12-09) and the create-a-command guide (facts 10 [1][14]). The sources
# disagree: the seed document says 16 KB, the SDK 7.11.8 docstring 24 KB (24 KB is RunCommand's
# limit for a command it does not keep), so the limit is a setting and every refusal says which.
DEFAULT_CONTENT_LIMIT_BYTES = 18 * 1024
TIMEOUT_RANGE_S = (10, 86_400)  # facts 1.1: Timeout >= 10 s; the current reference: <= 86400
MAX_USERNAME_CHARS = 255  # facts 1.1, Username.ExceedLimit
MAX_WORKING_DIR_CHARS = 200  # facts 1.1, InvalidParameter.WorkingDir
REPEAT_MODES = ("Once", "Period", "NextRebootOnly", "EveryReboot", "DryRun")  # facts 1.1
# why 128: real ids are `c-` + 17 characters and public command names are short words.
_MAX_COMMAND_ID_CHARS = 128
_MAX_FREQUENCY_CHARS = 256
# Long names are cut in messages so the error stays on one line.
_QUOTED_KEY_CHARS = 24
_PERIODIC_MODE = "Period"


class SpecLike(Protocol):
    """The parts of a run's command spec (`fanout.aliyun.command.CommandSpec`) that are validated."""

    @property
    def command_id(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, str] | None: ...
    @property
    def timed(self) -> bool | None: ...
    @property
    def frequency(self) -> str | None: ...
    @property
    def repeat_mode(self) -> str | None: ...


def _quote_key(key: str) -> str:
    """A parameter name for a message, cut short when long."""
    if len(key) <= _QUOTED_KEY_CHARS:
        return repr(key)
    return repr(key[:_QUOTED_KEY_CHARS]) + "..."


# Where each option came from when no source is given: the Python API's names.
_API_NAMES = {name: name for name in ("command_id", "parameters", *SPEC_OPTIONS)}


def check_spec(spec: CommandSpec, now_s: float, where: Mapping[str, str] | None = None) -> None:
    """Every offline rule for each option of `spec`; `where[name]` names an option's source
    (`--timeout`, `rollout.toml:12: [rollout] timeout_s`), else the Python field name."""
    source = {**_API_NAMES, **(where or {})}
    for name, rule in _OPTION_RULES.items():
        value = getattr(spec, name)
        if value is None:
            continue
        try:
            rule(value)
        except values.ValueRuleError as exc:
            wire = _WIRE_NAMES[name]
            raise ConfigError(f"{source[name]}: {exc} (InvokeCommand {wire})") from None
    if spec.parameters is not None:
        _check_parameter_text(spec.parameters, source["parameters"])
    try:
        check_options(spec)
    except ConfigError as exc:  # its message names the flag: name the real source instead
        text = str(exc)
        flag = text.split(":", 1)[0].split(" ", 1)[0]
        option = _OPTION_FLAGS.get(flag)
        given = source.get(option, flag) if option is not None else flag
        if given != flag:
            raise ConfigError(f"{given}: {text}") from None
        raise
    check_schedule(spec, now_s)


def _text_mapping(value: object) -> object:
    """A mapping of text to text (invocation tags)."""
    if not isinstance(value, Mapping):
        raise values.ValueRuleError(f"must be a table of text, got {values.shown(value)}")
    for key, item in value.items():
        values.text(key, strip=False)
        values.text(item, allow_empty=True, strip=False)
    return value


def _check_parameter_text(parameters: Mapping[str, str], where: str) -> None:
    """Spec P1, P2 and text rules for names and values (values may be empty: P3)."""
    if len(parameters) > MAX_PARAMETERS:
        raise ConfigError(
            f"{where}: {len(parameters)} parameters, at most {MAX_PARAMETERS} "
            "(spec P1, ParameterCount.ExceedLimit)"
        )
    for key, value in parameters.items():
        try:
            values.text(key, max_chars=MAX_KEY_CHARS, strip=False)
        except values.ValueRuleError as exc:
            shown = _quote_key(key) if not values.undecodable(key) else "name"
            raise ConfigError(f"{where}: parameter {shown} {exc} (spec P2)") from None
        try:  # a value is never shown: it may be a secret
            values.text(value, allow_empty=True, allow_control=True, strip=False)
        except values.ValueRuleError as exc:
            raise ConfigError(f"{where}: the value of parameter {_quote_key(key)} {exc}") from None
        if "\x00" in value:
            raise ConfigError(
                f"{where}: the value of parameter {_quote_key(key)} holds a NUL character"
            )


def _command_id(value: object) -> object:
    text = values.text(value, max_chars=_MAX_COMMAND_ID_CHARS, strip=False)
    if any(char.isspace() for char in text):
        raise values.ValueRuleError("must not contain spaces")
    return text


def _timeout(value: object) -> object:
    low, high = TIMEOUT_RANGE_S
    return values.integer(value, low=low, high=high)


def _timed(value: object) -> object:
    if not isinstance(value, bool):
        raise values.ValueRuleError(f"must be true or false, got {values.shown(value)}")
    return value


_OPTION_RULES: Mapping[str, Callable[[object], object]] = {
    "command_id": _command_id,
    "timed": _timed,
    "frequency": lambda v: values.text(v, max_chars=_MAX_FREQUENCY_CHARS),
    "repeat_mode": lambda v: values.choice(v, REPEAT_MODES),
    "timeout_s": _timeout,
    "username": lambda v: values.text(v, max_chars=MAX_USERNAME_CHARS, strip=False),
    "working_dir": lambda v: values.text(v, max_chars=MAX_WORKING_DIR_CHARS, strip=False),
    # Text first; their formats are `fanout.aliyun.command.check_options`' rules.
    "windows_password_name": lambda v: values.text(v, strip=False),
    "container_id": lambda v: values.text(v, strip=False),
    "container_name": lambda v: values.text(v, strip=False),
    "termination_mode": lambda v: values.text(v, strip=False),
    "launcher": lambda v: values.text(v, strip=False),
    "resource_group_id": lambda v: values.text(v, strip=False),
    "oss_output_delivery": lambda v: values.text(v, strip=False),
    "invocation_tags": _text_mapping,
}
# The flag each of check_options' messages starts with, and the option it names.
_OPTION_FLAGS = {
    "--timeout": "timeout_s",
    "--username": "username",
    "--windows-password-name": "windows_password_name",
    "--working-dir": "working_dir",
    "--launcher": "launcher",
    "--container-id": "container_id",
    "--container-name": "container_name",
    "--termination-mode": "termination_mode",
    "--resource-group-id": "resource_group_id",
    "--oss-output": "oss_output_delivery",
    "--invocation-tag": "invocation_tags",
}
_WIRE_NAMES = {
    "windows_password_name": "WindowsPasswordName",
    "container_id": "ContainerId",
    "container_name": "ContainerName",
    "termination_mode": "TerminationMode",
    "launcher": "Launcher",
    "resource_group_id": "ResourceGroupId",
    "oss_output_delivery": "OssOutputDelivery",
    "invocation_tags": "Tag.N",
    "command_id": "CommandId",
    "timed": "Timed",
    "frequency": "Frequency",
    "repeat_mode": "RepeatMode, InvalidRepeatMode.NotFound",
    "timeout_s": "Timeout",
    "username": "Username, Username.ExceedLimit",
    "working_dir": "WorkingDir, InvalidParameter.WorkingDir",
}


def _refuse_contradictions(spec: SpecLike) -> None:
    """A Frequency schedules periodic runs: RepeatMode is then Period (its default once a
    Frequency is set, facts 1.1), and Timed means the same. Another mode beside either is a
    contradiction the API would settle silently, and a Frequency alone a periodic run nobody
    asked for by name: both refused, naming both options."""
    mode = spec.repeat_mode
    if mode is not None and mode != _PERIODIC_MODE:
        if spec.frequency:
            msg = (
                f"--repeat-mode {mode} and --frequency contradict: a Frequency schedules "
                f"periodic runs (RepeatMode {_PERIODIC_MODE}); give one of them (spec S7)"
            )
            raise ConfigError(msg)
        if spec.timed:
            msg = (
                f"--repeat-mode {mode} and --timed contradict: --timed runs periodically "
                f"(RepeatMode {_PERIODIC_MODE}); give one of them (spec S7)"
            )
            raise ConfigError(msg)
    if spec.frequency and mode is None and not spec.timed:
        msg = (
            "--frequency without --repeat-mode Period (or --timed): a Frequency alone makes the "
            "run periodic; say so with --repeat-mode Period (spec S7)"
        )
        raise ConfigError(msg)


def check_schedule(spec: SpecLike, now_s: float) -> Frequency | None:
    """Spec S6/S7: `--timed` (or RepeatMode Period) needs a Frequency, and it must be valid."""
    _refuse_contradictions(spec)
    periodic = bool(spec.timed) or spec.repeat_mode == _PERIODIC_MODE
    if periodic and not spec.frequency:
        flag = "--timed" if spec.timed else f"--repeat-mode {_PERIODIC_MODE}"
        raise ConfigError(f"{flag} needs --frequency (spec S7, MissingParam.Frequency)")
    if not spec.frequency:
        return None
    try:
        return parse(spec.frequency, now_s)
    except FrequencyError as exc:
        raise ConfigError(
            f"--frequency {spec.frequency!r}: {exc} (spec S7, InvalidParam.Frequency)"
        ) from None


def encoded_size(content: str, parameters: Mapping[str, str] | None) -> int:
    """Spec P4's measure: Base64 of the content plus Base64 of the Parameters JSON as sent."""
    size = _b64_len(content)
    if parameters:  # an empty map is not sent at all (fanout.aliyun.wire)
        size += _b64_len(compact_json(dict(parameters)))
    return size


def _b64_len(text: str) -> int:
    """Length of the Base64 of `text`'s UTF-8 bytes."""
    return len(base64.b64encode(text.encode("utf-8")))


def content_limit_note(content_limit_bytes: int) -> str:
    """Where a content limit comes from, for a refusal: the default and its sources, or the
    operator's setting."""
    if content_limit_bytes == DEFAULT_CONTENT_LIMIT_BYTES:
        return (
            "content_limit_bytes default 18 KB, from the current InvokeCommand reference and "
            "the create-a-command guide; the oldest documents said 16 KB, the SDK 7.11.8 "
            "docstring 24 KB: set content_limit_bytes if your account differs"
        )
    return (
        "content_limit_bytes as configured (config file, FANOUT_CONTENT_LIMIT_BYTES or "
        "--content-limit-bytes); the current InvokeCommand reference says 18 KB"
    )


def check_parameters(
    command: Command, parameters: Mapping[str, str] | None, *, content_limit_bytes: int
) -> None:
    """Spec P1, P2, P4, P5, P6 and S11 for `parameters` (None or empty: not sent) and `command`."""
    where = f"command {command.command_id}"
    if command.parameter_definitions:
        _check_definitions(command, parameters or {})
    if not parameters:
        if command.enable_parameter and command.parameter_names and not command.provider:
            names = ", ".join(command.parameter_names)
            raise ConfigError(
                f"{where} defines parameters ({names}) but none were given: pass them with "
                "--param or --params-json (spec S11)"
            )
    elif not command.enable_parameter:
        raise ConfigError(
            f"{where} does not enable custom parameters: remove --param/--params-json "
            "(spec P6, Parameter.Disabled)"
        )
    else:
        _check_keys(command, parameters)
    size = encoded_size(command.content, parameters)
    if size > content_limit_bytes:
        raise ConfigError(
            f"{where}: content and parameters are {size} bytes after Base64, at most "
            f"{content_limit_bytes} (spec P4, CmdContent.ExceedLimit; "
            f"{content_limit_note(content_limit_bytes)})"
        )


def _check_definitions(command: Command, parameters: Mapping[str, str]) -> None:
    """A public command's own rules: its required parameters given, values among the allowed."""
    for definition in command.parameter_definitions:
        value = parameters.get(definition.name)
        if definition.required and not value and not definition.default:
            raise ConfigError(
                f"command {command.name or command.command_id} requires parameter "
                f"{_quote_key(definition.name)}: pass it with --param (Parameter.MissingValue)"
            )
        if value and definition.possible_values and value not in definition.possible_values:
            raise ConfigError(
                f"parameter {_quote_key(definition.name)} of command "
                f"{command.name or command.command_id}: one of "
                f"{', '.join(definition.possible_values)} (InvalidParameter.Parameters)"
            )


def _check_keys(command: Command, parameters: Mapping[str, str]) -> None:
    """P1, P2 and P5 (P3: any value, the empty string included, is fine)."""
    if len(parameters) > MAX_PARAMETERS:
        raise ConfigError(
            f"{len(parameters)} parameters, at most {MAX_PARAMETERS} "
            "(spec P1, ParameterCount.ExceedLimit)"
        )
    defined = set(command.parameter_names)
    for key in parameters:
        if not key:
            raise ConfigError("a parameter name may not be empty (spec P2)")
        if len(key) > MAX_KEY_CHARS:
            raise ConfigError(
                f"parameter {_quote_key(key)} is {len(key)} characters, at most {MAX_KEY_CHARS} "
                "(spec P2, ParameterKey.ExceedLimit)"
            )
        if key not in defined:
            names = ", ".join(command.parameter_names) or "none"
            raise ConfigError(
                f"parameter {_quote_key(key)} is not defined by command {command.command_id} "
                f"(defined: {names}) (spec P5, Parameter.NotMatched)"
            )


def validate_command(
    command: Command | None,
    spec: SpecLike,
    *,
    region: str,
    content_limit_bytes: int,
    now_s: float,
) -> None:
    """Every request-wide rule for `spec` against `command` as found in `region` (None: absent)."""
    check_schedule(spec, now_s)
    if command is None:
        raise ConfigError(
            f"--command-id {spec.command_id}: no such command in {region} (DescribeCommands "
            "found none; commands belong to one region)"
        )
    check_parameters(command, spec.parameters, content_limit_bytes=content_limit_bytes)

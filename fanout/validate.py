"""Validation of a run's command, parameters and schedule before any InvokeCommand. Pure.

A mistake here fails every batch of a run the same way, and every failed call still costs one of
the region's daily calls, so each rule InvokeCommand applies to the request as a whole is
checked first, against the command as DescribeCommands returns it. Each refusal is a
`ConfigError` (exit 2) whose one-line message names the rule (`spec P4`, `spec S11`, ...).
Parameter values never appear in a message: they may be secrets.

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
from collections.abc import Mapping
from typing import Protocol

from fanout.aliyun.responses import Command
from fanout.aliyun.wire import compact_json
from fanout.errors import ConfigError
from fanout.schedule import Frequency, FrequencyError, parse

__all__ = [
    "DEFAULT_CONTENT_LIMIT_BYTES",
    "MAX_KEY_CHARS",
    "MAX_PARAMETERS",
    "SpecLike",
    "check_parameters",
    "check_schedule",
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


def check_schedule(spec: SpecLike, now_s: float) -> Frequency | None:
    """Spec S6/S7: `--timed` (or RepeatMode Period) needs a Frequency, and it must be valid."""
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

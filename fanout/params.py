"""Command parameters from every place they can come from (pure): parse, merge, offline rules.

Sources, later winning for the same name: `FANOUT_PARAM_<NAME>` variables < the config file's
`[rollout] params` < `--params-json JSON|@FILE|@-` < `--param-file FILE|-` (`KEY=VALUE` lines) <
`--param KEY=VALUE`. Only `--param` puts a value on the command line, where every local user
can read it (`/proc/PID/cmdline`): secret values belong in a file, stdin or the environment.

Rules from the seed document: P1 at most 10 pairs; P2 a key is non-empty and at most 64
characters; P3 a value may be empty; duplicates within one source are refused
(ParameterKey.Duplicate). The rules that need the command's definition (P4-P6, S11) are checked
against DescribeCommands by preflight.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from fanout import values
from fanout.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "MAX_KEY_LEN",
    "MAX_PARAMS",
    "check_offline_rules",
    "merge_params",
    "params_from_env",
    "params_from_file",
    "params_from_items",
    "params_from_json",
    "parse_params",
]

MAX_PARAMS = 10  # spec P1
MAX_KEY_LEN = 64  # spec P2
ENV_PREFIX = "FANOUT_PARAM_"
# Names are cut in messages so the error stays on one line.
_QUOTED_KEY_CHARS = 24


class _NotText:
    """What a JSON number, true/false/null or NaN parses to: never a parameter value."""


def _not_text(_text: str) -> _NotText:
    return _NotText()


def _quote(key: str) -> str:
    """A name for a message: escaped, cut short."""
    shown = values.shown(key[:_QUOTED_KEY_CHARS])
    return shown + ("..." if len(key) > _QUOTED_KEY_CHARS else "")


def params_from_json(text: str, where: str = "--params-json") -> dict[str, str]:
    """A JSON object of string values (numbers are refused, not converted: no 5 000-digit
    number, no NaN, is ever turned into text)."""
    try:
        loaded = json.loads(
            text,
            object_pairs_hook=lambda pairs: _no_duplicates(pairs, where),
            parse_int=_not_text,
            parse_float=_not_text,
            parse_constant=_not_text,
        )
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid JSON (nested too deeply)") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
        raise ConfigError(f"{where}: must be a JSON object of string values")
    return loaded


def _no_duplicates(pairs: list[tuple[str, object]], where: str) -> dict[str, object]:
    """object_pairs_hook refusing a key given twice."""
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            msg = f"{where}: parameter {_quote(key)} given twice (spec ParameterKey.Duplicate)"
            raise ConfigError(msg)
        result[key] = value
    return result


def params_from_items(items: Sequence[str], where: str = "--param") -> dict[str, str]:
    """`KEY=VALUE` items (the value may contain `=` and may be empty)."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{where} {_quote(key)}: expected KEY=VALUE")
        if key in result:
            raise ConfigError(f"{where} {_quote(key)}: given twice (spec ParameterKey.Duplicate)")
        result[key] = value
    return result


def params_from_file(text: str, where: str) -> dict[str, str]:
    """`KEY=VALUE` lines of a parameter file; blank lines and `#` comment lines are skipped, a
    value is the rest of its line as written (no quotes, no escapes); errors name file:line."""
    result: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"{where}:{number}: expected KEY=VALUE")
        if key in result:
            msg = f"{where}:{number}: parameter {_quote(key)} given twice (ParameterKey.Duplicate)"
            raise ConfigError(msg)
        result[key] = value
    return result


def params_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """`FANOUT_PARAM_<NAME>=VALUE` variables: parameter NAME (as written) with VALUE."""
    return {k[len(ENV_PREFIX) :]: v for k, v in env.items() if k.startswith(ENV_PREFIX)}


def merge_params(layers: Sequence[Mapping[str, str] | None]) -> dict[str, str] | None:
    """The layers merged, later winning for a name; None when no layer was given (P6)."""
    given = [layer for layer in layers if layer is not None]
    if not given:
        return None
    merged: dict[str, str] = {}
    for layer in given:
        merged.update(layer)
    check_offline_rules(merged)
    return merged


def parse_params(items: Sequence[str], json_text: str | None) -> dict[str, str] | None:
    """`--param KEY=VALUE` items over an optional JSON object; None when neither is given (P6)."""
    if not items and json_text is None:
        return None
    return merge_params(
        [
            params_from_json(json_text) if json_text is not None else None,
            params_from_items(items),
        ]
    )


def check_offline_rules(params: Mapping[str, str]) -> None:
    """P1 and P2, which need nothing but the parameters."""
    for key in params:
        if not key:
            raise ConfigError("--param: a parameter name may not be empty (spec P2)")
        if len(key) > MAX_KEY_LEN:
            raise ConfigError(
                f"--param {_quote(key)}: name longer than {MAX_KEY_LEN} characters (spec P2)"
            )
    if len(params) > MAX_PARAMS:
        raise ConfigError(f"--param: {len(params)} parameters, at most {MAX_PARAMS} (spec P1)")

"""Command parameters from the command line (pure): parse, and the rules checkable offline.

Rules from the seed document: P1 at most 10 pairs; P2 a key is non-empty and at most 64
characters; P3 a value may be empty; duplicates are refused (ParameterKey.Duplicate). The rules
that need the command's definition (P4-P6, S11) are checked against DescribeCommands by preflight.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fanout.errors import ConfigError

__all__ = ["MAX_KEY_LEN", "MAX_PARAMS", "check_offline_rules", "parse_params"]

MAX_PARAMS = 10  # spec P1
MAX_KEY_LEN = 64  # spec P2


def _from_json(text: str, where: str) -> dict[str, str]:
    """A JSON object of string values."""
    try:
        loaded = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        msg = f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})"
        raise ConfigError(msg) from exc
    if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
        msg = f"{where}: must be a JSON object of string values"
        raise ConfigError(msg)
    return loaded


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """object_pairs_hook refusing a key given twice."""
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            msg = f"--params-json: parameter {key!r} given twice (spec ParameterKey.Duplicate)"
            raise ConfigError(msg)
        result[key] = value
    return result


def parse_params(items: Sequence[str], json_text: str | None) -> dict[str, str] | None:
    """`--param KEY=VALUE` items over an optional JSON object; None when neither is given (P6)."""
    if not items and json_text is None:
        return None
    result = _from_json(json_text, "--params-json") if json_text is not None else {}
    seen: set[str] = set()
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            msg = f"--param {key!r}: expected KEY=VALUE"
            raise ConfigError(msg)
        if key in seen:
            msg = f"--param {key!r}: given twice (spec ParameterKey.Duplicate)"
            raise ConfigError(msg)
        seen.add(key)
        result[key] = value
    check_offline_rules(result)
    return result


def check_offline_rules(params: dict[str, str]) -> None:
    """P1 and P2, which need nothing but the parameters."""
    for key in params:
        if not key:
            msg = "--param: a parameter name may not be empty (spec P2)"
            raise ConfigError(msg)
        if len(key) > MAX_KEY_LEN:
            msg = f"--param {key[:20]}...: name longer than {MAX_KEY_LEN} characters (spec P2)"
            raise ConfigError(msg)
    if len(params) > MAX_PARAMS:
        msg = f"--param: {len(params)} parameters, at most {MAX_PARAMS} (spec P1)"
        raise ConfigError(msg)

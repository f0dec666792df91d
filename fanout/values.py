"""Typed values from flags, environment variables, TOML files and Python callers. Pure.

Every setting and every InvokeCommand option passes through one of these parsers, whatever its
source, so a value means the same thing and is refused the same way from a flag, a `FANOUT_*`
variable, a config file or the Python API. A parser returns the typed value or raises
`ValueRuleError` with the rule it breaks; the caller adds where the value came from (the flag, the
variable, `file:line`) and turns it into one `ConfigError` line.

- Integers are integers: `1.5`, `2.0`, `inf`, `1e400`, `true` and `"12abc"` are refused, not
  rounded; digits are bounded before `int()` is called (no 5 000-digit numbers).
- Numbers meant as a rate or a time are finite: `nan` and `inf` are refused; each has a range.
- Text is text: undecodable bytes from the command line or the environment (Python keeps them as
  lone surrogates), and control characters where a name is meant, are refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = [
    "ValueRuleError",
    "boolean",
    "choice",
    "integer",
    "number",
    "rate",
    "shown",
    "text",
    "undecodable",
]

# why 18 digits: every bound here is far below 10**18, and int() of a bounded string is cheap.
_MAX_INT_DIGITS = 18
_INTEGER = re.compile(r"[+-]?[0-9]{1,%d}" % _MAX_INT_DIGITS)  # noqa: UP031 - a regex with braces
# A decimal number as people write it (no hex, no underscores); inf and nan are refused apart.
_NUMBER = re.compile(
    r"[+-]?(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18})(?:[eE][+-]?[0-9]{1,3})?"
)
# why 40: enough to recognise a value in a message, short enough to keep it on one line.
_SHOWN_CHARS = 40
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SURROGATES = re.compile("[\ud800-\udfff]")
# C0 and C1 control characters and DEL: never part of a name, a path or a user name.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class ValueRuleError(ValueError):
    """A value breaks a rule; the message names the rule (not the source)."""


def shown(value: object) -> str:
    """A value for a message: quoted, escaped (never a raw control character or undecodable
    byte), cut short when long. Never call this on a secret."""
    text = (
        _int_text(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    )
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 4] + "...'"


def undecodable(value: str) -> bool:
    """True if `value` holds bytes that were not valid UTF-8 (kept as lone surrogates)."""
    return _SURROGATES.search(value) is not None


def integer(value: object, *, low: int, high: int) -> int:
    """An integer within `low..high`, from an int or its decimal text (never a float)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueRuleError(f"must be an integer from {low} to {high}, got {_kind(value)}")
    if isinstance(value, str):
        stripped = value.strip()
        if not _INTEGER.fullmatch(stripped):
            raise ValueRuleError(f"must be an integer from {low} to {high}, got {shown(value)}")
        value = int(stripped)
    if not low <= value <= high:
        raise ValueRuleError(f"must be an integer from {low} to {high}, got {_int_text(value)}")
    return value


def number(value: object, *, low: float, high: float, low_open: bool = False) -> float:
    """A finite number within `low..high` (above `low` when `low_open`), from an int, a float or
    its decimal text."""
    bound = (
        f"{'above' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} {high:g}"
    )
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueRuleError(f"must be a number {bound}, got {_kind(value)}")
    if isinstance(value, str):
        stripped = value.strip()
        if not _NUMBER.fullmatch(stripped):
            raise ValueRuleError(f"must be a finite number {bound}, got {shown(value)}")
        value = float(stripped)
    if isinstance(value, int) and abs(value) > 10**_MAX_INT_DIGITS:
        raise ValueRuleError(f"must be a number {bound}, got {_int_text(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueRuleError(f"must be a finite number {bound}, got {result}")
    if result < low or result > high or (low_open and result == low):
        raise ValueRuleError(f"must be a number {bound}, got {result:g}")
    return result


def rate(value: object, *, low: float, high: float) -> float:
    """A rate per second: 0 (no limit) or a finite number within `low..high`."""
    try:
        parsed = number(value, low=0.0, high=high)
    except ValueRuleError:
        raise ValueRuleError(
            f"must be 0 (no limit) or a number from {low:g} to {high:g}, got {_shown_any(value)}"
        ) from None
    if 0 < parsed < low:
        raise ValueRuleError(
            f"must be 0 (no limit) or a number from {low:g} to {high:g}, got {parsed:g}"
        )
    return parsed


def boolean(value: object) -> bool:
    """True or False, from a bool or its text (1/0, true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueRuleError(f"must be true or false, got {_shown_any(value)}")


def text(
    value: object,
    *,
    max_chars: int | None = None,
    allow_empty: bool = False,
    allow_control: bool = False,
    strip: bool = True,
) -> str:
    """A string: valid UTF-8 text, without control characters (unless allowed), within
    `max_chars` characters, non-empty unless allowed."""
    if not isinstance(value, str):
        raise ValueRuleError(f"must be text, got {_kind(value)}")
    if undecodable(value):
        raise ValueRuleError("is not valid UTF-8 text (it holds undecodable bytes)")
    result = value.strip() if strip else value
    if not allow_control and _CONTROL.search(result):
        raise ValueRuleError("must not contain control characters (newline, tab, NUL, ...)")
    if not result and not allow_empty:
        raise ValueRuleError("must not be empty")
    if max_chars is not None and len(result) > max_chars:
        raise ValueRuleError(f"is {len(result)} characters, at most {max_chars}")
    return result


def choice(value: object, options: Sequence[str]) -> str:
    """One of `options`, exactly."""
    if not isinstance(value, str) or value.strip() not in options:
        raise ValueRuleError(f"must be one of {', '.join(options)}, got {_shown_any(value)}")
    return value.strip()


def _kind(value: object) -> str:
    """What a value of the wrong type is, for a message (TOML types read like these)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, int | str):
        return shown(value)
    containers = ((list, "a list"), (tuple, "a list"), (dict, "a table"))
    return next(
        (name for kind, name in containers if isinstance(value, kind)), type(value).__name__
    )


def _int_text(value: int) -> str:
    """An integer for a message; a huge one by its size (str() of it may even be refused)."""
    if abs(value) < 10**_MAX_INT_DIGITS:
        return str(value)
    return f"a number of about {math.ceil(value.bit_length() * math.log10(2))} digits"


def _shown_any(value: object) -> str:
    """`shown` for text, `_kind` for anything else."""
    return shown(value) if isinstance(value, str) else _kind(value)

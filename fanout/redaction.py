"""Redaction of secret parameter values (design I5). Pure: no I/O.

A parameter is secret when the operator says so (`--secret-param KEY`) or when its name looks
like one (password, token, key, ...). Its value is replaced by `REDACTED` before parameters are
stored or logged, and `redact_text` scrubs the values out of any text (log lines, reports, error
messages) in every form they can take on the wire: as given, JSON-escaped inside `Parameters`,
percent-encoded once or twice (query string and string-to-sign) and form-encoded (POST body).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from functools import lru_cache
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "SECRET_KEY_PATTERN", "is_secret_key", "redact_params", "redact_text"]

REDACTED = "***"

# Names that look like secrets, matched anywhere in the name and case-insensitively: api_key,
# AccessKeyId, db_password, sessionToken, tls_cert, PRIVATE_KEY, auth_header, client_secret.
# Over-matching (e.g. "monkey") only hides a value; under-matching would leak one.
SECRET_KEY_PATTERN = re.compile(
    r"pass(?:word|wd|phrase)|pwd|secret|token|key|credential|private|auth|cert",
    re.IGNORECASE,
)

# why 4096: enough for every secret of a run and its processes, bounded for long-lived loggers.
_VARIANT_CACHE_SIZE = 4096


def _percent_encode(value: str) -> str:
    """The wire's RFC 3986 encoding (as `fanout.aliyun.signing.percent_encode`).

    Not imported from there: `fanout.aliyun` loads the HTTP client, and this module stays pure.
    """
    return quote(value, safe="~")


def is_secret_key(name: str) -> bool:
    """True when a parameter name looks like it holds a secret."""
    return SECRET_KEY_PATTERN.search(name) is not None


def redact_params(params: Mapping[str, str], secret_keys: Collection[str]) -> dict[str, str]:
    """A copy of `params` with the values of explicit and secret-looking keys replaced."""
    explicit = frozenset(secret_keys)
    return {
        key: REDACTED if key in explicit or is_secret_key(key) else value
        for key, value in params.items()
    }


@lru_cache(maxsize=_VARIANT_CACHE_SIZE)
def _variants(secret: str) -> tuple[str, ...]:
    """Every form in which `secret` can appear in fanout's own text, longest first."""
    escaped = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms = set(escaped)
    for form in escaped:
        once = _percent_encode(form)
        forms.update((once, _percent_encode(once), quote_plus(form, safe="~")))
    return tuple(sorted(forms, key=len, reverse=True))


def _spans(text: str, needles: Collection[str]) -> list[tuple[int, int]]:
    """Merged `(start, end)` ranges covering every (possibly overlapping) occurrence."""
    found: list[tuple[int, int]] = []
    for needle in needles:
        start = text.find(needle)
        while start >= 0:
            found.append((start, start + len(needle)))
            start = text.find(needle, start + 1)
    found.sort()
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def redact_text(text: str, secrets: Collection[str]) -> str:
    """`text` with every occurrence of each non-empty secret value replaced by `REDACTED`.

    Occurrences that overlap or touch are covered by one `REDACTED`, so no fragment of either
    secret survives (plain longest-first replacement would leave the tail of the shorter one).
    """
    needles = {form for secret in secrets if secret for form in _variants(secret)}
    needles = {n for n in needles if n in text}
    if not needles:
        return text
    parts: list[str] = []
    position = 0
    for start, end in _spans(text, needles):
        parts += (text[position:start], REDACTED)
        position = end
    parts.append(text[position:])
    return "".join(parts)

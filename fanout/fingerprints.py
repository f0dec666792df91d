"""Secret parameter values: never stored, only fingerprinted, and long enough to hide. Pure.

A run stores no secret value (I5), yet `resume` and `retry` must send exactly the values the run
started with: a different value would run a different command on part of the fleet. So a run
stores, per secret parameter, a fingerprint made with a slow key derivation function (scrypt)
and a random salt of its own; `resume` and `retry` refuse a value whose fingerprint differs.

A secret value shorter than `MIN_SECRET_CHARS` is refused unless the operator allows it: a short
value cannot be redacted from output without mangling ordinary text, and its fingerprint can be
brute-forced even through scrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection, Mapping

from fanout.errors import ConfigError, UsageError

__all__ = [
    "MIN_SECRET_CHARS",
    "check_fingerprints",
    "check_secret_lengths",
    "fingerprint",
    "mismatched",
    "new_salt",
    "secret_fingerprints",
]

MIN_SECRET_CHARS = 8
# scrypt's cost: 2**14 x 8 x 1 takes ~16 MiB and ~50 ms per value (OWASP's interactive floor is
# 2**17 x 8 x 1; this is the per-run cost times up to 10 secret parameters, on every resume).
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_DIGEST_BYTES = 32
_SALT_BYTES = 16


def new_salt() -> str:
    """A fresh random salt (hex), one per run."""
    return secrets.token_hex(_SALT_BYTES)


def fingerprint(value: str, salt: str) -> str:
    """The scrypt fingerprint (hex) of `value` with `salt` (hex)."""
    digest = hashlib.scrypt(
        value.encode("utf-8", "surrogatepass"),
        salt=bytes.fromhex(salt),
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        maxmem=_SCRYPT_MAXMEM,
        dklen=_DIGEST_BYTES,
    )
    return digest.hex()


def secret_fingerprints(
    parameters: Mapping[str, str], secret_keys: Collection[str], salt: str
) -> dict[str, str]:
    """Secret key -> the fingerprint of its value, for the keys that have a value."""
    return {key: fingerprint(parameters[key], salt) for key in secret_keys if key in parameters}


def mismatched(given: Mapping[str, str], stored: Mapping[str, str], salt: str) -> list[str]:
    """The keys of `stored` whose value in `given` has another fingerprint (sorted)."""
    return sorted(
        key
        for key, expected in stored.items()
        if key in given and not hmac.compare_digest(fingerprint(given[key], salt), expected)
    )


def check_secret_lengths(
    parameters: Mapping[str, str] | None, secret_keys: Collection[str], *, allow_short: bool
) -> None:
    """Refuse a secret value shorter than MIN_SECRET_CHARS, unless `allow_short`."""
    if allow_short or not parameters:
        return
    short = sorted(
        key for key in secret_keys if key in parameters and len(parameters[key]) < MIN_SECRET_CHARS
    )
    if short:
        raise ConfigError(
            f"secret parameter {short[0]!r}: its value is shorter than {MIN_SECRET_CHARS} "
            "characters, too short to redact from output or to fingerprint safely; use a longer "
            "secret, or give --allow-short-secret to accept that"
        )


def check_fingerprints(
    run_id: str, given: Mapping[str, str], stored: Mapping[str, str], salt: str
) -> None:
    """Refuse secret values that are not the ones run `run_id` started with."""
    wrong = mismatched(given, stored, salt)
    if wrong:
        raise UsageError(
            f"secret parameter {wrong[0]!r}: the value given is not the one run {run_id} started "
            "with (resume and retry send the same values; the run stores only a fingerprint)"
        )

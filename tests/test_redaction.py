"""Redaction of secret parameter names and values (design I5)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.aliyun.signing import percent_encode
from fanout.redaction import REDACTED, is_secret_key, redact_params, redact_text


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "DB_PASSWORD",
        "passwd",
        "pwd",
        "client_secret",
        "SessionToken",
        "api_key",
        "AccessKey",
        "accessKeyId",
        "PRIVATE_KEY",
        "credentials",
        "auth_header",
        "tls_cert",
        "passphrase",
    ],
)
def test_secret_looking_names_are_secret(name: str) -> None:
    """Names containing a secret word, in any case, are treated as secrets."""
    assert is_secret_key(name)


@pytest.mark.parametrize("name", ["name", "user", "region", "count", "path", "message", "version"])
def test_ordinary_names_are_not_secret(name: str) -> None:
    """Ordinary parameter names are kept visible."""
    assert not is_secret_key(name)


def test_redact_params_hides_explicit_and_pattern_keys_only() -> None:
    """Values of keys marked secret or looking secret become REDACTED; the rest are kept."""
    params = {"name": "Jack", "greeting": "hi", "api_key": "AK123", "Token": "", "path": "/x"}
    assert redact_params(params, ["greeting"]) == {
        "name": "Jack",
        "greeting": REDACTED,
        "api_key": REDACTED,
        "Token": REDACTED,
        "path": "/x",
    }
    assert params["api_key"] == "AK123"  # the input is not modified


def test_redact_params_of_nothing_is_empty() -> None:
    """No parameters give an empty mapping."""
    assert redact_params({}, ["x"]) == {}


def test_redact_text_replaces_every_occurrence() -> None:
    """Each occurrence of each secret value is replaced."""
    text = "user=jack pw=hunter2 again hunter2 end"
    assert redact_text(text, ["hunter2"]) == "user=jack pw=*** again *** end"


def test_redact_text_ignores_empty_secrets_and_leaves_clean_text_alone() -> None:
    """An empty secret redacts nothing and text without secrets is returned unchanged."""
    assert redact_text("nothing here", ["", "absent"]) == "nothing here"
    assert redact_text("", ["x"]) == ""


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("x abcde y", ["abcd", "bcde"], "x *** y"),  # overlapping: no tail survives
        ("x abcdef y", ["abc", "abcdef"], "x *** y"),  # nested: the longer one wins
        ("abab", ["ab"], "***"),  # adjacent occurrences merge
        ("aaaa", ["aa"], "***"),
        ("k=s3cr3t;k2=s3c", ["s3c", "s3cr3t"], "k=***;k2=***"),
    ],
)
def test_redact_text_with_overlapping_secrets_leaves_no_fragment(
    text: str, secrets: list[str], expected: str
) -> None:
    """Overlapping, nested or adjacent secrets are covered completely."""
    assert redact_text(text, secrets) == expected


def test_redact_text_covers_json_and_percent_encoded_forms() -> None:
    """A secret is also hidden where it appears JSON-escaped or percent-encoded on the wire."""
    secret = 'p@ss "w/rd" 中'
    parameters = json.dumps({"pw": secret})
    query = "Parameters=" + percent_encode(parameters)
    string_to_sign = "POST&%2F&" + percent_encode(query)
    for text in (secret, parameters, query, string_to_sign):
        redacted = redact_text(text, [secret])
        assert REDACTED in redacted
        for fragment in ("ss", "rd", "中", "%E4%B8%AD"):
            assert fragment not in redacted


@given(st.text(max_size=40), st.lists(st.text(min_size=1, max_size=6), max_size=4))
def test_no_secret_survives_redaction(text: str, secrets: list[str]) -> None:
    """After redaction no secret value occurs in the text (unless it is part of REDACTED)."""
    redacted = redact_text(text, secrets)
    for secret in secrets:
        if secret not in REDACTED:
            # Between the markers: a marker stand-in could itself be a secret ("\x00" was one).
            assert all(secret not in part for part in redacted.split(REDACTED))

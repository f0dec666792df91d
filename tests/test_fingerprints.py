"""Secret parameter values are stored only as fingerprints (issue 16): scrypt with a salt of each
run's own, never the value; resume and retry compare against them (tests/cli/test_validation.py
shows the refusals). Here: what a run really writes to its ledger, and that the KDF is the slow
one the issue asks for."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import DEMO_PARAM_COMMAND_ID, EmulatorThread
from fanout.errors import ConfigError
from fanout.fingerprints import (
    MIN_SECRET_CHARS,
    check_secret_lengths,
    fingerprint,
    mismatched,
    new_salt,
)
from tests.conftest import Fanout, both_backends, fleet_ids, ledger_sql, write_targets

SECRET = "correct-horse-battery-staple"
FLEET: dict[str, Any] = {"instances_per_region": 4, "stopped_fraction": 0, "classic_fraction": 0}


def _scrypt(value: str, salt: str) -> str:
    """scrypt at the cost the module documents (2**14 x 8 x 1, 32 bytes), computed here."""
    return hashlib.scrypt(
        value.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1, maxmem=2**26, dklen=32
    ).hex()


@both_backends
def test_each_run_stores_a_salted_scrypt_fingerprint_and_never_the_value(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    ledger_location: str,
    tmp_path: Path,
) -> None:
    """Two runs with the same secret value: each run's ledger row holds a salt of its own (16
    random bytes) and the scrypt of the value under it - so the two fingerprints differ - and
    no byte of the value; the plain parameter is stored as given."""
    emu = emulator(**FLEET)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET)[:2])
    (tmp_path / "p.env").write_text(f"name=web\nversion={SECRET}\n")
    args = (
        "run", "--command-id", DEMO_PARAM_COMMAND_ID, "--targets", str(targets),
        "--param-file", str(tmp_path / "p.env"), "--secret-param", "version", "--yes",
    )  # fmt: skip
    run_ids = []
    for _ in range(2):
        done = cli.run(*args, "--allow-overlap")
        assert done.returncode == 0, done.stderr
        run_ids.append(done.stdout.splitlines()[0].strip())
    rows = ledger_sql(ledger_location, "SELECT run_id, parameters, options FROM runs")
    assert sorted(r[0] for r in rows) == sorted(run_ids)
    salts = set()
    for _run_id, parameters, options in rows:
        params = parameters if isinstance(parameters, dict) else json.loads(parameters)
        opts = options if isinstance(options, dict) else json.loads(options)
        assert params["name"] == "web"
        assert SECRET not in json.dumps(params) + json.dumps(opts)
        stored = opts["secret_fingerprints"]
        assert re.fullmatch(r"[0-9a-f]{32}", stored["salt"])
        assert stored["values"] == {"version": _scrypt(SECRET, stored["salt"])}
        salts.add(stored["salt"])
    assert len(salts) == 2  # a salt per run: equal values do not give equal fingerprints
    if not ledger_location.startswith("postgresql"):
        assert SECRET.encode() not in Path(ledger_location).read_bytes()


def test_the_fingerprint_is_scrypt_and_compares_by_value() -> None:
    """`fingerprint` is scrypt (not a fast hash) under the given salt; `mismatched` names the
    keys whose value differs, and only those."""
    salt = new_salt()
    assert salt != new_salt()
    assert fingerprint(SECRET, salt) == _scrypt(SECRET, salt)
    assert fingerprint(SECRET, salt) != fingerprint(SECRET, new_salt())
    stored = {"version": fingerprint(SECRET, salt), "token": fingerprint("token-value-1", salt)}
    given = {"version": SECRET, "token": "token-value-2", "plain": "x"}
    assert mismatched(given, stored, salt) == ["token"]


@pytest.mark.parametrize("length", [1, 3, MIN_SECRET_CHARS - 1])
def test_short_secret_values_are_refused_unless_allowed(length: int) -> None:
    """A secret value under 8 characters is refused naming the key (the issue: values under 4
    were not even registered for redaction); `allow_short` accepts it; 8 is enough."""
    params = {"version": "x" * length, "name": "a"}
    with pytest.raises(ConfigError, match=r"secret parameter 'version'.*--allow-short-secret"):
        check_secret_lengths(params, ["version"], allow_short=False)
    check_secret_lengths(params, ["version"], allow_short=True)
    check_secret_lengths({"version": "x" * MIN_SECRET_CHARS}, ["version"], allow_short=False)

"""What only the PostgreSQL ledger has: URL redaction, migrations, run-ownership fences and
session-lock liveness. The shared behaviour is in test_ledger.py (both backends)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from fanout.cli import main
from fanout.errors import ConfigError, LedgerError
from fanout.ledger import AcquireLease, BeginAttempt, LedgerStore, open_ledger, redact_location
from fanout.ledger.location import location_password
from fanout.ledger.pg_schema import SCHEMA_VERSION
from tests.conftest import Fanout, postgres_only
from tests.test_ledger import RUN, _batch, _run


@pytest.mark.parametrize(
    ("location", "shown", "password"),
    [
        ("postgresql://u:s3cret@db:5432/f", "postgresql://u:***@db:5432/f", "s3cret"),
        ("postgres://u:p@ss:w@rd@db/f", "postgres://u:***@db/f", "p@ss:w@rd"),
        ("postgresql://u:%40pw@db/f", "postgresql://u:***@db/f", "@pw"),
        ("postgresql://u@db/f?password=x1y2&sslmode=require", None, "x1y2"),
        ("postgresql://db/f", "postgresql://db/f", None),
        ("/var/lib/fanout/ledger.sqlite3", "/var/lib/fanout/ledger.sqlite3", None),
    ],
)
def test_urls_are_shown_without_their_password(
    location: str, shown: str | None, password: str | None
) -> None:
    """A ledger URL's password, in the user part or the query, never appears when it is shown."""
    redacted = redact_location(location)
    if shown is not None:
        assert redacted == shown
    if password is not None:
        assert password not in redacted
    assert location_password(location) == password


def test_without_psycopg_a_url_is_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """psycopg not installed: a PostgreSQL ledger is a ConfigError (exit 2) naming the extra to
    install and the redacted URL; nothing is connected to."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    with pytest.raises(ConfigError) as info:
        open_ledger("postgresql://fanout:s3cret@db.example:5432/fanout")
    assert str(info.value) == (
        "ledger postgresql://fanout:***@db.example:5432/fanout: the PostgreSQL driver psycopg "
        "is not installed; pip install 'fanout[postgres]'"
    )


def test_cli_without_psycopg_says_what_to_install_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`fanout runs --ledger postgresql://...` without psycopg exits 2 with one line naming
    `pip install 'fanout[postgres]'`, and no password."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    env = {"HOME": str(tmp_path), "FANOUT_LEDGER": None, "FANOUT_CONFIG": None}
    url = "postgresql://fanout:s3cret@db.example:5432/fanout"
    result = CliRunner().invoke(main, ["runs", "--ledger", url], env=env)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "fanout: error: ledger postgresql://fanout:***@db.example:5432/fanout: the PostgreSQL "
        "driver psycopg is not installed; pip install 'fanout[postgres]'"
    ]


@postgres_only
def test_wrong_password_is_refused_without_showing_it(ledger_location: str) -> None:
    """A refused connection is a LedgerError naming the redacted URL, never the password."""
    wrong = ledger_location.replace("fanout:", "fanout:Wr0ngPassw0rd", 1)
    with pytest.raises(LedgerError) as info:
        open_ledger(wrong)
    assert "Wr0ngPassw0rd" not in str(info.value)
    assert "fanout:***@127.0.0.1" in str(info.value)
    assert "password authentication failed" in str(info.value)


@postgres_only
def test_cli_refuses_a_bad_url_in_one_line(ledger_location: str, tmp_path: object) -> None:
    """`fanout runs` on an unreachable ledger exits 2 with one line and no password in it."""
    wrong = ledger_location.replace("fanout:", "fanout:Wr0ngPassw0rd", 1)
    cli = Fanout(endpoint="http://127.0.0.1:9", ledger=wrong, home=tmp_path)  # type: ignore[arg-type]
    done = cli.run("runs")
    assert done.returncode == 2
    assert "Wr0ngPassw0rd" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fanout: error: postgresql://fanout:***@127.0.0.1:")


@postgres_only
def test_schema_is_migrated_once_and_a_newer_one_refused(ledger_location: str) -> None:
    """Opening migrates to the newest schema; a ledger from a newer fanout is refused."""
    open_ledger(ledger_location).close()
    open_ledger(ledger_location).close()  # idempotent
    with psycopg.connect(ledger_location, autocommit=True) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert row is not None
        assert int(row[0]) == SCHEMA_VERSION
        conn.execute("UPDATE meta SET value = %s", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(LedgerError, match="newer than this fanout"):
        open_ledger(ledger_location)


def _lease(store: LedgerStore, op: AcquireLease) -> tuple[object, ...]:
    """Apply one lease operation alone: (granted, holder, until)."""
    (result,) = store.apply([op])
    assert isinstance(result, tuple)
    return result


def _begin(now: float) -> BeginAttempt:
    return BeginAttempt(RUN, f"{RUN}-b0", "cn-hangzhou", 1, "tok-0", "acct", now - 86_400, 10, now)


@postgres_only
def test_a_runner_whose_lease_was_taken_writes_no_new_intent(ledger_location: str) -> None:
    """After another owner forces the lease, the old holder's next intent is refused whole."""
    old, new = open_ledger(ledger_location), open_ledger(ledger_location)
    old.create_run(_run(), [_batch(0, ("i-a",))])
    now = time.time()
    assert _lease(old, AcquireLease(RUN, "host-a:1", now + 60, now)) == (True, "host-a:1", now + 60)
    forced = _lease(new, AcquireLease(RUN, "host-b:2", now + 60, now, force=True))
    assert forced == (True, "host-b:2", now + 60)
    with pytest.raises(LedgerError, match="taken over by host-b:2"):
        old.apply([_begin(now)])
    assert old.quota_used("acct", 0) == {}  # nothing was reserved
    assert new.apply([_begin(now)]) == [True]
    old.close()
    new.close()


@postgres_only
def test_lease_of_a_gone_connection_is_taken_at_once(ledger_location: str) -> None:
    """A live lease is refused to others while its holder is connected, and free as soon as
    the holder's connection is gone, long before it expires."""
    holder, other = open_ledger(ledger_location), open_ledger(ledger_location)
    holder.create_run(_run(), [_batch(0, ("i-a",))])
    now = time.time()
    assert _lease(holder, AcquireLease(RUN, "host-a:1", now + 600, now))[0] is True
    refused = _lease(other, AcquireLease(RUN, "host-b:2", now + 600, now))
    assert refused == (False, "host-a:1", now + 600)
    holder.close()  # as when its process is killed: the server ends the session
    deadline = time.monotonic() + 10
    while True:
        granted, owner, _until = _lease(other, AcquireLease(RUN, "host-b:2", now + 600, now))
        if granted or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (granted, owner) == (True, "host-b:2")
    other.close()

"""What only the PostgreSQL ledger has: URL redaction, migrations, run-ownership fences and
session-lock liveness. The shared behaviour is in test_ledger.py (both backends)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from fanout.cli import main
from fanout.errors import ConfigError, LedgerError
from fanout.ledger import AcquireLease, BeginAttempt, LedgerStore, open_ledger, redact_location
from fanout.ledger import postgres as pg_ledger
from fanout.ledger.location import location_password
from fanout.ledger.pg_schema import SCHEMA_VERSION
from tests.conftest import Fanout, postgres_only
from tests.pg_stall import STALL_OWNER
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


def _is_stopped(proc: subprocess.Popen[str]) -> bool:
    """True once `proc` is stopped (SIGSTOP): state T in /proc/PID/stat."""
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """fn(), run in a thread; fails the test if it is still blocked after `seconds`."""
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert done, f"still blocked after {seconds} s"
    return done[0]


@postgres_only
@pytest.mark.parametrize("point", ["quota", "lease", "commit"])
def test_a_holder_stopped_inside_a_group_blocks_no_takeover(
    ledger_location: str, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder stopped (SIGSTOP) in a group of writes - transaction open, its quota lock or the
    run's row locked, its session waiting for it mid-pipeline or idle in the transaction with the
    server's own timer disarmed - is named to another runner
    at once while its lease runs; once the lease has expired that runner takes the run over and
    reserves quota within the stalled-session limit plus lock_timeout (here 2 s + 0.5 s), and
    the holder, woken, writes nothing."""
    monkeypatch.setattr(pg_ledger, "_IDLE_IN_TRANSACTION_TIMEOUT_MS", 2_000)
    monkeypatch.setattr(pg_ledger, "_LOCK_TIMEOUT_MS", 500)
    taker = open_ledger(ledger_location)
    taker.create_run(_run(), [_batch(0, ("i-a",))])
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.pg_stall", ledger_location, point, "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    taken_over = False
    try:
        leased, _, until_text = holder.stdout.readline().partition(" ")
        assert leased == "leased", leased
        until = float(until_text)
        deadline = time.monotonic() + 30
        while not _is_stopped(holder):
            assert holder.poll() is None, "the holder ended without stopping"
            assert time.monotonic() < deadline, "the holder never stopped"
            time.sleep(0.02)
        asked = time.time()
        refused = _within(3.0, lambda: _lease(taker, AcquireLease(RUN, "b:2", asked + 60, asked)))
        assert refused == (False, STALL_OWNER, until)
        time.sleep(max(0.0, until + 0.2 - time.time()))
        now = time.time()
        taken = _within(
            8.0,
            lambda: (
                _lease(taker, AcquireLease(RUN, "b:2", now + 60, now)),
                taker.apply([_begin(now)]),
            ),
        )
        assert taken == ((True, "b:2", now + 60), [True])
        taken_over = True
    finally:
        if not taken_over:
            holder.kill()  # its session ends: whatever a blocked taker waits for is freed
        holder.send_signal(signal.SIGCONT)
        said, errors = holder.communicate(timeout=30)
        used = taker.quota_used("acct", 0)
        taker.close()
    assert holder.returncode == 3, said + errors
    assert said.startswith("refused: "), said
    assert {r: n for r, (n, _oldest) in used.items()} == {"cn-hangzhou": 1}

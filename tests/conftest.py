"""Shared fixtures: the emulator on 127.0.0.1, `fanout` run as a real subprocess, and the ledger
location it uses: a SQLite file in tmp_path by default, or a fresh PostgreSQL database for tests
parametrized with `both_backends` (or `postgres_only`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    EmulatorConfig,
    EmulatorThread,
)
from fanout.emulator.fleet import Fleet
from fanout.ledger import is_postgres_location
from tests.pgserver import POSTGRES_ENV, Server, fresh_database, start_server

BACKENDS = ("sqlite", "postgres")
# Run a test once per ledger backend (the `ledger_location` fixture), or on PostgreSQL only.
both_backends = pytest.mark.parametrize("ledger_location", BACKENDS, indirect=True)
postgres_only = pytest.mark.parametrize("ledger_location", ["postgres"], indirect=True)


@dataclass
class Fanout:
    """Runs the `fanout` CLI as a subprocess against one emulator and one ledger file."""

    endpoint: str
    ledger: str  # a SQLite file path or a postgresql:// URL
    home: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    # The command line of every process started, as `ps` shows it to every local user.
    cmdlines: list[bytes] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """A clean environment: demo keys, the emulator endpoint, the ledger, a private HOME."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
        return {
            **keep,
            "HOME": str(self.home),
            "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
            "FANOUT_ENDPOINT": self.endpoint,
            "FANOUT_LEDGER": self.ledger,
            "PYTHONUNBUFFERED": "1",
        }

    def argv(self, *args: str) -> list[str]:
        """The command line for `fanout ARGS`."""
        return [sys.executable, "-m", "fanout", *args]

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion; stdout and stderr captured as text."""
        proc = subprocess.Popen(
            self.argv(*args),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or self.env,
        )
        self._record(proc)
        try:
            out, err = proc.communicate(stdin.decode() if stdin is not None else None, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def _record(self, proc: subprocess.Popen[str]) -> None:
        """Keep the process's command line as /proc shows it (read while it runs: it reads
        empty for a moment while the new program is being loaded, and once it has exited)."""
        # Before the exec the child shows this process's own command line; on a loaded machine
        # the exec can take a while, so wait for it (bounded) rather than a fixed few tries.
        own = Path("/proc/self/cmdline").read_bytes()
        deadline = time.monotonic() + 10
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline and proc.poll() is None:
                line = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                if line and line != own:
                    self.cmdlines.append(line)
                    return
                time.sleep(0.002)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start in the background (for kill tests); reaped at the end of the test."""
        proc = subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or self.env,
        )
        self._record(proc)
        self.procs.append(proc)
        return proc

    def reap(self) -> None:
        """Kill what still runs and close every pipe."""
        for proc in self.procs:
            close(proc)


def close(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Send `sig` if still running, wait, and close its pipes."""
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            pipe.close()


@pytest.fixture
def emulator() -> Iterator[Callable[..., EmulatorThread]]:
    """Start emulators (in background threads) with the given config fields; stopped at the end."""
    with ExitStack() as stack:

        def start(**fields: Any) -> EmulatorThread:
            return stack.enter_context(EmulatorThread(EmulatorConfig(**fields)))

        yield start


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A PostgreSQL server's admin URL: $FANOUT_TEST_POSTGRES, else a throwaway server.

    Skipped only where neither is possible; in CI (CI=true) that is a failure, not a skip.
    """
    url = os.environ.get(POSTGRES_ENV)
    if url:
        yield url
        return
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    server = start_server(Path(tempfile.mkdtemp(prefix="fanout-pg-")))
    if not isinstance(server, Server):
        reason = f"PostgreSQL ledger tests need {POSTGRES_ENV} or a local server: {server}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"in CI: {reason}")
        pytest.skip(reason)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def ledger_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the test's ledger lives: a SQLite file in tmp_path (default), or a fresh
    PostgreSQL database (dropped afterwards) when parametrized indirectly with "postgres"."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield str(tmp_path / "ledger.sqlite3")
        return
    assert backend == "postgres", backend
    with fresh_database(request.getfixturevalue("postgres_admin_url")) as url:
        yield url


def ledger_sql(location: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one SQL statement straight on a ledger of either backend (commits); its rows."""
    if is_postgres_location(location):
        import psycopg  # noqa: PLC0415 - only for PostgreSQL ledgers

        with psycopg.connect(location, autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []
    with sqlite3.connect(location) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def fanout_cli(
    tmp_path: Path, ledger_location: str
) -> Iterator[Callable[[EmulatorThread], Fanout]]:
    """A Fanout runner bound to an emulator and the test's ledger (`ledger_location`)."""
    home = tmp_path / "home"
    home.mkdir()
    bound: list[Fanout] = []

    def bind(emu: EmulatorThread) -> Fanout:
        cli = Fanout(endpoint=emu.url, ledger=ledger_location, home=home)
        bound.append(cli)
        return cli

    yield bind
    for cli in bound:
        cli.reap()


def write_targets(path: Path, snapshot_instances: Sequence[tuple[str, str]]) -> Path:
    """A target file of `region,instance_id` lines."""
    path.write_text("".join(f"{region},{iid}\n" for region, iid in snapshot_instances))
    return path


def control(emu: EmulatorThread, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to one of the emulator's /_emulator control endpoints (loopback only)."""
    request = urllib.request.Request(
        f"{emu.url}/_emulator/{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read() or b"{}")
        return result


def invoked_instances(snapshot: dict[str, Any]) -> dict[str, int]:
    """Instance id -> how many accepted invocations named it (the emulator's own record)."""
    counts: dict[str, int] = {}
    for invocation in snapshot["invocations"]:
        for iid in invocation["instance_ids"]:
            counts[iid] = counts.get(iid, 0) + 1
    return counts


def fleet_ids(**fields: Any) -> list[tuple[str, str]]:
    """(region, id) of every instance the emulator generates for these config fields."""
    fleet = Fleet.from_config(EmulatorConfig(**fields))
    return [(r, i.instance_id) for r, rf in sorted(fleet.regions.items()) for i in rf.instances]


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30) -> None:
    """Poll until `predicate()` holds (fails the test after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)

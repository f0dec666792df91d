"""A PostgreSQL server for the shared-ledger tests, and a fresh database per test.

`.ci/run` starts one and exports FANOUT_TEST_POSTGRES (an admin URL). Without that variable the
tests start a throwaway server themselves from the binaries on the machine, the same way
(`initdb` + `pg_ctl` as the `postgres` user when running as root, 127.0.0.1, random password).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

__all__ = ["POSTGRES_ENV", "Server", "fresh_database", "start_server"]

POSTGRES_ENV = "FANOUT_TEST_POSTGRES"
_SERVER_USER = "postgres"  # initdb and postgres refuse to run as root
_START_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class Server:
    """A running throwaway server: its admin URL and how to stop it."""

    url: str
    data_dir: Path
    bin_dir: Path
    as_owner: tuple[str, ...]

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its files."""
        pg_ctl = str(self.bin_dir / "pg_ctl")
        subprocess.run(
            [*self.as_owner, pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def _bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin with initdb, or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(base: Path) -> Server | str:
    """Start a server in `base` (removed if that fails); else the reason, as a string."""
    server = _start_server(base)
    if not isinstance(server, Server):
        shutil.rmtree(base, ignore_errors=True)
    return server


def _start_server(base: Path) -> Server | str:
    """initdb and pg_ctl start in `base`; the reason as a string if that is not possible here."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)"
    as_owner: tuple[str, ...] = ()
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd  # noqa: PLC0415 - POSIX only

            owner = pwd.getpwnam(_SERVER_USER)
        except KeyError:
            return f"running as root and there is no {_SERVER_USER!r} user to run initdb as"
        if runuser is None:
            return "running as root and runuser is missing"
        as_owner = (runuser, "-u", _SERVER_USER, "--")
        os.chown(base, owner.pw_uid, owner.pw_gid)
    base.chmod(0o700)
    password = secrets.token_hex(16)
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if as_owner:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    data = base / "data"
    init_args = ("-U", "fanout", f"--pwfile={pwfile}", "--auth=scram-sha-256", "--no-sync")
    init = subprocess.run(
        [*as_owner, str(bin_dir / "initdb"), "-D", str(data), "-E", "UTF8", *init_args],
        capture_output=True,
        text=True,
        check=False,
    )
    pwfile.unlink()
    if init.returncode != 0:
        return f"initdb failed: {init.stderr.strip()[-300:]}"
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base}"
    start_args = ("-w", "-t", str(_START_TIMEOUT_S), "-o", options, "start")
    started = subprocess.run(
        [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), *start_args],
        capture_output=True,
        text=True,
        check=False,
    )
    if started.returncode != 0:
        return f"pg_ctl start failed: {started.stderr.strip()[-300:]}"
    url = f"postgresql://fanout:{password}@127.0.0.1:{port}/postgres"
    return Server(url=url, data_dir=data, bin_dir=bin_dir, as_owner=as_owner)


def with_database(url: str, name: str) -> str:
    """The same server URL naming another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards (connections closed by force)."""
    name = f"fanout_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

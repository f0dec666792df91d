"""Shared fixtures: the emulator on 127.0.0.1 and `fanout` run as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


@dataclass
class Fanout:
    """Runs the `fanout` CLI as a subprocess against one emulator and one ledger file."""

    endpoint: str
    ledger: Path
    home: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

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
            "FANOUT_LEDGER": str(self.ledger),
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
        return subprocess.run(
            self.argv(*args),
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or self.env,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start in the background (for kill tests); reaped at the end of the test."""
        proc = subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
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


@pytest.fixture
def fanout_cli(tmp_path: Path) -> Iterator[Callable[[EmulatorThread], Fanout]]:
    """A Fanout runner bound to an emulator and a ledger in tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    bound: list[Fanout] = []

    def bind(emu: EmulatorThread) -> Fanout:
        cli = Fanout(endpoint=emu.url, ledger=tmp_path / "ledger.sqlite3", home=home)
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

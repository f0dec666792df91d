"""`fanout emulator ...` as its own process, as an operator starts it: the flags are parsed by
the real command line (not an `EmulatorConfig` built in the test), and the CLI under test talks
to it over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import close

_FIRST_LINE_PREFIX = "fanout emulator listening on "


@contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """Start `fanout emulator --port 0 ARGS`; yield its URL; stop it at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().rstrip("\n")
        assert line.startswith(_FIRST_LINE_PREFIX), (line, proc.stderr and proc.stderr.read())
        yield line.removeprefix(_FIRST_LINE_PREFIX)
    finally:
        close(proc)


def listed_targets(*args: str) -> list[str]:
    """The target lines `fanout emulator ARGS --list` prints for its fleet (first column)."""
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "emulator", *args, "--list"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return [ln.split("\t")[0] for ln in done.stdout.splitlines() if ln and not ln.startswith("#")]


def state(url: str) -> dict[str, Any]:
    """`GET /_emulator/state` of a running emulator process."""
    with urllib.request.urlopen(f"{url}/_emulator/state", timeout=10) as response:
        doc: dict[str, Any] = json.loads(response.read())
        return doc

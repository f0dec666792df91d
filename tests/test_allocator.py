"""`fanout.allocator`: glibc's malloc told to give freed memory back, unless the operator said
otherwise (each setting's environment variable keeps precedence)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_GLIBC = (
    bool(os.confstr("CS_GNU_LIBC_VERSION")) if "CS_GNU_LIBC_VERSION" in os.confstr_names else False
)
_VARIABLES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _tuned(**env: str) -> dict[str, int]:
    """What `tune()` applies in a fresh interpreter with `env` added to a clean environment."""
    clean = {k: v for k, v in os.environ.items() if k not in _VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", "import json; from fanout import allocator; "
         "print(json.dumps(allocator.tune()))"],
        env={**clean, **env}, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    result: dict[str, int] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not _GLIBC, reason="glibc only")
def test_glibc_is_given_two_arenas_and_128_kib_thresholds() -> None:
    assert _tuned() == {
        "MALLOC_ARENA_MAX": 2,
        "MALLOC_MMAP_THRESHOLD_": 128 * 1024,
        "MALLOC_TRIM_THRESHOLD_": 128 * 1024,
    }


@pytest.mark.skipif(not _GLIBC, reason="glibc only")
def test_a_setting_the_operator_made_is_left_as_it_is() -> None:
    assert _tuned(MALLOC_ARENA_MAX="8", MALLOC_TRIM_THRESHOLD_="0") == {
        "MALLOC_MMAP_THRESHOLD_": 128 * 1024
    }


def test_the_commands_tuned_are_commands() -> None:
    """Each command the CLI tunes the allocator for exists (a renamed one would go untuned)."""
    from fanout.cli import app  # noqa: PLC0415

    assert set(app._COMMANDS) >= app._LONG_RUNNING
    assert {"run", "resume", "retry", "simulate"} <= app._LONG_RUNNING

"""A bug is never reported as bad input: the real `fanout` entry point exits 70 with one stderr
line naming a file that holds the traceback, secrets redacted.

A programming error has no legitimate input that triggers it (each one found is fixed), so the
bug is planted: a ledger read that raises `RuntimeError`, under the real `main`.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from fanout.cli import main
from fanout.ledger.model import RunRecord
from fanout.ledger.sqlite import SqliteLedger
from fanout.logs import register_secret

SECRET = "s3cr3t-in-a-bug-message"
ONE_LINE = re.compile(r"fanout: internal error \(a bug\): RuntimeError; traceback in (\S+)")


@pytest.fixture(autouse=True)
def _buggy_ledger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Listing runs raises a RuntimeError whose message carries a registered secret."""

    def list_runs(_store: SqliteLedger, limit: int = 50) -> list[RunRecord]:
        raise RuntimeError(f"ledger exploded (limit {limit}, token {SECRET})")

    register_secret(SECRET)
    monkeypatch.setattr(SqliteLedger, "list_runs", list_runs)
    yield
    structlog.reset_defaults()


def runs(tmp_path: Path, **env: str) -> Result:
    """`fanout runs` on a fresh ledger in `tmp_path`, with this environment."""
    cleared: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith(("FANOUT_", "ALIBABA_CLOUD_", "XDG_"))
    }
    ledger = str(tmp_path / "ledger.sqlite3")
    SqliteLedger(Path(ledger)).close()  # a ledger to list (a read creates none)
    return CliRunner().invoke(
        main, ["runs", "--ledger", ledger], env={**cleared, "HOME": str(tmp_path), **env}
    )


def crash_file(result: Result) -> Path:
    """The file named by the one stderr line (which must be all of stderr)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    found = ONE_LINE.fullmatch(lines[0])
    assert found, lines[0]
    return Path(found[1])


def test_a_bug_exits_70_with_one_line_naming_the_traceback(tmp_path: Path) -> None:
    """A RuntimeError inside a command exits 70, prints nothing on stdout and one stderr line;
    the file it names, in $XDG_STATE_HOME/fanout and readable by its owner only, holds the
    traceback with the secret redacted."""
    result = runs(tmp_path, XDG_STATE_HOME=str(tmp_path / "state"))
    assert result.exit_code == 70, (result.output, result.exception)
    assert result.stdout == ""
    path = crash_file(result)
    assert path.parent == tmp_path / "state" / "fanout"
    assert path.name.startswith("crash-")
    assert path.suffix == ".txt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text(encoding="utf-8")
    assert text.startswith("fanout ")
    assert "Traceback (most recent call last):" in text
    assert "in list_runs" in text
    assert "RuntimeError: ledger exploded (limit 20, token ***)" in text
    assert SECRET not in text
    assert SECRET not in result.stderr


def test_the_traceback_goes_to_the_temp_folder_when_the_state_folder_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With $XDG_STATE_HOME unusable (a file), the traceback lands in the temporary folder."""
    (tmp_path / "state").write_text("not a folder\n")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    result = runs(tmp_path, XDG_STATE_HOME=str(tmp_path / "state"))
    assert result.exit_code == 70
    path = crash_file(result)
    assert path.parent == tmp_path / "tmp"
    assert "RuntimeError: ledger exploded" in path.read_text(encoding="utf-8")


def test_the_help_documents_exit_70() -> None:
    """`fanout --help` lists exit code 70 after 0-6."""
    result = CliRunner().invoke(main, ["--help"])
    block = result.stdout.split("Exit codes:", 1)[1]
    assert re.search(r"^\s+70\s+internal error \(a bug\)", block, flags=re.MULTILINE)

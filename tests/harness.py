"""The real `fanout` entry point run in-process against the emulator, for the input tests and the
fuzz suite: a private folder, demo credentials, and what a refusal must leave behind (nothing).

`Sandbox.invoke` runs `main` through click's runner with a clean environment; `invocations`
counts every InvokeCommand the emulator saw, refused for its signature or not; `files` lists
what exists under the sandbox, so a test can check that a refused input created nothing.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from click.testing import CliRunner, Result

from fanout.cli import main
from fanout.emulator import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, EmulatorThread

__all__ = ["DOCUMENTED_EXIT_CODES", "Sandbox", "one_error_line"]

# DESIGN section 3: every exit code fanout may end with (70: a bug, never expected here).
DOCUMENTED_EXIT_CODES = frozenset({0, 1, 2, 3, 4, 5, 6})


@dataclass
class Sandbox:
    """A folder (the current directory while invoked) with a private HOME, state and config
    folders, demo credentials and one emulator."""

    tmp: Path
    emu: EmulatorThread
    extra_env: dict[str, str | None] = field(default_factory=dict)

    @property
    def ledger(self) -> Path:
        """The default ledger of the sandbox (FANOUT_LEDGER)."""
        return self.tmp / "ledger.sqlite3"

    @property
    def env(self) -> dict[str, str | None]:
        """Environment overrides: only ours of FANOUT_* / ALIBABA_CLOUD_* / XDG_*."""
        cleared: dict[str, str | None] = {
            k: None for k in os.environ if k.startswith(("FANOUT_", "ALIBABA_CLOUD_", "XDG_"))
        }
        return {
            **cleared,
            "HOME": str(self.tmp / "home"),
            "XDG_CONFIG_HOME": str(self.tmp / "home" / "config"),
            "XDG_STATE_HOME": str(self.tmp / "home" / "state"),
            "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
            "FANOUT_ENDPOINT": self.emu.url,
            "FANOUT_LEDGER": str(self.ledger),
            **self.extra_env,
        }

    def invoke(
        self, args: list[str], env: dict[str, str | None] | None = None, stdin: str | None = None
    ) -> Result:
        """`fanout ARGS` in-process, in the sandbox folder."""
        cwd = Path.cwd()
        os.chdir(self.tmp)
        try:
            return CliRunner().invoke(main, args, env={**self.env, **(env or {})}, input=stdin)
        finally:
            os.chdir(cwd)

    def invocations(self) -> int:
        """Every InvokeCommand the emulator received: answered, or refused for its signature."""
        state = self.emu.snapshot()
        answered = sum(int(r["calls"].get("InvokeCommand", 0)) for r in state["regions"].values())
        return answered + int(state.get("unauthenticated", {}).get("InvokeCommand", 0))

    def files(self) -> set[str]:
        """Every path under the sandbox folder, relative to it (folders end with '/')."""
        found: set[str] = set()
        for path in self.tmp.rglob("*"):
            name = str(path.relative_to(self.tmp))
            found.add(name + "/" if path.is_dir() and not path.is_symlink() else name)
        return found

    def runs(self, ledger: Path | None = None) -> int:
        """How many runs the sandbox's ledger holds (0 without one)."""
        path = ledger or self.ledger
        if not path.is_file() or path.stat().st_size == 0:
            return 0
        # Read as fanout's readers do: through a live -wal, else immutable (creating no file).
        query = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
        conn = sqlite3.connect(f"file:{path}?{query}", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "runs" not in tables:
                return 0
            return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        except sqlite3.DatabaseError:  # a file that only starts like a database
            return 0
        finally:
            conn.close()


def one_error_line(result: Result) -> str:
    """The one stderr line of a refusal (`fanout: error: ...`); fails if there is more."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("fanout: error: "), lines
    return lines[0]

"""Where the ledger lives and what the runner needs from it: `LedgerStore`, `open_ledger`.

`open_ledger` picks the backend from the location: a SQLite file (`sqlite.py`) or a PostgreSQL
URL (`postgres.py`, which needs the optional `fanout[postgres]` extra). Neither backend's driver
is imported before a ledger of that kind is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from fanout.errors import ConfigError, LedgerError, RunNotFoundError
from fanout.ledger.location import Location, location_password, parse_location, redact_location
from fanout.ledger.model import (
    BatchRecord,
    BatchTimes,
    CommandRecord,
    InstanceRecord,
    Op,
    QuotaRefusal,
    RunRecord,
)

__all__ = [
    "NO_LEDGER",
    "LedgerStore",
    "check_ledger_location",
    "default_ledger_location",
    "ledger_exists",
    "open_existing_ledger",
    "open_ledger",
]


class LedgerStore(Protocol):
    """What the runner, status and report need from storage. Methods block; call from a thread."""

    @property
    def local(self) -> bool:
        """True if every process using this ledger runs on this host (so a lease holder whose
        pid is gone here is gone); False for a ledger shared between hosts."""
        ...

    def close(self) -> None: ...
    def create_run(
        self,
        run: RunRecord,
        batches: Sequence[BatchRecord],
        extra_instances: Sequence[InstanceRecord] = (),
    ) -> None: ...
    def apply(self, ops: Sequence[Op]) -> list[object]: ...
    def get_run(self, run_id: str) -> RunRecord: ...
    def list_runs(self, limit: int = 50) -> list[RunRecord]: ...
    def child_runs(self, run_id: str) -> list[RunRecord]: ...
    def load_batches(self, run_id: str) -> list[BatchRecord]: ...
    def instance_counts(self, run_id: str) -> dict[str, dict[str, int]]: ...
    def batch_counts(self, run_id: str) -> dict[str, dict[str, int]]: ...
    def iter_instances(self, run_id: str) -> Iterator[InstanceRecord]: ...
    def failure_tally(self, run_id: str) -> list[tuple[str, str, str, bool, int]]: ...
    def instances_of_batch(self, batch_id: str) -> list[InstanceRecord]: ...
    def events(
        self, run_id: str, after_id: int = 0
    ) -> list[tuple[int, float, str, dict[str, Any]]]: ...
    def batch_times(self, run_id: str) -> dict[str, BatchTimes]: ...
    def attempts(self, batch_id: str) -> list[dict[str, Any]]: ...
    def quota_used(self, account: str, window_start: float) -> dict[str, tuple[int, float]]: ...
    def quota_times(self, account: str, region: str, window_start: float) -> list[float]: ...
    def command_ids(self, run_id: str) -> dict[str, str | None]: ...
    def command_records(self, account: str | None = None) -> list[CommandRecord]: ...
    def command_record(self, account: str, region: str, name: str) -> CommandRecord | None: ...
    def command_runs(self, region: str, command_id: str) -> list[str]: ...
    def quota_reservations(
        self, account: str, region: str, window_start: float
    ) -> list[tuple[float, str, int]]: ...
    def quota_limits(self, account: str) -> dict[str, tuple[int, str, float]]: ...
    def quota_refusals(self, account: str, since: float = 0.0) -> list[QuotaRefusal]: ...


class _NoLedger:
    """The reads of a ledger that does not exist yet: no runs, no quota used, no commands.

    What `run` plans against before its ledger is created (so a refused run creates none);
    any write is a LedgerError."""

    local = True

    def close(self) -> None:
        """Nothing to close."""

    def create_run(
        self,
        run: RunRecord,
        batches: Sequence[BatchRecord],
        extra_instances: Sequence[InstanceRecord] = (),
    ) -> None:
        raise LedgerError("there is no ledger to write to")

    def apply(self, ops: Sequence[Op]) -> list[object]:
        raise LedgerError("there is no ledger to write to")

    def get_run(self, run_id: str) -> RunRecord:
        raise RunNotFoundError(f"no run {run_id!r}: there is no ledger yet")

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        return []

    def child_runs(self, run_id: str) -> list[RunRecord]:
        return []

    def load_batches(self, run_id: str) -> list[BatchRecord]:
        return []

    def instance_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        return {}

    def batch_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        return {}

    def iter_instances(self, run_id: str) -> Iterator[InstanceRecord]:
        return iter(())

    def failure_tally(self, run_id: str) -> list[tuple[str, str, str, bool, int]]:
        return []

    def instances_of_batch(self, batch_id: str) -> list[InstanceRecord]:
        return []

    def events(
        self, run_id: str, after_id: int = 0
    ) -> list[tuple[int, float, str, dict[str, Any]]]:
        return []

    def batch_times(self, run_id: str) -> dict[str, BatchTimes]:
        return {}

    def attempts(self, batch_id: str) -> list[dict[str, Any]]:
        return []

    def quota_used(self, account: str, window_start: float) -> dict[str, tuple[int, float]]:
        return {}

    def quota_times(self, account: str, region: str, window_start: float) -> list[float]:
        return []

    def command_ids(self, run_id: str) -> dict[str, str | None]:
        return {}

    def command_records(self, account: str | None = None) -> list[CommandRecord]:
        return []

    def command_record(self, account: str, region: str, name: str) -> CommandRecord | None:
        return None

    def command_runs(self, region: str, command_id: str) -> list[str]:
        return []

    def quota_limits(self, account: str) -> dict[str, tuple[int, str, float]]:
        return {}

    def quota_refusals(self, account: str, since: float = 0.0) -> list[QuotaRefusal]:
        return []

    def quota_reservations(
        self, account: str, region: str, window_start: float
    ) -> list[tuple[float, str, int]]:
        return []


# A ledger store with nothing in it, for the reads before a ledger exists.
NO_LEDGER: LedgerStore = _NoLedger()


def default_ledger_location(env: dict[str, str] | None = None) -> str:
    """`$FANOUT_LEDGER`, else `$XDG_STATE_HOME/fanout/ledger.sqlite3` (DESIGN section 4)."""
    env = dict(os.environ) if env is None else env
    if env.get("FANOUT_LEDGER"):
        return env["FANOUT_LEDGER"]
    state_home = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state_home) / "fanout" / "ledger.sqlite3")


def open_ledger(location: str) -> LedgerStore:
    """Open for writing (creating or migrating if needed) the ledger at a path, `sqlite:` URL or
    `postgresql://` URL. A URL's password is never shown, in logs or in errors."""
    where = parse_location(location)
    if where.url is not None:
        return _postgres(where.url)
    path = _sqlite_path(where)
    if where.read_only:
        msg = f"ledger {where.shown} is read-only (mode=ro): this command writes to its ledger"
        raise ConfigError(msg)
    from fanout.ledger.sqlite import SqliteLedger  # noqa: PLC0415 - keep sqlite off pure imports

    return SqliteLedger(path)


def open_existing_ledger(location: str) -> LedgerStore | None:
    """Open the ledger at `location` to read it, creating and changing nothing; None if there is
    none there yet (no file, or an empty one). For the commands that only read (`runs`, `status`,
    `report`, `quota`, `plan`): a read-only ledger is fine, a device or folder is refused."""
    where = parse_location(location)
    if where.url is not None:
        return _postgres(where.url)
    path = _sqlite_path(where)
    from fanout.ledger.sqlite import SqliteLedger, is_empty_ledger  # noqa: PLC0415

    if is_empty_ledger(path):
        return None
    return SqliteLedger(path, read_only=True)


def check_ledger_location(location: str) -> None:
    """Refuse, before anything is sent, a location a run could not be written to: a read-only
    URL (`?mode=ro`), a path that is a directory, device, FIFO or socket. Creates nothing."""
    where = parse_location(location)
    if where.url is not None:
        return
    if where.read_only:
        msg = f"ledger {where.shown} is read-only (mode=ro): this command writes to its ledger"
        raise ConfigError(msg)
    from fanout.ledger.sqlite import check_usable  # noqa: PLC0415

    check_usable(_sqlite_path(where))


def ledger_exists(location: str) -> bool:
    """False if the SQLite file of `location` is absent or empty (a PostgreSQL ledger: True)."""
    where = parse_location(location)
    if where.url is not None:
        return True
    from fanout.ledger.sqlite import is_empty_ledger  # noqa: PLC0415

    return not is_empty_ledger(_sqlite_path(where))


def _sqlite_path(where: Location) -> Path:
    """The SQLite file of a location, `~` expanded."""
    assert where.path is not None
    try:
        return Path(where.path).expanduser()
    except RuntimeError:  # `~name` of a user that does not exist
        msg = f"ledger {where.path}: no home folder for {where.path.split('/', 1)[0]!r}"
        raise ConfigError(msg) from None


def _postgres(url: str) -> LedgerStore:
    """The PostgreSQL ledger at `url` (its password registered for redaction first)."""
    from fanout.logs import register_secret  # noqa: PLC0415

    register_secret(location_password(url))
    _require_psycopg(url)
    from fanout.ledger.postgres import PostgresLedger  # noqa: PLC0415 - psycopg only if used

    return PostgresLedger(url)


def _require_psycopg(location: str) -> None:
    """Refuse a PostgreSQL ledger, naming the extra to install, when psycopg cannot be imported."""
    try:
        import psycopg  # noqa: F401, PLC0415 - an optional dependency (`fanout[postgres]`)
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and exc.name == "psycopg"
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        why = "is not installed" if missing else f"cannot be loaded ({first_line})"
        msg = (
            f"ledger {redact_location(location)}: the PostgreSQL driver psycopg {why}; "
            "pip install 'fanout[postgres]'"
        )
        raise ConfigError(msg) from exc

"""The reports' reads and writes: a run and its retries from the ledger, report files on disk.

The rendering itself is pure (`fanout.report`, `fanout.html_report`); this is the edge that
feeds it from a `LedgerStore` and writes what it returns.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from fanout.errors import ConfigError
from fanout.html_report import RunLedger, render_html, report_model
from fanout.ledger import LedgerStore, RunRecord
from fanout.ledger.model import reported_state

__all__ = [
    "check_output_file",
    "html_report",
    "linked_sections",
    "read_run",
    "retries_of",
    "write_file",
]

# Linked runs that are not retries: their rows never replace the run's own (fanout.linked).
_NOT_RETRIES = frozenset({"rollback", "wave_check"})


def retries_of(store: LedgerStore, run_id: str) -> list[RunRecord]:
    """Every run linked to `run_id` by retry, transitively, oldest first (a rollback or a
    wave check is not a retry: it is a section of the report of its own)."""
    runs = store.list_runs(limit=100_000)
    found: list[RunRecord] = []
    parents = {run_id}
    for run in sorted(runs, key=lambda r: r.created_at):
        if run.parent_run_id in parents and run.options.get("kind") not in _NOT_RETRIES:
            found.append(run)
            parents.add(run.run_id)
    return found


def linked_sections(store: LedgerStore, run_id: str) -> list[dict[str, object]]:
    """The report's sections for the rollbacks and wave checks of `run_id` (and of its
    retries), oldest first: each linked run's id, kind, state, exit code and counts."""
    parents = {run_id, *(r.run_id for r in retries_of(store, run_id))}
    sections: list[dict[str, object]] = []
    for run in sorted(store.list_runs(limit=100_000), key=lambda r: r.created_at):
        kind = run.options.get("kind")
        if run.parent_run_id not in parents or kind not in _NOT_RETRIES:
            continue
        summary: dict[str, int] = {}
        for per_state in store.instance_counts(run.run_id).values():
            for state, n in per_state.items():
                shown = reported_state(state, run.state)
                summary[shown] = summary.get(shown, 0) + n
        sections.append(
            {
                "run_id": run.run_id,
                "kind": kind,
                "parent_run_id": run.parent_run_id,
                "state": run.state.value,
                "exit_code": run.exit_code,
                "command_id": run.command_id,
                "wave": run.options.get("check_wave"),
                "target_count": run.target_count,
                "summary": summary,
            }
        )
    return sections


def read_run(store: LedgerStore, run: RunRecord) -> RunLedger:
    """Everything the HTML report reads about one run."""
    return RunLedger(
        run=run,
        batches=tuple(store.load_batches(run.run_id)),
        times=store.batch_times(run.run_id),
        events=tuple(store.events(run.run_id)),
        instances=tuple(store.iter_instances(run.run_id)),
    )


def html_report(store: LedgerStore, run_id: str, *, now: float | None = None) -> str:
    """The HTML report of a run and its retries."""
    original = read_run(store, store.get_run(run_id))
    retries = [read_run(store, r) for r in retries_of(store, run_id)]
    model = report_model(
        original,
        retries,
        generated_at=time.time() if now is None else now,
        linked=linked_sections(store, run_id),
    )
    return render_html(model)


def check_output_file(path: Path, option: str) -> Path:
    """A file fanout will write: refused (exit 2) unless its folder exists (fanout creates no
    folders: a typo in a path is not a new directory tree) and the path is not a folder."""
    parent = path.parent
    if not parent.is_dir():
        msg = f"{option} {path}: no folder {parent} (fanout creates files, not folders)"
        raise ConfigError(msg)
    if path.is_dir():
        msg = f"{option} {path}: is a folder, not a file"
        raise ConfigError(msg)
    return path


def write_file(path: Path, text: str) -> None:
    """Write `text` to `path` whole: a temporary file beside it, then renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

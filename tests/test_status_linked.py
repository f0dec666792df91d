"""`fanout status RUN_ID` lists the runs linked to the run - its retries, rollbacks and wave
checks - one line each (id, kind, state), and `--json` as `linked_runs`; a run with none shows
no such line. Through the CLI on a real SQLite ledger."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from fanout.cli import main
from fanout.ledger import RunRecord, RunState, SetRun
from fanout.ledger.sqlite import SqliteLedger
from tests.test_schemas import validate

PARENT = "r20261201-100000-aaaaaa"


def _ledger(path: Path) -> None:
    """A finished run, its retry (finished, exit 0) and its rollback (running, no exit code),
    a retry of the retry (linked to the retry, not to the run) and an unrelated run."""
    store = SqliteLedger(path)
    t0 = time.time() - 600
    runs = [
        (PARENT, None, {}, (RunState.FINISHED, 1)),
        ("r20261201-100100-bbbbbb", PARENT, {"kind": "retry"}, (RunState.FINISHED, 0)),
        ("r20261201-100200-cccccc", PARENT, {"kind": "rollback"}, (RunState.RUNNING, None)),
        ("r20261201-100300-dddddd", "r20261201-100100-bbbbbb", {"kind": "retry"}, None),
        ("r20261201-100400-eeeeee", None, {}, None),
    ]
    for index, (run_id, parent, options, end) in enumerate(runs):
        at = t0 + 60 * index
        record = RunRecord(run_id, at, at, RunState.CREATED, "c-1", "acct", 0, options=options)
        store.create_run(record if parent is None else _child(record, parent), [])
        if end is not None:
            state, code = end
            store.apply([SetRun(run_id, RunState.RUNNING, at)])
            if state is not RunState.RUNNING:
                store.apply([SetRun(run_id, state, at + 30, exit_code=code)])
    store.close()


def _child(record: RunRecord, parent: str) -> RunRecord:
    """`record` linked to `parent`."""
    return RunRecord(
        record.run_id,
        record.created_at,
        record.updated_at,
        record.state,
        record.command_id,
        record.account,
        record.target_count,
        options=record.options,
        parent_run_id=parent,
    )


def test_status_lists_the_linked_runs_one_line_each(tmp_path: Path) -> None:
    """The run's retry and rollback follow its summary, oldest first, each as `linked KIND
    RUN_ID: STATE` (with the exit code once it has one); the retry's own retry is not the
    run's; `--json` has them as `linked_runs` and matches the schema."""
    path = tmp_path / "ledger.sqlite3"
    _ledger(path)
    shown = CliRunner().invoke(main, ["status", PARENT, "--ledger", str(path)])
    assert shown.exit_code == 0, shown.output
    linked = [line for line in shown.stdout.splitlines() if line.startswith("  linked ")]
    assert linked == [
        "  linked retry r20261201-100100-bbbbbb: finished (exit 0)",
        "  linked rollback r20261201-100200-cccccc: running",
    ]
    as_json = CliRunner().invoke(main, ["status", PARENT, "--ledger", str(path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.stdout)
    validate(doc, "status")
    assert doc["linked_runs"] == [
        {
            "run_id": "r20261201-100100-bbbbbb",
            "kind": "retry",
            "state": "finished",
            "exit_code": 0,
        },
        {
            "run_id": "r20261201-100200-cccccc",
            "kind": "rollback",
            "state": "running",
            "exit_code": None,
        },
    ]


def test_a_run_without_linked_runs_shows_none(tmp_path: Path) -> None:
    """A run nothing is linked to prints no `linked` line and an empty `linked_runs`."""
    path = tmp_path / "ledger.sqlite3"
    _ledger(path)
    shown = CliRunner().invoke(main, ["status", "r20261201-100400-eeeeee", "--ledger", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "linked" not in shown.stdout
    as_json = CliRunner().invoke(
        main, ["status", "r20261201-100400-eeeeee", "--ledger", str(path), "--json"]
    )
    assert json.loads(as_json.stdout)["linked_runs"] == []

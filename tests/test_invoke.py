"""The invoke stage's record of failed attempts, read back from the ledger after a real run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_ID, EmulatorThread
from tests.conftest import Fanout, fleet_ids, invoked_instances, ledger_sql, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]


def test_failed_attempts_record_the_servers_request_id_and_status(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """An error answer's RequestId and HTTP status are in the attempt; a lost answer has neither."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 30, "seed": 5}
    emu = emulator(
        **fields,
        error_rate=0.2,
        accept_then_drop_rate=0.2,
        fault_actions=frozenset({"InvokeCommand"}),
    )
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    done = cli.run(
        "run",
        *("--command-id", DEMO_COMMAND_ID, "--targets", str(targets), "--batch-size", "2"),
        *("--rate", "0", "--no-wait", "--yes", "--no-preflight"),
    )
    assert done.returncode in (0, 1), done.stderr  # 1: a batch whose answers were all lost
    assert set(invoked_instances(emu.snapshot()).values()) == {1}
    rows = ledger_sql(cli.ledger, "SELECT outcome, request_id, http_status FROM attempts")
    by_outcome: dict[str, set[tuple[bool, Any]]] = {}
    for outcome, request_id, http_status in rows:
        by_outcome.setdefault(outcome, set()).add((bool(request_id), http_status))
    assert by_outcome["retryable"] == {(True, 500)}  # InternalError.Dispatch, with its RequestId
    assert by_outcome["ambiguous"] == {(False, None)}  # applied, answer lost: nothing known
    assert by_outcome["accepted"] == {(True, None)}

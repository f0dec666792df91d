"""The emulator's issue-14 behaviours chosen on its command line, as an operator starts it
(`fanout emulator ...` as its own process): StopInvocation's `--stop-mode`, seen through
`fanout stop` and the emulator's per-execution state."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import DEMO_COMMAND_NAME
from tests.conftest import Fanout, wait_for
from tests.emulator_process import emulator_process, listed_targets, state

FLEET = (
    "--regions", "cn-hangzhou", "--instances-per-region", "4", "--stopped-fraction", "0",
    "--classic-fraction", "0", "--agent-offline-fraction", "0", "--exec-seconds", "120:120",
)  # fmt: skip


def _executions(url: str) -> list[dict[str, Any]]:
    """Every execution of every invocation, from `/_emulator/state?executions=1`."""
    with urllib.request.urlopen(f"{url}/_emulator/state?executions=1", timeout=10) as reply:
        state = json.loads(reply.read())
    return [e for inv in state["invocations"] for e in inv["executions"]]


@pytest.mark.parametrize(
    ("flags", "after_stop"),
    [((), "Running"), (("--stop-mode", "cancel-pending"), "Running"),
     (("--stop-mode", "terminate"), "Terminated")],
)  # fmt: skip
def test_stop_mode_decides_what_stop_does_to_running_executions(
    tmp_path: Path, flags: tuple[str, ...], after_stop: str
) -> None:
    """`fanout stop` of a run whose executions have started: by default (the API reference:
    started executions are not interrupted) and with `--stop-mode cancel-pending` they run on;
    with `--stop-mode terminate` they end Terminated."""
    targets = tmp_path / "t.txt"
    targets.write_text("\n".join(listed_targets(*FLEET)) + "\n")
    with emulator_process(*FLEET, *flags) as url:
        cli = Fanout(endpoint=url, ledger=str(tmp_path / "l.sqlite3"), home=tmp_path)
        run = cli.run(
            "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes",
            "--no-wait",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        run_id = run.stdout.splitlines()[0].strip()
        wait_for(lambda: {e["status"] for e in _executions(url)} == {"Running"})
        stop = cli.run("stop", run_id, "--collect-timeout", "0")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        executions = _executions(url)
        calls = state(url)["regions"]["cn-hangzhou"]["calls"]
    assert calls.get("StopInvocation", 0) >= 1  # the stop reached the API in every mode
    assert len(executions) == 4
    assert {e["status"] for e in executions} == {after_stop}

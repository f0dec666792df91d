"""Consent before quota is spent (issue 15): without a terminal and without --yes `run`,
`resume` and `retry` refuse with exit 2 and send nothing; on a terminal `run` asks after the
preflight with the calls it will really send, and "no" exits 5 with nothing sent."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, fleet_ids, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]
FLEET: dict[str, Any] = {"regions": ("cn-hangzhou", "cn-beijing"), "instances_per_region": 60}


def _invokes(emu: EmulatorThread) -> int:
    regions = emu.snapshot()["regions"].values()
    return sum(r["calls"].get("InvokeCommand", 0) for r in regions)


def test_without_a_terminal_and_without_yes_nothing_is_sent(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """run, resume and retry without --yes and with no terminal: exit 2 naming --yes, no call."""
    emu = emulator(**FLEET)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    refused = cli.run("run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets))
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("add --yes")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert _invokes(emu) == 0
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes", "--no-wait",
        "--daily-quota", "1", "--json",
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    run_id = done.stdout.split('"run_id": "')[1].split('"')[0]
    calls = _invokes(emu)
    for argv in (("resume", run_id), ("retry", run_id, "--only", "not-invoked")):
        again = cli.run(*argv)
        assert again.returncode == 2, again.stderr
        assert "add --yes" in again.stderr
    assert _invokes(emu) == calls


def _on_a_terminal(cli: Fanout, argv: list[str], answer: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal on stdin and stderr; answer the first question."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        cli.argv(*argv), stdin=terminal, stderr=terminal, stdout=subprocess.PIPE, env=cli.env
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 60
    answered = False
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                seen += os.read(controller, 4096)
            except OSError:
                break
        if not answered and b"Go ahead?" in seen:
            os.write(controller, answer.encode() + b"\n")
            answered = True
    code = proc.wait(timeout=30)
    try:
        while select.select([controller], [], [], 0.1)[0]:
            seen += os.read(controller, 4096)
    except OSError:
        pass
    os.close(controller)
    assert proc.stdout is not None
    proc.stdout.close()
    return code, seen.decode(errors="replace")


def test_a_no_on_the_terminal_sends_nothing_and_exits_5(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """On a terminal `run` shows the calls after preflight (exclusions known) and "n" exits 5,
    saying plainly that nothing was sent (not as an error)."""
    emu = emulator(**FLEET, stopped_fraction=0.1)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    argv = ["run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--no-wait"]
    code, screen = _on_a_terminal(cli, argv, "n")
    assert code == 5, screen
    assert "fanout: answered no: nothing sent" in screen  # an answer, not an error
    assert "fanout: error" not in screen
    assert "excluded by preflight" in screen
    assert "none excluded" not in screen  # the preflight ran before the question
    assert _invokes(emu) == 0
    code, screen = _on_a_terminal(cli, argv, "y")
    assert code == 0, screen
    assert _invokes(emu) > 0


def test_the_question_names_the_wave_check_and_the_rollback(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """With a wave check and a rollback on halt, the question says they will run as linked runs
    of their own calls; "n" still sends nothing."""
    emu = emulator(**FLEET)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    argv = [
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--waves", "10%,100%",
        "--wave-check-command-name", DEMO_COMMAND_NAME, "--on-halt-command-name", DEMO_COMMAND_NAME,
        "--on-halt-scope", "all-invoked",
    ]  # fmt: skip
    code, screen = _on_a_terminal(cli, argv, "n")
    assert code == 5, screen
    flat = " ".join(screen.split())
    assert f"the check {DEMO_COMMAND_NAME} on its succeeded instances" in flat
    assert f"the rollback {DEMO_COMMAND_NAME} on the instances all invoked" in flat
    assert _invokes(emu) == 0

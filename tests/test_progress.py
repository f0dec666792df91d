"""The live progress view: the tally drawn by rich, and where it is used (plain lines, JSON, a TTY)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fanout.cli.views import Out
from fanout.emulator import DEMO_COMMAND_NAME, EmulatorConfig, EmulatorThread
from fanout.emulator.fleet import Fleet
from fanout.progress import LiveView, render
from fanout.tally import ProgressView
from tests.conftest import Fanout, invoked_instances, write_targets
from tests.test_tally import RUN, batch, fed, scenario, start

Event = tuple[str, dict[str, Any]]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ANSI_BYTES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def screenshot(view: ProgressView, width: int = 100) -> str:
    """The live view drawn into a fixed-width recording console, as plain text."""
    console = Console(record=True, width=width, force_terminal=True)
    console.print(render(view))
    return console.export_text()


def row(text: str, region: str) -> list[str]:
    """The cells of a region's row in a screenshot."""
    line = next(line for line in text.splitlines() if line.startswith(region + " "))
    return line.split()


def test_screenshot_shows_a_row_per_region_and_the_header() -> None:
    """Rendered at 100 columns: header with run, wave, budget and totals; one row per region."""
    text = screenshot(fed(scenario()).view(10.0))
    lines = text.splitlines()
    assert lines[0].split() == [
        "r20261128-063512-a1b2c3",
        "wave",
        "2/3",
        "errors",
        "53",
        "(max",
        "25)",
        "27/1000",
        "ok",
        "10s",
    ]
    assert lines[1].split() == [
        "region", "done", "flight", "left", "ok", "failed", "unreach", "excl", "running", "quota",
        "rate", "ETA",
    ]  # fmt: skip
    assert " ".join(row(text, "cn-hangzhou")) == "cn-hangzhou 4 2 6 27 53 0 6 120 94 1.0 8s"
    assert " ".join(row(text, "cn-beijing")) == "cn-beijing 1 1 6 0 0 0 4 50 4 0.2 quota short"
    assert " ".join(row(text, "all")) == "all 5 3 12 27 53 0 10 170 98 1.2"
    assert all(len(line) <= 100 for line in lines)


def test_screenshot_of_a_halted_run_says_so_and_fits_80_columns() -> None:
    """A halted run's header reads HALTED; the table still fits a classic 80-column terminal."""
    model = fed([*scenario(), (10.0, "halted", {"failures": 53, "allowed": 25})])
    model.feed("end", {"state": "halted", "exit_code": 3}, 11.0)
    text = screenshot(model.view(11.0), width=80)
    assert "HALTED: errors 53 (max 25)" in text
    assert "halted (exit 3)" in text
    assert row(text, "cn-hangzhou")[:4] == ["cn-hangzhou", "4", "2", "6"]
    assert all(len(line) <= 80 for line in text.splitlines())


def run_events() -> list[Event]:
    """A short run: every kind of event the runner emits, in order."""
    return [
        ("run", RUN),
        ("wave_start", {"run_id": RUN["run_id"], "wave": 1, "waves": 1}),
        ("batch_start", start(0, "cn-hangzhou")),
        ("batch", batch(0, "cn-hangzhou")),
        ("instance", {"region": "cn-hangzhou", "instance_id": "i-1", "state": "succeeded"}),
        ("quota_wait", {"run_id": RUN["run_id"], "regions": ["cn-beijing"], "until": 0.0}),
        ("wave", {"run_id": RUN["run_id"], "wave": 1, "failures": 0}),
        ("halted", {"run_id": RUN["run_id"], "failures": 30, "allowed": 25}),
        ("end", {"run_id": RUN["run_id"], "state": "halted", "exit_code": 3, "instances": {}}),
    ]


def test_without_a_tty_only_plain_lines_are_written(capsys: pytest.CaptureFixture[str]) -> None:
    """stderr not a TTY: one short line per run/wave/quota/halt/end event, no per-batch lines,
    no escape codes; stdout carries only the run id."""
    out = Out(as_json=False)
    for kind, data in run_events():
        out.event(kind, data)
    captured = capsys.readouterr()
    assert captured.out == f"{RUN['run_id']}\n"
    assert captured.err.splitlines() == [
        f"run {RUN['run_id']}: 1000 targets, 20 batches, 10 excluded by preflight",
        "daily quota spent in cn-beijing: waiting until 1970-01-01T00:00:00Z",
        "wave 1 done (0 failures so far)",
        "error budget exceeded: 30 failures > 25 allowed; no more dispatching, collecting what "
        "is in flight",
        "halted (exit 3): no instances",
    ]
    assert not ANSI.search(captured.err)


def test_plain_summary_lines_are_sentences(capsys: pytest.CaptureFixture[str]) -> None:
    """Counts read as words, zeros left out, no `exit None`, singular and plural right."""
    out = Out(as_json=False)
    out.event("run", {**RUN, "targets": 1, "batches": 1, "excluded": 0})
    out.event(
        "end",
        {"run_id": "r", "state": "finished", "exit_code": 0,
         "instances": {"succeeded": 3, "failed": 0, "not_invoked": 2}},
    )  # fmt: skip
    out.event("end", {"run_id": "r", "state": "running", "exit_code": None, "instances": {}})
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"run {RUN['run_id']}: 1 target, 1 batch, 0 excluded by preflight",
        "finished (exit 0): 3 succeeded, 2 not invoked",
        "left at once: calls in flight were not collected, no runner holds the run; "
        "fanout resume r",
    ]


def test_json_events_leave_out_batch_starts(capsys: pytest.CaptureFixture[str]) -> None:
    """--json: one JSON line per event on stdout, without the per-batch start, per-instance and
    per-call ones; the plain progress lines for people go to stderr (README)."""
    out = Out(as_json=True)
    for kind, data in run_events():
        out.event(kind, data)
    out.event("call", {"action": "InvokeCommand", "region": "cn-beijing", "error_code": None})
    captured = capsys.readouterr()
    kinds = [json.loads(line)["event"] for line in captured.out.splitlines()]
    assert kinds == ["run", "wave_start", "batch", "quota_wait", "wave", "halted", "end"]
    err = captured.err.splitlines()
    assert err[0].startswith(f"run {RUN['run_id']}: ")
    assert any(line.startswith("error budget exceeded") for line in err)
    assert not any(line.lstrip().startswith("{") for line in err)


def test_live_view_draws_the_run_and_leaves_the_last_frame(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With a terminal console the run id still goes first to stdout; the live view draws the
    regions on the console and its last frame shows how the run ended."""
    console = Console(file=io.StringIO(), record=True, width=100, force_terminal=True)
    out = Out(as_json=False, console=console)
    for kind, data in run_events():
        out.event(kind, data)
    captured = capsys.readouterr()
    assert captured.out == f"{RUN['run_id']}\n"
    text = console.export_text()
    assert "cn-hangzhou" in text
    assert "cn-beijing" in text
    assert "halted (exit 3)" in text
    assert "HALTED" in text


def test_live_view_feeds_under_a_lock_and_renders_a_snapshot() -> None:
    """LiveView feeds its model with its clock; renderable() draws the current counts."""
    clock = iter([0.0, 1.0, 2.0, 3.0])
    view = LiveView(Console(record=True, width=100), clock=lambda: next(clock))
    view.feed("run", RUN)
    view.feed("batch_start", start(0, "cn-beijing"))
    view.feed("batch", batch(0, "cn-beijing"))
    console = Console(record=True, width=100, force_terminal=True)
    console.print(view.renderable())
    assert row(console.export_text(), "cn-beijing")[:4] == ["cn-beijing", "1", "0", "7"]


FLEET: Mapping[str, Any] = {"regions": ("cn-beijing", "cn-hangzhou"), "instances_per_region": 150}


def pty_run(argv: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str, str]:
    """Run with stdin and stderr on a 100x40 pseudo-terminal, stdout on a pipe; answer the
    confirmation prompt. (exit code, stdout, terminal text with escapes removed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen, answered = b"", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if not answered and b"Go ahead?" in seen:
            os.write(master, answer)
            answered = True
        if not ready and proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    code = proc.wait(timeout=30)
    return code, stdout, ANSI.sub("", seen.decode(errors="replace")).replace("\r", "")


def test_run_on_a_terminal_asks_with_the_plan_then_draws_the_live_view(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    tmp_path: Path,
) -> None:
    """`fanout run` on a pseudo-terminal shows the plan per region and asks; after "y" the live
    view draws both regions; stdout holds only the run id."""
    emu = emulator(**FLEET, exec_seconds=(0.05, 0.2))
    cli = fanout_cli(emu)
    fleet = Fleet.from_config(EmulatorConfig(**FLEET))
    ids = [(r, i.instance_id) for r, rf in sorted(fleet.regions.items()) for i in rf.instances]
    targets = write_targets(tmp_path / "t.txt", ids)
    env = {**cli.env, "TERM": "xterm-256color"}
    argv = cli.argv("run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets))
    code, stdout, screen = pty_run(argv, env, b"y\n")
    assert code in (0, 1), screen
    run_id = stdout.splitlines()[0]
    assert stdout == f"{run_id}\n"
    prompt = screen[: screen.index("Go ahead?")]
    assert [line.split() for line in prompt.splitlines()[-3:-1]] == [
        ["cn-beijing", "150", "3", "5000"],
        ["cn-hangzhou", "150", "3", "5000"],
    ]
    assert prompt.splitlines()[-1].strip() == "1 wave; none excluded by preflight"
    last_frame = screen[screen.rindex(run_id) :]
    assert f"finished (exit {code})" in last_frame
    status = json.loads(cli.run("status", run_id, "--json").stdout)
    for region in ("cn-beijing", "cn-hangzhou"):
        counts = status["regions"][region]["instances"]
        cells = row(last_frame, region)
        # batches done / in flight / left, then ok / failed / excluded / running, as in the ledger
        assert cells[1:8] == [
            "3",
            "0",
            "0",
            str(counts.get("succeeded", 0)),
            str(counts.get("failed", 0)),
            str(counts.get("excluded", 0)),
            "0",
        ]


def test_run_on_a_terminal_declined_spends_nothing(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    tmp_path: Path,
) -> None:
    """Answering "n" at the prompt aborts before any InvokeCommand is sent."""
    emu = emulator(**FLEET)
    cli = fanout_cli(emu)
    fleet = Fleet.from_config(EmulatorConfig(**FLEET))
    ids = [(r, i.instance_id) for r, rf in sorted(fleet.regions.items()) for i in rf.instances]
    targets = write_targets(tmp_path / "t.txt", ids)
    env = {**cli.env, "TERM": "xterm-256color"}
    argv = cli.argv("run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets))
    code, stdout, screen = pty_run(argv, env, b"n\n")
    assert code != 0
    assert stdout == ""
    assert "About to invoke" in screen
    assert emu.snapshot()["invocations"] == []


def test_the_header_counts_down_the_bake_time_then_shows_the_check() -> None:
    """Between two waves a line under the header shows the bake time left on the model's clock,
    then the wave check running, and is gone once the next wave starts."""
    model = fed([(0.0, "run", RUN), (0.1, "wave_start", {"wave": 1, "waves": 2})])
    model.feed("wave", {"wave": 1, "failures": 0}, 1.0)
    model.feed("wave_wait", {"wave": 1, "until": 1_800_000_030.0, "wait_s": 30.0}, 1.0)
    assert screenshot(model.view(1.0)).splitlines()[1] == "wave 1 baking: 30s left"
    assert screenshot(model.view(13.2)).splitlines()[1] == "wave 1 baking: 18s left"
    assert screenshot(model.view(99.0)).splitlines()[1] == "wave 1 baking: 0s left"
    model.feed("wave_check_start", {"wave": 1, "instances": 20}, 31.0)
    assert screenshot(model.view(31.0)).splitlines()[1] == "wave 1 check: 20 instances"
    model.feed("wave_check", {"wave": 1, "failures": 0, "instances": 20}, 33.0)
    model.feed("wave_start", {"wave": 2, "waves": 2}, 33.5)
    text = screenshot(model.view(34.0))
    assert "baking" not in text
    assert "check" not in text
    assert text.splitlines()[1].split()[:2] == ["region", "done"]


# Run in the child's new session: take the pty (stdin) as the controlling terminal, then exec.
_OWN_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _on_a_terminal(
    argv: list[str], env: dict[str, str], *, ctrl_c_after: bytes | None = None
) -> tuple[int, str, str]:
    """Run with the pseudo-terminal as its controlling terminal (stdin and stderr on it, stdout
    on a pipe); once `ctrl_c_after` is on the screen, type Ctrl-C: the terminal sends SIGINT to
    its foreground process group, as for a person. (exit code, stdout, screen text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))

    proc = subprocess.Popen(
        [sys.executable, "-c", _OWN_TERMINAL, *argv],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        start_new_session=True,  # a session of its own, whose terminal the pty becomes
    )
    os.close(slave)
    seen, typed = b"", False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if ctrl_c_after is not None and not typed and ctrl_c_after in ANSI_BYTES.sub(b"", seen):
            os.write(master, b"\x03")
            typed = True
        if not ready and proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    code = proc.wait(timeout=30)
    return code, stdout, ANSI.sub("", seen.decode(errors="replace")).replace("\r", "")


def test_the_live_view_through_ctrl_c_and_resume_ends_on_the_ledgers_counts(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    tmp_path: Path,
) -> None:
    """`fanout run` on a terminal counts down the first wave's bake time; Ctrl-C there ends the
    run (exit 5, the last frame says so); `fanout resume` on a terminal counts down the rest of
    the bake time and finishes the run, and its
    last frame - every region's row, the total row and the header's ok count - shows exactly
    the counts `fanout status --json` reads from the ledger."""
    emu = emulator(**FLEET, exec_seconds=(0.05, 0.2), exec_failure_fraction=0.2)
    cli = fanout_cli(emu)
    fleet = Fleet.from_config(EmulatorConfig(**FLEET))
    ids = [(r, i.instance_id) for r, rf in sorted(fleet.regions.items()) for i in rf.instances]
    targets = write_targets(tmp_path / "t.txt", ids)
    env = {**cli.env, "TERM": "xterm-256color"}
    argv = cli.argv(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--waves",
        "20%,100%", "--wave-wait", "6s", "--yes", "--rate", "0",
    )  # fmt: skip
    code, stdout, screen = _on_a_terminal(argv, env, ctrl_c_after=b"wave 1 baking:")
    assert code == 5, screen[-3000:]
    run_id = stdout.splitlines()[0]
    assert re.search(r"wave 1 baking: \d+s left", screen)
    assert "interrupted (exit 5)" in screen[screen.rindex(run_id) :]
    assert len(invoked_instances(emu.snapshot())) == 60  # the first wave only
    code, stdout, screen = _on_a_terminal(cli.argv("resume", run_id, "--yes", "--rate", "0"), env)
    assert code in (0, 1), screen[-3000:]
    assert "wave 1 baking:" in screen  # the rest of the bake time, counted down again
    last_frame = screen[screen.rindex(run_id) :]
    assert f"finished (exit {code})" in last_frame
    status = json.loads(cli.run("status", run_id, "--json").stdout)
    assert sum(status["instances"].values()) == 300
    assert status["instances"]["failed"] > 0
    header = last_frame.splitlines()[0]
    ok = status["instances"]["succeeded"]
    assert f"{ok}/300 ok" in header, header
    totals = dict.fromkeys(("succeeded", "failed", "unreachable", "excluded"), 0)
    for region in ("cn-beijing", "cn-hangzhou"):
        counts = status["regions"][region]["instances"]
        # ok / failed / unreachable / excluded / running, as in the ledger
        assert row(last_frame, region)[4:9] == [
            str(counts["succeeded"]), str(counts["failed"]), str(counts["unreachable"]),
            str(counts["excluded"]), "0",
        ]  # fmt: skip
        for state in totals:
            totals[state] += counts[state]
    assert row(last_frame, "all")[4:9] == [*(str(n) for n in totals.values()), "0"]

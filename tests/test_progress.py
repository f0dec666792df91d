"""The live progress view: the model fed by run events, its rich rendering, and where it is used."""

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
import termios
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fanout.cli.views import Out
from fanout.emulator import DEMO_COMMAND_ID, EmulatorConfig, EmulatorThread
from fanout.emulator.fleet import Fleet
from fanout.ledger import (
    BatchRecord,
    BatchState,
    InstanceRecord,
    InstanceState,
    RunRecord,
    RunState,
    open_ledger,
)
from fanout.progress import (
    RATE_WINDOW_S,
    LiveView,
    ProgressModel,
    ProgressView,
    confirm_summary,
    planned_regions,
    render,
    stored_regions,
)
from fanout.quota import QuotaPolicy
from tests.conftest import Fanout, write_targets

Event = tuple[str, dict[str, Any]]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

RUN: dict[str, Any] = {
    "run_id": "r20261128-063512-a1b2c3",
    "targets": 1000,
    "batches": 20,
    "excluded": 10,
    "allowed": 25,
    "regions": {
        "cn-hangzhou": {
            "batches": 12,
            "instances": 600,
            "excluded": 6,
            "pending": 594,
            "quota_left": 100,
        },
        "cn-beijing": {
            "batches": 8,
            "instances": 400,
            "excluded": 4,
            "pending": 396,
            "quota_left": 5,
        },
    },
}


def batch(i: int, region: str, outcome: str = "accepted", *, attempts: int = 1) -> dict[str, Any]:
    """A "batch" end event of 50 instances."""
    return {
        "batch_id": f"b{i}",
        "region": region,
        "outcome": outcome,
        "instances": 50,
        "attempts": attempts,
    }


def start(i: int, region: str) -> dict[str, Any]:
    """A "batch_start" event."""
    return {"batch_id": f"b{i}", "region": region, "attempts": 0}


def fed(events: list[tuple[float, str, dict[str, Any]]]) -> ProgressModel:
    """A model after these (time, kind, data) events."""
    model = ProgressModel()
    for now, kind, data in events:
        model.feed(kind, data, now)
    return model


def scenario() -> list[tuple[float, str, dict[str, Any]]]:
    """Wave 2 of 3 under way: hangzhou 4 batches done (one failed, one re-sent twice),
    2 in flight; beijing 1 done, 1 in flight; 30 results in."""
    events: list[tuple[float, str, dict[str, Any]]] = [
        (0.0, "run", RUN),
        (0.1, "wave_start", {"wave": 1, "waves": 3}),
        (0.2, "batch_start", start(0, "cn-hangzhou")),
        (1.0, "batch", batch(0, "cn-hangzhou")),
        (1.1, "wave", {"wave": 1, "failures": 0}),
        (1.2, "wave_start", {"wave": 2, "waves": 3}),
    ]
    for i in range(1, 6):
        events.append((1.3, "batch_start", start(i, "cn-hangzhou")))
    events += [
        (6.0, "batch", batch(1, "cn-hangzhou", attempts=3)),  # two retries: three calls
        (7.0, "batch", {**batch(2, "cn-hangzhou", "failed"), "failures": 50}),
        (8.0, "batch", batch(3, "cn-hangzhou")),
        (8.0, "batch_start", start(6, "cn-beijing")),
        (8.0, "batch_start", start(7, "cn-beijing")),
        (9.0, "batch", batch(6, "cn-beijing")),
    ]
    for n in range(30):
        state = "failed" if n < 3 else "succeeded"
        events.append((9.5, "instance", {"region": "cn-hangzhou", "state": state, "failures": 53}))
    return events


def test_model_counts_batches_instances_and_in_flight() -> None:
    """Batches done / in flight / left and instance outcomes per region follow the events."""
    view = fed(scenario()).view(10.0)
    hz, bj = (
        next(r for r in view.regions if r.region == name) for name in ("cn-hangzhou", "cn-beijing")
    )
    assert [r.region for r in view.regions] == ["cn-beijing", "cn-hangzhou"]  # sorted
    assert (hz.batches_done, hz.in_flight, hz.batches_left) == (4, 2, 6)
    assert (bj.batches_done, bj.in_flight, bj.batches_left) == (1, 1, 6)
    # 3 accepted batches x 50 invoked, 30 results in (3 failed); the failed batch: 50 failed.
    assert (hz.succeeded, hz.failed, hz.excluded, hz.running) == (27, 53, 6, 120)
    assert (bj.succeeded, bj.failed, bj.excluded, bj.running) == (0, 0, 4, 50)
    assert view.total("instances") == 1000


def test_model_tracks_wave_budget_and_quota_left() -> None:
    """The current wave, the error budget and quota left (one call per attempt) are tracked."""
    view = fed(scenario()).view(10.0)
    assert (view.wave, view.waves, view.waves_done) == (2, 3, 1)
    assert (view.failures, view.allowed, view.halted) == (53, 25, False)
    hz = next(r for r in view.regions if r.region == "cn-hangzhou")
    assert hz.quota_left == 100 - 6  # 1 + 3 + 1 + 1 calls
    model = fed([*scenario(), (10.0, "halted", {"failures": 53, "allowed": 25})])
    assert model.view(10.0).halted


def test_rate_is_calls_over_the_last_seconds_and_eta_follows() -> None:
    """The rate counts the calls of the last RATE_WINDOW_S seconds; the ETA is what is left over it."""
    view = fed(scenario()).view(10.0)
    hz = next(r for r in view.regions if r.region == "cn-hangzhou")
    # Calls at 6.0 (3), 7.0 (1), 8.0 (1) are within 5 s of 10.0; the one at 1.0 is not.
    assert hz.rate_per_s == pytest.approx(5 / RATE_WINDOW_S)
    assert hz.eta_s == pytest.approx((6 + 2) / (5 / RATE_WINDOW_S))
    assert hz.note == "dispatching"
    later = fed(scenario()).view(30.0)  # nothing for 20 s: the average since the first call
    hz_later = next(r for r in later.regions if r.region == "cn-hangzhou")
    assert hz_later.rate_per_s == 0
    assert hz_later.eta_s == pytest.approx(8 / (6 / (30.0 - 1.0)))


def test_region_short_of_quota_shows_it_instead_of_an_eta() -> None:
    """Beijing has 5 calls left for 7 open batches: "quota short"; a quota outcome: "no quota"."""
    view = fed(scenario()).view(10.0)
    bj = next(r for r in view.regions if r.region == "cn-beijing")
    assert (bj.quota_left, bj.note, bj.eta_s) == (4, "quota short", None)
    parked = fed([*scenario(), (9.6, "batch", batch(7, "cn-beijing", "quota", attempts=0))])
    bj = next(r for r in parked.view(10.0).regions if r.region == "cn-beijing")
    assert (bj.quota_left, bj.note, bj.in_flight, bj.batches_done) == (0, "no quota", 0, 1)


def test_a_region_with_everything_in_reads_done() -> None:
    """All batches done and every result in: the region reads "done", no ETA."""
    events: list[tuple[float, str, dict[str, Any]]] = [
        (0.0, "run", {"run_id": "r1", "regions": {"cn-hangzhou": {"batches": 1, "instances": 2}}}),
        (0.1, "batch_start", start(0, "cn-hangzhou")),
        (0.5, "batch", {**batch(0, "cn-hangzhou"), "instances": 2}),
        (0.6, "instance", {"region": "cn-hangzhou", "state": "succeeded"}),
    ]
    mid = fed(events).view(0.7).regions[0]
    assert (mid.note, mid.running) == ("results", 1)
    done = fed([*events, (0.8, "instance", {"region": "cn-hangzhou", "state": "succeeded"})])
    region = done.view(1.0).regions[0]
    assert (region.note, region.eta_s, region.succeeded, region.running) == ("done", None, 2, 0)


def test_feeding_twenty_thousand_batches_is_cheap() -> None:
    """A run's worth of events (20 000 batches: start and end) costs well under a second."""
    model = ProgressModel()
    model.feed("run", {"run_id": "r", "regions": {"cn-hangzhou": {"batches": 20_000}}}, 0.0)
    began = time.perf_counter()
    for i in range(20_000):
        model.feed("batch_start", start(i, "cn-hangzhou"), i / 100)
        model.feed("batch", batch(i, "cn-hangzhou"), i / 100 + 0.005)
    assert time.perf_counter() - began < 1.0
    region = model.view(200.0).regions[0]
    assert (region.batches_done, region.in_flight, region.batches_left) == (20_000, 0, 0)


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
        "region", "done", "flight", "left", "ok", "failed", "excl", "running", "quota", "rate", "ETA",
    ]  # fmt: skip
    assert " ".join(row(text, "cn-hangzhou")) == "cn-hangzhou 4 2 6 27 53 6 120 94 1.0 8s"
    assert " ".join(row(text, "cn-beijing")) == "cn-beijing 1 1 6 0 0 4 50 4 0.2 quota short"
    assert " ".join(row(text, "all")) == "all 5 3 12 27 53 10 170 98 1.2"
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
        "halted (exit 3): {}",
    ]
    assert not ANSI.search(captured.err)


def test_json_events_leave_out_batch_starts(capsys: pytest.CaptureFixture[str]) -> None:
    """--json: one JSON line per event on stdout, without the per-batch start and per-instance ones."""
    out = Out(as_json=True)
    for kind, data in run_events():
        out.event(kind, data)
    captured = capsys.readouterr()
    kinds = [json.loads(line)["event"] for line in captured.out.splitlines()]
    assert kinds == ["run", "wave_start", "batch", "quota_wait", "wave", "halted", "end"]
    assert captured.err == ""


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


def test_planned_regions_counts_batches_instances_exclusions_and_quota() -> None:
    """The "run" event's regions: batches, instances (excluded included) and quota left."""
    batches = [
        BatchRecord(f"b{i}", "r", region, i, 0, ("i-1", "i-2"), "t", BatchState.PENDING)
        for i, region in enumerate(["cn-hangzhou", "cn-hangzhou", "cn-beijing"])
    ]
    excluded = {("cn-beijing", "i-9"): "stopped", ("cn-shanghai", "i-8"): "classic"}
    policy = QuotaPolicy(daily_quota=100, reserve=10)
    regions = planned_regions(batches, excluded, policy, {"cn-hangzhou": (30, 0.0)})
    assert regions == {
        "cn-beijing": {"batches": 1, "instances": 3, "excluded": 1, "pending": 2, "quota_left": 90},
        "cn-hangzhou": {
            "batches": 2,
            "instances": 4,
            "excluded": 0,
            "pending": 4,
            "quota_left": 60,
        },
        "cn-shanghai": {"batches": 0, "instances": 1, "excluded": 1, "quota_left": 90},
    }


def test_stored_regions_let_a_resumed_run_start_from_what_is_done(tmp_path: Path) -> None:
    """The "resume" event's regions come from the ledger: done batches, invoked instances,
    exclusions; the model starts from them."""
    store = open_ledger(str(tmp_path / "ledger.sqlite3"))
    ids = tuple(f"i-{n}" for n in range(4))
    more = tuple(f"i-{n}" for n in range(4, 8))
    run = RunRecord("r1", 1.0, 1.0, RunState.QUOTA, "c-1", "acct", 9)
    store.create_run(
        run,
        [
            BatchRecord(
                "b0", "r1", "cn-hangzhou", 0, 0, ids, "t0", BatchState.ACCEPTED, 1, invoke_id="t-1"
            ),
            BatchRecord("b1", "r1", "cn-hangzhou", 1, 0, more, "t1", BatchState.PENDING),
        ],
        [
            InstanceRecord(
                "r1", "cn-hangzhou", "i-x", None, InstanceState.EXCLUDED, reason="stopped"
            )
        ],
    )
    regions = stored_regions(store, run, QuotaPolicy(), time.time())
    store.close()
    assert regions["cn-hangzhou"] == {
        "batches": 2,
        "batches_done": 1,
        "instances": 9,
        "invoked": 4,
        "pending": 4,
        "excluded": 1,
        "quota_left": 5000,
    }
    model = ProgressModel()
    model.feed("resume", {"run_id": "r1", "state": "quota", "allowed": None, "regions": regions}, 0)
    region = model.view(1.0).regions[0]
    assert (region.batches_done, region.batches_left, region.running, region.excluded) == (
        1,
        1,
        4,
        1,
    )


def test_confirmation_summary_shows_calls_and_quota_per_region() -> None:
    """The TTY prompt's summary: targets, calls and quota left per region, and a quota warning."""
    calls = [("cn-hangzhou", 50), ("cn-hangzhou", 20), ("cn-beijing", 50)]
    text = confirm_summary("c-abc", calls, {"cn-hangzhou": 1, "cn-beijing": 5000})
    lines = text.splitlines()
    assert lines[0].startswith(
        "About to invoke c-abc on 120 instances in 2 regions: 3 InvokeCommand"
    )
    assert lines[2].split() == ["cn-beijing", "50", "1", "5000"]
    assert lines[3].split() == ["cn-hangzhou", "70", "2", "1"]
    assert "quota short in cn-hangzhou (1 calls over)" in lines[4]


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
    argv = cli.argv("run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets))
    code, stdout, screen = pty_run(argv, env, b"y\n")
    assert code in (0, 1), screen
    run_id = stdout.splitlines()[0]
    assert stdout == f"{run_id}\n"
    prompt = screen[: screen.index("Go ahead?")]
    assert [line.split() for line in prompt.splitlines()[-2:]] == [
        ["cn-beijing", "150", "3", "5000"],
        ["cn-hangzhou", "150", "3", "5000"],
    ]
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
    argv = cli.argv("run", "--command-id", DEMO_COMMAND_ID, "--targets", str(targets))
    code, stdout, screen = pty_run(argv, env, b"n\n")
    assert code != 0
    assert stdout == ""
    assert "About to invoke" in screen
    assert emu.snapshot()["invocations"] == []

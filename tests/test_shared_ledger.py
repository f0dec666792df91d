"""Several runners on one PostgreSQL ledger (DESIGN section 6, issue 7): one quota, one driver.

Every test runs real `fanout` processes against the emulator on 127.0.0.1 and a fresh
PostgreSQL database, and proves its claim from the emulator's own record.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from fanout.ledger import open_ledger
from tests.conftest import Fanout, close, fleet_ids, invoked_instances, postgres_only, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]

# Short leases so that expiry is seen within a test; renewed every third of it. Long enough
# that a resume started while the holder runs (a second of Python start-up, the free
# credentials check, the lease) meets a live lease on a loaded 2-core machine: the lease can be
# two thirds old when the holder is stopped, and CI has seen a resume take over 4 s to ask.
_LEASE_S = 15.0
_REFUSED = re.compile(
    r"^fanout: error: run (?P<run>\S+) is being driven by (?P<holder>\S+) "
    r"\(lease until (?P<until>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\)$"
)


def _dispatch_options(*extra: str) -> tuple[str, ...]:
    """Options for a run that dispatches one batch at a time, without waiting for results."""
    return ("--yes", "--no-wait", "--rate", "0", "--concurrency", "1", *extra)


@postgres_only
def test_three_runners_share_one_quota_per_region(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Three `fanout run` processes on one PostgreSQL ledger with a quota of 30 make at most 30
    InvokeCommand calls per region together (I3 across processes, as across hosts)."""
    fields: dict[str, Any] = {"regions": ("cn-beijing", "cn-hangzhou"), "instances_per_region": 300}
    emu = emulator(**fields, latency_ms=20)
    cli = fanout_cli(emu)
    ids = fleet_ids(**fields)
    parts = [write_targets(tmp_path / f"t{n}.txt", ids[n::3]) for n in range(3)]
    common = (
        *("--command-name", DEMO_COMMAND_NAME, "--batch-size", "5", "--daily-quota", "30"),
        *("--yes", "--no-wait", "--no-preflight", "--rate", "0", "--concurrency", "4"),
    )
    procs = [cli.start("run", "--targets", str(t), *common) for t in parts]
    codes = [p.wait(timeout=120) for p in procs]
    assert 4 in codes, codes  # 60 calls needed per region: somebody met the quota
    assert set(codes) <= {0, 4}, [p.stderr.read() if p.stderr else "" for p in procs]
    regions = emu.snapshot()["regions"]
    assert {r: regions[r]["calls"]["InvokeCommand"] for r in fields["regions"]} == {
        "cn-beijing": 30,
        "cn-hangzhou": 30,
    }
    store = open_ledger(cli.ledger)
    used = store.quota_used("LTAI5tFanoutDemoKeyId00", 0)
    store.close()
    assert {r: n for r, (n, _oldest) in used.items()} == {"cn-beijing": 30, "cn-hangzhou": 30}


def _stored_run(cli: Fanout, targets: Path) -> str:
    """A run stored with every batch pending and nothing sent (a zero quota stops it at once)."""
    done = cli.run(
        "run",
        "--command-name",  # one name, each region's own CommandId
        DEMO_COMMAND_NAME,
        "--targets",
        str(targets),
        "--batch-size",
        "10",
        *_dispatch_options("--daily-quota", "0", "--no-preflight"),
    )
    assert done.returncode == 4, done.stderr
    return done.stdout.splitlines()[0].strip()


def _resume(cli: Fanout, run_id: str, *extra: str) -> subprocess.Popen[str]:
    """`fanout resume` in the background with the short lease."""
    env = {**cli.env, "FANOUT_LEASE_S": str(_LEASE_S)}
    return cli.start("resume", run_id, *_dispatch_options("--daily-quota", "1000", *extra), env=env)


def _refusal(proc: subprocess.Popen[str]) -> re.Match[str]:
    """The one-line refusal of a resume whose run is driven by another runner (exit 2)."""
    code = proc.wait(timeout=60)
    assert proc.stderr is not None
    lines = proc.stderr.read().strip().splitlines()
    assert code == 2, "\n".join(lines)
    errors = [line for line in lines if line.startswith("fanout: error:")]
    assert len(errors) == 1, lines  # progress lines may precede it; no traceback follows
    assert errors == lines[-1:], lines
    match = _REFUSED.match(errors[0])
    assert match is not None, errors[0]
    return match


@postgres_only
def test_two_resumes_one_drives_the_other_names_the_holder(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """Of two resumes of one run, exactly one dispatches; the other exits 2 naming the holder
    and until when; after the holder is killed (SIGKILL: its lease is not released), a resume
    takes over and every instance is invoked exactly once."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 300}
    # 30 calls at 300 ms one at a time (9 s): the holder is still sending when it is killed,
    # even when the loser's start-up is slow on a loaded machine.
    emu = emulator(**fields, latency_ms=300)
    cli = fanout_cli(emu)
    run_id = _stored_run(cli, write_targets(tmp_path / "t.txt", fleet_ids(**fields)))
    first, second = _resume(cli, run_id), _resume(cli, run_id)
    deadline = time.monotonic() + 30
    while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    loser, holder = (first, second) if first.poll() is not None else (second, first)
    refusal = _refusal(loser)
    assert refusal["run"] == run_id
    assert refusal["holder"].endswith(f":{holder.pid}")
    assert holder.poll() is None  # still dispatching
    time.sleep(1.0)
    close(holder, signal.SIGKILL)
    calls_then = emu.snapshot()["regions"]["cn-hangzhou"]["calls"]["InvokeCommand"]
    assert 0 < calls_then < 30
    taker = _resume(cli, run_id)
    assert taker.wait(timeout=60) == 0, taker.stderr.read() if taker.stderr else ""
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 300
    assert set(counts.values()) == {1}


def _wait_for_calls(emu: EmulatorThread, at_least: int, timeout_s: float = 30) -> int:
    """Wait until the emulator has seen `at_least` InvokeCommand calls; how many it saw."""
    deadline = time.monotonic() + timeout_s
    while True:
        calls = emu.snapshot()["regions"]["cn-hangzhou"]["calls"].get("InvokeCommand", 0)
        if calls >= at_least or time.monotonic() > deadline:
            return int(calls)
        time.sleep(0.05)


def _stderr(proc: subprocess.Popen[str]) -> str:
    """Everything a finished process wrote to stderr."""
    assert proc.stderr is not None
    return proc.stderr.read()


@postgres_only
def test_stalled_holder_is_taken_over_when_its_lease_expires(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """A holder that stops renewing (SIGSTOP: alive, connected, silent) keeps its run until the
    lease expires; then a resume takes over, and the old holder, woken, sends no new call."""
    # 30 batches at 100 ms one at a time: the holder is stopped mid-run, not after its last call.
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 1500}
    emu = emulator(**fields, latency_ms=100)
    cli = fanout_cli(emu)
    run_id = _stored_run(cli, write_targets(tmp_path / "t.txt", fleet_ids(**fields)))
    stalled = _resume(cli, run_id)
    assert _wait_for_calls(emu, 3) >= 3
    stalled.send_signal(signal.SIGSTOP)
    try:
        second = _resume(cli, run_id)
        if second.wait(timeout=90) == 0:
            # On a loaded machine it may ask only after the lease ran out, or after the server
            # ended the stopped holder's session (stalled inside a transaction, ~10 s): then it
            # takes over at once - what a resume after the lease is for. The rest holds alike.
            taker = second
        else:
            refusal = _refusal(second)
            assert refusal["holder"].endswith(f":{stalled.pid}")
            until = time.mktime(time.strptime(refusal["until"][:19], "%Y-%m-%dT%H:%M:%S"))
            until -= time.timezone  # the message is UTC
            time.sleep(max(0.0, until + 1.5 - time.time()))
            taker = _resume(cli, run_id)
            assert taker.wait(timeout=60) == 0, _stderr(taker)
    finally:
        stalled.send_signal(signal.SIGCONT)
    calls_done = emu.snapshot()["regions"]["cn-hangzhou"]["calls"]["InvokeCommand"]
    code = stalled.wait(timeout=30)
    errors = _stderr(stalled)
    assert code == 6, errors  # it had sent calls: fatal, never "bad input, nothing sent"
    assert "Traceback" not in errors
    assert emu.snapshot()["regions"]["cn-hangzhou"]["calls"]["InvokeCommand"] <= calls_done + 1
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 1500
    assert set(counts.values()) == {1}


@postgres_only
def test_force_takes_over_a_live_runner_after_a_warning(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """`resume --force` warns on stderr naming the live holder, takes the run over and finishes
    it; the old runner is refused its next call, and every instance is invoked exactly once."""
    fields: dict[str, Any] = {"regions": ("cn-hangzhou",), "instances_per_region": 1500}
    emu = emulator(**fields, latency_ms=100)
    cli = fanout_cli(emu)
    run_id = _stored_run(cli, write_targets(tmp_path / "t.txt", fleet_ids(**fields)))
    old = _resume(cli, run_id)
    assert _wait_for_calls(emu, 3) >= 3
    forced = _resume(cli, run_id, "--force")
    assert forced.wait(timeout=60) == 0
    warning = _stderr(forced)
    assert f"warning: --force: taking run {run_id} over from " in warning
    assert f":{old.pid} (its lease runs until 20" in warning
    code = old.wait(timeout=30)
    errors = _stderr(old)
    assert code == 6, errors  # it had sent calls: fatal, never "bad input, nothing sent"
    assert "the lease was taken over by" in errors
    assert "Traceback" not in errors
    counts = invoked_instances(emu.snapshot())
    assert len(counts) == 1500
    assert set(counts.values()) == {1}

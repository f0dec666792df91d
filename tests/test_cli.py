"""The command line as people and scripts meet it (issue 6): help with examples for every command,
exit 2 with one line on bad input (and nothing sent), and `--json` output with its documented
fields.

Help and bad input run the real `main` in-process through click's runner (fast, and every
command's parser, settings and validation are the real ones); the `--json` checks run the real
`fanout` as a subprocess against the emulator on 127.0.0.1, sharing one module-wide rollout.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import pytest
import structlog
from click.testing import CliRunner, Result

from fanout.cli import main
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    DEMO_COMMAND_NAME,
    EmulatorConfig,
    EmulatorThread,
    demo_command_id,
)
from fanout.emulator.fleet import Fleet
from tests.conftest import Fanout, write_targets
from tests.test_schemas import validate

COMMANDS = (
    "commands",
    "demo",
    "doctor",
    "emulator",
    "plan",
    "quota",
    "report",
    "resume",
    "retry",
    "rollback",
    "run",
    "runs",
    "simulate",
    "status",
    "stop",
)
INSTANCE_STATES = (
    "succeeded",
    "failed",
    "unreachable",
    "excluded",
    "not_invoked",
    "unknown",
    "invoked",
)
# The stable --json field names, as README.md's "Machine-readable output" documents them.
DOCUMENTED: dict[str, frozenset[str]] = {
    "run event": frozenset({"event", "run_id", "targets", "batches", "excluded", "regions"}),
    "end event": frozenset({"event", "run_id", "state", "exit_code", "instances"}),
    "batch event": frozenset(
        {"event", "batch_id", "region", "wave", "outcome", "invoke_id", "instances"}
    ),
    "status": frozenset(
        {
            "run_id",
            "state",
            "exit_code",
            "command_id",
            "command_ids",
            "parent_run_id",
            "created_at",
            "updated_at",
            "target_count",
            "instances",
            "batches",
            "regions",
            "lease",
        }
    ),
    "runs": frozenset(
        {
            "run_id",
            "state",
            "exit_code",
            "command_id",
            "target_count",
            "created_at",
            "parent_run_id",
        }
    ),
    "report": frozenset(
        {
            "run_id",
            "target_count",
            "runs",
            "command_ids",
            "summary",
            "by_region",
            "by_error_code",
            "instances",
        }
    ),
    "report row": frozenset(
        {
            "run_id",
            "region",
            "instance_id",
            "state",
            "batch_id",
            "invoke_id",
            "invocation_status",
            "exit_code",
            "error_code",
            "reason",
            "start_time",
            "finish_time",
            "output",
        }
    ),
    "quota": frozenset({"account", "mode", "daily_quota", "reserve", "regions"}),
    "quota region": frozenset(
        {"used", "left", "limit", "limit_source", "api_limit", "next_call_frees_at", "last_refusal"}
    ),
    "plan": frozenset(
        {
            "targets",
            "duplicates_dropped",
            "batch_size",
            "calls_needed",
            "excluded",
            "days",
            "finishes_at",
            "quota_mode",
            "spends_quota",
            "regions",
        }
    ),
    "plan region": frozenset(
        {
            "targets",
            "excluded",
            "excluded_by_reason",
            "batches",
            "calls_needed",
            "quota_left_now",
            "calls_now",
            "days",
            "finish_after_s",
            "finishes_at",
        }
    ),
    "stop": frozenset({"run_id", "state", "stop_calls", "instances_stopped", "runner_released"}),
}
REPO = Path(__file__).resolve().parent.parent
# A run id that no ledger holds (the real ones are r<date>-<time>-<hex>).
UNKNOWN_RUN = "r20000101-000000-000000"


# --------------------------------------------------------------------------- in-process helpers


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands configure structlog onto the runner's stderr; undo that after each test."""
    yield
    structlog.reset_defaults()


@dataclass
class Sandbox:
    """A private HOME and ledger, demo credentials and an emulator that must see no call."""

    tmp: Path
    emu: EmulatorThread

    @property
    def env(self) -> dict[str, str | None]:
        """Environment overrides for the runner: only ours of FANOUT_* / ALIBABA_CLOUD_*."""
        cleared: dict[str, str | None] = {
            k: None for k in os.environ if k.startswith(("FANOUT_", "ALIBABA_CLOUD_", "XDG_"))
        }
        return {
            **cleared,
            "HOME": str(self.tmp / "home"),
            "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
            "FANOUT_ENDPOINT": self.emu.url,
            "FANOUT_LEDGER": str(self.tmp / "ledger.sqlite3"),
        }

    def invoke(self, args: list[str], env: dict[str, str | None] | None = None) -> Result:
        """`fanout ARGS` in-process (the test runs in the sandbox folder)."""
        return CliRunner().invoke(main, args, env={**self.env, **(env or {})})

    def calls(self) -> int:
        """Every authenticated request the emulator has answered, all actions and regions."""
        regions = self.emu.snapshot()["regions"]
        return sum(sum(r["calls"].values()) for r in regions.values())


@pytest.fixture(scope="module")
def quiet_emulator() -> Iterator[EmulatorThread]:
    """One emulator for the bad-input tests: it must never be called."""
    with EmulatorThread(EmulatorConfig(regions=("cn-hangzhou",), instances_per_region=5)) as emu:
        yield emu


@pytest.fixture
def sandbox(
    tmp_path: Path, quiet_emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> Sandbox:
    """A sandbox folder, the current directory, with the input files the bad-input cases name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    write_targets(
        tmp_path / "t.txt", [("cn-hangzhou", f"i-bp1aaaaaaaaaaaaaaa{n:02}") for n in range(20)]
    )
    (tmp_path / "bad_targets.txt").write_text("cn-hangzhou,i-bp1aaaaaaaaaaaaaaaa1\nnot a target\n")
    (tmp_path / "unknown_key.toml").write_text('region = "cn-hangzhou"\nbatch_sise = 10\n')
    (tmp_path / "notes.txt").write_text("not a ledger\n")
    return Sandbox(tmp_path, quiet_emulator)


def example_lines(help_text: str, command: str) -> list[str]:
    """The help's example lines for `command` (lines starting `fanout COMMAND`)."""
    prefix = f"fanout {command}"
    return [line.strip() for line in help_text.splitlines() if line.strip().startswith(prefix)]


def error_lines(result: Result) -> list[str]:
    """The non-empty stderr lines."""
    return [line for line in result.stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------------- help


def test_every_command_is_covered_here() -> None:
    """The CLI has exactly the commands this module checks, so a new one cannot go unchecked."""
    assert main.list_commands(click.Context(main)) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_an_example(command: str) -> None:
    """`fanout COMMAND --help` exits 0 and shows at least one `fanout COMMAND ...` example."""
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert example_lines(result.stdout, command), result.stdout


def test_top_level_help_lists_examples_and_every_exit_code() -> None:
    """`fanout --help` shows examples and the meaning of every exit code 0-6."""
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert example_lines(result.stdout, "")
    block = result.stdout.split("Exit codes:", 1)[1]
    codes = re.findall(r"^\s+(\d)\s+\S", block, flags=re.MULTILINE)
    assert codes == [str(code) for code in range(7)]


def test_python_dash_m_fanout_version_and_help() -> None:
    """`python -m fanout --version` prints the installed version; `--help` exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"fanout, version {version('fanout')}"
    helped = subprocess.run(
        [sys.executable, "-m", "fanout", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0
    assert "Exit codes:" in helped.stdout


# --------------------------------------------------------------------------------- bad input

_RUN = ["run", "--command-id", DEMO_COMMAND_ID, "--targets", "t.txt", "--yes"]
_PLAN = ["plan", "--command-id", DEMO_COMMAND_ID, "--targets", "t.txt"]

# (arguments, environment overrides, fragments the one error line must contain)
BAD_INPUTS: dict[str, tuple[list[str], dict[str, str | None], tuple[str, ...]]] = {
    "status unknown run": (["status", UNKNOWN_RUN], {}, (UNKNOWN_RUN,)),
    "report unknown run": (["report", UNKNOWN_RUN], {}, (UNKNOWN_RUN,)),
    "resume unknown run": (["resume", UNKNOWN_RUN, "--yes"], {}, (UNKNOWN_RUN,)),
    "retry unknown run": (["retry", UNKNOWN_RUN, "--yes"], {}, (UNKNOWN_RUN,)),
    "stop unknown run": (["stop", UNKNOWN_RUN], {}, (UNKNOWN_RUN,)),
    "batch size 0": ([*_RUN, "--batch-size", "0"], {}, ("--batch-size",)),
    "batch size 101": ([*_RUN, "--batch-size", "101"], {}, ("--batch-size", "101")),
    "batch size not a number": ([*_RUN, "--batch-size", "abc"], {}, ("--batch-size",)),
    "waves not a size": ([*_RUN, "--waves", "1,abc"], {}, ("--waves", "abc")),
    "waves shrink": ([*_RUN, "--waves", "50%,10%"], {}, ("--waves", "cumulative")),
    "max errors": ([*_RUN, "--max-errors", "x"], {}, ("--max-errors",)),
    "rate negative": ([*_RUN, "--rate", "-1"], {}, ("--rate:",)),
    "concurrency 0": ([*_RUN, "--concurrency", "0"], {}, ("--concurrency",)),
    "run without command id": (["run", "--targets", "t.txt", "--yes"], {}, ("--command-id",)),
    "plan without command id": (["plan", "--targets", "t.txt"], {}, ("--command-id",)),
    "param without =": ([*_RUN, "--param", "version"], {}, ("--param", "KEY=VALUE")),
    "secret param not given": ([*_RUN, "--secret-param", "token"], {}, ("--secret-param",)),
    "bad target line": (
        ["plan", "--command-id", DEMO_COMMAND_ID, "--targets", "bad_targets.txt"],
        {},
        ("bad_targets.txt:2",),
    ),
    "missing target file": (
        ["run", "--command-id", DEMO_COMMAND_ID, "--targets", "absent.txt", "--yes"],
        {},
        ("absent.txt",),
    ),
    "config unknown key (run)": (
        [*_RUN, "--config", "unknown_key.toml"],
        {},
        ("unknown_key.toml", "batch_sise", "unknown"),
    ),
    "config unknown key (status)": (
        ["status", UNKNOWN_RUN, "--config", "unknown_key.toml"],
        {},
        ("unknown_key.toml", "batch_sise", "unknown"),
    ),
    "config unknown key (env)": (
        _PLAN,
        {"FANOUT_CONFIG": "unknown_key.toml"},
        ("unknown_key.toml", "batch_sise", "unknown"),
    ),
    "bad environment value": (["runs"], {"FANOUT_BATCH_SIZE": "abc"}, ("FANOUT_BATCH_SIZE",)),
    "ledger is a text file (status)": (
        ["status", UNKNOWN_RUN, "--ledger", "notes.txt"],
        {},
        ("notes.txt", "not a fanout ledger"),
    ),
    "ledger is a text file (runs)": (
        ["runs", "--ledger", "notes.txt"],
        {},
        ("notes.txt", "not a fanout ledger"),
    ),
    "ledger is a text file (quota)": (
        ["quota", "--ledger", "notes.txt"],
        {},
        ("notes.txt", "not a fanout ledger"),
    ),
    "ledger is a text file (run)": (
        [*_RUN, "--ledger", "notes.txt"],
        {},
        ("notes.txt", "not a fanout ledger"),
    ),
    "no credentials": (
        _RUN,
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": None, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": None},
        ("credentials", "ALIBABA_CLOUD_ACCESS_KEY_ID"),
    ),
    "quota without account": (
        ["quota"],
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": None},
        ("--account",),
    ),
    "report format": (["report", UNKNOWN_RUN, "--format", "xml"], {}, ("--format",)),
    "runs limit 0": (["runs", "--limit", "0"], {}, ("--limit",)),
    "log level": (["runs", "--log-level", "verbose"], {}, ("--log-level",)),
    "stop wait": (["stop", UNKNOWN_RUN, "--wait-s", "soon"], {}, ("--wait-s",)),
    "demo dir is a file": (["demo", "--dir", "notes.txt"], {}, ("--dir",)),
    "emulator fraction": (["emulator", "--error-rate", "2"], {}, ("--error-rate",)),
    "unknown command": (["deploy"], {}, ("deploy",)),
    "notify not http (run)": ([*_RUN, "--notify", "ftp://x"], {}, ("--notify", "http")),
    "notify not http (resume)": (
        ["resume", UNKNOWN_RUN, "--yes", "--notify", "ftp://x"],
        {},
        ("--notify", "http"),
    ),
    "notify not http (retry)": (
        ["retry", UNKNOWN_RUN, "--yes", "--notify", "ftp://x"],
        {},
        ("--notify", "http"),
    ),
    "html report in a missing folder": (
        [*_RUN, "--html-report", "/nonexistent/dir/r.html"],
        {},
        ("--html-report", "no folder /nonexistent/dir"),
    ),
    "metrics file in a missing folder": (
        [*_RUN, "--metrics-file", "absent/m.prom"],
        {},
        ("--metrics-file", "no folder absent"),
    ),
    "repeat mode Once with a frequency": (
        [*_RUN, "--repeat-mode", "Once", "--frequency", "rate(5m)"],
        {},
        ("--repeat-mode Once", "--frequency"),
    ),
    "dry run, timed, with a frequency": (
        [*_RUN, "--repeat-mode", "DryRun", "--timed", "--frequency", "rate(5m)"],
        {},
        ("--repeat-mode DryRun", "--frequency"),
    ),
    "frequency alone": (
        [*_RUN, "--frequency", "rate(5m)"],
        {},
        ("--frequency", "--repeat-mode Period"),
    ),
    "report output in a missing folder": (
        ["report", UNKNOWN_RUN, "-o", "/nonexistent/x.csv"],
        {},
        ("--output", "no folder /nonexistent"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_sends_nothing(sandbox: Sandbox, case: str) -> None:
    """Bad input exits 2 with one `fanout: error:` line (or click's usage error) naming the
    problem, prints nothing on stdout, raises no traceback, and sends no API call."""
    args, env, fragments = BAD_INPUTS[case]
    before = sandbox.calls()
    result = sandbox.invoke(args, env)
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert result.stdout == ""
    lines = error_lines(result)
    assert "Traceback" not in result.stderr
    if lines[0].startswith("fanout: error:"):
        assert len(lines) == 1, lines
        message = lines[0]
    else:  # click's own usage error: "Usage: ...", "Try ...", then one "Error: ..." line
        assert lines[-1].startswith("Error:"), lines
        assert sum(line.startswith("Error:") for line in lines) == 1
        message = lines[-1]
    for fragment in fragments:
        assert fragment in message, message
    assert sandbox.calls() == before
    assert not (sandbox.tmp / "ledger.sqlite3").exists()  # no file left
    assert not Path("/nonexistent").exists()


def test_a_metrics_port_in_use_is_refused_before_any_call(sandbox: Sandbox) -> None:
    """`--metrics-port` on a port something already listens on: exit 2, one line naming the
    option, before any call and without a ledger file (it failed after the preflight)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = sandbox.calls()
        result = sandbox.invoke([*_RUN, "--metrics-port", str(port)])
    assert result.exit_code == 2, result.output
    assert error_lines(result) == [
        f"fanout: error: --metrics-port {port}: cannot listen on it (Address already in use)"
    ]
    assert sandbox.calls() == before
    assert not (sandbox.tmp / "ledger.sqlite3").exists()


def test_bad_input_from_a_real_process_is_one_stderr_line(sandbox: Sandbox) -> None:
    """The installed entry point, as a process, prints exactly one stderr line and exits 2."""
    env = {k: v for k, v in sandbox.env.items() if v is not None}
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "status", UNKNOWN_RUN, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PATH": os.environ.get("PATH", "")},
        check=False,
        cwd=sandbox.tmp,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"fanout: error: no run {UNKNOWN_RUN!r}: there is no ledger at "
        f"{sandbox.tmp / 'ledger.sqlite3'}"
    ]
    assert not (sandbox.tmp / "ledger.sqlite3").exists()  # a read-only command creates nothing


def test_another_applications_database_is_refused_and_left_untouched(sandbox: Sandbox) -> None:
    """`--ledger` on another program's SQLite file exits 2 and changes neither its bytes nor its mode."""
    other = sandbox.tmp / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE customers (name TEXT)")
        conn.execute("INSERT INTO customers VALUES ('ada')")
    conn.close()
    other.chmod(0o644)
    before = other.read_bytes()
    result = sandbox.invoke(["runs", "--ledger", "app.db"])
    assert result.exit_code == 2
    assert error_lines(result) == [
        "fanout: error: app.db: not a fanout ledger (a SQLite database with other tables: "
        "customers); left untouched"
    ]
    assert other.read_bytes() == before
    assert stat.S_IMODE(other.stat().st_mode) == 0o644
    assert sorted(p.name for p in sandbox.tmp.glob("app.db*")) == ["app.db"]


# ------------------------------------------------------------------------------ --json output

FLEET: dict[str, Any] = {
    "regions": ("cn-beijing", "cn-hangzhou"),
    "instances_per_region": 60,
    "seed": 5,
    "stopped_fraction": 0.05,
}


@dataclass
class Rollout:
    """One finished run (some excluded) and one halted by the daily quota, then resumed."""

    cli: Fanout
    emu: EmulatorThread
    targets: Path
    run: subprocess.CompletedProcess[str]
    halted: subprocess.CompletedProcess[str]
    resumed: subprocess.CompletedProcess[str]

    @property
    def run_id(self) -> str:
        """The finished run."""
        return str(json_lines(self.run.stdout)[0]["run_id"])

    @property
    def halted_id(self) -> str:
        """The run halted by quota and resumed."""
        return str(json_lines(self.halted.stdout)[0]["run_id"])

    def json(self, *args: str) -> Any:
        """`fanout ARGS` must exit 0 and print one JSON document."""
        done = self.cli.run(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line, each one JSON object."""
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rollout]:
    """The emulator, a ledger and two runs made through the real CLI with `--json`."""
    tmp = tmp_path_factory.mktemp("cli_json")
    (tmp / "home").mkdir()
    fleet = Fleet.from_config(EmulatorConfig(**FLEET))
    ids = [(r, i.instance_id) for r, rf in sorted(fleet.regions.items()) for i in rf.instances]
    targets = write_targets(tmp / "targets.txt", ids)
    config = EmulatorConfig(**FLEET, exec_failure_fraction=0.1)
    with EmulatorThread(config) as emu:
        cli = Fanout(endpoint=emu.url, ledger=str(tmp / "ledger.sqlite3"), home=tmp / "home")
        # Two regions: one source that works in both (a CommandId belongs to one region).
        source = ("--command-name", DEMO_COMMAND_NAME)
        common = (*source, "--targets", str(targets), "--yes", "--json")
        run = cli.run("run", *common)
        # The first run spent 2 calls per region (2 batches each): a daily quota of 3 leaves
        # one, so the second run is halted by the quota (exit 4) after one batch per region.
        halted = cli.run("run", *common, "--daily-quota", "3")
        halted_id = json_lines(halted.stdout)[0]["run_id"]
        resumed = cli.run("resume", halted_id, "--yes", "--json", "--daily-quota", "10")
        yield Rollout(cli, emu, targets, run, halted, resumed)
        cli.reap()


def test_run_json_is_json_lines_from_run_to_end(rollout: Rollout) -> None:
    """`run --json` prints only JSON lines: first `run` with the run id, last `end` with the
    state and the exit code the process exits with."""
    events = json_lines(rollout.run.stdout)
    first, last = events[0], events[-1]
    assert DOCUMENTED["run event"] <= set(first)
    assert DOCUMENTED["end event"] <= set(last)
    batches = [e for e in events if e["event"] == "batch"]
    assert len(batches) == 4
    assert all(DOCUMENTED["batch event"] <= set(e) for e in batches)
    assert first["event"] == "run"
    assert first["run_id"].startswith("r")
    assert first["targets"] == 120
    assert last["event"] == "end"
    assert last["run_id"] == first["run_id"]
    assert last["state"] == "finished"
    assert last["exit_code"] == rollout.run.returncode == 1  # some failed, some excluded
    assert all("event" in e for e in events)


def test_resume_json_continues_a_quota_halted_run(rollout: Rollout) -> None:
    """A run halted by the daily quota exits 4; `resume --json` starts with a `resume` line for
    that run id and ends with `end` carrying its final state and exit code."""
    halted = json_lines(rollout.halted.stdout)
    assert halted[-1]["event"] == "end"
    assert halted[-1]["exit_code"] == rollout.halted.returncode == 4
    events = json_lines(rollout.resumed.stdout)
    assert events[0]["event"] == "resume"
    assert events[0]["run_id"] == rollout.halted_id
    assert events[-1]["event"] == "end"
    assert events[-1]["run_id"] == rollout.halted_id
    assert events[-1]["state"] == "finished"
    assert events[-1]["exit_code"] == rollout.resumed.returncode == 1


def test_status_json_fields(rollout: Rollout) -> None:
    """`status --json` carries run_id, state, exit_code, target_count, every instance state,
    batches and per-region counts, and the counts add up to the targets."""
    doc = rollout.json("status", rollout.run_id, "--json")
    assert DOCUMENTED["status"] <= set(doc)
    assert doc["run_id"] == rollout.run_id
    assert doc["state"] == "finished"
    assert doc["exit_code"] == 1
    assert doc["target_count"] == 120
    assert set(doc["instances"]) == set(INSTANCE_STATES)
    assert sum(doc["instances"].values()) == 120
    assert doc["instances"]["excluded"] > 0
    assert doc["instances"]["failed"] > 0
    assert sum(doc["batches"].values()) > 0
    assert set(doc["regions"]) == {"cn-beijing", "cn-hangzhou"}
    assert doc["command_ids"] == {r: demo_command_id(r) for r in ("cn-beijing", "cn-hangzhou")}
    for region in doc["regions"].values():
        assert set(region["instances"]) == set(INSTANCE_STATES)
        assert sum(region["instances"].values()) == 60
        assert isinstance(region["batches"], dict)


def test_runs_json_fields(rollout: Rollout) -> None:
    """`runs --json` lists every run, newest first, with the documented fields."""
    doc = rollout.json("runs", "--json")
    assert [r["run_id"] for r in doc] == [rollout.halted_id, rollout.run_id]
    for run in doc:
        assert DOCUMENTED["runs"] <= set(run)
        assert run["command_id"] == DEMO_COMMAND_NAME
        assert run["target_count"] == 120
        assert run["parent_run_id"] is None
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", run["created_at"])
    assert [(r["state"], r["exit_code"]) for r in doc] == [("finished", 1), ("finished", 1)]


@pytest.mark.parametrize("how", [("--format", "json"), ("--json",)])
def test_report_json_fields(rollout: Rollout, how: tuple[str, ...]) -> None:
    """`report --format json` (and `--json`) has the summary, by region, by error code and one
    row per target with the documented fields."""
    doc = rollout.json("report", rollout.run_id, *how)
    assert doc["run_id"] == rollout.run_id
    assert doc["target_count"] == 120
    assert sum(doc["summary"].values()) == 120
    assert set(doc["by_region"]) == {"cn-beijing", "cn-hangzhou"}
    assert isinstance(doc["by_error_code"], dict)
    assert DOCUMENTED["report"] <= set(doc)
    assert doc["runs"] == [rollout.run_id]
    rows = doc["instances"]
    assert len(rows) == 120
    for row in rows:
        assert DOCUMENTED["report row"] <= set(row), row
    succeeded = [r for r in rows if r["state"] == "succeeded"]
    assert succeeded
    assert all(r["exit_code"] == 0 and r["invoke_id"].startswith("t-") for r in succeeded)
    assert all(r["output"].startswith("hello from i-") for r in succeeded)
    failed = [r for r in rows if r["state"] == "failed"]
    assert failed
    assert all(r["exit_code"] not in (0, None) for r in failed)
    assert len({r["instance_id"] for r in rows}) == 120


def test_quota_json_fields(rollout: Rollout) -> None:
    """`quota --json` names the account, the window and, per region, the calls the emulator
    counted as used, what is left and the limit - the account's own, read from the API."""
    doc = rollout.json("quota", "--json")
    assert DOCUMENTED["quota"] <= set(doc)
    assert all(DOCUMENTED["quota region"] <= set(r) for r in doc["regions"].values())
    assert doc["account"] == DEMO_ACCESS_KEY_ID
    assert doc["mode"] == "rolling"
    assert doc["daily_quota"] is None  # not overridden
    assert doc["reserve"] == 0
    counted = rollout.emu.snapshot()["regions"]
    assert set(doc["regions"]) == {"cn-beijing", "cn-hangzhou"}
    for name, region in doc["regions"].items():
        assert region["used"] == counted[name]["quota_used"] > 0
        assert (region["limit"], region["limit_source"], region["api_limit"]) == (5000, "api", 5000)
        assert region["left"] == 5000 - region["used"]
        assert region["last_refusal"] is None


def test_plan_json_fields_and_spends_nothing(rollout: Rollout) -> None:
    """`plan --json` gives targets, calls needed and per-region figures, and sends no
    InvokeCommand."""
    before = rollout.emu.snapshot()["invocations"]
    doc = rollout.json(
        "plan", "--command-name", DEMO_COMMAND_NAME, "--targets", str(rollout.targets), "--json"
    )
    assert DOCUMENTED["plan"] <= set(doc)
    assert doc["targets"] == 120
    assert doc["calls_needed"] == sum(r["calls_needed"] for r in doc["regions"].values())
    assert doc["calls_needed"] == 4  # 60 per region, less the stopped ones: 2 batches each
    assert doc["spends_quota"] is False
    for region in doc["regions"].values():
        assert DOCUMENTED["plan region"] <= set(region)
        assert region["targets"] == 60
    assert sum(r["excluded"] for r in doc["regions"].values()) == doc["excluded"] > 0
    assert rollout.emu.snapshot()["invocations"] == before


def test_stop_json_fields(rollout: Rollout) -> None:
    """`stop --json` on a finished run reports it unchanged, with nothing to stop."""
    doc = rollout.json("stop", rollout.run_id, "--json")
    assert DOCUMENTED["stop"] <= set(doc)
    assert doc["run_id"] == rollout.run_id
    assert doc["state"] == "finished"
    assert doc["instances_stopped"] == 0


def test_readme_documents_every_stable_field() -> None:
    """Every field these tests hold the commands to is named in the README's machine-readable
    output section, so the documentation and the output cannot drift apart unnoticed."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Machine-readable output", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+)`", section))
    missing = {name for fields in DOCUMENTED.values() for name in fields} - named
    assert missing == set()


@pytest.mark.slow
def test_demo_json_is_json_lines_ending_with_the_status(tmp_path: Path) -> None:
    """`demo --json` prints only JSON lines: the run's events, then its status with the ledger;
    `demo --clean` then removes everything it wrote, script and folder included."""
    folder = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "fanout", "demo", "--dir", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=110,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "ALIBABA_"))},
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path),
        },
        check=False,
    )
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    assert events[0]["event"] == "run"
    assert events[-2]["event"] == "end"
    status = events[-1]
    assert status["event"] == "status"
    assert DOCUMENTED["status"] <= set(status)
    assert status["run_id"] == events[0]["run_id"]
    assert Path(status["ledger"]) == folder / "ledger.sqlite3"
    assert sum(status["instances"].values()) == status["target_count"] == 10_000
    for event in events:  # every line, the closing status document too, has its schema
        validate(event, f"event-{event['event']}")
    assert (folder / "deploy.sh").exists()
    cleaned = subprocess.run(
        [sys.executable, "-m", "fanout", "demo", "--clean", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        check=False,
    )
    assert cleaned.returncode == 0, cleaned.stderr
    assert not folder.exists()
    assert f"removed {folder / 'deploy.sh'}" in cleaned.stderr.splitlines()


def test_demo_clean_keeps_a_folder_holding_other_files(tmp_path: Path) -> None:
    """`demo --clean --dir` removes only the demo's files; a folder that holds anything else
    stays, with that file in it."""
    (tmp_path / "deploy.sh").write_text("echo demo\n")
    (tmp_path / "report.html").write_text("<!DOCTYPE html>\n")
    (tmp_path / "mine.txt").write_text("keep\n")
    result = CliRunner().invoke(main, ["demo", "--clean", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]

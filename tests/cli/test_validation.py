"""Bad input never reaches the API and never meets a traceback (issue 16): every reproduction of
the issue, through the real `fanout` entry point in-process, against the emulator on 127.0.0.1.

A refusal is one `fanout: error:` line naming the option, its source and the rule; exit 2; no
InvokeCommand at the emulator (not even one refused for its signature); no run and no file left
behind in the sandbox.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import Result

from fanout import ConfigError, Credentials, Settings, Target, rollout_blocking
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_COMMAND_ID,
    DEMO_PARAM_COMMAND_ID,
    EmulatorConfig,
    EmulatorThread,
)
from fanout.emulator.fleet import Fleet
from tests.conftest import write_targets
from tests.harness import Sandbox, one_error_line

FLEET = EmulatorConfig(regions=("cn-hangzhou",), instances_per_region=6, seed=16)
IDS = [i.instance_id for i in Fleet.from_config(FLEET).regions["cn-hangzhou"].instances]
RUN = ["run", "--command-id", DEMO_COMMAND_ID, "--targets", "t.txt", "--yes", "--no-wait"]
PARAM_RUN = [
    *("run", "--command-id", DEMO_PARAM_COMMAND_ID, "--targets", "t.txt", "--yes", "--no-wait"),
]
GOOD_PARAMS = ["--param", "name=web", "--param", "version=1.2.3"]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands configure structlog onto the runner's stderr; undo that after each test."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorThread]:
    """One emulator for the module."""
    with EmulatorThread(FLEET) as server:
        yield server


@pytest.fixture
def box(tmp_path: Path, emu: EmulatorThread) -> Sandbox:
    """A sandbox with a target file of the six instances."""
    (tmp_path / "home").mkdir()
    write_targets(tmp_path / "t.txt", [("cn-hangzhou", iid) for iid in IDS])
    return Sandbox(tmp_path, emu)


def refused(
    box: Sandbox, args: list[str], *fragments: str, env: dict[str, str | None] | None = None
) -> str:
    """Run `args`: exit 2, one error line holding every fragment, no InvokeCommand sent, no
    run and no new file left behind. The error line."""
    before, files = box.invocations(), box.files()
    result = box.invoke(args, env)
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    line = one_error_line(result)
    for fragment in fragments:
        assert fragment in line, line
    assert box.invocations() == before
    assert box.files() == files, box.files() - files
    assert box.runs() == 0
    return line


def ran(box: Sandbox, args: list[str], env: dict[str, str | None] | None = None) -> Result:
    """Run `args`, which must succeed (exit 0)."""
    result = box.invoke(args, env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


# ------------------------------------------------------------- values that were sent to the API


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--timeout", "86401"], ("--timeout", "10 to 86400", "86401")),
        (["--timeout", "9"], ("--timeout", "10 to 86400")),
        (["--username", "u" * 256], ("--username", "256 characters, at most 255")),
        (["--working-dir", "/" + "w" * 200], ("--working-dir", "201 characters, at most 200")),
        (["--batch-size", "51"], ("--batch-size", "max_batch_size 50")),
        (["--batch-size", "100"], ("--batch-size", "max_batch_size 50")),
        (["--batch-size", "101"], ("--batch-size", "1 to 100")),
        (["--rate", "nan"], ("--rate", "got nan")),
        (["--repeat-mode", "Bogus"], ("--repeat-mode",)),
    ],
)
def test_invoke_options_over_the_api_limits_are_refused_before_any_call(
    box: Sandbox, args: list[str], fragments: tuple[str, ...]
) -> None:
    """Timeout 10..86400, Username <= 255, WorkingDir <= 200, batches over max_batch_size
    (default 50): refused with the option and the rule, nothing sent (the issue: every batch
    went out, was refused and spent quota)."""
    refused(box, [*RUN, *args], *fragments)


@pytest.mark.parametrize(
    ("line", "fragments"),
    [
        ('repeat_mode = "Bogus"', ("rollout.toml:3: [rollout] repeat_mode", "one of Once")),
        ("timeout_s = 5", ("rollout.toml:3: [rollout] timeout_s", "10 to 86400")),
        ('username = "' + "u" * 300 + '"', ("rollout.toml:3: [rollout] username", "at most 255")),
        ("timeout_s = 1.5", ("rollout.toml:3: [rollout] timeout_s", "expected int")),
        ("timeout_s = true", ("rollout.toml:3: [rollout] timeout_s", "expected int")),
    ],
)
def test_the_rollout_table_passes_the_same_checks_as_the_flags(
    box: Sandbox, line: str, fragments: tuple[str, ...]
) -> None:
    """`[rollout]` values are checked by the flags' rules, the refusal naming file:line."""
    (box.tmp / "rollout.toml").write_text(f'[rollout]\ncommand_id = "{DEMO_COMMAND_ID}"\n{line}\n')
    args = ["run", "--targets", "t.txt", "--yes", "--config", "rollout.toml"]
    refused(box, args, *fragments)


def test_a_wrong_secret_with_no_preflight_sends_no_invoke_command(box: Sandbox) -> None:
    """`--no-preflight` with a wrong AccessKeySecret: the free DescribeCommands check is refused
    for its signature, the run stops there (exit 6) and no InvokeCommand is even attempted."""
    before = box.invocations()
    result = box.invoke(
        [*RUN, "--no-preflight"], {"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "wrong-secret-value-1"}
    )
    assert result.exit_code == 6, result.output
    assert "SignatureDoesNotMatch" in one_error_line(result)
    assert box.invocations() == before
    assert box.emu.snapshot()["unauthenticated"].get("DescribeCommands", 0) >= 1
    assert box.runs() == 0
    assert not box.ledger.exists()


def test_a_resume_with_a_wrong_secret_sends_no_invoke_command(box: Sandbox) -> None:
    """resume checks the credentials with a free DescribeCommands first: a wrong secret stops it
    there (exit 6) and no InvokeCommand is even attempted."""
    stored = box.invoke([*RUN, "--daily-quota", "0"])
    assert stored.exit_code == 4, stored.output
    run_id = stored.stdout.splitlines()[0].strip()
    before = box.invocations()
    result = box.invoke(
        ["resume", run_id, "--yes", "--daily-quota", "100"],
        {"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "wrong-secret-value-1"},
    )
    assert result.exit_code == 6, result.output
    assert "SignatureDoesNotMatch" in one_error_line(result)
    assert box.invocations() == before


# --------------------------------------------------------------------------- no traceback


def test_a_rate_below_one_per_second_paces_instead_of_crashing(box: Sandbox) -> None:
    """`--rate 0.5` (and describe_rate_per_s 0.5) is a pace of one call every two seconds: the
    run finishes (aiolimiter refused the amount and left the run `running`)."""
    result = ran(
        box,
        [*RUN[:-1], "--rate", "0.5", "--json"],
        {"FANOUT_DESCRIBE_RATE_PER_S": "0.5", "FANOUT_POLL_INTERVAL_S": "0.2"},
    )
    assert '"state": "finished"' in result.stdout
    assert box.invocations() >= 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"name": "\xff"}', "line 1 is not valid UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"name": ' + b"9" * 5000 + b"}", "JSON object of string values"),
        (b'{"name": NaN}', "JSON object of string values"),
        (b'{"name": "a", "name": "b"}', "given twice"),
    ],
)
def test_params_json_files_that_are_not_json_objects_of_text_are_one_line(
    box: Sandbox, content: bytes, fragment: str
) -> None:
    """`--params-json @FILE` with invalid UTF-8, 100 000 brackets, a 5 000-digit number, NaN or
    a duplicate name: one line naming the file, exit 2 (a traceback before)."""
    (box.tmp / "p.json").write_bytes(content)
    refused(box, [*PARAM_RUN, "--params-json", "@p.json"], "--params-json @p.json", fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--param", "name=\udcff"], "not valid UTF-8"),
        (["--param", "na\udcffme=x"], "not valid UTF-8"),
        (["--param", "name=a\x00b"], "NUL"),
        (["--command-id", "c-\udcff"], "--command-id: is not valid UTF-8"),
        (["--username", "ro\udcffot"], "--username: is not valid UTF-8"),
        (["--username", "root\nx"], "--username: must not contain control characters"),
        (["--working-dir", "/tmp/\udcff"], "--working-dir: is not valid UTF-8"),
    ],
)
def test_undecodable_or_control_text_in_flags_is_refused(
    box: Sandbox, args: list[str], fragment: str
) -> None:
    """Bytes that are not UTF-8 (kept by Python as lone surrogates) or control characters in
    --param, --command-id, --username, --working-dir: one line, exit 2 (a traceback before)."""
    base = [*PARAM_RUN, "--param", "version=1.2.3"] if args[0] == "--param" else [*RUN]
    if args[0] == "--command-id":
        base = [a for a in base if a not in {DEMO_COMMAND_ID, "--command-id"}]
    line = refused(box, [*base, *args], fragment)
    assert "\udcff" not in line


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("batch_size = inf", "cfg.toml:1: batch_size must be an integer from 1 to 100, got inf"),
        ("concurrency = 1e400", "cfg.toml:1: concurrency must be an integer"),
        ("batch_size = 1.5", "cfg.toml:1: batch_size must be an integer from 1 to 100, got 1.5"),
        ("lease_s = 0", "cfg.toml:1: lease_s must be a number from 3"),
        ("lease_s = nan", "cfg.toml:1: lease_s must be a finite number from 3 to 86400, got nan"),
        ("read_timeout_s = nan", "cfg.toml:1: read_timeout_s must be a finite number above 0"),
        ("rate_per_s = 0.001", "cfg.toml:1: rate_per_s must be 0 (no limit) or a number"),
        ('endpoint = "http://[::1"', "cfg.toml:1: endpoint is not a valid URL"),
        ("daily_quota = 99999999999999999999", "cfg.toml:1: daily_quota must be an integer"),
    ],
)
def test_config_file_numbers_are_typed_and_bounded(box: Sandbox, line: str, fragment: str) -> None:
    """TOML `batch_size = inf`, `concurrency = 1e400` (tracebacks before), `batch_size = 1.5`
    (silently 1 before), `lease_s = 0` and NaN timeouts (accepted before): one line naming
    file:line, the setting and the rule."""
    (box.tmp / "cfg.toml").write_text(line + "\n")
    refused(box, [*RUN, "--config", "cfg.toml"], fragment)


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("FANOUT_LEASE_S", "0", "environment FANOUT_LEASE_S: lease_s must be a number from 3"),
        ("FANOUT_LEASE_S", "nan", "environment FANOUT_LEASE_S"),
        ("FANOUT_CONNECT_TIMEOUT_S", "inf", "environment FANOUT_CONNECT_TIMEOUT_S"),
        ("FANOUT_BATCH_SIZE", "1.5", "environment FANOUT_BATCH_SIZE: batch_size must be an int"),
        ("FANOUT_CONCURRENCY", "9" * 5000, "concurrency must be an integer from 1 to 10000"),
        ("FANOUT_DESCRIBE_RATE_PER_S", "-1", "environment FANOUT_DESCRIBE_RATE_PER_S"),
    ],
)
def test_environment_values_pass_the_same_rules(
    box: Sandbox, variable: str, value: str, fragment: str
) -> None:
    """`FANOUT_*` values are refused by the same rules, naming the variable."""
    refused(box, RUN, fragment, env={variable: value})


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("http://127.0.0.1:99999", "--endpoint: is not a valid URL (Port out of range"),
        ("http://[::1", "--endpoint: is not a valid URL (Invalid IPv6 URL)"),
        ("ftp://127.0.0.1", "--endpoint: must start with https://"),
        ("http://user:pw@127.0.0.1:1", "must not carry a user name or password"),
        ("http://ecs.example.com", "--insecure-http"),
    ],
)
def test_endpoints_that_cannot_be_used_are_refused(
    box: Sandbox, endpoint: str, fragment: str
) -> None:
    """A port out of range, a broken IPv6 literal (tracebacks before), another scheme, a
    password in the URL, and a plain http:// endpoint on another host without --insecure-http
    (accepted silently before): one line, exit 2."""
    refused(box, [*RUN, "--endpoint", endpoint], fragment)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "fanout-demo-secret\xff"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "fanout-demo-\udcffsecret"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "fanout-demo-secret\nnot-for-production"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "CAIS-token\nwith-a-newline"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "CAIS-token-\xff"),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5t Id"),
    ],
)
def test_credentials_with_a_byte_a_header_cannot_carry_are_refused(
    box: Sandbox, variable: str, value: str
) -> None:
    """A key secret or STS token with \\xff, an undecodable byte or a newline (a traceback from
    the HTTP client before): one line naming the variable, never the value."""
    line = refused(box, RUN, variable, "not printable ASCII", env={variable: value})
    if variable != "ALIBABA_CLOUD_ACCESS_KEY_ID":  # no part of a secret is shown
        for part in filter(None, re.split(r"[\n\xff\udcff]", value)):
            assert part not in line, line


def test_ledger_locations_that_are_no_file_are_refused(box: Sandbox) -> None:
    """`--ledger` naming a folder, a path under /proc, or a PostgreSQL URL that does not parse
    (a traceback before): one line, exit 2, the URL's password never shown."""
    (box.tmp / "folder").mkdir()
    refused(box, [*RUN, "--ledger", "folder"], "folder: is a directory")
    line = refused(box, [*RUN, "--ledger", "postgresql://u:pw@[::1:1/db"], "Invalid IPv6 URL")
    assert "pw" not in line.replace("postgresql", "")
    assert "u:***@" in line
    refused(box, [*RUN, "--ledger", "ftp://host/l.db"], "scheme 'ftp' is not known")
    refused(box, [*RUN, "--ledger", "sqlite://host/l.db"], "names a file, not a host")
    refused(box, [*RUN, "--ledger", "sqlite:"], "names no file")
    # The exact path: one line, exit 2, nothing sent, no run, nothing left behind.
    refused(box, [*RUN, "--ledger", "/proc/foo/l.db"], "/proc/foo/l.db")


def test_click_usage_errors_are_one_line(box: Sandbox) -> None:
    """Click's own errors (a value that is not a number, an unknown option or command) print one
    `fanout: error:` line naming the option and where the full usage is."""
    line = refused(box, [*RUN, "--batch-size", "abc"], "--batch-size", "not a valid integer")
    assert line.endswith("(see fanout run --help)")
    refused(box, [*RUN, "--bogus"], "No such option", "--bogus")
    refused(box, ["deploy"], "No such command", "deploy")
    refused(box, ["runs", "--limit", "0"], "--limit")
    refused(box, ["stop", "r1", "--wait-s", "nan"], "--wait-s", "finite")


# ------------------------------------------------------------------------- the ledger


def _ledger_with_a_run(box: Sandbox) -> str:
    """A finished run in the sandbox's ledger; its id."""
    result = ran(box, [*RUN])
    return result.stdout.splitlines()[0].strip()


def test_a_read_only_ledger_serves_every_read_command(box: Sandbox) -> None:
    """A ledger opened `mode=ro` (root ignores file modes, so this is how a read-only ledger is
    made in CI): status, runs, report and quota work; run and resume are refused before any
    call (a traceback before, for the readers too)."""
    run_id = _ledger_with_a_run(box)
    ro = f"sqlite:///{box.ledger}?mode=ro"
    before = box.ledger.read_bytes()
    files = box.files()
    for args in (["status", run_id], ["runs"], ["report", run_id], ["quota"]):
        result = box.invoke([*args, "--ledger", ro])
        assert result.exit_code == 0, (args, result.output)
    assert run_id in box.invoke(["runs", "--ledger", ro]).stdout
    calls = box.invocations()
    result = box.invoke([*RUN, "--ledger", ro])
    assert result.exit_code == 2
    assert "read-only (mode=ro)" in one_error_line(result)
    result = box.invoke(["resume", run_id, "--yes", "--ledger", ro])
    assert result.exit_code == 2
    assert box.invocations() == calls
    assert box.ledger.read_bytes() == before
    assert box.files() == files


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'", "schema version 'abc'"),
        ("DROP TABLE instances", "table instances is missing"),
    ],
)
def test_a_damaged_ledger_is_one_line_for_readers_and_writers(
    box: Sandbox, damage: str, fragment: str
) -> None:
    """A ledger whose schema version is `abc` or whose `instances` table is gone: status, runs
    and run refuse it in one line, exit 2 (a traceback before)."""
    run_id = _ledger_with_a_run(box)
    with sqlite3.connect(box.ledger) as conn:
        conn.execute(damage)
    conn.close()
    calls = box.invocations()
    for args in (["status", run_id], ["runs"], RUN):
        result = box.invoke(args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in one_error_line(result)
    assert box.invocations() == calls


def test_read_commands_create_nothing(box: Sandbox) -> None:
    """runs, quota, status and report create no file or folder: not without a ledger, and not
    on a closed ledger (SQLite would make -wal and -shm files even for a read-only reader)."""
    files = box.files()
    assert box.invoke(["runs"]).exit_code == 0
    assert box.invoke(["quota"]).exit_code == 0
    assert box.invoke(["status", "r20000101-000000-000000"]).exit_code == 2
    assert box.invoke(["report", "r20000101-000000-000000"]).exit_code == 2
    assert box.files() == files
    env = {k: v for k, v in box.env.items() if v is not None}
    done = subprocess.run(
        [sys.executable, "-m", "fanout", *RUN],
        capture_output=True,
        text=True,
        cwd=box.tmp,
        env={**env, "PATH": os.environ.get("PATH", "")},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.splitlines()[0].strip()
    files, mode = box.files(), box.ledger.stat().st_mode
    assert "ledger.sqlite3-wal" not in files  # the writer closed it
    for args in (["runs"], ["quota"], ["status", run_id], ["report", run_id, "--format", "csv"]):
        result = box.invoke(args)
        assert result.exit_code == 0, (args, result.output)
    assert run_id in box.invoke(["runs"]).stdout
    assert box.files() == files
    assert box.ledger.stat().st_mode == mode


def _special_files(tmp: Path) -> dict[str, Path]:
    """A character device like /dev/null (where mknod is allowed), a FIFO and a folder."""
    found = {"fifo": tmp / "fifo"}
    os.mkfifo(found["fifo"])
    (tmp / "dir").mkdir()
    found["dir"] = tmp / "dir"
    try:
        os.mknod(tmp / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        found["device"] = tmp / "null"
    except PermissionError:
        pass
    return found


@pytest.mark.parametrize("command", [["runs"], ["status", "r1"], ["report", "r1"], ["quota"], RUN])
def test_a_device_fifo_or_folder_is_never_opened_or_chmod_ed(
    box: Sandbox, command: list[str]
) -> None:
    """`--ledger` naming a character device (a copy of /dev/null: the issue's made the real one
    unwritable), a FIFO or a folder: refused in one line, mode unchanged, nothing created."""
    for kind, path in _special_files(box.tmp / "home").items():
        mode = path.stat().st_mode
        files = box.files()
        result = box.invoke([*command, "--ledger", str(path)])
        assert result.exit_code == 2, (kind, result.output)
        assert "a ledger must be a regular file" in one_error_line(result)
        assert path.stat().st_mode == mode, kind
        assert box.files() == files


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_an_empty_file_of_another_user_is_left_untouched(box: Sandbox) -> None:
    """An empty regular file that belongs to another user is not taken over as a new ledger:
    refused, its owner and mode unchanged."""
    other = box.tmp / "theirs.db"
    other.touch(mode=0o644)
    os.chown(other, 4242, 4242)
    other.chmod(0o644)
    result = box.invoke([*RUN, "--ledger", str(other)])
    assert result.exit_code == 2
    assert "another user's" in one_error_line(result)
    status = other.stat()
    assert (status.st_uid, stat.S_IMODE(status.st_mode), status.st_size) == (4242, 0o644, 0)


def test_sqlite_urls_name_the_file_they_say(box: Sandbox) -> None:
    """`sqlite:///abs/path` opens /abs/path (not ./abs/path), `sqlite:////abs/path` too, and
    `sqlite:relative` the relative file."""
    absolute = box.tmp / "abs" / "l.db"
    ran(box, [*RUN, "--ledger", f"sqlite://{absolute}"])
    assert absolute.is_file()
    assert not (box.tmp / str(absolute).lstrip("/")).exists()
    ran(box, [*RUN, "--ledger", f"sqlite:///{absolute}"])  # four slashes: the same file
    assert box.runs(absolute) == 2
    ran(box, [*RUN, "--ledger", "sqlite:rel/l.db"])
    assert box.runs(box.tmp / "rel" / "l.db") == 1


def test_ledger_folders_are_private_whatever_the_umask(box: Sandbox) -> None:
    """The folders made for a new ledger are 0700 and the file 0600, even under umask 000."""
    old = os.umask(0)
    try:
        ran(box, [*RUN, "--ledger", "a/b/l.db"])
    finally:
        os.umask(old)
    for folder in (box.tmp / "a", box.tmp / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((box.tmp / "a" / "b" / "l.db").stat().st_mode) == 0o600


# -------------------------------------------------------------------------------- secrets


def test_secret_values_shorter_than_eight_characters_need_a_flag(box: Sandbox) -> None:
    """A secret value of 3 characters is refused (it cannot be redacted without mangling output
    and its fingerprint can be brute-forced); with --allow-short-secret it runs, and the value
    is redacted from the stored output all the same."""
    args = [*PARAM_RUN[:-1], "--param", "name=web", "--param", "version=x9z"]
    refused(box, [*args, "--secret-param", "version"], "--allow-short-secret", "'version'")
    result = ran(box, [*args, "--secret-param", "version", "--allow-short-secret"])
    run_id = result.stdout.splitlines()[0].strip()
    report = ran(box, ["report", run_id, "--format", "json"]).stdout
    assert "deploying web version *** on i-" in report
    assert "x9z" not in report
    assert b"x9z" not in box.ledger.read_bytes()


def test_output_echoing_a_secret_is_stored_redacted(box: Sandbox) -> None:
    """A command that prints its secret parameter: the report (and the ledger) show `***`."""
    secret = "s3cr3t-Value-echoed"
    (box.tmp / "p.env").write_text(f"name=web\nversion={secret}\n")
    args = [*PARAM_RUN[:-1], "--param-file", "p.env", "--secret-param", "version"]
    run_id = ran(box, args).stdout.splitlines()[0].strip()
    report = ran(box, ["report", run_id, "--format", "json"]).stdout
    assert "deploying web version *** on i-" in report
    assert secret not in report
    assert secret.encode() not in box.ledger.read_bytes()
    sent = [inv["parameters"] for inv in box.emu.snapshot()["invocations"] if inv["parameters"]]
    assert {"name": "web", "version": secret} in sent


def _halted_run(box: Sandbox, secret_source: list[str], env: dict[str, str | None]) -> str:
    """A run with a secret parameter stopped by a zero quota before its first call; its id."""
    args = [*PARAM_RUN, "--param", "name=web", *secret_source, "--secret-param", "version"]
    result = box.invoke([*args, "--daily-quota", "0"], env)
    assert result.exit_code == 4, result.output
    return result.stdout.splitlines()[0].strip()


@pytest.mark.parametrize("source", ["param-file", "params-json", "env", "stdin"])
def test_resume_takes_secret_values_off_the_command_line_and_refuses_other_values(
    box: Sandbox, source: str
) -> None:
    """resume gets the secret from --param-file, --params-json @FILE, FANOUT_PARAM_<NAME> or
    stdin; a different value than the run started with is refused before any call (the issue:
    one run sent 5 invocations with one value and 2 with another); the same value resumes."""
    secret, other = "first-secret-value", "other-secret-value"
    (box.tmp / "a.env").write_text(f"version={secret}\n")
    (box.tmp / "b.json").write_text(f'{{"version": "{other}"}}')
    run_id = _halted_run(box, ["--param-file", "a.env"], {})
    resume = ["resume", run_id, "--yes", "--no-wait", "--daily-quota", "100"]
    given: dict[str, tuple[list[str], dict[str, str | None], str | None]] = {
        "param-file": (["--param-file", "p.env"], {}, None),
        "params-json": (["--params-json", "@p.json"], {}, None),
        "env": ([], {"FANOUT_PARAM_version": "VALUE"}, None),
        "stdin": (["--param-file", "-"], {}, "version=VALUE\n"),
    }
    args, env, stdin = given[source]

    def attempt(value: str) -> Result:
        (box.tmp / "p.env").write_text(f"version={value}\n")
        (box.tmp / "p.json").write_text(f'{{"version": "{value}"}}')
        filled = {k: (v or "").replace("VALUE", value) for k, v in env.items()}
        text = stdin.replace("VALUE", value) if stdin else None
        return box.invoke([*resume, *args], {**filled}, stdin=text)

    calls = box.invocations()
    wrong = attempt(other)
    assert wrong.exit_code == 2, wrong.output
    assert "is not the one run" in one_error_line(wrong)
    assert box.invocations() == calls
    right = attempt(secret)
    assert right.exit_code == 0, right.output
    sent = [inv["parameters"] for inv in box.emu.snapshot()["invocations"]]
    assert {"name": "web", "version": secret} in sent
    assert {"name": "web", "version": other} not in sent


def test_retry_refuses_a_secret_it_was_not_started_with(box: Sandbox) -> None:
    """retry checks the secret values against the run's fingerprints too."""
    (box.tmp / "a.env").write_text("version=first-secret-value\n")
    run_id = _halted_run(box, ["--param-file", "a.env"], {})
    (box.tmp / "b.env").write_text("version=another-secret-value\n")
    calls = box.invocations()
    result = box.invoke(["retry", run_id, "--yes", "--param-file", "b.env"])
    assert result.exit_code == 2
    assert "is not the one run" in one_error_line(result)
    assert box.invocations() == calls


# ------------------------------------------------------------------------- settings, misc


def test_the_ca_bundle_variable_is_honoured(tmp_path: Path) -> None:
    """`ALIBABA_CLOUD_CA_BUNDLE` (documented, ignored before) makes an emulator's self-signed
    certificate trusted: a run over HTTPS succeeds; without it the certificate is refused."""
    with EmulatorThread(EmulatorConfig(**{**FLEET.__dict__, "tls": True})) as tls:
        assert tls.cert_path is not None
        (tmp_path / "home").mkdir()
        write_targets(tmp_path / "t.txt", [("cn-hangzhou", iid) for iid in IDS])
        box = Sandbox(tmp_path, tls)
        result = box.invoke(RUN, {"ALIBABA_CLOUD_CA_BUNDLE": str(tls.cert_path)})
        assert result.exit_code == 0, result.output
        assert box.invocations() == 1
        untrusted = box.invoke([*RUN, "--no-preflight"], {"FANOUT_CONNECT_TIMEOUT_S": "2"})
        assert untrusted.exit_code != 0
        assert box.invocations() == 1


def test_insecure_http_warns_on_every_run(box: Sandbox) -> None:
    """With --insecure-http a plain http:// endpoint on another host is allowed and warned
    about on stderr (a loopback endpoint, the emulator, needs nothing and is not warned about)."""
    quiet = ran(box, ["runs"])
    assert "warning" not in quiet.stderr
    result = box.invoke(
        ["plan", "--command-id", DEMO_COMMAND_ID, "--targets", "t.txt", "--insecure-http"],
        {"FANOUT_ENDPOINT": "http://192.0.2.1:9", "FANOUT_CONNECT_TIMEOUT_S": "0.2"},
    )
    assert "fanout: warning: --insecure-http: every request to http://192.0.2.1:9" in (
        result.stderr
    )


def test_a_fatal_run_reports_not_invoked_in_its_end_event_as_status_does(
    tmp_path: Path,
) -> None:
    """A run stopped by a fatal API answer (here the server's content limit is lower than
    fanout's): the `end` event counts the batches never sent as not_invoked, as status does
    (it said pending)."""
    small = EmulatorConfig(**{**FLEET.__dict__, "content_limit_bytes": 100})
    with EmulatorThread(small) as server:
        (tmp_path / "home").mkdir()
        write_targets(tmp_path / "t.txt", [("cn-hangzhou", iid) for iid in IDS])
        box = Sandbox(tmp_path, server)
        args = [*PARAM_RUN, *GOOD_PARAMS, "--batch-size", "2", "--concurrency", "1", "--json"]
        result = box.invoke(args, {"FANOUT_REGION_CONCURRENCY": "1"})
        assert result.exit_code == 6, result.output
        end = [line for line in result.stdout.splitlines() if '"event": "end"' in line][-1]
        run_id = re.search(r'"run_id": "(\S+?)"', end)
        assert run_id is not None
        status = box.invoke(["status", run_id[1], "--json"]).stdout
        assert '"not_invoked": 4' in status.replace("\n", "").replace("  ", " ")
        assert '"not_invoked": 4' in end
        assert '"pending"' not in end


def test_the_python_api_applies_the_same_rules(tmp_path: Path, emu: EmulatorThread) -> None:
    """`rollout(timeout_s=86401)` and `Settings(batch_size=1.5)` are refused with the field and
    the rule; nothing is sent and no ledger is created."""
    with pytest.raises(ConfigError, match=r"Settings\(batch_size=...\): must be an integer"):
        Settings(batch_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Settings\(lease_s=...\)"):
        Settings(lease_s=float("nan"))
    settings = Settings(ledger=str(tmp_path / "l.db"), endpoint=emu.url)
    before = sum(r["calls"].get("InvokeCommand", 0) for r in emu.snapshot()["regions"].values())
    with pytest.raises(ConfigError, match=r"timeout_s: must be an integer from 10 to 86400"):
        rollout_blocking(
            [Target("cn-hangzhou", IDS[0])],
            command_id=DEMO_COMMAND_ID,
            timeout_s=86401,
            settings=settings,
            credentials=Credentials(DEMO_ACCESS_KEY_ID, "fanout-demo-secret-not-for-production"),
        )
    after = sum(r["calls"].get("InvokeCommand", 0) for r in emu.snapshot()["regions"].values())
    assert after == before
    assert not (tmp_path / "l.db").exists()

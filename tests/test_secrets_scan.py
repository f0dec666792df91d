"""Invariant I5 end to end: a secret parameter value, an STS token and an access key secret never
appear in anything fanout prints or stores.

One rollout is made through the real CLI against the emulator on 127.0.0.1 with all three kinds
of secret (the secret parameter never on a command line: from a 0600 parameter file, a JSON
file, or a FANOUT_PARAM_ variable), and a command that echoes it: a run killed mid-flight (the ledger and its -wal copied while it was alive and after
the kill), its resume and a retry of its failures, another run with `--json`, every read command
in every format, and calls that fail (wrong secret, wrong token). Every byte of their stdout and
stderr and of the ledger files is then scanned for each secret as given, percent-encoded once or
twice, form-encoded and JSON-escaped, and for a distinctive core of it made only of characters
no encoding changes (so any other escaping of the whole value is caught as well). So is the
command line of every `fanout` process the test started (`/proc/PID/cmdline`, which every local
user can read).
"""

from __future__ import annotations

import json
import signal
import stat
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from fanout.emulator import DEMO_PARAM_COMMAND_NAME, EmulatorConfig, EmulatorThread
from fanout.emulator.fleet import Fleet
from tests.conftest import Fanout, wait_for, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]

# Each secret has a core that no encoding changes, wrapped in characters that JSON-escaping,
# percent-encoding and form-encoding all rewrite.
SECRET_VALUE = 's3cr3t-VALUE-9f8e/"q"+&'
STS_TOKEN = "CAIS/sts-TOKEN-abc123xyz+=="
ACCESS_KEY_SECRET = "Cust0m-SECRET-k3y/+="
WRONG_SECRET = "wr0ng-SECRET-k3y/+="
WRONG_TOKEN = "CAIS/wr0ng-TOKEN-77x+=="
SECRETS = {
    SECRET_VALUE: "s3cr3t-VALUE-9f8e",
    STS_TOKEN: "sts-TOKEN-abc123xyz",
    ACCESS_KEY_SECRET: "Cust0m-SECRET-k3y",
    WRONG_SECRET: "wr0ng-SECRET-k3y",
    WRONG_TOKEN: "wr0ng-TOKEN-77x",
}
ACCESS_KEY_ID = "LTAI5tScanTestKeyId01"  # an id, not a secret: it may be shown
PLAIN_NAME = "web-frontend"  # the value of the parameter that is not secret: it may be stored

FLEET: dict[str, Any] = {
    "regions": ("cn-beijing", "cn-hangzhou"),
    "instances_per_region": 100,
    "seed": 3,
}
PARAM_FILE = "secret-params.env"  # in the test's tmp_path, mode 0600: version=SECRET_VALUE
PARAMS = ("--param", f"name={PLAIN_NAME}")


def forms(secret: str, core: str) -> set[str]:
    """Every form of `secret` that must not appear: as given, encoded for the wire (query,
    string-to-sign, form body), JSON-escaped, and its encoding-proof core."""
    escaped = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    found = {core, *escaped}
    for text in escaped:
        for safe in ("", "~", "/"):
            once = quote(text, safe=safe)
            found |= {once, quote(once, safe=safe)}
        found.add(quote_plus(text))
    return found


def leaks(captured: dict[str, bytes]) -> list[str]:
    """`name: form` for every form of every secret found in the captured bytes."""
    return [
        f"{name}: {form!r}"
        for name, data in captured.items()
        for secret, core in SECRETS.items()
        for form in forms(secret, core)
        if form.encode() in data
    ]


def ledger_files(ledger: Path, label: str) -> dict[str, bytes]:
    """The raw bytes of the ledger and its -wal / -shm files as they are now."""
    files = [ledger, *(ledger.with_name(ledger.name + s) for s in ("-wal", "-shm"))]
    return {f"{label} {p.name}": p.read_bytes() for p in files if p.exists()}


def mode(path: Path) -> int:
    """A file's permission bits."""
    return stat.S_IMODE(path.stat().st_mode)


def run_all(
    cli: Fanout, env: dict[str, str], commands: Iterable[tuple[str, ...]]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the commands concurrently; each one's completed process, by its command line."""
    procs = {" ".join(args): cli.start(*args, env=env) for args in commands}
    done = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return done


def outputs(name: str, done: subprocess.CompletedProcess[str]) -> dict[str, bytes]:
    """A process's stdout and stderr, labelled."""
    return {f"{name} (stdout)": done.stdout.encode(), f"{name} (stderr)": done.stderr.encode()}


def secret_files(folder: Path) -> tuple[Path, Path]:
    """The secret value in a parameter file and a JSON file, both readable by their owner only."""
    env_file, json_file = folder / PARAM_FILE, folder / "secret-params.json"
    for path, text in (
        (env_file, f"version={SECRET_VALUE}\n"),
        (json_file, json.dumps({"version": SECRET_VALUE})),
    ):
        path.touch(mode=0o600)
        path.write_text(text)
    return env_file, json_file


def kill_mid_run(
    cli: Fanout, env: dict[str, str], targets: Path, emu: EmulatorThread, flags: tuple[str, ...]
) -> tuple[str, dict[str, bytes]]:
    """Start a run with a secret parameter at debug level, copy the live ledger and its -wal
    once a batch is accepted, then SIGKILL it; its run id and everything captured."""
    ledger = Path(cli.ledger)
    args = ("run", "--command-name", DEMO_PARAM_COMMAND_NAME, "--targets", str(targets))
    proc = cli.start(*args, *flags, "--yes", "--allow-overlap", "--log-level", "debug", env=env)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    wal = ledger.with_name(ledger.name + "-wal")
    wait_for(
        lambda: bool(emu.snapshot()["invocations"]) and wal.exists() and wal.stat().st_size > 0
    )
    captured = ledger_files(ledger, "live")
    assert mode(wal) == 0o600
    proc.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    captured |= outputs(
        "killed run", subprocess.CompletedProcess(args, -9, run_id + stdout, stderr)
    )
    captured |= ledger_files(ledger, "killed")
    assert "killed ledger.sqlite3-wal" in captured  # the kill left the journal to scan
    return run_id, captured


@pytest.mark.slow
def test_no_secret_in_any_output_or_the_ledger(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """A secret parameter, an STS token and an access key secret appear nowhere: not in any
    command's output (debug logs and --json included), error message, report, ledger byte or
    `ps`-visible command line of run, resume and retry, though the command echoes the secret."""
    emu = emulator(
        **FLEET,
        exec_seconds=(1.0, 2.0),
        exec_failure_fraction=0.1,
        access_keys={ACCESS_KEY_ID: ACCESS_KEY_SECRET},
        sts_tokens=frozenset({STS_TOKEN}),
    )
    cli = fanout_cli(emu)
    ledger = Path(cli.ledger)
    fleet = Fleet.from_config(EmulatorConfig(**FLEET))
    ids = [(r, i.instance_id) for r, rf in sorted(fleet.regions.items()) for i in rf.instances]
    targets = write_targets(tmp_path / "targets.txt", ids)
    env = {
        **cli.env,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        "ALIBABA_CLOUD_SECURITY_TOKEN": STS_TOKEN,
    }
    debug = ("--log-level", "debug")
    env_file, json_file = secret_files(tmp_path)
    SECRET_FLAGS = (*PARAMS, "--param-file", str(env_file), "--secret-param", "version")  # noqa: N806
    run_id, captured = kill_mid_run(cli, env, targets, emu, SECRET_FLAGS)

    # Resume (refused without the secret value, then with it), and a retry of the failures
    # signed with the other scheme (RPC HMAC-SHA1: the token goes in the query string).
    rpc = {**env, "FANOUT_SIGNATURE": "rpc"}
    with_secret = {**rpc, "FANOUT_PARAM_version": SECRET_VALUE}
    for name, args in [
        ("resume without secret", ("resume", run_id, "--yes", *debug)),
        ("resume", ("resume", run_id, "--yes", "--json", *debug, "--params-json", f"@{json_file}")),
        ("retry", ("retry", run_id, "--only", "failed", "--yes", "--json", *debug)),
    ]:
        done = cli.run(*args, env=with_secret if name == "retry" else env)
        captured |= outputs(name, done)
        assert done.returncode in ((2,) if name == "resume without secret" else (0, 1)), done.stderr

    plan = ("plan", "--command-name", DEMO_PARAM_COMMAND_NAME, "--targets", str(targets))
    run_b = ("run", "--command-name", DEMO_PARAM_COMMAND_NAME, "--instance-id", ids[0][1])
    run_b_json = (*run_b, "--region", ids[0][0], *SECRET_FLAGS, "--yes", "--json", *debug)
    readers = [
        run_b_json,
        ("status", run_id),
        ("status", run_id, "--json"),
        ("report", run_id),
        ("report", run_id, "--format", "json"),
        ("report", run_id, "--format", "csv"),
        ("runs",),
        ("runs", "--json"),
        ("quota",),
        ("quota", "--json"),
        (*plan, *SECRET_FLAGS, *debug),
        (*plan, *SECRET_FLAGS, "--json", *debug),
        ("stop", run_id, "--json", *debug),
        ("run", "--help"),
        ("--help",),
    ]
    for name, done in run_all(cli, env, readers).items():
        assert done.returncode in (0, 1), (name, done.stderr)
        captured |= outputs(name, done)

    # Calls that fail: a wrong access key secret, a wrong STS token; in preflight (plan, run)
    # and, without preflight, in InvokeCommand itself. Each is a fatal API error (exit 6).
    run_all_targets = ("run", "--command-name", DEMO_PARAM_COMMAND_NAME, "--targets", str(targets))
    for wrong, bad_env, code in [
        (
            "secret",
            {**env, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": WRONG_SECRET},
            "SignatureDoesNotMatch",
        ),
        (
            "secret, RPC signing",
            {**rpc, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": WRONG_SECRET},
            "SignatureDoesNotMatch",
        ),
        ("token", {**env, "ALIBABA_CLOUD_SECURITY_TOKEN": WRONG_TOKEN}, "InvalidSecurityToken"),
    ]:
        failing = [
            (*plan, *SECRET_FLAGS, *debug),
            # --allow-overlap: an earlier run of this test still owns these instances; the
            # point here is the credentials' refusal.
            (*run_all_targets, *SECRET_FLAGS, "--yes", "--allow-overlap", *debug),
            (
                *run_all_targets, *SECRET_FLAGS, "--yes", "--allow-overlap", "--no-preflight",
                "--json", *debug,
            ),
        ]  # fmt: skip
        for name, done in run_all(cli, bad_env, failing).items():
            assert done.returncode == 6, (name, done.stderr)
            assert code in done.stdout + done.stderr
            captured |= outputs(f"wrong {wrong}: {name}", done)

    captured |= ledger_files(ledger, "final")
    assert mode(ledger) == 0o600
    assert len(cli.cmdlines) >= 10  # read while each process ran (Python starts in ~1 s)
    assert all(b"\0fanout\0" in line for line in cli.cmdlines)
    assert any(b"\0resume\0" in line for line in cli.cmdlines)
    assert any(b"\0retry\0" in line for line in cli.cmdlines)
    captured |= {f"command line {n}": line for n, line in enumerate(cli.cmdlines)}
    assert leaks(captured) == []

    # The scan looked at the real thing: the secret went over the wire, and what was scanned
    # holds the run's details (debug logs, reports, the parameters stored redacted).
    sent = [inv["parameters"] for inv in emu.snapshot()["invocations"]]
    assert sent
    assert all(p == {"name": PLAIN_NAME, "version": SECRET_VALUE} for p in sent)
    assert b'"event": "batch"' in captured[f"{' '.join(run_b_json)} (stderr)"]  # debug logs
    assert b'"event": "end"' in captured[f"{' '.join(run_b_json)} (stdout)"]
    report = captured[f"report {run_id} --format json (stdout)"]
    assert report.count(b'"instance_id"') == 200
    assert f"deploying {PLAIN_NAME} version *** on i-".encode() in report  # echoed, redacted
    assert b'"version": "***"' in captured["final ledger.sqlite3"]
    assert PLAIN_NAME.encode() in captured["final ledger.sqlite3"]

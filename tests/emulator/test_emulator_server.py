"""Running the emulator: CLI process (HTTP and TLS), background thread, control endpoints, load."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fanout.emulator import (
    DEMO_COMMAND_ID,
    Emulator,
    EmulatorConfig,
    EmulatorThread,
    running_emulator,
)

from .conftest import MakeApi
from .helpers import REGION, Api, instance_params

_FIRST_LINE_TIMEOUT_S = 20


def start_cli(*args: str) -> subprocess.Popen[str]:
    """`python -m fanout.emulator.cli ARGS` with stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "fanout.emulator.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_cli(process: subprocess.Popen[str], signum: int = signal.SIGINT) -> int:
    """Send a signal, wait for the exit code."""
    process.send_signal(signum)
    try:
        return process.wait(timeout=_FIRST_LINE_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()


def read_line(process: subprocess.Popen[str]) -> str:
    """One stdout line (the process must print it soon)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, process.stderr.read() if process.stderr else "no output"
    return line.rstrip("\n")


def test_cli_prints_first_line_serves_and_exits_on_sigint() -> None:
    """The CLI prints `fanout emulator listening on URL`, serves state, exits 0 on SIGINT."""
    args = ("--port", "0", "--instances-per-region", "7", "--regions", "cn-hangzhou,cn-beijing")
    with start_cli(*args) as process:
        try:
            line = read_line(process)
            prefix = "fanout emulator listening on http://127.0.0.1:"
            assert line.startswith(prefix)
            assert line[len(prefix) :].isdigit()
            url = line.split(" on ")[1]
            with urllib.request.urlopen(f"{url}/_emulator/state", timeout=10) as resp:
                state = json.load(resp)
            assert set(state["regions"]) == {"cn-hangzhou", "cn-beijing"}
            assert state["regions"]["cn-beijing"]["instances"] == 7
        finally:
            code = stop_cli(process)
    assert code == 0


def test_cli_exits_zero_on_sigterm() -> None:
    """SIGTERM stops the CLI cleanly too."""
    with start_cli("--port", "0") as process:
        try:
            assert read_line(process).startswith("fanout emulator listening on http://")
        finally:
            code = stop_cli(process, signal.SIGTERM)
    assert code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--stopped-fraction", "1.5"],
        ["--exec-seconds", "5:1"],
        ["--exec-seconds", "soon"],
        ["--max-instances-per-call", "101"],
        ["--error-rate", "0.6", "--drop-rate", "0.6"],
        ["--regions", ","],
    ],
)
def test_cli_bad_options_exit_two(args: list[str]) -> None:
    """Bad option values are a click usage error: exit 2, nothing served."""
    result = subprocess.run(
        [sys.executable, "-m", "fanout.emulator.cli", "--port", "0", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""


def test_cli_tls_prints_certificate_and_serves_https() -> None:
    """--tls serves HTTPS with a self-signed certificate whose path is the second line."""
    with start_cli("--port", "0", "--tls") as process:
        try:
            line = read_line(process)
            assert line.startswith("fanout emulator listening on https://127.0.0.1:")
            cert_line = read_line(process)
            assert cert_line.startswith("certificate: ")
            cert = Path(cert_line.removeprefix("certificate: "))
            assert cert.is_file()
            context = ssl.create_default_context(cafile=str(cert))
            url = line.split(" on ")[1]
            with urllib.request.urlopen(
                f"{url}/_emulator/state", timeout=10, context=context
            ) as resp:
                assert json.load(resp)["invocations"] == []
        finally:
            code = stop_cli(process)
    assert code == 0
    assert not cert.exists()  # removed on exit


def test_cli_tls_without_openssl_fails_in_one_line(tmp_path: Path) -> None:
    """Without openssl on PATH, --tls fails with a one-line error and a non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-m", "fanout.emulator.cli", "--port", "0", "--tls"],
        capture_output=True, text=True, timeout=30, check=False, env={"PATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "Error: --tls needs the openssl command, which is not on PATH"
    ]


async def test_tls_emulator_with_real_client() -> None:
    """An aiohttp client trusting the emulator's certificate makes signed calls over HTTPS."""
    async with running_emulator(EmulatorConfig(tls=True, instances_per_region=3)) as emulator:
        assert emulator.url.startswith("https://127.0.0.1:")
        assert emulator.cert_path is not None
        context = ssl.create_default_context(cafile=str(emulator.cert_path))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            body = await Api(session, emulator.url).ok("DescribeInstances")
        assert body["TotalCount"] == 3


def test_emulator_thread_from_sync_code() -> None:
    """EmulatorThread serves from a background loop; snapshot() is read thread-safely."""
    with EmulatorThread(EmulatorConfig(instances_per_region=4)) as emu:
        assert emu.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{emu.url}/_emulator/state", timeout=10) as resp:
            assert json.load(resp)["regions"][REGION]["instances"] == 4
        request = urllib.request.Request(
            f"{emu.url}/_emulator/clock", data=b'{"advance_s": 60}', method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.load(resp)["offset_s"] == 60
        assert emu.snapshot()["clock"]["offset_s"] == 60
    with pytest.raises(RuntimeError):
        emu.snapshot()


async def test_emulator_rejects_bad_config() -> None:
    """An invalid config is refused before anything starts."""
    with pytest.raises(ValueError, match="daily_quota"):
        Emulator(EmulatorConfig(daily_quota=-1))


async def test_state_endpoint_matches_snapshot(emu_api: tuple[Emulator, Api]) -> None:
    """GET /_emulator/state is the snapshot, with the DESIGN fields."""
    emulator, api = emu_api
    ids = [i.instance_id for i in emulator.world.fleet.regions[REGION].instances[:2]]
    await api.invoke(ids, DEMO_COMMAND_ID, ClientToken="s1")
    state = await api.control("state")
    assert state == json.loads(json.dumps(emulator.snapshot()))
    (record,) = state["invocations"]
    assert set(record) >= {
        "invoke_id",
        "region",
        "command_id",
        "instance_ids",
        "client_token",
        "created",
    }
    assert state["regions"][REGION]["calls"] == {"InvokeCommand": 1}
    assert state["regions"][REGION]["quota_used"] == 1
    assert "executions" not in record


async def test_state_with_exact_finish_times(emu_api: tuple[Emulator, Api]) -> None:
    """`?executions=1` adds each instance's status and exact (unrounded) finish time."""
    emulator, api = emu_api
    ids = [i.instance_id for i in emulator.world.fleet.regions[REGION].instances[:2]]
    await api.invoke(ids, DEMO_COMMAND_ID, ClientToken="s2")
    await asyncio.sleep(0.3)  # the default emulator finishes executions at once
    state = await api.control("state?executions=1")
    (record,) = state["invocations"]
    assert [e["instance_id"] for e in record["executions"]] == ids
    for execution in record["executions"]:
        if execution["status"] in ("Success", "Failed"):
            assert isinstance(execution["finish_s"], float)
            assert abs(execution["finish_s"] - time.time()) < 60
        else:
            assert execution["finish_s"] is None
    assert any(e["finish_s"] is not None for e in record["executions"])


@pytest.mark.parametrize(
    ("path", "payload", "status"),
    [
        ("clock", {"advance_s": -1}, 400),
        ("clock", {"advance_s": "soon"}, 400),
        ("clock", {"freeze": "yes"}, 400),
        ("instances", {"instance_ids": "i-1"}, 400),
        ("instances", {"instance_ids": ["i-unknown"], "status": "Stopped"}, 404),
        ("instances", {"instance_ids": [], "status": "Exploded"}, 400),
        ("quota/reset", {"region": "mars-1"}, 404),
        ("clock", [1, 2], 400),
    ],
)
async def test_control_endpoint_errors(
    session: aiohttp.ClientSession,
    emu_api: tuple[Emulator, Api],
    path: str,
    payload: Any,
    status: int,
) -> None:
    """Bad control requests are refused with 400/404 and a JSON error."""
    emulator, _ = emu_api
    async with session.post(f"{emulator.url}/_emulator/{path}", json=payload) as resp:
        assert resp.status == status
        assert "error" in await resp.json()


async def test_control_requests_are_not_counted(emu_api: tuple[Emulator, Api]) -> None:
    """Inspection and control requests need no signature and are not counted."""
    emulator, api = emu_api
    await api.control("clock", {"advance_s": 1})
    await api.control("quota/reset", {})
    await api.control("state")
    assert emulator.snapshot()["regions"][REGION]["calls"] == {}


async def test_throughput_sanity(make_api: MakeApi) -> None:
    """2 000 InvokeCommand requests from 64 concurrent clients all complete."""
    emulator, api = await make_api(instances_per_region=2000, daily_quota=10_000)
    ids = [i.instance_id for i in emulator.world.fleet.regions[REGION].instances]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(2000):
        queue.put_nowait(n)
    statuses: list[int] = []

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            params = {
                "CommandId": DEMO_COMMAND_ID,
                "ClientToken": f"tp-{n}",
                **instance_params([ids[n]]),
            }
            reply = await api.call("InvokeCommand", params)
            statuses.append(reply.status)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(64)))
    elapsed = time.monotonic() - started
    print(f"2000 InvokeCommand in {elapsed:.2f}s = {2000 / elapsed:.0f}/s")
    assert statuses == [200] * 2000
    assert len(emulator.snapshot()["invocations"]) == 2000

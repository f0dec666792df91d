"""Metrics and notifications of real runs (issue 17): `fanout run` as a subprocess against the
emulator on 127.0.0.1, its metrics file parsed and its /metrics scraped while it runs, and
webhook receivers on 127.0.0.1 that get the notifications (one of them answering 500)."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, close, fleet_ids, wait_for, write_targets
from tests.receiver import receiver
from tests.test_report_browser import FLEET

INVOKES = ("fanout_api_calls_total", "InvokeCommand")


def _invoke_calls(text: str) -> float:
    """The InvokeCommand requests counted in an OpenMetrics text, all regions."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for s in family.samples
        if s.name == INVOKES[0] and s.labels.get("action") == INVOKES[1]
    )


def _free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int) -> str:
    """GET /metrics as OpenMetrics text."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode())


def test_metrics_while_a_run_lives(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    tmp_path: Path,
) -> None:
    """The metrics file parses during the run; /metrics scraped twice shows the InvokeCommand
    counter growing; at the end the file's count equals the emulator's."""
    fields = {**FLEET, "instances_per_region": 40, "exec_failure_fraction": 0.0}
    emu = emulator(**fields)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    metrics_file = tmp_path / "textfile" / "fanout.prom"
    metrics_file.parent.mkdir()  # fanout creates files, not folders
    port = _free_port()
    proc = cli.start(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--batch-size", "5",
        "--rate", "2", "--yes", "--json", "--metrics-file", str(metrics_file),
        "--metrics-port", str(port),
    )  # fmt: skip
    try:
        wait_for(metrics_file.exists, 30)
        assert "fanout_instances" in metrics_file.read_text()  # parses: OpenMetrics, # EOF
        _invoke_calls(metrics_file.read_text())
        first: list[float] = []

        def counted() -> bool:
            first.append(_invoke_calls(_scrape(port)))
            return first[-1] > 0

        wait_for(counted, 30)
        time.sleep(1.5)
        second = _invoke_calls(_scrape(port))
        assert proc.poll() is None, "the run ended before the second scrape"
        assert second > first[-1]
        assert proc.wait(120) == 0
    finally:
        close(proc)
    emulator_count = sum(
        r["calls"].get("InvokeCommand", 0) for r in emu.snapshot()["regions"].values()
    )
    assert _invoke_calls(metrics_file.read_text()) == emulator_count == 24


def _halting_run(cli: Fanout, targets: Path, *notify: str) -> int:
    """A run halted by its error budget in wave 2, notifying; its exit code."""
    done = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--waves",
        "3,30%,100%", "--max-errors", "4", "--rate", "0", "--yes", "--json",
        "--html-report", str(targets.parent / "report.html"), *notify,
    )  # fmt: skip
    assert "t0psecret" not in done.stderr + done.stdout
    return done.returncode


def test_notifications_of_a_halted_run_in_dingtalk_and_slack_shapes(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    tmp_path: Path,
) -> None:
    """Wave 1 done, the budget halt, wave 2 done, the end: in order, in DingTalk's and Slack's
    shapes; a receiver answering 500 changes nothing (exit 3 all the same)."""
    cli = fanout_cli(emulator(**FLEET))
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    report = str((tmp_path / "report.html").resolve())
    with receiver() as ding:
        assert _halting_run(cli, targets, "--notify", ding.url, "--notify-format", "dingtalk") == 3
    titles = [b["markdown"]["title"] for b in ding.bodies()]
    assert [b["msgtype"] for b in ding.bodies()] == ["markdown"] * 4
    assert "wave 1 of 3 done" in titles[0]
    assert "halted: error budget exceeded (5 > 4 allowed)" in titles[1]
    assert "wave 2 of 3 done" in titles[2]
    assert titles[3].endswith("halted (exit 3)")
    assert f"report: {report}" in ding.bodies()[3]["markdown"]["text"]
    assert Path(report).is_file()
    cli = fanout_cli(emulator(**FLEET))  # the same fleet afresh: the same failures again
    with receiver() as slack, receiver(500) as broken:
        code = _halting_run(  # the first run, halted, still owns the instances: overlap on purpose
            cli, targets, "--notify", broken.url, "--notify", slack.url, "--notify-format", "slack",
            "--allow-overlap",
        )  # fmt: skip
    assert code == 3
    texts = [b["text"].splitlines()[0] for b in slack.bodies()]
    assert len(texts) == 4
    assert "wave 1 of 3 done" in texts[0]
    assert "halted: error budget exceeded" in texts[1]
    assert "wave 2 of 3 done" in texts[2]
    assert texts[3].endswith("halted (exit 3)")
    assert all(b["blocks"][0]["text"]["type"] == "mrkdwn" for b in slack.bodies())
    assert len(broken.bodies()) == 4 * 3  # each message tried three times
    assert all("\ninstances: " in b["text"] for b in slack.bodies())

"""The HTML report of a real rollout, checked in headless Chromium with the network blocked
(issue 17): the emulator on 127.0.0.1 with three regions and failing executions, a run halted by
its error budget, a retry, then `fanout report --format html` opened in the browser."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.browser import ARTIFACTS, chromium_path, open_report
from tests.conftest import Fanout, fleet_ids, ledger_sql, write_targets

FLEET = {
    "regions": ("cn-beijing", "cn-hangzhou", "cn-shanghai"),
    "instances_per_region": 30,
    "seed": 17,
    "exec_seconds": (0.05, 0.3),
    "exec_failure_fraction": 0.25,
}
EVIL = "<script>window.__pwned = 1; alert('x')</script>"


@pytest.fixture(scope="module")
def browser_ok() -> str:
    """Chromium is there (or the module is skipped; in CI, failed)."""
    return chromium_path()


def _rollout(cli: Fanout, tmp_path: Path) -> tuple[str, str]:
    """A run halted by its error budget, then a retry of what failed or was never sent."""
    targets = write_targets(tmp_path / "targets.txt", fleet_ids(**FLEET))
    run = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets),
        "--waves", "3,30%,100%", "--max-errors", "4", "--rate", "0", "--yes", "--json",
    )  # fmt: skip
    assert run.returncode == 3, run.stderr
    run_id = json.loads(run.stdout.splitlines()[0])["run_id"]
    # The retry inherits the run's waves and budget: it may halt too (exit 3).
    retry = cli.run("retry", run_id, "--rate", "0", "--yes", "--json")
    assert retry.returncode in (0, 1, 3), retry.stderr
    retry_id = json.loads(retry.stdout.splitlines()[0])["run_id"]
    return run_id, retry_id


def _report_json(cli: Fanout, run_id: str) -> dict[str, Any]:
    """`fanout report --format json` of the run (retries rolled up)."""
    done = cli.run("report", run_id, "--format", "json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


@pytest.mark.usefixtures("browser_ok")
def test_the_report_of_a_real_rollout_in_a_browser(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    ledger_location: str,
    tmp_path: Path,
) -> None:
    """No request leaves the page; one timeline mark per sent batch; filtering by a state shows
    the ledger's count; the failure groups add up to the failed instances; `<script>` in an
    output is shown as text. A screenshot is left in test-artifacts/."""
    cli = fanout_cli(emulator(**FLEET))
    run_id, retry_id = _rollout(cli, tmp_path)
    doc = _report_json(cli, run_id)
    # An instance whose output is hostile (as untrusted as any output is).
    victim = next(row for row in doc["instances"] if row["state"] == "failed")
    ledger_sql(
        ledger_location,
        f"UPDATE instances SET output = 'boom\n{EVIL.replace(chr(39), chr(39) * 2)}' "
        f"WHERE run_id = '{victim['run_id']}' AND instance_id = '{victim['instance_id']}'",
    )
    sent_batches = ledger_sql(
        ledger_location,
        "SELECT COUNT(DISTINCT a.batch_id) FROM attempts a JOIN batches b ON b.batch_id = a.batch_id"
        f" WHERE b.run_id IN ('{run_id}', '{retry_id}')",
    )[0][0]
    html_path = tmp_path / "report.html"
    done = cli.run("report", run_id, "--format", "html", "-o", str(html_path))
    assert done.returncode == 0, done.stderr
    assert EVIL not in html_path.read_text()

    with open_report(html_path) as opened:
        page = opened.page
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=False)
        assert opened.requests == [html_path.resolve().as_uri()]
        assert opened.blocked == []
        assert page.locator("#timeline rect.batch-mark").count() == sent_batches
        assert page.locator("#runs tr").count() == 3  # header, the run, its retry
        for state, count in doc["summary"].items():
            if not count:
                continue
            page.select_option("#f-state", label=state)
            assert page.text_content("#match-count") == str(count), state
        page.click("#f-clear")
        assert page.text_content("#match-count") == str(doc["target_count"])
        groups = page.locator(".failure-group")
        total = sum(int(groups.nth(i).get_attribute("data-count")) for i in range(groups.count()))
        assert total == doc["summary"]["failed"] == int(page.text_content("#failed-total") or 0)
        # The hostile output is text, in the groups and in the table; nothing ran.
        assert any(EVIL in (t or "") for t in page.locator("pre.group-key").all_text_contents())
        page.fill("#f-text", victim["instance_id"])
        page.wait_for_function("() => document.getElementById('match-count').textContent === '1'")
        cells = page.locator("#instances-body td.c-output").all_text_contents()
        assert cells
        assert EVIL in cells[0]
        assert page.evaluate("() => window.__pwned") is None
        assert opened.dialogs == []
        assert opened.errors == []
        # Sorting by exit code puts the failures with the largest code first.
        page.click("#f-clear")
        page.click("th[data-sort=exit_code]")
        page.click("th[data-sort=exit_code]")
        first = page.locator("#instances-body tr").first.locator("td").nth(4).text_content()
        assert first == str(max(int(c) for c in doc["by_exit_code"]))

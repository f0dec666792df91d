"""The JSON Schemas in fanout/schemas/ (issue 17) hold for real output: every event line of a
run that halts on its error budget and of its resume, `status --json`, `report --format json`,
and a quota wait (driven on the fake clock)."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from fanout.clock import FakeClock
from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, fleet_ids, write_targets
from tests.test_report_browser import FLEET
from tests.test_waves_quota import _drive_waves


def schema(name: str) -> dict[str, Any]:
    """One shipped schema, checked against the JSON Schema meta-schema."""
    text = resources.files("fanout").joinpath("schemas", f"{name}.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def validate(doc: dict[str, Any], name: str) -> None:
    """`doc` is valid under the named schema."""
    jsonschema.validate(doc, schema(name), format_checker=jsonschema.FormatChecker())


def test_every_schema_is_a_valid_schema_and_every_event_kind_has_one() -> None:
    """Each file is a 2020-12 schema; the event kinds documented in the README each have one."""
    names = {p.name for p in resources.files("fanout").joinpath("schemas").iterdir()}
    kinds = (
        "run",
        "resume",
        "wave_start",
        "batch",
        "wave",
        "halted",
        "quota_wait",
        "quota_refused",
        "quota_limits",
        "end",
        "status",
    )
    assert {f"event-{k}.json" for k in kinds} | {"status.json", "report.json"} <= names
    for name in names:
        schema(name.removesuffix(".json"))


def test_real_output_matches_the_schemas(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    tmp_path: Path,
) -> None:
    """The lines of a halted run and of its resume, the status and the report all validate."""
    cli = fanout_cli(emulator(**FLEET))
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    run = cli.run(
        "run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--waves",
        "3,30%,100%", "--max-errors", "4", "--rate", "0", "--yes", "--json",
    )  # fmt: skip
    assert run.returncode == 3, run.stderr
    resume = cli.run("resume", json.loads(run.stdout.splitlines()[0])["run_id"], "--yes", "--json")
    assert resume.returncode in (1, 3), resume.stderr
    seen: set[str] = set()
    for line in (run.stdout + resume.stdout).splitlines():
        event = json.loads(line)
        validate(event, f"event-{event['event']}")
        seen.add(event["event"])
    assert {"run", "resume", "quota_limits", "wave_start", "batch", "wave", "halted", "end"} <= seen
    run_id = json.loads(run.stdout.splitlines()[0])["run_id"]
    status = cli.run("status", run_id, "--json")
    validate(json.loads(status.stdout), "status")
    report = cli.run("report", run_id, "--format", "json")
    doc = json.loads(report.stdout)
    validate(doc, "report")
    assert {row["wave"] for row in doc["instances"]} == {1, 2, 3}
    # Progress for people goes to stderr with --json, as the README says.
    assert "wave 1 done" in run.stderr


async def test_a_quota_wait_matches_its_schema(tmp_path: Path) -> None:
    """The quota_wait event of a real wait (fake clock) validates: `until` is ISO-8601 UTC."""
    events, _snapshot, store, _control = await _drive_waves(
        tmp_path, FakeClock(), wait_for_quota=True
    )
    (wait,) = [data for kind, data in events if kind == "quota_wait"]
    validate({"event": "quota_wait", **wait}, "event-quota_wait")
    store.close()

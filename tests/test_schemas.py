"""The JSON Schemas in fanout/schemas/ (issue 17) hold for real output: every event line of a
run that halts on its error budget and of its resume, of a `--script` run over three regions
(the `command` events, `run.command`, issue 13), `status --json` and `report --format json` with
each region's `command_ids`, and a quota wait (driven on the fake clock)."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fanout.clock import FakeClock
from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from fanout.sources import ScriptSource
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
        "command",
        "wave_wait",
        "batch_split",
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


def test_a_script_run_matches_the_schemas_with_its_commands(
    emulator: Callable[..., EmulatorThread],
    fanout_cli: Callable[[EmulatorThread], Fanout],
    tmp_path: Path,
) -> None:
    """A `--script` run over three regions: its `command` events (one per region, created), the
    run event's `command` (each region "creates"), and `command_ids` of `status --json` and of
    the report validate, and name in each region the CommandId the emulator created there."""
    emu = emulator(**FLEET)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**FLEET))
    regions: tuple[str, ...] = tuple(FLEET["regions"])  # type: ignore[arg-type]
    script = tmp_path / "deploy.sh"
    script.write_text("#!/bin/bash\necho deployed\n")
    run = cli.run("run", "--script", str(script), "--targets", str(targets), "--rate", "0",
                  "--yes", "--json")  # fmt: skip
    assert run.returncode == 1, run.stderr  # FLEET fails some executions
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    for event in lines:
        validate(event, f"event-{event['event']}")
    state = emu.snapshot()
    name = ScriptSource(script.read_text()).name
    ids = {
        region: command["command_id"]
        for region, doc in state["regions"].items()
        for command in doc["commands"]
        if command["name"] == name
    }
    assert sorted(ids) == sorted(regions)
    assert {r: doc["commands_created"] for r, doc in state["regions"].items()} == dict.fromkeys(
        regions, 1
    )
    commands = {e["region"]: e for e in lines if e["event"] == "command"}
    assert {r: e["command_id"] for r, e in commands.items()} == ids
    assert all(e["created"] is True for e in commands.values())
    (first,) = [e for e in lines if e["event"] == "run"]
    assert {r: v["action"] for r, v in first["command"]["regions"].items()} == dict.fromkeys(
        regions, "creates"
    )
    status = json.loads(cli.run("status", first["run_id"], "--json").stdout)
    validate(status, "status")
    assert status["command_ids"] == ids
    assert {r: v["command_id"] for r, v in status["regions"].items()} == ids
    report = json.loads(cli.run("report", first["run_id"], "--format", "json").stdout)
    validate(report, "report")
    assert report["command_ids"] == ids
    # The fields are required: output without them would not validate.
    for doc, name, field in ((first, "event-run", "command"), (status, "status", "command_ids"),
                             (report, "report", "command_ids")):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            validate({k: v for k, v in doc.items() if k != field}, name)
    with pytest.raises(jsonschema.ValidationError):
        validate({**commands[regions[0]], "created": "yes"}, "event-command")

"""`fanout demo`: the main job on embedded defaults.

Starts the emulator in-process (3 regions, 10 000 instances, some stopped / classic / agent-offline,
some executions failing), writes a small `deploy.sh` into a temporary or given folder and rolls it
out in waves the way an operator would on the real cloud (`--script`: fanout creates the command
in each region, where each gets its own CommandId), into a SQLite ledger in the same folder,
writes the run's HTML report beside the ledger, and prints progress and the report summary.
Both paths are printed so that `fanout status` / `fanout report` work on the ledger afterwards;
`fanout demo --clean` removes them. The default folder is `fanout-demo` in the system's
temporary directory, emptied of the previous demo's files before each demo.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    EmulatorConfig,
    running_emulator,
)
from fanout.emulator.fleet import Fleet
from fanout.launch import start_run
from fanout.ledger import open_ledger
from fanout.linked import linked_entries
from fanout.report import run_summary, status_document
from fanout.report_io import html_report, write_file
from fanout.request import RunRequest
from fanout.runner import Emit, RunOutcome
from fanout.settings import Settings
from fanout.sources import ScriptSource, label
from fanout.targets import Target

__all__ = [
    "DEMO_REGIONS",
    "DEMO_SCRIPT",
    "DEMO_TARGETS",
    "DemoResult",
    "clean_demo",
    "default_demo_dir",
    "run_demo",
]

DEMO_REGIONS = ("cn-beijing", "cn-hangzhou", "cn-shanghai")
DEMO_TARGETS = 10_000
DEMO_WAVES = "1,5%,30%,100%"
# The script the demo rolls out (`fanout run --script deploy.sh` on the real cloud does the same).
DEMO_SCRIPT = """#!/bin/bash
# A deploy step as fanout demo rolls it out: `fanout run --script deploy.sh ...`
set -euo pipefail
echo "deploying on $(hostname) at $(date -u +%FT%TZ)"
"""


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo did and where its ledger is."""

    ledger: Path
    report: Path
    outcome: RunOutcome
    summary: str
    status: Mapping[str, object]


def demo_emulator_config() -> EmulatorConfig:
    """A fleet with a few of every problem preflight and the results stage must handle."""
    return EmulatorConfig(
        regions=DEMO_REGIONS,
        instances_per_region=-(-DEMO_TARGETS // len(DEMO_REGIONS)),
        seed=2026,
        stopped_fraction=0.01,
        classic_fraction=0.005,
        agent_offline_fraction=0.01,
        exec_seconds=(0.2, 1.5),
        exec_failure_fraction=0.02,
        latency_ms=15,
    )


LEDGER_NAME = "ledger.sqlite3"
REPORT_NAME = "report.html"


def default_demo_dir() -> Path:
    """Where the demo writes when no folder is given: `fanout-demo` in the temp directory."""
    return Path(tempfile.gettempdir()) / "fanout-demo"


SCRIPT_NAME = "deploy.sh"


def _demo_files(folder: Path) -> list[Path]:
    """The files a demo leaves in `folder` (the ledger with its WAL files, the report, the
    script)."""
    names = (LEDGER_NAME, f"{LEDGER_NAME}-wal", f"{LEDGER_NAME}-shm", REPORT_NAME, SCRIPT_NAME)
    return [folder / name for name in names if (folder / name).exists()]


def clean_demo(folder: Path | None) -> list[Path]:
    """Remove the demo's files, and its folder once that is empty (a folder holding anything
    else is left as it is); what was removed."""
    folder = folder or default_demo_dir()
    removed = _demo_files(folder)
    for path in removed:
        path.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        removed.append(folder)
    return removed


async def run_demo(folder: Path | None, *, emit: Emit) -> DemoResult:
    """Run the demo rollout; the ledger and the HTML report go to `folder` (default:
    `default_demo_dir()`, cleared of the previous demo first)."""
    if folder is None:
        folder = default_demo_dir()
        clean_demo(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ledger_path = folder / LEDGER_NAME
    config = demo_emulator_config()
    fleet = Fleet.from_config(config)
    targets = tuple(
        Target(region, inst.instance_id)
        for region in DEMO_REGIONS
        for inst in fleet.regions[region].instances
    )[:DEMO_TARGETS]
    async with running_emulator(config) as emu:
        settings = Settings(
            ledger=str(ledger_path),
            endpoint=emu.url,
            concurrency=48,
            region_concurrency=16,
            rate_per_s=0,
            poll_interval_s=0.5,
        )
        credentials = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, source="demo")
        store = open_ledger(str(ledger_path))
        script_path = folder / SCRIPT_NAME
        script_path.write_text(DEMO_SCRIPT, encoding="utf-8")
        source = ScriptSource(DEMO_SCRIPT, path=str(script_path))
        request = RunRequest(
            targets=targets,
            spec=CommandSpec(command_id=label(source)),
            source=source,
            waves=DEMO_WAVES,
            wait=True,
        )
        outcome = await start_run(settings, credentials, store, request, emit=emit)
    run = store.get_run(outcome.run_id)
    doc = status_document(
        run,
        store.instance_counts(run.run_id),
        store.batch_counts(run.run_id),
        store.command_ids(run.run_id),
        linked=linked_entries(store, run.run_id),
    )
    report_path = folder / REPORT_NAME
    write_file(report_path, html_report(store, run.run_id))
    store.close()
    return DemoResult(ledger_path, report_path, outcome, run_summary(doc), doc)

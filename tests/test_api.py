"""The Python API for runbooks: same rollouts as the CLI, async and blocking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fanout
from fanout.aliyun.credentials import Credentials
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    EmulatorConfig,
    EmulatorThread,
    demo_command_id,
    running_emulator,
)
from fanout.emulator.fleet import Fleet
from fanout.errors import ConfigError, ExitCode
from fanout.settings import Settings
from fanout.targets import Target

CREDS = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)
CONFIG = EmulatorConfig(instances_per_region=60, stopped_fraction=0.05)


def _targets() -> list[Target]:
    fleet = Fleet.from_config(CONFIG)
    return [Target("cn-hangzhou", i.instance_id) for i in fleet.regions["cn-hangzhou"].instances]


def test_public_names_sorted_and_resolvable() -> None:
    """`fanout.__all__` is sorted, and every name in it resolves."""
    assert fanout.__all__ == sorted(fanout.__all__)
    for name in fanout.__all__:
        assert getattr(fanout, name) is not None
    with pytest.raises(AttributeError):
        _ = fanout.does_not_exist


async def test_async_rollout_reports_like_the_cli(tmp_path: Path) -> None:
    """`fanout.rollout` runs, excludes the stopped instances and returns the CLI's exit code."""
    events: list[str] = []
    async with running_emulator(CONFIG) as emu:
        settings = Settings(ledger=str(tmp_path / "l.sqlite3"), endpoint=emu.url, rate_per_s=0)
        outcome = await fanout.rollout(
            _targets(),
            command_id=DEMO_COMMAND_ID,
            settings=settings,
            credentials=CREDS,
            on_event=lambda kind, _data: events.append(kind),
        )
    assert outcome.exit_code is ExitCode.OK  # exclusions are counted, they do not fail the run
    assert outcome.instances["excluded"] == 3
    assert outcome.instances["succeeded"] == 57
    assert events[0] == "run"
    assert events[-1] == "end"
    doc = fanout.status(outcome.run_id, settings=settings)
    assert doc["target_count"] == 60


async def test_strict_rollout_fails_on_exclusions(tmp_path: Path) -> None:
    """With strict=True the same rollout, whose only problems are exclusions, exits 1."""
    async with running_emulator(CONFIG) as emu:
        settings = Settings(ledger=str(tmp_path / "l.sqlite3"), endpoint=emu.url, rate_per_s=0)
        outcome = await fanout.rollout(
            _targets(),
            command_id=DEMO_COMMAND_ID,
            settings=settings,
            credentials=CREDS,
            strict=True,
            wait=False,
        )
    assert outcome.exit_code is ExitCode.FINISHED_WITH_FAILURES
    assert outcome.instances["excluded"] == 3


def test_blocking_rollout_and_resume(tmp_path: Path) -> None:
    """The blocking wrappers work from code without an event loop; resume of a done run is a no-op."""
    with EmulatorThread(CONFIG) as emu:
        settings = Settings(ledger=str(tmp_path / "l.sqlite3"), endpoint=emu.url, rate_per_s=0)
        good = _targets()[:10]
        outcome = fanout.rollout_blocking(
            good, command_id=DEMO_COMMAND_ID, settings=settings, credentials=CREDS, preflight=False
        )
        calls = emu.snapshot()["regions"]["cn-hangzhou"]["calls"]["InvokeCommand"]
        again = fanout.resume_blocking(outcome.run_id, settings=settings, credentials=CREDS)
        assert emu.snapshot()["regions"]["cn-hangzhou"]["calls"]["InvokeCommand"] == calls
    assert again.run_id == outcome.run_id
    assert again.instances == outcome.instances


def test_the_api_never_logs_to_stdout() -> None:
    """Without logging configured by the application, the API's logs go to stderr, not stdout."""
    code = (
        "import structlog, fanout.api as api\n"
        "api._logs_to_stderr()\n"
        "structlog.get_logger('fanout.test').warning('visible_on_stderr')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "visible_on_stderr" in done.stderr


TWO = EmulatorConfig(regions=("cn-hangzhou", "cn-beijing"), instances_per_region=20)


def _two_region_targets() -> list[Target]:
    fleet = Fleet.from_config(TWO)
    return [Target(r, i.instance_id) for r, rf in fleet.regions.items() for i in rf.instances]


async def test_rollout_takes_every_command_source_and_invoke_option(tmp_path: Path) -> None:
    """`rollout(script=...)` creates the command in each region and passes InvokeCommand's
    options as keywords; `command_id={region: id}` invokes each region's id; options are
    checked like the CLI's flags, and exactly one source is required."""
    script = tmp_path / "deploy.sh"
    script.write_text("echo deploy\n")
    async with running_emulator(TWO) as emu:
        settings = Settings(ledger=str(tmp_path / "l.sqlite3"), endpoint=emu.url, rate_per_s=0)
        done = await fanout.rollout(
            _two_region_targets(),
            script=script,
            termination_mode="ProcessTree",
            oss_output_delivery="fanout-logs/api",
            invocation_tags={"team": "sre"},
            settings=settings,
            credentials=CREDS,
        )
        assert done.exit_code is ExitCode.OK
        state = emu.snapshot()
        assert {r: s["commands_created"] for r, s in state["regions"].items()} == {
            "cn-hangzhou": 1,
            "cn-beijing": 1,
        }
        options = {(i["region"], i["options"]["OssOutputDelivery"]) for i in state["invocations"]}
        assert options == {
            ("cn-hangzhou", "oss://fanout-logs/api"),
            ("cn-beijing", "oss://fanout-logs/api"),
        }
        mapped = await fanout.rollout(
            _two_region_targets(),
            command_id={r: demo_command_id(r) for r in TWO.regions},
            settings=settings,
            credentials=CREDS,
        )
        assert mapped.exit_code is ExitCode.OK
        for bad in ({"termination_mode": "Kill"}, {"no_such_option": 1}):
            with pytest.raises(ConfigError):
                await fanout.rollout(
                    _two_region_targets(),
                    command_name="fanout-demo",
                    settings=settings,
                    credentials=CREDS,
                    **bad,
                )
        with pytest.raises(ConfigError, match="exactly one"):
            await fanout.rollout(
                _two_region_targets(),
                command_name="fanout-demo",
                script=script,
                settings=settings,
                credentials=CREDS,
            )


async def test_rollout_rolls_back_on_halt_and_checks_waves(tmp_path: Path) -> None:
    """`rollout(on_halt=..., wave_check=...)`: a half-failing rollout halts (exit 3) after its
    first wave, over its budget (so no check runs); the rollback ran as a linked run on exactly
    the instances that succeeded, its event just before the end; a linked command that is not
    one source is refused before anything is sent."""
    config = EmulatorConfig(instances_per_region=60, seed=5, exec_failure_fraction=0.5)
    targets = [
        Target("cn-hangzhou", i.instance_id)
        for i in Fleet.from_config(config).regions["cn-hangzhou"].instances
    ]
    events: list[str] = []
    async with running_emulator(config) as emu:
        settings = Settings(ledger=str(tmp_path / "l.sqlite3"), endpoint=emu.url, rate_per_s=0)
        with pytest.raises(ConfigError, match="on_halt takes one of"):
            await fanout.rollout(
                targets, command_id=DEMO_COMMAND_ID, settings=settings, credentials=CREDS,
                on_halt={"command_id": DEMO_COMMAND_ID, "script": "x.sh"},
            )  # fmt: skip
        outcome = await fanout.rollout(
            targets, command_id=DEMO_COMMAND_ID, settings=settings, credentials=CREDS,
            waves="10%,100%", max_errors="5%", wave_check={"command_id": DEMO_COMMAND_ID},
            on_halt={"command_id": DEMO_COMMAND_ID}, on_event=lambda kind, _d: events.append(kind),
        )  # fmt: skip
        invocations = emu.snapshot()["invocations"]
    assert outcome.exit_code is ExitCode.HALTED
    assert outcome.rollback is not None
    assert events[-2:] == ["rollback", "end"], events
    first = [i for inv in invocations[:1] for i in inv["instance_ids"]]
    assert len(first) == 6  # the first wave, one call
    assert len(invocations) == 2  # the first wave's call, then the rollback's
    rolled = invocations[-1]["instance_ids"]
    assert outcome.rollback["targets"] == len(rolled) == outcome.instances["succeeded"]
    assert set(rolled) <= set(first)
    assert "wave_check" not in events  # a wave over its budget halts at once: no check

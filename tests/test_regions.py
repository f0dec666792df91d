"""Every region at once (issue 12): one region's limits never hold up another's batches.

Proven from the emulator's side: the `created` stamps of the invocations it accepted, run
through the `fanout` CLI with its default pacing (rate 10/s and 8 calls in flight per region).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, fleet_ids, write_targets

Start = Callable[..., EmulatorThread]


def _created_by_region(snapshot: dict[str, Any]) -> dict[str, list[str]]:
    """Each region's accepted invocations' `created` stamps, in order."""
    found: dict[str, list[str]] = {}
    for inv in snapshot["invocations"]:
        found.setdefault(inv["region"], []).append(inv["created"])
    return {region: sorted(stamps) for region, stamps in found.items()}


def _run(cli: Fanout, targets: Path, *extra: str) -> None:
    done = cli.run(
        "run",
        "--command-name",  # one name, each region's own CommandId
        DEMO_COMMAND_NAME,
        "--targets",
        str(targets),
        "--no-wait",
        "--no-preflight",
        "--yes",
        *extra,
    )
    assert done.returncode == 0, done.stderr


def test_a_throttled_region_does_not_hold_up_a_fast_one(
    emulator: Start, fanout_cli: Callable[[EmulatorThread], Fanout], tmp_path: Path
) -> None:
    """With one region throttled to 1 call/s, the fast region's last batch is accepted before
    the slow region's 5th."""
    fields: dict[str, Any] = {
        "regions": ("cn-beijing", "cn-hangzhou"),
        "instances_per_region": 300,
    }
    # One-second throttling windows keep this real-time test short (the API's are a minute).
    emu = emulator(**fields, latency_ms=20, region_qps={"cn-beijing": 1.0}, throttle_window_s=1)
    cli = fanout_cli(emu)
    _run(cli, write_targets(tmp_path / "t.txt", fleet_ids(**fields)), "--batch-size", "50")
    created = _created_by_region(emu.snapshot())
    assert len(created["cn-beijing"]) == 6
    assert len(created["cn-hangzhou"]) == 6
    assert created["cn-hangzhou"][-1] < created["cn-beijing"][4]
    throttled = emu.snapshot()["regions"]["cn-beijing"]["calls"]["InvokeCommand"]
    assert throttled > 6  # the slow region was throttled and its batches sent again


def test_every_region_gets_its_first_call_before_any_region_gets_its_tenth(
    emulator: Start, fanout_cli: Callable[[EmulatorThread], Fanout], tmp_path: Path
) -> None:
    """In a 3-region run the first InvokeCommand of every region goes out before the 10th batch
    of any one region."""
    fields: dict[str, Any] = {
        "regions": ("cn-beijing", "cn-hangzhou", "cn-shanghai"),
        "instances_per_region": 400,
    }
    emu = emulator(**fields, latency_ms=20)
    cli = fanout_cli(emu)
    _run(cli, write_targets(tmp_path / "t.txt", fleet_ids(**fields)), "--batch-size", "20")
    created = _created_by_region(emu.snapshot())
    assert {region: len(stamps) for region, stamps in created.items()} == {
        "cn-beijing": 20,
        "cn-hangzhou": 20,
        "cn-shanghai": 20,
    }
    last_first = max(stamps[0] for stamps in created.values())
    first_tenth = min(stamps[9] for stamps in created.values())
    assert last_first < first_tenth

"""`fanout quota` as people and scripts meet it: its warnings go to stderr (stdout stays one
JSON document with --json), a region typo is refused as `run` refuses it, and `--region` shows
only the regions given. The real CLI as a process, the emulator on 127.0.0.1, a real SQLite
ledger."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fanout.emulator import DEMO_COMMAND_NAME, EmulatorThread
from tests.conftest import Fanout, fleet_ids, write_targets

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]

REGIONS = ("cn-beijing", "cn-hangzhou")


def test_quota_json_is_one_document_with_the_warnings_on_stderr(
    emulator: Start, fanout_cli: Bind
) -> None:
    """With DescribeAccountAttributes denied, `quota --json` still prints exactly one JSON
    document on stdout; the fallback warning is on stderr, and `--log-level error` hides it."""
    emu = emulator(regions=REGIONS, denied_actions=frozenset({"DescribeAccountAttributes"}))
    cli = fanout_cli(emu)
    done = cli.run("quota", "--json", "--region", "cn-hangzhou")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert list(doc["regions"]) == ["cn-hangzhou"]
    assert "DescribeAccountAttributes" in done.stderr
    quiet = cli.run("quota", "--json", "--region", "cn-hangzhou", "--log-level", "error")
    assert list(json.loads(quiet.stdout)["regions"]) == ["cn-hangzhou"]
    assert quiet.stderr == ""


def test_a_region_typo_is_refused_before_any_call(emulator: Start, fanout_cli: Bind) -> None:
    """`quota --region cn-hangzou` exits 2 with one line naming --region and the typo, as
    `run` does, and sends nothing."""
    emu = emulator(regions=REGIONS)
    cli = fanout_cli(emu)
    done = cli.run("quota", "--region", "cn-hangzou")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == ["fanout: error: --region: unknown region 'cn-hangzou'"]
    calls = sum(sum(r["calls"].values()) for r in emu.snapshot()["regions"].values())
    assert calls == 0
    assert not Path(cli.ledger).exists()


def test_region_filters_the_regions_the_ledger_knows(
    emulator: Start, fanout_cli: Bind, tmp_path: Path
) -> None:
    """After a run in two regions, `quota` shows both; `quota --region cn-beijing` only it,
    its limit's source in one pair of parentheses."""
    fields = {"regions": REGIONS, "instances_per_region": 3}
    emu = emulator(**fields)
    cli = fanout_cli(emu)
    targets = write_targets(tmp_path / "t.txt", fleet_ids(**fields))
    ran = cli.run("run", "--command-name", DEMO_COMMAND_NAME, "--targets", str(targets), "--yes")
    assert ran.returncode == 0, ran.stderr
    every = json.loads(cli.run("quota", "--json").stdout)
    assert sorted(every["regions"]) == list(REGIONS)
    one = json.loads(cli.run("quota", "--json", "--region", "cn-beijing").stdout)
    assert list(one["regions"]) == ["cn-beijing"]
    text = cli.run("quota", "--region", "cn-beijing").stdout
    assert "cn-hangzhou" not in text
    assert "(the account's, read now)" in text  # one pair of parentheses, not two

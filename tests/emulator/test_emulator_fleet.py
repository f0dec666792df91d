"""The simulated fleet: deterministic, exact fractions, fast, or loaded from a file."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from fanout.emulator import EmulatorConfig
from fanout.emulator.commands import parameter_names
from fanout.emulator.fleet import Fleet

_ID = re.compile(r"^i-[a-z0-9]{20}$")


def test_ids_are_deterministic_unique_and_well_formed() -> None:
    """The same seed gives the same ids; ids are `i-` + 20 lowercase alphanumerics, unique."""
    config = EmulatorConfig(
        regions=("cn-hangzhou", "cn-shanghai"), instances_per_region=500, seed=4
    )
    a, b = Fleet.from_config(config), Fleet.from_config(config)
    ids_a = [i.instance_id for r in a.regions.values() for i in r.instances]
    assert ids_a == [i.instance_id for r in b.regions.values() for i in r.instances]
    assert len(set(ids_a)) == 1000
    assert all(_ID.match(i) for i in ids_a)
    other = Fleet.from_config(EmulatorConfig(instances_per_region=500, seed=5))
    assert ids_a[0] != other.regions["cn-hangzhou"].instances[0].instance_id


def test_regions_have_different_ids() -> None:
    """Ids of different regions differ (a region-derived prefix)."""
    fleet = Fleet.from_config(
        EmulatorConfig(regions=("cn-hangzhou", "cn-beijing"), instances_per_region=50)
    )
    hz = {i.instance_id for i in fleet.regions["cn-hangzhou"].instances}
    bj = {i.instance_id for i in fleet.regions["cn-beijing"].instances}
    assert not hz & bj
    assert {i[:5] for i in hz} != {i[:5] for i in bj}


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_fractions_are_exact_counts(n: int) -> None:
    """round(fraction * n) instances are stopped, classic and agent-offline."""
    config = EmulatorConfig(
        instances_per_region=n,
        stopped_fraction=0.1,
        classic_fraction=0.25,
        agent_offline_fraction=0.5,
    )
    instances = Fleet.from_config(config).regions["cn-hangzhou"].instances
    assert len(instances) == n
    assert sum(i.status == "Stopped" for i in instances) == round(0.1 * n)
    assert sum(i.network == "classic" for i in instances) == round(0.25 * n)
    assert sum(not i.agent_online for i in instances) == round(0.5 * n)


def test_hundred_thousand_instances_build_fast() -> None:
    """100 000 instances build in well under a second of CPU."""
    started = time.process_time()
    fleet = Fleet.from_config(EmulatorConfig(instances_per_region=100_000, stopped_fraction=0.01))
    spent = time.process_time() - started
    assert len(fleet.regions["cn-hangzhou"].by_id) == 100_000
    print(f"100k instances built in {spent:.3f}s CPU")
    assert spent < 2.0  # generous for slow CI machines; typically ~0.4 s


def test_fleet_file_replaces_generation(tmp_path: Path) -> None:
    """A fleet file gives exactly its instances, attributes and tags (list or object form)."""
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps([
        {"InstanceId": "i-file000000000000001", "RegionId": "cn-beijing", "Status": "Stopped",
         "Tags": {"env": "prod"}},
        {"InstanceId": "i-file000000000000002", "RegionId": "cn-beijing", "InstanceNetworkType": "classic",
         "AgentOnline": False, "OSType": "Windows", "Tags": [{"TagKey": "role", "TagValue": "db"}]},
    ]))  # fmt: skip
    fleet = Fleet.from_config(EmulatorConfig(fleet_file=path, regions=("cn-beijing",)))
    first, second = fleet.regions["cn-beijing"].instances
    assert (first.status, first.tags) == ("Stopped", (("env", "prod"),))
    assert (second.network, second.agent_online, second.os_type) == ("classic", False, "windows")
    assert second.tags == (("role", "db"),)
    assert fleet.regions["cn-beijing"].tag_positions("role", "db") == [1]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{}", "JSON list"),
        ("[1]", "instance #1"),
        ('[{"InstanceId": "i-a", "RegionId": "r", "Status": "Asleep"}]', "Status"),
        (
            '[{"InstanceId": "i-a", "RegionId": "r"}, {"InstanceId": "i-a", "RegionId": "r"}]',
            "duplicate",
        ),
        ("not json", "cannot read"),
    ],
)
def test_bad_fleet_file_names_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    """A malformed fleet file raises ValueError naming the file and the entry."""
    path = tmp_path / "fleet.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as caught:
        Fleet.from_config(EmulatorConfig(fleet_file=path))
    assert str(path) in str(caught.value)


def test_parameter_names_from_placeholders() -> None:
    """`{{name}}` placeholders define parameters, in first-use order; `{{ACS::...}}` are built in."""
    text = "echo {{a}} {{ b }} {{a}} {{ACS::RegionId}} {{c-d_1}}"
    assert parameter_names(text) == ("a", "b", "c-d_1")


def test_config_problems_are_listed() -> None:
    """Invalid config values are each reported."""
    config = EmulatorConfig(
        stopped_fraction=1.5, exec_seconds=(5, 1), max_instances_per_call=0, qps=0
    )
    problems = " ".join(config.problems())
    for name in ("stopped_fraction", "exec_seconds", "max_instances_per_call", "qps"):
        assert name in problems
    assert EmulatorConfig().problems() == []

"""The simulated fleet: instances per region, indexed by id (the commands: `commands.py`).

Generation is deterministic from the seed and cheap (one small slotted object per instance):
the fractions of stopped, classic-network and agent-offline instances are exact counts
(`round(fraction * n)`), chosen by seeded sampling, so tests can rely on the numbers.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanout.emulator.config import AGENT_FAILURE_CODES, EmulatorConfig

__all__ = ["Fleet", "Instance", "InstanceBehaviour", "RegionFleet", "generated_ids"]

# Some of a real fleet is Windows; a tenth keeps them visible without dominating.
_WINDOWS_FRACTION = 0.1
_ENVS = ("prod", "staging")
_ROLES = ("web", "db", "cache")
_INDEX_TAG = "fanout:index"
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class Instance:
    """One simulated ECS instance; `status` and `agent_online` change via the control endpoint."""

    __slots__ = (
        "agent_online",
        "index",
        "instance_id",
        "network",
        "os_type",
        "region",
        "status",
        "tags",
        "zone_id",
    )

    def __init__(
        self,
        instance_id: str,
        region: str,
        index: int,
        *,
        status: str = "Running",
        network: str = "vpc",
        agent_online: bool = True,
        os_type: str = "linux",
        tags: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.instance_id = instance_id
        self.region = region
        self.index = index
        self.status = status
        self.network = network
        self.agent_online = agent_online
        self.os_type = os_type
        self.zone_id = f"{region}-{'ab'[index % 2]}"
        self.tags = tags

    def unusable_reason(self) -> str | None:
        """Why InvokeCommand refuses this instance (spec S2, S3, S4), or None if it is usable."""
        if self.status != "Running":
            return f"InstanceNotRunning (Status {self.status})"  # spec S3
        if self.network != "vpc":
            return "ClassicNetwork (only VPC instances are supported)"  # spec S2
        if not self.agent_online:
            return "ClientNotOnline (the Cloud Assistant agent is offline)"  # spec S4
        return None


@dataclass(frozen=True, slots=True)
class InstanceBehaviour:
    """How one instance's executions go, set in a fleet file (`ExitCode`, `AgentFailure`,
    `OutputBytes`); kept apart from `Instance` because few instances have one."""

    exit_code: int | None = None
    agent_failure: str | None = None  # one of AGENT_FAILURE_CODES: never delivered
    output_bytes: int | None = None


class RegionFleet:
    """The instances of one region, in a stable order, indexed by id and lazily by tag."""

    def __init__(self, region: str, instances: list[Instance]) -> None:
        self.region = region
        self.instances = instances
        self.by_id = {inst.instance_id: inst for inst in instances}
        self._tag_index: dict[str, dict[str, list[int]]] = {}
        self.version = 0  # bumped on every mutation so cached counts can be dropped

    def tag_positions(self, key: str, value: str) -> list[int]:
        """Sorted positions of the instances carrying tag `key=value` (index built on first use)."""
        by_value = self._tag_index.get(key)
        if by_value is None:
            by_value = {}
            for pos, inst in enumerate(self.instances):
                for tag_key, tag_value in inst.tags:
                    if tag_key == key:
                        by_value.setdefault(tag_value, []).append(pos)
            self._tag_index[key] = by_value
        return by_value.get(value, [])


class Fleet:
    """Every region's instances; built from the config or from a fleet file."""

    def __init__(
        self,
        regions: Mapping[str, RegionFleet],
        behaviours: Mapping[str, InstanceBehaviour] | None = None,
    ) -> None:
        self.regions = dict(regions)
        self.behaviours = dict(behaviours or {})  # instance id -> its set behaviour

    @classmethod
    def from_config(cls, config: EmulatorConfig) -> Fleet:
        """Generate the fleet, or load `config.fleet_file` (its regions join the configured ones)."""
        if config.fleet_file is not None:
            loaded, behaviours = _load_fleet_file(config.fleet_file)
            regions = {r: RegionFleet(r, loaded.get(r, [])) for r in config.regions}
            regions.update({r: RegionFleet(r, insts) for r, insts in loaded.items()})
            return cls(regions, behaviours)
        return cls({r: RegionFleet(r, _generate(config, r)) for r in config.regions})

    def find(self, instance_id: str) -> Instance | None:
        """The instance with this id in any region."""
        for region in self.regions.values():
            inst = region.by_id.get(instance_id)
            if inst is not None:
                return inst
        return None


def _id_prefix(region: str) -> str:
    """Three id characters derived from the region, so ids of different regions differ."""
    digest = hashlib.sha256(region.encode()).digest()
    return "".join(_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in digest[:3])


def _exact_sample(rng: random.Random, n: int, fraction: float) -> set[int]:
    return set(rng.sample(range(n), round(fraction * n)))


def generated_ids(config: EmulatorConfig, region: str) -> list[str]:
    """The ids of the instances `Fleet.from_config` generates in `region`, in order, without
    building the instances (a million targets for `fanout simulate` cost ~70 MB, not ~600)."""
    return list(_generated_ids(config, region, random.Random(f"fleet:{config.seed}:{region}")))


def _generated_ids(config: EmulatorConfig, region: str, rng: random.Random) -> dict[str, None]:
    n = config.instances_per_region
    prefix = "i-" + _id_prefix(region)
    ids: dict[str, None] = {}
    while len(ids) < n:  # 17 hex digits = 68 random bits: collisions are rare but checked
        ids[prefix + format(rng.getrandbits(68), "017x")] = None
    return ids


def _generate(config: EmulatorConfig, region: str) -> list[Instance]:
    n = config.instances_per_region
    rng = random.Random(f"fleet:{config.seed}:{region}")
    ids = _generated_ids(config, region, rng)
    stopped = _exact_sample(rng, n, config.stopped_fraction)
    classic = _exact_sample(rng, n, config.classic_fraction)
    offline = _exact_sample(rng, n, config.agent_offline_fraction)
    windows = _exact_sample(rng, n, _WINDOWS_FRACTION)
    envs = rng.choices(_ENVS, k=n)
    roles = rng.choices(_ROLES, k=n)
    return [
        Instance(
            instance_id,
            region,
            i,
            status="Stopped" if i in stopped else "Running",
            network="classic" if i in classic else "vpc",
            agent_online=i not in offline,
            os_type="windows" if i in windows else "linux",
            tags=(("env", envs[i]), ("role", roles[i]), (_INDEX_TAG, str(i))),
        )
        for i, instance_id in enumerate(ids)
    ]


def _load_fleet_file(
    path: Path,
) -> tuple[dict[str, list[Instance]], dict[str, InstanceBehaviour]]:
    """Read a JSON list of instances (and their set behaviours); raise ValueError naming the
    entry that is wrong."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the fleet file: {exc}") from exc
    if not isinstance(entries, list):
        raise ValueError(f"{path}: the fleet file must hold a JSON list of instances")
    regions: dict[str, list[Instance]] = {}
    behaviours: dict[str, InstanceBehaviour] = {}
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: instance #{number}"
        inst = _instance_from_entry(entry, regions, where)
        if inst.instance_id in seen:
            raise ValueError(f"{where}: duplicate InstanceId {inst.instance_id}")
        seen.add(inst.instance_id)
        regions[inst.region].append(inst)
        assert isinstance(entry, dict)
        behaviour = _behaviour_from_entry(entry, where)
        if behaviour is not None:
            behaviours[inst.instance_id] = behaviour
    return regions, behaviours


def _behaviour_from_entry(entry: dict[str, Any], where: str) -> InstanceBehaviour | None:
    """`ExitCode` (int), `AgentFailure` (a delivery failure code), `OutputBytes` (int >= 0)."""
    exit_code, failure, size = (entry.get(k) for k in ("ExitCode", "AgentFailure", "OutputBytes"))
    if exit_code is None and failure is None and size is None:
        return None
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise ValueError(f"{where}: ExitCode must be an integer")
    if failure is not None and failure not in AGENT_FAILURE_CODES:
        raise ValueError(f"{where}: AgentFailure must be one of {', '.join(AGENT_FAILURE_CODES)}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"{where}: OutputBytes must be an integer >= 0")
    return InstanceBehaviour(exit_code, failure, size)


def _instance_from_entry(entry: object, regions: dict[str, list[Instance]], where: str) -> Instance:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be a JSON object")
    instance_id, region = entry.get("InstanceId"), entry.get("RegionId")
    if not isinstance(instance_id, str) or not isinstance(region, str) or not region:
        raise ValueError(f"{where}: InstanceId and RegionId must be strings")
    status = entry.get("Status", "Running")
    network = str(entry.get("InstanceNetworkType", "vpc")).lower()
    if status not in ("Running", "Stopped", "Starting", "Stopping", "Pending"):
        raise ValueError(f"{where}: unknown Status {status!r}")
    if network not in ("vpc", "classic"):
        raise ValueError(f"{where}: InstanceNetworkType must be vpc or classic")
    return Instance(
        instance_id,
        region,
        len(regions.setdefault(region, [])),
        status=status,
        network=network,
        agent_online=bool(entry.get("AgentOnline", True)),
        os_type=str(entry.get("OSType", "linux")).lower(),
        tags=_tags_from_entry(entry.get("Tags", {}), where),
    )


def _tags_from_entry(raw: object, where: str) -> tuple[tuple[str, str], ...]:
    """Tags as `{"k": "v"}` or `[{"TagKey": k, "TagValue": v}]` (or `Key`/`Value`)."""
    if isinstance(raw, dict):
        return tuple((str(k), str(v)) for k, v in raw.items())
    if isinstance(raw, list):
        pairs: list[tuple[str, str]] = []
        for tag in raw:
            if not isinstance(tag, dict):
                raise ValueError(f"{where}: each tag must be an object")
            pairs.append(
                (
                    str(tag.get("TagKey", tag.get("Key", ""))),
                    str(tag.get("TagValue", tag.get("Value", ""))),
                )
            )
        return tuple(pairs)
    raise ValueError(f"{where}: Tags must be an object or a list")

"""The emulator's settings, one frozen value, and the documented demo credentials and commands."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "DEMO_ACCESS_KEY_ID",
    "DEMO_ACCESS_KEY_SECRET",
    "DEMO_COMMAND_ID",
    "DEMO_COMMAND_NAME",
    "DEMO_CONTENT_LIMIT_BYTES",
    "DEMO_PARAM_COMMAND_ID",
    "DEMO_PARAM_COMMAND_NAME",
    "EmulatorConfig",
    "demo_command_id",
]

DEMO_ACCESS_KEY_ID = "LTAI5tFanoutDemoKeyId00"
DEMO_ACCESS_KEY_SECRET = "fanout-demo-secret-not-for-production"  # noqa: S105 - documented demo pair
# Two demo commands exist in every region at start: one prints a greeting, one takes the
# parameters `name` and `version`. A CommandId belongs to one region (CreateCommand in two
# regions gives two ids), so each region has its own ids for them: `demo_command_id(region)`.
DEMO_COMMAND_NAME = "fanout-demo"
DEMO_PARAM_COMMAND_NAME = "fanout-demo-deploy"
# Base64 of a saved command's content plus its parameters: at most 18 KB in the current
# InvokeCommand reference and the create-a-command guide (facts 10 [1][14]; 16 KB in the
# oldest documents, 24 KB in the SDK 7.11.8 docstring).
DEMO_CONTENT_LIMIT_BYTES = 18 * 1024


def demo_command_id(region: str, name: str = DEMO_COMMAND_NAME) -> str:
    """A demo command's id in `region`: `c-` + 17 lowercase alphanumerics, as real ids are."""
    kind = "fanoutdemo" if name == DEMO_COMMAND_NAME else "fanoutparm"
    return f"c-{kind}{hashlib.sha256(f'{name}:{region}'.encode()).hexdigest()[:7]}"


# The demo commands' ids in cn-hangzhou, the emulator's default region (other regions' ids
# differ: use `demo_command_id`, `--command-name fanout-demo`, or a per-region map).
DEMO_COMMAND_ID = demo_command_id("cn-hangzhou")
DEMO_PARAM_COMMAND_ID = demo_command_id("cn-hangzhou", DEMO_PARAM_COMMAND_NAME)

# The real InvokeCommand takes at most 50 (old doc) or 100 (new docstring) instances per call.
_MAX_INSTANCES_PER_CALL_LIMIT = 100
# Timestamps may be off by 15 minutes (V3 docs); the same window bounds the nonce memory.
DEFAULT_MAX_CLOCK_SKEW_S = 900


def _default_access_keys() -> Mapping[str, str]:
    return MappingProxyType({DEMO_ACCESS_KEY_ID: DEMO_ACCESS_KEY_SECRET})


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator can be told; every field has a default (see DESIGN section 5)."""

    host: str = "127.0.0.1"
    port: int = 0
    regions: tuple[str, ...] = ("cn-hangzhou",)
    instances_per_region: int = 100
    fleet_file: Path | None = None
    seed: int = 0
    stopped_fraction: float = 0.0
    classic_fraction: float = 0.0
    agent_offline_fraction: float = 0.0
    exec_seconds: tuple[float, float] = (0.0, 0.0)
    exec_failure_fraction: float = 0.0
    latency_ms: float = 0.0
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    drop_rate: float = 0.0
    accept_then_drop_rate: float = 0.0
    fault_actions: frozenset[str] | None = None
    qps: float | None = None  # every region and action (ECS throttles per region and API)
    region_qps: Mapping[str, float] = field(default_factory=dict)  # per region, over `qps`
    daily_quota: int = 5000
    max_instances_per_call: int = 50
    content_limit_bytes: int = DEMO_CONTENT_LIMIT_BYTES
    access_keys: Mapping[str, str] = field(default_factory=_default_access_keys)
    sts_tokens: frozenset[str] = frozenset()
    tls: bool = False
    max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S

    def problems(self) -> list[str]:
        """Every invalid value, as `name: why` lines (empty when the config is usable)."""
        found: list[str] = []
        fractions = {
            "stopped_fraction": self.stopped_fraction,
            "classic_fraction": self.classic_fraction,
            "agent_offline_fraction": self.agent_offline_fraction,
            "exec_failure_fraction": self.exec_failure_fraction,
            "error_rate": self.error_rate,
            "throttle_rate": self.throttle_rate,
            "drop_rate": self.drop_rate,
            "accept_then_drop_rate": self.accept_then_drop_rate,
        }
        found += [
            f"{name}: must be within 0..1" for name, v in fractions.items() if not 0 <= v <= 1
        ]
        if self.error_rate + self.throttle_rate + self.drop_rate > 1:
            found.append("error_rate + throttle_rate + drop_rate: must not exceed 1")
        low, high = self.exec_seconds
        if not 0 <= low <= high:
            found.append("exec_seconds: must be MIN:MAX with 0 <= MIN <= MAX")
        if not self.regions or any(not r for r in self.regions):
            found.append("regions: at least one non-empty region name")
        found += self._limit_problems()
        return found

    def _limit_problems(self) -> list[str]:
        found: list[str] = []
        if self.instances_per_region < 0:
            found.append("instances_per_region: must be >= 0")
        if self.latency_ms < 0:
            found.append("latency_ms: must be >= 0")
        if self.qps is not None and self.qps <= 0:
            found.append("qps: must be > 0")
        found += [f"qps {region}: must be > 0" for region, v in self.region_qps.items() if v <= 0]
        if self.daily_quota < 0:
            found.append("daily_quota: must be >= 0")
        if not 1 <= self.max_instances_per_call <= _MAX_INSTANCES_PER_CALL_LIMIT:
            found.append(
                f"max_instances_per_call: must be within 1..{_MAX_INSTANCES_PER_CALL_LIMIT}"
            )
        if self.content_limit_bytes <= 0:
            found.append("content_limit_bytes: must be > 0")
        if not 0 <= self.port <= 65535:
            found.append("port: must be within 0..65535")
        if self.max_clock_skew_s <= 0:
            found.append("max_clock_skew_s: must be > 0")
        if not self.access_keys:
            found.append("access_keys: at least one key pair")
        return found

"""The emulator's settings, one frozen value, and the documented demo credentials and commands."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "AGENT_FAILURE_CODES",
    "DEMO_ACCESS_KEY_ID",
    "DEMO_ACCESS_KEY_SECRET",
    "DEMO_COMMAND_ID",
    "DEMO_COMMAND_NAME",
    "DEMO_CONTENT_LIMIT_BYTES",
    "DEMO_PARAM_COMMAND_ID",
    "DEMO_PARAM_COMMAND_NAME",
    "DEMO_RAM_ROLE",
    "STOP_MODES",
    "THROTTLE_CODES",
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

# The instance RAM role the emulated metadata service hands out credentials for (`--ram-role`).
DEMO_RAM_ROLE = "fanout-demo-role"

# Agent and delivery failures that can be injected per execution (`--agent-failure CODE=F`):
# the per-instance ErrorCode values of the SDK model's "agent and network" group (facts 2.3;
# alibabacloud-go-sdk ecs-20140526 describe_invocations_response_body_model.go, ErrorCode).
AGENT_FAILURE_CODES = ("ClientNotRunning", "ClientNotResponse", "DeliveryTimeout")
# StopInvocation: the API reference (facts 10 [8]) cancels pending executions and lets started
# ones run on; TerminationMode and the agent's cancel path (facts 10 [1][7]) suggest a kill.
STOP_MODES = ("cancel-pending", "terminate")
# The per-minute throttling answer: ECS's throttling page (facts 10 [9]) names `Throttling`;
# other Alibaba Cloud APIs and older ECS answers say `Throttling.User` (facts 6.2).
THROTTLE_CODES = ("Throttling", "Throttling.User", "Throttling.Api")
# DescribeInvocationResults keeps 4 weeks and 100 000 records (facts 10 [10]; older docs: 2 weeks).
_RETENTION_S = 28 * 86_400.0
_RETENTION_RECORDS = 100_000
# Instance RAM role credentials: the metadata service's STS credentials last 6 hours
# (alibabacloud credentials: DEFAULT_METADATA_TOKEN_DURATION 21600, refreshed hourly).
_STS_TTL_S = 21_600.0
# ECS throttles per API, region and account in one-minute windows (facts 10 [9]).
_THROTTLE_WINDOW_S = 60.0

# The real InvokeCommand takes at most 50 (old doc) or 100 (new docstring) instances per call.
_MAX_INSTANCES_PER_CALL_LIMIT = 100
# A day in under a second of wall time is the most any rehearsal needs; beyond, float noise.
_MAX_TIME_SCALE = 1_000_000.0
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
    # Per execution, seeded: the share that fails to be delivered with each code.
    agent_failures: Mapping[str, float] = field(default_factory=dict)
    output_bytes: int = 0  # simulated output per execution (0: one greeting line)
    stop_mode: str = "cancel-pending"
    denied_actions: frozenset[str] = frozenset()  # answered Forbidden.RAM (a RAM user without them)
    latency_ms: float = 0.0
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    drop_rate: float = 0.0
    accept_then_drop_rate: float = 0.0
    fault_actions: frozenset[str] | None = None
    qps: float | None = None  # every region and action (ECS throttles per region and API)
    region_qps: Mapping[str, float] = field(default_factory=dict)  # per region, over `qps`
    throttle_window_s: float = _THROTTLE_WINDOW_S  # --qps and --throttle-rate count per window
    throttle_code: str = "Throttling"
    throttle_retry_after: bool = False  # add x-acs-retry-after (ms to the window's end)
    daily_quota: int = 5000
    max_instances_per_call: int = 50
    content_limit_bytes: int = DEMO_CONTENT_LIMIT_BYTES
    access_keys: Mapping[str, str] = field(default_factory=_default_access_keys)
    sts_tokens: frozenset[str] = frozenset()
    tls: bool = False
    ram_role: str | None = None  # serve the instance metadata service with this RAM role
    sts_ttl_s: float = _STS_TTL_S
    result_retention_s: float = _RETENTION_S
    result_retention_records: int = _RETENTION_RECORDS
    max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S
    # Emulator seconds per second of its time source (`--time-scale`): executions, quota days,
    # throttle windows and answer timestamps run this much faster than the wall clock.
    time_scale: float = 1.0

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
        found += [
            f"agent_failures {code}: must be within 0..1"
            for code, v in self.agent_failures.items()
            if not 0 <= v <= 1
        ]
        found += [
            f"agent_failures: unknown code {code} (known: {', '.join(AGENT_FAILURE_CODES)})"
            for code in self.agent_failures
            if code not in AGENT_FAILURE_CODES
        ]
        if sum(self.agent_failures.values()) > 1:
            found.append("agent_failures: the fractions must not add up to more than 1")
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
        found += self._realism_problems()
        if self.max_clock_skew_s <= 0:
            found.append("max_clock_skew_s: must be > 0")
        if not self.access_keys:
            found.append("access_keys: at least one key pair")
        return found

    def _realism_problems(self) -> list[str]:
        found: list[str] = []
        if self.output_bytes < 0:
            found.append("output_bytes: must be >= 0")
        if self.stop_mode not in STOP_MODES:
            found.append(f"stop_mode: must be one of {', '.join(STOP_MODES)}")
        if not 0 < self.time_scale <= _MAX_TIME_SCALE:
            found.append(f"time_scale: must be within 0..{_MAX_TIME_SCALE:g} (and not 0)")
        if self.throttle_window_s <= 0:
            found.append("throttle_window_s: must be > 0")
        if self.throttle_code not in THROTTLE_CODES:
            found.append(f"throttle_code: must be one of {', '.join(THROTTLE_CODES)}")
        if self.sts_ttl_s <= 0:
            found.append("sts_ttl_s: must be > 0")
        if self.result_retention_s <= 0 or self.result_retention_records <= 0:
            found.append("result_retention_s, result_retention_records: must be > 0")
        return found

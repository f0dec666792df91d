"""Everything the emulator remembers: clock, call counters, daily quota, ClientTokens, and the
`/_emulator/state` snapshot that lets tests prove exactly-once and quota from the server's side.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fanout.emulator.commands import CommandCatalog
from fanout.emulator.config import EmulatorConfig
from fanout.emulator.executions import ExecutionBehaviour, InvocationStore
from fanout.emulator.fleet import Fleet
from fanout.emulator.metadata import MetadataService
from fanout.emulator.params import Params
from fanout.emulator.timing import iso_utc, iso_utc_ms

__all__ = ["Call", "Clock", "IdempotencyEntry", "RegionState", "World"]

# Alibaba Cloud's quota day is the calendar day in China Standard Time.
_QUOTA_TZ_OFFSET = timedelta(hours=8)


class Clock:
    """The emulator clock: a time source, sped up by `time_scale`, plus an offset that tests
    advance; it can be frozen.

    The time source is the real wall clock (`time.time`) unless `fanout simulate` hands it the
    simulated clock it shares with the runner (`fanout.simtime`, the simulated-time seam): the
    emulator then reads exactly the runner's time. `time_scale` N (`fanout emulator
    --time-scale N`) makes N emulator seconds pass per second of the source: executions, quota
    days, throttle windows and the timestamps in answers all follow. The emulator's own waits
    (latency, an InvokeCommand in flight) go through `sleep`, so with the clock frozen they end
    only when a test advances the clock past them: a test can hold a request at any point of
    its way through the server, without sleeping itself.
    """

    __slots__ = ("_anchor", "_frozen_at", "_moved", "_scale", "_wall", "offset_s")

    def __init__(self, *, time_scale: float = 1.0, wall: Callable[[], float] = time.time) -> None:
        self.offset_s = 0.0
        self._wall = wall
        self._scale = time_scale
        self._anchor = wall()  # scaled time runs from here
        self._frozen_at: float | None = None
        self._moved: asyncio.Event | None = None  # set when the clock is advanced or unfrozen

    def now(self) -> float:
        """Seconds since the epoch, as the emulator sees them."""
        base = self._wall() if self._frozen_at is None else self._frozen_at
        return self._anchor + (base - self._anchor) * self._scale + self.offset_s

    @property
    def frozen(self) -> bool:
        """True while the clock only moves when advanced."""
        return self._frozen_at is not None

    def advance(self, seconds: float) -> None:
        """Jump forward (executions progress, the quota day may roll over)."""
        self.offset_s += seconds
        self._wake()

    def freeze(self, frozen: bool) -> None:
        """Stop (or restart) the clock at its current reading."""
        if frozen and self._frozen_at is None:
            self._frozen_at = self._wall()
        elif not frozen and self._frozen_at is not None:
            self.offset_s += (self._frozen_at - self._wall()) * self._scale
            self._frozen_at = None
            self._wake()

    async def sleep(self, seconds: float) -> None:
        """Wait until this clock has moved `seconds` on: its source passing, or `advance`."""
        deadline = self.now() + seconds
        while (left := deadline - self.now()) > 0:
            if self._frozen_at is None:
                # The event loop's timers run on the source's time (the real one, or the
                # simulated loop's): an advance meanwhile cannot make this any later.
                await asyncio.sleep(left / self._scale)
            else:
                if self._moved is None:
                    self._moved = asyncio.Event()
                await self._moved.wait()

    def _wake(self) -> None:
        """Let every frozen `sleep` look at the clock again."""
        if self._moved is not None:
            self._moved.set()
            self._moved = None


def quota_day(now_s: float) -> str:
    """The quota day (calendar day in UTC+8) containing `now_s`."""
    return (datetime.fromtimestamp(now_s, UTC) + _QUOTA_TZ_OFFSET).date().isoformat()


@dataclass(slots=True)
class RegionState:
    """Per-region counters: calls by action, refusals by action and code, InvokeCommand quota
    used today, dry runs."""

    calls: dict[str, int] = field(default_factory=dict)
    refused: dict[str, dict[str, int]] = field(default_factory=dict)
    quota_used: int = 0
    quota_day: str = ""
    dry_runs: int = 0
    commands_created: int = 0  # CreateCommand calls that created a command

    def roll(self, now_s: float) -> None:
        """Start a fresh quota day when the calendar day (UTC+8) changed."""
        day = quota_day(now_s)
        if day != self.quota_day:
            self.quota_day = day
            self.quota_used = 0


@dataclass(slots=True)
class IdempotencyEntry:
    """A ClientToken seen in a region: its request's parameters and, once done, the InvokeId."""

    params: Mapping[str, str]  # compared only when the token comes again

    invoke_id: str | None = None  # None while the first request is still being processed


class World:
    """The emulator's whole mutable state, owned by the server's event loop."""

    def __init__(self, config: EmulatorConfig, *, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = Clock(time_scale=config.time_scale, wall=wall)
        self.fleet = Fleet.from_config(config)
        now_s = self.clock.now()
        self.regions = {r: RegionState() for r in self.fleet.regions}
        for region in self.regions.values():
            region.roll(now_s)
        self.commands = CommandCatalog(
            self.fleet.regions, now_s, random.Random(f"cmd:{config.seed}")
        )
        self.invocations = InvocationStore(
            config.seed,
            config.exec_seconds,
            config.exec_failure_fraction,
            _execution_behaviour(config, self.fleet),
        )
        self.rejected: dict[str, int] = {}  # requests refused before a region was known, by code
        self.metadata = MetadataService(
            config.ram_role, config.sts_ttl_s, self.clock.now, config.seed
        )
        self.tokens: dict[tuple[str, str], IdempotencyEntry] = {}
        self.count_cache: dict[tuple[Any, ...], int] = {}  # filtered DescribeInstances totals
        # Requests refused before their action ran (signature, key, token, timestamp), by
        # action as the request named it: a test can prove that nothing was even attempted.
        self.unauthenticated: dict[str, int] = {}

    def count_call(self, region: str, action: str) -> None:
        """Count one authenticated request."""
        calls = self.regions[region].calls
        calls[action] = calls.get(action, 0) + 1

    def count_created(self, region: str) -> None:
        """Count one command created by CreateCommand."""
        self.regions[region].commands_created += 1

    def count_refusal(self, region: str, action: str, code: str) -> None:
        """Count one authenticated request answered with an error."""
        by_code = self.regions[region].refused.setdefault(action, {})
        by_code[code] = by_code.get(code, 0) + 1

    def count_rejection(self, code: str) -> None:
        """Count one request refused before it was authenticated (signature, key, token)."""
        self.rejected[code] = self.rejected.get(code, 0) + 1

    def quota_used(self, region: str) -> int:
        """InvokeCommand calls that cost quota today in the region."""
        state = self.regions[region]
        state.roll(self.clock.now())
        return state.quota_used

    def consume_quota(self, region: str) -> bool:
        """Spend one unit of today's quota; False (nothing spent) when it is used up."""
        state = self.regions[region]
        state.roll(self.clock.now())
        if state.quota_used >= self.config.daily_quota:
            return False
        state.quota_used += 1
        return True

    def reset_quota(self, region: str | None) -> None:
        """Forget today's usage of one region, or of all."""
        for name, state in self.regions.items():
            if region is None or name == region:
                state.quota_used = 0

    def snapshot(self, *, executions: bool = False) -> dict[str, Any]:
        """The `/_emulator/state` document (DESIGN section 5, plus extra fields); with
        `executions`, each invocation's per-instance status and exact finish time (epoch
        seconds, not truncated to the second as the API's FinishTime is), for benchmarks."""
        now_s = self.clock.now()
        regions: dict[str, Any] = {}
        for name, state in self.regions.items():
            state.roll(now_s)
            regions[name] = {
                "calls": dict(state.calls),
                "refused": {action: dict(codes) for action, codes in state.refused.items()},
                "quota_used": state.quota_used,
                "daily_quota": self.config.daily_quota,
                "quota_day": state.quota_day,
                "dry_runs": state.dry_runs,
                "instances": len(self.fleet.regions[name].instances),
                "commands_created": state.commands_created,
                # The account's commands in the region, oldest first (ids are per region).
                "commands": [
                    {"command_id": c.command_id, "name": c.name, "created": iso_utc(c.created_s)}
                    for c in self.commands.in_region(name)
                ],
                # The public commands (listed by DescribeCommands only with their Provider).
                "public_commands": [
                    {"command_id": c.command_id, "name": c.name, "provider": c.provider}
                    for c in self.commands.all_public_in(name)
                ],
            }
        invocations: list[dict[str, Any]] = [
            {
                "invoke_id": inv.invoke_id,
                "region": inv.region,
                "command_id": inv.spec.command.command_id,
                "instance_ids": list(inv.spec.instance_ids),
                "client_token": inv.spec.client_token,
                "created": iso_utc_ms(inv.created_s),
                "repeat_mode": inv.spec.repeat_mode,
                "parameters": inv.spec.parameters,
                # Every other InvokeCommand parameter the call carried, as sent (issue 13).
                "options": dict(inv.spec.options),
                "stopped": inv.stop_all_s is not None or bool(inv.stops),
            }
            for inv in self.invocations.all
        ]
        if executions:
            for entry, inv in zip(invocations, self.invocations.all, strict=True):
                entry["executions"] = [
                    {"instance_id": e.instance_id, "status": e.status.value, "finish_s": e.finish_s}
                    for e in inv.executions(now_s)
                ]

        clock = {
            "now": iso_utc(now_s),
            "offset_s": self.clock.offset_s,
            "frozen": self.clock.frozen,
        }
        return {
            "regions": regions,
            "invocations": invocations,
            "clock": clock,
            "unauthenticated": dict(self.unauthenticated),
            "rejected": dict(self.rejected),
            "metadata": {"credential_fetches": self.metadata.fetches},
        }


def _execution_behaviour(config: EmulatorConfig, fleet: Fleet) -> ExecutionBehaviour:
    """The executions' behaviour from the config's fractions and the fleet file's settings."""
    codes = tuple(sorted(config.agent_failures))
    shares: list[float] = []
    total = 0.0
    for code in codes:
        total += config.agent_failures[code]
        shares.append(total)
    return ExecutionBehaviour(
        failure_codes=codes,
        failure_shares=tuple(shares) if total > 0 else (),
        output_bytes=config.output_bytes,
        terminate_running=config.stop_mode == "terminate",
        instances=fleet.behaviours,
    )


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated request as an action handler sees it."""

    world: World
    region: str
    params: Params
    now_s: float
    processing_s: float = 0.0  # InvokeCommand's in-flight time (ClientToken "still processing")

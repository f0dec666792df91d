"""Simulated time shared by fanout and the emulator: a rollout of hours runs in seconds.

`EmulatorClock` is a `FakeClock` (the runner's one time seam) whose sleeps jump to their
deadlines at once and move the in-process emulator's clock along through its control endpoint
(`POST /_emulator/clock`), after freezing it at the fake clock's start. Throttling windows,
executions, the quota day and STS expirations, which the emulator judges on its clock, then pass
exactly as fanout's waits do. Request signing still uses the real wall clock (the emulator
checks signatures against its real one), so nothing else needs faking.

`simulated_run` drives a rollout through the real path (`fanout.launch.start_run` / `resume_run`,
the client over HTTP on 127.0.0.1, a SQLite ledger file) on such a clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel

from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials, CredentialSource
from fanout.clock import FakeClock
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    Emulator,
    EmulatorConfig,
    running_emulator,
)
from fanout.launch import start_run
from fanout.ledger import LedgerStore, open_ledger
from fanout.request import ResumeRequest, RunRequest
from fanout.runner import RunOutcome, resume_run
from fanout.settings import Settings
from fanout.targets import Target

DEMO = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, source="test")


class EmulatorClock(FakeClock):
    """A FakeClock that carries the emulator's clock along (call `start` first, `close` last)."""

    __slots__ = ("_horizon", "_lock", "_session", "_url")

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(start=emulator.world.clock.now())
        self._url = f"{emulator.url}/_emulator/clock"
        self._session: aiohttp.ClientSession | None = None
        self._horizon: tuple[float, anyio.CancelScope] | None = None
        self._lock = anyio.Lock()

    def stop_at(self, when: float, scope: anyio.CancelScope) -> None:
        """Cancel `scope` instead of letting any sleep reach past `when` (wall time): nothing
        the simulated code does happens after it."""
        self._horizon = (when, scope)

    async def start(self) -> None:
        """Freeze the emulator's clock and read it: both clocks now agree."""
        self._session = aiohttp.ClientSession()
        state = await self._post({"freeze": True})
        self._wall = float(state["now_s"])

    async def close(self) -> None:
        """Close the control session."""
        if self._session is not None:
            await self._session.close()

    async def sleep(self, seconds: float) -> None:
        """Wait until `seconds` from now: move both clocks to that deadline unless another
        sleeper already moved them past it (deadlines, not sums: tasks sleeping at once wait
        together, as they would in real time)."""
        self.sleeps.append(seconds)
        deadline = self.time() + max(0.0, seconds)
        if self._horizon is not None and deadline > self._horizon[0]:
            self._horizon[1].cancel()
            await anyio.sleep_forever()
        async with self._lock:
            jump = deadline - self.time()
            if jump > 0:
                await self._post({"advance_s": jump})
                self.advance(jump)
        await anyio.lowlevel.checkpoint()

    async def advance_both(self, seconds: float) -> None:
        """Move both clocks without sleeping (time passing between two runs)."""
        await self._post({"advance_s": seconds})
        self.advance(seconds)

    async def _post(self, body: Mapping[str, Any]) -> dict[str, Any]:
        assert self._session is not None, "EmulatorClock.start() first"
        async with self._session.post(self._url, json=dict(body)) as resp:
            assert resp.status == 200, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data


@dataclass
class Simulation:
    """One emulator, one ledger file and one shared clock, for rollouts in simulated time."""

    emulator: Emulator
    clock: EmulatorClock
    ledger: Path
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Settings:
        """Settings pointing at the emulator and the ledger (poll every second)."""
        fields: dict[str, Any] = {
            "ledger": str(self.ledger),
            "endpoint": self.emulator.url,
            "poll_interval_s": 1.0,
            **overrides,
        }
        return Settings(**fields)

    def emit(self, kind: str, data: Mapping[str, object]) -> None:
        """Keep every run event."""
        self.events.append((kind, dict(data)))

    def store(self) -> LedgerStore:
        """The ledger."""
        return open_ledger(str(self.ledger))

    async def run(
        self,
        targets: list[Target],
        *,
        settings: Settings | None = None,
        credentials: CredentialSource = DEMO,
        spec: CommandSpec | None = None,
        **request: Any,
    ) -> RunOutcome:
        """`fanout run` through the real path, on the shared clock."""
        store = self.store()
        spec = spec or CommandSpec(DEMO_COMMAND_ID)
        try:
            return await start_run(
                settings or self.settings(),
                credentials,
                store,
                RunRequest(targets=tuple(targets), spec=spec, **request),
                emit=self.emit,
                handle_signals=False,
                clock=self.clock,
            )
        finally:
            store.close()

    async def resume(
        self,
        run_id: str,
        *,
        settings: Settings | None = None,
        credentials: CredentialSource = DEMO,
        **request: Any,
    ) -> RunOutcome:
        """`fanout resume` through the real path, on the shared clock."""
        store = self.store()
        try:
            return await resume_run(
                settings or self.settings(),
                credentials,
                store,
                ResumeRequest(run_id, **request),
                emit=self.emit,
                handle_signals=False,
                clock=self.clock,
            )
        finally:
            store.close()

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        """The data of every event of one kind, in order."""
        return [data for k, data in self.events if k == kind]


def fleet_targets(emulator: Emulator, region: str, n: int | None = None) -> list[Target]:
    """The first `n` instances of a region of the emulator's fleet, as targets."""
    instances = emulator.world.fleet.regions[region].instances
    return [Target(region, i.instance_id) for i in instances[:n]]


@asynccontextmanager
async def simulation(tmp_path: Path, **config: Any) -> AsyncIterator[Simulation]:
    """An emulator with these config fields, its clock shared with fanout's, a ledger file."""
    async with running_emulator(EmulatorConfig(**config)) as emulator:
        clock = EmulatorClock(emulator)
        await clock.start()
        try:
            yield Simulation(emulator, clock, tmp_path / "ledger.sqlite3")
        finally:
            await clock.close()

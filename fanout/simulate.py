"""`fanout simulate`: a whole rollout rehearsed against the emulator on simulated time.

The emulator runs in-process on the same `fanout.simtime.SimulatedLoop` as the runner, its clock
reading the runner's `SimulatedClock` (the simulated-time seam, used only here and in tests):
quota days, executions, bake times and poll intervals pass in simulated time and idle waits cost
no real time. With `emulator_process` it runs in a child process instead (`fanout.simpeer`), on
the same clock published to it, so the runner's own memory and CPU show alone. The rollout goes through the real path — `fanout.launch` and `fanout.runner`, the
client over HTTP on 127.0.0.1, a SQLite ledger file — with the operator's own request and
settings; only the endpoint, the credentials (the emulator's demo pair) and the ledger location
are the simulation's.

Kills: `kills` times, at seeded moments spread over the plan's ETA, the runner's task is
cancelled where it stands (calls in flight are abandoned, their answers lost) and the run is
resumed at once with `resume --force` semantics, as an operator would after a crash. A leg that
ends on the daily quota (exit 4, without `--wait-for-quota`) is resumed when the plan says the
quota frees, as `fanout resume` the next day would. At the end the invariants are checked from
the emulator's state (`fanout.rehearsal`).
"""

from __future__ import annotations

import contextlib
import random
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import anyio

from fanout.aliyun.credentials import Credentials
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    Emulator,
    EmulatorConfig,
    running_emulator,
)
from fanout.errors import ExitCode
from fanout.launch import prepare_run, store_and_drive
from fanout.ledger import NO_LEDGER, LedgerStore, RunState
from fanout.ledger.model import reported_state
from fanout.ledger.sqlite import SqliteLedger
from fanout.plan import parse_waves
from fanout.plan_summary import PLAN_CALL_LATENCY_S, plan_document
from fanout.rehearsal import (
    EtaCheck,
    RegionTimeline,
    calls_per_day,
    eta_check,
    invariant_problems,
    region_timelines,
    wave_finish,
)
from fanout.report_io import html_report, write_file
from fanout.request import ResumeRequest, RunRequest
from fanout.runner import Emit, RunOutcome, resume_run
from fanout.settings import Settings
from fanout.simpeer import EmulatorRecord, record
from fanout.simtime import SimulatedClock

__all__ = [
    "SIMULATION_CREDENTIALS",
    "FaultRates",
    "Rehearsal",
    "SimulationOptions",
    "rehearse",
    "simulation_fleet",
]

SIMULATION_CREDENTIALS = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, source="simulate")
_UNREACHABLE_CODE = "ClientNotRunning"  # the agent is not running: the command never ran
_MAX_LEGS = 1000  # kills + quota days + a margin: a rehearsal that loops is a bug, stopped here
_AFTER_QUOTA_S = 1.0
_STOP_POLL_S = 60.0  # a resume goes just after the quota frees, as a waiting runner does
_PEER_START_TIMEOUT_S = 600.0  # a child emulator builds its fleet first (1 M instances: ~1 min)
_PEER_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class FaultRates:
    """The faults the emulator injects, each a share (0..1), seeded."""

    exec_failure: float = 0.0  # executions exit non-zero
    unreachable: float = 0.0  # the agent does not run the command (ClientNotRunning)
    server_error: float = 0.0  # InternalError.Dispatch, HTTP 500
    throttle: float = 0.0  # Throttling, HTTP 400
    lost_answer: float = 0.0  # the call is applied, its answer lost


@dataclass(frozen=True, slots=True)
class SimulationOptions:
    """The emulated world a rehearsal runs in, and how it is disturbed."""

    folder: Path  # the ledger and the HTML report go here
    regions: tuple[str, ...] = ("cn-hangzhou",)
    instances_per_region: int = 100
    fleet_file: Path | None = None
    seed: int = 0
    exec_seconds: tuple[float, float] = (10.0, 600.0)
    faults: FaultRates = FaultRates()
    kills: int = 0
    time_scale: float = 1.0
    latency_ms: float = 20.0
    daily_quota: int = 5000  # the account's limit per region, as the emulator reports it
    emulator_process: bool = False  # the emulator in a child process (the runner measured alone)


@dataclass(frozen=True, slots=True)
class Rehearsal:
    """What a rehearsal did and showed."""

    run_id: str
    outcome: RunOutcome
    start_s: float
    end_s: float
    real_s: float
    legs: int
    kills: int
    targets: int
    timelines: tuple[RegionTimeline, ...]
    calls_per_day: Mapping[str, Mapping[int, int]]
    eta: EtaCheck
    problems: tuple[str, ...]
    ledger: Path
    report: Path
    plan: Mapping[str, Any]
    peak_rss_mb: float  # this process's peak while the rollout ran: the runner's own when
    emulator_process: bool  # the emulator ran as a child


def simulation_fleet(options: SimulationOptions) -> EmulatorConfig:
    """The emulator's configuration: the fleet, the execution times and the faults."""
    faults = options.faults
    return EmulatorConfig(
        regions=options.regions,
        instances_per_region=options.instances_per_region,
        fleet_file=options.fleet_file,
        seed=options.seed,
        exec_seconds=options.exec_seconds,
        exec_failure_fraction=faults.exec_failure,
        agent_failures={_UNREACHABLE_CODE: faults.unreachable} if faults.unreachable else {},
        error_rate=faults.server_error,
        throttle_rate=faults.throttle,
        accept_then_drop_rate=faults.lost_answer,
        fault_actions=frozenset({"InvokeCommand", "DescribeInvocations"}),
        latency_ms=options.latency_ms,
        daily_quota=options.daily_quota,
    )


async def rehearse(
    settings: Settings,
    request: RunRequest,
    options: SimulationOptions,
    clock: SimulatedClock,
    *,
    emit: Emit,
) -> Rehearsal:
    """Run `request` against an in-process emulator on `clock` and check what it did."""
    real_start = time.monotonic()
    options.folder.mkdir(parents=True, exist_ok=True)
    ledger_path = options.folder / "ledger.sqlite3"
    async with _emulator(options, clock) as emulator:
        settings = replace(
            settings,
            endpoint=emulator.url,
            ledger=str(ledger_path),
            # The one setting a rehearsal changes: nobody sends `fanout stop` to it, and a look
            # every simulated second would cost ~0.2 ms of real time each, 17 s per quota day.
            stop_poll_s=max(settings.stop_poll_s, _STOP_POLL_S),
        )
        start_s = clock.time()
        plan = plan_document(
            request.targets, {}, settings, {}, duplicates=0, now=start_s,
            waves=request.waves, wave_order=request.wave_order,
        )  # fmt: skip
        # synchronous=NORMAL: a rehearsal's kills cancel the runner in this process, they do
        # not cut the power; WAL keeps the file whole and every commit across a crash of the
        # process, and the fsync per commit (FULL, a real run's ledger) is ~a third of the
        # real time of a million-instance rehearsal (benchmarks/RESULTS.md).
        store = SqliteLedger(ledger_path, synchronous="NORMAL")
        try:
            kill_at = _kill_times(options, start_s, plan)
            outcome, legs = await _legs(settings, request, store, clock, kill_at, emit)
            end_s = clock.time()
            peak_rss_mb = _peak_rss_mb()
            report = options.folder / "report.html"
            write_file(report, html_report(store, outcome.run_id, now=end_s))
            return _findings(
                await emulator.record(end_s), store, settings, request, options, plan,
                _Run(outcome, legs, len(kill_at), start_s, end_s, real_start, report, peak_rss_mb),
            )  # fmt: skip
        finally:
            store.close()


class _Emulator(Protocol):
    """The emulator a rehearsal runs against, in this process or in a child."""

    @property
    def url(self) -> str:
        """Where it listens."""
        ...

    async def record(self, now_s: float) -> EmulatorRecord:
        """What it accepted, refused and finished."""
        ...


@dataclass(frozen=True, slots=True)
class _InProcess:
    emulator: Emulator

    @property
    def url(self) -> str:
        return self.emulator.url

    async def record(self, now_s: float) -> EmulatorRecord:
        return record(self.emulator.world, now_s)


@dataclass(frozen=True, slots=True)
class _Child:
    url: str
    pipe: Connection

    async def record(self, now_s: float) -> EmulatorRecord:
        self.pipe.send(("record", now_s))
        answer: EmulatorRecord = await anyio.to_thread.run_sync(self.pipe.recv)
        return answer


@asynccontextmanager
async def _emulator(options: SimulationOptions, clock: SimulatedClock) -> AsyncIterator[_Emulator]:
    """The emulator on the rehearsal's clock: in this process, or a child reading the clock
    from a file in the rehearsal's folder (`fanout.simpeer`)."""
    config = simulation_fleet(options)
    if not options.emulator_process:
        async with running_emulator(config, wall=clock.time) as emulator:
            yield _InProcess(emulator)
        return
    clock_file = options.folder / ".simulated-clock"
    clock.publish(clock_file)
    ours, theirs = socket.socketpair()
    # A fresh interpreter (no fork of a running loop, no re-import of the caller's __main__).
    process = subprocess.Popen(  # noqa: S603, ASYNC220 - our interpreter, no shell; a fork's time
        [sys.executable, "-m", "fanout.simpeer", str(clock_file), str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    pipe = Connection(ours.detach())
    try:
        pipe.send(replace(config, access_keys=dict(config.access_keys)))  # mappingproxy: no pickle
        url = await anyio.to_thread.run_sync(_first_answer, pipe, process)
        yield _Child(url, pipe)
    finally:
        await anyio.to_thread.run_sync(_stop_child, pipe, process)
        clock_file.unlink(missing_ok=True)


def _first_answer(pipe: Connection, process: subprocess.Popen[bytes]) -> str:
    """The child's URL, once its fleet is built; RuntimeError if it died first."""
    deadline = time.monotonic() + _PEER_START_TIMEOUT_S
    try:
        while not pipe.poll(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                break
        else:
            return str(pipe.recv())
    except (EOFError, OSError):
        pass
    msg = f"the simulation's emulator process did not start (exit {process.poll()})"
    raise RuntimeError(msg)


def _stop_child(pipe: Connection, process: subprocess.Popen[bytes]) -> None:
    """Ask the child to stop, then make sure it has."""
    with contextlib.suppress(OSError):  # it is gone already
        pipe.send(("stop",))
    pipe.close()
    try:
        process.wait(_PEER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True, slots=True)
class _Run:
    """How the simulated rollout went, before its findings."""

    outcome: RunOutcome
    legs: int
    kills: int
    start_s: float
    end_s: float
    real_start: float
    report: Path
    peak_rss_mb: float


def _kill_times(options: SimulationOptions, start_s: float, plan: Mapping[str, Any]) -> list[float]:
    """Seeded moments spread over the plan's finish, one per kill, in order."""
    finish_s = max((r["finish_after_s"] for r in plan["regions"].values()), default=0.0)
    rng = random.Random(f"kills:{options.seed}")
    span = max(finish_s, 60.0)
    return sorted(start_s + rng.uniform(0.0, span) for _ in range(options.kills))


async def _legs(
    settings: Settings,
    request: RunRequest,
    store: LedgerStore,
    clock: SimulatedClock,
    kill_at: list[float],
    emit: Emit,
) -> tuple[RunOutcome, int]:
    """Start the run, then resume it after every kill and every quota stop, until it ends."""
    run_id: list[str] = []

    def seen(kind: str, data: Mapping[str, object]) -> None:
        if kind == "run" and not run_id:
            run_id.append(str(data["run_id"]))
        emit(kind, data)

    params = request.spec.parameters or {}
    secrets = {k: params[k] for k in request.secret_keys if k in params}
    pending = list(kill_at)
    for leg in range(1, _MAX_LEGS + 1):
        outcome: RunOutcome | None = None
        with anyio.move_on_after(pending[0] - clock.time() if pending else float("inf")):
            if not run_id:
                outcome = await _start(settings, request, store, clock, seen)
            else:
                resume = ResumeRequest(
                    run_id[0],
                    secret_params=secrets,
                    wait_for_quota=request.wait_for_quota,
                    force_lease=True,  # the killed runner's lease, taken over as after a crash
                )
                outcome = await resume_run(
                    settings, SIMULATION_CREDENTIALS, store, resume,
                    emit=seen, handle_signals=False, clock=clock,
                )  # fmt: skip
        if outcome is None:  # killed
            emit("simulated_kill", {"at": clock.time(), "leg": leg})
            pending.pop(0)
            continue
        if outcome.exit_code is ExitCode.QUOTA and outcome.quota_frees_at is not None:
            await clock.sleep(max(0.0, outcome.quota_frees_at - clock.time()) + _AFTER_QUOTA_S)
            pending = [t for t in pending if t > clock.time()]
            continue
        return outcome, leg
    raise RuntimeError(f"the rehearsal did not end after {_MAX_LEGS} legs")


async def _start(
    settings: Settings, request: RunRequest, store: LedgerStore, clock: SimulatedClock, emit: Emit
) -> RunOutcome:
    """`fanout run`'s path: prepare (preflight, plan), store, drive."""
    prepared = await prepare_run(
        settings, SIMULATION_CREDENTIALS, request, reader=NO_LEDGER, clock=clock
    )
    return await store_and_drive(
        settings, SIMULATION_CREDENTIALS, store, prepared,
        emit=emit, handle_signals=False, clock=clock,
    )  # fmt: skip


def _findings(
    emulator: EmulatorRecord,
    store: LedgerStore,
    settings: Settings,
    request: RunRequest,
    options: SimulationOptions,
    plan: Mapping[str, Any],
    run: _Run,
) -> Rehearsal:
    """The invariants, the timeline, the calls per day and the ETA check."""
    outcome = run.outcome
    accepted = emulator.accepted
    stored_run = store.get_run(outcome.run_id)
    ledger_states = {
        (i.region, i.instance_id): reported_state(i.state, stored_run.state)
        for i in store.iter_instances(outcome.run_id)
    }
    quotas = dict.fromkeys(emulator.refused, options.daily_quota - settings.quota_reserve)
    problems = invariant_problems(
        accepted, emulator.refused, ledger_states, len(request.targets), quotas
    )
    if outcome.state is RunState.RUNNING:
        problems.append(f"the run did not end: {outcome.message}")
    finished = emulator.finished
    waves = {b.client_token: b.wave for b in store.load_batches(outcome.run_id)}
    planned = {r: float(e["finish_after_s"]) for r, e in plan["regions"].items()}
    simulated = {r: t - run.start_s for r, t in finished.items()}
    wave_gap_s = options.exec_seconds[1] + settings.poll_interval_s + (request.wave_wait_s or 0)
    replanned = _replanned(store, outcome.run_id, settings, quotas, wave_gap_s)
    eta = eta_check(
        planned,
        replanned,
        simulated,
        waves=len(parse_waves(request.waves, len(request.targets))) if request.waves else 1,
        poll_interval_s=settings.poll_interval_s,
        exec_max_s=options.exec_seconds[1],
        wave_wait_s=request.wave_wait_s or 0.0,
    )
    return Rehearsal(
        run_id=outcome.run_id,
        outcome=outcome,
        start_s=run.start_s,
        end_s=run.end_s,
        real_s=time.monotonic() - run.real_start,
        legs=run.legs,
        kills=run.kills,
        targets=len(request.targets),
        timelines=tuple(region_timelines(accepted, waves, quotas, finished)),
        calls_per_day=calls_per_day(accepted, run.start_s),
        eta=eta,
        problems=tuple(problems),
        ledger=Path(settings.ledger or ""),
        report=run.report,
        plan=plan,
        peak_rss_mb=run.peak_rss_mb,
        emulator_process=options.emulator_process,
    )


def _replanned(
    store: LedgerStore,
    run_id: str,
    settings: Settings,
    quotas: Mapping[str, int],
    wave_gap_s: float,
) -> dict[str, float]:
    """The estimate per region for the calls the quota was charged with (each batch's
    attempts: retries of lost answers and 5xx included, each counted before it was sent),
    wave by wave (`fanout.rehearsal.wave_finish`)."""
    calls: dict[int, dict[str, int]] = {}
    for batch in store.load_batches(run_id):
        shares = calls.setdefault(batch.wave, {})
        shares[batch.region] = shares.get(batch.region, 0) + max(batch.attempts, 1)
    throughput = settings.rate_per_s or settings.region_concurrency / PLAN_CALL_LATENCY_S
    return wave_finish(
        calls, {}, daily_quota=quotas, wave_gap_s=wave_gap_s, call_gap_s=1.0 / throughput
    )

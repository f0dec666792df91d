"""The runner: composes plan -> preflight -> gate -> invoke -> ledger -> results for one run.

`start_run` plans a new run and stores it; `resume_run` continues a stored one; both end in
`drive`, which owns the task group, the signal handling (first SIGINT/SIGTERM: stop dispatching,
let calls in flight finish, exit 5; second: leave at once — the write-ahead ledger stays
consistent), the quota wait and the final state and exit code.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import anyio
import structlog

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.credentials import Credentials
from fanout.errors import ExitCode, UsageError
from fanout.gate import Gate
from fanout.invoke import BatchEnd, CommandSpec, Dispatch, invoke_batch
from fanout.ledger import (
    AcquireLease,
    AppendEvent,
    BatchRecord,
    BatchState,
    GroupCommitter,
    InstanceRecord,
    InstanceState,
    LedgerStore,
    RunRecord,
    RunState,
    SetRun,
)
from fanout.plan import make_plan, parse_waves
from fanout.preflight import preflight_region
from fanout.results import Collector
from fanout.secrets import redact_params
from fanout.settings import Settings
from fanout.targets import Target

__all__ = [
    "Emit",
    "RunOutcome",
    "RunRequest",
    "drive",
    "preview_preflight",
    "resume_run",
    "start_run",
]

Emit = Callable[[str, Mapping[str, object]], None]
log = structlog.get_logger("fanout.runner")

_SPEC_OPTIONS = ("timed", "frequency", "repeat_mode", "timeout_s", "username", "working_dir")
_OPEN_BATCH_STATES = (BatchState.SENDING, BatchState.UNKNOWN, BatchState.PENDING)


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A new run: what to invoke where, and how."""

    targets: tuple[Target, ...]
    spec: CommandSpec
    secret_keys: tuple[str, ...] = ()
    waves: str | None = None
    preflight: bool = True
    wait: bool = False
    wait_for_quota: bool = False
    parent_run_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run (or this leg of it) ended."""

    run_id: str
    state: RunState
    exit_code: ExitCode
    message: str
    instances: Mapping[str, int] = field(default_factory=dict)
    quota_frees_at: float | None = None


def new_run_id(now: float) -> str:
    """Sortable and readable: r20261128-063512-a1b2c3."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
    return f"r{stamp}-{secrets.token_hex(3)}"


def _owner() -> str:
    """Who drives a run: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _client(settings: Settings, credentials: Credentials) -> EcsClient:
    """The one API client (one connection pool) of this process."""
    from pathlib import Path  # noqa: PLC0415

    return EcsClient(
        credentials,
        ClientOptions(
            endpoint=settings.endpoint,
            network=settings.network,
            signature="rpc" if settings.signature == "rpc" else "v3",
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            max_connections=max(settings.concurrency * 2, 16),
            ca_bundle=Path(settings.ca_bundle) if settings.ca_bundle else None,
        ),
    )


async def start_run(
    settings: Settings,
    credentials: Credentials,
    store: LedgerStore,
    request: RunRequest,
    *,
    emit: Emit,
    handle_signals: bool = True,
) -> RunOutcome:
    """Plan, preflight and store a new run, then drive it."""
    now = time.time()
    run_id = new_run_id(now)
    waves = parse_waves(request.waves, len(request.targets))
    plan = make_plan(run_id, request.targets, batch_size=settings.batch_size, waves=waves)
    account = settings.account or credentials.access_key_id
    async with _client(settings, credentials) as client:
        excluded: dict[tuple[str, str], str] = {}
        if request.preflight:
            excluded = await _preflight(client, request.targets)
        if excluded:
            kept = tuple(t for t in request.targets if (t.region, t.instance_id) not in excluded)
            waves = parse_waves(request.waves, len(kept)) if kept else ()
            plan = make_plan(run_id, kept, batch_size=settings.batch_size, waves=waves or None)
    run = RunRecord(
        run_id=run_id,
        created_at=now,
        updated_at=now,
        state=RunState.CREATED,
        command_id=request.spec.command_id,
        account=account,
        target_count=len(request.targets),
        parameters=redact_params(request.spec.parameters or {}, request.secret_keys),
        secret_keys=request.secret_keys,
        options=_options(request, settings),
        parent_run_id=request.parent_run_id,
    )
    batches = [
        BatchRecord(
            batch_id=b.batch_id,
            run_id=run_id,
            region=b.region,
            seq=b.seq,
            wave=b.wave,
            instance_ids=b.instance_ids,
            client_token=b.client_token,
            state=BatchState.PENDING,
        )
        for b in plan.batches
    ]
    extra = [
        InstanceRecord(run_id, region, iid, None, InstanceState.EXCLUDED, reason=reason)
        for (region, iid), reason in excluded.items()
    ]
    await anyio.to_thread.run_sync(store.create_run, run, batches, extra)
    emit(
        "run",
        {
            "run_id": run_id,
            "targets": len(request.targets),
            "batches": len(batches),
            "excluded": len(excluded),
        },
    )
    return await drive(
        settings,
        credentials,
        store,
        run,
        request.spec,
        emit=emit,
        wait_for_quota=request.wait_for_quota,
        handle_signals=handle_signals,
    )


async def preview_preflight(
    settings: Settings, credentials: Credentials, targets: Sequence[Target]
) -> dict[tuple[str, str], str]:
    """The preflight of `fanout plan`: read-only Describe calls, nothing stored."""
    async with _client(settings, credentials) as client:
        return await _preflight(client, targets)


async def _preflight(client: EcsClient, targets: Sequence[Target]) -> dict[tuple[str, str], str]:
    """(region, id) -> reason for every target InvokeCommand would refuse."""
    by_region: dict[str, list[str]] = {}
    for t in targets:
        by_region.setdefault(t.region, []).append(t.instance_id)
    excluded: dict[tuple[str, str], str] = {}
    for region, ids in sorted(by_region.items()):
        found = await preflight_region(client, region, ids)
        excluded.update({(region, iid): reason for iid, reason in found.items()})
    return excluded


def _options(request: RunRequest, settings: Settings) -> dict[str, object]:
    """What a resume needs to send identical requests (secret values are not stored)."""
    spec = asdict(request.spec)
    spec.pop("command_id")
    spec["had_parameters"] = spec.pop("parameters") is not None
    return {
        "spec": spec,
        "waves": request.waves,
        "preflight": request.preflight,
        "wait": request.wait,
        "batch_size": settings.batch_size,
    }


async def resume_run(
    settings: Settings,
    credentials: Credentials,
    store: LedgerStore,
    run_id: str,
    *,
    secret_params: Mapping[str, str],
    emit: Emit,
    wait_for_quota: bool = False,
    wait: bool | None = None,
    handle_signals: bool = True,
) -> RunOutcome:
    """Continue a stored run with the same command, parameters and tokens."""
    run = await anyio.to_thread.run_sync(store.get_run, run_id)
    missing = [k for k in run.secret_keys if k not in secret_params]
    if missing:
        msg = f"run {run_id} has secret parameters that are not stored: give --param for {', '.join(missing)}"
        raise UsageError(msg)
    params = {**run.parameters, **{k: secret_params[k] for k in run.secret_keys}}
    raw_spec = dict(run.options.get("spec", {}))  # type: ignore[call-overload]
    spec = CommandSpec(
        command_id=run.command_id,
        parameters=params if (params or raw_spec.get("had_parameters")) else None,
        **{k: v for k, v in raw_spec.items() if k in _SPEC_OPTIONS},
    )
    emit("resume", {"run_id": run_id, "state": run.state.value})
    return await drive(
        settings,
        credentials,
        store,
        run,
        spec,
        emit=emit,
        wait_for_quota=wait_for_quota,
        handle_signals=handle_signals,
        wait=wait,
    )


_NO_WAIT_REPEAT_MODES = frozenset({"Period", "EveryReboot", "NextRebootOnly", "DryRun"})


def waits_for_results(spec: CommandSpec) -> bool:
    """False for periodic and dry-run invocations: they are recorded, not waited for."""
    return not (spec.timed or spec.frequency or spec.repeat_mode in _NO_WAIT_REPEAT_MODES)


@dataclass(slots=True)
class _Tally:
    """Counts of batch ends in this leg of the run; hands accepted ones to the collector."""

    emit: Emit
    collector: Collector | None = None
    ends: dict[BatchEnd, int] = field(default_factory=dict)

    def add(self, record: BatchRecord, end: BatchEnd, _note: str | None) -> None:
        self.ends[end] = self.ends.get(end, 0) + 1
        if end is BatchEnd.ACCEPTED and self.collector is not None and record.invoke_id:
            self.collector.follow(record, record.invoke_id)
        self.emit(
            "batch",
            {
                "run_id": record.run_id,
                "batch_id": record.batch_id,
                "region": record.region,
                "outcome": end.value,
                "invoke_id": record.invoke_id,
                "instances": len(record.instance_ids),
            },
        )


async def drive(
    settings: Settings,
    credentials: Credentials,
    store: LedgerStore,
    run: RunRecord,
    spec: CommandSpec,
    *,
    emit: Emit,
    wait_for_quota: bool,
    handle_signals: bool,
    wait: bool | None = None,
) -> RunOutcome:
    """Dispatch every open batch of a stored run and record how it ended."""
    committer = GroupCommitter(store)
    tally = _Tally(emit)
    wait = bool(run.options.get("wait") if wait is None else wait) and waits_for_results(spec)
    gate = Gate(
        concurrency=settings.concurrency,
        region_concurrency=settings.region_concurrency,
        rate_per_s=settings.rate_per_s,
    )
    outcome: RunOutcome | None = None
    async with _client(settings, credentials) as client, anyio.create_task_group() as tg:
        tg.start_soon(committer.run)
        d = Dispatch(
            run_id=run.run_id,
            account=run.account,
            spec=spec,
            client=client,
            ledger=committer,
            gate=gate,
            quota=settings.quota,
            max_attempts=settings.max_attempts,
            on_end=tally.add,
        )
        await _take_lease(committer, run, settings)
        now = time.time()
        await committer.submit(
            SetRun(run.run_id, RunState.RUNNING, now),
            AppendEvent(run.run_id, "start", now, {"owner": _owner()}),
        )
        async with anyio.create_task_group() as helpers:
            if handle_signals:
                helpers.start_soon(_watch_signals, d, tg.cancel_scope)
            helpers.start_soon(_renew_lease, committer, run, settings)
            batches = await _reload(store, run.run_id)
            if wait:
                tally.collector = Collector(
                    run.run_id,
                    client,
                    committer,
                    settings.poll_interval_s,
                    settings.max_output_bytes,
                )
                helpers.start_soon(tally.collector.run)
                for b in batches:
                    if b.state is BatchState.ACCEPTED and b.invoke_id:
                        tally.collector.follow(b, b.invoke_id)
            await _dispatch_all(
                d,
                settings,
                store,
                batches,
                wait_for_quota=wait_for_quota,
                emit=emit,
                collector=tally.collector,
            )
            helpers.cancel_scope.cancel()
        outcome = await _finish(d, store, run, committer)
        tg.cancel_scope.cancel()
    if outcome is None:  # a second signal: left at once; the ledger holds every intent
        outcome = RunOutcome(run.run_id, RunState.RUNNING, ExitCode.INTERRUPTED, "left at once")
    emit(
        "end",
        {
            "run_id": run.run_id,
            "state": outcome.state.value,
            "exit_code": int(outcome.exit_code),
            "instances": dict(outcome.instances),
        },
    )
    return outcome


async def _take_lease(committer: GroupCommitter, run: RunRecord, settings: Settings) -> None:
    """Become the one runner of this run, or refuse with who holds it."""
    now = time.time()
    granted, holder, until = await _lease(
        committer, AcquireLease(run.run_id, _owner(), now + settings.lease_s, now)
    )
    if not granted and _holder_is_gone(holder):
        granted, holder, until = await _lease(
            committer, AcquireLease(run.run_id, _owner(), now + settings.lease_s, now, force=True)
        )
    if not granted:
        when = datetime.fromtimestamp(until or now, UTC).isoformat(timespec="seconds")
        msg = f"run {run.run_id} is being driven by {holder} (lease until {when})"
        raise UsageError(msg)


async def _lease(
    committer: GroupCommitter, op: AcquireLease
) -> tuple[bool, str | None, float | None]:
    """Apply one lease operation: (granted, holder, until)."""
    (result,) = await committer.submit(op)
    assert isinstance(result, tuple)
    granted, holder, until = result
    return bool(granted), holder, until


def _holder_is_gone(holder: str | None) -> bool:
    """True if the lease holder was a process on this host that no longer exists."""
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def _renew_lease(committer: GroupCommitter, run: RunRecord, settings: Settings) -> None:
    """Keep the lease while this process drives the run."""
    while True:
        await anyio.sleep(settings.lease_s / 3)
        now = time.time()
        committer.post(AcquireLease(run.run_id, _owner(), now + settings.lease_s, now))


async def _watch_signals(d: Dispatch, everything: anyio.CancelScope) -> None:
    """First SIGINT/SIGTERM: stop dispatching; second: leave at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if d.stopping:
                everything.cancel()
                return
            d.stop()
            log.warning("stopping", run_id=d.run_id, hint="again to leave at once")


async def _dispatch_all(
    d: Dispatch,
    settings: Settings,
    store: LedgerStore,
    batches: Sequence[BatchRecord],
    *,
    wait_for_quota: bool,
    emit: Emit,
    collector: Collector | None,
) -> None:
    """Dispatch the open batches wave by wave, results in between; wait out the quota if asked."""
    open_batches = [b for b in batches if b.state in _OPEN_BATCH_STATES]
    # Batches that may already have run are resolved first (same token, same answer).
    open_batches.sort(key=lambda b: (b.wave, b.state is BatchState.PENDING, b.seq))
    for wave in sorted({b.wave for b in open_batches}):
        todo = [b for b in open_batches if b.wave == wave]
        while todo and not d.halted:
            await _dispatch(d, settings, todo)
            todo = [
                b
                for b in await _reload(store, d.run_id)
                if b.state in _OPEN_BATCH_STATES and b.wave == wave
            ]
            if not todo or not d.quota_blocked or not wait_for_quota:
                break
            await _sleep_for_quota(d, store, emit)
        if collector is not None:
            await collector.drain(d.halt_event)
        if d.halted or (d.quota_blocked and not wait_for_quota):
            return
    if collector is not None:  # accepted earlier (resume) and not final yet
        await collector.drain(d.halt_event)


async def _reload(store: LedgerStore, run_id: str) -> list[BatchRecord]:
    """The run's batches as stored now."""
    return await anyio.to_thread.run_sync(store.load_batches, run_id)


# Workers per concurrency slot: while one batch's call is on the wire, the next batch's intent
# is being committed, so the slots stay busy (the gate still bounds calls in flight).
_WORKERS_PER_SLOT = 2


async def _dispatch(d: Dispatch, settings: Settings, batches: Sequence[BatchRecord]) -> None:
    """Invoke `batches` with workers pulling from one queue; the gate bounds calls in flight."""
    queue = deque(batches)
    await d.ledger.flush()

    async def worker() -> None:
        while queue and not d.halted:
            batch = queue.popleft()
            if batch.region in d.quota_blocked:
                continue
            await invoke_batch(d, batch)

    async with anyio.create_task_group() as tg:
        for _ in range(min(settings.concurrency * _WORKERS_PER_SLOT, len(queue))):
            tg.start_soon(worker)
    await d.ledger.flush()


async def _sleep_for_quota(d: Dispatch, store: LedgerStore, emit: Emit) -> None:
    """Sleep until every blocked region can make a call again."""
    now = time.time()
    start = d.quota.window_start(now)
    frees = [
        d.quota.frees_at(
            await anyio.to_thread.run_sync(store.quota_times, d.account, region, start), now
        )
        for region in d.quota_blocked
    ]
    until = max(frees, default=now)
    emit("quota_wait", {"run_id": d.run_id, "regions": sorted(d.quota_blocked), "until": until})
    await d.sleep(max(0.0, until - now) + 1.0)
    d.quota_blocked.clear()


async def _finish(
    d: Dispatch, store: LedgerStore, run: RunRecord, committer: GroupCommitter
) -> RunOutcome:
    """Decide the run's state and exit code from the ledger, and record it."""
    await committer.flush()
    counts_by_region = await anyio.to_thread.run_sync(store.instance_counts, run.run_id)
    counts: dict[str, int] = {}
    for per_state in counts_by_region.values():
        for state, n in per_state.items():
            counts[state] = counts.get(state, 0) + n
    state, code, message = _verdict(d, counts)
    frees_at = None
    if state is RunState.QUOTA:
        now = time.time()
        start = d.quota.window_start(now)
        frees_at = max(
            d.quota.frees_at(store.quota_times(d.account, region, start), now)
            for region in d.quota_blocked
        )
        message += f"; capacity frees at {datetime.fromtimestamp(frees_at, UTC).isoformat(timespec='seconds')}"
    now = time.time()
    await committer.submit(
        SetRun(run.run_id, state, now, exit_code=int(code)),
        AppendEvent(run.run_id, "end", now, {"state": state.value, "exit_code": int(code)}),
        AcquireLease(run.run_id, _owner(), now, now),  # release: expire our lease now
    )
    committer.close()
    return RunOutcome(run.run_id, state, code, message, counts, frees_at)


def _verdict(d: Dispatch, counts: Mapping[str, int]) -> tuple[RunState, ExitCode, str]:
    """The run's state, exit code and a one-line summary."""
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if d.fatal is not None:
        return RunState.FATAL, ExitCode.FATAL_API, f"stopped by a fatal API error: {d.fatal}"
    if d.stopping:
        return RunState.INTERRUPTED, ExitCode.INTERRUPTED, f"interrupted ({summary}); resumable"
    open_left = counts.get(InstanceState.PENDING, 0)
    if d.quota_blocked and open_left:
        return (
            RunState.QUOTA,
            ExitCode.QUOTA,
            f"daily quota spent with {open_left} instances not invoked",
        )
    good = counts.get(InstanceState.SUCCEEDED, 0) + counts.get(InstanceState.INVOKED, 0)
    if good == sum(counts.values()):
        return RunState.FINISHED, ExitCode.OK, f"finished: {summary}"
    return RunState.FINISHED, ExitCode.FINISHED_WITH_FAILURES, f"finished with problems: {summary}"

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import anyio
import structlog

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.control import STOP_REQUEST, run_spec
from fanout.errors import ExitCode, UsageError
from fanout.gate import Gate
from fanout.invoke import Dispatch
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
from fanout.preflight import check_command, preflight_region
from fanout.progress import planned_regions, stored_regions
from fanout.request import RunRequest
from fanout.results import Collector
from fanout.secrets import redact_params
from fanout.settings import Settings
from fanout.targets import Target
from fanout.waves import (
    ErrorBudget,
    Leg,
    dispatch_waves,
    parse_max_errors,
    quota_frees_at,
    verdict,
    waits_for_results,
)

__all__ = [
    "Emit",
    "RunOutcome",
    "drive",
    "preview_preflight",
    "resume_run",
    "start_run",
]

Emit = Callable[[str, Mapping[str, object]], None]
log = structlog.get_logger("fanout.runner")


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


def client_for(settings: Settings, credentials: Credentials) -> EcsClient:
    """The one API client (one connection pool) of this process."""
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
    async with client_for(settings, credentials) as client:
        # The command check is one free DescribeCommands per region: on even with --no-preflight.
        await check_command(
            client,
            [t.region for t in request.targets],
            request.spec,
            content_limit_bytes=settings.content_limit_bytes,
            now_s=now,
        )
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
    used = await anyio.to_thread.run_sync(
        store.quota_used, account, settings.quota.window_start(now)
    )
    emit(
        "run",
        {
            "run_id": run_id,
            "targets": len(request.targets),
            "batches": len(batches),
            "excluded": len(excluded),
            "allowed": parse_max_errors(request.max_errors, len(request.targets)),
            "regions": planned_regions(batches, excluded, settings.quota, used),
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
    settings: Settings,
    credentials: Credentials,
    targets: Sequence[Target],
    spec: CommandSpec | None = None,
    *,
    instances: bool = True,
) -> dict[tuple[str, str], str]:
    """The preflight of `fanout plan`: read-only Describe calls, nothing stored.

    Checks the command (`spec`) the way `start_run` does, then the instances unless told not to.
    """
    async with client_for(settings, credentials) as client:
        if spec is not None:
            await check_command(
                client,
                [t.region for t in targets],
                spec,
                content_limit_bytes=settings.content_limit_bytes,
                now_s=time.time(),
            )
        return await _preflight(client, targets) if instances else {}


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
        "max_errors": request.max_errors,
        "pause_after_wave": request.pause_after_wave,
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
    force_lease: bool = False,
) -> RunOutcome:
    """Continue a stored run with the same command, parameters and tokens.

    `force_lease` takes the run over even from a live runner (`resume --force`).
    """
    run = await anyio.to_thread.run_sync(store.get_run, run_id)
    spec = run_spec(run, secret_params)
    regions = await anyio.to_thread.run_sync(
        stored_regions, store, run, settings.quota, time.time()
    )
    allowed = parse_max_errors(_text_option(run, "max_errors"), run.target_count)
    emit(
        "resume",
        {"run_id": run_id, "state": run.state.value, "allowed": allowed, "regions": regions},
    )
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
        force_lease=force_lease,
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
    force_lease: bool = False,
) -> RunOutcome:
    """Dispatch every open batch of a stored run, follow the results, record how it ended."""
    committer = GroupCommitter(store)
    wait = bool(run.options.get("wait") if wait is None else wait) and waits_for_results(spec)
    gate = Gate(
        concurrency=settings.concurrency,
        region_concurrency=settings.region_concurrency,
        rate_per_s=settings.rate_per_s,
    )
    allowed = parse_max_errors(_text_option(run, "max_errors"), run.target_count)
    outcome: RunOutcome | None = None
    async with client_for(settings, credentials) as client, anyio.create_task_group() as tg:
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
        )
        leg = Leg(d, emit, ErrorBudget(allowed))
        d.on_end = leg.batch_ended
        await _take_lease(committer, run, settings, local=store.local, force=force_lease)
        seen = await anyio.to_thread.run_sync(store.events, run.run_id)
        last_event = seen[-1][0] if seen else 0
        now = time.time()
        await committer.submit(
            SetRun(run.run_id, RunState.RUNNING, now),
            AppendEvent(run.run_id, "start", now, {"owner": _owner()}),
        )
        async with anyio.create_task_group() as helpers:
            if handle_signals:
                helpers.start_soon(_watch_signals, d, tg.cancel_scope)
            helpers.start_soon(_keep_lease, committer, store, run, settings, d, last_event)
            batches = await anyio.to_thread.run_sync(store.load_batches, run.run_id)
            if wait:
                leg.collector = Collector(
                    client,
                    committer,
                    spec.command_id,
                    settings.poll_interval_s,
                    settings.max_output_bytes,
                    on_final=leg.instance_final,
                    describe_rate_per_s=settings.describe_rate_per_s,
                )
                helpers.start_soon(leg.collector.run)
                for b in batches:
                    if b.state is BatchState.ACCEPTED and b.invoke_id:
                        leg.collector.follow(b, b.invoke_id)
            await dispatch_waves(
                leg,
                store,
                batches,
                workers=settings.concurrency,
                wait_for_quota=wait_for_quota,
                pause_after_wave=bool(run.options.get("pause_after_wave")),
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


def _text_option(run: RunRecord, name: str) -> str | None:
    """A string option stored with the run."""
    value = run.options.get(name)
    return value if isinstance(value, str) else None


async def _take_lease(
    committer: GroupCommitter, run: RunRecord, settings: Settings, *, local: bool, force: bool
) -> None:
    """Become the one runner of this run, or refuse with who holds it.

    A dead holder on this host is taken over at once only for a host-local ledger: host names
    are not unique across the hosts sharing a PostgreSQL ledger (which checks its holders'
    connections itself).
    """
    now = time.time()
    granted, holder, until = await _lease(
        committer, AcquireLease(run.run_id, _owner(), now + settings.lease_s, now, force=force)
    )
    if not granted and local and _holder_is_gone(holder):
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


# How often the runner looks for a `fanout stop` request in the ledger.
_STOP_POLL_S = 1.0


async def _keep_lease(
    committer: GroupCommitter,
    store: LedgerStore,
    run: RunRecord,
    settings: Settings,
    d: Dispatch,
    last_event: int,
) -> None:
    """Renew the lease while this process drives the run; obey `fanout stop` requests."""
    renewed = time.monotonic()
    while True:
        await anyio.sleep(_STOP_POLL_S)
        events = await anyio.to_thread.run_sync(store.events, run.run_id, last_event)
        if events:
            last_event = events[-1][0]
            if any(kind == STOP_REQUEST for _id, _ts, kind, _data in events):
                d.stop(requested=True)
                log.warning("stop requested", run_id=run.run_id)
        if time.monotonic() - renewed >= settings.lease_s / 3:
            renewed = time.monotonic()
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
    frees_at = await quota_frees_at(d, store) if d.quota_blocked else None
    state, code, message = verdict(d, counts, frees_at)
    now = time.time()
    await committer.submit(
        SetRun(run.run_id, state, now, exit_code=int(code)),
        AppendEvent(run.run_id, "end", now, {"state": state.value, "exit_code": int(code)}),
        AcquireLease(run.run_id, _owner(), now, now),  # release: expire our lease now
    )
    committer.close()
    return RunOutcome(run.run_id, state, code, message, counts, frees_at)

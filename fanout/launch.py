"""Launch: a new run from its request — plan, command check, preflight, store — then drive it.

`start_run` is where a `RunRequest` becomes a run: the command resolved in every target region
(`fanout.commands`: free DescribeCommands calls, each region's own CommandId), the preflight
exclusions, the plan (batches and ClientTokens), the run's ledger rows — each batch with its
region's CommandId, None where `--script` still has to create the command — and then
`fanout.runner.drive`, which creates those before dispatching. `preview_preflight` is the same
read-only part for `fanout plan`: it reports what `--script` would create, and creates nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import anyio

from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import CredentialSource
from fanout.aliyun.keys import account_key
from fanout.clock import SYSTEM_CLOCK, Clock
from fanout.commands import Resolution, resolve_commands
from fanout.errors import UsageError
from fanout.fingerprints import check_secret_lengths, new_salt, secret_fingerprints
from fanout.ledger import (
    BatchRecord,
    BatchState,
    InstanceRecord,
    InstanceState,
    LedgerStore,
    RunRecord,
    RunState,
)
from fanout.linked import LinkedRuns
from fanout.plan import Plan, make_plan, parse_waves
from fanout.preflight import preflight_targets
from fanout.quota import RegionQuotas
from fanout.redaction import redact_params
from fanout.request import ResumeRequest, RunRequest
from fanout.runner import (
    DriveOptions,
    Emit,
    RunOutcome,
    account_quotas,
    client_for,
    drive,
    resume_run,
)
from fanout.settings import Settings
from fanout.sources import CommandIdSource, CommandSource, label, source_options
from fanout.tally import planned_regions
from fanout.targets import Target
from fanout.validate import check_spec
from fanout.waves import parse_max_errors

__all__ = [
    "Confirm",
    "PreparedRun",
    "batch_records",
    "linked_runs",
    "new_run_id",
    "prepare_run",
    "preview_preflight",
    "start_run",
    "store_and_drive",
]

# Shown the plan that will be sent and the preflight's exclusions; raises DeclinedError to stop.
Confirm = Callable[[Plan, Mapping[tuple[str, str], str]], None]


def new_run_id(now: float) -> str:
    """Sortable and readable: r20261128-063512-a1b2c3."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
    return f"r{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A new run checked and planned, not stored yet: what `store_and_drive` writes and drives."""

    request: RunRequest
    run: RunRecord
    batches: tuple[BatchRecord, ...]
    excluded: tuple[InstanceRecord, ...]  # by preflight, with their reasons
    resolution: Resolution  # the command of each region
    quotas: RegionQuotas  # each region's daily limit (the account's own, or configured)


async def prepare_run(
    settings: Settings,
    credentials: CredentialSource,
    request: RunRequest,
    *,
    reader: LedgerStore,
    clock: Clock = SYSTEM_CLOCK,
    confirm: Confirm | None = None,
) -> PreparedRun:
    """Everything before the run is stored: the offline checks, the overlap with runs in
    progress and the commands a script made (read from `reader`: `NO_LEDGER` when there is no
    ledger yet), the command check and the preflight (free Describe calls), the plan, and the
    confirmation (`confirm`, which may decline). Nothing is written, so a refusal leaves
    nothing behind."""
    now = clock.time()
    check_spec(request.spec, now)
    check_secret_lengths(
        request.spec.parameters, request.secret_keys, allow_short=request.allow_short_secret
    )
    if not request.allow_overlap:  # before any call: a ledger read only
        await anyio.to_thread.run_sync(refuse_overlap, reader, request)
    run_id = new_run_id(now)
    account = settings.account or account_key(credentials)
    plan, excluded, resolution, quotas = await _checked_plan(
        settings, credentials, reader, request, run_id, now, clock
    )
    if confirm is not None:
        confirm(plan, excluded)
    return PreparedRun(
        request=request,
        run=_run_record(request, settings, run_id, account, now),
        batches=tuple(batch_records(run_id, plan, resolution.command_ids())),
        excluded=tuple(
            InstanceRecord(run_id, region, iid, None, InstanceState.EXCLUDED, reason=reason)
            for (region, iid), reason in excluded.items()
        ),
        resolution=resolution,
        quotas=quotas,
    )


async def store_and_drive(
    settings: Settings,
    credentials: CredentialSource,
    store: LedgerStore,
    prepared: PreparedRun,
    *,
    emit: Emit,
    handle_signals: bool = True,
    clock: Clock = SYSTEM_CLOCK,
) -> RunOutcome:
    """Store a prepared run, then drive it."""
    run, request = prepared.run, prepared.request
    await anyio.to_thread.run_sync(store.create_run, run, prepared.batches, prepared.excluded)
    used = await anyio.to_thread.run_sync(
        store.quota_used, run.account, settings.quota.window_start(clock.time())
    )
    excluded = {(i.region, i.instance_id): i.reason or "" for i in prepared.excluded}
    emit(
        "run",
        {
            "run_id": run.run_id,
            "targets": len(request.targets),
            "batches": len(prepared.batches),
            "excluded": len(excluded),
            "allowed": parse_max_errors(request.max_errors, len(request.targets)),
            "regions": planned_regions(prepared.batches, excluded, prepared.quotas, used),
            "command": prepared.resolution.summary(),
        },
    )
    options = DriveOptions(
        wait_for_quota=request.wait_for_quota,
        handle_signals=handle_signals,
        clock=clock,
        not_after=request.not_after,
        quotas=prepared.quotas,
        linked=linked_runs(settings, credentials, store, clock, handle_signals=handle_signals),
        stored=prepared.batches,
    )
    return await drive(settings, credentials, store, run, request.spec, emit=emit, options=options)


def linked_runs(
    settings: Settings,
    credentials: CredentialSource,
    store: LedgerStore,
    clock: Clock,
    *,
    handle_signals: bool = False,
) -> LinkedRuns:
    """How a run starts and resumes its linked runs (wave checks, the rollback on halt): as
    any run, in this process, without asking. A wave check runs inside its run's leg, whose
    signal handling covers it (a second Ctrl-C leaves at once, the ledger consistent); the
    rollback comes after the run's leg and handles signals itself when `handle_signals`."""

    async def start(request: RunRequest, emit: Emit) -> RunOutcome:
        own_signals = handle_signals and request.kind == "rollback"
        return await start_run(
            settings,
            credentials,
            store,
            request,
            emit=emit,
            handle_signals=own_signals,
            clock=clock,
        )

    async def resume(run_id: str, emit: Emit) -> RunOutcome:
        return await resume_run(
            settings,
            credentials,
            store,
            ResumeRequest(run_id),
            emit=emit,
            handle_signals=False,
            clock=clock,
        )

    return LinkedRuns(start=start, resume=resume, store=store)


async def start_run(
    settings: Settings,
    credentials: CredentialSource,
    store: LedgerStore,
    request: RunRequest,
    *,
    emit: Emit,
    handle_signals: bool = True,
    clock: Clock = SYSTEM_CLOCK,
    confirm: Confirm | None = None,
) -> RunOutcome:
    """Check, plan and preflight a new run, then store and drive it.

    `confirm` sees the plan as it will be sent (after the preflight's exclusions) before
    anything is stored or sent; it raises `DeclinedError` to stop there.
    """
    prepared = await prepare_run(
        settings, credentials, request, reader=store, clock=clock, confirm=confirm
    )
    return await store_and_drive(
        settings,
        credentials,
        store,
        prepared,
        emit=emit,
        handle_signals=handle_signals,
        clock=clock,
    )


# Runs that may still invoke their open instances (a resume continues them).
_IN_PROGRESS = frozenset(
    {RunState.CREATED, RunState.RUNNING, RunState.QUOTA, RunState.INTERRUPTED, RunState.HALTED}
)
# Instance states another run may still invoke or is running.
_OPEN = frozenset({InstanceState.PENDING, InstanceState.INVOKED})


def refuse_overlap(store: LedgerStore, request: RunRequest) -> None:
    """Refuse a run whose targets are open instances of another run in progress on this ledger
    (two rollouts would fight over them); the run a retry retries is not another run."""
    wanted = {(t.region, t.instance_id) for t in request.targets}
    for other in store.list_runs(limit=1000):
        if other.state not in _IN_PROGRESS or other.run_id == request.parent_run_id:
            continue
        shared = [
            rec.instance_id
            for rec in store.iter_instances(other.run_id)
            if rec.state in _OPEN and (rec.region, rec.instance_id) in wanted
        ]
        if shared:
            msg = (
                f"{len(shared)} target(s) (e.g. {shared[0]}) belong to run {other.run_id}, "
                f"still {other.state.value}: finish, stop or retry it first, or add "
                "--allow-overlap"
            )
            raise UsageError(msg)


def _run_record(
    request: RunRequest, settings: Settings, run_id: str, account: str, now: float
) -> RunRecord:
    """The new run's ledger row (secret parameter values redacted)."""
    return RunRecord(
        run_id=run_id,
        created_at=now,
        updated_at=now,
        state=RunState.CREATED,
        command_id=label(request.command_source),
        account=account,
        target_count=len(request.targets),
        parameters=redact_params(request.spec.parameters or {}, request.secret_keys),
        secret_keys=request.secret_keys,
        options=_options(request, settings),
        parent_run_id=request.parent_run_id,
    )


async def _checked_plan(
    settings: Settings,
    credentials: CredentialSource,
    store: LedgerStore,
    request: RunRequest,
    run_id: str,
    now: float,
    clock: Clock,
) -> tuple[Plan, dict[tuple[str, str], str], Resolution, RegionQuotas]:
    """The run's plan after the command check and the preflight, with the exclusions, the
    command of each region and the regions' daily limits (read before the first call)."""
    async with client_for(settings, credentials, clock) as client:
        # The command check is one free DescribeCommands per region: on even with --no-preflight.
        resolution = await resolve_commands(
            client,
            store,
            request.command_source,
            [t.region for t in request.targets],
            account=settings.account or account_key(credentials),
            spec=request.spec,
            content_limit_bytes=settings.content_limit_bytes,
            now_s=now,
        )
        for linked in (request.wave_check, request.on_halt):  # refused now, not at a halt
            if linked is not None:
                await resolve_commands(
                    client,
                    store,
                    linked,
                    [t.region for t in request.targets],
                    account=settings.account or account_key(credentials),
                    spec=CommandSpec(label(linked)),
                    content_limit_bytes=settings.content_limit_bytes,
                    now_s=now,
                )
        # The account's own daily limit per region (free), read before the first call.
        quotas = await account_quotas(settings, client, [t.region for t in request.targets])
        excluded = (
            await preflight_targets(
                client, request.targets, concurrency=settings.preflight_concurrency
            )
            if request.preflight
            else {}
        )
    kept = tuple(t for t in request.targets if (t.region, t.instance_id) not in excluded)
    waves = parse_waves(request.waves, len(kept)) if kept else ()
    plan = make_plan(
        run_id,
        kept,
        batch_size=settings.batch_size,
        waves=waves or None,
        wave_order=request.wave_order,
    )
    return plan, excluded, resolution, quotas


def batch_records(
    run_id: str, plan: Plan, command_ids: Mapping[str, str | None] | None = None
) -> list[BatchRecord]:
    """The plan's batches as ledger rows, every one pending, with its region's CommandId
    (None: not known yet; the run's own command is filled in when it is driven)."""
    ids = command_ids or {}
    return [
        BatchRecord(
            batch_id=b.batch_id,
            run_id=run_id,
            region=b.region,
            seq=b.seq,
            wave=b.wave,
            instance_ids=b.instance_ids,
            client_token=b.client_token,
            state=BatchState.PENDING,
            command_id=ids.get(b.region),
        )
        for b in plan.batches
    ]


async def preview_preflight(
    settings: Settings,
    credentials: CredentialSource,
    targets: Sequence[Target],
    spec: CommandSpec | None = None,
    *,
    source: CommandSource | None = None,
    store: LedgerStore | None = None,
    instances: bool = True,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[dict[tuple[str, str], str], Resolution | None, RegionQuotas]:
    """The preflight of `fanout plan`: read-only Describe calls, nothing stored or created; the
    regions' daily limits are read as `run` reads them (the account's own).

    Resolves and checks the command (`spec`, from `source`, the ledger `store` telling which
    script commands exist) the way `start_run` does, then the instances unless told not to.
    Returns the exclusions and the command of each region (None without `spec`).
    """
    resolution = None
    async with client_for(settings, credentials, clock) as client:
        if spec is not None and store is not None:
            resolution = await resolve_commands(
                client,
                store,
                source or CommandIdSource(spec.command_id),
                [t.region for t in targets],
                account=settings.account or account_key(credentials),
                spec=spec,
                content_limit_bytes=settings.content_limit_bytes,
                now_s=clock.time(),
            )
        quotas = await account_quotas(settings, client, [t.region for t in targets])
        if not instances:
            return {}, resolution, quotas
        excluded = await preflight_targets(
            client, targets, concurrency=settings.preflight_concurrency
        )
        return excluded, resolution, quotas


def _options(request: RunRequest, settings: Settings) -> dict[str, object]:
    """What a resume needs to send identical requests: secret values are not stored, only
    their fingerprints (scrypt, a salt of this run's), so resume and retry can refuse others."""
    spec = asdict(request.spec)
    spec.pop("command_id")
    spec["had_parameters"] = spec.pop("parameters") is not None
    salt = new_salt()
    fingerprints = secret_fingerprints(request.spec.parameters or {}, request.secret_keys, salt)
    return {
        "spec": spec,
        "source": source_options(request.command_source),
        "secret_fingerprints": {"salt": salt, "values": fingerprints} if fingerprints else None,
        "waves": request.waves,
        "wave_order": request.wave_order,
        "max_errors": request.max_errors,
        "wave_max_failures": request.wave_max_failures,
        "wave_wait_s": request.wave_wait_s,
        "count_unreachable": request.count_unreachable,
        "pause_after_wave": request.pause_after_wave,
        "preflight": request.preflight,
        "wait": request.wait,
        "strict": request.strict,
        "not_after": request.not_after,
        "kind": request.kind,
        "check_wave": request.check_wave,
        "wave_check": None if request.wave_check is None else source_options(request.wave_check),
        "on_halt": None if request.on_halt is None else source_options(request.on_halt),
        "on_halt_scope": request.on_halt_scope,
        # The pacing a retry inherits unless told otherwise.
        "batch_size": settings.batch_size,
        "concurrency": settings.concurrency,
        "region_concurrency": settings.region_concurrency,
        "rate_per_s": settings.rate_per_s,
    }

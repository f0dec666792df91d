"""The runner: composes plan -> preflight -> gate -> invoke -> ledger -> results for one run.

`start_run` plans a new run and stores it; `resume_run` continues a stored one; both end in
`drive`, which owns the task group, the signal handling (first SIGINT/SIGTERM: stop dispatching,
let calls in flight finish, exit 5; second: leave at once — the write-ahead ledger stays
consistent), the lease, and the final state and exit code. Halting is the run control's
(`fanout.halt`), the verdict a pure function (`fanout.verdict`), time the injected clock's.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import CredentialSource
from fanout.clock import SYSTEM_CLOCK, Clock
from fanout.commands import fill_run_commands
from fanout.control import run_spec
from fanout.dispatch import WaveOptions, dispatch_waves
from fanout.errors import (
    CallError,
    ExitCode,
    FanoutError,
    LeaseLostError,
    LedgerError,
    LedgerWriteError,
    UsageError,
)
from fanout.gate import Gate
from fanout.halt import HaltReason, RunControl
from fanout.invoke import InvokeContext
from fanout.lease import keep_lease, owner, release, take_lease
from fanout.ledger import (
    AppendEvent,
    BatchRecord,
    BatchState,
    GroupCommitter,
    InstanceState,
    LedgerStore,
    RunRecord,
    RunState,
    SetRun,
)
from fanout.limits import limit_records, read_region_quotas
from fanout.linked import LinkedRuns, succeeded_in_wave
from fanout.preflight import check_credentials
from fanout.quota import RegionQuotas
from fanout.refused import probe_after_recent_refusals
from fanout.request import ResumeRequest
from fanout.results import COUNTED_FAILURES, Collector
from fanout.settings import Settings
from fanout.tally import stored_regions
from fanout.verdict import reported_counts, verdict
from fanout.waves import (
    ErrorBudget,
    Leg,
    WaveRule,
    parse_max_errors,
    quota_frees_at,
    quota_refusal_event,
    waits_for_results,
)

__all__ = [
    "JOURNALED_EVENTS",
    "DriveOptions",
    "Emit",
    "RunOutcome",
    "client_for",
    "drive",
    "resume_run",
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
    # Per blocked region: the API's refusal (code, message) and when it may go on.
    quota: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    rollback: Mapping[str, object] | None = None  # the `rollback` event of a halted run


@dataclass(frozen=True, slots=True)
class DriveOptions:
    """How this process drives a leg of a stored run."""

    wait_for_quota: bool = False
    wait: bool | None = None  # None: as the run was started
    handle_signals: bool = True
    force_lease: bool = False
    clock: Clock = SYSTEM_CLOCK
    not_after: float | None = None  # the change window of this leg (--not-after)
    quotas: RegionQuotas | None = None  # the regions' daily limits; None: read them first
    max_errors: str | None = None  # a new --max-errors from this leg on (resume)
    wave_max_failures: str | None = None  # a new --wave-max-failures from this leg on
    linked: LinkedRuns | None = None  # wave checks and the rollback on halt (fanout.linked)
    # A new run's batches as this process just stored them: its first leg dispatches these
    # instead of reading back a second copy of every instance id (unless a command was filled).
    stored: Sequence[BatchRecord] | None = None


def client_for(
    settings: Settings,
    credentials: CredentialSource,
    clock: Clock = SYSTEM_CLOCK,
    emit: Emit | None = None,
) -> EcsClient:
    """The one API client (one connection pool) of this process.

    With `emit`, every request sent is a `call` event (`action`, `region`, `error_code`).
    """
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
        clock=clock,
        on_call=None if emit is None else _call_events(emit),
    )


def _call_events(emit: Emit) -> Callable[[str, str, str | None], None]:
    """The client's observer, as `call` events."""

    def called(action: str, region: str, error_code: str | None) -> None:
        emit("call", {"action": action, "region": region, "error_code": error_code})

    return called


async def resume_run(
    settings: Settings,
    credentials: CredentialSource,
    store: LedgerStore,
    request: ResumeRequest,
    *,
    emit: Emit,
    handle_signals: bool = True,
    clock: Clock = SYSTEM_CLOCK,
    linked: LinkedRuns | None = None,
) -> RunOutcome:
    """Continue a stored run with the same command, parameters and tokens.

    `request.force_lease` takes the run over even from a live runner (`resume --force`);
    `linked` runs its wave checks and its rollback on halt (`fanout.launch.linked_runs`).
    """
    run = await anyio.to_thread.run_sync(store.get_run, request.run_id)
    spec = run_spec(run, request.secret_params)
    # The regions only: the batches (every instance id of the run) are read by the leg, once.
    regions_of_run = await _run_regions(store, run)
    async with client_for(settings, credentials, clock) as client:
        # A free DescribeCommands per region before any InvokeCommand: credentials the API
        # refuses stop the resume there (fatal, nothing sent).
        await check_credentials(client, regions_of_run, run.command_id)
        quotas = await account_quotas(settings, client, regions_of_run)
    regions = await anyio.to_thread.run_sync(stored_regions, store, run, quotas, clock.time())
    seen = await anyio.to_thread.run_sync(store.events, run.run_id)
    max_errors, _ = _budget_texts(run, seen, request.max_errors, request.wave_max_failures)
    allowed = parse_max_errors(max_errors, run.target_count)
    emit(
        "resume",
        {"run_id": run.run_id, "state": run.state.value, "allowed": allowed, "regions": regions},
    )
    options = DriveOptions(
        wait_for_quota=request.wait_for_quota,
        wait=request.wait,
        handle_signals=handle_signals,
        force_lease=request.force_lease,
        clock=clock,
        not_after=request.not_after,
        quotas=quotas,
        max_errors=request.max_errors,
        wave_max_failures=request.wave_max_failures,
        linked=linked,
    )
    return await drive(settings, credentials, store, run, spec, emit=emit, options=options)


async def account_quotas(
    settings: Settings, client: EcsClient, regions: Sequence[str]
) -> RegionQuotas:
    """The regions' daily limits: the account's own (read now), unless configured."""
    return await read_region_quotas(
        client, regions, settings.quota, configured=settings.daily_quota
    )


async def _run_regions(store: LedgerStore, run: RunRecord) -> list[str]:
    """The regions a stored run has batches in."""
    counts = await anyio.to_thread.run_sync(store.batch_counts, run.run_id)
    return sorted(counts)


async def drive(
    settings: Settings,
    credentials: CredentialSource,
    store: LedgerStore,
    run: RunRecord,
    spec: CommandSpec,
    *,
    emit: Emit,
    options: DriveOptions = DriveOptions(),
) -> RunOutcome:
    """Dispatch every open batch of a stored run, follow the results, record how it ended."""
    clock = options.clock
    committer = GroupCommitter(store)
    control = RunControl(clock, not_after=options.not_after)
    outcome: RunOutcome | None = None
    leased = False
    try:
        async with (
            client_for(settings, credentials, clock, emit) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(committer.run)
            quotas = options.quotas or await account_quotas(
                settings, client, await _run_regions(store, run)
            )
            ctx = InvokeContext(
                run_id=run.run_id,
                account=run.account,
                spec=spec,
                client=client,
                ledger=committer,
                gate=_gate(settings, clock),
                quotas=quotas,
                control=control,
                clock=clock,
                max_attempts=settings.max_attempts,
                store=store,
            )
            await take_lease(
                committer,
                run,
                clock,
                settings.lease_s,
                local=store.local,
                force=options.force_lease,
            )
            leased = True
            if await _commands_ready(ctx, store, run, settings, emit):
                options = dataclasses.replace(options, stored=None)  # the stored rows changed
            await _quota_facts(ctx, emit)
            await _leg(ctx, settings, store, run, emit, options, tg.cancel_scope)
            outcome = await _finish(ctx, store, run)
            tg.cancel_scope.cancel()
    except (LedgerError, BaseExceptionGroup) as exc:
        failure = _ledger_failure(exc) if leased else None
        if failure is None:
            raise
        holder = None if isinstance(failure, LeaseLostError) else await _new_holder(store, run)
        if isinstance(failure, LeaseLostError):
            msg = f"{failure}; every call it sent was recorded before it was sent"
        elif holder is not None:  # a write of ours raced the new runner's: the lease is why
            msg = (
                f"run {run.run_id}: the lease was taken over by {holder}; this runner "
                f"({owner()}) stops dispatching; every call it sent was recorded before it was "
                f"sent (its last write failed: {failure})"
            )
        else:
            msg = (
                f"run {run.run_id}: the ledger failed while the run was driven ({failure}); "
                "every call that went out was recorded before it was sent: `fanout resume "
                f"{run.run_id}` once the ledger is writable again"
            )
        raise LedgerWriteError(msg) from exc
    if outcome is None:  # a second signal: left at once; the ledger holds every intent
        outcome = RunOutcome(run.run_id, RunState.RUNNING, ExitCode.INTERRUPTED, "left at once")
    if outcome.exit_code is ExitCode.HALTED and options.linked is not None:
        outcome = await _roll_back(options.linked, run, outcome, emit)
    end: dict[str, object] = {
        "run_id": run.run_id,
        "state": outcome.state.value,
        "exit_code": int(outcome.exit_code),
        "instances": dict(outcome.instances),
        "message": outcome.message,
        "quota": dict(outcome.quota),
    }
    if outcome.rollback is not None:
        end["rollback"] = dict(outcome.rollback)
    emit("end", end)
    return outcome


async def _roll_back(
    linked: LinkedRuns, run: RunRecord, outcome: RunOutcome, emit: Emit
) -> RunOutcome:
    """A run halted on its error budget: its `--on-halt-...` command, as a linked run (the
    halted run's exit code stands; its last line says how the rollback went)."""
    doc = await linked.roll_back(run, emit)
    if doc is None:
        return outcome
    if doc.get("error"):
        said = f"; the rollback failed: {doc['error']}"
    elif doc.get("rollback_run_id") is None:
        said = "; nothing to roll back (no instance in its scope)"
    else:
        summary = doc.get("summary")
        counts = ", ".join(
            f"{n} {state.replace('_', ' ')}"
            for state, n in (summary.items() if isinstance(summary, Mapping) else ())
            if n
        )
        said = f"; rolled back by run {doc['rollback_run_id']} ({counts})"
        code = doc.get("exit_code")
        if code not in (0, 1):  # quota, interrupted, fatal: it has more to do
            said += (
                f"; the rollback did not finish (exit {code}): `fanout resume "
                f"{doc['rollback_run_id']}`"
            )
    return dataclasses.replace(outcome, message=outcome.message + said, rollback=doc)


async def _commands_ready(
    ctx: InvokeContext, store: LedgerStore, run: RunRecord, settings: Settings, emit: Emit
) -> bool:
    """Every region's CommandId before dispatching (`fanout.commands.fill_run_commands`: a
    script's command is created where it is missing); a failure halts the run as fatal.
    True if the batches' rows may have changed (a command filled in, or the attempt failed)."""
    try:
        filled = await fill_run_commands(
            ctx.client, store, run, clock=ctx.clock, claim_s=settings.lease_s
        )
    except (CallError, UsageError) as exc:
        ctx.control.halt(HaltReason.FATAL, f"the run's command: {exc}")
        return True
    for region, (command_id, created) in filled.items():
        emit(
            "command",
            {"run_id": run.run_id, "region": region, "command_id": command_id, "created": created},
        )
    return bool(filled)


async def _new_holder(store: LedgerStore, run: RunRecord) -> str | None:
    """Who holds the run's lease now, if another runner took it over (None: we, nobody, or
    the ledger cannot tell)."""
    try:
        current = await anyio.to_thread.run_sync(store.get_run, run.run_id)
    except LedgerError:
        return None
    holder = current.lease_owner
    return holder if holder is not None and holder != owner() else None


def _ledger_failure(exc: BaseException) -> LedgerError | None:
    """The first ledger error in `exc` (a task group's exception group, maybe nested), a lost
    lease first; None if it holds none (or anything that is not a fanout error: a bug stays a
    bug)."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending[:0] = list(current.exceptions)
        else:
            leaves.append(current)
    if not all(isinstance(leaf, FanoutError) for leaf in leaves):
        return None
    ledger = [leaf for leaf in leaves if isinstance(leaf, LedgerError)]
    lost = [leaf for leaf in ledger if isinstance(leaf, LeaseLostError)]
    return (lost or ledger or [None])[0]


async def _quota_facts(ctx: InvokeContext, emit: Emit) -> None:
    """Before the first call: record the limits read, say which limit each region uses, and
    start regions refused recently (and not yet due) with one probe call."""
    now = ctx.clock.time()
    records = limit_records(ctx.account, ctx.quotas, now)
    if records:
        await ctx.ledger.submit(*records)
    emit(
        "quota_limits",
        {
            "run_id": ctx.run_id,
            "regions": {
                region: {
                    "limit": limit.limit,
                    "source": limit.source,
                    "api_limit": limit.api_limit,
                    "error": limit.error,
                }
                for region, limit in sorted(ctx.quotas.limits.items())
            },
        },
    )
    regions = set(ctx.quotas.limits)
    waiting = await anyio.to_thread.run_sync(
        probe_after_recent_refusals, ctx.control, ctx.store, ctx.account, regions, now
    )
    for refusal in waiting:
        log.info("quota probe first", region=refusal.region, refused_at=refusal.at)


def _gate(settings: Settings, clock: Clock) -> Gate:
    """The gate of this leg: the settings' concurrency and per-region rate."""
    return Gate(
        clock,
        concurrency=settings.concurrency,
        region_concurrency=settings.region_concurrency,
        rate_per_s=settings.rate_per_s,
    )


async def _leg(
    ctx: InvokeContext,
    settings: Settings,
    store: LedgerStore,
    run: RunRecord,
    emit: Emit,
    options: DriveOptions,
    everything: anyio.CancelScope,
) -> None:
    """This process's leg: mark the run running, then its waves with their helpers around them."""
    wait = bool(run.options.get("wait") if options.wait is None else options.wait)
    seen = await anyio.to_thread.run_sync(store.events, run.run_id)
    last_event = seen[-1][0] if seen else 0
    bakes = [data.get("until") for _id, _ts, kind, data in seen if kind == "wave_wait"]
    bake_until = bakes[-1] if bakes and isinstance(bakes[-1], int | float) else None
    now = ctx.clock.time()
    max_errors, wave_max = _budget_texts(run, seen, options.max_errors, options.wave_max_failures)
    budget_change = (
        [AppendEvent(run.run_id, BUDGET_EVENT, now, _budget_fields(options))]
        if options.max_errors is not None or options.wave_max_failures is not None
        else []
    )
    await ctx.ledger.submit(
        SetRun(run.run_id, RunState.RUNNING, now),
        AppendEvent(run.run_id, "start", now, {"owner": owner()}),
        *budget_change,
    )
    allowed = parse_max_errors(max_errors, run.target_count)
    rule = WaveRule(wave_max, max_errors, run.target_count)
    count_unreachable = bool(run.options.get("count_unreachable"))
    budget = ErrorBudget(allowed, count_unreachable=count_unreachable)
    leg = Leg(run.run_id, ctx.control, _journaling(emit, ctx), budget, rule)
    async with anyio.create_task_group() as helpers:
        if options.handle_signals:
            helpers.start_soon(_watch_signals, ctx.control, run.run_id, everything)
        helpers.start_soon(
            keep_lease,
            ctx.ledger,
            store,
            run,
            ctx.clock,
            settings.lease_s,
            ctx.control,
            last_event,
            settings.stop_poll_s,
        )
        batches = (
            list(options.stored)
            if options.stored is not None
            else await anyio.to_thread.run_sync(store.load_batches, run.run_id)
        )
        leg.know(batches)
        if any(b.state is not BatchState.PENDING or b.attempts for b in batches):
            earlier = await anyio.to_thread.run_sync(
                _earlier_failures, store, run.run_id, batches, count_unreachable
            )
            leg.carry(earlier)
        collector = None
        if wait and waits_for_results(ctx.spec):
            accepted = any(b.state is BatchState.ACCEPTED for b in batches)
            final = (
                await anyio.to_thread.run_sync(_final_by_batch, store, batches) if accepted else {}
            )
            collector = _collector(
                ctx, settings, leg, batches, final, _secret_values(run, ctx.spec)
            )
            helpers.start_soon(collector.run)
        waves = WaveOptions(
            region_concurrency=settings.region_concurrency,
            wait_for_quota=options.wait_for_quota,
            pause_after_wave=bool(run.options.get("pause_after_wave")),
            wave_wait_s=float(run.options.get("wave_wait_s") or 0.0),  # type: ignore[arg-type]
            bake_until=bake_until,
            check=_wave_check(options.linked, ctx, run, leg),
        )
        await dispatch_waves(ctx, leg, collector, store, batches, waves)
        helpers.cancel_scope.cancel()


def _wave_check(
    linked: LinkedRuns | None, ctx: InvokeContext, run: RunRecord, leg: Leg
) -> Callable[[int], Awaitable[None]] | None:
    """The run's wave check (`--wave-check-...`): on the wave's succeeded instances, as a
    linked run; its failures count against the wave's budget (None: the run has none)."""
    if linked is None or not run.options.get("wave_check"):
        return None

    async def check(wave: int) -> None:
        await ctx.ledger.flush()  # the wave's outcomes, posted without waiting, are stored
        targets = await anyio.to_thread.run_sync(
            succeeded_in_wave, ctx.store, run.run_id, dict(leg.wave_of), wave
        )
        result = await linked.check_wave(run, wave, targets, leg.emit)
        # Counted (and journaled: counted once) unless the run halted meanwhile (Ctrl-C, stop):
        # then a resume counts it. A check that could not finish halts the run: no wave goes
        # out unchecked.
        if result is None or ctx.control.halted:
            return
        if not result.finished:
            ctx.control.halt(
                HaltReason.CHECK,
                f"the check of wave {wave + 1} (run {result.check_run_id}) did not finish "
                f"(exit {result.exit_code}); a resume goes on with it",
            )
            return
        leg.emit("wave_check", result.event(run.run_id))
        leg.check_done(wave, result.failures)

    return check


def _secret_values(run: RunRecord, spec: CommandSpec) -> tuple[str, ...]:
    """The values of the run's secret parameters (redacted from every output stored)."""
    params = spec.parameters or {}
    return tuple(params[k] for k in run.secret_keys if params.get(k))


def _collector(
    ctx: InvokeContext,
    settings: Settings,
    leg: Leg,
    batches: Sequence[BatchRecord],
    final: Mapping[str, list[str]],
    secrets: tuple[str, ...],
) -> Collector:
    """The results collector of this leg, already following the batches accepted earlier
    (their instances recorded final by an earlier leg are not reported or counted again)."""
    collector = Collector(
        ctx.client,
        ctx.ledger,
        settings.poll_interval_s,
        settings.max_output_bytes,
        on_final=leg.instance_final,
        describe_rate_per_s=settings.describe_rate_per_s,
        clock=ctx.clock,
        secrets=secrets,
        control=ctx.control,
    )
    for b in batches:
        if b.state is BatchState.ACCEPTED and b.invoke_id:
            collector.follow(b, b.invoke_id, final.get(b.batch_id, ()))
    return collector


# The journal's record of a budget changed by `resume --max-errors / --wave-max-failures`: the
# newest one is the run's budget from then on (the run's own options keep the first).
BUDGET_EVENT = "budget"


def _budget_fields(options: DriveOptions) -> dict[str, object]:
    fields: dict[str, object] = {}
    if options.max_errors is not None:
        fields["max_errors"] = options.max_errors
    if options.wave_max_failures is not None:
        fields["wave_max_failures"] = options.wave_max_failures
    return fields


def _budget_texts(
    run: RunRecord,
    seen: Sequence[tuple[int, float, str, Mapping[str, object]]],
    max_errors: str | None,
    wave_max_failures: str | None,
) -> tuple[str | None, str | None]:
    """The run's `--max-errors` and `--wave-max-failures`: this leg's new ones, else the newest
    a resume set (journal), else the run's own."""
    texts = {
        "max_errors": _text_option(run, "max_errors"),
        "wave_max_failures": _text_option(run, "wave_max_failures"),
    }
    for _id, _ts, kind, data in seen:
        if kind == BUDGET_EVENT:
            texts.update({k: str(v) for k, v in data.items() if k in texts})
    if max_errors is not None:
        texts["max_errors"] = max_errors
    if wave_max_failures is not None:
        texts["wave_max_failures"] = wave_max_failures
    return texts["max_errors"] or None, texts["wave_max_failures"] or None


def _earlier_failures(
    store: LedgerStore, run_id: str, batches: Sequence[BatchRecord], count_unreachable: bool
) -> dict[int, int]:
    """Per wave, the failures earlier legs recorded that the budgets count: executions that
    failed (`COUNTED_FAILURES`), instances of a batch the API refused for good (not the ones
    isolated alone, which carry their reason), and unreachable ones if counted."""
    wave_of = {b.batch_id: b.wave for b in batches}
    failed_batches = {b.batch_id for b in batches if b.state is BatchState.FAILED}
    earlier: dict[int, int] = {}
    for batch_id, state, status, has_reason, n in store.failure_tally(run_id):
        if state == InstanceState.FAILED:
            counted = status in COUNTED_FAILURES or (
                not status and not has_reason and batch_id in failed_batches
            )
        else:
            counted = state == InstanceState.UNREACHABLE and count_unreachable
        if counted:
            wave = wave_of.get(batch_id, -1)
            earlier[wave] = earlier.get(wave, 0) + n
    return earlier


def _final_by_batch(store: LedgerStore, batches: Sequence[BatchRecord]) -> dict[str, list[str]]:
    """Per accepted batch (the ones followed again), the instances an earlier leg already
    recorded in a final state: read batch by batch, not the run's every instance (a resume of
    a million-instance run would build a million records to keep a few hundred)."""
    final: dict[str, list[str]] = {}
    for batch in batches:
        if batch.state is not BatchState.ACCEPTED:
            continue
        done = [
            rec.instance_id
            for rec in store.instances_of_batch(batch.batch_id)
            if rec.state not in (InstanceState.PENDING, InstanceState.INVOKED)
        ]
        if done:
            final[batch.batch_id] = done
    return final


# Run events the ledger's journal keeps too, with their time: what the report's timeline draws
# beyond the batches' own times (wave bands, the error budget's halt, in-process quota waits).
JOURNALED_EVENTS = frozenset({"wave_start", "wave", "halted", "quota_wait", "wave_check"})


def _journaling(emit: Emit, ctx: InvokeContext) -> Emit:
    """`emit`, also appending the `JOURNALED_EVENTS` to the run's journal (without waiting)."""

    def journaled(kind: str, data: Mapping[str, object]) -> None:
        if kind in JOURNALED_EVENTS:
            fields = {k: v for k, v in data.items() if k != "run_id"}
            ctx.ledger.post(AppendEvent(ctx.run_id, kind, ctx.clock.time(), fields))
        emit(kind, data)

    return journaled


def _text_option(run: RunRecord, name: str) -> str | None:
    """A string option stored with the run."""
    value = run.options.get(name)
    return value if isinstance(value, str) else None


async def _watch_signals(control: RunControl, run_id: str, everything: anyio.CancelScope) -> None:
    """First SIGINT/SIGTERM: stop dispatching; second: leave at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if control.halted_by(HaltReason.SIGNAL, HaltReason.STOP_REQUESTED):
                everything.cancel()
                return
            control.halt(HaltReason.SIGNAL)
            log.warning("stopping", run_id=run_id, hint="again to leave at once")


async def _finish(ctx: InvokeContext, store: LedgerStore, run: RunRecord) -> RunOutcome:
    """Decide the run's state and exit code from the ledger, and record it."""
    await ctx.ledger.flush()
    counts_by_region = await anyio.to_thread.run_sync(store.instance_counts, run.run_id)
    counts: dict[str, int] = {}
    for per_state in counts_by_region.values():
        for state, n in per_state.items():
            counts[state] = counts.get(state, 0) + n
    halt = ctx.control.state()
    frees_at = None
    if halt.quota_blocked:
        frees_at = await quota_frees_at(ctx, store, sorted(halt.quota_blocked))
    now = ctx.clock.time()
    end = verdict(halt, counts, frees_at, now, strict=bool(run.options.get("strict")))
    counts = reported_counts(counts, end.state)
    await ctx.ledger.submit(
        SetRun(run.run_id, end.state, now, exit_code=int(end.exit_code)),
        AppendEvent(
            run.run_id, "end", now, {"state": end.state.value, "exit_code": int(end.exit_code)}
        ),
        release(run.run_id, now),
    )
    ctx.ledger.close()
    quota = {
        region: quota_refusal_event(run.run_id, block)
        for region, block in halt.quota_blocks.items()
        if block.refused
    }
    return RunOutcome(run.run_id, end.state, end.exit_code, end.message, counts, frees_at, quota)

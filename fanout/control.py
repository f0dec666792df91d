"""Operator actions on stored runs: retry the instances that did not succeed, stop a run.

`retry` builds a new run linked to the original (`parent_run_id`) from the instances whose
reported state is one of those asked for, with the same command and parameters; its results
roll up into the original run's report. `stop` asks the runner driving a run to stop (through
the ledger, so it works across hosts), stops the invocations still running with StopInvocation
(at most 50 instances per call), and marks the run stopped once no runner holds it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import anyio

from fanout.aliyun.actions import STOP_IDS_MAX
from fanout.aliyun.client import EcsClient
from fanout.aliyun.command import SPEC_OPTIONS, CommandSpec
from fanout.clock import SYSTEM_CLOCK, Backoff, Clock
from fanout.errors import CallError, CallKind, UsageError
from fanout.fingerprints import check_fingerprints
from fanout.lease import STOP_REQUEST
from fanout.ledger import (
    AppendEvent,
    BatchRecord,
    BatchState,
    InstanceState,
    LedgerStore,
    Op,
    RunRecord,
    RunState,
    SetBatch,
    SetInstances,
    SetRun,
)
from fanout.ledger.model import reported_state
from fanout.results import TERMINAL_STATUSES, instance_outcome
from fanout.sources import CommandSource, source_from_options
from fanout.targets import Target

__all__ = [
    "RETRY_CHOICES",
    "StopOptions",
    "StopResult",
    "is_done",
    "retry_targets",
    "run_source",
    "run_spec",
    "stop_run",
]

RETRY_CHOICES = ("failed", "unreachable", "unknown", "not-invoked")
# How often `stop` looks whether the runner has let go of the run.
_POLL_S = 0.5
# How often `stop` reads a stopped invocation's results while collecting its final states.
_COLLECT_POLL_S = 1.0
# StopInvocation failures worth another try (it is idempotent): 5xx, throttling, timeouts.
_TRANSIENT = frozenset({CallKind.RETRYABLE, CallKind.AMBIGUOUS})


def run_spec(run: RunRecord, secret_params: Mapping[str, str]) -> CommandSpec:
    """The command spec a run was made with; secret values must be given again, and be the
    ones it started with (checked against the fingerprints the run stored)."""
    missing = [k for k in run.secret_keys if k not in secret_params]
    if missing:
        msg = (
            f"run {run.run_id} has secret parameters that are not stored: give "
            f"{', '.join(missing)} with --param-file, --params-json @FILE or FANOUT_PARAM_<NAME>"
        )
        raise UsageError(msg)
    _check_given(run, secret_params)
    params = {**run.parameters, **{k: secret_params[k] for k in run.secret_keys}}
    raw = run.options.get("spec", {})
    stored = raw if isinstance(raw, dict) else {}
    return CommandSpec(
        command_id=run.command_id,
        parameters=params if (params or stored.get("had_parameters")) else None,
        **{k: v for k, v in stored.items() if k in SPEC_OPTIONS},
    )


def run_source(run: RunRecord) -> CommandSource:
    """Where a stored run's command comes from (a retry re-resolves it region by region: the
    same ids, the same name, the same script's command)."""
    return source_from_options(run.options.get("source"), run.command_id)


def _check_given(run: RunRecord, given: Mapping[str, str]) -> None:
    """Refuse values for parameters the run does not have, non-secret values that differ from
    the stored ones, and secret values that are not the ones the run started with."""
    known = {*run.parameters, *run.secret_keys}
    unknown = sorted(set(given) - known)
    if unknown:
        msg = f"run {run.run_id} has no parameter {unknown[0]!r} (it stores {', '.join(sorted(known)) or 'none'})"
        raise UsageError(msg)
    changed = sorted(
        k for k in given if k not in run.secret_keys and run.parameters.get(k) != given[k]
    )
    if changed:
        msg = (
            f"parameter {changed[0]!r}: run {run.run_id} stores its value and sends that one "
            "(resume and retry send the requests the run started with)"
        )
        raise UsageError(msg)
    stored = run.options.get("secret_fingerprints")
    if isinstance(stored, dict) and isinstance(stored.get("values"), dict):
        secrets = {k: given[k] for k in run.secret_keys}
        check_fingerprints(run.run_id, secrets, stored["values"], str(stored.get("salt", "")))


def retry_targets(
    store: LedgerStore, run: RunRecord, only: Collection[str], *, now: float
) -> tuple[Target, ...]:
    """The targets of `run` whose reported state is one of `only` (failed, unreachable, unknown,
    not-invoked)."""
    unknown = set(only) - set(RETRY_CHOICES)
    if unknown or not only:
        msg = f"--only: choose from {', '.join(RETRY_CHOICES)} (got {', '.join(sorted(only)) or 'nothing'})"
        raise UsageError(msg)
    if run.state is RunState.RUNNING and (run.lease_until or 0) > now:
        msg = f"run {run.run_id} is still being driven by {run.lease_owner}; stop it or wait"
        raise UsageError(msg)
    wanted = {choice.replace("-", "_") for choice in only}
    return tuple(
        Target(rec.region, rec.instance_id)
        for rec in store.iter_instances(run.run_id)
        if reported_state(rec.state, run.state) in wanted
    )


@dataclass(frozen=True, slots=True)
class StopOptions:
    """How long `fanout stop` keeps at it."""

    wait_s: float = 30.0  # for the runner driving the run to let go
    stop_timeout_s: float = 300.0  # StopInvocation retried (it is idempotent) until then
    collect: bool = True  # then collect every stopped instance's final state
    collect_timeout_s: float = 300.0
    max_output_bytes: int = 4096


# The end states after which a run has nothing left to send, collect or stop - once every
# batch is closed: `resume` and `stop` then say so and send nothing.
_DONE_STATES = frozenset({RunState.FINISHED, RunState.STOPPED})
_CLOSED_BATCHES = frozenset({BatchState.DONE, BatchState.FAILED})


def is_done(store: LedgerStore, run: RunRecord) -> bool:
    """True if the run ended (finished, or stopped) with every batch closed: nothing is
    pending, in flight or waiting for results."""
    if run.state not in _DONE_STATES or run.exit_code is None:
        return False
    return all(b.state in _CLOSED_BATCHES for b in store.load_batches(run.run_id))


@dataclass(frozen=True, slots=True)
class StopResult:
    """What `fanout stop` did."""

    run_id: str
    state: RunState
    stop_calls: int
    instances_stopped: int
    runner_released: bool
    not_stopped: tuple[str, ...] = ()  # invocations StopInvocation did not reach in time
    still_running: int = 0  # instances not final when collection ended (or was skipped)


async def stop_run(
    store: LedgerStore,
    client: EcsClient,
    run_id: str,
    options: StopOptions = StopOptions(),
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> StopResult:
    """Ask the runner to stop, stop the invocations still running, collect their final states,
    and mark the run stopped.

    The runner is asked first (through the ledger) and given `wait_s` to let go, so no batch is
    accepted behind the StopInvocation pass. StopInvocation is idempotent: transient failures
    (5xx, throttling, timeouts) are retried with back-off until `stop_timeout_s`; what is left
    then is named in `not_stopped`. Permission and other fatal answers are raised.
    """
    await anyio.to_thread.run_sync(store.get_run, run_id)  # RunNotFoundError before anything
    await anyio.to_thread.run_sync(
        store.apply, [AppendEvent(run_id, STOP_REQUEST, clock.time(), {"by": "fanout stop"})]
    )
    released = await _wait_for_release(store, run_id, options.wait_s, clock)
    open_batches = await _open_invocations(store, run_id)
    calls, stopped, not_stopped = await _stop_invocations(
        client, open_batches, clock, options.stop_timeout_s
    )
    still = sum(len(ids) for _b, ids in open_batches)
    if options.collect:
        still = await _collect(store, client, open_batches, clock, options)
    run = await anyio.to_thread.run_sync(store.get_run, run_id)
    if released and run.state not in (RunState.STOPPED, RunState.FINISHED):
        await anyio.to_thread.run_sync(
            store.apply, [SetRun(run_id, RunState.STOPPED, clock.time())]
        )
        run = await anyio.to_thread.run_sync(store.get_run, run_id)
    return StopResult(run_id, run.state, calls, stopped, released, not_stopped, still)


async def _open_invocations(store: LedgerStore, run_id: str) -> list[tuple[BatchRecord, list[str]]]:
    """Every accepted invocation of the run with the instances not final yet."""
    found = []
    for batch in await anyio.to_thread.run_sync(store.load_batches, run_id):
        if batch.state is not BatchState.ACCEPTED or not batch.invoke_id:
            continue
        rows = await anyio.to_thread.run_sync(store.instances_of_batch, batch.batch_id)
        open_ids = [r.instance_id for r in rows if r.state is InstanceState.INVOKED]
        if open_ids:
            found.append((batch, open_ids))
    return found


async def _stop_invocations(
    client: EcsClient,
    open_batches: Sequence[tuple[BatchRecord, list[str]]],
    clock: Clock,
    timeout_s: float,
) -> tuple[int, int, tuple[str, ...]]:
    """StopInvocation for each open invocation, retried while transient until the deadline."""
    deadline = clock.monotonic() + timeout_s
    calls = stopped = 0
    not_stopped: list[str] = []
    for batch, open_ids in open_batches:
        assert batch.invoke_id is not None
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        while True:
            try:
                await client.stop_invocation(batch.region, batch.invoke_id, open_ids)
            except CallError as err:
                calls += 1
                if err.code.startswith("InvalidInvokeId"):
                    break  # already gone (finished and expired): nothing to stop
                if err.kind not in _TRANSIENT or clock.monotonic() >= deadline:
                    if err.kind not in _TRANSIENT:
                        raise
                    not_stopped.append(batch.invoke_id)
                    break
                delay = backoff.next_delay_s(err.retry_after_s)
                await clock.sleep(min(delay, max(0.0, deadline - clock.monotonic())))
                continue
            calls += -(-len(open_ids) // STOP_IDS_MAX)
            stopped += len(open_ids)
            break
    return calls, stopped, tuple(not_stopped)


async def _collect(
    store: LedgerStore,
    client: EcsClient,
    open_batches: Sequence[tuple[BatchRecord, list[str]]],
    clock: Clock,
    options: StopOptions,
) -> int:
    """Read each stopped invocation's results until its instances are final (Cancelled,
    Terminated, or finished anyway) or the collect deadline; record them. Returns how many
    instances are still not final."""
    deadline = clock.monotonic() + options.collect_timeout_s
    waiting = {batch.batch_id: (batch, set(ids)) for batch, ids in open_batches}
    while waiting:
        for batch_id, (batch, ids) in list(waiting.items()):
            assert batch.invoke_id is not None
            try:
                results = await client.describe_invocation_results(
                    batch.region, invoke_id=batch.invoke_id
                )
            except CallError as err:
                if err.kind not in _TRANSIENT:
                    raise
                continue
            final = [r for r in results if r.instance_id in ids and r.status in TERMINAL_STATUSES]
            if final:
                now = clock.time()
                records = tuple(
                    instance_outcome(batch, batch.invoke_id, r, options.max_output_bytes)
                    for r in final
                )
                ops: list[Op] = [SetInstances(batch.run_id, records, now)]
                ids -= {r.instance_id for r in final}
                if not ids:
                    ops.append(SetBatch(batch_id, BatchState.DONE, now))
                await anyio.to_thread.run_sync(store.apply, ops)
            if not ids:
                del waiting[batch_id]
        if not waiting or clock.monotonic() >= deadline:
            break
        await clock.sleep(_COLLECT_POLL_S)
    return sum(len(ids) for _b, ids in waiting.values())


async def _wait_for_release(store: LedgerStore, run_id: str, wait_s: float, clock: Clock) -> bool:
    """True once no live runner holds the run (it stopped, or its lease expired)."""
    deadline = clock.monotonic() + wait_s
    while True:
        run = await anyio.to_thread.run_sync(store.get_run, run_id)
        if run.state is not RunState.RUNNING or (run.lease_until or 0) <= clock.time():
            return True
        if clock.monotonic() >= deadline:
            return False
        await clock.sleep(_POLL_S)

"""Operator actions on stored runs: retry the instances that did not succeed, stop a run.

`retry` builds a new run linked to the original (`parent_run_id`) from the instances whose
reported state is one of those asked for, with the same command and parameters; its results
roll up into the original run's report. `stop` asks the runner driving a run to stop (through
the ledger, so it works across hosts), stops the invocations still running with StopInvocation
(at most 50 instances per call), and marks the run stopped once no runner holds it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import anyio

from fanout.aliyun.client import EcsClient
from fanout.aliyun.command import SPEC_OPTIONS, CommandSpec
from fanout.clock import SYSTEM_CLOCK, Clock
from fanout.errors import CallError, UsageError
from fanout.lease import STOP_REQUEST
from fanout.ledger import (
    AppendEvent,
    BatchState,
    InstanceState,
    LedgerStore,
    RunRecord,
    RunState,
    SetRun,
)
from fanout.ledger.model import reported_state
from fanout.targets import Target

__all__ = ["RETRY_CHOICES", "StopResult", "retry_targets", "run_spec", "stop_run"]

RETRY_CHOICES = ("failed", "unknown", "not-invoked")
# How often `stop` looks whether the runner has let go of the run.
_POLL_S = 0.5


def run_spec(run: RunRecord, secret_params: Mapping[str, str]) -> CommandSpec:
    """The command spec a run was made with; secret values must be given again."""
    missing = [k for k in run.secret_keys if k not in secret_params]
    if missing:
        msg = (
            f"run {run.run_id} has secret parameters that are not stored: "
            f"give --param for {', '.join(missing)}"
        )
        raise UsageError(msg)
    params = {**run.parameters, **{k: secret_params[k] for k in run.secret_keys}}
    raw = run.options.get("spec", {})
    stored = raw if isinstance(raw, dict) else {}
    return CommandSpec(
        command_id=run.command_id,
        parameters=params if (params or stored.get("had_parameters")) else None,
        **{k: v for k, v in stored.items() if k in SPEC_OPTIONS},
    )


def retry_targets(
    store: LedgerStore, run: RunRecord, only: Collection[str], *, now: float
) -> tuple[Target, ...]:
    """The targets of `run` whose reported state is one of `only` (failed, unknown, not-invoked)."""
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
class StopResult:
    """What `fanout stop` did."""

    run_id: str
    state: RunState
    stop_calls: int
    instances_stopped: int
    runner_released: bool


async def stop_run(
    store: LedgerStore,
    client: EcsClient,
    run_id: str,
    *,
    wait_s: float,
    clock: Clock = SYSTEM_CLOCK,
) -> StopResult:
    """Ask the runner to stop, stop running invocations, and mark the run stopped."""
    run = await anyio.to_thread.run_sync(store.get_run, run_id)
    now = clock.time()
    await anyio.to_thread.run_sync(
        store.apply, [AppendEvent(run_id, STOP_REQUEST, now, {"by": "fanout stop"})]
    )
    calls, stopped = await _stop_invocations(store, client, run_id)
    released = await _wait_for_release(store, run_id, wait_s, clock)
    run = await anyio.to_thread.run_sync(store.get_run, run_id)
    if released and run.state not in (RunState.STOPPED, RunState.FINISHED):
        await anyio.to_thread.run_sync(
            store.apply, [SetRun(run_id, RunState.STOPPED, clock.time())]
        )
        run = await anyio.to_thread.run_sync(store.get_run, run_id)
    return StopResult(run_id, run.state, calls, stopped, released)


async def _stop_invocations(store: LedgerStore, client: EcsClient, run_id: str) -> tuple[int, int]:
    """StopInvocation for every accepted invocation with instances not final yet."""
    batches = await anyio.to_thread.run_sync(store.load_batches, run_id)
    calls = stopped = 0
    for batch in batches:
        if batch.state is not BatchState.ACCEPTED or not batch.invoke_id:
            continue
        rows = await anyio.to_thread.run_sync(store.instances_of_batch, batch.batch_id)
        open_ids = [r.instance_id for r in rows if r.state is InstanceState.INVOKED]
        if not open_ids:
            continue
        try:
            await client.stop_invocation(batch.region, batch.invoke_id, open_ids)
        except CallError as err:
            if err.code.startswith("InvalidInvokeId"):
                continue
            raise
        calls += -(-len(open_ids) // 50)
        stopped += len(open_ids)
    return calls, stopped


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

"""`fanout retry` and `fanout stop`: act on a stored run."""

from __future__ import annotations

import time
from typing import Any

import anyio
import click

from fanout.cli.app import Out, guarded, ledger_for
from fanout.cli.run import (
    _credentials,
    _finish,
    _read_params,
    _settings,
    _spend_options,
)
from fanout.control import RETRY_CHOICES, retry_targets, run_spec, stop_run
from fanout.logs import configure_logging, register_secret
from fanout.request import RunRequest
from fanout.runner import client_for, start_run

__all__ = ["COMMANDS"]


@click.command("retry")
@click.argument("run_id")
@click.option(
    "--only",
    default=",".join(RETRY_CHOICES),
    show_default=True,
    help="Which instances: any of failed, unknown, not-invoked (comma-separated).",
)
@click.option("--param", "params", multiple=True, help="KEY=VALUE for each secret parameter.")
@click.option("--waves", help="Cumulative wave sizes for the retry run.")
@click.option("--max-errors", help="Halt the retry run after N or P% failed instances.")
@click.option("--no-preflight", is_flag=True, help="Skip the Describe checks.")
@_spend_options
@guarded
def retry_command(run_id: str, only: str, **opts: Any) -> None:
    """A new attempt, as a linked run, for the instances that did not succeed.

    \b
    Same command and parameters; the instances are chosen by their reported state and
    re-batched. The retry's results roll up into the original run's report.
    \b
    fanout retry r20261128-063512-a1b2c3 --only failed --yes
    """
    configure_logging(opts["log_level"])
    settings = _settings(opts)
    out = Out(as_json=opts["as_json"])
    secret_params, _ = _read_params(opts["params"], None, ())
    for value in (secret_params or {}).values():
        register_secret(value)
    store = ledger_for(settings, run_id=run_id)
    parent = store.get_run(run_id)
    spec = run_spec(parent, secret_params or {})
    chosen = {part.strip() for part in only.split(",") if part.strip()}
    targets = retry_targets(store, parent, chosen, now=time.time())
    if not targets:
        out.document(
            {"run_id": None, "parent_run_id": run_id, "targets": 0},
            f"nothing to retry in {run_id} ({only})",
        )
        return
    credentials = _credentials(settings)
    wait = parent.options.get("wait") if opts["wait"] is None else opts["wait"]
    request = RunRequest(
        targets=targets,
        spec=spec,
        secret_keys=parent.secret_keys,
        waves=opts["waves"],
        max_errors=opts["max_errors"],
        preflight=not opts["no_preflight"],
        wait=bool(wait),
        wait_for_quota=opts["wait_for_quota"],
        parent_run_id=run_id,
    )
    outcome = anyio.run(
        lambda: start_run(settings, credentials, store, request, emit=out.event),
        backend="asyncio",
    )
    _finish(outcome, out)


@click.command("stop")
@click.argument("run_id")
@click.option(
    "--wait-s",
    default=30.0,
    show_default=True,
    type=float,
    help="How long to wait for the runner to let go of the run.",
)
@_spend_options
@guarded
def stop_command(run_id: str, wait_s: float, **opts: Any) -> None:
    """Stop a run: no more dispatching, StopInvocation for running invocations, mark it stopped.

    \b
    Works on a run driven by another process or host (the request goes through the ledger).
    fanout stop r20261128-063512-a1b2c3
    """
    configure_logging(opts["log_level"])
    settings = _settings(opts)
    out = Out(as_json=opts["as_json"])
    store = ledger_for(settings, run_id=run_id)
    store.get_run(run_id)
    credentials = _credentials(settings)

    async def stop() -> Any:
        async with client_for(settings, credentials) as client:
            return await stop_run(store, client, run_id, wait_s=wait_s)

    result = anyio.run(stop, backend="asyncio")
    doc = {
        "run_id": result.run_id,
        "state": result.state.value,
        "stop_calls": result.stop_calls,
        "instances_stopped": result.instances_stopped,
        "runner_released": result.runner_released,
    }
    human = (
        f"run {run_id}: {result.state.value}; StopInvocation for {result.instances_stopped} "
        f"instances in {result.stop_calls} calls"
        + ("" if result.runner_released else "; the runner has not let go yet")
    )
    out.document(doc, human)


COMMANDS = (retry_command, stop_command)

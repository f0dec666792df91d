"""`fanout rollback RUN_ID --command-...`: a run's rollback by hand, as a linked run.

The same as `run --on-halt-...` does when a run halts on its budget: the command runs on the
instances of the run that succeeded (`--scope all-invoked`: every instance it invoked), never
on an excluded or never-invoked one, as a run of its own (ledger rows, quota, report section).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import click

from fanout.aliyun.keys import account_key
from fanout.cli.consent import confirm_plan, require_consent
from fanout.cli.exits import guarded
from fanout.cli.inputs import ParamInput, read_linked_source, read_params, secret_keys_of
from fanout.cli.options import (
    SpendFlags,
    WatchFlags,
    credentials_for,
    ledger_for,
    linked_source_options,
    param_options,
    spend_options,
    watch_options,
)
from fanout.cli.run import checked_watch, run_watched
from fanout.cli.views import Out, finish, nothing_linked
from fanout.errors import ConfigError, UsageError
from fanout.launch import start_run
from fanout.ledger import RunState
from fanout.linked import ROLLBACK_SCOPES, linked_request, rollback_targets
from fanout.logs import configure_logging, register_secret

__all__ = ["rollback_command"]


def _with_options(func: Callable[..., None]) -> Callable[..., None]:
    """The rollback command's source (as `run` takes its own) and parameters."""
    for option in reversed([*linked_source_options("--", "", "Rollback"), *param_options()]):
        func = option(func)
    return func


@click.command("rollback")
@click.argument("run_id")
@_with_options
@click.option(
    "--scope",
    type=click.Choice(ROLLBACK_SCOPES),
    default="succeeded",
    show_default=True,
    help="The instances that succeeded, or every instance the run invoked.",
)
@spend_options
@watch_options
@guarded
def rollback_command(
    run_id: str,
    command_id: tuple[str, ...],
    command_name: str | None,
    script: str | None,
    params: tuple[str, ...],
    params_json: str | None,
    param_file: str | None,
    scope: str,
    spend: SpendFlags,
    watch: WatchFlags,
) -> None:
    """Run a rollback command on the instances of a run that succeeded, as a linked run.

    \b
    Never on an excluded or never-invoked instance, nor on one an earlier rollback of the run
    took. Its results are a section of `fanout report RUN_ID`, apart from the run's own.
    \b
    fanout rollback r20261128-063512-a1b2c3 --command-name undo-deploy --yes
    fanout rollback r20261128-063512-a1b2c3 --script undo.sh --scope all-invoked --yes
    """
    configure_logging(spend.common.log_level)
    ask = require_consent("rollback", yes=spend.yes)
    settings = spend.settings()
    watching = checked_watch(watch, settings)
    out = Out(as_json=spend.common.as_json)
    source = read_linked_source(
        "--", command_id, command_name, script, settings.content_limit_bytes
    )
    if source is None:
        raise ConfigError(
            "give the rollback's command: --command-id c-... (or REGION=c-...), "
            "--command-name NAME or --script FILE"
        )
    parameters = read_params(ParamInput(params, params_json, param_file), env=os.environ)
    secret_keys = secret_keys_of(parameters, ())  # names that look secret: never stored
    for key in secret_keys:
        register_secret((parameters or {}).get(key))
    store = ledger_for(settings, run_id=run_id)
    parent = store.get_run(run_id)
    if parent.state is RunState.RUNNING and (parent.lease_until or 0) > time.time():
        msg = f"run {run_id} is still being driven by {parent.lease_owner}; stop it or wait"
        raise UsageError(msg)
    targets = rollback_targets(store, parent, scope)
    if not targets:
        scope_text = scope.replace("-", " ")
        nothing_linked(out, run_id, f"nothing to roll back in {run_id} (no instance {scope_text})")
        return
    request = linked_request(
        parent, targets, source, kind="rollback", parameters=parameters, secret_keys=secret_keys
    )
    credentials = credentials_for(settings)
    account = settings.account or account_key(credentials)
    confirm = confirm_plan(request.spec.command_id, store, settings, account) if ask else None
    outcome = run_watched(
        watching,
        settings,
        store,
        out,
        lambda emit: start_run(settings, credentials, store, request, emit=emit, confirm=confirm),
    )
    finish(outcome, out)

"""Consent before quota is spent: `--yes`, or a question on a terminal, or a refusal.

Without a terminal and without `--yes`, `run`, `resume` and `retry` refuse (exit 2) before any
call, so a runbook that forgets `--yes` spends nothing unconfirmed. On a terminal `run` and
`retry` ask after the preflight, with the calls that will really be sent; "no" exits 5.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping

import click

from fanout.cli.options import reader_for
from fanout.errors import DeclinedError, UsageError
from fanout.launch import Confirm
from fanout.ledger import LedgerStore
from fanout.plan import Plan
from fanout.request import RunRequest
from fanout.settings import Settings
from fanout.sources import label
from fanout.tally import confirm_summary

__all__ = ["confirm_plan", "on_a_terminal", "require_consent"]


def on_a_terminal() -> bool:
    """True when a person can be asked (stdin and stderr are terminals)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def require_consent(command: str, *, yes: bool) -> bool:
    """Whether to ask before spending quota: not with --yes; refused (exit 2, before any call)
    without a terminal to ask on, so a runbook that forgets --yes spends nothing unconfirmed."""
    if yes:
        return False
    if not on_a_terminal():
        msg = f"`fanout {command}` spends quota and there is no terminal to confirm on: add --yes"
        raise UsageError(msg)
    return True


def linked_note(request: RunRequest) -> str | None:
    """The linked runs a run may start, for its confirmation: they spend calls too."""
    parts = []
    if request.wave_check is not None:
        parts.append(
            f"after each wave but the last, the check {label(request.wave_check)} on its "
            "succeeded instances"
        )
    if request.on_halt is not None:
        scope = request.on_halt_scope.replace("-", " ")
        parts.append(
            f"if the run halts on its budget, the rollback {label(request.on_halt)} on the "
            f"instances {scope}"
        )
    if not parts:
        return None
    return "then " + "; ".join(parts) + " (linked runs: their own calls)"


def confirm_plan(
    command_id: str,
    store: LedgerStore | None,
    settings: Settings,
    account: str,
    *,
    note: str | None = None,
) -> Confirm:
    """The confirmation of `run`: the real calls after preflight, the quota left, the waves.

    Without a `store` the configured ledger is only read (if there is one) to show the quota
    left: `run` creates its ledger after the answer, so "no" leaves nothing behind."""

    def ask(plan: Plan, excluded: Mapping[tuple[str, str], str]) -> None:
        reader = store if store is not None else reader_for(settings)
        start = settings.quota.window_start(time.time())
        used = reader.quota_used(account, start) if reader is not None else {}
        left = {
            b.region: settings.quota.left(used.get(b.region, (0, 0.0))[0]) for b in plan.batches
        }
        calls = [(b.region, len(b.instance_ids)) for b in plan.batches]
        click.echo(confirm_summary(command_id, calls, left), err=True)
        waves = len(plan.waves)
        extra = (
            f"{len(excluded)} excluded by preflight" if excluded else "none excluded by preflight"
        )
        click.echo(f"  {waves} wave{'s' if waves != 1 else ''}; {extra}", err=True)
        if note is not None:
            click.echo(f"  {note}", err=True)
        if not click.confirm("Go ahead?", default=False, err=True):
            raise DeclinedError("answered no: nothing sent")

    return ask

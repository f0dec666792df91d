"""Linked runs: a wave's health check and the rollback of a halted run, each a run of its own.

Both are ordinary runs in the ledger - their own batches, ClientTokens, quota reservations and
instance rows - linked to the run they serve by `parent_run_id` and told apart from retries by
the `kind` stored with them:

- `wave_check`: the command of `--wave-check-...`, run on a wave's succeeded instances at the
  end of its `--wave-wait`; an instance passes only if the check succeeded there, and the others
  count against the wave's budget (`fanout.waves.Leg.check_done`);
- `rollback`: the command of `--on-halt-...`, run when the run halts on its error budget
  (exit 3) on the instances of the run that succeeded (`--on-halt-scope all-invoked`: every
  instance it invoked), never on an excluded or never-invoked one; `fanout rollback` does the
  same by hand.

Their own events stay theirs (only their `call` events reach the parent's stream, for the
metrics): the parent's stream gets one `wave_check` or `rollback` event with the linked run's
id and counts. Retries roll up into the parent's report; these do not (`retries_of`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio

from fanout.aliyun.command import CommandSpec
from fanout.errors import FanoutError, UsageError
from fanout.ledger import BatchState, InstanceState, LedgerStore, RunRecord, RunState
from fanout.ledger.model import reported_state
from fanout.request import RunRequest
from fanout.sources import CommandSource, label, source_from_options
from fanout.targets import Target

__all__ = [
    "LINKED_KINDS",
    "ROLLBACK_SCOPES",
    "CheckResult",
    "LinkedRuns",
    "kind_of",
    "linked_entries",
    "linked_request",
    "linked_runs_of",
    "rollback_targets",
    "stored_source",
    "succeeded_in_wave",
]

LINKED_KINDS = frozenset({"rollback", "wave_check"})
ROLLBACK_SCOPES = ("succeeded", "all-invoked")
# Instances an InvokeCommand was sent for (a pending row of an accepted batch is `invoked`).
_INVOKED = frozenset(
    {
        InstanceState.SUCCEEDED,
        InstanceState.FAILED,
        InstanceState.UNREACHABLE,
        InstanceState.UNKNOWN,
        InstanceState.INVOKED,
    }
)
_SENT_BATCHES = frozenset({BatchState.ACCEPTED, BatchState.UNKNOWN, BatchState.DONE})
# A linked run that ended so: nothing of it is left to drive.
_ENDED = frozenset({RunState.FINISHED, RunState.STOPPED})

Emit = Callable[[str, Mapping[str, object]], None]


class Outcome(Protocol):
    """How a linked run ended (`fanout.runner.RunOutcome`)."""

    @property
    def run_id(self) -> str: ...
    @property
    def exit_code(self) -> int: ...


StartRun = Callable[[RunRequest, Emit], Awaitable[Outcome]]
# A linked run that ended so finished its work (0: every instance succeeded, 1: some did not).
_FINISHED_CODES = frozenset({0, 1})


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A wave's check: its linked run (None: no succeeded instance to check) and its counts."""

    wave: int  # from 0
    check_run_id: str | None
    summary: Mapping[str, int]
    exit_code: int = 0  # the check run's: 0 or 1 when it finished

    @property
    def finished(self) -> bool:
        """Whether the check ran to its end (else: quota, fatal; a resume goes on with it)."""
        return self.exit_code in _FINISHED_CODES

    @property
    def instances(self) -> int:
        """The instances checked."""
        return sum(self.summary.values())

    @property
    def failures(self) -> int:
        """The instances that did not pass: every one on which the check did not succeed."""
        return self.instances - self.summary.get(InstanceState.SUCCEEDED, 0)

    def event(self, run_id: str) -> dict[str, object]:
        """The `wave_check` event (journaled: the run counted it)."""
        return {
            "run_id": run_id,
            "wave": self.wave + 1,
            "check_run_id": self.check_run_id,
            "instances": self.instances,
            "failures": self.failures,
            "summary": dict(self.summary),
        }


ResumeRun = Callable[[str, Emit], Awaitable[Outcome]]


def kind_of(run: RunRecord) -> str:
    """`run`, `retry`, `rollback` or `wave_check`."""
    kind = run.options.get("kind")
    if isinstance(kind, str) and kind in LINKED_KINDS:
        return kind
    return "retry" if run.parent_run_id else "run"


def linked_entries(store: LedgerStore, run_id: str) -> list[dict[str, object]]:
    """The runs linked to `run_id` (its retries, rollbacks and wave checks), oldest first, as
    `fanout status` lists them: id, kind, state and exit code."""
    return [
        {"run_id": r.run_id, "kind": kind_of(r), "state": r.state.value, "exit_code": r.exit_code}
        for r in store.child_runs(run_id)
    ]


def linked_runs_of(store: LedgerStore, run_id: str, kind: str) -> list[RunRecord]:
    """The runs of `kind` linked to `run_id`, oldest first."""
    runs = [
        r
        for r in store.list_runs(limit=100_000)
        if r.parent_run_id == run_id and r.options.get("kind") == kind
    ]
    return sorted(runs, key=lambda r: r.created_at)


def stored_source(run: RunRecord, name: str) -> CommandSource | None:
    """A linked command source stored with a run (`wave_check`, `on_halt`), or None."""
    stored = run.options.get(name)
    return source_from_options(stored, "") if isinstance(stored, Mapping) else None


def rollback_targets(store: LedgerStore, run: RunRecord, scope: str) -> tuple[Target, ...]:
    """The instances of `run` a rollback runs on: those that succeeded (`succeeded`), or every
    one it invoked (`all-invoked`); never an excluded or never-invoked one, nor one an earlier
    rollback of the run already took."""
    if scope not in ROLLBACK_SCOPES:
        msg = f"--on-halt-scope {scope!r}: choose from {', '.join(ROLLBACK_SCOPES)}"
        raise UsageError(msg)
    sent = {b.batch_id for b in store.load_batches(run.run_id) if b.state in _SENT_BATCHES}
    done = {
        (rec.region, rec.instance_id)
        for earlier in linked_runs_of(store, run.run_id, "rollback")
        for rec in store.iter_instances(earlier.run_id)
    }
    wanted = {InstanceState.SUCCEEDED} if scope == "succeeded" else _INVOKED
    chosen = []
    for rec in store.iter_instances(run.run_id):
        state = rec.state
        if state is InstanceState.PENDING and rec.batch_id in sent:
            state = InstanceState.INVOKED
        if state in wanted and (rec.region, rec.instance_id) not in done:
            chosen.append(Target(rec.region, rec.instance_id))
    return tuple(chosen)


def succeeded_in_wave(
    store: LedgerStore, run_id: str, wave_of: Mapping[str, int], wave: int
) -> tuple[Target, ...]:
    """The instances of `wave` (from 0) that succeeded: what its check runs on."""
    return tuple(
        Target(rec.region, rec.instance_id)
        for rec in store.iter_instances(run_id)
        if rec.state is InstanceState.SUCCEEDED and wave_of.get(rec.batch_id or "") == wave
    )


def linked_request(
    parent: RunRecord,
    targets: Sequence[Target],
    source: CommandSource,
    *,
    kind: str,
    parameters: Mapping[str, str] | None = None,
    secret_keys: tuple[str, ...] = (),
    check_wave: int | None = None,
) -> RunRequest:
    """A linked run on `targets` with `source`'s command: all at once, no error budget,
    results awaited, the parent's pacing (`secret_keys`: parameters stored as fingerprints)."""
    return RunRequest(
        targets=tuple(targets),
        spec=CommandSpec(command_id=label(source), parameters=parameters),
        source=source,
        secret_keys=secret_keys,
        wait=True,
        parent_run_id=parent.run_id,
        kind=kind,
        check_wave=check_wave,
    )


def _calls_only(emit: Emit) -> Emit:
    """The parent's stream for a linked run: only its `call` events (metrics count them)."""

    def forward(kind: str, data: Mapping[str, object]) -> None:
        if kind == "call":
            emit(kind, data)

    return forward


def _counts(store: LedgerStore, run_id: str) -> dict[str, int]:
    """A run's instances by reported state, from the ledger."""
    run = store.get_run(run_id)
    counts: dict[str, int] = {}
    for per_state in store.instance_counts(run_id).values():
        for state, n in per_state.items():
            shown = reported_state(state, run.state)
            counts[shown] = counts.get(shown, 0) + n
    return counts


@dataclass(frozen=True, slots=True)
class LinkedRuns:
    """Starts and resumes the linked runs of a run (`fanout.launch.linked_runs` builds it)."""

    start: StartRun
    resume: ResumeRun
    store: LedgerStore

    async def check_wave(
        self, run: RunRecord, wave: int, targets: Sequence[Target], emit: Emit
    ) -> CheckResult | None:
        """Run the wave check of `wave` (from 0) on `targets`: its run and counts.

        The run's journal says whether a check of this wave was already counted (its
        `wave_check` event): then None, as when the run has no check. A check run of this wave
        that did not end is resumed, one that ended is counted as it is; a check that did not
        finish (quota, fatal, interrupted) says so (`CheckResult.finished`)."""
        source = stored_source(run, "wave_check")
        if source is None:
            return None
        judged, earlier = await anyio.to_thread.run_sync(self._check_history, run.run_id, wave)
        if judged:
            return None
        quiet = _calls_only(emit)
        if earlier is not None and earlier.state in _ENDED:
            check_id, code = earlier.run_id, earlier.exit_code or 0
        elif earlier is not None:
            outcome = await self.resume(earlier.run_id, quiet)
            check_id, code = outcome.run_id, int(outcome.exit_code)
        elif not targets:
            return CheckResult(wave, None, {})
        else:
            emit("wave_check_start", {"run_id": run.run_id, "wave": wave + 1,
                                      "instances": len(targets)})  # fmt: skip
            request = linked_request(run, targets, source, kind="wave_check", check_wave=wave + 1)
            outcome = await self.start(request, quiet)
            check_id, code = outcome.run_id, int(outcome.exit_code)
        counts = await anyio.to_thread.run_sync(_counts, self.store, check_id)
        return CheckResult(wave, check_id, counts, code)

    def _check_history(self, run_id: str, wave: int) -> tuple[bool, RunRecord | None]:
        """Whether the run counted a check of `wave` already, and its latest check run."""
        judged = any(
            kind == "wave_check" and data.get("wave") == wave + 1
            for _id, _ts, kind, data in self.store.events(run_id)
        )
        runs = [
            r
            for r in linked_runs_of(self.store, run_id, "wave_check")
            if r.options.get("check_wave") == wave + 1
        ]
        return judged, (runs[-1] if runs else None)

    async def roll_back(self, run: RunRecord, emit: Emit) -> dict[str, object] | None:
        """Run the run's `--on-halt-...` command on its rollback scope; the `rollback` event
        (None when the run has no rollback command)."""
        source = stored_source(run, "on_halt")
        if source is None:
            return None
        scope = str(run.options.get("on_halt_scope") or "succeeded")
        doc: dict[str, object] = {"run_id": run.run_id, "scope": scope, "rollback_run_id": None}
        try:
            current = await anyio.to_thread.run_sync(self.store.get_run, run.run_id)
            targets = await anyio.to_thread.run_sync(rollback_targets, self.store, current, scope)
            doc["targets"] = len(targets)
            if targets:
                request = linked_request(current, targets, source, kind="rollback")
                outcome = await self.start(request, _calls_only(emit))
                doc["rollback_run_id"] = outcome.run_id
                doc["exit_code"] = int(outcome.exit_code)
                doc["summary"] = await anyio.to_thread.run_sync(_counts, self.store, outcome.run_id)
        except FanoutError as exc:  # the halted run's own end stands; the rollback says why
            doc["error"] = str(exc)
        emit("rollback", doc)
        return doc

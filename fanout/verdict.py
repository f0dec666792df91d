"""How a run (or this leg of it) ended: state, exit code and a one-line summary. Pure.

The verdict is a function of the run control's snapshot (`HaltState`: why it stopped
dispatching) and the ledger's instance counts, in the priority of the documented exit codes:
a fatal API error (6) over a stop or a signal (5) over the error budget (3) over a pause (5)
over the quota (4) over the outcome of what ran (0 or 1).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fanout.errors import ExitCode
from fanout.ledger.model import InstanceState, RunState, reported_state

__all__ = ["HaltReason", "HaltState", "Verdict", "reported_counts", "verdict"]


class HaltReason(enum.StrEnum):
    """Why a run stopped dispatching."""

    BUDGET = "budget"  # --max-errors spent
    STOP_REQUESTED = "stop_requested"  # `fanout stop`, through the ledger
    SIGNAL = "signal"  # SIGINT / SIGTERM
    FATAL = "fatal"  # an API answer after which nothing more may be sent
    PAUSE = "pause"  # --pause-after-wave
    WINDOW = "window"  # --not-after: the change window closed


@dataclass(frozen=True, slots=True)
class HaltState:
    """What the run control knew when the run ended (the verdict's input)."""

    reasons: frozenset[HaltReason] = frozenset()
    details: Mapping[HaltReason, str] = field(default_factory=dict)  # first detail per reason
    quota_blocked: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The run's final state, its exit code and the last line printed."""

    state: RunState
    exit_code: ExitCode
    message: str


def verdict(  # noqa: PLR0911 - one return per documented exit code, in priority order
    halt: HaltState,
    counts: Mapping[str, int],
    frees_at: float | None,
    now: float,
    *,
    strict: bool = False,
) -> Verdict:
    """The verdict for a leg that ended with `halt` and the ledger's `counts` per state.

    Preflight exclusions do not fail a run (they are counted in the summary) unless `strict`.
    """
    # The leg has ended: what is still pending is reported not invoked, as `status` reports it.
    summary = ", ".join(
        f"{n} {s}" for s, n in sorted(reported_counts(counts, RunState.FINISHED).items())
    )
    reasons = halt.reasons
    if HaltReason.FATAL in reasons:
        fatal = halt.details.get(HaltReason.FATAL, "fatal API error")
        return Verdict(RunState.FATAL, ExitCode.FATAL_API, f"stopped by a fatal API error: {fatal}")
    if HaltReason.STOP_REQUESTED in reasons:
        return Verdict(RunState.STOPPED, ExitCode.INTERRUPTED, f"stopped ({summary}); resumable")
    if HaltReason.SIGNAL in reasons:
        return Verdict(
            RunState.INTERRUPTED, ExitCode.INTERRUPTED, f"interrupted ({summary}); resumable"
        )
    if HaltReason.BUDGET in reasons:
        why = halt.details.get(HaltReason.BUDGET, "the error budget was spent")
        return Verdict(
            RunState.HALTED,
            ExitCode.HALTED,
            f"halted: {why} ({summary}); look, then `fanout resume` or `fanout retry`",
        )
    if HaltReason.PAUSE in reasons:
        return Verdict(
            RunState.INTERRUPTED, ExitCode.INTERRUPTED, f"paused after a wave ({summary})"
        )
    if HaltReason.WINDOW in reasons:
        why = halt.details.get(HaltReason.WINDOW, "the change window closed")
        return Verdict(RunState.INTERRUPTED, ExitCode.INTERRUPTED, f"{why} ({summary}); resumable")
    open_left = counts.get(InstanceState.PENDING, 0)
    if halt.quota_blocked and open_left:
        when = (
            datetime.fromtimestamp(frees_at or now, UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z")
        )
        return Verdict(
            RunState.QUOTA,
            ExitCode.QUOTA,
            f"daily quota spent with {open_left} instances not invoked; capacity frees at {when}",
        )
    fine = [InstanceState.SUCCEEDED, InstanceState.INVOKED]
    if not strict:
        fine.append(InstanceState.EXCLUDED)
    if sum(counts.get(state, 0) for state in fine) == sum(counts.values()):
        return Verdict(RunState.FINISHED, ExitCode.OK, f"finished: {summary}")
    return Verdict(
        RunState.FINISHED, ExitCode.FINISHED_WITH_FAILURES, f"finished with problems: {summary}"
    )


def reported_counts(counts: Mapping[str, int], run_state: RunState) -> dict[str, int]:
    """Instance counts by state as `status` reports them for a run in `run_state` (I2: a
    pending instance of a run that is not running is `not_invoked`)."""
    reported: dict[str, int] = {}
    for state, n in counts.items():
        name = reported_state(state, run_state)
        reported[name] = reported.get(name, 0) + n
    return reported

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
from fanout.quota import QuotaBlock

__all__ = ["HaltReason", "HaltState", "Verdict", "reported_counts", "verdict"]


class HaltReason(enum.StrEnum):
    """Why a run stopped dispatching."""

    BUDGET = "budget"  # --max-errors spent
    STOP_REQUESTED = "stop_requested"  # `fanout stop`, through the ledger
    SIGNAL = "signal"  # SIGINT / SIGTERM
    FATAL = "fatal"  # an API answer after which nothing more may be sent
    PAUSE = "pause"  # --pause-after-wave
    WINDOW = "window"  # --not-after: the change window closed
    CHECK = "check"  # a wave's check did not finish (quota, fatal): no wave goes unchecked


# Halts that hold the run for a resume (exit 5), with what is said when no detail was given.
_HELD: Mapping[HaltReason, str] = {
    HaltReason.WINDOW: "the change window closed",
    HaltReason.CHECK: "a wave check did not finish",
}


@dataclass(frozen=True, slots=True)
class HaltState:
    """What the run control knew when the run ended (the verdict's input)."""

    reasons: frozenset[HaltReason] = frozenset()
    details: Mapping[HaltReason, str] = field(default_factory=dict)  # first detail per reason
    quota_blocked: frozenset[str] = frozenset()
    quota_blocks: Mapping[str, QuotaBlock] = field(default_factory=dict)  # why, per region


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
    held = [reason for reason in _HELD if reason in reasons]
    if held:
        why = halt.details.get(held[0], _HELD[held[0]])
        return Verdict(RunState.INTERRUPTED, ExitCode.INTERRUPTED, f"{why} ({summary}); resumable")
    open_left = counts.get(InstanceState.PENDING, 0)
    if halt.quota_blocked and open_left:
        return Verdict(
            RunState.QUOTA, ExitCode.QUOTA, _quota_message(halt, open_left, frees_at, now)
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


def _iso(epoch: float) -> str:
    """ISO-8601 UTC with Z (the JSON contract's form)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _quota_message(halt: HaltState, open_left: int, frees_at: float | None, now: float) -> str:
    """Exit 4's line: the instances left and, per blocked region, why and when it may go on."""
    parts = []
    for region in sorted(halt.quota_blocked):
        block = halt.quota_blocks.get(region)
        if block is None or not block.refused:
            parts.append(f"{region}: fanout's count reached the daily limit")
            continue
        what = f"{region}: the API refused InvokeCommand with {block.code} ({block.message})"
        if block.explained:
            when = _iso(block.frees_at) if block.frees_at is not None else "unknown"
            parts.append(f"{what}, fanout's own {block.used} calls reach its {block.limit}; capacity frees at {when}")  # fmt: skip
        else:
            probe = _iso(block.probe_at) if block.probe_at is not None else "unknown"
            parts.append(
                f"{what} with fanout's own calls at {block.used} of {block.limit}: capacity "
                f"returns at an unknown time (other users of the account's quota); "
                f"next probe at {probe}"
            )
    when = _iso(frees_at or now)
    return (
        f"daily quota spent with {open_left} instances not invoked ({'; '.join(parts)}); "
        f"`fanout resume` from {when}, or --wait-for-quota"
    )

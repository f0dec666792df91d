"""The verdict: a pure function from the halt reasons and the ledger's counts to state and exit code."""

from __future__ import annotations

import pytest

from fanout.errors import ExitCode
from fanout.ledger.model import RunState
from fanout.verdict import HaltReason, HaltState, verdict

NOW = 1_800_000_000.0
DONE = {"succeeded": 8, "failed": 2}
OPEN = {"succeeded": 5, "pending": 5}


@pytest.mark.parametrize(
    ("reasons", "state", "code", "words"),
    [
        ({HaltReason.FATAL}, RunState.FATAL, ExitCode.FATAL_API, "fatal API error: boom"),
        ({HaltReason.STOP_REQUESTED}, RunState.STOPPED, ExitCode.INTERRUPTED, "stopped ("),
        ({HaltReason.SIGNAL}, RunState.INTERRUPTED, ExitCode.INTERRUPTED, "interrupted ("),
        ({HaltReason.BUDGET}, RunState.HALTED, ExitCode.HALTED, "halted: wave 2 had 3 failed"),
        ({HaltReason.PAUSE}, RunState.INTERRUPTED, ExitCode.INTERRUPTED, "paused after a wave"),
    ],
)
def test_each_halt_reason_has_its_state_and_exit_code(
    reasons: set[HaltReason], state: RunState, code: ExitCode, words: str
) -> None:
    """Every halt reason maps to its documented run state and exit code, with a summary."""
    details = {HaltReason.FATAL: "boom", HaltReason.BUDGET: "wave 2 had 3 failed"}
    end = verdict(HaltState(frozenset(reasons), details), OPEN, None, NOW)
    assert (end.state, end.exit_code) == (state, code)
    assert words in end.message


@pytest.mark.parametrize(
    ("reasons", "code"),
    [
        ({HaltReason.FATAL, HaltReason.SIGNAL, HaltReason.BUDGET}, ExitCode.FATAL_API),
        ({HaltReason.STOP_REQUESTED, HaltReason.SIGNAL}, ExitCode.INTERRUPTED),
        ({HaltReason.SIGNAL, HaltReason.BUDGET}, ExitCode.INTERRUPTED),
        ({HaltReason.BUDGET, HaltReason.PAUSE}, ExitCode.HALTED),
    ],
)
def test_several_reasons_take_the_documented_priority(
    reasons: set[HaltReason], code: ExitCode
) -> None:
    """With several reasons, fatal > stop > signal > budget > pause decides the exit code."""
    assert verdict(HaltState(frozenset(reasons)), OPEN, None, NOW).exit_code is code


def test_stop_request_wins_over_the_signal_it_came_with() -> None:
    """A `fanout stop` that also interrupted the process is reported as stopped, not interrupted."""
    halt = HaltState(frozenset({HaltReason.STOP_REQUESTED, HaltReason.SIGNAL}))
    assert verdict(halt, OPEN, None, NOW).state is RunState.STOPPED


def test_quota_with_instances_left_exits_4_naming_when_capacity_frees() -> None:
    """A blocked region with pending instances is exit 4, and the message names the UTC time."""
    end = verdict(HaltState(quota_blocked=frozenset({"cn-hangzhou"})), OPEN, NOW + 3600, NOW)
    assert (end.state, end.exit_code) == (RunState.QUOTA, ExitCode.QUOTA)
    assert "5 instances not invoked" in end.message
    assert "2027-01-15T09:00:00Z" in end.message


def test_quota_block_with_nothing_left_is_judged_by_the_outcome() -> None:
    """A region blocked after its last batch went out does not make the run exit 4."""
    end = verdict(HaltState(quota_blocked=frozenset({"cn-hangzhou"})), DONE, NOW, NOW)
    assert end.exit_code is ExitCode.FINISHED_WITH_FAILURES


@pytest.mark.parametrize(
    ("counts", "code"),
    [
        ({"succeeded": 10}, ExitCode.OK),
        ({"succeeded": 4, "invoked": 6}, ExitCode.OK),  # --no-wait: accepted counts as good
        ({"succeeded": 9, "failed": 1}, ExitCode.FINISHED_WITH_FAILURES),
        ({"succeeded": 9, "unknown": 1}, ExitCode.FINISHED_WITH_FAILURES),
        ({"succeeded": 9, "excluded": 1}, ExitCode.OK),  # exclusions alone do not fail a run
        ({"excluded": 3}, ExitCode.OK),
        ({}, ExitCode.OK),
    ],
)
def test_a_run_without_halt_is_judged_by_its_instances(
    counts: dict[str, int], code: ExitCode
) -> None:
    """No halt: 0 when every instance succeeded, was accepted or was excluded, else 1."""
    end = verdict(HaltState(), counts, None, NOW)
    assert (end.state, end.exit_code) == (RunState.FINISHED, code)


@pytest.mark.parametrize(
    ("counts", "code"),
    [
        ({"succeeded": 9, "excluded": 1}, ExitCode.FINISHED_WITH_FAILURES),
        ({"succeeded": 10}, ExitCode.OK),
    ],
)
def test_strict_makes_exclusions_fail_the_run(counts: dict[str, int], code: ExitCode) -> None:
    """With --strict a preflight exclusion makes the run exit 1."""
    assert verdict(HaltState(), counts, None, NOW, strict=True).exit_code is code

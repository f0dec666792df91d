"""The run control: one verb to halt, which reasons abort collection, waits that wake on a halt."""

from __future__ import annotations

import anyio
import pytest

from fanout.clock import FakeClock
from fanout.halt import HaltReason, RunControl


@pytest.mark.parametrize(
    ("reason", "aborts"),
    [
        (HaltReason.BUDGET, False),
        (HaltReason.PAUSE, False),
        (HaltReason.SIGNAL, True),
        (HaltReason.STOP_REQUESTED, True),
        (HaltReason.FATAL, True),
    ],
)
async def test_every_reason_stops_dispatch_and_some_stop_collection(
    reason: HaltReason, aborts: bool
) -> None:
    """Every reason stops dispatching; signal, stop and fatal also end results collection."""
    control = RunControl(FakeClock())
    before = control.halted
    assert control.halt(reason) is True
    assert (before, control.halted) == (False, True)
    assert control.halt_event.is_set()
    assert control.abort_event.is_set() is aborts
    assert control.halt(reason) is False  # the same reason again is not new
    assert control.state().reasons == frozenset({reason})


async def test_the_first_fatal_error_is_the_one_reported() -> None:
    """Two fatal answers: the verdict names the first."""
    control = RunControl(FakeClock())
    control.halt(HaltReason.FATAL, "Forbidden.RAM: no permission")
    control.halt(HaltReason.FATAL, "InvalidCommandId.NotFound")
    assert control.fatal
    assert control.state().details[HaltReason.FATAL] == "Forbidden.RAM: no permission"


async def test_quota_blocks_are_per_region() -> None:
    """A spent region is blocked alone and unblocked alone; neither halts the run."""
    control = RunControl(FakeClock())
    control.block_region("cn-hangzhou")
    assert control.is_blocked("cn-hangzhou")
    assert not control.is_blocked("cn-beijing")
    assert not control.halted
    assert control.state().quota_blocked == frozenset({"cn-hangzhou"})
    control.block_region("cn-beijing")
    control.unblock_region("cn-hangzhou")
    assert control.quota_blocked == frozenset({"cn-beijing"})


async def test_sleep_runs_on_the_injected_clock() -> None:
    """The control's sleep takes its full time on the run's clock when nothing halts."""
    clock = FakeClock()
    await RunControl(clock).sleep(90.0)
    assert clock.sleeps == [90.0]


async def test_sleep_wakes_at_once_when_the_run_halts() -> None:
    """A back-off or quota wait in progress ends when the run halts."""
    control = RunControl(FakeClock())
    control.halt(HaltReason.SIGNAL)
    with anyio.fail_after(5):
        await control.sleep(86_400)  # already halted: returns without sleeping
    assert control.halted_by(HaltReason.SIGNAL, HaltReason.STOP_REQUESTED)
    assert not control.halted_by(HaltReason.BUDGET)


async def test_the_change_window_closes_with_its_time_in_z() -> None:
    """Past --not-after the run halts with WINDOW, naming the time as every other time is
    written (`...Z`, not `+00:00`)."""
    clock = FakeClock(1_800_000_000.0)
    control = RunControl(clock, not_after=1_800_000_010.0)
    before = control.halted
    clock.advance(10)
    assert (before, control.halted) == (False, True)
    detail = control.state().details[HaltReason.WINDOW]
    assert detail == "the change window closed at 2027-01-15T08:00:10Z (--not-after)"

"""`fanout emulator --time-scale N`: the emulator's clock runs N times faster than its source."""

from __future__ import annotations

from click.testing import CliRunner

from fanout.cli.app import main
from fanout.emulator import EmulatorConfig
from fanout.emulator.state import Clock


class _Source:
    """A time source that moves only when told (no wall clock in tests)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_scaled_clock_moves_n_seconds_per_source_second() -> None:
    """At --time-scale 3600 one second of the source is an hour of the emulator; an advance
    adds on top, and a frozen clock stays where it was."""
    source = _Source()
    clock = Clock(time_scale=3600, wall=source)
    start = clock.now()
    source.now += 1
    assert clock.now() == start + 3600
    clock.advance(60)
    assert clock.now() == start + 3660
    clock.freeze(True)
    source.now += 1
    assert clock.now() == start + 3660
    clock.freeze(False)
    source.now += 1
    assert clock.now() == start + 3660 + 3600


def test_time_scale_must_be_positive() -> None:
    """A zero time scale is a config problem, and a one-line usage error on the command line."""
    assert any("time_scale" in p for p in EmulatorConfig(time_scale=0).problems())
    out = CliRunner().invoke(main, ["emulator", "--time-scale", "0"])
    assert out.exit_code == 2
    assert "--time-scale" in out.output

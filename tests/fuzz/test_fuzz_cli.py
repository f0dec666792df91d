"""Fuzzing the command line (issue 16): every input kind through the real `fanout` entry point
in-process, against the emulator; the property is `tests.fuzz.cases.check` (no traceback, a
documented exit code, nothing sent, no run and no file left behind by a refused input, no hang).

A small budget per kind here (`FANOUT_FUZZ_EXAMPLES`, default 6, derandomized so CI is
repeatable); `benchmarks/bench_fuzz.py` runs the same tests with 10 000+ cases in all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.emulator import EmulatorConfig, EmulatorThread
from fanout.emulator.fleet import Fleet
from tests.fuzz.cases import KINDS, REGIONS, Case, check, kinds

EXAMPLES = int(os.environ.get("FANOUT_FUZZ_EXAMPLES", "6"))
FLEET = EmulatorConfig(
    regions=REGIONS,
    instances_per_region=20,
    seed=7,
    stopped_fraction=0.1,
    daily_quota=10_000_000,
)
IDS = {r: [i.instance_id for i in f.instances] for r, f in Fleet.from_config(FLEET).regions.items()}


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorThread]:
    """One emulator for every case of the module (its quota never runs out)."""
    with EmulatorThread(FLEET) as server:
        yield server


@pytest.mark.parametrize("kind", KINDS)
def test_no_input_breaks_the_contract(emu: EmulatorThread, kind: str) -> None:
    """For every generated input of this kind: no traceback, a documented exit code, and a
    refused input sent no InvokeCommand and left no run and no file behind."""
    strategy = kinds(emu.url)[kind](IDS)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=os.environ.get("FANOUT_FUZZ_RANDOM") != "1",
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(case=strategy)
    def run(case: Case) -> None:
        check(emu, IDS, kind, case)

    run()


def test_every_kind_is_fuzzed() -> None:
    """The kinds the issue names all have a strategy."""
    assert set(KINDS) == {
        "targets",
        "instance ids",
        "parameters",
        "params-json",
        "frequency",
        "waves",
        "budgets",
        "numbers",
        "TOML configs",
        "environment",
        "endpoints",
        "ledger locations",
    }
    assert isinstance(st.just(1), st.SearchStrategy)

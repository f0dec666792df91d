"""The run's tally: the model fed by run events, and the regions of a new or resumed run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fanout.ledger import (
    BatchRecord,
    BatchState,
    InstanceRecord,
    InstanceState,
    RunRecord,
    RunState,
    open_ledger,
)
from fanout.quota import QuotaPolicy, RegionLimit, RegionQuotas
from fanout.tally import (
    RATE_WINDOW_S,
    ProgressModel,
    confirm_summary,
    planned_regions,
    stored_regions,
)

RUN: dict[str, Any] = {
    "run_id": "r20261128-063512-a1b2c3",
    "targets": 1000,
    "batches": 20,
    "excluded": 10,
    "allowed": 25,
    "regions": {
        "cn-hangzhou": {
            "batches": 12,
            "instances": 600,
            "excluded": 6,
            "pending": 594,
            "quota_left": 100,
        },
        "cn-beijing": {
            "batches": 8,
            "instances": 400,
            "excluded": 4,
            "pending": 396,
            "quota_left": 5,
        },
    },
}


def batch(i: int, region: str, outcome: str = "accepted", *, attempts: int = 1) -> dict[str, Any]:
    """A "batch" end event of 50 instances."""
    return {
        "batch_id": f"b{i}",
        "region": region,
        "outcome": outcome,
        "instances": 50,
        "attempts": attempts,
    }


def start(i: int, region: str) -> dict[str, Any]:
    """A "batch_start" event."""
    return {"batch_id": f"b{i}", "region": region, "attempts": 0}


def fed(events: list[tuple[float, str, dict[str, Any]]]) -> ProgressModel:
    """A model after these (time, kind, data) events."""
    model = ProgressModel()
    for now, kind, data in events:
        model.feed(kind, data, now)
    return model


def scenario() -> list[tuple[float, str, dict[str, Any]]]:
    """Wave 2 of 3 under way: hangzhou 4 batches done (one failed, one re-sent twice),
    2 in flight; beijing 1 done, 1 in flight; 30 results in."""
    events: list[tuple[float, str, dict[str, Any]]] = [
        (0.0, "run", RUN),
        (0.1, "wave_start", {"wave": 1, "waves": 3}),
        (0.2, "batch_start", start(0, "cn-hangzhou")),
        (1.0, "batch", batch(0, "cn-hangzhou")),
        (1.1, "wave", {"wave": 1, "failures": 0}),
        (1.2, "wave_start", {"wave": 2, "waves": 3}),
    ]
    for i in range(1, 6):
        events.append((1.3, "batch_start", start(i, "cn-hangzhou")))
    events += [
        (6.0, "batch", batch(1, "cn-hangzhou", attempts=3)),  # two retries: three calls
        (7.0, "batch", {**batch(2, "cn-hangzhou", "failed"), "failures": 50}),
        (8.0, "batch", batch(3, "cn-hangzhou")),
        (8.0, "batch_start", start(6, "cn-beijing")),
        (8.0, "batch_start", start(7, "cn-beijing")),
        (9.0, "batch", batch(6, "cn-beijing")),
    ]
    for n in range(30):
        state = "failed" if n < 3 else "succeeded"
        events.append((9.5, "instance", {"region": "cn-hangzhou", "state": state, "failures": 53}))
    return events


def test_model_counts_batches_instances_and_in_flight() -> None:
    """Batches done / in flight / left and instance outcomes per region follow the events."""
    view = fed(scenario()).view(10.0)
    hz, bj = (
        next(r for r in view.regions if r.region == name) for name in ("cn-hangzhou", "cn-beijing")
    )
    assert [r.region for r in view.regions] == ["cn-beijing", "cn-hangzhou"]  # sorted
    assert (hz.batches_done, hz.in_flight, hz.batches_left) == (4, 2, 6)
    assert (bj.batches_done, bj.in_flight, bj.batches_left) == (1, 1, 6)
    # 3 accepted batches x 50 invoked, 30 results in (3 failed); the failed batch: 50 failed.
    assert (hz.succeeded, hz.failed, hz.excluded, hz.running) == (27, 53, 6, 120)
    assert (bj.succeeded, bj.failed, bj.excluded, bj.running) == (0, 0, 4, 50)
    assert view.total("instances") == 1000


def test_model_tracks_wave_budget_and_quota_left() -> None:
    """The current wave, the error budget and quota left (one call per attempt) are tracked."""
    view = fed(scenario()).view(10.0)
    assert (view.wave, view.waves, view.waves_done) == (2, 3, 1)
    assert (view.failures, view.allowed, view.halted) == (53, 25, False)
    hz = next(r for r in view.regions if r.region == "cn-hangzhou")
    assert hz.quota_left == 100 - 6  # 1 + 3 + 1 + 1 calls
    model = fed([*scenario(), (10.0, "halted", {"failures": 53, "allowed": 25})])
    assert model.view(10.0).halted


def test_rate_is_calls_over_the_last_seconds_and_eta_follows() -> None:
    """The rate counts the calls of the last RATE_WINDOW_S seconds; the ETA is what is left over it."""
    view = fed(scenario()).view(10.0)
    hz = next(r for r in view.regions if r.region == "cn-hangzhou")
    # Calls at 6.0 (3), 7.0 (1), 8.0 (1) are within 5 s of 10.0; the one at 1.0 is not.
    assert hz.rate_per_s == pytest.approx(5 / RATE_WINDOW_S)
    assert hz.eta_s == pytest.approx((6 + 2) / (5 / RATE_WINDOW_S))
    assert hz.note == "dispatching"
    later = fed(scenario()).view(30.0)  # nothing for 20 s: the average since the first call
    hz_later = next(r for r in later.regions if r.region == "cn-hangzhou")
    assert hz_later.rate_per_s == 0
    assert hz_later.eta_s == pytest.approx(8 / (6 / (30.0 - 1.0)))


def test_region_short_of_quota_shows_it_instead_of_an_eta() -> None:
    """Beijing has 5 calls left for 7 open batches: "quota short"; a quota outcome: "no quota"."""
    view = fed(scenario()).view(10.0)
    bj = next(r for r in view.regions if r.region == "cn-beijing")
    assert (bj.quota_left, bj.note, bj.eta_s) == (4, "quota short", None)
    parked = fed([*scenario(), (9.6, "batch", batch(7, "cn-beijing", "quota", attempts=0))])
    bj = next(r for r in parked.view(10.0).regions if r.region == "cn-beijing")
    assert (bj.quota_left, bj.note, bj.in_flight, bj.batches_done) == (0, "no quota", 0, 1)


def test_a_region_with_everything_in_reads_done() -> None:
    """All batches done and every result in: the region reads "done", no ETA."""
    events: list[tuple[float, str, dict[str, Any]]] = [
        (0.0, "run", {"run_id": "r1", "regions": {"cn-hangzhou": {"batches": 1, "instances": 2}}}),
        (0.1, "batch_start", start(0, "cn-hangzhou")),
        (0.5, "batch", {**batch(0, "cn-hangzhou"), "instances": 2}),
        (0.6, "instance", {"region": "cn-hangzhou", "state": "succeeded"}),
    ]
    mid = fed(events).view(0.7).regions[0]
    assert (mid.note, mid.running) == ("results", 1)
    done = fed([*events, (0.8, "instance", {"region": "cn-hangzhou", "state": "succeeded"})])
    region = done.view(1.0).regions[0]
    assert (region.note, region.eta_s, region.succeeded, region.running) == ("done", None, 2, 0)


def test_twenty_thousand_batches_leave_only_the_rate_window() -> None:
    """A run's worth of events (20 000 batches: start and end) leaves nothing in flight and only
    the last RATE_WINDOW_S seconds of calls: what an event costs does not grow with the run."""
    model = ProgressModel()
    model.feed("run", {"run_id": "r", "regions": {"cn-hangzhou": {"batches": 20_000}}}, 0.0)
    for i in range(20_000):
        model.feed("batch_start", start(i, "cn-hangzhou"), i / 100)
        model.feed("batch", batch(i, "cn-hangzhou"), i / 100 + 0.005)
    region = model.view(200.0).regions[0]
    assert (region.batches_done, region.in_flight, region.batches_left) == (20_000, 0, 0)
    assert region.rate_per_s == pytest.approx(100.0)  # one call every 10 ms
    counters = model._regions["cn-hangzhou"]
    assert not counters.started
    assert len(counters.calls) <= RATE_WINDOW_S * 100 + 1


def test_planned_regions_counts_batches_instances_exclusions_and_quota() -> None:
    """The "run" event's regions: batches, instances (excluded included), the daily quota each
    region uses (the account's own where read: cn-beijing's here) and what is left of it."""
    batches = [
        BatchRecord(f"b{i}", "r", region, i, 0, ("i-1", "i-2"), "t", BatchState.PENDING)
        for i, region in enumerate(["cn-hangzhou", "cn-hangzhou", "cn-beijing"])
    ]
    excluded = {("cn-beijing", "i-9"): "stopped", ("cn-shanghai", "i-8"): "classic"}
    quotas = RegionQuotas(
        QuotaPolicy(daily_quota=100, reserve=10), {"cn-beijing": RegionLimit(50, "api", 50)}
    )
    regions = planned_regions(batches, excluded, quotas, {"cn-hangzhou": (30, 0.0)})
    assert regions == {
        "cn-beijing": {
            "batches": 1,
            "instances": 3,
            "excluded": 1,
            "pending": 2,
            "daily_quota": 50,
            "quota_left": 40,
        },
        "cn-hangzhou": {
            "batches": 2,
            "instances": 4,
            "excluded": 0,
            "pending": 4,
            "daily_quota": 100,
            "quota_left": 60,
        },
        "cn-shanghai": {
            "batches": 0,
            "instances": 1,
            "excluded": 1,
            "daily_quota": 100,
            "quota_left": 90,
        },
    }


def test_stored_regions_let_a_resumed_run_start_from_what_is_done(tmp_path: Path) -> None:
    """The "resume" event's regions come from the ledger: done batches, invoked instances,
    exclusions; the model starts from them."""
    store = open_ledger(str(tmp_path / "ledger.sqlite3"))
    ids = tuple(f"i-{n}" for n in range(4))
    more = tuple(f"i-{n}" for n in range(4, 8))
    run = RunRecord("r1", 1.0, 1.0, RunState.QUOTA, "c-1", "acct", 9)
    store.create_run(
        run,
        [
            BatchRecord(
                "b0", "r1", "cn-hangzhou", 0, 0, ids, "t0", BatchState.ACCEPTED, 1, invoke_id="t-1"
            ),
            BatchRecord("b1", "r1", "cn-hangzhou", 1, 0, more, "t1", BatchState.PENDING),
        ],
        [
            InstanceRecord(
                "r1", "cn-hangzhou", "i-x", None, InstanceState.EXCLUDED, reason="stopped"
            )
        ],
    )
    regions = stored_regions(store, run, RegionQuotas(), time.time())
    store.close()
    assert regions["cn-hangzhou"] == {
        "batches": 2,
        "batches_done": 1,
        "instances": 9,
        "invoked": 4,
        "pending": 4,
        "excluded": 1,
        "daily_quota": 5000,
        "quota_left": 5000,
    }
    model = ProgressModel()
    model.feed("resume", {"run_id": "r1", "state": "quota", "allowed": None, "regions": regions}, 0)
    region = model.view(1.0).regions[0]
    assert (region.batches_done, region.batches_left, region.running, region.excluded) == (
        1,
        1,
        4,
        1,
    )


def test_confirmation_summary_shows_calls_and_quota_per_region() -> None:
    """The TTY prompt's summary: targets, calls and quota left per region, and a quota warning."""
    calls = [("cn-hangzhou", 50), ("cn-hangzhou", 20), ("cn-beijing", 50)]
    text = confirm_summary("c-abc", calls, {"cn-hangzhou": 1, "cn-beijing": 5000})
    lines = text.splitlines()
    assert lines[0].startswith(
        "About to invoke c-abc on 120 instances in 2 regions: 3 InvokeCommand"
    )
    assert lines[2].split() == ["cn-beijing", "50", "1", "5000"]
    assert lines[3].split() == ["cn-hangzhou", "70", "2", "1"]
    assert "quota short in cn-hangzhou (1 call over)" in lines[4]


def test_confirmation_summary_counts_one_as_one() -> None:
    """One instance in one region with one call reads in the singular (not `1 regions`)."""
    text = confirm_summary("c-abc", [("cn-hangzhou", 1)], {"cn-hangzhou": 2})
    assert text.splitlines()[0] == (
        "About to invoke c-abc on 1 instance in 1 region: 1 InvokeCommand call."
    )

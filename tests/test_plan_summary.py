"""The `fanout plan` document: per-region targets, exclusions, calls, quota left and ETA, from data
and `now` alone."""

from __future__ import annotations

from typing import Any

import pytest

from fanout.plan_summary import plan_document
from fanout.settings import Settings
from fanout.targets import Target

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z
NOW_ISO = "2026-11-18T11:06:40Z"
DAY_S = 86_400.0


def targets(region: str, count: int) -> list[Target]:
    """`count` distinct targets in `region`."""
    return [Target(region, f"i-{region[-4:]}{n:016x}") for n in range(count)]


def without_finish_times(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without its `finishes_at` fields (top level and per region)."""
    regions = {
        name: {k: v for k, v in region.items() if k != "finishes_at"}
        for name, region in doc["regions"].items()
    }
    return {**{k: v for k, v in doc.items() if k != "finishes_at"}, "regions": regions}


def test_no_targets_is_an_empty_plan() -> None:
    """No targets: no call needed, no day, no finish time, and nothing spent."""
    doc = plan_document([], {}, Settings(), {}, duplicates=0, now=NOW)
    assert doc == {
        "targets": 0,
        "duplicates_dropped": 0,
        "batch_size": 50,
        "calls_needed": 0,
        "excluded": 0,
        "days": 0,
        "finishes_at": None,
        "quota_mode": "rolling",
        "regions": {},
        "waves": [],
        "wave_order": "spread",
        "spends_quota": False,
    }


@pytest.mark.parametrize(
    ("count", "calls"), [(1, 1), (49, 1), (50, 1), (51, 2), (100, 2), (101, 3), (10_000, 200)]
)
def test_one_call_per_batch_of_at_most_batch_size(count: int, calls: int) -> None:
    """A region needs one InvokeCommand per batch of at most `batch_size` targets."""
    doc = plan_document(targets("cn-hangzhou", count), {}, Settings(), {}, duplicates=0, now=NOW)
    region = doc["regions"]["cn-hangzhou"]
    assert doc["calls_needed"] == region["calls_needed"] == region["batches"] == calls
    assert region["targets"] == doc["targets"] == count
    assert region["calls_now"] == calls
    assert region["quota_left_now"] == 5000
    assert region["days"] == doc["days"] == 1


def test_exclusions_are_counted_by_reason_and_need_no_call() -> None:
    """Excluded targets stay in the target counts, are counted by reason per region, and are
    left out of the batches."""
    hangzhou, beijing = targets("cn-hangzhou", 60), targets("cn-beijing", 3)
    excluded = {
        **{(t.region, t.instance_id): "stopped" for t in hangzhou[:8]},
        (hangzhou[8].region, hangzhou[8].instance_id): "agent offline",
        **{(t.region, t.instance_id): "classic network" for t in beijing},
    }
    doc = plan_document([*hangzhou, *beijing], excluded, Settings(), {}, duplicates=2, now=NOW)
    assert list(doc["regions"]) == ["cn-beijing", "cn-hangzhou"]  # sorted by name
    assert doc["targets"] == 63
    assert doc["excluded"] == 12
    assert doc["duplicates_dropped"] == 2
    assert doc["calls_needed"] == 2  # 51 kept in cn-hangzhou; none in cn-beijing
    hz, bj = doc["regions"]["cn-hangzhou"], doc["regions"]["cn-beijing"]
    assert (hz["targets"], hz["excluded"], hz["calls_needed"]) == (60, 9, 2)
    assert hz["excluded_by_reason"] == {"stopped": 8, "agent offline": 1}
    assert (bj["targets"], bj["excluded"], bj["calls_needed"]) == (3, 3, 0)
    assert bj["excluded_by_reason"] == {"classic network": 3}
    assert (bj["days"], bj["finish_after_s"], bj["finishes_at"]) == (0, 0.0, NOW_ISO)


def test_a_short_quota_spills_into_the_next_quota_day() -> None:
    """With one call left today and two needed, the last call goes on quota day 2, a day from
    now; the document's days and finish time are the latest region's."""
    settings = Settings(daily_quota=3)
    doc = plan_document(
        [*targets("cn-hangzhou", 60), *targets("cn-beijing", 1)],
        {},
        settings,
        {"cn-hangzhou": (2, NOW - 60.0)},
        duplicates=0,
        now=NOW,
    )
    hz, bj = doc["regions"]["cn-hangzhou"], doc["regions"]["cn-beijing"]
    assert (hz["quota_left_now"], hz["calls_needed"], hz["calls_now"]) == (1, 2, 1)
    assert (hz["days"], hz["finish_after_s"]) == (2, DAY_S)
    assert hz["finishes_at"] == "2026-11-19T11:06:40Z"
    assert (bj["quota_left_now"], bj["days"]) == (3, 1)
    assert doc["days"] == 2
    assert doc["finishes_at"] == hz["finishes_at"]


def test_the_reserve_is_kept_back_from_the_quota_left() -> None:
    """The quota left now is the daily quota less the reserve and what was used."""
    settings = Settings(daily_quota=100, quota_reserve=30)
    doc = plan_document(
        targets("cn-hangzhou", 1), {}, settings, {"cn-hangzhou": (20, NOW)}, duplicates=0, now=NOW
    )
    assert doc["regions"]["cn-hangzhou"]["quota_left_now"] == 50


@pytest.mark.parametrize(
    ("rate_per_s", "region_concurrency", "finish_after_s"),
    [
        (1.0, 8, 4.0),  # 5 calls at 1/s: the last one 4 s from now
        (0.0, 8, 0.1),  # no rate limit: 8 in flight at 0.2 s each, 40 calls/s
        (0.0, 1, 0.8),  # one in flight: 5 calls/s
    ],
)
def test_the_eta_follows_the_rate_and_the_concurrency(
    rate_per_s: float, region_concurrency: int, finish_after_s: float
) -> None:
    """Calls go at the lower of --rate and what the per-region concurrency sustains."""
    settings = Settings(rate_per_s=rate_per_s, region_concurrency=region_concurrency)
    doc = plan_document(targets("cn-hangzhou", 250), {}, settings, {}, duplicates=0, now=NOW)
    assert doc["regions"]["cn-hangzhou"]["finish_after_s"] == finish_after_s


def test_now_dates_the_finish_time_and_nothing_else() -> None:
    """The same inputs give the same document, except the finish times, which move with `now`."""
    fleet = targets("cn-hangzhou", 500)
    settings = Settings(rate_per_s=1.0)
    first = plan_document(fleet, {}, settings, {}, duplicates=0, now=NOW)
    again = plan_document(fleet, {}, settings, {}, duplicates=0, now=NOW)
    later = plan_document(fleet, {}, settings, {}, duplicates=0, now=NOW + 3600)
    assert first == again
    assert first["finishes_at"] == first["regions"]["cn-hangzhou"]["finishes_at"]
    assert first["finishes_at"] == "2026-11-18T11:06:49Z"  # 10 calls at 1/s
    assert later["finishes_at"] == "2026-11-18T12:06:49Z"
    assert without_finish_times(first) == without_finish_times(later)


def test_calendar_quota_mode_is_reported() -> None:
    """The document names the quota accounting in force."""
    doc = plan_document([], {}, Settings(quota_mode="calendar"), {}, duplicates=0, now=NOW)
    assert doc["quota_mode"] == "calendar"

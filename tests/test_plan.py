"""The plan: waves, per-region batches, deterministic ids and tokens, and the quota ETA."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.errors import ConfigError, TargetError
from fanout.plan import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    Plan,
    RegionPlan,
    batch_id,
    client_token,
    estimate_region,
    make_plan,
    parse_waves,
)
from fanout.targets import Target

RUN = "r20261128-063512-a1b2c3"
REGIONS = ("cn-hangzhou", "cn-beijing", "ap-southeast-1")


def fleet(count: int, regions: tuple[str, ...] = REGIONS) -> list[Target]:
    """`count` distinct targets spread round-robin over `regions`."""
    return [Target(regions[n % len(regions)], f"i-{n:020x}") for n in range(count)]


def check_plan(plan: Plan, targets: list[Target], batch_size: int) -> None:
    """Assert the structural invariants every plan must satisfy."""
    placed = [Target(b.region, i) for b in plan.batches for i in b.instance_ids]
    assert Counter(placed) == Counter(targets)  # every target in exactly one batch
    assert all(1 <= len(b.instance_ids) <= batch_size for b in plan.batches)
    assert [b.seq for b in plan.batches] == list(range(len(plan.batches)))
    assert [b.wave for b in plan.batches] == sorted(b.wave for b in plan.batches)
    tokens = [b.client_token for b in plan.batches]
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) <= 64 and t.isascii() for t in tokens)
    assert len({b.batch_id for b in plan.batches}) == len(plan.batches)
    assert plan.target_count == len(targets)
    assert sum(r.targets for r in plan.regions) == len(targets)
    assert sum(r.batches for r in plan.regions) == len(plan.batches)
    assert [r.region for r in plan.regions] == sorted(r.region for r in plan.regions)
    cumulative = 0
    for wave, bound in enumerate(plan.waves):
        in_wave = [b for b in plan.batches if b.wave == wave]
        cumulative += sum(len(b.instance_ids) for b in in_wave)
        assert cumulative == bound  # wave boundaries are exactly the requested cumulative counts
        assert [b.region for b in in_wave] == sorted(b.region for b in in_wave)


@pytest.mark.parametrize("batch_size", [1, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE])
@pytest.mark.parametrize("count", [0, 1, 49, 50, 51, 10_000])
def test_plan_edges_keep_every_invariant(count: int, batch_size: int) -> None:
    """Edge fleet sizes and batch sizes give complete, bounded, single-region batches."""
    targets = fleet(count)
    plan = make_plan(RUN, targets, batch_size=batch_size)
    check_plan(plan, targets, batch_size)
    per_region = Counter(t.region for t in targets)
    assert len(plan.batches) == sum(math.ceil(n / batch_size) for n in per_region.values())
    assert plan.waves == ((count,) if count else ())


@pytest.mark.parametrize("count", [49, 50, 51])
def test_single_region_cuts_at_the_batch_size(count: int) -> None:
    """One region of 49/50/51 targets gives batches of 49 / 50 / 50+1."""
    plan = make_plan(RUN, fleet(count, ("cn-beijing",)))
    assert [len(b.instance_ids) for b in plan.batches] == [
        min(count, 50),
        *([1] if count == 51 else []),
    ]
    assert plan.regions == (RegionPlan("cn-beijing", count, len(plan.batches)),)


@pytest.mark.parametrize("batch_size", [0, -1, MAX_BATCH_SIZE + 1, 1000])
def test_batch_size_outside_the_api_limit_is_refused(batch_size: int) -> None:
    """A batch size outside 1..100 is a ConfigError naming the flag."""
    with pytest.raises(ConfigError, match="--batch-size"):
        make_plan(RUN, fleet(10), batch_size=batch_size)


def test_batches_keep_input_order_within_a_region() -> None:
    """Ids keep their input order inside each region's batches."""
    targets = fleet(7, ("cn-beijing",))[::-1]
    plan = make_plan(RUN, targets, batch_size=3)
    assert [i for b in plan.batches for i in b.instance_ids] == [t.instance_id for t in targets]


def test_plan_is_deterministic_and_run_specific() -> None:
    """The same input gives the identical plan; another run id gives other ids and tokens."""
    targets = fleet(500)
    waves = parse_waves("1,10%,100%", 500)
    first = make_plan(RUN, targets, batch_size=7, waves=waves)
    assert make_plan(RUN, list(targets), batch_size=7, waves=waves) == first
    other = make_plan("r20261128-063512-ffffff", targets, batch_size=7, waves=waves)
    assert {b.client_token for b in other.batches}.isdisjoint(b.client_token for b in first.batches)
    assert {b.batch_id for b in other.batches}.isdisjoint(b.batch_id for b in first.batches)


def test_waves_slice_in_input_order_and_group_regions_within_each() -> None:
    """Wave 0 holds the first targets; seq runs across waves, regions sorted inside a wave."""
    targets = fleet(10)
    plan = make_plan(RUN, targets, batch_size=2, waves=(1, 4, 10))
    assert plan.waves == (1, 4, 10)
    assert [(b.wave, b.region, len(b.instance_ids)) for b in plan.batches[:3]] == [
        (0, "cn-hangzhou", 1),
        (1, "ap-southeast-1", 1),
        (1, "cn-beijing", 1),
    ]
    assert plan.batches[0].instance_ids == (targets[0].instance_id,)
    check_plan(plan, targets, 2)


@pytest.mark.parametrize("waves", [(5,), (0, 10), (5, 5, 10), (6, 4, 10), (5, 11), ()])
def test_waves_that_do_not_cover_the_targets_are_refused(waves: tuple[int, ...]) -> None:
    """Wave bounds must rise strictly and end at the target count."""
    with pytest.raises(ConfigError, match="waves"):
        make_plan(RUN, fleet(10), waves=waves)


def test_a_target_given_twice_is_refused() -> None:
    """Planning a repeated target would invoke it twice, so it is refused."""
    targets = [*fleet(3), Target("cn-beijing", "i-" + "0" * 19 + "1")]
    with pytest.raises(TargetError, match=r"target cn-beijing,i-0{19}1 is given twice"):
        make_plan(RUN, targets, waves=(1, 4))


def test_same_id_in_two_regions_is_two_targets() -> None:
    """Targets are (region, id) pairs: one id in two regions is planned twice, once per region."""
    targets = [Target("cn-beijing", "i-aaaaaaaa"), Target("cn-hangzhou", "i-aaaaaaaa")]
    assert len(make_plan(RUN, targets).batches) == 2


@pytest.mark.parametrize(
    ("spec", "total", "expected"),
    [
        (None, 1000, (1000,)),
        ("", 1000, (1000,)),
        ("  ", 7, (7,)),
        ("1,10%,50%,100%", 1000, (1, 100, 500, 1000)),
        ("10%", 1000, (100, 1000)),
        ("1, 10%", 1000, (1, 100, 1000)),
        ("50%,50%,100%", 1000, (500, 1000)),
        ("1,2000", 1000, (1, 1000)),
        ("33.3%", 10, (4, 10)),
        ("0.1%", 10, (1, 10)),
        ("1%,2%", 10, (1, 10)),
        ("100%", 1, (1,)),
        ("1,10%,100%", 0, ()),
        (None, 0, ()),
    ],
)
def test_parse_waves_resolves_cumulative_counts(
    spec: str | None, total: int, expected: tuple[int, ...]
) -> None:
    """Counts and percentages (rounded up, at least 1) resolve, merge and end at the total."""
    assert parse_waves(spec, total) == expected


@pytest.mark.parametrize(
    ("spec", "culprit"),
    [
        ("0", "'0'"),
        ("0%", "'0%'"),
        ("150%", "'150%'"),
        ("abc", "'abc'"),
        ("1,,2", "empty element"),
        ("50%,10%", "'10%'"),
        ("-5", "'-5'"),
        ("1.5", "'1.5'"),
        ("nan%", "'nan%'"),
        ("10 %", "'10 %'"),
    ],
)
def test_parse_waves_errors_name_the_bad_element(spec: str, culprit: str) -> None:
    """A bad `--waves` element gives a one-line ConfigError quoting it."""
    with pytest.raises(ConfigError) as caught:
        parse_waves(spec, 1000)
    message = str(caught.value)
    assert message.startswith("--waves: ")
    assert culprit in message
    assert "\n" not in message


def test_client_token_is_short_ascii_and_depends_on_the_exact_ids() -> None:
    """The token fits the API's 64 ASCII chars and changes with the run, region or id set."""
    ids = ("i-aaaaaaaa", "i-bbbbbbbb")
    token = client_token(RUN, "cn-beijing", ids)
    assert token == client_token(RUN, "cn-beijing", list(ids))
    assert token.startswith("fo1-")
    assert len(token) == 60
    assert token.isascii()
    assert token != client_token(RUN, "cn-beijing", ids[:1])  # shrunk after isolating one
    assert token != client_token(RUN, "cn-hangzhou", ids)
    assert token != client_token(RUN + "x", "cn-beijing", ids)
    assert client_token("a", "b", ["c"]) != client_token(
        "a", "b,c", []
    )  # fields cannot run together


def test_batch_id_is_readable_and_bounded() -> None:
    """Batch ids read run-region-seq and stay within 80 characters for long run ids."""
    assert batch_id(RUN, "cn-beijing", 7) == f"{RUN}-cn-beijing-000007"
    long_id = batch_id("r" * 100, "cn-shanghai-finance-1", 123)
    assert len(long_id) <= 80
    assert long_id.endswith("-000123")
    assert long_id == batch_id("r" * 100, "cn-shanghai-finance-1", 123)
    assert long_id != batch_id("r" * 101, "cn-shanghai-finance-1", 123)


def test_large_plan_of_200k_targets_in_20_regions_adds_up() -> None:
    """A 200 000-target, 20-region plan is built and its counts add up."""
    regions = tuple(f"cn-region-{n}" for n in range(20))
    targets = fleet(200_000, regions)
    plan = make_plan(RUN, targets, waves=parse_waves("1,10%,50%,100%", len(targets)))
    assert plan.waves == (1, 20_000, 100_000, 200_000)
    assert sum(len(b.instance_ids) for b in plan.batches) == 200_000
    assert [r.targets for r in plan.regions] == [10_000] * 20
    assert len(plan.batches) == sum(r.batches for r in plan.regions) == 4001
    assert max(len(b.instance_ids) for b in plan.batches) == DEFAULT_BATCH_SIZE


_TARGETS = st.lists(
    st.builds(Target, st.sampled_from(REGIONS), st.from_regex(r"i-[a-z0-9]{8}", fullmatch=True)),
    max_size=300,
    unique=True,
)
# Sorted counts or sorted percentages: each spec is cumulative, so it never crosses itself.
_WAVE_SPEC = st.one_of(
    st.lists(st.integers(1, 400), max_size=5).map(lambda xs: ",".join(map(str, sorted(xs)))),
    st.lists(st.integers(1, 100), max_size=5).map(lambda xs: ",".join(f"{p}%" for p in sorted(xs))),
)


@settings(max_examples=150, deadline=None)
@given(_TARGETS, st.integers(1, MAX_BATCH_SIZE), _WAVE_SPEC)
def test_plan_invariants_hold_for_any_fleet_and_waves(
    targets: list[Target], batch_size: int, spec: str
) -> None:
    """Any fleet, batch size and wave spec gives a plan with every invariant and stable ids."""
    waves = parse_waves(spec, len(targets))
    assert all(a < b for a, b in itertools.pairwise((0, *waves)))
    assert waves[-1:] == ((len(targets),) if targets else ())
    plan = make_plan(RUN, targets, batch_size=batch_size, waves=waves or None)
    assert plan.waves == waves
    check_plan(plan, targets, batch_size)
    assert make_plan(RUN, targets, batch_size=batch_size, waves=waves or None) == plan


def eta(calls: int, **overrides: object) -> tuple[int, float]:
    """(days, finish_after_s) for `calls` with sensible defaults and `overrides`."""
    options: dict[str, object] = {
        "quota_left_now": 5000,
        "daily_quota": 5000,
        "reserve": 0,
        "rate_per_s": None,
        "call_latency_s": 0.0,
        "concurrency": 10,
    }
    options.update(overrides)
    result = estimate_region("cn-beijing", calls, **options)  # type: ignore[arg-type]
    assert result.calls_needed == calls
    return result.days, result.finish_after_s


@pytest.mark.parametrize(
    ("calls", "overrides", "expected"),
    [
        (0, {}, (0, 0.0)),
        (1, {}, (1, 0.0)),
        (5000, {}, (1, 0.0)),
        (5000, {"rate_per_s": 10.0}, (1, 499.9)),
        (5001, {}, (2, 86_400.0)),
        (5001, {"quota_left_now": 0, "reserve": 4999}, (5002, 5001 * 86_400.0)),
        (10, {"quota_left_now": 0}, (2, 86_400.0)),
        (100, {"call_latency_s": 0.5, "concurrency": 5}, (1, 9.9)),
        (100, {"call_latency_s": 0.5, "concurrency": 5, "rate_per_s": 2.0}, (1, 49.5)),
        (12_000, {"quota_left_now": 1000, "reserve": 1000}, (4, 3 * 86_400.0)),
        (3, {"rate_per_s": 1 / 86_400, "quota_left_now": 1, "daily_quota": 1}, (3, 2 * 86_400.0)),
        (2, {"rate_per_s": 1 / 100_000, "quota_left_now": 2}, (1, 100_000.0)),
        (4, {"rate_per_s": 1 / 100_000, "quota_left_now": 2, "daily_quota": 2}, (2, 300_000.0)),
    ],
)
def test_estimate_region_days_and_finish_time(
    calls: int, overrides: dict[str, object], expected: tuple[int, float]
) -> None:
    """The ETA counts quota days and the time of the last call under rate and concurrency."""
    days, finish_s = eta(calls, **overrides)
    assert days == expected[0]
    assert finish_s == pytest.approx(expected[1])


def test_estimate_region_reports_inputs_back() -> None:
    """The ETA echoes the region and clamps a negative quota left to zero."""
    result = estimate_region(
        "cn-beijing",
        3,
        quota_left_now=-5,
        daily_quota=5000,
        reserve=100,
        rate_per_s=None,
        call_latency_s=0.0,
        concurrency=1,
    )
    assert (result.region, result.quota_left_now, result.days) == ("cn-beijing", 0, 2)


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"quota_left_now": 0, "reserve": 5000}, "--quota-reserve"),
        ({"rate_per_s": 0.0}, "--rate"),
        ({"concurrency": 0}, "--concurrency"),
        ({"call_latency_s": -1.0}, "latency"),
    ],
)
def test_estimate_region_refuses_impossible_settings(
    overrides: dict[str, object], flag: str
) -> None:
    """Settings under which the calls could never go are a ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=flag):
        eta(10, **overrides)


def _fleet(sizes: dict[str, int]) -> list[Target]:
    """Targets region by region, in input order (the order a targets file often has)."""
    return [Target(r, f"i-{r[-4:]}{n:06d}") for r, size in sizes.items() for n in range(size)]


def test_a_spread_canary_has_instances_in_every_region() -> None:
    """A 1 % wave of a 3-region fleet (listed region by region) takes instances from all three."""
    targets = _fleet({"cn-beijing": 325, "cn-hangzhou": 325, "cn-shanghai": 325})
    plan = make_plan("r", targets, waves=parse_waves("1%,10%,100%", len(targets)))
    first = [b for b in plan.batches if b.wave == 0]
    assert {b.region for b in first} == {"cn-beijing", "cn-hangzhou", "cn-shanghai"}
    assert sum(len(b.instance_ids) for b in first) == 10  # ceil(1 % of 975)
    per_wave: Counter[int] = Counter()
    for b in plan.batches:
        per_wave[b.wave] += len(b.instance_ids)
    assert list(itertools.accumulate(per_wave[w] for w in sorted(per_wave))) == [10, 98, 975]


def test_region_by_region_keeps_the_input_order() -> None:
    """`--wave-order region-by-region`: the first wave is the first targets of the input."""
    targets = _fleet({"cn-beijing": 325, "cn-hangzhou": 325, "cn-shanghai": 325})
    plan = make_plan("r", targets, waves=parse_waves("1%,100%", 975), wave_order="region-by-region")
    assert {b.region for b in plan.batches if b.wave == 0} == {"cn-beijing"}


def test_an_unknown_wave_order_is_refused() -> None:
    """A wave order other than spread / region-by-region is a ConfigError naming the choices."""
    with pytest.raises(ConfigError, match="spread, region-by-region"):
        make_plan("r", _fleet({"cn-beijing": 3}), wave_order="random")


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 100), min_size=1, max_size=5),
)
def test_spread_waves_cover_every_target_once_and_reach_every_region(
    sizes: list[int], cuts: list[int]
) -> None:
    """Spread waves: every target in exactly one batch, each wave's cumulative size is at least
    its bound, and a wave whose bound reaches the region count has every region in it or before."""
    regions = [f"cn-region{n}" for n in range(len(sizes))]
    targets = _fleet(dict(zip(regions, sizes, strict=True)))
    spec = ",".join(f"{c}%" for c in sorted(cuts))
    waves = parse_waves(spec, len(targets))
    plan = make_plan("r", targets, waves=waves)
    placed = [(b.region, i) for b in plan.batches for i in b.instance_ids]
    assert sorted(placed) == sorted((t.region, t.instance_id) for t in targets)
    cumulative = 0
    for wave, bound in enumerate(waves):
        cumulative += sum(len(b.instance_ids) for b in plan.batches if b.wave == wave)
        assert cumulative >= bound
        if bound >= len(regions):
            assert {b.region for b in plan.batches if b.wave <= wave} == set(regions)
    assert cumulative == len(targets)

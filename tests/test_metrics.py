"""Metrics from the run's event stream (issue 17): the totals's counts, the OpenMetrics file
(parsed by prometheus_client's own parser, replaced atomically) and /metrics on 127.0.0.1."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from fanout.metrics import MetricsFile, MetricsServer, metrics_registry
from fanout.run_totals import RunTotals
from tests.test_notify import HALTED_RUN, RUN


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an OpenMetrics text: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        for s in family.samples
    }


def test_the_tally_follows_the_events_and_takes_the_ledgers_counts_at_the_end() -> None:
    """Batches and instances move state by state; the end event's counts replace them."""
    totals = RunTotals(quota_limit=5000)
    for kind, data in HALTED_RUN[:7]:
        totals.feed(kind, data)
    snap = totals.snapshot()
    assert snap.batches == {"pending": 1, "done": 0, "sending": 0, "accepted": 1}
    assert (snap.instances["pending"], snap.instances["invoked"], snap.instances["succeeded"]) == (
        50,
        49,
        1,
    )
    assert snap.calls == {("InvokeCommand", "cn-beijing"): 1}
    assert snap.wave == 1
    for kind, data in HALTED_RUN[7:]:
        totals.feed(kind, data)
    snap = totals.snapshot()
    assert snap.halt_reason == "budget"
    assert snap.instances["not_invoked"] == 49
    assert (snap.state, snap.exit_code, snap.failures, snap.allowed) == ("halted", 3, 2, 1)


def test_the_metrics_file_is_openmetrics_and_replaced_whole(tmp_path: Path) -> None:
    """The file parses with prometheus_client's OpenMetrics parser and ends with # EOF."""
    totals = RunTotals(quota_limit=4990)
    path = tmp_path / "textfile" / "fanout.prom"
    writer = MetricsFile(path, metrics_registry(totals, quota_limit=4990), interval_s=0.05)
    writer.start()
    for kind, data in HALTED_RUN:
        totals.feed(kind, data)
    totals.feed("call", {"action": "DescribeInvocations", "region": "cn-beijing", "error_code": "Throttling.User"})  # fmt: skip
    writer.close()
    text = path.read_text()
    assert text.endswith("# EOF\n")
    samples = _samples(text)
    assert samples[("fanout_api_calls_total", (("action", "InvokeCommand"), ("region", "cn-beijing")))] == 1  # fmt: skip
    assert samples[("fanout_api_errors_total", (("action", "DescribeInvocations"), ("code", "Throttling.User")))] == 1  # fmt: skip
    assert samples[("fanout_instances", (("state", "failed"),))] == 2
    assert samples[("fanout_quota_limit_calls", (("region", "cn-beijing"),))] == 4990
    assert samples[("fanout_halt_reason", (("fanout_halt_reason", "budget"),))] == 1
    assert samples[("fanout_halt_reason", (("fanout_halt_reason", "quota"),))] == 0
    assert samples[("fanout_run_info", (("run_id", RUN), ("state", "halted")))] == 1
    assert samples[("fanout_wave", ())] == 2
    assert [p.name for p in path.parent.iterdir()] == ["fanout.prom"]  # no temporary left


def test_each_regions_limit_is_its_own_daily_quota_less_the_reserve() -> None:
    """The run event carries each region's daily quota (the account's own, read from the API,
    or configured): the limit metric and the quota used are per region, not one number."""
    totals = RunTotals(quota_limit=4990, quota_reserve=10)
    regions = {
        "cn-beijing": {"batches": 1, "instances": 2, "excluded": 0, "daily_quota": 500, "quota_left": 480},
        "cn-hangzhou": {"batches": 1, "instances": 2, "excluded": 0, "daily_quota": 5000, "quota_left": 4990},
    }  # fmt: skip
    totals.feed(
        "run", {"run_id": RUN, "targets": 4, "batches": 2, "excluded": 0, "regions": regions}
    )
    snap = totals.snapshot()
    assert snap.quota_limits == {"cn-beijing": 490, "cn-hangzhou": 4990}
    assert snap.quota_used == {"cn-beijing": 10, "cn-hangzhou": 0}
    assert "daily_quota" not in snap.instances
    samples = _samples(_openmetrics(totals))
    assert samples[("fanout_quota_limit_calls", (("region", "cn-beijing"),))] == 490
    assert samples[("fanout_quota_limit_calls", (("region", "cn-hangzhou"),))] == 4990


def _openmetrics(totals: RunTotals) -> str:
    """The registry's text as the metrics file would hold it."""
    data: bytes = generate_latest(metrics_registry(totals, quota_limit=4990))  # type: ignore[no-untyped-call]
    return data.decode()


def test_metrics_are_served_on_loopback_only() -> None:
    """/metrics answers on 127.0.0.1 with the current numbers, and stops when closed."""
    totals = RunTotals()
    server = MetricsServer(metrics_registry(totals), 0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        totals.feed(*HALTED_RUN[0])
        totals.feed(*HALTED_RUN[3])
        request = urllib.request.Request(
            server.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
        assert _samples(text)[("fanout_api_calls_total", (("action", "InvokeCommand"), ("region", "cn-beijing")))] == 1  # fmt: skip
    finally:
        server.close()

"""Metrics of a live run for the team's monitoring: `--metrics-file PATH` / `--metrics-port N`.

The numbers come from the run's event stream through a `RunTotals`; this module only exposes them,
with the official `prometheus_client`: a custom collector reads a snapshot at each scrape or
write, so a metric is never half updated. `MetricsFile` rewrites an OpenMetrics text file every
`interval_s` and once more at the end (written beside, then renamed over: node_exporter's
textfile collector never reads half a file); `MetricsServer` serves `/metrics` on 127.0.0.1 only.

    fanout_instances{state}                  gauge    instances by state (this run)
    fanout_batches{state}                    gauge    batches by state
    fanout_api_calls_total{action,region}    counter  API requests sent (InvokeCommand, Describe*)
    fanout_api_errors_total{action,code}     counter  requests answered with an error, by code
    fanout_quota_used_calls{region}          gauge    InvokeCommand calls counted in the quota window
    fanout_quota_limit_calls{region}         gauge    calls the window allows (daily quota - reserve)
    fanout_wave / fanout_waves               gauge    the current wave (from 1) / how many
    fanout_failures / fanout_failures_allowed gauge   failures counted against the error budget
    fanout_halt_reason{fanout_halt_reason}   stateset why dispatching stopped, if it did
    fanout_run_info{run_id,state}            info     which run these are
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.openmetrics.exposition import generate_latest

from fanout.run_totals import HALT_REASONS, RunTotals

__all__ = ["METRICS_HOST", "MetricsFile", "MetricsServer", "TotalsCollector", "metrics_registry"]

METRICS_HOST = "127.0.0.1"  # never another interface: the numbers name hosts and regions
log = structlog.get_logger("fanout.metrics")
_BATCH_STATES = ("pending", "sending", "accepted", "failed", "unknown", "done")


class TotalsCollector:
    """A prometheus_client collector: the run totals' snapshot as metric families."""

    __slots__ = ("_limit", "_totals")

    def __init__(self, totals: RunTotals, quota_limit: int | None = None) -> None:
        self._totals = totals
        self._limit = quota_limit

    def collect(self) -> Iterator[Metric]:
        """Every metric, from one snapshot."""
        snap = self._totals.snapshot()
        instances = GaugeMetricFamily("fanout_instances", "Instances by state", labels=["state"])
        for state, n in snap.instances.items():
            instances.add_metric([state], n)
        yield instances
        batches = GaugeMetricFamily("fanout_batches", "Batches by state", labels=["state"])
        for state in (*_BATCH_STATES, *sorted(set(snap.batches) - set(_BATCH_STATES))):
            batches.add_metric([state], snap.batches.get(state, 0))
        yield batches
        calls = CounterMetricFamily(
            "fanout_api_calls", "API requests sent", labels=["action", "region"]
        )
        for (action, region), n in sorted(snap.calls.items()):
            calls.add_metric([action, region], n)
        yield calls
        errors = CounterMetricFamily(
            "fanout_api_errors", "API requests answered with an error", labels=["action", "code"]
        )
        for (action, code), n in sorted(snap.errors.items()):
            errors.add_metric([action, code], n)
        yield errors
        yield from self._quota(snap.quota_used, snap.quota_limits)
        yield GaugeMetricFamily("fanout_wave", "The current wave, from 1", value=snap.wave)
        yield GaugeMetricFamily("fanout_waves", "Waves in the run", value=snap.waves)
        yield GaugeMetricFamily(
            "fanout_failures", "Failures counted against the error budget", value=snap.failures
        )
        if snap.allowed is not None:
            yield GaugeMetricFamily(
                "fanout_failures_allowed", "The error budget", value=snap.allowed
            )
        yield StateSetMetricFamily(
            "fanout_halt_reason",
            "Why dispatching stopped (none set: it did not)",
            value={reason: snap.halt_reason == reason for reason in HALT_REASONS},
        )
        yield InfoMetricFamily(
            "fanout_run",
            "The run these metrics are about",
            value={"run_id": snap.run_id or "", "state": snap.state or "running"},
        )

    def _quota(self, used: Mapping[str, int], limits: Mapping[str, int]) -> Iterator[Metric]:
        """Quota used and the limit per region (each region's own, as the run event says)."""
        used_family = GaugeMetricFamily(
            "fanout_quota_used_calls",
            "InvokeCommand calls counted in the quota window",
            labels=["region"],
        )
        limit_family = GaugeMetricFamily(
            "fanout_quota_limit_calls",
            "InvokeCommand calls the window allows (daily quota - reserve)",
            labels=["region"],
        )
        for region in sorted({*used, *limits}):
            used_family.add_metric([region], used.get(region, 0))
            limit = limits.get(region, self._limit)
            if limit is not None:
                limit_family.add_metric([region], limit)
        yield used_family
        yield limit_family


def metrics_registry(totals: RunTotals, quota_limit: int | None = None) -> CollectorRegistry:
    """A registry of its own (not the process-wide default) holding the run's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TotalsCollector(totals, quota_limit))
    return registry


class MetricsFile:
    """Rewrites an OpenMetrics text file from a registry: every `interval_s`, and at `close`."""

    __slots__ = ("_path", "_registry", "_stop", "_thread", "interval_s")

    def __init__(self, path: Path, registry: CollectorRegistry, interval_s: float = 5.0) -> None:
        self._path = path
        self._registry = registry
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self) -> None:
        """Write the metrics now: to a temporary file beside, then renamed over the path."""
        data: bytes = generate_latest(self._registry)  # type: ignore[no-untyped-call]
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=self._path.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            Path(tmp).chmod(0o644)  # read by the node exporter, which runs as another user
            Path(tmp).replace(self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def start(self) -> None:
        """Write now, then every `interval_s` on a daemon thread."""
        self.write()
        self._thread = threading.Thread(target=self._loop, name="fanout-metrics-file", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """The writer thread."""
        while not self._stop.wait(self.interval_s):
            try:
                self.write()
            except OSError as exc:  # a full disk must not end the run: try again next time
                log.warning("metrics_file_failed", error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Stop the thread and write the final numbers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.write()


class MetricsServer:
    """`/metrics` on 127.0.0.1:`port` while the run lives (port 0: any free port)."""

    __slots__ = ("_server", "_thread", "port")

    def __init__(self, registry: CollectorRegistry, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=METRICS_HOST, registry=registry)
        self.port: int = self._server.server_address[1]

    @property
    def url(self) -> str:
        """Where the metrics are served."""
        return f"http://{METRICS_HOST}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

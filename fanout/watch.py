"""What watches a run from outside it: metrics, notifications and the HTML report file.

`run`, `resume` and `retry` compose these subscribers with their own output: one `emit` goes
to the terminal or JSON lines, to the metrics' run totals and to the notifier, in that order. None of
them can change how the run goes: a report that cannot be written, a metrics file on a full
disk or a webhook that fails is logged, and the run and its exit code are what they would be.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from fanout.errors import ConfigError
from fanout.ledger import LedgerStore
from fanout.metrics import MetricsFile, MetricsServer, metrics_registry
from fanout.notify import Notifier, check_url
from fanout.report_io import check_output_file, html_report, write_file
from fanout.run_totals import RunTotals

__all__ = ["WatchOptions", "Watchers", "check_watch_options"]

Emit = Callable[[str, Mapping[str, object]], None]
log = structlog.get_logger("fanout.watch")


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """`--metrics-file`, `--metrics-port`, `--notify`, `--notify-format`, `--html-report`."""

    metrics_file: Path | None = None
    metrics_port: int | None = None
    metrics_interval_s: float = 5.0
    notify: tuple[str, ...] = ()
    notify_format: str = "json"
    html_report: Path | None = None


def check_watch_options(opts: WatchOptions) -> WatchOptions:
    """Refuse (exit 2) what the watchers would refuse once the run is under way - a webhook
    URL that is not http(s), a file in a folder that does not exist, a metrics port in use -
    so that a command checks them before any call and leaves no file."""
    for url in opts.notify:
        check_url(url)
    if opts.metrics_file is not None:
        check_output_file(opts.metrics_file, "--metrics-file")
    if opts.html_report is not None:
        check_output_file(opts.html_report, "--html-report")
    if opts.metrics_port:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", opts.metrics_port))
            except OSError as exc:
                msg = f"--metrics-port {opts.metrics_port}: cannot listen on it ({exc.strerror})"
                raise ConfigError(msg) from exc
    return opts


@dataclass(slots=True)
class Watchers:
    """The subscribers of one process's run; `close` them when the run returns."""

    options: WatchOptions
    store: LedgerStore
    quota_limit: int | None = None
    quota_reserve: int = 0
    totals: RunTotals = field(init=False)
    file: MetricsFile | None = field(init=False, default=None)
    server: MetricsServer | None = field(init=False, default=None)
    notifier: Notifier | None = field(init=False, default=None)
    _run_id: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        opts = self.options
        self.totals = RunTotals(quota_limit=self.quota_limit, quota_reserve=self.quota_reserve)
        if opts.notify:
            report = str(opts.html_report.resolve()) if opts.html_report else None
            self.notifier = Notifier(opts.notify, opts.notify_format, report=report)
        if opts.metrics_file is not None or opts.metrics_port is not None:
            registry = metrics_registry(self.totals, self.quota_limit)
            if opts.metrics_port is not None:
                self.server = MetricsServer(registry, opts.metrics_port)
            if opts.metrics_file is not None:
                self.file = MetricsFile(opts.metrics_file, registry, opts.metrics_interval_s)
                self.file.start()

    def emit(self, forward: Emit) -> Emit:
        """`forward` (the output), then the totals, the report file and the notifier."""

        def emit(kind: str, data: Mapping[str, object]) -> None:
            forward(kind, data)
            self.totals.feed(kind, data)
            if kind in ("run", "resume"):
                self._run_id = str(data.get("run_id"))
            if kind == "end":
                self._write_report()
            if self.notifier is not None:
                self.notifier.feed(kind, data)

        return emit

    def _write_report(self) -> None:
        """The HTML report at the end of the leg (before the end is notified: it names it)."""
        path = self.options.html_report
        if path is None or self._run_id is None:
            return
        try:
            write_file(path, html_report(self.store, self._run_id))
        except Exception as exc:  # noqa: BLE001 - a report never fails the rollout
            log.warning("html_report_failed", path=str(path), error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Send the last notifications, write the last metrics, stop serving."""
        if self.notifier is not None:
            self.notifier.close()
        if self.file is not None:
            try:
                self.file.close()
            except OSError as exc:
                log.warning("metrics_file_failed", error=f"{type(exc).__name__}: {exc}")
        if self.server is not None:
            self.server.close()

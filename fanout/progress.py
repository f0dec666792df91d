"""The live progress view on a terminal: the run's tally (`fanout.tally`) drawn by rich.

`LiveView` feeds a `ProgressModel` from the run's events under a lock and rich draws a snapshot
of it from its own refresh thread at a fixed low rate, so dispatch never waits for the terminal:
one table row per region, a total row, a header with the wave and the error budget. Without a
TTY nothing here is used: the CLI prints plain lines (`fanout.cli.views.Out`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fanout.tally import ProgressModel, ProgressView, RegionView

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

__all__ = ["REFRESH_PER_S", "LiveView", "render"]

# Redraws per second: readable, and cheap whatever the event rate (rendering is off the hot path).
REFRESH_PER_S = 4.0


def _duration(seconds: float | None) -> str:
    """12s, 4m05s, 2h10m; an em dash when unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _header(v: ProgressView) -> str:
    """The line above the table: run, wave, error budget, overall counts (rich markup)."""
    wave = f"wave {v.wave}/{v.waves}" if v.waves else "wave -"
    allowed = "no limit" if v.allowed is None else f"max {v.allowed}"
    budget = f"errors {v.failures} ({allowed})"
    if v.halted:
        budget = f"[bold red]HALTED: {budget}[/]"
    counts = f"{v.total('succeeded')}/{v.total('instances')} ok"
    state = f"[bold]{v.ended}[/]" if v.ended else _duration(v.elapsed_s)
    return f"[bold]{v.run_id}[/]  {wave}  {budget}  {counts}  {state}"


# One line under the table: what the short column titles mean.
_LEGEND = (
    "batches done/flight/left · instances ok/failed/unreach(able)/excl/running · rate: calls/s"
)
_COLUMNS = (
    "done", "flight", "left", "ok", "failed", "unreach", "excl", "running", "quota", "rate", "ETA",
)  # fmt: skip


def _cells(r: RegionView) -> tuple[str, ...]:
    """One region's row after its name."""
    failed = f"[red]{r.failed}[/]" if r.failed else "0"
    eta = _duration(r.eta_s) if r.note == "dispatching" else r.note
    return (
        str(r.batches_done),
        str(r.in_flight),
        str(r.batches_left),
        str(r.succeeded),
        failed + (f" [yellow]+{r.unknown}[/]" if r.unknown else ""),
        f"[magenta]{r.unreachable}[/]" if r.unreachable else "0",
        str(r.excluded),
        str(r.running),
        "?" if r.quota_left is None else str(r.quota_left),
        f"{r.rate_per_s:.1f}",
        eta,
    )


def render(v: ProgressView) -> RenderableType:
    """The live view: a header line (and, between two waves, the bake time left or the wave
    check running), one row per region, a total row, a legend."""
    from rich.console import Group  # noqa: PLC0415 - rich is loaded only when drawing
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(
        box=None,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
        show_footer=len(v.regions) > 1,
    )
    quotas = [r.quota_left for r in v.regions]
    totals = {
        "done": v.total("batches_done"),
        "flight": v.total("in_flight"),
        "left": v.total("batches_left"),
        "ok": v.total("succeeded"),
        "failed": v.total("failed"),
        "unreach": v.total("unreachable"),
        "excl": v.total("excluded"),
        "running": v.total("running"),
        "rate": f"{sum(r.rate_per_s for r in v.regions):.1f}",
        "quota": "" if None in quotas else sum(q or 0 for q in quotas),
    }
    table.add_column("region", footer="all", no_wrap=True)
    for title in _COLUMNS:
        table.add_column(title, footer=str(totals.get(title, "")), justify="right", no_wrap=True)
    for r in v.regions:
        table.add_row(r.region, *_cells(r))
    lines = [Text.from_markup(_header(v))]
    if v.between:  # between two waves: the bake time left, or the wave check running
        lines.append(Text(v.between, style="cyan"))
    return Group(*lines, table, Text(_LEGEND, style="dim"))


class LiveView:
    """The model on a rich Live display: events update it under a lock, rich redraws it."""

    __slots__ = ("_clock", "_console", "_live", "_lock", "_logger_factory", "model")

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.model = ProgressModel()
        self._console = console
        self._clock = clock
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._logger_factory: Any = None

    def feed(self, kind: str, data: Mapping[str, Any]) -> None:
        """One event: counters only (called on the event loop's thread)."""
        with self._lock:
            self.model.feed(kind, data, self._clock())

    def renderable(self) -> RenderableType:
        """The current drawing (called by rich's refresh thread)."""
        with self._lock:
            snapshot = self.model.view(self._clock())
        return render(snapshot)

    def start(self) -> None:
        """Start drawing; log lines go above the table instead of through it."""
        import structlog  # noqa: PLC0415
        from rich.live import Live  # noqa: PLC0415

        self._live = Live(
            console=self._console,
            get_renderable=self.renderable,
            refresh_per_second=REFRESH_PER_S,
            redirect_stdout=False,  # stdout carries the run id and documents, never the view
            redirect_stderr=True,
        )
        self._live.start()
        self._logger_factory = structlog.get_config()["logger_factory"]
        # sys.stderr is now rich's proxy: a log line is printed above the live table.
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    def stop(self) -> None:
        """Draw the last frame and leave it on the screen."""
        import structlog  # noqa: PLC0415

        if self._live is None:
            return
        self._live.stop()
        self._live = None
        structlog.configure(logger_factory=self._logger_factory)

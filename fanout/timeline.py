"""The report's timeline (pure): batches over time per region, waves, quota waits, halts.

Input is what the ledger keeps: each run's batches with their times (`BatchTimes`: first sent,
accepted, ended) and its event journal (`start`, `end`, `wave_start`, `wave`, `halted`,
`quota_wait`, `stop_requested`). Output is geometry in a fixed coordinate space, drawn as inline
SVG by the HTML template: one lane per (run, region), one mark per sent batch (dispatch ->
accepted -> last result, coloured by outcome), bands for waves and quota waits, markers for
halts, stops and ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fanout.ledger.model import BatchRecord, BatchState, BatchTimes, RunRecord

__all__ = [
    "WIDTH",
    "Band",
    "Lane",
    "Mark",
    "Marker",
    "RunTimes",
    "Tick",
    "Timeline",
    "build_timeline",
]

WIDTH = 1000.0  # the drawing's x range (SVG viewBox units); the browser scales it
LANE_HEIGHT = 18.0
_MIN_MARK_WIDTH = 1.2  # a batch that took no visible time still shows
_TICKS = 6
# End states that mark the timeline: the run stopped here and needed (or needs) a person.
_HALT_STATES = frozenset({"halted", "quota", "stopped", "fatal", "interrupted"})

Event = tuple[int, float, str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class RunTimes:
    """One run as the timeline needs it."""

    run: RunRecord
    label: str  # "run" or "retry 1", ...
    batches: Sequence[BatchRecord]
    times: Mapping[str, BatchTimes]
    events: Sequence[Event]
    failed_in_batch: Mapping[str, int]  # batch id -> instances that failed in it


@dataclass(frozen=True, slots=True)
class Lane:
    """One horizontal lane: a region of a run."""

    label: str
    y: float


@dataclass(frozen=True, slots=True)
class Mark:
    """One sent batch."""

    batch_id: str
    run_id: str
    region: str
    wave: int  # from 1
    outcome: str  # ok | failures | failed | unknown | open
    x: float
    width: float
    accepted_x: float | None
    y: float
    title: str


@dataclass(frozen=True, slots=True)
class Band:
    """A span of time: a wave, or a wait for quota."""

    kind: str  # wave | quota
    label: str
    x: float
    width: float


@dataclass(frozen=True, slots=True)
class Marker:
    """A moment: a halt, a stop request, the end of a leg, a resume."""

    kind: str  # halt | stop | end | start
    label: str
    x: float


@dataclass(frozen=True, slots=True)
class Tick:
    """An axis label."""

    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Timeline:
    """Everything the template draws; `height` includes the axis."""

    start: float | None
    end: float | None
    lanes: tuple[Lane, ...]
    marks: tuple[Mark, ...]
    bands: tuple[Band, ...]
    markers: tuple[Marker, ...]
    ticks: tuple[Tick, ...]
    height: float
    unsent: int  # batches never sent (halted, quota, stopped before their turn)


def _utc(epoch: float, *, seconds: bool = True) -> str:
    """Epoch seconds as an ISO-8601 UTC time for labels."""
    spec = "seconds" if seconds else "minutes"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def _span(runs: Sequence[RunTimes]) -> tuple[float, float] | None:
    """The first and last time anything happened."""
    moments = [t for r in runs for bt in r.times.values() for t in _batch_moments(bt)]
    moments += [ts for r in runs for _i, ts, _k, _d in r.events]
    if not moments:
        return None
    return min(moments), max(moments)


def _batch_moments(times: BatchTimes) -> list[float]:
    """Every known time of one batch."""
    return [t for t in (times.sent_at, times.accepted_at, times.ended_at) if t is not None]


def _outcome(batch: BatchRecord, failed: int) -> str:
    """The colour class of a sent batch."""
    if batch.state is BatchState.FAILED:
        return "failed"
    if batch.state is BatchState.UNKNOWN:
        return "unknown"
    if batch.state is not BatchState.DONE:
        return "open"  # accepted, results not all in (halted or stopped), or being sent
    return "failures" if failed else "ok"


class _Scale:
    """Epoch seconds -> x."""

    __slots__ = ("_start", "_unit")

    def __init__(self, start: float, end: float) -> None:
        self._start = start
        self._unit = WIDTH / max(end - start, 1e-6)

    def x(self, t: float) -> float:
        """The x of time `t`."""
        return round((t - self._start) * self._unit, 2)

    def width(self, t0: float, t1: float) -> float:
        """The width of the span t0..t1."""
        return round(max((t1 - t0) * self._unit, 0.0), 2)


def build_timeline(runs: Sequence[RunTimes]) -> Timeline:
    """The timeline of a run and its retries (the original first)."""
    span = _span(runs)
    lanes: dict[tuple[str, str], Lane] = {}
    for r in runs:
        for region in sorted({b.region for b in r.batches}):
            label = region if r.label == "run" else f"{r.label} · {region}"
            lanes[(r.run.run_id, region)] = Lane(label, len(lanes) * LANE_HEIGHT)
    height = len(lanes) * LANE_HEIGHT + 24.0
    unsent = sum(1 for r in runs for b in r.batches if b.batch_id not in r.times)
    if span is None:
        return Timeline(None, None, tuple(lanes.values()), (), (), (), (), height, unsent)
    scale = _Scale(*span)
    marks = tuple(m for r in runs for m in _marks(r, lanes, scale, span[1]))
    bands = tuple(b for r in runs for b in _bands(r, scale, span[1]))
    markers = tuple(m for r in runs for m in _markers(r, scale))
    ticks = tuple(
        Tick(scale.x(t), _utc(t)) for t in _tick_times(*span)
    )  # the axis, with times in UTC
    return Timeline(
        span[0], span[1], tuple(lanes.values()), marks, bands, markers, ticks, height, unsent
    )


def _tick_times(start: float, end: float) -> list[float]:
    """Evenly spaced axis times from start to end."""
    if end <= start:
        return [start]
    step = (end - start) / (_TICKS - 1)
    return [start + i * step for i in range(_TICKS)]


def _marks(
    r: RunTimes, lanes: Mapping[tuple[str, str], Lane], scale: _Scale, last: float
) -> list[Mark]:
    """One mark per sent batch of one run."""
    marks = []
    for b in r.batches:
        bt = r.times.get(b.batch_id)
        if bt is None:
            continue
        end = bt.ended_at or bt.accepted_at or bt.sent_at
        outcome = _outcome(b, r.failed_in_batch.get(b.batch_id, 0))
        if outcome == "open":
            end = max(end, last)  # still open when the record ends: drawn to the end
        title = (
            f"{b.batch_id} · {b.region} · wave {b.wave + 1} · {len(b.instance_ids)} instances"
            f" · {outcome} · sent {_utc(bt.sent_at)}"
            + (f" · accepted {_utc(bt.accepted_at)}" if bt.accepted_at else "")
            + (f" · ended {_utc(bt.ended_at)}" if bt.ended_at else "")
        )
        marks.append(
            Mark(
                batch_id=b.batch_id,
                run_id=r.run.run_id,
                region=b.region,
                wave=b.wave + 1,
                outcome=outcome,
                x=scale.x(bt.sent_at),
                width=max(scale.width(bt.sent_at, end), _MIN_MARK_WIDTH),
                accepted_x=scale.x(bt.accepted_at) if bt.accepted_at else None,
                y=lanes[(r.run.run_id, b.region)].y,
                title=title,
            )
        )
    return marks


def _bands(r: RunTimes, scale: _Scale, last: float) -> list[Band]:
    """Wave spans (first send to last result) and quota waits of one run."""
    spans: dict[int, tuple[float, float]] = {}
    for b in r.batches:
        bt = r.times.get(b.batch_id)
        if bt is None:
            continue
        end = bt.ended_at or bt.accepted_at or bt.sent_at
        lo, hi = spans.get(b.wave, (bt.sent_at, end))
        spans[b.wave] = (min(lo, bt.sent_at), max(hi, end))
    prefix = "" if r.label == "run" else f"{r.label} "
    bands = [
        Band("wave", f"{prefix}wave {wave + 1}", scale.x(lo), scale.width(lo, hi))
        for wave, (lo, hi) in sorted(spans.items())
    ]
    return bands + _quota_waits(r.events, scale, last)


def _quota_waits(events: Sequence[Event], scale: _Scale, last: float) -> list[Band]:
    """Waits for quota: in-process (`quota_wait` until the next event) or between legs (an
    `end` in state quota until the next `start`)."""
    bands = []
    for index, (_id, ts, kind, data) in enumerate(events):
        waiting = kind == "quota_wait" or (kind == "end" and data.get("state") == "quota")
        if not waiting:
            continue
        later = [e[1] for e in events[index + 1 :] if e[2] in ("start", "wave_start", "wave")]
        until = later[0] if later else last
        bands.append(Band("quota", "waiting for quota", scale.x(ts), scale.width(ts, until)))
    return bands


def _markers(r: RunTimes, scale: _Scale) -> list[Marker]:
    """Halts, stop requests, ends of legs that need a look, and resumes."""
    markers = []
    starts = 0
    for _id, ts, kind, data in r.events:
        if kind == "halted":
            label = f"error budget exceeded ({data.get('failures')} > {data.get('allowed')})"
            markers.append(Marker("halt", label, scale.x(ts)))
        elif kind == "stop_requested":
            markers.append(Marker("stop", f"stop requested ({data.get('by', '?')})", scale.x(ts)))
        elif kind == "end" and data.get("state") in _HALT_STATES:
            label = f"{r.label} ended {data.get('state')} (exit {data.get('exit_code')})"
            markers.append(Marker("end", label, scale.x(ts)))
        elif kind == "start":
            starts += 1
            if starts > 1:
                markers.append(Marker("start", f"{r.label} resumed", scale.x(ts)))
    return markers

"""Rendering (pure): ledger rows -> status summary, and per-instance report as table, JSON or CSV.

Counts always add up to the run's target count (invariant I2): an instance still `pending` in a
run that is not running is reported as `not_invoked`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fanout.ledger.model import InstanceRecord, RunRecord, RunState, reported_state
from fanout.times import iso

__all__ = [
    "REPORTED_STATES",
    "ReportFilter",
    "iso",
    "render_report",
    "run_summary",
    "status_document",
]

# The per-instance states a status or report always counts, in this order: the final ones, then
# `invoked` (accepted, result not collected yet: not final). `pending` is added while running.
# `unreachable` (the agent or the delivery failed: the command never ran) is apart from `failed`.
REPORTED_STATES = (
    "succeeded",
    "failed",
    "unreachable",
    "excluded",
    "not_invoked",
    "unknown",
    "invoked",
)
_REPORT_FIELDS = (
    "run_id",
    "region",
    "instance_id",
    "state",
    "batch_id",
    "wave",
    "invoke_id",
    "invocation_status",
    "exit_code",
    "error_code",
    "error_info",
    "reason",
    "start_time",
    "finish_time",
    "output",
    "dropped",  # bytes of output cut off before what is kept (by the API and by fanout)
)
_OUTPUT_EXCERPT = 60  # characters of output shown per row in the table format


def _reported_counts(per_state: Mapping[str, int], run_state: RunState) -> dict[str, int]:
    """Counts by reported state, every reported state present."""
    counts = dict.fromkeys(REPORTED_STATES, 0)
    for state, n in per_state.items():
        key = reported_state(state, run_state)
        counts[key] = counts.get(key, 0) + n
    return counts


def status_document(
    run: RunRecord,
    instances: Mapping[str, Mapping[str, int]],
    batches: Mapping[str, Mapping[str, int]],
    command_ids: Mapping[str, str | None] | None = None,
    holder: str | None = None,
    linked: Sequence[Mapping[str, object]] = (),
) -> dict[str, object]:
    """The `fanout status --json` document (stable field names, documented in the README).

    `command_ids`: each region's own CommandId of the run's command (None: not created yet);
    `holder`: the runner driving it now (`fanout.lease.lease_holder`; None: no runner holds it);
    `linked`: the runs linked to it, oldest first (`fanout.linked.linked_entries`).
    """
    ids = command_ids or {}
    total: dict[str, int] = {}
    regions: dict[str, object] = {}
    for region in sorted(set(instances) | set(batches)):
        per_state = instances.get(region, {})
        for state, n in per_state.items():
            total[state] = total.get(state, 0) + n
        regions[region] = {
            "instances": _reported_counts(per_state, run.state),
            "batches": dict(sorted(batches.get(region, {}).items())),
            "command_id": ids.get(region),
        }
    batch_total: dict[str, int] = {}
    for per_state in batches.values():
        for state, n in per_state.items():
            batch_total[state] = batch_total.get(state, 0) + n
    return {
        "run_id": run.run_id,
        "state": run.state.value,
        "exit_code": run.exit_code,
        "command_id": run.command_id,
        "command_ids": dict(sorted(ids.items())),
        "parent_run_id": run.parent_run_id,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "target_count": run.target_count,
        "instances": _reported_counts(total, run.state),
        "batches": dict(sorted(batch_total.items())),
        "regions": regions,
        "lease": {"owner": run.lease_owner, "until": iso(run.lease_until), "held": bool(holder)},
        "linked_runs": [dict(entry) for entry in linked],
    }


def run_summary(doc: Mapping[str, object]) -> str:
    """A status document as a few human lines."""
    counts = doc["instances"]
    assert isinstance(counts, dict)
    shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    lines = [
        f"run {doc['run_id']}: {_state_text(doc)}, {doc['target_count']} targets: {shown or 'none'}",
    ]
    regions = doc["regions"]
    assert isinstance(regions, dict)
    for region, data in regions.items():
        inst = ", ".join(f"{n} {s}" for s, n in data["instances"].items() if n)
        bat = ", ".join(f"{n} {s}" for s, n in data["batches"].items() if n)
        command = f"; command {data['command_id']}" if data.get("command_id") else ""
        lines.append(f"  {region}: instances {inst or '-'}; batches {bat or '-'}{command}")
    linked = doc.get("linked_runs")
    lines += [_linked_run_line(entry) for entry in linked] if isinstance(linked, list) else []
    return "\n".join(lines)


def _linked_run_line(entry: Mapping[str, object]) -> str:
    """A linked run (a retry, a rollback, a wave check) in one line: id, kind, state."""
    code = entry.get("exit_code")
    state = f"{entry['state']}" if code is None else f"{entry['state']} (exit {code})"
    return f"  linked {entry['kind']} {entry['run_id']}: {state}"


def _state_text(doc: Mapping[str, object]) -> str:
    """`finished (exit 1)`; a run without an exit code says who drives it, or that no runner
    does (killed, or left at once on a second Ctrl-C) and how to go on."""
    if doc["exit_code"] is not None:
        return f"{doc['state']} (exit {doc['exit_code']})"
    lease = doc["lease"]
    assert isinstance(lease, dict)
    if lease.get("held"):
        return f"{doc['state']} (driven by {lease['owner']}, lease until {lease['until']})"
    return f"{doc['state']} (no runner holds it: interrupted; fanout resume {doc['run_id']})"


@dataclass(frozen=True, slots=True)
class ReportFilter:
    """Which rows a report keeps (`--state`, `--region`, `--wave`, `--error-code`); each field
    that is not empty keeps the rows whose value is one of its values."""

    states: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    waves: frozenset[int] = frozenset()
    error_codes: frozenset[str] = frozenset()

    def keeps(self, row: Mapping[str, object]) -> bool:
        """True if `row` passes every filter given."""
        checks = (
            (self.states, row["state"]),
            (self.regions, row["region"]),
            (self.waves, row["wave"]),
            (self.error_codes, row["error_code"]),
        )
        return all(not wanted or value in wanted for wanted, value in checks)

    def __bool__(self) -> bool:
        return bool(self.states or self.regions or self.waves or self.error_codes)

    def as_dict(self) -> dict[str, list[object]]:
        """The filters given, for the JSON document."""
        given: dict[str, list[object]] = {
            "state": [*sorted(self.states)],
            "region": [*sorted(self.regions)],
            "wave": [*sorted(self.waves)],
            "error_code": [*sorted(self.error_codes)],
        }
        return {k: v for k, v in given.items() if v}


def _row(
    record: InstanceRecord,
    run_state: RunState,
    waves: Mapping[str, int],
    instance_waves: Mapping[tuple[str, str], int],
) -> dict[str, object]:
    """One report row (`wave` from 1; None for an instance never batched): the wave of the
    reported run, for a retried instance too (`instance_waves`), else of the row's batch."""
    # Read field by field: `dataclasses.asdict` (a deep copy of every value) took two thirds of
    # `fanout report`'s time at a million rows.
    row = {name: getattr(record, name, None) for name in _REPORT_FIELDS}
    row["state"] = reported_state(record.state, run_state)
    row["wave"] = instance_waves.get((record.region, record.instance_id)) or waves.get(
        record.batch_id or ""
    )
    return row


def roll_up(
    original: Iterable[InstanceRecord], retries: Iterable[Iterable[InstanceRecord]]
) -> list[InstanceRecord]:
    """The original run's rows, each replaced by its latest retry's row (retries oldest first)."""
    latest = {(r.region, r.instance_id): r for r in original}
    for rows in retries:
        for r in rows:
            if (r.region, r.instance_id) in latest:
                latest[(r.region, r.instance_id)] = r
    return sorted(latest.values(), key=lambda r: (r.region, r.instance_id))


def render_report(
    records: Iterable[InstanceRecord],
    run: RunRecord,
    fmt: str,
    run_states: Mapping[str, RunState] | None = None,
    waves: Mapping[str, int] | None = None,
    only: ReportFilter | None = None,
    command_ids: Mapping[str, str | None] | None = None,
    instance_waves: Mapping[tuple[str, str], int] | None = None,
    *,
    linked: Sequence[Mapping[str, object]] = (),
) -> str:
    """Per-instance results as `table`, `json` (one document) or `csv`.

    `linked` are the run's rollbacks and wave checks (`fanout.report_io.linked_sections`):
    a section of their own in `table` and `json` (`linked_runs`), never rolled up.

    `run_states` gives the state of each run the rows come from (retries rolled up); `waves`
    each batch's wave (from 1); `instance_waves` each (region, instance)'s wave in the reported
    run, which a retried instance's row keeps (`--wave 4` is the run's wave 4, not its retry's);
    `only` which rows to keep (the summaries count those rows); `command_ids` each region's
    CommandId (a CommandId belongs to one region).
    """
    states = {run.run_id: run.state, **(run_states or {})}
    rows = [
        _row(r, states.get(r.run_id, run.state), waves or {}, instance_waves or {}) for r in records
    ]
    if only:
        rows = [row for row in rows if only.keeps(row)]
    summary: dict[str, int] = dict.fromkeys(REPORTED_STATES, 0)
    by_error: dict[str, int] = {}
    by_exit: dict[str, int] = {}
    by_region: dict[str, dict[str, int]] = {}
    for row in rows:
        state = str(row["state"])
        summary[state] = summary.get(state, 0) + 1
        region = by_region.setdefault(str(row["region"]), {})
        region[state] = region.get(state, 0) + 1
        if row["error_code"]:
            by_error[str(row["error_code"])] = by_error.get(str(row["error_code"]), 0) + 1
        if state == "failed" and row["exit_code"] is not None:
            by_exit[str(row["exit_code"])] = by_exit.get(str(row["exit_code"]), 0) + 1
    if fmt == "json":
        doc = {
            "run_id": run.run_id,
            "target_count": run.target_count,
            "runs": sorted(states),
            "filters": only.as_dict() if only else {},
            "command_ids": dict(sorted((command_ids or {}).items())),
            "summary": summary,
            "by_region": by_region,
            "by_error_code": by_error,
            "by_exit_code": by_exit,
            "instances": rows,
            "linked_runs": [dict(section) for section in linked],
        }
        return json.dumps(doc, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=_REPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    return _table(rows, summary, by_error, by_region) + "".join(
        _linked_line(section) for section in linked
    )


def _linked_line(section: Mapping[str, object]) -> str:
    """A rollback's or a wave check's line under the table."""
    summary = section.get("summary")
    counts = ", ".join(
        f"{state.replace('_', ' ')} {n}"
        for state, n in (summary.items() if isinstance(summary, Mapping) else ())
        if n
    )
    what = (
        f"wave {section.get('wave')} check" if section.get("kind") == "wave_check" else "rollback"
    )
    return (
        f"{what}: run {section.get('run_id')} ({section.get('command_id')}), "
        f"{section.get('state')}: {counts or 'no instances'}\n"
    )


def _table(
    rows: list[dict[str, object]],
    summary: Mapping[str, int],
    by_error: Mapping[str, int],
    by_region: Mapping[str, Mapping[str, int]],
) -> str:
    """Fixed-width text table plus summaries."""
    retried = len({row["run_id"] for row in rows}) > 1  # a retry's rows say which run they are
    columns = (
        *(("run_id",) if retried else ()),
        *("region", "instance_id", "state", "wave", "exit_code", "error_code", "reason"),
        *("invoke_id", "output"),
    )
    cells = [[_cell(_why(row) if c == "reason" else row[c], c) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.append("")
    lines.append("by state: " + ", ".join(f"{s} {n}" for s, n in summary.items() if n))
    for region, counts in sorted(by_region.items()):
        lines.append(f"  {region}: " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    if by_error:
        lines.append("by error code: " + ", ".join(f"{c} {n}" for c, n in sorted(by_error.items())))
    cut = [row for row in rows if row["dropped"]]
    if cut:
        most = max(int(str(row["dropped"])) for row in cut)
        lines.append(
            f"output: {len(cut)} instances kept the end of a longer output (up to {most} bytes "
            "dropped before it); the full text is in --format json / csv"
        )
    return "\n".join(lines) + "\n"


def _why(row: Mapping[str, object]) -> object:
    """The table's reason: the exclusion or failure reason, else the error code."""
    if row["state"] == "succeeded":
        return None
    return row["reason"] or row["error_code"]


def _cell(value: object, column: str) -> str:
    """One table cell: no newlines, output cut to an excerpt of its end (where errors are)."""
    if value is None:
        return "-"
    text = str(value).replace("\n", " ").strip()
    if column == "output" and len(text) > _OUTPUT_EXCERPT:
        text = "…" + text[-(_OUTPUT_EXCERPT - 1) :]  # an output's end: where the errors are
    elif column == "reason" and len(text) > _OUTPUT_EXCERPT:
        text = text[: _OUTPUT_EXCERPT - 1] + "…"
    return text or "-"

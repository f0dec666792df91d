"""`fanout report --format html`: one self-contained page for a run and its retries.

`report_model` is a pure function of ledger records (`RunLedger`: the run, its batches with
their times, its event journal and its instance rows) and returns the data the page shows:
header, timeline (`fanout.timeline`), breakdowns per region and wave, error and exit codes,
failure groups (`fanout.failures`) and the per-instance table. `render_html` renders it with
Jinja2 (autoescaping on: instance names and outputs are untrusted text). The per-instance rows
travel as one JSON block (`tojson` escapes `<`, `>`, `&`, `'`) that the page's small script reads
and draws with `textContent`, a page at a time; a Content-Security-Policy allows that one
script (by hash) and nothing from anywhere, so the file works offline as an attachment.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import jinja2
import markupsafe

from fanout.failures import FailureGroup, group_failures
from fanout.ledger.model import BatchRecord, BatchTimes, InstanceRecord, RunRecord, reported_state
from fanout.report import REPORTED_STATES, iso, roll_up
from fanout.timeline import RunTimes, Timeline, build_timeline

__all__ = ["EXIT_MEANINGS", "RunLedger", "render_html", "report_model"]

EXIT_MEANINGS = {
    0: "every target reached success",
    1: "finished; some targets failed, were unreachable or are unknown (--strict: or excluded)",
    2: "bad input or configuration; nothing was sent",
    3: "halted by --max-errors; resumable",
    4: "stopped by the daily quota; resume when capacity frees",
    5: "interrupted or stopped; resumable",
    6: "fatal API error; nothing more sent",
}
# Characters of each instance's output kept in the table (its tail: errors come last). The
# full output of one instance per failure group is shown with the group.
OUTPUT_TAIL_CHARS = 160
# Failure groups drawn in full; the rest are summed up in one line (the table filters them all).
MAX_GROUPS_SHOWN = 100
MEMBERS_SHOWN = 20  # instance names listed per group; the table shows every member
SAMPLE_OUTPUT_CHARS = 8192
# The table's columns, in the order of each row array in the page's JSON.
TABLE_COLUMNS = (
    "instance_id",
    "region",
    "state",
    "wave",
    "batch",
    "exit_code",
    "error_code",
    "reason",
    "output",
    "run",
    "group",
)
_DICT_COLUMNS = ("region", "state", "batch", "error_code", "reason", "run")

Event = tuple[int, float, str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class RunLedger:
    """One run as the ledger holds it (what the report reads, nothing else)."""

    run: RunRecord
    batches: Sequence[BatchRecord]
    times: Mapping[str, BatchTimes]
    events: Sequence[Event]
    instances: Sequence[InstanceRecord]
    owners: tuple[str, ...] = field(default=())


def _reason(record: InstanceRecord) -> str | None:
    """Why an instance is not a success: exclusion reason, else error info, else error code."""
    return record.reason or record.error_info or record.error_code


def _tail(text: str | None, chars: int) -> str:
    """The last `chars` characters of `text`, marked when cut."""
    text = text or ""
    return text if len(text) <= chars else "…" + text[-(chars - 1) :]


class _Dictionary:
    """Repeated strings stored once: value -> index."""

    __slots__ = ("index", "values")

    def __init__(self) -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}

    def code(self, value: str | None) -> int | None:
        """The index of `value` (None stays None)."""
        if value is None:
            return None
        found = self.index.get(value)
        if found is None:
            found = self.index[value] = len(self.values)
            self.values.append(value)
        return found


def _label(position: int) -> str:
    """How the page names the original run (0) and its retries (1, 2...)."""
    return "run" if position == 0 else f"retry {position}"


def _meta(ledgers: Sequence[RunLedger]) -> dict[str, tuple[str, str, int]]:
    """Per batch id: (run id, region, wave from 1)."""
    return {b.batch_id: (lg.run.run_id, b.region, b.wave + 1) for lg in ledgers for b in lg.batches}


def report_model(
    original: RunLedger,
    retries: Sequence[RunLedger] = (),
    *,
    generated_at: float,
    linked: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Everything the HTML report shows, from ledger records only (retries oldest first;
    `linked`: the rollbacks and wave checks, `fanout.report_io.linked_sections`)."""
    ledgers = (original, *retries)
    run_states = {lg.run.run_id: lg.run.state for lg in ledgers}
    rows = roll_up(original.instances, (lg.instances for lg in retries))
    states = [reported_state(r.state, run_states[r.run_id]) for r in rows]
    meta = _meta(ledgers)
    failed = [r for r, s in zip(rows, states, strict=True) if s == "failed"]
    groups = group_failures(failed)
    group_of = {(r.region, r.instance_id): i for i, g in enumerate(groups) for r in g.instances}
    return {
        "title": f"fanout report {original.run.run_id}",
        "generated_at": iso(generated_at),
        "runs": [_run_header(lg, i) for i, lg in enumerate(ledgers)],
        "run": _run_header(original, 0),
        "summary": _count(states),
        "target_count": original.run.target_count,
        "by_region": _breakdown(rows, states, lambda r: r.region),
        "by_wave": _breakdown(
            rows, states, lambda r: _wave_label(meta.get(r.batch_id or ""), r.run_id, ledgers)
        ),
        "by_error_code": _counted(r.error_code for r in rows if r.error_code),
        "by_exit_code": _counted(
            "none" if r.exit_code is None else str(r.exit_code)
            for r, s in zip(rows, states, strict=True)
            if s == "failed"
        ),
        "failure_groups": [_group(g, i) for i, g in enumerate(groups[:MAX_GROUPS_SHOWN])],
        "more_groups": _more(groups[MAX_GROUPS_SHOWN:]),
        "failed_total": len(failed),
        "timeline": _timeline(ledgers),
        "table": _table(rows, states, meta, group_of, ledgers),
        "states": list(REPORTED_STATES),
        "linked": [_linked_row(section) for section in linked],
    }


def _linked_row(section: Mapping[str, Any]) -> dict[str, Any]:
    """A rollback's or a wave check's row: what it was, its run, state and counts."""
    kind = section.get("kind")
    summary = section.get("summary") or {}
    return {
        "what": f"wave {section.get('wave')} check" if kind == "wave_check" else "rollback",
        "run_id": section.get("run_id"),
        "command_id": section.get("command_id"),
        "state": section.get("state"),
        "exit_code": section.get("exit_code"),
        "target_count": section.get("target_count"),
        "counts": ", ".join(f"{n} {state}" for state, n in summary.items() if n),
    }


def _count(states: Iterable[str]) -> dict[str, int]:
    """Counts per reported state, every state present."""
    counts = dict.fromkeys(REPORTED_STATES, 0)
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return counts


def _counted(values: Iterable[str]) -> list[tuple[str, int]]:
    """(value, count), most frequent first."""
    return sorted(Counter(values).items(), key=lambda item: (-item[1], item[0]))


def _wave_label(
    meta: tuple[str, str, int] | None, run_id: str, ledgers: Sequence[RunLedger]
) -> str:
    """ "wave 2", "retry 1 wave 1", or "not batched" (excluded by preflight)."""
    if meta is None:
        return "not batched (excluded)"
    position = next(i for i, lg in enumerate(ledgers) if lg.run.run_id == run_id)
    prefix = "" if position == 0 else f"{_label(position)} "
    return f"{prefix}wave {meta[2]}"


def _breakdown(
    rows: Sequence[InstanceRecord], states: Sequence[str], key: Any
) -> list[tuple[str, dict[str, int]]]:
    """Counts per state for each value of `key(row)`, in natural order."""
    table: dict[str, Counter[str]] = {}
    for row, state in zip(rows, states, strict=True):
        table.setdefault(str(key(row)), Counter())[state] += 1
    return [
        (name, {s: counts.get(s, 0) for s in REPORTED_STATES})
        for name, counts in sorted(table.items(), key=lambda item: _natural(item[0]))
    ]


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key with numbers compared as numbers ("wave 10" after "wave 9")."""
    parts = text.split(" ")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


_BLANK: tuple[object, ...] = (None, "", {}, [])
_SPEC_NAMES = {"had_parameters": "parameters given"}


def _shown(value: object, key: str = "") -> str:
    """A stored option as a person reads it: yes/no, `key value` pairs, a script's size and
    digest instead of its text (the report is not where a script is read; the ledger has it)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if key == "content" and isinstance(value, str):
        digest = hashlib.sha256(value.encode()).hexdigest()[:12]
        lines = value.count("\n") + (not value.endswith("\n"))
        return (
            f"{lines} line{'s' if lines != 1 else ''}, {len(value.encode())} bytes, sha256 {digest}"
        )
    if isinstance(value, dict):
        return "; ".join(f"{k} {_shown(v, str(k))}" for k, v in value.items() if v not in _BLANK)
    if isinstance(value, list | tuple):
        return ", ".join(_shown(v) for v in value)
    return str(value)


def _run_header(lg: RunLedger, position: int) -> dict[str, Any]:
    """What the header says about one run."""
    run = lg.run
    ends = [ts for _i, ts, kind, _d in lg.events if kind == "end"]
    owners = lg.owners or tuple(
        str(d.get("owner")) for _i, _ts, kind, d in lg.events if kind == "start" and d.get("owner")
    )
    spec = run.options.get("spec")
    return {
        "label": _label(position),
        "run_id": run.run_id,
        "parent_run_id": run.parent_run_id,
        "state": run.state.value,
        "exit_code": run.exit_code,
        "exit_meaning": EXIT_MEANINGS.get(run.exit_code or 0, "")
        if run.exit_code is not None
        else "not ended yet",
        "command_id": run.command_id,
        "account": run.account,
        "target_count": run.target_count,
        "parameters": sorted(run.parameters.items()),
        "secret_keys": list(run.secret_keys),
        "options": sorted(
            (k, _shown(v, k)) for k, v in run.options.items() if k != "spec" and v not in _BLANK
        ),
        "spec": sorted(
            (_SPEC_NAMES.get(k, k), _shown(v, k))
            for k, v in spec.items()
            if v not in (*_BLANK, False)
        )
        if isinstance(spec, dict)
        else [],
        "owners": sorted(set(owners)),
        "created_at": iso(run.created_at),
        "ended_at": iso(ends[-1]) if ends else None,
        "batches": len(lg.batches),
    }


def _group(group: FailureGroup, index: int) -> dict[str, Any]:
    """One failure group as shown."""
    codes = Counter(r.error_code or "-" for r in group.instances)
    exits = Counter(str(r.exit_code) for r in group.instances)
    return {
        "index": index,
        "key": group.key,
        "count": group.count,
        "members": [f"{r.region}/{r.instance_id}" for r in group.instances[:MEMBERS_SHOWN]],
        "more": max(group.count - MEMBERS_SHOWN, 0),
        "sample": f"{group.sample.region}/{group.sample.instance_id}",
        "sample_output": _tail(group.sample.output, SAMPLE_OUTPUT_CHARS)
        or _reason(group.sample)
        or "",
        "error_codes": _counted(codes.elements()),
        "exit_codes": _counted(exits.elements()),
    }


def _more(rest: Sequence[FailureGroup]) -> dict[str, int] | None:
    """The groups not drawn, summed up."""
    if not rest:
        return None
    return {"groups": len(rest), "instances": sum(g.count for g in rest)}


def _timeline(ledgers: Sequence[RunLedger]) -> Timeline:
    """The timeline of the run and its retries."""
    runs = []
    for position, lg in enumerate(ledgers):
        failed = Counter(r.batch_id for r in lg.instances if r.state == "failed" and r.batch_id)
        runs.append(
            RunTimes(lg.run, _label(position), lg.batches, lg.times, lg.events, dict(failed))
        )
    return build_timeline(runs)


def _table(
    rows: Sequence[InstanceRecord],
    states: Sequence[str],
    meta: Mapping[str, tuple[str, str, int]],
    group_of: Mapping[tuple[str, str], int],
    ledgers: Sequence[RunLedger],
) -> dict[str, Any]:
    """The per-instance table as compact JSON: repeated strings once, rows as arrays."""
    dicts = {name: _Dictionary() for name in _DICT_COLUMNS}
    labels = {lg.run.run_id: _label(i) for i, lg in enumerate(ledgers)}
    for state in REPORTED_STATES:  # every state selectable, in the documented order
        dicts["state"].code(state)
    encoded = []
    for row, state in zip(rows, states, strict=True):
        batch = meta.get(row.batch_id or "")
        encoded.append(
            [
                row.instance_id,
                dicts["region"].code(row.region),
                dicts["state"].code(state),
                batch[2] if batch else None,
                dicts["batch"].code(row.batch_id),
                row.exit_code,
                dicts["error_code"].code(row.error_code),
                dicts["reason"].code(_reason(row) if state != "succeeded" else None),
                _tail(row.output, OUTPUT_TAIL_CHARS) or None,
                dicts["run"].code(labels.get(row.run_id, row.run_id)),
                group_of.get((row.region, row.instance_id)),
            ]
        )
    invoke_ids = {
        b.batch_id: b.invoke_id for lg in ledgers for b in lg.batches if b.invoke_id is not None
    }
    return {
        "columns": list(TABLE_COLUMNS),
        "dicts": {name: d.values for name, d in dicts.items()},
        "invoke_ids": [invoke_ids.get(b) for b in dicts["batch"].values],
        "rows": encoded,
    }


@cache
def _environment() -> jinja2.Environment:
    """The template environment: autoescaping on, templates shipped in the package."""
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["csp_hash"] = _csp_hash
    return env


def _template_source(name: str) -> str:
    """A template shipped in `fanout/templates`."""
    return resources.files("fanout").joinpath("templates", name).read_text(encoding="utf-8")


def _csp_hash(script: str) -> markupsafe.Markup:
    """The Content-Security-Policy source that allows exactly this inline script."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    # S704: the text is base64 between quotes, made here; nothing in it comes from input.
    return markupsafe.Markup(f"'sha256-{digest}'")  # noqa: S704


def render_html(model: Mapping[str, Any]) -> str:
    """The report page: one self-contained HTML file."""
    env = _environment()
    script = _template_source("report.js")
    return env.get_template("report.html.j2").render(model=model, script=script)

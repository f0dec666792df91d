"""How the commands show what they did: `Out` (JSON, the live view or plain lines) and the text
renderings of their documents. Data in, text out; the commands decide what to show.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click
import structlog

from fanout.report import iso

if TYPE_CHECKING:
    from rich.console import Console

    from fanout.progress import LiveView
    from fanout.runner import RunOutcome

__all__ = ["Out", "finish", "nothing_linked", "plan_text", "quota_text", "runs_text", "stop_text"]

# Events a person does not read one by one: their sums are in the live view and `fanout report`.
_QUIET_EVENTS = frozenset({"instance", "batch_start", "call"})


class Out:
    """Where output goes: JSON on stdout with --json; a live view on a TTY; plain lines otherwise.

    stdout carries only the run id (first) and documents; progress goes to stderr.
    """

    __slots__ = ("_console", "_live", "ended", "json")

    def __init__(self, *, as_json: bool, console: Console | None = None) -> None:
        self.json = as_json
        self._console = console  # draw the live view here whatever stderr is (tests)
        self._live: LiveView | None = None
        self.ended = False  # the run's last line is printed (by its `end` event)

    def document(self, doc: object, human: str) -> None:
        """One JSON document, or its human rendering."""
        click.echo(json.dumps(doc, indent=2, default=str) if self.json else human)

    def event(self, kind: str, data: Mapping[str, object]) -> None:
        """A run event: a JSON line on stdout, the live view, or a short line on stderr."""
        if self._live is not None:
            self._live.feed(kind, data)
            if kind == "end":
                self._stop_live()
            return
        if kind in _QUIET_EVENTS:
            return
        if self.json:
            click.echo(json.dumps({"event": kind, **data}, default=str))
            line = _PLAIN_LINES.get(kind)
            if line is not None:  # progress for people still goes to stderr (README)
                click.echo(line(data), err=True)
            return
        if kind == "run":
            click.echo(data["run_id"])  # the run id first, alone on stdout, for scripts
        if kind in ("run", "resume") and self._wants_live():
            self._start_live()
            self.event(kind, data)
            return
        line = _PLAIN_LINES.get(kind)
        if line is not None:
            click.echo(line(data), err=True)
            self.ended = self.ended or kind == "end"

    def _wants_live(self) -> bool:
        """A person at a terminal, and no info/debug log lines (those are the progress then)."""
        return self._console is not None or (sys.stderr.isatty() and not _logs_verbose())

    def _start_live(self) -> None:
        """Start drawing the live view on stderr."""
        from rich.console import Console  # noqa: PLC0415 - rich is loaded only for a live view

        from fanout.progress import LiveView  # noqa: PLC0415

        self._live = LiveView(self._console or Console(stderr=True))
        self._live.start()
        atexit.register(self._stop_live)  # an error or exit mid-run: give the cursor back

    def _stop_live(self) -> None:
        """Leave the last frame on the screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None
            atexit.unregister(self._stop_live)


def nothing_linked(out: Out, parent_run_id: str, message: str) -> None:
    """A retry or rollback with no instance to take: one `end` line with --json (the stream's
    only line), else `message` on stderr for people."""
    if out.json:
        data = {"run_id": None, "parent_run_id": parent_run_id, "targets": 0}
        out.event("end", {**data, "state": None, "exit_code": 0, "message": message})
    else:
        click.echo(message, err=True)


def finish(outcome: RunOutcome, out: Out) -> NoReturn:
    """Print the run's last line (without --json, unless its `end` event printed it: one
    summary line) and exit with its code."""
    if not out.json and not out.ended:
        click.echo(
            _end_line(
                {
                    "run_id": outcome.run_id,
                    "state": outcome.state.value,
                    "exit_code": int(outcome.exit_code),
                    "message": outcome.message,
                }
            ),
            err=True,
        )
    sys.exit(int(outcome.exit_code))


def _logs_verbose() -> bool:
    """True if structlog lets info lines through (`--log-level info` or `debug`)."""
    enabled = getattr(structlog.get_logger("fanout.cli").bind(), "is_enabled_for", None)
    return bool(enabled(logging.INFO)) if callable(enabled) else False


def _when(value: object) -> object:
    """An epoch second as ISO-8601 UTC (other values as they are)."""
    return iso(value) if isinstance(value, int | float) else value


def _quota_wait_line(data: Mapping[str, object]) -> str:
    """The line of a quota wait: which regions, until when, and whether a probe follows."""
    regions = data["regions"]
    names = ", ".join(map(str, regions)) if isinstance(regions, list | tuple) else regions
    if data.get("probe"):
        return (
            f"daily quota refused by the API in {names} ({data.get('code')}): one probe call "
            f"at {_when(data['until'])}"
        )
    return f"daily quota spent in {names}: waiting until {_when(data['until'])}"


def _quota_refused_line(data: Mapping[str, object]) -> str:
    """The line of an API quota refusal: its code and message, and when capacity returns."""
    head = (
        f"{data['region']}: InvokeCommand refused by the API: {data['code']} ({data['message']}); "
        f"fanout's own calls in the window: {data['own_calls']} of {data['limit']}"
    )
    if data.get("explained"):
        return f"{head}; capacity frees at {_when(data['frees_at'])}"
    return (
        f"{head}; capacity returns at an unknown time (other users of the account's quota), "
        f"next probe at {_when(data['probe_at'])}"
    )


def _quota_limits_line(data: Mapping[str, object]) -> str:
    """The daily limit each region uses, and where it comes from."""
    regions = data.get("regions")
    if not isinstance(regions, dict):
        return "daily quota: -"
    parts = []
    for region, limit in regions.items():
        source = limit.get("source")
        text = f"{region} {limit.get('limit')}"
        if source == "configured" and limit.get("api_limit") is not None:
            text += f" (configured; the API says {limit['api_limit']})"
        elif source != "api":
            text += f" ({source}: the API's could not be read)"
        parts.append(text)
    return "daily quota per region: " + ", ".join(parts)


def plural(n: object, noun: str) -> str:
    """`1 batch`, `2 batches`, `0 targets`."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun}es" if noun.endswith(("s", "ch", "sh", "x")) else f"{n} {noun}s"


def _counts_sentence(counts: object) -> str:
    """`{'succeeded': 3, 'failed': 1}` as `3 succeeded, 1 failed` (zeros left out)."""
    if not isinstance(counts, Mapping):
        return str(counts)
    parts = [f"{n} {state.replace('_', ' ')}" for state, n in counts.items() if n]
    return ", ".join(parts) or "no instances"


# States a leg ends in without an end of its own: it was left at once (a second Ctrl-C).
_LEFT_STATES = frozenset({"created", "running"})


def _end_line(d: Mapping[str, object]) -> str:
    """The run's one last line: the verdict's message (or its state and instances) and the
    exit code; a leg left at once says so and how to go on."""
    code = d.get("exit_code")
    exit_text = f" (exit {code})" if code is not None else ""
    if d.get("state") in _LEFT_STATES:
        return (
            f"left at once{exit_text}: calls in flight were not collected, no runner holds the "
            f"run; fanout resume {d['run_id']}"
        )
    message = d.get("message")
    if isinstance(message, str) and message:
        return f"{message}{exit_text}"
    return f"{d['state']}{exit_text}: {_counts_sentence(d.get('instances'))}"


def _halted_line(d: Mapping[str, object]) -> str:
    """Why dispatching stopped."""
    reason = d.get("reason")
    if isinstance(reason, str) and reason:
        return f"halted: {reason}; no more dispatching, collecting what is in flight"
    return (
        f"error budget exceeded: {d['failures']} failures > {d['allowed']} allowed; "
        "no more dispatching, collecting what is in flight"
    )


def _wave_line(d: Mapping[str, object]) -> str:
    """A wave done, with its own failures when known."""
    own = d.get("wave_failures")
    size = d.get("wave_instances")
    extra = f"{own} of {size} failed; " if own is not None and size else ""
    return f"wave {d['wave']} done ({extra}{plural(d['failures'], 'failure')} so far)"


def _wave_check_line(d: Mapping[str, object]) -> str:
    """A wave's check done: how many of the wave's succeeded instances did not pass it."""
    if d.get("check_run_id") is None:
        return f"wave {d['wave']} check: no succeeded instance to check"
    return (
        f"wave {d['wave']} check (run {d['check_run_id']}): {d['failures']} of "
        f"{plural(d['instances'], 'instance')} did not pass"
    )


def _rollback_line(d: Mapping[str, object]) -> str:
    """The rollback of a halted run: its run and how it went."""
    if d.get("error"):
        return f"rollback failed: {d['error']}"
    if d.get("rollback_run_id") is None:
        return "rollback: no instance in its scope"
    return (
        f"rollback run {d['rollback_run_id']} ({d['scope']}): {_counts_sentence(d.get('summary'))}"
    )


# The one stderr line per event kind without a TTY; other kinds print nothing.
_PLAIN_LINES: dict[str, Callable[[Mapping[str, object]], str]] = {
    "run": lambda d: (
        f"run {d['run_id']}: {plural(d['targets'], 'target')}, "
        f"{plural(d['batches'], 'batch')}, {d['excluded']} excluded by preflight"
    ),
    "resume": lambda d: f"resuming {d['run_id']} (was {d['state']})",
    "command": lambda d: (
        f"{d['region']}: command {d['command_id']}"
        + (" created (CreateCommand)" if d["created"] else "")
    ),
    "end": _end_line,
    "wave": _wave_line,
    "halted": _halted_line,
    "quota_wait": _quota_wait_line,
    "wave_wait": lambda d: f"wave {d['wave']} baking until {d['until']}",
    "quota_refused": _quota_refused_line,
    "wave_check": _wave_check_line,
    "rollback": _rollback_line,
    "quota_limits": _quota_limits_line,
}


def plan_text(doc: Mapping[str, Any]) -> str:
    """The `fanout plan` document as a human table."""
    dropped = (
        f", {doc['duplicates_dropped']} duplicates dropped" if doc["duplicates_dropped"] else ""
    )
    lines = [
        f"{doc['targets']} targets{dropped}, {doc['excluded']} excluded, {doc['calls_needed']} "
        f"InvokeCommand calls (batches of {doc['batch_size']}); nothing was spent",
        f"{'region':<20} {'targets':>8} {'excluded':>8} {'calls':>6} {'quota left':>10} "
        f"{'day':>4}  finishes",
    ]
    for region, r in doc["regions"].items():
        lines.append(
            f"{region:<20} {r['targets']:>8} {r['excluded']:>8} {r['calls_needed']:>6} "
            f"{r['quota_left_now']:>10} {r['days']:>4}  {r['finishes_at']}"
        )
        lines += [f"    excluded: {n} {reason}" for reason, n in r["excluded_by_reason"].items()]
        lines.append(f"    daily quota: {r['daily_quota']} ({_quota_source(r)})")
    lines += _wave_lines(doc.get("waves") or [])
    lines += _command_lines(doc.get("command"))
    if doc["days"] > 1:
        short = [name for name, r in doc["regions"].items() if r["days"] > 1]
        lines.append(
            f"the daily quota is short in {', '.join(short)}: the last call goes on quota day "
            f"{doc['days']} ({doc['finishes_at']}); `fanout run --wait-for-quota` waits it out, "
            "or exit 4 and `fanout resume` each day"
        )
    return "\n".join(lines)


def _wave_lines(waves: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each wave's instances per region (only when there are several waves)."""
    if len(waves) < 2:
        return []
    lines = ["waves (instances per region):"]
    for w in waves:
        regions = ", ".join(f"{name} {r['instances']}" for name, r in w["regions"].items())
        lines.append(
            f"    wave {w['wave']}: {plural(w['instances'], 'instance')}, "
            f"{plural(w['calls'], 'call')} ({regions})"
        )
    return lines


_COMMAND_ACTIONS = {
    "exists": "{id}",
    "reuses": "{id} (created by an earlier run, reused)",
    "creates": "created by `run` (CreateCommand), not by plan",
    "unchecked": "{id} (not checked: DescribeCommands failed)",
}


def _command_lines(command: Mapping[str, Any] | None) -> list[str]:
    """The plan's command in each region: its id, or what `run` will create."""
    if not command:
        return []
    lines = [f"command {command['source']}:"]
    for region, entry in command["regions"].items():
        shown = _COMMAND_ACTIONS.get(entry["action"], "{id}").format(id=entry["command_id"])
        lines.append(f"    {region}: {shown}")
    return lines


def _quota_source(region: Mapping[str, Any]) -> str:
    """Where a region's daily limit comes from, in words."""
    source, api = region.get("quota_source"), region.get("api_daily_quota")
    if source == "api":
        return "the account's, from DescribeAccountAttributes max-axt-invocation-daily"
    if source == "configured":
        return "configured" + (f"; the API says {api}" if api is not None else "")
    return "default: the account's could not be read"


def _linked_to(run: Mapping[str, Any]) -> str:
    """`  (rollback of r...)` for a linked run in `fanout runs`."""
    kind, parent = run.get("kind"), run.get("parent_run_id")
    if not parent or kind not in ("retry", "rollback", "wave_check"):
        return ""
    what = {"retry": "retry", "rollback": "rollback", "wave_check": "wave check"}[kind]
    return f"  ({what} of {parent})"


def runs_text(doc: Sequence[Mapping[str, Any]]) -> str:
    """The `fanout runs` list, one line per run."""
    lines = [
        f"{d['run_id']}  {d['state']:<11} exit={_or_dash(d['exit_code']):<4} "
        f"{d['target_count']:>8} targets"
        f"  {d['command_id']}  {d['created_at']}" + _linked_to(d)
        for d in doc
    ]
    return "\n".join(lines) or "no runs"


def _or_dash(value: object) -> str:
    """A value as text, `-` for None (a run without an exit code: no `None` on screen)."""
    return "-" if value is None else str(value)


def quota_text(doc: Mapping[str, Any]) -> str:
    """The `fanout quota` document: per region the limit and its source, use, what is left,
    when it frees, and the last refusal."""
    override = f", --daily-quota {doc['daily_quota']}" if doc["daily_quota"] is not None else ""
    lines = [f"account {doc['account']}: {doc['mode']} window, reserve {doc['reserve']}{override}"]
    for region, d in doc["regions"].items():
        source = {
            "api": f"the account's, read {d['api_limit_read']}",
            "configured": "configured"
            + (f"; the API says {d['api_limit']}" if d["api_limit"] is not None else ""),
            "default": "default: not read from the API",
        }.get(d["limit_source"], d["limit_source"])
        line = (
            f"  {region}: limit {d['limit']} ({source}); fanout used {d['used']}, {d['left']} left"
        )
        refusal = d["last_refusal"]
        if d["next_call_frees_at"]:
            line += f"; frees at {d['next_call_frees_at']}"
        elif refusal is not None and not refusal["explained"] and d["left"]:
            line += "; when capacity returns is unknown (other users of the account's quota)"
        lines.append(line)
        if refusal is not None:
            lines.append(
                f"    last refusal {refusal['at']}: {refusal['code']} ({refusal['message']}), "
                f"fanout's own calls {refusal['own_calls']} of {refusal['limit']}: "
                f"{refusal['capacity']}; next try {refusal['retry_at']}"
            )
    if not doc["regions"]:
        lines.append("  no region known: give --region, or run something first")
    return "\n".join(lines)


def stop_text(doc: Mapping[str, Any]) -> str:
    """What `fanout stop` did, in one line."""
    stopped = doc["instances_stopped"]
    calls = doc["stop_calls"]
    text = (
        f"run {doc['run_id']}: {doc['state']}; StopInvocation for {stopped} "
        f"instance{'s' if stopped != 1 else ''} in {calls} call{'s' if calls != 1 else ''}"
    )
    if doc.get("still_running"):
        text += f"; {doc['still_running']} still running (their final state is not collected yet)"
    if not doc["runner_released"]:
        text += "; the runner has not let go yet"
    return text

"""The command line: parse, load settings, call the library, map errors to exit codes.

Exit codes (also in the README and `fanout --help`):
  0 every target reached success (with --no-wait: every batch was accepted)
  1 the run finished, some targets failed, were excluded or are unknown
  2 bad input or configuration; nothing was sent
  3 halted by --max-errors; resumable after a look
  4 stopped by the daily quota; `fanout resume` continues when capacity frees
  5 interrupted (SIGINT/SIGTERM) or stopped; resumable
  6 fatal API error (authentication, permission, unknown CommandId): nothing more sent
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import structlog

from fanout.errors import (
    ConfigError,
    ExitCode,
    FanoutError,
    LedgerError,
    RunNotFoundError,
    UsageError,
)
from fanout.ledger import LedgerStore, default_ledger_location, open_ledger
from fanout.logs import redact
from fanout.report import iso
from fanout.settings import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

    from fanout.progress import LiveView

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES = """\b
Exit codes:
  0  every target reached success (--no-wait: every batch accepted)
  1  finished; some targets failed, were excluded or are unknown
  2  bad input or configuration; nothing was sent
  3  halted by --max-errors; resumable
  4  stopped by the daily quota; resume when capacity frees
  5  interrupted or stopped; resumable
  6  fatal API error (credentials, permission, unknown CommandId)"""


def fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> NoReturn:
    """Print one line to stderr (secrets redacted, newlines folded) and exit."""
    text = " ".join(redact(message).split())
    click.echo(f"fanout: error: {text}", err=True)
    sys.exit(int(code))


def _leaf_errors(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception in a (nested) exception group."""
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves += _leaf_errors(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return leaves


def _unwrapped(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `func`; a task group's exception group of FanoutErrors is raised as the first one."""
    try:
        return func(*args, **kwargs)
    except BaseExceptionGroup as group:
        leaves = _leaf_errors(group)
        if not leaves or not all(isinstance(exc, FanoutError) for exc in leaves):
            raise
        raise leaves[0] from None


def guarded(func: F) -> F:
    """Turn FanoutError into a one-line message and its exit code (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return _unwrapped(func, *args, **kwargs)
        except RunNotFoundError as exc:
            fail(str(exc))
        except UsageError as exc:
            fail(str(exc))
        except LedgerError as exc:
            fail(str(exc))
        except FanoutError as exc:
            fail(str(exc), ExitCode.FATAL_API)
        except KeyboardInterrupt:
            fail("interrupted", ExitCode.INTERRUPTED)

    return wrapper  # type: ignore[return-value]


# Events a person does not read one by one: their sums are in the live view and `fanout report`.
_QUIET_EVENTS = frozenset({"instance", "batch_start"})


class Out:
    """Where output goes: JSON on stdout with --json; a live view on a TTY; plain lines otherwise.

    stdout carries only the run id (first) and documents; progress goes to stderr.
    """

    __slots__ = ("_console", "_live", "json")

    def __init__(self, *, as_json: bool, console: Console | None = None) -> None:
        self.json = as_json
        self._console = console  # draw the live view here whatever stderr is (tests)
        self._live: LiveView | None = None

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


def _logs_verbose() -> bool:
    """True if structlog lets info lines through (`--log-level info` or `debug`)."""
    enabled = getattr(structlog.get_logger("fanout.cli").bind(), "is_enabled_for", None)
    return bool(enabled(logging.INFO)) if callable(enabled) else False


def _quota_wait_line(data: Mapping[str, object]) -> str:
    """The line of a quota wait: which regions, until when."""
    until, regions = data["until"], data["regions"]
    when = iso(until) if isinstance(until, int | float) else until
    names = ", ".join(map(str, regions)) if isinstance(regions, list | tuple) else regions
    return f"daily quota spent in {names}: waiting until {when}"


# The one stderr line per event kind without a TTY; other kinds print nothing.
_PLAIN_LINES: dict[str, Callable[[Mapping[str, object]], str]] = {
    "run": lambda d: (
        f"run {d['run_id']}: {d['targets']} targets, {d['batches']} batches, "
        f"{d['excluded']} excluded by preflight"
    ),
    "resume": lambda d: f"resuming {d['run_id']} (was {d['state']})",
    "end": lambda d: f"{d['state']} (exit {d['exit_code']}): {d['instances']}",
    "wave": lambda d: f"wave {d['wave']} done ({d['failures']} failures so far)",
    "halted": lambda d: (
        f"error budget exceeded: {d['failures']} failures > {d['allowed']} allowed; "
        "no more dispatching, collecting what is in flight"
    ),
    "quota_wait": _quota_wait_line,
}


def common_options(func: F) -> F:
    """Options every command takes."""
    for option in reversed(
        [
            click.option(
                "--config",
                "config_file",
                type=click.Path(path_type=Path),
                help="Settings file (TOML); default $FANOUT_CONFIG.",
            ),
            click.option(
                "--ledger",
                help="Ledger: a SQLite path or postgresql:// URL "
                "(default $FANOUT_LEDGER, else XDG state).",
            ),
            click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
            click.option(
                "--log-level",
                default="warning",
                show_default=True,
                type=click.Choice(["debug", "info", "warning", "error"]),
            ),
        ]
    ):
        func = option(func)
    return func


def settings_from(config_file: Path | None, **flags: object) -> Settings:
    """Load settings with these flags on top."""
    return load_settings(config_file=config_file, flags=flags)


def ledger_for(settings: Settings, *, run_id: str | None = None) -> LedgerStore:
    """Open the configured ledger; with `run_id`, refuse to create one (the run must exist)."""
    location = settings.ledger or default_ledger_location()
    if run_id is not None and "://" not in location and not Path(location).expanduser().exists():
        msg = f"no run {run_id!r}: there is no ledger at {location}"
        raise RunNotFoundError(msg)
    return open_ledger(location)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(package_name="fanout", prog_name="fanout")
def main() -> None:
    """fanout: run one Cloud Assistant command across a whole ECS fleet, safely.

    \b
    fanout plan --command-id c-xxx --targets hosts.txt --region cn-hangzhou
    fanout run  --command-id c-xxx --targets hosts.txt --region cn-hangzhou
    fanout status RUN_ID ; fanout resume RUN_ID ; fanout report RUN_ID
    """


def _register() -> None:
    """Attach the sub-commands (kept in their own modules)."""
    from fanout.cli import control, run, views  # noqa: PLC0415 - they import this module

    for command in (*run.COMMANDS, *control.COMMANDS, *views.COMMANDS):
        main.add_command(command)
    try:
        from fanout.emulator.cli import emulator_command  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the emulator ships with the package
        return
    main.add_command(emulator_command, name="emulator")


def refuse(option: str, issue: str = "not implemented yet") -> NoReturn:
    """Refuse an option we do not support (never silently ignore it)."""
    raise ConfigError(f"{option} is {issue}")


_register()

__all__ += [
    "EXIT_CODES",
    "Out",
    "common_options",
    "fail",
    "guarded",
    "ledger_for",
    "refuse",
    "settings_from",
]

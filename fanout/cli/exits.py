"""Exit codes: every error a command raises becomes one stderr line and its documented code.

Exit codes (also in the README and `fanout --help`):
  0 every invoked target reached success (with --no-wait: every batch was accepted);
    preflight exclusions are counted but do not fail the run unless --strict
  1 the run finished and some invoked targets failed, were unreachable or are unknown
    (--strict: or excluded)
  2 bad input or configuration, or no terminal and no --yes, refused before any call (also no
    credentials found, an unknown --command-id); nothing was sent
  3 halted by --max-errors or --wave-max-failures; resumable after a look
  4 stopped by the daily quota; `fanout resume` continues when capacity frees
  5 interrupted (SIGINT/SIGTERM), stopped, paused, or the confirmation answered no
  6 fatal: API authentication, a missing RAM permission (named), a CommandId gone, credentials
    expired and not renewable, or a ledger write failure after calls went out (what went out is
    recorded); nothing more sent; resumable once fixed
 70 internal error (a bug): one line naming the file that holds the traceback

Click's own usage errors (an unknown option, a value that is not a number) are shortened to the
same one line, `fanout: error: ...`, exit 2; the full usage stays in `--help`.

A programming error (any exception that is not a FanoutError, a click exception or an
interrupt) is never reported as bad input: its traceback, secrets redacted, goes to
`$XDG_STATE_HOME/fanout/crash-<UTC time>-<random>.txt` (else the temporary folder), mode 0600,
and stderr gets one line naming the exception's type and that file.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

import fanout
from fanout.errors import (
    DeclinedError,
    ExitCode,
    FanoutError,
    LedgerError,
    LedgerWriteError,
    RunNotFoundError,
    UsageError,
)
from fanout.logs import redact

__all__ = ["EXIT_CODES", "exit_code_of", "fail", "guarded", "one_line"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES = """\b
Exit codes:
  0  every invoked target succeeded (exclusions alone do not fail a run)
  1  finished; some targets failed, unreachable or unknown (--strict: or excluded)
  2  bad input or configuration, no credentials, unknown --command-id, or no
     terminal and no --yes: refused before any call; nothing sent
  3  halted by --max-errors or --wave-max-failures (wave checks count); resumable
  4  stopped by the daily quota; resume when capacity frees
  5  interrupted, stopped, paused, held by a wave check, or answered no; resumable
  6  fatal: credentials refused or expired, RAM permission (named), a CommandId
     gone, or the ledger failed after calls went out (they are recorded); resumable
  70 internal error (a bug): the traceback is in the file named"""


def one_line(message: str) -> str:
    """A message as one printable line: secrets redacted, whitespace folded, undecodable bytes
    and control characters escaped."""
    text = " ".join(redact(message).split())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> NoReturn:
    """Print one line to stderr (secrets redacted, newlines folded) and exit."""
    click.echo(f"fanout: error: {one_line(message)}", err=True)
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
        # A ledger failure after calls went out outranks the rest: never reported as exit 2.
        written = [exc for exc in leaves if isinstance(exc, LedgerWriteError)]
        raise (written or leaves)[0] from None


# Each kind of FanoutError and its exit code, the most specific first (DESIGN section 3).
_EXIT_CODES: tuple[tuple[type[FanoutError], ExitCode], ...] = (
    (LedgerWriteError, ExitCode.FATAL_API),  # calls went out: never "nothing was sent"
    (RunNotFoundError, ExitCode.BAD_INPUT),
    (DeclinedError, ExitCode.INTERRUPTED),
    (UsageError, ExitCode.BAD_INPUT),
    (LedgerError, ExitCode.BAD_INPUT),  # before anything was sent (after: LedgerWriteError)
)


def exit_code_of(exc: FanoutError) -> ExitCode:
    """The documented exit code of a FanoutError; API errors and the rest are fatal (6)."""
    return next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)), ExitCode.FATAL_API)


def guarded(func: F) -> F:
    """Turn FanoutError into a one-line message and its exit code (never a traceback); any
    other exception is a bug: exit 70, its traceback in a file that the one line names."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return _unwrapped(func, *args, **kwargs)
        except DeclinedError as exc:  # an answer, not an error: said plainly
            click.echo(f"fanout: {one_line(str(exc))}", err=True)
            sys.exit(int(exit_code_of(exc)))
        except FanoutError as exc:
            fail(str(exc), exit_code_of(exc))
        except KeyboardInterrupt:
            fail("interrupted", ExitCode.INTERRUPTED)
        except (click.ClickException, click.Abort, click.exceptions.Exit):
            raise  # click's own: usage errors, an answered "no", an explicit exit
        except Exception as exc:  # noqa: BLE001 - anything else is a bug: exit 70, never 2
            _crashed(exc)

    return wrapper  # type: ignore[return-value]


def _crashed(exc: BaseException) -> NoReturn:
    """Write the traceback of a bug to a file, name it in one stderr line and exit 70."""
    kind = _bug_type(exc)
    try:
        where = f"traceback in {_write_traceback(exc)}"
    except OSError as err:
        where = f"the traceback could not be written ({err.strerror or err})"
    click.echo(f"fanout: internal error (a bug): {kind}; {where}", err=True)
    sys.exit(int(ExitCode.INTERNAL))


def _bug_type(exc: BaseException) -> str:
    """The exception's type name; for a task group's, the first leaf that is not a FanoutError."""
    if isinstance(exc, BaseExceptionGroup):
        bugs = [leaf for leaf in _leaf_errors(exc) if not isinstance(leaf, FanoutError)]
        exc = bugs[0] if bugs else exc
    return type(exc).__name__


def _crash_folders() -> list[Path]:
    """Where a traceback may go, first choice first: fanout's state folder, then the temp one."""
    folders = [Path(tempfile.gettempdir())]
    state_home = os.environ.get("XDG_STATE_HOME")
    if not state_home:
        try:
            state_home = str(Path.home() / ".local" / "state")
        except RuntimeError:  # no home folder to be found
            return folders
    return [Path(state_home) / "fanout", *folders]


def _write_traceback(exc: BaseException) -> Path:
    """A new file (mode 0600) holding the redacted traceback; the first folder that takes it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = redact(
        f"fanout {fanout.__version__}, Python {sys.version.split()[0]}, {stamp}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    error: OSError | None = None
    for folder in _crash_folders():
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f"crash-{stamp}-", suffix=".txt", dir=folder)
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as exc_write:
            error = error or exc_write
        else:
            return Path(name)
    assert error is not None
    raise error

"""Exit codes: every error a command raises becomes one stderr line and its documented code.

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

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from fanout.errors import ExitCode, FanoutError, LedgerError, RunNotFoundError, UsageError
from fanout.logs import redact

__all__ = ["EXIT_CODES", "fail", "guarded"]

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

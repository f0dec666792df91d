"""A reader that closes the pipe does not stop fanout.

`fanout run ... --json | head -1 | jq -r .run_id` (the README's runbook) closes fanout's stdout
after the first line. Python raises BrokenPipeError on the next write, which would end a run
mid-rollout (or, for `status | true`, end a reader with a crash report). Here the standard
streams are rebuilt over a raw writer that, once the reader is gone, drops what is written:
the run carries on with the ledger as its record, and a reader finishes with its own exit code.
Only the process's real streams are replaced (tests that capture output keep theirs).
"""

from __future__ import annotations

import io
import os
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["keep_writing_after_a_closed_pipe"]


class _Dropping(io.RawIOBase):
    """A file descriptor's writer that, after EPIPE, swallows every write as written."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.gone = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: ReadableBuffer) -> int:
        size = memoryview(data).nbytes
        if self.gone:
            return size
        try:
            return os.write(self._fd, data)
        except BrokenPipeError:
            self.gone = True
            return size


def _rebuilt(stream: TextIO) -> TextIO:
    raw = _Dropping(stream.fileno())
    return io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=bool(stream.line_buffering),
        write_through=getattr(stream, "write_through", False),
    )


def keep_writing_after_a_closed_pipe() -> None:
    """Replace sys.stdout and sys.stderr, if they are the process's own, by dropping writers."""
    if sys.stdout is sys.__stdout__ and sys.stdout is not None:
        sys.stdout.flush()
        sys.stdout = _rebuilt(sys.stdout)
    if sys.stderr is sys.__stderr__ and sys.stderr is not None:
        sys.stderr.flush()
        sys.stderr = _rebuilt(sys.stderr)

"""A lease holder on a PostgreSQL ledger that stops itself (SIGSTOP) inside a group of writes.

`python -m tests.pg_stall URL POINT LEASE_S`: takes run `tests.test_ledger.RUN`'s lease as
`STALL_OWNER` for LEASE_S, prints "leased UNTIL" (epoch seconds), then applies one group and stops
itself at POINT in it, as a process frozen at that instant would, with its transaction open
and its locks held:

- `quota`: a BeginAttempt, after its quota window was counted (the region's advisory lock held);
- `lease`: a lease renewal, after the run's row was locked FOR UPDATE;
- `commit`: a BeginAttempt, after its results were checked, just before COMMIT (the server
  reports the session "idle in transaction"; its own timeout is set past the test here, as a
  Flush message after the group's Sync leaves it disarmed).

Woken (SIGCONT), it finishes the group; prints "applied" (exit 0) or the LedgerError (exit 3).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from fanout.errors import LedgerError
from fanout.ledger import AcquireLease, BeginAttempt, Op, open_ledger, pg_ops
from fanout.ledger import postgres as pg_ledger
from tests.test_ledger import RUN

__all__ = ["STALL_OWNER"]

STALL_OWNER = "stalled-host:1"


def _stop_first(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, but the process stops itself (SIGSTOP) just before it runs."""

    def stopped(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGSTOP)
        return fn(*args, **kwargs)

    return stopped


def _stop_after(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, but the process stops itself (SIGSTOP) just after it ran."""

    def stopped(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGSTOP)
        return result

    return stopped


def main(url: str, point: str, lease_s: float) -> int:
    """Take the lease, then stop inside one group at `point`; the exit code once woken."""
    if point == "commit":
        pg_ledger._IDLE_IN_TRANSACTION_TIMEOUT_MS = 600_000
    store = open_ledger(url)
    now = time.time()
    until = now + lease_s
    assert store.apply([AcquireLease(RUN, STALL_OWNER, until, now)]) == [(True, STALL_OWNER, until)]
    print(f"leased {until!r}", flush=True)
    op: Op
    if point == "quota":
        pg_ops._begin_attempt = _stop_first(pg_ops._begin_attempt)
        op = BeginAttempt(
            RUN, f"{RUN}-b0", "cn-hangzhou", 1, "tok-0", "acct", now - 86_400, 10, now
        )
    elif point == "commit":
        pg_ops.Group.run_checks = _stop_after(pg_ops.Group.run_checks)  # type: ignore[method-assign]
        op = BeginAttempt(
            RUN, f"{RUN}-b0", "cn-hangzhou", 1, "tok-0", "acct", now - 86_400, 10, now
        )
    else:
        pg_ops._try_run_lock = _stop_first(pg_ops._try_run_lock)
        op = AcquireLease(RUN, STALL_OWNER, until, now, renew=True)
    try:
        store.apply([op])
    except LedgerError as exc:
        print(f"refused: {exc}", flush=True)
        return 3
    print("applied", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))

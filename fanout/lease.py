"""The lease: one runner drives a run at a time, and it listens for `fanout stop` while it does.

A runner takes the run's lease before it sends anything (`take_lease`), renews it a third of
`lease_s` at a time while it runs and, on the same beat, reads the run's new ledger events for a
stop request (`keep_lease`); `release` expires it when the leg ends. A holder that died on this
host is taken over at once for a host-local ledger; PostgreSQL checks its holders' connections.
"""

from __future__ import annotations

import os
import socket

import anyio
import structlog

from fanout.clock import Clock
from fanout.errors import LedgerError, UsageError
from fanout.halt import HaltReason, RunControl
from fanout.ledger import AcquireLease, GroupCommitter, LedgerStore, RunRecord
from fanout.times import iso

__all__ = [
    "STOP_POLL_S",
    "STOP_REQUEST",
    "holder_is_gone",
    "keep_lease",
    "lease_holder",
    "owner",
    "release",
    "take_lease",
]

log = structlog.get_logger("fanout.lease")

# The ledger event kind `fanout stop` appends for the runner to obey.
STOP_REQUEST = "stop_requested"
# How often the runner looks for a `fanout stop` request in the ledger.
STOP_POLL_S = 1.0


def owner() -> str:
    """Who drives a run: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def take_lease(
    committer: GroupCommitter,
    run: RunRecord,
    clock: Clock,
    lease_s: float,
    *,
    local: bool,
    force: bool,
) -> None:
    """Become the one runner of this run, or refuse with who holds it.

    A dead holder on this host is taken over at once only for a host-local ledger: host names
    are not unique across the hosts sharing a PostgreSQL ledger (which checks its holders'
    connections itself).
    """
    now = clock.time()
    op = AcquireLease(run.run_id, owner(), now + lease_s, now, force=force)
    granted, holder, until = await _lease(committer, op)
    if not granted and local and holder_is_gone(holder):
        op = AcquireLease(run.run_id, owner(), now + lease_s, now, force=True)
        granted, holder, until = await _lease(committer, op)
    if not granted:
        when = iso(until or now)
        msg = f"run {run.run_id} is being driven by {holder} (lease until {when})"
        raise UsageError(msg)


def release(run_id: str, now: float) -> AcquireLease:
    """The ledger operation that lets go of the lease (it expires now)."""
    return AcquireLease(run_id, owner(), now, now)


async def _lease(
    committer: GroupCommitter, op: AcquireLease
) -> tuple[bool, str | None, float | None]:
    """Apply one lease operation: (granted, holder, until)."""
    (result,) = await committer.submit(op)
    assert isinstance(result, tuple)
    granted, holder, until = result
    return bool(granted), holder, until


def holder_is_gone(holder: str | None) -> bool:
    """True if the holder (of a lease, or a CreateCommand claim) was a process on this host
    that no longer exists."""
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def lease_holder(run: RunRecord, now: float, *, local: bool) -> str | None:
    """Who drives the run now: the holder of an unexpired lease whose process is not known to be
    gone (None: no runner holds it - it ended, was killed, or was never started)."""
    if run.lease_owner is None or run.lease_until is None or run.lease_until <= now:
        return None
    if local and holder_is_gone(run.lease_owner):
        return None
    return run.lease_owner


async def keep_lease(
    committer: GroupCommitter,
    store: LedgerStore,
    run: RunRecord,
    clock: Clock,
    lease_s: float,
    control: RunControl,
    last_event: int,
    stop_poll_s: float = STOP_POLL_S,
) -> None:
    """Renew the lease while this process drives the run; obey `fanout stop` requests (looked
    for every `stop_poll_s`)."""
    renewed = clock.monotonic()
    while True:
        await clock.sleep(min(stop_poll_s, lease_s / 3))
        events = await anyio.to_thread.run_sync(store.events, run.run_id, last_event)
        if events:
            last_event = events[-1][0]
            if any(kind == STOP_REQUEST for _id, _ts, kind, _data in events):
                control.halt(HaltReason.STOP_REQUESTED)
                log.warning("stop requested", run_id=run.run_id)
        if clock.monotonic() - renewed >= lease_s / 3:
            renewed = clock.monotonic()
            now = clock.time()
            op = AcquireLease(run.run_id, owner(), now + lease_s, now, renew=True)
            granted, holder, _until = await _lease(committer, op)
            if not granted:  # taken over while this process was stalled: stop, write nothing
                msg = (
                    f"run {run.run_id}: the lease was taken over by {holder}; this runner "
                    f"({owner()}) stops dispatching"
                )
                raise LedgerError(msg)

"""Group commit: many tasks' ledger writes share one transaction, so durability does not
serialise the run on fsync. `submit` waits until its operations are committed (write-ahead
intent); `post` does not wait (outcomes that a resume can recompute), and its errors surface at
the next `flush`.

A storage failure (the store's `LedgerError`) reaches every waiter of the group as a
`LedgerError` saying a write failed; any other exception is a bug and reaches them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import anyio

from fanout.errors import LedgerError
from fanout.ledger.model import SetInstances

if TYPE_CHECKING:
    from fanout.ledger import LedgerStore
    from fanout.ledger.model import Op

__all__ = ["GroupCommitter"]

# Instance records queued beyond this make `room()` wait for the next commit. Results can come
# back faster than a disk commits them (a quota day's executions finishing together, or an
# emulator on simulated time): unbounded, the queue held a third of a million-instance run's
# records at once and the process's memory grew with the fleet. A commit of this many records
# takes well under a second; each posted record is a few hundred bytes.
HIGH_WATER = 20_000


def _reraise(error: Exception) -> NoReturn:
    """A storage error as the same kind of LedgerError saying a write failed (a lost lease stays
    a lost lease); anything else as it is."""
    if isinstance(error, LedgerError):
        msg = f"ledger write failed: {error}"
        raise type(error)(msg) from error
    raise error


class _Pending:
    """Operations waiting for a commit, and the event their group's submitters wait on."""

    __slots__ = ("done", "error", "ops", "results")

    def __init__(self, ops: Sequence[Op], done: anyio.Event) -> None:
        self.ops = ops
        self.done = done  # shared by the whole group: one event per commit, not per write
        self.results: list[object] = []
        self.error: Exception | None = None


class GroupCommitter:
    """Collects writes from many tasks and applies each group in one transaction (a thread)."""

    __slots__ = (
        "_closed",
        "_done",
        "_error",
        "_idle",
        "_queue",
        "_queued",
        "_room",
        "_store",
        "_wakeup",
        "commits",
    )

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._queue: list[_Pending] = []
        self._done = anyio.Event()  # set when the group now queueing is committed
        self._wakeup = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._queued = 0  # instance records (other operations count one) in `_queue`
        self._room = anyio.Event()  # set while `_queued` is at most HIGH_WATER
        self._room.set()
        self._closed = False
        self._error: Exception | None = None
        self.commits = 0

    async def submit(self, *ops: Op) -> list[object]:
        """Apply `ops` in the next group; return their results once committed."""
        item = self._enqueue(ops)
        await item.done.wait()
        if item.error is not None:
            _reraise(item.error)
        return item.results

    def post(self, *ops: Op) -> None:
        """Apply `ops` in the next group without waiting."""
        self._enqueue(ops)

    async def room(self) -> None:
        """Wait while more than `HIGH_WATER` records are queued: a producer of posts (the
        results collector) calls this between reads, so its posts cannot outrun the disk."""
        while not self._room.is_set():
            await self._room.wait()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed; raise a posted write's error."""
        if self._queue or not self._idle.is_set():
            await self.submit()
        if self._error is not None:
            error, self._error = self._error, None
            _reraise(error)

    def close(self) -> None:
        """Stop the loop once the queue is empty."""
        self._closed = True
        self._wakeup.set()

    async def run(self) -> None:
        """The commit loop; run it in a task group, `close()` to end it."""
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            if not self._queue:
                if self._closed:
                    return
                continue
            group, self._queue = self._queue, []
            self._queued = 0
            self._room.set()
            done, self._done = self._done, anyio.Event()
            self._idle = anyio.Event()
            await self._commit(group)
            done.set()
            self._idle.set()

    def _enqueue(self, ops: Sequence[Op]) -> _Pending:
        """Queue one submission and wake the loop."""
        if self._closed:
            msg = "ledger writer is closed"
            raise LedgerError(msg)
        item = _Pending(ops, self._done)
        self._queue.append(item)
        self._queued += sum(len(op.records) if isinstance(op, SetInstances) else 1 for op in ops)
        if self._queued > HIGH_WATER and self._room.is_set():
            self._room = anyio.Event()
        self._wakeup.set()
        return item

    async def _commit(self, group: list[_Pending]) -> None:
        """Apply one group in a worker thread (not cancellable mid-transaction)."""
        ops = [op for item in group for op in item.ops]
        try:
            results = await anyio.to_thread.run_sync(self._store.apply, ops)
        except Exception as exc:  # noqa: BLE001 - handed to every waiter of the group as it is
            self._error = exc
            for item in group:
                item.error = exc
            return
        self.commits += 1
        offset = 0
        for item in group:
            item.results = results[offset : offset + len(item.ops)]
            offset += len(item.ops)

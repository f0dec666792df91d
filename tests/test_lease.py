"""The lease on the fake clock: taken once, refused to a second runner, renewed a third of
`lease_s` at a time, and the beat that renews it also obeys `fanout stop` (real SQLite ledger)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from fanout.clock import FakeClock
from fanout.errors import UsageError
from fanout.halt import HaltReason, RunControl
from fanout.lease import STOP_POLL_S, STOP_REQUEST, keep_lease, release, take_lease
from fanout.ledger import AcquireLease, AppendEvent, GroupCommitter, RunRecord, RunState
from fanout.ledger.sqlite import SqliteLedger

LEASE_S = 30.0


def _store(tmp_path: Path, clock: FakeClock) -> tuple[SqliteLedger, RunRecord]:
    store = SqliteLedger(tmp_path / "ledger.sqlite3")
    now = clock.time()
    run = RunRecord("r-lease", now, now, RunState.CREATED, "c-1", "acct", 1)
    store.create_run(run, [], [])
    return store, run


async def test_a_second_runner_is_refused_until_the_lease_is_released(tmp_path: Path) -> None:
    """While one runner holds the lease another is refused naming the holder; after release it may."""
    clock = FakeClock()
    store, run = _store(tmp_path, clock)
    committer = GroupCommitter(store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(committer.run)
        await take_lease(committer, run, clock, LEASE_S, local=False, force=False)
        other = AcquireLease(run.run_id, "elsewhere:1", clock.time() + LEASE_S, clock.time())
        (result,) = await committer.submit(other)
        assert result[0] is False  # type: ignore[index]
        await committer.submit(release(run.run_id, clock.time()))
        clock.advance(0.001)
        (result,) = await committer.submit(
            AcquireLease(run.run_id, "elsewhere:1", clock.time() + LEASE_S, clock.time())
        )
        assert result[0] is True  # type: ignore[index]
        with pytest.raises(UsageError, match="being driven by elsewhere:1"):
            await take_lease(committer, run, clock, LEASE_S, local=False, force=False)
        committer.close()
    store.close()


async def test_the_lease_is_renewed_on_the_clock_and_a_stop_request_halts_the_run(
    tmp_path: Path,
) -> None:
    """Renewals follow the fake clock (a third of lease_s); a stop event halts with STOP_REQUESTED."""
    clock = FakeClock()
    store, run = _store(tmp_path, clock)
    committer = GroupCommitter(store)
    control = RunControl(clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(committer.run)
        await take_lease(committer, run, clock, LEASE_S, local=True, force=False)
        first_until = store.get_run(run.run_id).lease_until
        tg.start_soon(keep_lease, committer, store, run, clock, LEASE_S, control, 0)
        with anyio.fail_after(30):
            while clock.time() < (first_until or 0) + 2 * LEASE_S:  # noqa: ASYNC110 - polls the fake clock
                await anyio.sleep(0.001)
            await committer.flush()
            assert (store.get_run(run.run_id).lease_until or 0) > (first_until or 0) + LEASE_S
            assert not control.halted
            await committer.submit(AppendEvent(run.run_id, STOP_REQUEST, clock.time(), {}))
            await control.halt_event.wait()
        assert control.halted_by(HaltReason.STOP_REQUESTED)
        assert all(s == STOP_POLL_S for s in clock.sleeps)
        tg.cancel_scope.cancel()
    committer.close()
    store.close()

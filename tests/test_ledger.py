"""The ledger stores: schema, file mode, checked transitions, atomic quota, group commit.

Tests marked `both_backends` run against SQLite and PostgreSQL with the same expectations.
"""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path

import anyio
import pytest

from fanout.errors import LedgerError, RunNotFoundError, TransitionError
from fanout.launch import batch_records
from fanout.ledger import (
    AcquireLease,
    AppendEvent,
    BatchRecord,
    BatchState,
    BeginAttempt,
    FinishAttempt,
    GroupCommitter,
    InstanceRecord,
    InstanceState,
    LedgerStore,
    RunRecord,
    RunState,
    SetBatch,
    SetInstances,
    SetRun,
    ShrinkBatch,
    group,
    open_ledger,
)
from fanout.ledger.location import redact_location
from fanout.ledger.model import BATCH_TRANSITIONS, check_transition, reported_state
from fanout.ledger.schema import SCHEMA_VERSION
from fanout.ledger.sqlite import SqliteLedger
from fanout.plan import make_plan
from fanout.targets import Target
from tests.conftest import both_backends, ledger_sql

RUN = "r-test"


def _run(run_id: str = RUN, targets: int = 3) -> RunRecord:
    now = time.time()
    return RunRecord(
        run_id,
        now,
        now,
        RunState.CREATED,
        "c-1",
        "acct",
        targets,
        parameters={"name": "x", "password": "***"},
        secret_keys=("password",),
    )


def _batch(seq: int, ids: tuple[str, ...], run_id: str = RUN) -> BatchRecord:
    return BatchRecord(
        f"{run_id}-b{seq}", run_id, "cn-hangzhou", seq, 0, ids, f"tok-{seq}", BatchState.PENDING
    )


@pytest.fixture
def ledger(ledger_location: str) -> Iterator[LedgerStore]:
    store = open_ledger(ledger_location)
    store.create_run(_run(), [_batch(0, ("i-a", "i-b")), _batch(1, ("i-c",))])
    yield store
    store.close()


def _begin(batch: int, attempt: int = 1, limit: int = 10, account: str = "acct") -> BeginAttempt:
    now = time.time()
    return BeginAttempt(
        RUN,
        f"{RUN}-b{batch}",
        "cn-hangzhou",
        attempt,
        f"tok-{batch}",
        account,
        now - 86_400,
        limit,
        now,
    )


def test_file_is_private_and_schema_current(tmp_path: Path) -> None:
    """The ledger file is created mode 0600 and carries the newest schema version (I5)."""
    path = tmp_path / "sub" / "l.sqlite3"
    SqliteLedger(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert int(version) == SCHEMA_VERSION


def test_wider_mode_is_tightened(tmp_path: Path) -> None:
    """An existing ledger readable by others is narrowed to 0600 on open."""
    path = tmp_path / "l.sqlite3"
    SqliteLedger(path).close()
    path.chmod(0o644)
    SqliteLedger(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_not_a_ledger_is_refused(tmp_path: Path) -> None:
    """A file that is not SQLite gives a LedgerError naming it, not a traceback."""
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"\x00garbage" * 200)
    with pytest.raises(LedgerError, match=r"junk\.sqlite3"):
        SqliteLedger(path)


@both_backends
def test_driver_errors_leave_as_ledger_errors(ledger_location: str) -> None:
    """A driver error (sqlite3, psycopg) in any method, write or read, is a LedgerError naming
    the ledger and the driver's message, caused by the driver's error; the store stays usable."""
    store = open_ledger(ledger_location)
    store.create_run(_run(), [_batch(0, ("i-a", "i-b"))])
    ledger_sql(ledger_location, "DROP TABLE instances")  # behind the store's back
    done = InstanceRecord(RUN, "cn-hangzhou", "i-a", f"{RUN}-b0", InstanceState.SUCCEEDED)
    calls: dict[str, Callable[[], object]] = {
        "apply": lambda: store.apply([SetInstances(RUN, (done,), time.time())]),
        "create_run": lambda: store.create_run(_run("r-2"), [_batch(0, ("i-x",), "r-2")]),
        "instance_counts": lambda: store.instance_counts(RUN),
        "iter_instances": lambda: list(store.iter_instances(RUN)),
    }
    name = re.escape(redact_location(ledger_location))
    for call in calls.values():
        with pytest.raises(LedgerError, match=rf"^{name}: .*instances") as info:
            call()
        driver = type(info.value.__cause__).__module__.partition(".")[0]
        assert driver in {"sqlite3", "psycopg"}, info.value.__cause__
    assert store.get_run(RUN).run_id == RUN  # the lock and the transaction were released
    store.apply([FinishAttempt(f"{RUN}-b0", 1, "accepted", time.time())])
    store.close()


def test_unopenable_path_is_a_ledger_error(tmp_path: Path) -> None:
    """A ledger path that cannot be opened as a file (a directory) is a LedgerError naming it."""
    path = tmp_path / "ledger.sqlite3"
    path.mkdir()
    with pytest.raises(LedgerError, match=r"ledger\.sqlite3: is a directory; a ledger must be"):
        SqliteLedger(path)


@both_backends
def test_run_round_trip(ledger: LedgerStore) -> None:
    """A stored run reads back with its redacted parameters, batches and pending instances."""
    run = ledger.get_run(RUN)
    assert run.parameters == {"name": "x", "password": "***"}
    assert run.secret_keys == ("password",)
    batches = ledger.load_batches(RUN)
    assert [b.instance_ids for b in batches] == [("i-a", "i-b"), ("i-c",)]
    assert ledger.instance_counts(RUN) == {"cn-hangzhou": {"pending": 3}}
    with pytest.raises(RunNotFoundError):
        ledger.get_run("nope")
    with pytest.raises(LedgerError, match="already exists"):
        ledger.create_run(_run(), [])


@both_backends
def test_begin_attempt_marks_sending_and_counts_quota(ledger: LedgerStore) -> None:
    """A granted attempt is durable: batch SENDING, attempt row, one quota call."""
    assert ledger.apply([_begin(0)]) == [True]
    batch = ledger.load_batches(RUN)[0]
    assert batch.state is BatchState.SENDING
    assert batch.attempts == 1
    assert ledger.attempts(batch.batch_id)[0]["client_token"] == "tok-0"
    assert ledger.quota_used("acct", 0)["cn-hangzhou"][0] == 1


@both_backends
@pytest.mark.parametrize(
    ("limit", "granted"), [(0, [False, False]), (1, [True, False]), (2, [True, True])]
)
def test_quota_limit_within_one_group(ledger: LedgerStore, limit: int, granted: list[bool]) -> None:
    """Reservations in one transaction never exceed the limit, exactly at the boundary too."""
    assert ledger.apply([_begin(0, limit=limit), _begin(1, limit=limit)]) == granted
    assert sum(n for n, _ in ledger.quota_used("acct", 0).values()) == sum(granted)


@both_backends
def test_quota_is_per_account(ledger: LedgerStore) -> None:
    """Another account's calls do not count against this one."""
    ledger.apply([_begin(0, limit=1, account="other")])
    assert ledger.apply([_begin(1, limit=1, account="acct")]) == [True]


@both_backends
def test_transitions_are_checked(ledger: LedgerStore) -> None:
    """A forbidden batch transition raises and rolls back the whole group."""
    now = time.time()
    with pytest.raises(TransitionError, match="pending -> accepted"):
        ledger.apply([_begin(1), SetBatch(f"{RUN}-b0", BatchState.ACCEPTED, now)])
    assert ledger.load_batches(RUN)[1].state is BatchState.PENDING  # rolled back


@both_backends
def test_accept_reports_instances_invoked(ledger: LedgerStore) -> None:
    """Accepting a batch reports its pending instances invoked, with the batch's InvokeId."""
    now = time.time()
    ledger.apply(
        [
            _begin(0),
            FinishAttempt(f"{RUN}-b0", 1, "accepted", now, invoke_id="t-1", request_id="R"),
            SetBatch(f"{RUN}-b0", BatchState.ACCEPTED, now, invoke_id="t-1"),
        ]
    )
    rows = {r.instance_id: r for r in ledger.iter_instances(RUN)}
    assert rows["i-a"].state is InstanceState.INVOKED
    assert rows["i-a"].invoke_id == "t-1"
    assert ledger.instance_counts(RUN) == {"cn-hangzhou": {"invoked": 2, "pending": 1}}
    done = InstanceRecord(RUN, "cn-hangzhou", "i-a", f"{RUN}-b0", InstanceState.SUCCEEDED)
    ledger.apply([SetInstances(RUN, (done,), now)])
    assert ledger.instance_counts(RUN) == {
        "cn-hangzhou": {"invoked": 1, "pending": 1, "succeeded": 1}
    }
    assert rows["i-c"].state is InstanceState.PENDING
    # The counts and the rows report the same states (counted two different ways).
    listed = Counter(r.state.value for r in ledger.iter_instances(RUN))
    assert ledger.instance_counts(RUN) == {"cn-hangzhou": dict(listed)}


def test_status_counts_come_from_an_index_and_work_without_it(tmp_path: Path) -> None:
    """A writer gives an older ledger the read indexes (no schema version of their own); the
    instance counts read them instead of the table, and read the same counts without them."""
    path = tmp_path / "l.sqlite3"
    store = SqliteLedger(path)
    store.create_run(_run(), [_batch(0, ("i-a", "i-b")), _batch(1, ("i-c",))])
    now = time.time()
    done = InstanceRecord(RUN, "cn-hangzhou", "i-a", f"{RUN}-b0", InstanceState.SUCCEEDED)
    store.apply([_begin(0), SetBatch(f"{RUN}-b0", BatchState.ACCEPTED, now, invoke_id="t-1")])
    store.apply([SetInstances(RUN, (done,), now)])
    store.close()
    expected = {"cn-hangzhou": {"invoked": 1, "pending": 1, "succeeded": 1}}
    with sqlite3.connect(path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT state, region, COUNT(*) FROM instances WHERE run_id = ? "
            "GROUP BY state, region",
            (RUN,),
        ).fetchall()
        assert "COVERING INDEX instances_by_state" in str(plan)
        conn.execute("DROP INDEX instances_by_state")
        conn.execute("DROP INDEX instances_pending")
    reader = SqliteLedger(path, read_only=True)  # creates nothing, the counts as before
    assert reader.instance_counts(RUN) == expected
    reader.close()
    SqliteLedger(path).close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        (version,) = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert {"instances_by_state", "instances_pending"} <= names
    assert int(version) == SCHEMA_VERSION


@both_backends
def test_child_runs_are_the_runs_linked_to_a_run_oldest_first(ledger: LedgerStore) -> None:
    """`child_runs` lists the runs whose parent is the run (retries, rollbacks), oldest first,
    and not their own children."""
    parent = ledger.get_run(RUN)
    for index, (run_id, parent_id) in enumerate(
        [("r-retry", RUN), ("r-other", None), ("r-rollback", RUN), ("r-grandchild", "r-retry")]
    ):
        child = RunRecord(
            run_id,
            parent.created_at + 1 + index,
            parent.created_at + 1 + index,
            RunState.CREATED,
            "c-1",
            "acct",
            0,
            parent_run_id=parent_id,
        )
        ledger.create_run(child, [])
    assert [r.run_id for r in ledger.child_runs(RUN)] == ["r-retry", "r-rollback"]
    assert ledger.child_runs("r-other") == []


@both_backends
def test_failure_tally_counts_what_the_rows_say(ledger: LedgerStore) -> None:
    """failure_tally counts failed and unreachable instances by batch, invocation status and
    whether a reason is given, as the instance rows read one by one say."""
    now = time.time()
    ledger.apply(
        [
            _begin(0),
            FinishAttempt(f"{RUN}-b0", 1, "accepted", now, invoke_id="t-1", request_id="R"),
            SetBatch(f"{RUN}-b0", BatchState.ACCEPTED, now, invoke_id="t-1"),
        ]
    )
    assert ledger.failure_tally(RUN) == []
    failed = InstanceRecord(
        RUN, "cn-hangzhou", "i-a", f"{RUN}-b0", InstanceState.FAILED, invocation_status="Failed"
    )
    unreachable = InstanceRecord(
        RUN, "cn-hangzhou", "i-b", f"{RUN}-b0", InstanceState.UNREACHABLE, reason="agent off"
    )
    plain = InstanceRecord(RUN, "cn-hangzhou", "i-c", f"{RUN}-b1", InstanceState.FAILED)
    ledger.apply([SetInstances(RUN, (failed, unreachable, plain), now)])
    rows = ledger.iter_instances(RUN)
    listed = Counter(
        (r.batch_id, r.state.value, r.invocation_status or "", bool(r.reason))
        for r in rows
        if r.batch_id and r.state in (InstanceState.FAILED, InstanceState.UNREACHABLE)
    )
    tally = ledger.failure_tally(RUN)
    assert {row[:4]: row[4] for row in tally} == dict(listed)
    assert sorted(tally) == [
        (f"{RUN}-b0", "failed", "Failed", False, 1),
        (f"{RUN}-b0", "unreachable", "", True, 1),
        (f"{RUN}-b1", "failed", "", False, 1),
    ]


@both_backends
def test_shrink_only_when_never_maybe_applied(ledger: LedgerStore) -> None:
    """Isolation may change a pending batch's token, but never one whose answer was lost."""
    now = time.time()
    ledger.apply(
        [
            _begin(0),
            SetBatch(f"{RUN}-b0", BatchState.PENDING, now),
            ShrinkBatch(f"{RUN}-b0", ("i-b",), "tok-new", now),
        ]
    )
    assert ledger.load_batches(RUN)[0].client_token == "tok-new"
    ledger.apply([_begin(1), SetBatch(f"{RUN}-b1", BatchState.UNKNOWN, now, maybe_applied=True)])
    with pytest.raises(TransitionError):
        ledger.apply([ShrinkBatch(f"{RUN}-b1", (), "tok-x", now)])


@both_backends
def test_instance_transitions_checked(ledger: LedgerStore) -> None:
    """A final instance state cannot be left."""
    now = time.time()
    rec = InstanceRecord(RUN, "cn-hangzhou", "i-a", f"{RUN}-b0", InstanceState.FAILED, reason="x")
    ledger.apply([SetInstances(RUN, (rec,), now)])
    again = InstanceRecord(RUN, "cn-hangzhou", "i-a", f"{RUN}-b0", InstanceState.SUCCEEDED)
    with pytest.raises(TransitionError, match="failed -> succeeded"):
        ledger.apply([SetInstances(RUN, (again,), now)])


@both_backends
def test_run_transitions_and_lease(ledger: LedgerStore) -> None:
    """Run state changes are checked; a live lease refuses another owner until it expires."""
    now = time.time()
    ledger.apply([SetRun(RUN, RunState.RUNNING, now)])
    with pytest.raises(TransitionError):
        ledger.apply([SetRun(RUN, RunState.CREATED, now)])
    assert ledger.apply([AcquireLease(RUN, "a", now + 60, now)]) == [(True, "a", now + 60)]
    assert ledger.apply([AcquireLease(RUN, "b", now + 60, now)]) == [(False, "a", now + 60)]
    assert ledger.apply([AcquireLease(RUN, "b", now + 200, now + 61)]) == [(True, "b", now + 200)]


def test_transition_table_is_data() -> None:
    """The batch table forbids leaving a final state."""
    for final in (BatchState.FAILED, BatchState.DONE):
        assert not BATCH_TRANSITIONS[final]
    with pytest.raises(TransitionError):
        check_transition(BATCH_TRANSITIONS, BatchState.DONE, BatchState.PENDING, "b")


@pytest.mark.parametrize(
    ("state", "run_state", "reported"),
    [
        (InstanceState.PENDING, RunState.RUNNING, "pending"),
        (InstanceState.PENDING, RunState.HALTED, "not_invoked"),
        (InstanceState.PENDING, RunState.FINISHED, "not_invoked"),
        (InstanceState.INVOKED, RunState.FINISHED, "invoked"),
        (InstanceState.SUCCEEDED, RunState.RUNNING, "succeeded"),
        (InstanceState.NOT_INVOKED, RunState.QUOTA, "not_invoked"),
    ],
)
def test_pending_is_reported_not_invoked_once_the_run_is_not_running(
    state: InstanceState, run_state: RunState, reported: str
) -> None:
    """A pending instance of a run that is not running is reported as not invoked; any other
    state as stored."""
    assert reported_state(state, run_state) == reported


@both_backends
def test_a_new_runs_batches_read_back_are_the_ones_it_stored(ledger_location: str) -> None:
    """A new run's first leg dispatches the batch records it just stored rather than reading
    every instance id back (`fanout.runner.DriveOptions.stored`): that is only right while the
    store gives back exactly what it was given, in the same order: several regions and waves,
    batches with and without a CommandId (a script's, filled in later)."""
    targets = [Target(region, f"i-{region[3:]}-{n:03d}") for n in range(120) for region in
               ("cn-hangzhou", "cn-beijing", "ap-southeast-1")]  # fmt: skip
    plan = make_plan("r-stored", targets, batch_size=50, waves=(30, 200, 360))
    records = batch_records("r-stored", plan, {"cn-hangzhou": "c-1", "cn-beijing": None})
    store = open_ledger(ledger_location)
    try:
        store.create_run(_run("r-stored", targets=len(targets)), records, [])
        assert store.load_batches("r-stored") == records
    finally:
        store.close()


@both_backends
async def test_group_commit_shares_transactions(ledger: LedgerStore) -> None:
    """Many concurrent submits are committed in fewer transactions, each result to its caller."""
    committer = GroupCommitter(ledger)
    results: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(committer.run)

        async def one(batch: int) -> None:
            results.extend(await committer.submit(_begin(batch, limit=1)))

        async with anyio.create_task_group() as inner:
            inner.start_soon(one, 0)
            inner.start_soon(one, 1)
        await committer.flush()
        committer.close()
    assert sorted(results, key=bool) == [False, True]
    assert committer.commits <= 2


@both_backends
async def test_posted_error_surfaces_at_flush(ledger: LedgerStore) -> None:
    """A failed fire-and-forget write is raised by the next flush, not lost."""
    committer = GroupCommitter(ledger)
    async with anyio.create_task_group() as tg:
        tg.start_soon(committer.run)
        committer.post(SetBatch(f"{RUN}-b0", BatchState.DONE, time.time()))
        with pytest.raises(LedgerError, match="pending -> done"):
            await committer.flush()
        committer.close()


async def test_posts_past_the_high_water_mark_hold_the_producer_until_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`room()` lets a producer of posted results go on while at most HIGH_WATER records wait
    for the disk, holds it while more do, and lets it go once the commit loop has taken them:
    a run whose results come back faster than they are committed does not pile them up in
    memory. Every posted record is written."""
    monkeypatch.setattr(group, "HIGH_WATER", 2)
    store = SqliteLedger(tmp_path / "l.sqlite3")
    store.create_run(_run(targets=4), [_batch(0, ("i-a", "i-b", "i-c", "i-d"))])
    committer = GroupCommitter(store)

    def results(*ids: str) -> SetInstances:
        done = InstanceState.SUCCEEDED
        records = tuple(InstanceRecord(RUN, "cn-hangzhou", i, f"{RUN}-b0", done) for i in ids)
        return SetInstances(RUN, records, time.time())

    released: list[str] = []

    async def producer() -> None:
        await committer.room()
        released.append("went on")

    with anyio.fail_after(10):
        committer.post(results("i-a", "i-b"))
        await committer.room()  # two queued, none committed (no loop yet): not held
        committer.post(results("i-c", "i-d"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            await anyio.wait_all_tasks_blocked()
            assert released == []  # four queued: held
            tg.start_soon(committer.run)
            await committer.flush()
            assert released == ["went on"]
            committer.close()
    assert {r.instance_id: r.state for r in store.iter_instances(RUN)} == dict.fromkeys(
        ("i-a", "i-b", "i-c", "i-d"), InstanceState.SUCCEEDED
    )
    store.close()


async def test_a_bug_in_a_write_reaches_every_submitter_unchanged(tmp_path: Path) -> None:
    """A non-storage error in a store operation (an event that cannot be serialised: a bug)
    reaches every submitter of its group as that error, not as a LedgerError; nothing of the
    group is written, and the committer goes on."""
    store = SqliteLedger(tmp_path / "l.sqlite3")
    store.create_run(_run(), [_batch(0, ("i-a",))])
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    fine: dict[str, object] = {"ok": 1}
    committer = GroupCommitter(store)
    raised: list[BaseException] = []

    async def submit(data: dict[str, object]) -> None:
        try:
            await committer.submit(AppendEvent(RUN, "event", time.time(), data))
        except Exception as exc:  # noqa: BLE001 - collected to be asserted on
            raised.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, fine)
        tg.start_soon(submit, cyclic)
        tg.start_soon(committer.run)  # after both submits: they form one group
        await anyio.wait_all_tasks_blocked()
        committer.post(AppendEvent(RUN, "event", time.time(), cyclic))
        with pytest.raises(ValueError, match="Circular reference"):
            await committer.flush()  # a posted bug surfaces at flush, as itself
        assert await committer.submit(AppendEvent(RUN, "after", time.time())) == [None]
        committer.close()
    assert [type(exc) for exc in raised] == [ValueError, ValueError]
    assert [kind for _, _, kind, _ in store.events(RUN)] == ["after"]
    store.close()


def _reserve_many(
    location: str, worker: int, n: int, start: Barrier, out: multiprocessing.Queue[int]
) -> None:
    store = open_ledger(location)
    start.wait(30)  # every process reserves at the same time
    granted = 0
    for i in range(n):
        now = time.time()
        attempt = 2 + worker * 1000 + i
        op = BeginAttempt(
            RUN, f"{RUN}-b{i % 2}", "cn-hangzhou", attempt, "t", "acct", now - 86_400, 30, now
        )
        granted += bool(store.apply([op])[0])
    store.close()
    out.put(granted)


@both_backends
def test_quota_is_atomic_across_processes(ledger_location: str) -> None:
    """Three processes reserving from one ledger never exceed the shared limit together (I3)."""
    store = open_ledger(ledger_location)
    store.create_run(_run(), [_batch(0, ("i-a",)), _batch(1, ("i-b",))])
    store.apply([_begin(0), _begin(1)])  # both SENDING so re-begins are allowed
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    start = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_reserve_many, args=(ledger_location, w, 25, start, queue))
        for w in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    granted = sum(queue.get(timeout=5) for _ in procs)
    assert granted == 28  # 30 minus the 2 reserved above
    assert store.quota_used("acct", 0)["cn-hangzhou"][0] == 30
    store.close()


_REGIONS = ("cn-beijing", "cn-hangzhou", "cn-shanghai", "cn-shenzhen")


def _reserve_regions(
    location: str,
    worker: int,
    rounds: int,
    start: Barrier,
    out: multiprocessing.Queue[dict[str, int]],
) -> None:
    """Each group reserves one call in every region, in an order that differs by worker."""
    store = open_ledger(location)
    start.wait(30)
    regions = _REGIONS if worker % 2 else tuple(reversed(_REGIONS))
    granted = dict.fromkeys(_REGIONS, 0)
    for i in range(rounds):
        now = time.time()
        ops = [
            BeginAttempt(
                RUN, f"{RUN}-{r}", r, 1 + worker * 1000 + i, "t", "acct", now - 86_400, 20, now
            )
            for r in regions
        ]
        for region, ok in zip(regions, store.apply(ops), strict=True):
            granted[region] += bool(ok)
    store.close()
    out.put(granted)


@both_backends
def test_quota_groups_over_many_regions_do_not_deadlock(ledger_location: str) -> None:
    """Groups naming regions in opposite orders from several processes neither deadlock nor
    exceed any region's limit."""
    store = open_ledger(ledger_location)
    batches = [
        BatchRecord(f"{RUN}-{r}", RUN, r, n, 0, (f"i-{n}",), f"tok-{r}", BatchState.PENDING)
        for n, r in enumerate(_REGIONS)
    ]
    store.create_run(_run(targets=len(_REGIONS)), batches)
    now = time.time()
    first = [
        BeginAttempt(RUN, b.batch_id, b.region, 0, "t", "acct", now - 86_400, 20, now)
        for b in batches
    ]
    assert store.apply(first) == [True] * len(_REGIONS)  # SENDING, so re-begins are allowed
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[dict[str, int]] = ctx.Queue()
    start = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_reserve_regions, args=(ledger_location, w, 10, start, queue))
        for w in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = [queue.get(timeout=5) for _ in procs]
    assert [p.exitcode for p in procs] == [0, 0, 0]
    for region in _REGIONS:
        assert sum(r[region] for r in results) == 19  # 20 minus the first reservation
        assert store.quota_used("acct", 0)[region][0] == 20
    store.close()

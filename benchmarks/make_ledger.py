"""A finished rollout's ledger at scale, built in a minute instead of bench_rollout's hours (issue 18).

The ledger is written through the store's own API, with the operations the runner sends and in
the order it sends them: the run and its batches (`create_run`), per batch a quota reservation
and its attempt (`BeginAttempt`), how the attempt ended (`FinishAttempt`: accepted, or a 5xx or
a lost answer first and a second attempt with the same ClientToken), the batch accepted, its
instances' final records (`SetInstances`: ~97 % succeeded, ~2 % failed with an exit code, ~1 %
unreachable, outputs of 50-200 bytes), the batch done; the journal of every leg (`start`, the
lease, `wave_start` / `wave`, a `quota_wait` per region and day) and the run's end. Nothing is
written in raw SQL, so it is a ledger the product can make; `status` and `report` read it as
they read bench_rollout's (`--keep DIR`), which it was compared with.

Deterministic for a given `--seed`. Default: 1 000 000 instances, 20 regions, 21 legs (20
resumes), waves 1%,10%,50%,100%, 500 calls per region and day.
Usage: python -m benchmarks.make_ledger [--instances N] [--regions R] [--legs L] OUT.sqlite3
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fanout.aliyun.command import CommandSpec
from fanout.aliyun.endpoints import KNOWN_REGIONS
from fanout.launch import _run_record, batch_records
from fanout.ledger import (
    AcquireLease,
    AppendEvent,
    BatchRecord,
    BatchState,
    BeginAttempt,
    FinishAttempt,
    InstanceRecord,
    InstanceState,
    Op,
    RunState,
    SetBatch,
    SetInstances,
    SetQuotaLimit,
    SetRun,
)
from fanout.ledger.sqlite import SqliteLedger
from fanout.plan import make_plan, parse_waves
from fanout.request import RunRequest
from fanout.settings import Settings
from fanout.sources import CommandNameSource
from fanout.targets import Target

# What bench_rollout runs: its emulator's demo command, its waves and budget, its account.
_COMMAND = "fanout-demo"
_WAVES = "1%,10%,50%,100%"
_ACCOUNT = "LTAI5tFanoutDemoKeyId00"
_START = 1_796_119_479.0  # 2026-12-01T10:04:39Z, as bench_rollout's simulated clock starts
_DAY_S = 86_400.0
_BATCHES_PER_COMMIT = 200  # the runner's group commits hold a few hundred operations
_FAILED, _UNREACHABLE = 0.02, 0.01  # the execution faults bench_rollout injects
_SERVER_ERROR, _LOST_ANSWER = 0.01, 0.01  # the call faults: a second attempt, same token


@dataclass(frozen=True, slots=True)
class Shape:
    """What to build."""

    instances: int
    regions: int
    legs: int
    daily_quota: int
    seed: int


def _targets(shape: Shape, rng: random.Random) -> list[Target]:
    """`instances` ids spread over the regions, like the emulator's (i-<3 chars><17 hex>)."""
    regions = sorted(KNOWN_REGIONS)[: shape.regions]
    share, extra = divmod(shape.instances, len(regions))
    targets: list[Target] = []
    for index, region in enumerate(regions):
        prefix = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(3))
        targets += [
            Target(region, f"i-{prefix}{rng.getrandbits(68):017x}")
            for _ in range(share + (index < extra))
        ]
    return targets


def _output(rng: random.Random, iid: str, exit_code: int) -> str:
    """An execution's output: 50-200 bytes of a deploy script's lines."""
    lines = [f"hello from {iid}", f"deploying release 2026.12.{rng.randrange(1, 31)}"]
    if rng.random() < 0.5:
        lines.append(f"fetched artifact sha256:{rng.getrandbits(128):032x}")
    if rng.random() < 0.5:
        lines.append(f"restarted service in {rng.randrange(1, 90)} s")
    if exit_code:
        lines.append(f"error: health check failed, exit code {exit_code}")
    return "\n".join(lines) + "\n"


def _iso(epoch_s: float) -> str:
    """The API's time format."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def _final(
    rng: random.Random, batch: BatchRecord, iid: str, invoke_id: str, now: float
) -> InstanceRecord:
    """One instance's final record, as the results poller writes it."""
    started = now - rng.uniform(10.0, 600.0)
    roll = rng.random()
    common = InstanceRecord(
        batch.run_id,
        batch.region,
        iid,
        batch.batch_id,
        InstanceState.SUCCEEDED,
        invoke_id=invoke_id,
    )
    if roll < _UNREACHABLE:
        info = "the aliyun service is not running on the instance"
        return replace(
            common,
            state=InstanceState.UNREACHABLE,
            reason=info,
            exit_code=0,
            error_code="ClientNotRunning",
            error_info=info,
            finish_time=_iso(started),
            invocation_status="Aborted",
        )
    if roll < _UNREACHABLE + _FAILED:
        info = "the command execution exit code is not zero"
        code = rng.randrange(1, 128)
        return replace(
            common,
            state=InstanceState.FAILED,
            reason=info,
            exit_code=code,
            error_code="ExitCodeNonzero",
            error_info=info,
            output=_output(rng, iid, code),
            start_time=_iso(started),
            finish_time=_iso(now),
            invocation_status="Failed",
        )
    return replace(
        common,
        exit_code=0,
        output=_output(rng, iid, 0),
        start_time=_iso(started),
        finish_time=_iso(now),
        invocation_status="Success",
    )


class _Writer:
    """Sends the runner's operations for each batch, a group per commit."""

    def __init__(self, store: SqliteLedger, shape: Shape, rng: random.Random) -> None:
        self.store = store
        self.shape = shape
        self.rng = rng
        self.calls: dict[str, int] = {}  # per region, calls so far (their day: calls // quota)
        self.ops: list[Op] = []
        self.pending_batches = 0

    def day_of(self, region: str) -> int:
        """The quota day of the region's next call."""
        return self.calls.get(region, 0) // self.shape.daily_quota

    def call(self, batch: BatchRecord, attempt: int, now: float) -> None:
        """A quota reservation and the attempt's intent, as the dispatcher writes them."""
        self.calls[batch.region] = self.calls.get(batch.region, 0) + 1
        self.ops.append(
            BeginAttempt(
                batch.run_id,
                batch.batch_id,
                batch.region,
                attempt,
                batch.client_token,
                _ACCOUNT,
                window_start=now - _DAY_S,
                limit=10 * self.shape.daily_quota,  # never refused: the days are laid out here
                now=now,
            )
        )

    def send(self, batch: BatchRecord, now: float) -> tuple[str, float]:
        """One batch sent until accepted (a 5xx or a lost answer first, now and then)."""
        rng = self.rng
        attempt, maybe_applied = 1, False
        fault = rng.random()
        if fault < _SERVER_ERROR + _LOST_ANSWER:
            self.call(batch, attempt, now)
            lost = fault >= _SERVER_ERROR
            request_id = None if lost else _request_id(rng)
            self.ops.append(
                FinishAttempt(
                    batch.batch_id,
                    attempt,
                    "ambiguous" if lost else "retryable",
                    now + 0.2,
                    request_id=request_id,
                    error_code="Transport.Ambiguous" if lost else "InternalError.Dispatch",
                    http_status=None if lost else 500,
                    message=(
                        f"InvokeCommand in {batch.region} via 127.0.0.1:46671: "
                        "ServerDisconnectedError (the server may have received it)"
                        if lost
                        else "InvokeCommand: InternalError.Dispatch (HTTP 500): An error "
                        f"occurred when you dispatched the request. [RequestId {request_id}]"
                    ),
                )
            )
            maybe_applied = lost
            attempt, now = 2, now + 1.5
        self.call(batch, attempt, now)
        invoke_id = f"t-{rng.getrandbits(120):030x}"
        accepted = now + rng.uniform(0.03, 0.3)
        self.ops += [
            FinishAttempt(
                batch.batch_id,
                attempt,
                "accepted",
                accepted,
                request_id=_request_id(rng),
                invoke_id=invoke_id,
            ),
            SetBatch(
                batch.batch_id,
                BatchState.ACCEPTED,
                accepted,
                invoke_id=invoke_id,
                maybe_applied=maybe_applied or None,
            ),
        ]
        return invoke_id, accepted

    def finish(self, batch: BatchRecord, invoke_id: str, now: float) -> list[InstanceRecord]:
        """The batch's results collected: its instances' final records, then the batch done."""
        records = [_final(self.rng, batch, iid, invoke_id, now) for iid in batch.instance_ids]
        self.ops += [
            SetInstances(batch.run_id, tuple(records), now),
            SetBatch(batch.batch_id, BatchState.DONE, now),
        ]
        self.pending_batches += 1
        if self.pending_batches >= _BATCHES_PER_COMMIT:
            self.flush()
        return records

    def flush(self) -> None:
        """One transaction for what is gathered."""
        if self.ops:
            self.store.apply(self.ops)
        self.ops, self.pending_batches = [], 0


def _request_id(rng: random.Random) -> str:
    """An API RequestId."""
    h = f"{rng.getrandbits(128):032X}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _leg_start(run_id: str, leg: int, now: float, regions: Sequence[str], shape: Shape) -> list[Op]:
    """What each leg (the first run, then every resume) writes before it sends: each region's
    daily limit as read, the lease (the killed holder is gone), the run running, `start`."""
    holder = f"bench:{40_000 + leg}"
    return [
        *(SetQuotaLimit(_ACCOUNT, r, shape.daily_quota, "api", now) for r in regions),
        AcquireLease(run_id, holder, now + 60.0, now, force=leg > 0),
        SetRun(run_id, RunState.RUNNING, now),
        AppendEvent(run_id, "start", now, {"owner": holder}),
    ]


def build(path: Path, shape: Shape) -> str:
    """Write the finished run into a new ledger at `path`; its run id."""
    rng = random.Random(shape.seed)
    targets = _targets(shape, rng)
    run_id = f"r20261201-100439-{shape.seed:06x}"
    request = RunRequest(
        targets=tuple(targets),
        spec=CommandSpec(command_id=_COMMAND, timeout_s=900),
        source=CommandNameSource(_COMMAND),
        waves=_WAVES,
        max_errors="10%",
        wait=True,
        wait_for_quota=True,
    )
    run = _run_record(request, Settings(), run_id, _ACCOUNT, _START)
    plan = make_plan(run_id, targets, batch_size=50, waves=parse_waves(_WAVES, len(targets)))
    regions = sorted({t.region for t in targets})
    command_ids = {r: f"c-fanoutdemo{rng.getrandbits(28):07x}" for r in regions}
    batches = batch_records(run_id, plan, command_ids)
    store = SqliteLedger(path, synchronous="OFF")  # a benchmark's file: no fsync per commit
    try:
        store.create_run(run, batches)
        _drive(store, shape, rng, run_id, batches)
    finally:
        store.close()
    return run_id


def _legs(batches: Sequence[BatchRecord], legs: int) -> Iterator[tuple[int, BatchRecord]]:
    """Each batch with the leg that sends it (the run killed and resumed `legs - 1` times)."""
    per_leg = -(-len(batches) // legs)
    for index, batch in enumerate(batches):
        yield index // per_leg, batch


def _drive(
    store: SqliteLedger, shape: Shape, rng: random.Random, run_id: str, batches: list[BatchRecord]
) -> None:
    """Every leg's writes, wave after wave, then the run's end."""
    writer = _Writer(store, shape, rng)
    waves = max(b.wave for b in batches) + 1
    now, leg, wave = _START + 1.0, -1, -1
    failures = wave_failures = wave_instances = 0
    waited: set[tuple[str, int]] = set()
    for batch_leg, batch in _legs(batches, shape.legs):
        if batch.wave != wave:
            writer.flush()
            if wave >= 0:
                writer.ops.append(
                    AppendEvent(
                        run_id, "wave", now, _wave(wave, failures, wave_failures, wave_instances)
                    )
                )
            wave, wave_failures, wave_instances = batch.wave, 0, 0
            writer.ops.append(
                AppendEvent(run_id, "wave_start", now, {"wave": wave + 1, "waves": waves})
            )
        if batch_leg != leg:
            writer.flush()
            leg = batch_leg
            regions = sorted({b.region for b in batches})
            store.apply(_leg_start(run_id, leg, now, regions, shape))
            if leg > 0:  # a resume enters the wave it was in again
                writer.ops.append(
                    AppendEvent(run_id, "wave_start", now, {"wave": wave + 1, "waves": waves})
                )
        day = writer.day_of(batch.region)
        if day * _DAY_S + _START > now:  # the region's quota is spent until the window moves
            if (batch.region, day) not in waited:
                waited.add((batch.region, day))
                until = _iso(_START + day * _DAY_S)
                writer.ops.append(
                    AppendEvent(
                        run_id,
                        "quota_wait",
                        now,
                        {"regions": [batch.region], "until": until, "code": None, "probe": False},
                    )
                )
            now = max(now, _START + day * _DAY_S + 1.0)
        invoke_id, accepted = writer.send(batch, now)
        records = writer.finish(batch, invoke_id, accepted + rng.uniform(60.0, 600.0))
        bad = sum(r.state is InstanceState.FAILED for r in records)
        failures += bad
        wave_failures += bad
        wave_instances += len(records)
        now += 0.05
    writer.ops.append(
        AppendEvent(run_id, "wave", now, _wave(wave, failures, wave_failures, wave_instances))
    )
    writer.flush()
    end = now + 600.0
    store.apply(
        [
            SetRun(run_id, RunState.FINISHED, end, exit_code=1),
            AppendEvent(run_id, "end", end, {"state": "finished", "exit_code": 1}),
            AcquireLease(run_id, f"bench:{40_000 + leg}", end, end),
        ]
    )


def _wave(wave: int, failures: int, wave_failures: int, instances: int) -> dict[str, object]:
    """A `wave` event's fields."""
    return {
        "wave": wave + 1,
        "failures": failures,
        "wave_failures": wave_failures,
        "wave_instances": instances,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path, help="the new ledger file (must not exist)")
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--regions", type=int, default=20)
    parser.add_argument("--legs", type=int, default=21, help="the first leg and the resumes")
    parser.add_argument("--daily-quota", type=int, default=500)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists: give a new file")
    shape = Shape(args.instances, args.regions, args.legs, args.daily_quota, args.seed)
    start = time.perf_counter()
    run_id = build(args.out, shape)
    size = sum(p.stat().st_size for p in args.out.parent.glob(f"{args.out.name}*"))
    print(
        f"{args.out}: run {run_id}, {args.instances} instances, {size / args.instances:.0f} "
        f"bytes per instance, {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()

"""Ledger records of a made-up rollout, for the report's unit tests and the report benchmark.

`synthetic_run` builds what a ledger would hold after a rollout of `n` instances over three
regions in three waves: batches with their times, the event journal, and instance rows with a
mix of outcomes (successes, failures with a few distinct output tails, exclusions, unknown and
not-invoked instances after a halt).
"""

from __future__ import annotations

from dataclasses import replace

from fanout.html_report import RunLedger
from fanout.ledger.model import (
    BatchRecord,
    BatchState,
    BatchTimes,
    InstanceRecord,
    InstanceState,
    RunRecord,
    RunState,
)

__all__ = ["REGIONS", "T0", "synthetic_retry", "synthetic_run"]

REGIONS = ("cn-beijing", "cn-hangzhou", "cn-shanghai")
T0 = 1_790_000_000.0  # 2026-09-21T13:33:20Z
BATCH = 50
TAILS = (
    "error: disk full on /var (used 100%)\n",
    "error: package mirror returned 503 at 2026-09-21T13:40:02Z\n",
    "Traceback (most recent call last):\n  File \"deploy.py\", line 12\nKeyError: 'version'\n",
)


def _outcome(index: int, run_id: str, region: str, iid: str, batch_id: str) -> InstanceRecord:
    """The instance row of the `index`-th sent instance: mostly successes, some failures."""
    if index % 23 == 0:
        tail = TAILS[(index // 23) % len(TAILS)]
        return InstanceRecord(
            run_id,
            region,
            iid,
            batch_id,
            InstanceState.FAILED,
            reason="The command exited with a non-zero code: 1.",
            invoke_id=f"t-{batch_id}",
            exit_code=1 + (index // 23) % 2,
            error_code="Failed",
            error_info="The command exited with a non-zero code: 1.",
            output=f"hello from {iid}\n{tail}",
            invocation_status="Failed",
            finish_time="2026-09-21T13:40:00Z",
        )
    if index % 97 == 0:
        return InstanceRecord(
            run_id,
            region,
            iid,
            batch_id,
            InstanceState.FAILED,
            reason="agent offline",
            invoke_id=f"t-{batch_id}",
            error_code="ClientNotRunning",
            invocation_status="Failed",
        )
    return InstanceRecord(
        run_id,
        region,
        iid,
        batch_id,
        InstanceState.SUCCEEDED,
        invoke_id=f"t-{batch_id}",
        exit_code=0,
        output=f"hello from {iid}\n",
        invocation_status="Success",
        finish_time="2026-09-21T13:40:00Z",
    )


def synthetic_run(n: int, *, run_id: str = "r20260921-133320-abcdef") -> RunLedger:
    """A halted rollout of `n` instances: the last 10 % of batches never sent."""
    ids = [(REGIONS[i % 3], f"i-{i:020x}") for i in range(n)]
    excluded = ids[: max(n // 100, 1)]
    kept = ids[len(excluded) :]
    waves = (max(len(kept) // 20, 1), max(len(kept) // 2, 1), len(kept))
    batches: list[BatchRecord] = []
    instances: list[InstanceRecord] = [
        InstanceRecord(run_id, r, iid, None, InstanceState.EXCLUDED, reason="instance is Stopped")
        for r, iid in excluded
    ]
    times: dict[str, BatchTimes] = {}
    sent_cut = int(len(kept) * 0.9)
    start = 0
    for wave, end in enumerate(waves):
        members = kept[start:end]
        by_region: dict[str, list[str]] = {}
        for region, iid in members:
            by_region.setdefault(region, []).append(iid)
        for region, region_ids in sorted(by_region.items()):
            for k in range(0, len(region_ids), BATCH):
                chunk = tuple(region_ids[k : k + BATCH])
                seq = len(batches)
                batch_id = f"b{seq:05d}"
                position = sum(len(b.instance_ids) for b in batches)
                sent = position < sent_cut
                state = BatchState.DONE if sent else BatchState.PENDING
                batches.append(
                    BatchRecord(
                        batch_id,
                        run_id,
                        region,
                        seq,
                        wave,
                        chunk,
                        f"tok-{seq}",
                        state,
                        attempts=1 if sent else 0,
                        invoke_id=f"t-{batch_id}" if sent else None,
                    )
                )
                if sent:
                    t = T0 + 60 * wave + seq * 0.05
                    times[batch_id] = BatchTimes(t, t + 0.2, t + 20 + (seq % 7))
                for j, iid in enumerate(chunk):
                    if sent:
                        instances.append(_outcome(position + j, run_id, region, iid, batch_id))
                    else:
                        instances.append(
                            InstanceRecord(run_id, region, iid, batch_id, InstanceState.PENDING)
                        )
        start = end
    run = RunRecord(
        run_id=run_id,
        created_at=T0 - 5,
        updated_at=T0 + 400,
        state=RunState.HALTED,
        command_id="c-fanoutdemo0000001",
        account="LTAI5tFanoutDemoKeyId00",
        target_count=n,
        parameters={"version": "1.2.3", "token": "***"},
        secret_keys=("token",),
        options={
            "waves": "5%,50%,100%",
            "max_errors": "2%",
            "batch_size": BATCH,
            "spec": {"timeout_s": 60, "username": None},
        },
        exit_code=3,
    )
    last = max((bt.ended_at or 0 for bt in times.values()), default=T0)
    events = (
        (1, T0 - 1, "start", {"owner": "ops-host:4242"}),
        (2, T0, "wave_start", {"wave": 1, "waves": 3}),
        (3, T0 + 50, "wave", {"wave": 1, "failures": 3}),
        (4, last - 5, "halted", {"failures": 99, "allowed": 98}),
        (5, last, "end", {"state": "halted", "exit_code": 3}),
    )
    return RunLedger(run, tuple(batches), times, events, tuple(instances))


def synthetic_retry(original: RunLedger, *, run_id: str = "r20260921-140000-fedcba") -> RunLedger:
    """A finished retry of the original's failed instances: half of them succeed this time."""
    failed = [r for r in original.instances if r.state is InstanceState.FAILED]
    base = original.run
    t = max(bt.ended_at or 0 for bt in original.times.values()) + 600
    batches, instances, times = [], [], {}
    chunks = [
        group[k : k + BATCH]
        for region in REGIONS
        for group in [[r for r in failed if r.region == region]]
        for k in range(0, len(group), BATCH)
    ]
    for seq, chunk in enumerate(chunks):
        batch_id = f"rb{seq:05d}"
        batches.append(
            BatchRecord(
                batch_id,
                run_id,
                chunk[0].region,
                seq,
                0,
                tuple(r.instance_id for r in chunk),
                f"rtok-{seq}",
                BatchState.DONE,
                attempts=1,
                invoke_id=f"t-{batch_id}",
            )
        )
        times[batch_id] = BatchTimes(t + seq, t + seq + 0.2, t + seq + 15)
        instances += [  # every other one succeeds this time; the others fail again
            replace(r, run_id=run_id, batch_id=batch_id)
            if i % 2
            else replace(
                r,
                run_id=run_id,
                batch_id=batch_id,
                state=InstanceState.SUCCEEDED,
                exit_code=0,
                error_code=None,
                reason=None,
                error_info=None,
                output=f"hello again from {r.instance_id}\n",
            )
            for i, r in enumerate(chunk)
        ]
    run = replace(
        base,
        run_id=run_id,
        parent_run_id=base.run_id,
        created_at=t - 1,
        state=RunState.FINISHED,
        exit_code=1,
        target_count=len(failed),
    )
    events = (
        (1, t - 1, "start", {"owner": "ops-host:4343"}),
        (2, t + 60, "end", {"state": "finished", "exit_code": 1}),
    )
    return RunLedger(run, tuple(batches), times, events, tuple(instances))

"""Rollout safety: the error budget that judges each wave, and when quota frees.

Waves are cumulative shares of the targets (`--waves 1,10%,100%`); `fanout.dispatch` sends a
wave's batches in every region at once and collects its results, and the next wave starts only
when they are all in and the error budget holds. The budget (`--max-errors N|P%`) counts instances that ended Failed,
Error, Timeout, Invalid or Aborted, and the instances of batch calls that failed permanently;
preflight exclusions and instances refused one by one (isolated) are reported separately.
`unreachable` instances (the agent or the delivery failed: the command never ran there) count
only with `--count-unreachable`.

Overshoot bound: when the budget trips, nothing more is dispatched, but invocations already
accepted keep running and are collected. So at most every instance dispatched and not yet final
at that moment may still fail: never more than the rest of the current wave (plus the batch
calls in flight, at most `--concurrency`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from fanout.aliyun.command import CommandSpec
from fanout.errors import ConfigError
from fanout.halt import HaltReason, RunControl
from fanout.invoke import BatchEnd, BatchOutcome, InvokeContext
from fanout.ledger import (
    BatchRecord,
    InstanceRecord,
    InstanceState,
    LedgerStore,
)
from fanout.quota import QuotaBlock
from fanout.results import COUNTED_FAILURES
from fanout.times import iso

__all__ = [
    "ErrorBudget",
    "Leg",
    "WaveRule",
    "parse_max_errors",
    "quota_frees_at",
    "quota_refusal_event",
    "waits_for_results",
]

Emit = Callable[[str, Mapping[str, object]], None]
_NO_WAIT_REPEAT_MODES = frozenset({"Period", "EveryReboot", "NextRebootOnly", "DryRun"})


def waits_for_results(spec: CommandSpec) -> bool:
    """False for periodic and dry-run invocations: they are recorded, not waited for."""
    return not (spec.timed or spec.frequency or spec.repeat_mode in _NO_WAIT_REPEAT_MODES)


def parse_max_errors(spec: str | None, total: int, *, flag: str = "--max-errors") -> int | None:
    """`N` or `P%` of `total` -> the number of failures allowed (None: no limit)."""
    if spec is None or not spec.strip():
        return None
    text = spec.strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 <= share <= 100:
                raise ValueError
            return math.floor(share / 100 * total)
        allowed = int(text)
    except ValueError:
        msg = f"{flag} {spec!r}: expected a count N or a share P% (0..100)"
        raise ConfigError(msg) from None
    if allowed < 0:
        msg = f"{flag} {spec!r}: must not be negative"
        raise ConfigError(msg)
    return allowed


@dataclass(frozen=True, slots=True)
class WaveRule:
    """How many failures one wave may have: `--wave-max-failures N|P%` (P% of the wave's own
    instances), else the `--max-errors` share applied to the wave (None: no per-wave limit)."""

    wave_max_failures: str | None
    max_errors: str | None
    total: int  # the run's targets, for a --max-errors count's share

    def allowed(self, wave_size: int) -> int | None:
        """Failures allowed in a wave of `wave_size` instances."""
        if self.wave_max_failures:
            return parse_max_errors(self.wave_max_failures, wave_size, flag="--wave-max-failures")
        if not self.max_errors or not self.max_errors.strip():
            return None
        text = self.max_errors.strip()
        if text.endswith("%"):
            return parse_max_errors(text, wave_size)
        count = parse_max_errors(text, self.total) or 0
        return math.floor(count * wave_size / self.total) if self.total else 0

    def describe(self) -> str:
        """The rule as the operator gave it."""
        if self.wave_max_failures:
            return f"--wave-max-failures {self.wave_max_failures}"
        return f"the --max-errors {self.max_errors} share"


@dataclass(slots=True)
class ErrorBudget:
    """Failures counted so far against the allowance (`unreachable` ones only if told so)."""

    allowed: int | None
    failures: int = 0
    count_unreachable: bool = False

    def add(self, n: int) -> bool:
        """Count `n` failures; True if the budget is now exceeded."""
        self.failures += n
        return self.allowed is not None and self.failures > self.allowed


@dataclass(slots=True)
class Leg:
    """This process's leg of a run: counts failures against the run's budget and each wave's,
    and reports progress."""

    run_id: str
    control: RunControl
    emit: Emit
    budget: ErrorBudget
    rule: WaveRule | None = None
    wave_of: dict[str, int] = field(default_factory=dict)  # batch id -> wave
    wave_sizes: dict[int, int] = field(default_factory=dict)  # wave -> its instances
    wave_failures: dict[int, int] = field(default_factory=dict)
    check_failures: dict[int, int] = field(default_factory=dict)  # wave -> failed its check
    ends: dict[BatchEnd, int] = field(default_factory=dict)

    def know(self, batches: Sequence[BatchRecord]) -> None:
        """The run's batches: which wave each is in, and each wave's size."""
        for b in batches:
            self.wave_of[b.batch_id] = b.wave
            self.wave_sizes[b.wave] = self.wave_sizes.get(b.wave, 0) + len(b.instance_ids)

    def carry(self, earlier: Mapping[int, int]) -> None:
        """Failures of the run's earlier legs (per wave, from the ledger) count against the
        budgets as if this leg had seen them; a run already over its budget halts at once."""
        for wave, n in earlier.items():
            self.wave_failures[wave] = self.wave_failures.get(wave, 0) + n
            self.budget.failures += n
        if self.budget.allowed is None or self.budget.failures <= self.budget.allowed:
            return
        self._over_budget(
            f"{self.budget.failures} failed before this resume, over the {self.budget.allowed} "
            "allowed by --max-errors (resume with a larger --max-errors to go on)"
        )

    def batch_started(self, record: BatchRecord) -> None:
        """A worker took the batch: it is in flight until `batch_ended` (progress only)."""
        self.emit(
            "batch_start",
            {"batch_id": record.batch_id, "region": record.region, "attempts": record.attempts},
        )

    def batch_split(self, record: BatchRecord) -> None:
        """A new batch was split off another (progress counts one more batch in its region)."""
        self.emit(
            "batch_split",
            {
                "batch_id": record.batch_id,
                "region": record.region,
                "instances": len(record.instance_ids),
            },
        )

    def batch_ended(self, outcome: BatchOutcome) -> None:
        """Count permanent failures of a batch call and report how the batch ended."""
        record, end = outcome.record, outcome.end
        self.ends[end] = self.ends.get(end, 0) + 1
        if end is BatchEnd.FAILED and outcome.note != "isolated":
            self._count(len(record.instance_ids), record.wave)
        if outcome.refusal is not None:
            self.emit("quota_refused", quota_refusal_event(self.run_id, outcome.refusal))
        self.emit(
            "batch",
            {
                "run_id": record.run_id,
                "batch_id": record.batch_id,
                "region": record.region,
                "wave": record.wave + 1,
                "outcome": end.value,
                "invoke_id": record.invoke_id,
                "instances": len(record.instance_ids),
                "attempts": record.attempts,
                "failures": self.budget.failures,
            },
        )

    def instance_final(self, record: InstanceRecord) -> None:
        """The collector's callback: count failures the budget covers."""
        failed = (
            record.state is InstanceState.FAILED and record.invocation_status in COUNTED_FAILURES
        )
        unreachable = record.state is InstanceState.UNREACHABLE and self.budget.count_unreachable
        if failed or unreachable:
            self._count(1, self.wave_of.get(record.batch_id or "", -1))
        self.emit(
            "instance",
            {
                "instance_id": record.instance_id,
                "region": record.region,
                "state": record.state.value,
                "failures": self.budget.failures,
                "finish_time": record.finish_time,
            },
        )

    def end_wave(self, wave: int) -> None:
        """A wave's results are in: report it, and judge it."""
        self.emit(
            "wave",
            {
                "run_id": self.run_id,
                "wave": wave + 1,
                "failures": self.budget.failures,
                "wave_failures": self.wave_failures.get(wave, 0),
                "wave_instances": self.wave_sizes.get(wave, 0),
            },
        )
        self.judge_wave(wave)

    def check_done(self, wave: int, failures: int) -> None:
        """The wave's check (`--wave-check-...`) ended: the instances that did not pass count
        against the wave's budget, which is judged again."""
        self.wave_failures[wave] = self.wave_failures.get(wave, 0) + failures
        self.check_failures[wave] = self.check_failures.get(wave, 0) + failures
        self.judge_wave(wave)

    def judge_wave(self, wave: int) -> None:
        """Halt the run if the wave's own failures are over its rule (`--wave-max-failures`)."""
        failures = self.wave_failures.get(wave, 0)
        size = self.wave_sizes.get(wave, 0)
        allowed = self.rule.allowed(size) if self.rule is not None else None
        if allowed is None or failures <= allowed:
            return
        assert self.rule is not None
        checked = self.check_failures.get(wave)
        by_check = f" ({checked} of them by its wave check)" if checked else ""
        detail = (
            f"wave {wave + 1} had {failures} failed of {size} instances{by_check}, over the "
            f"{allowed} allowed by {self.rule.describe()}"
        )
        if self.control.halt(HaltReason.BUDGET, detail):
            self.emit(
                "halted",
                {
                    "run_id": self.run_id,
                    "wave": wave + 1,
                    "wave_failures": failures,
                    "wave_instances": size,
                    "wave_allowed": allowed,
                    "failures": self.budget.failures,
                    "allowed": self.budget.allowed,
                    "reason": detail,
                },
            )

    def _count(self, n: int, wave: int) -> None:
        """Add failures; halt dispatching once the run's budget is exceeded."""
        self.wave_failures[wave] = self.wave_failures.get(wave, 0) + n
        if not self.budget.add(n):
            return
        self._over_budget(
            f"{self.budget.failures} failed, over the {self.budget.allowed} allowed by --max-errors"
        )

    def _over_budget(self, detail: str) -> None:
        """Halt the run on its run-wide budget (once), saying why."""
        if self.control.halt(HaltReason.BUDGET, detail):
            self.emit(
                "halted",
                {
                    "run_id": self.run_id,
                    "failures": self.budget.failures,
                    "allowed": self.budget.allowed,
                    "reason": detail,
                },
            )


def quota_refusal_event(run_id: str, block: QuotaBlock) -> dict[str, object]:
    """The `quota_refused` event: the API's answer and what it means for the region."""
    return {
        "run_id": run_id,
        "region": block.region,
        "code": block.code,
        "message": block.message,
        "request_id": block.request_id,
        "own_calls": block.used,
        "limit": block.limit,
        "explained": block.explained,
        "frees_at": iso(block.frees_at),  # ISO-8601 UTC, like quota_wait's `until`
        "probe_at": iso(block.probe_at),
    }


async def quota_frees_at(ctx: InvokeContext, store: LedgerStore, regions: Sequence[str]) -> float:
    """When every region of `regions` can make its next call: when the API's refusal says (its
    window frees, or its next probe), else when fanout's own window frees a call."""
    now = ctx.clock.time()
    frees = []
    for region in regions:
        block = ctx.control.quota_block(region)
        if block is not None and block.refused and block.until is not None:
            frees.append(block.until)
            continue
        policy = ctx.quotas.policy(region)
        start = policy.window_start(now)
        times = await anyio.to_thread.run_sync(store.quota_times, ctx.account, region, start)
        frees.append(policy.frees_at(times, now))
    return max(frees, default=now)

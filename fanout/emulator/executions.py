"""Invocations and the per-instance execution status, computed lazily from the emulator clock.

Nothing runs in the background: an accepted invocation keeps, per instance, a seeded pending
delay, run time and exit code (`timing.py`), and every query derives the status at `now`:
Pending -> Running -> Success / Failed / Timeout, or Cancelled / Terminated after StopInvocation,
or Aborted when the instance became unusable before its execution started, or when the command
could not be delivered (an injected ClientNotRunning / ClientNotResponse / DeliveryTimeout).
Periodic invocations stay Scheduled with a growing `Repeats` until stopped.

StopInvocation (`stop_mode`): "cancel-pending", the API reference's behaviour (facts 10 [8]),
cancels executions that have not started and lets started ones run to their end; "terminate"
also kills the running ones (what TerminationMode and the agent's cancel path suggest, facts
10 [1][7]). ErrorCode, ErrorInfo and output tails: `fanout.emulator.outcomes`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fanout.emulator.commands import Command
from fanout.emulator.fleet import Instance, InstanceBehaviour
from fanout.emulator.outcomes import EXIT_NONZERO, error_info, simulated_output, tail
from fanout.emulator.schedule import Schedule
from fanout.emulator.timing import PENDING_MAX_S, RunTimes, Timing, TimingPlan

__all__ = [
    "Execution",
    "ExecutionBehaviour",
    "ExecutionStatus",
    "Invocation",
    "InvocationSpec",
    "InvocationStore",
    "legacy_invoke_status",
    "overall_status",
]

_INTERRUPTED_EXIT_CODE = -1


class ExecutionStatus(StrEnum):
    """Per-instance InvocationStatus values (facts 2.3)."""

    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILED = "Failed"
    TIMEOUT = "Timeout"
    ABORTED = "Aborted"
    CANCELLED = "Cancelled"
    TERMINATED = "Terminated"


_ACTIVE = (ExecutionStatus.PENDING, ExecutionStatus.SCHEDULED, ExecutionStatus.RUNNING)
_FAILED_LIKE = frozenset({ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT, ExecutionStatus.ABORTED})
_STOPPED_LIKE = frozenset({ExecutionStatus.CANCELLED, ExecutionStatus.TERMINATED})
# InvokeRecordStatus of one record (DescribeInvocationResults).
_RECORD_STATUS = {
    ExecutionStatus.PENDING: "Running",
    ExecutionStatus.SCHEDULED: "Running",
    ExecutionStatus.RUNNING: "Running",
    ExecutionStatus.SUCCESS: "Finished",
    ExecutionStatus.FAILED: "Failed",
    ExecutionStatus.TIMEOUT: "Failed",
    ExecutionStatus.ABORTED: "Failed",
    ExecutionStatus.CANCELLED: "Stopped",
    ExecutionStatus.TERMINATED: "Stopped",
}


@dataclass(frozen=True, slots=True)
class InvocationSpec:
    """What an accepted InvokeCommand asked for (already validated)."""

    command: Command
    instance_ids: tuple[str, ...]
    client_token: str
    parameters: dict[str, str] | None
    repeat_mode: str
    frequency: str
    schedule: Schedule | None
    timed: bool
    timeout_s: int
    username: str
    working_dir: str
    termination_mode: str = ""
    # Every InvokeCommand parameter sent besides the command, instances, token and Parameters.
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Execution:
    """One instance's view of an invocation at a moment."""

    instance_id: str
    status: ExecutionStatus
    exit_code: int
    output: str
    dropped: int
    error_code: str
    error_info: str
    repeats: int
    start_s: float | None
    finish_s: float | None
    stop_s: float | None
    update_s: float

    @property
    def record_status(self) -> str:
        """InvokeRecordStatus (Running / Finished / Failed / Stopped)."""
        return _RECORD_STATUS[self.status]


class Invocation:
    """An accepted, executed InvokeCommand."""

    __slots__ = (
        "_plan",
        "_timing",
        "behaviour",
        "bodies",
        "created_s",
        "final",
        "final_status",
        "interrupts",
        "invoke_id",
        "live",
        "records_before",
        "region",
        "run_times",
        "seq",
        "settled",
        "spec",
        "stop_all_s",
        "stops",
    )

    def __init__(
        self,
        invoke_id: str,
        seq: int,
        region: str,
        spec: InvocationSpec,
        created_s: float,
        plan: TimingPlan | None = None,
        behaviour: ExecutionBehaviour | None = None,
    ) -> None:
        self.invoke_id = invoke_id
        self.seq = seq
        self.region = region
        self.spec = spec
        self.created_s = created_s
        self._plan = plan
        self.behaviour = behaviour or ExecutionBehaviour()
        self.records_before = 0  # (invocation, instance) records of the region made before it
        self._timing: Timing | None = None
        self.stops: dict[int, float] = {}
        self.stop_all_s: float | None = None
        self.interrupts: dict[int, tuple[float, str]] = {}
        self.run_times = RunTimes(spec.schedule, created_s)  # periodic: found as time goes by
        # One-time executions that reached a final state never change again (the clock only
        # moves forward; stops and interrupts only touch unfinished ones): computed once.
        self.settled: dict[int, Execution] = {}
        # Pending and Running ones hold until a known moment (their start, their end) unless a
        # stop or an interrupt comes first (`stop`, `interrupt` forget them): (state, until).
        self.live: dict[int, tuple[Execution, float]] = {}
        # Response entries by (position, with output, base64), with the state they show: reused
        # while `execution` gives that same state (settled, or live and still holding).
        self.bodies: dict[tuple[int, bool, bool], tuple[Execution, dict[str, Any]]] = {}
        # Once every execution is settled, the invocation as a whole cannot change either: its
        # executions and overall status, kept (a listing then no longer evaluates them).
        self.final: list[Execution] | None = None
        self.final_status = ""

    @property
    def timing(self) -> Timing:
        """Per-instance pending delay, run time and exit code, drawn on first use."""
        if self._timing is None:
            self._timing = self._plan.draw() if self._plan else Timing()
        return self._timing

    @property
    def periodic(self) -> bool:
        """True for Period / NextRebootOnly / EveryReboot (never terminal until stopped)."""
        return self.spec.repeat_mode != "Once"

    def stop_time(self, pos: int) -> float | None:
        """When this instance's execution was stopped, if it was."""
        own = self.stops.get(pos)
        if self.stop_all_s is None:
            return own
        return self.stop_all_s if own is None else min(own, self.stop_all_s)

    def stop(self, now_s: float, positions: Iterable[int] | None = None) -> None:
        """StopInvocation at `now_s`: of every instance (None), or of those positions."""
        if positions is None:
            if self.stop_all_s is None:
                self.stop_all_s = now_s
        else:
            for pos in positions:
                self.stops.setdefault(pos, now_s)
        self.live.clear()

    def interrupt(self, pos: int, now_s: float, code: str) -> None:
        """The instance became unusable at `now_s` (`code` says how), unless it already had."""
        if pos not in self.interrupts and not self.periodic:
            self.interrupts[pos] = (now_s, code)
            self.live.pop(pos, None)

    def execution(self, pos: int, now_s: float) -> Execution:
        """The state of instance number `pos` at `now_s`."""
        if self.periodic:
            return self._periodic_execution(pos, now_s)
        settled = self.settled.get(pos)
        if settled is not None:
            return settled
        live = self.live.get(pos)
        if live is not None and now_s < live[1]:
            return live[0]
        found, until_s = self._once_execution(pos, now_s)
        if found.status not in _ACTIVE:
            self.settled[pos] = found
            self.live.pop(pos, None)
        else:
            self.live[pos] = (found, until_s)
        return found

    def executions(self, now_s: float) -> list[Execution]:
        """Every instance's state at `now_s`, in request order (the same list once final)."""
        if self.final is not None:
            return self.final
        found = [self.execution(pos, now_s) for pos in range(len(self.spec.instance_ids))]
        if not self.periodic and len(self.settled) == len(found):
            self.final, self.final_status = found, overall_status(found)
        return found

    def overall(self, executions: list[Execution]) -> str:
        """The overall InvocationStatus of `executions` (this invocation's, at some moment)."""
        if executions is self.final:
            return self.final_status
        return overall_status(executions)

    def _once_execution(self, pos: int, now_s: float) -> tuple[Execution, float]:
        """The state at `now_s` and until when it holds (without a stop or an interrupt):
        Pending until the start, Running until the end; a final state for ever."""
        iid = self.spec.instance_ids[pos]
        start = self.created_s + self.timing.pending_s[pos]
        failure = self._delivery_failure(pos)
        if failure:
            return self._undelivered(pos, now_s, start, failure)
        duration = self.timing.duration_s[pos]
        timed_out = duration > self.spec.timeout_s
        end = start + (self.spec.timeout_s if timed_out else duration)
        early = self._ended_early(pos, start, end)
        if early is not None:
            return early, math.inf
        if now_s < start:
            return _make(iid, ExecutionStatus.PENDING, self.created_s, finish=None), start
        if now_s < end:
            return _make(iid, ExecutionStatus.RUNNING, start, start=start, finish=None), end
        if timed_out:
            return _make(iid, ExecutionStatus.TIMEOUT, end, start=start, code="ExecutionTimeout",
                         exit_code=_INTERRUPTED_EXIT_CODE, output=self._output(pos, 0)), math.inf  # fmt: skip
        code = self._exit_code(pos)
        return _finished(iid, code, start, end, output=self._output(pos, code)), math.inf

    def _undelivered(
        self, pos: int, now_s: float, start: float, failure: str
    ) -> tuple[Execution, float]:
        """A command that never reaches the instance: Aborted with `failure` when it would
        have started (unless stopped or interrupted first)."""
        early = self._ended_early(pos, start, start)
        if early is not None:
            return early, math.inf
        iid = self.spec.instance_ids[pos]
        if now_s < start:
            return _make(iid, ExecutionStatus.PENDING, self.created_s, finish=None), start
        return _make(iid, ExecutionStatus.ABORTED, start, code=failure), math.inf

    def _delivery_failure(self, pos: int) -> str:
        """The instance's delivery failure code ("" when the command reaches it)."""
        iid = self.spec.instance_ids[pos]
        forced = self.behaviour.instances.get(iid)
        if forced is not None and forced.agent_failure:
            return forced.agent_failure
        drawn = self.timing.failure[pos] if self.timing.failure else 0
        return self.behaviour.failure_codes[drawn - 1] if drawn else ""

    def _exit_code(self, pos: int) -> int:
        """The exit code: the fleet file's for this instance, else the seeded draw."""
        forced = self.behaviour.instances.get(self.spec.instance_ids[pos])
        if forced is not None and forced.exit_code is not None:
            return forced.exit_code
        return self.timing.exit_code[pos]

    def _output(self, pos: int, exit_code: int) -> str:
        """What the command printed (before the API keeps only its tail)."""
        iid = self.spec.instance_ids[pos]
        forced = self.behaviour.instances.get(iid)
        size = self.behaviour.output_bytes
        if forced is not None and forced.output_bytes is not None:
            size = forced.output_bytes
        return simulated_output(iid, exit_code, size, self._echoed(iid))

    def _echoed(self, iid: str) -> str:
        """What the command's `echo` lines print on `iid` when it has parameters (they are
        substituted, as the agent does, so a command can print a value it was given)."""
        if not self.spec.parameters:
            return ""
        return _echo_lines(self.spec.command.content, self.spec.parameters, iid)

    def _ended_early(self, pos: int, start: float, end: float) -> Execution | None:
        """Cancelled / Terminated by StopInvocation, or Aborted / interrupted by the instance."""
        iid = self.spec.instance_ids[pos]
        stop_s = self.stop_time(pos)
        interrupt = self.interrupts.get(pos)
        if stop_s is not None and stop_s < end and (interrupt is None or stop_s <= interrupt[0]):
            if stop_s < start:
                return _make(iid, ExecutionStatus.CANCELLED, stop_s, stop=stop_s)
            if self.behaviour.terminate_running:
                return _make(iid, ExecutionStatus.TERMINATED, stop_s, start=start, stop=stop_s,
                             output=_hello(iid))  # fmt: skip
            # cancel-pending: an execution that has started runs on to its end (facts 10 [8])
        if interrupt is None or interrupt[0] >= end:
            return None
        at_s, code = interrupt
        if at_s < start:
            return _make(iid, ExecutionStatus.ABORTED, at_s, code=code)
        return _make(iid, ExecutionStatus.FAILED, at_s, start=start, code="ExecutionInterrupted",
                     exit_code=_INTERRUPTED_EXIT_CODE, output=_hello(iid))  # fmt: skip

    def _periodic_execution(self, pos: int, now_s: float) -> Execution:
        iid = self.spec.instance_ids[pos]
        stop_s = self.stop_time(pos)
        horizon = now_s if stop_s is None else min(now_s, stop_s)
        repeats, last_run = self.run_times.until(horizon)
        code = self.timing.exit_code[pos]
        if stop_s is not None and stop_s <= now_s:
            status = ExecutionStatus.TERMINATED if repeats else ExecutionStatus.CANCELLED
            return _make(
                iid,
                status,
                stop_s,
                stop=stop_s,
                repeats=repeats,
                output=_hello(iid) if repeats else "",
            )
        schedule = self.spec.schedule
        has_next = schedule is None or schedule.next_run(horizon, self.created_s) is not None
        if has_next:
            if not repeats:
                return _make(iid, ExecutionStatus.SCHEDULED, self.created_s, finish=None)
            last = _finished(iid, code, last_run, last_run, repeats=repeats)
            return _replace_status(last, ExecutionStatus.SCHEDULED)
        if not repeats:
            return _make(iid, ExecutionStatus.FAILED, self.created_s, code="CronExpressionExpired",
                         info="the cron job expression is expired")  # fmt: skip
        return _finished(iid, code, last_run, last_run, repeats=repeats)


def _hello(instance_id: str) -> str:
    return f"hello from {instance_id}\n"


def _echo_lines(content: str, parameters: Mapping[str, str], iid: str) -> str:
    """The output of a script's `echo "..."` lines, `{{name}}` and `$(hostname)` replaced."""
    printed = []
    for line in content.splitlines():
        words = line.strip()
        if not words.startswith("echo "):
            continue
        text = words[len("echo ") :].strip().strip('"')
        for name, value in parameters.items():
            text = text.replace("{{" + name + "}}", value)
        printed.append(text.replace("$(hostname)", iid) + "\n")
    return "".join(printed)


def _finished(
    iid: str,
    code: int,
    start: float,
    end: float,
    repeats: int | None = None,
    output: str | None = None,
) -> Execution:
    """A run that ended with exit code `code`: Success, or Failed with ExitCodeNonzero."""
    text = simulated_output(iid, code, 0) if output is None else output
    if code == 0:
        return _make(iid, ExecutionStatus.SUCCESS, end, start=start, output=text, repeats=repeats)
    return _make(iid, ExecutionStatus.FAILED, end, start=start, exit_code=code, output=text,
                 code=EXIT_NONZERO, repeats=repeats)  # fmt: skip


def _make(
    iid: str,
    status: ExecutionStatus,
    update_s: float,
    *,
    start: float | None = None,
    finish: float | bool | None = True,
    stop: float | None = None,
    code: str = "",
    info: str = "",
    exit_code: int = 0,
    output: str = "",
    repeats: int | None = None,
) -> Execution:
    """An Execution; `finish=True` means "finished at update_s"; one run once it started.

    The output keeps its last 24 KB (`outcomes.tail`); ErrorInfo is the code's text unless given.
    """
    output, dropped = tail(output)
    info = info or error_info(code)
    finish_s = update_s if finish is True else None
    if repeats is None:
        repeats = 0 if start is None else 1
    return Execution(iid, status, exit_code, output, dropped, code, info, repeats,
                     start, finish_s, stop, update_s)  # fmt: skip


def _replace_status(execution: Execution, status: ExecutionStatus) -> Execution:
    values: dict[str, Any] = {name: getattr(execution, name) for name in Execution.__slots__}
    values.update(status=status, finish_s=None)
    return Execution(**values)


def overall_status(executions: list[Execution]) -> str:
    """The overall InvocationStatus from the per-instance ones (facts 2.3): Stopped when every
    instance was stopped; a stop that let started executions finish counts what they did."""
    statuses = {e.status for e in executions}
    for active in _ACTIVE:
        if active in statuses:
            return active.value
    if statuses <= _STOPPED_LIKE:
        return "Stopped"
    succeeded = ExecutionStatus.SUCCESS in statuses
    failed = bool(statuses & _FAILED_LIKE)
    if not failed:
        return "Success"
    return "PartialFailed" if succeeded else "Failed"


def legacy_invoke_status(overall: str) -> str:
    """The deprecated overall `InvokeStatus` (Running / Finished / Failed / PartialFailed / Stopped)."""
    if overall in ("Pending", "Scheduled", "Running"):
        return "Running"
    return "Finished" if overall == "Success" else overall


@dataclass(frozen=True, slots=True)
class ExecutionBehaviour:
    """How executions go beyond their timing: delivery failures, output size, stop mode, and
    the fleet file's per-instance settings."""

    failure_codes: tuple[str, ...] = ()  # `Timing.failure` numbers them from 1
    failure_shares: tuple[float, ...] = ()  # cumulative, one per code
    output_bytes: int = 0
    terminate_running: bool = False  # StopInvocation kills started executions too
    instances: Mapping[str, InstanceBehaviour] = field(default_factory=dict)


class InvocationStore:
    """Every accepted invocation, by id, by region (in order) and by instance."""

    def __init__(
        self,
        seed: int,
        exec_seconds: tuple[float, float],
        failure_fraction: float,
        behaviour: ExecutionBehaviour | None = None,
    ) -> None:
        self._seed_text = f"exec:{seed}"
        self._ids = random.Random(f"invoke-ids:{seed}")
        self._exec_seconds = exec_seconds
        self._failure_fraction = failure_fraction
        self.behaviour = behaviour or ExecutionBehaviour()
        # exec_seconds=(0, 0) should finish almost at once: the pending delay shrinks with run time.
        self._pending_max_s = PENDING_MAX_S * min(1.0, exec_seconds[1])
        self.all: list[Invocation] = []
        self.by_id: dict[str, Invocation] = {}
        self.by_region: dict[str, list[Invocation]] = {}
        # Per region, in order, the invocations not known to be final: only these can still be
        # Pending / Running / Scheduled (final ones are dropped on the next look).
        self._unfinished: dict[str, list[Invocation]] = {}
        # Invocations by instance, brought up to date on first look (not in the request path).
        self._by_instance: dict[str, list[tuple[Invocation, int]]] = {}
        self._indexed = 0  # how many of `all` are in `_by_instance`
        self.command_counts: dict[str, int] = {}  # DescribeCommands InvokeTimes
        self.records_by_region: dict[str, int] = {}  # (invocation, instance) pairs per region

    def new_invoke_id(self) -> str:
        """`t-` + 30 lowercase hex digits, seeded."""
        return f"t-{self._ids.getrandbits(120):030x}"

    def create(self, invoke_id: str, region: str, spec: InvocationSpec, now_s: float) -> Invocation:
        """Record an accepted invocation and draw its per-instance plan."""
        region_list = self.by_region.setdefault(region, [])
        low, high = self._exec_seconds
        # Each invocation draws from its own seeded generator, on first look (lazily): the
        # request path pays nothing per instance, and outcomes do not depend on arrival order.
        plan = TimingPlan(
            f"{self._seed_text}:{invoke_id}",
            len(spec.instance_ids),
            self._pending_max_s,
            low,
            high - low,
            self._failure_fraction,
            self.behaviour.failure_shares,
        )
        inv = Invocation(invoke_id, len(region_list), region, spec, now_s, plan, self.behaviour)
        region_list.append(inv)
        self._unfinished.setdefault(region, []).append(inv)
        self.all.append(inv)
        inv.records_before = self.records_by_region.get(region, 0)
        self.records_by_region[region] = inv.records_before + len(spec.instance_ids)
        command_id = spec.command.command_id
        self.command_counts[command_id] = self.command_counts.get(command_id, 0) + 1
        self.by_id[invoke_id] = inv
        return inv

    def of_instance(self, instance_id: str) -> list[tuple[Invocation, int]]:
        """Every invocation that includes the instance, oldest first, with its position."""
        if self._indexed < len(self.all):
            index = self._by_instance
            for inv in self.all[self._indexed :]:
                for pos, iid in enumerate(inv.spec.instance_ids):
                    index.setdefault(iid, []).append((inv, pos))
            self._indexed = len(self.all)
        return self._by_instance.get(instance_id, [])

    def instance_changed(self, instance: Instance, now_s: float) -> None:
        """Abort or interrupt the unfinished executions of an instance that became unusable."""
        if instance.status != "Running":
            code = "InstanceNotRunning"
        elif not instance.agent_online:
            code = "ClientNotRunning"  # the agent stopped (SDK ErrorCode list, facts 10 [6])
        else:
            return
        for inv, pos in self.of_instance(instance.instance_id):
            inv.interrupt(pos, now_s, code)

    def region_newest_first(
        self, region: str, below_seq: int | None = None
    ) -> Iterator[Invocation]:
        """The region's invocations, newest first, starting below `below_seq` when given."""
        items = self.by_region.get(region, [])
        top = len(items) if below_seq is None else min(below_seq, len(items))
        for seq in range(top - 1, -1, -1):
            yield items[seq]

    def region_unfinished_newest_first(
        self, region: str, below_seq: int | None = None
    ) -> Iterator[Invocation]:
        """`region_newest_first` without the invocations already known to be final (the only
        ones that can be listed as Pending, Running or Scheduled)."""
        items = self._unfinished.get(region)
        if not items:
            return
        if any(inv.final is not None for inv in items):
            items = self._unfinished[region] = [inv for inv in items if inv.final is None]
        for inv in reversed(items):
            if below_seq is None or inv.seq < below_seq:
                yield inv

"""What the ledger stores: states, their allowed transitions (as data), records and write operations.

Writes are operations (`Op`) applied by a store in one transaction per group, so many batches'
transitions share one commit. Each store checks every transition against the tables below.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from fanout.errors import TransitionError

__all__ = [
    "BATCH_TRANSITIONS",
    "INSTANCE_TRANSITIONS",
    "RUN_TRANSITIONS",
    "AcquireLease",
    "AddBatch",
    "AppendEvent",
    "BatchRecord",
    "BatchState",
    "BatchTimes",
    "BeginAttempt",
    "ClaimCommand",
    "CommandRecord",
    "CommandState",
    "DropCommand",
    "FinishAttempt",
    "InstanceRecord",
    "InstanceState",
    "Op",
    "QuotaRefusal",
    "RecordCommand",
    "ReleaseQuota",
    "RunRecord",
    "RunState",
    "SetBatch",
    "SetInstances",
    "SetQuotaLimit",
    "SetRegionCommand",
    "SetRun",
    "ShrinkBatch",
    "check_transition",
    "reported_state",
]


class RunState(enum.StrEnum):
    """Where a run stands."""

    CREATED = "created"
    RUNNING = "running"
    FINISHED = "finished"  # every batch reached an end; see instance states for the outcome
    HALTED = "halted"  # --max-errors tripped (exit 3)
    QUOTA = "quota"  # the daily quota stopped it (exit 4)
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM or --pause-after-wave (exit 5)
    STOPPED = "stopped"  # `fanout stop` (exit 5)
    FATAL = "fatal"  # credentials, permission, unknown command (exit 6)


class BatchState(enum.StrEnum):
    """Where one InvokeCommand call stands."""

    PENDING = "pending"  # planned, nothing in flight
    SENDING = "sending"  # an attempt is durable and may be on the wire: re-send with the same token
    ACCEPTED = "accepted"  # the server returned an InvokeId
    FAILED = "failed"  # permanently refused; nothing was executed
    UNKNOWN = "unknown"  # may or may not have run and could not be resolved
    DONE = "done"  # accepted and every instance's result is final


class CommandState(enum.StrEnum):
    """Where a command fanout creates (`--script`) stands in one region of one account."""

    CREATING = "creating"  # the intent: CreateCommand may be on the wire, its id not recorded
    CREATED = "created"  # its CommandId is recorded
    DELETED = "deleted"  # pruned with DeleteCommand, or found gone


class InstanceState(enum.StrEnum):
    """Where one target stands; the final ones add up to the target count."""

    PENDING = "pending"
    # Reported, not stored: a pending row whose batch was accepted (the batch holds the fact).
    INVOKED = "invoked"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Accepted, but the agent or the delivery failed (ClientNotRunning, DeliveryTimeout, ...):
    # the command never ran there. Apart from `failed`, whose command ran and failed.
    UNREACHABLE = "unreachable"
    EXCLUDED = "excluded"  # by preflight, with a reason
    NOT_INVOKED = "not_invoked"  # halted, quota, stopped: never sent
    UNKNOWN = "unknown"


def reported_state(state: str, run_state: RunState) -> str:
    """How an instance is reported: `pending` counts as `not_invoked` once its run is not
    running (I2: the counts add up to the target count); any other state as it is stored."""
    if state == InstanceState.PENDING:
        return InstanceState.PENDING if run_state is RunState.RUNNING else InstanceState.NOT_INVOKED
    return state


S = TypeVar("S", RunState, BatchState, InstanceState)

_R, _B, _I = RunState, BatchState, InstanceState
_RESUMABLE_RUN = frozenset({_R.RUNNING, _R.FINISHED, _R.HALTED, _R.QUOTA, _R.INTERRUPTED})
RUN_TRANSITIONS: Mapping[RunState, frozenset[RunState]] = {
    _R.CREATED: frozenset({_R.RUNNING, _R.FATAL, _R.STOPPED}),
    _R.RUNNING: frozenset(set(_R) - {_R.CREATED}),
    _R.HALTED: _RESUMABLE_RUN | {_R.STOPPED},
    _R.QUOTA: _RESUMABLE_RUN | {_R.STOPPED},
    _R.INTERRUPTED: _RESUMABLE_RUN | {_R.STOPPED},
    _R.FATAL: frozenset({_R.RUNNING, _R.STOPPED}),
    _R.STOPPED: frozenset({_R.STOPPED, _R.RUNNING}),
    _R.FINISHED: frozenset({_R.RUNNING, _R.FINISHED, _R.STOPPED}),  # results collected later
}
BATCH_TRANSITIONS: Mapping[BatchState, frozenset[BatchState]] = {
    _B.PENDING: frozenset({_B.SENDING, _B.FAILED}),
    # SENDING -> SENDING is a re-send of the same token; -> PENDING only when nothing can have run.
    _B.SENDING: frozenset({_B.SENDING, _B.ACCEPTED, _B.PENDING, _B.FAILED, _B.UNKNOWN}),
    _B.UNKNOWN: frozenset({_B.SENDING}),
    _B.ACCEPTED: frozenset({_B.DONE}),
    _B.FAILED: frozenset(),
    _B.DONE: frozenset(),
}
INSTANCE_TRANSITIONS: Mapping[InstanceState, frozenset[InstanceState]] = {
    _I.PENDING: frozenset(
        {
            _I.INVOKED,
            _I.SUCCEEDED,
            _I.FAILED,
            _I.UNREACHABLE,
            _I.EXCLUDED,
            _I.NOT_INVOKED,
            _I.UNKNOWN,
        }
    ),
    _I.INVOKED: frozenset({_I.INVOKED, _I.SUCCEEDED, _I.FAILED, _I.UNREACHABLE, _I.UNKNOWN}),
    _I.NOT_INVOKED: frozenset({_I.PENDING, _I.INVOKED}),  # resume picks them up again
    _I.UNKNOWN: frozenset({_I.INVOKED, _I.SUCCEEDED, _I.FAILED, _I.UNREACHABLE, _I.PENDING}),
    # A final state is never left; the same state may be written again to add details (output).
    _I.SUCCEEDED: frozenset({_I.SUCCEEDED}),
    _I.FAILED: frozenset({_I.FAILED}),
    _I.UNREACHABLE: frozenset({_I.UNREACHABLE}),
    _I.EXCLUDED: frozenset(),
}


def check_transition(table: Mapping[S, frozenset[S]], current: S, new: S, what: str) -> None:
    """Raise `TransitionError` unless `current -> new` is in `table`."""
    if new not in table[current]:
        msg = f"{what}: {current} -> {new} is not an allowed transition"
        raise TransitionError(msg)


def predecessors(table: Mapping[S, frozenset[S]], new: S) -> tuple[S, ...]:
    """Every state from which `new` may be reached."""
    return tuple(state for state, targets in table.items() if new in targets)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored."""

    run_id: str
    created_at: float
    updated_at: float
    state: RunState
    command_id: str
    account: str
    target_count: int
    parameters: Mapping[str, str] = field(default_factory=dict)  # secret values already redacted
    secret_keys: tuple[str, ...] = ()
    options: Mapping[str, object] = field(default_factory=dict)
    parent_run_id: str | None = None
    exit_code: int | None = None
    lease_owner: str | None = None
    lease_until: float | None = None


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch as stored: the unit of one InvokeCommand call."""

    batch_id: str
    run_id: str
    region: str
    seq: int
    wave: int
    instance_ids: tuple[str, ...]
    client_token: str
    state: BatchState
    attempts: int = 0
    maybe_applied: bool = False  # some attempt's answer was lost: the token must never change
    invoke_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    # The region's own CommandId of the run's command (a CommandId belongs to one region).
    # None until a command fanout creates (`--script`) has been created in the region.
    command_id: str | None = None


@dataclass(frozen=True, slots=True)
class BatchTimes:
    """When a sent batch was first sent, accepted and ended (epoch seconds; None: not yet)."""

    sent_at: float
    accepted_at: float | None = None
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One target's outcome as stored."""

    run_id: str
    region: str
    instance_id: str
    batch_id: str | None
    state: InstanceState
    reason: str | None = None
    invoke_id: str | None = None
    exit_code: int | None = None
    error_code: str | None = None
    error_info: str | None = None
    output: str | None = None
    dropped: int = 0
    start_time: str | None = None
    finish_time: str | None = None
    invocation_status: str | None = None


# --- write operations: applied in order, one transaction per group ----------------------------


@dataclass(frozen=True, slots=True)
class BeginAttempt:
    """Reserve one call of quota and make the intent durable; the result is True if granted."""

    run_id: str
    batch_id: str
    region: str
    attempt: int
    client_token: str
    account: str
    window_start: float  # quota calls newer than this count against `limit`
    limit: int  # the daily quota minus the reserve
    now: float


@dataclass(frozen=True, slots=True)
class FinishAttempt:
    """Record how an attempt ended."""

    batch_id: str
    attempt: int
    outcome: str  # accepted, or a CallKind: retryable, ambiguous, per_instance, quota, ...
    now: float
    request_id: str | None = None
    invoke_id: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class SetBatch:
    """Move a batch to a new state (checked), and its still-open instances with it."""

    batch_id: str
    state: BatchState
    now: float
    invoke_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    maybe_applied: bool | None = None
    instance_state: InstanceState | None = None  # applied to the batch's instances in open states


@dataclass(frozen=True, slots=True)
class ShrinkBatch:
    """Drop isolated instances from a pending batch; a new instance set needs a new token."""

    batch_id: str
    instance_ids: tuple[str, ...]
    client_token: str
    now: float


@dataclass(frozen=True, slots=True)
class AddBatch:
    """A new pending batch split off an existing one (`InstanceIds.ExceedLimit`): its row, and
    its instances (pending, never sent) moved to it. Comes with the ShrinkBatch of the other half."""

    batch: BatchRecord
    now: float


@dataclass(frozen=True, slots=True)
class SetInstances:
    """Move named instances to a new state (checked), with their outcome details."""

    run_id: str
    records: tuple[InstanceRecord, ...]
    now: float


@dataclass(frozen=True, slots=True)
class SetRun:
    """Move the run to a new state (checked)."""

    run_id: str
    state: RunState
    now: float
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class AppendEvent:
    """Add a line to the run's event journal."""

    run_id: str
    kind: str
    now: float
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """The API refused an InvokeCommand for the daily quota (`Invocation.ExceedQuota`)."""

    account: str
    region: str
    at: float  # when the answer came
    code: str
    message: str
    request_id: str | None
    used: int  # fanout's own calls in the window when it came (the refused one not counted)
    limit: int | None  # the limit fanout held for the region (the API's, or the configured one)
    explained: bool  # fanout's own calls reach the limit: capacity returns as its window moves
    retry_at: float | None  # when capacity returns (explained) or the next probe may go
    run_id: str | None = None
    batch_id: str | None = None
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class ReleaseQuota:
    """Give an attempt's reservation back: the API refused it for the quota (`refusal`, kept),
    or it was never sent (the region was blocked, or the run halted, while it waited)."""

    account: str
    region: str
    run_id: str
    batch_id: str
    attempt: int
    refusal: QuotaRefusal | None = None


@dataclass(frozen=True, slots=True)
class SetQuotaLimit:
    """Remember the daily limit read for (account, region) and where it came from."""

    account: str
    region: str
    limit: int
    source: (
        str  # "api" (DescribeAccountAttributes max-axt-invocation-daily) | "configured" | "default"
    )
    now: float


@dataclass(frozen=True, slots=True)
class AcquireLease:
    """Take or renew the run's lease; the result is (granted, holder, until)."""

    run_id: str
    owner: str
    until: float
    now: float
    force: bool = False
    # A renewal: extend the lease only while `owner` still holds it. A runner that lost its
    # lease (a takeover while it was stalled) must not take it back on its next beat.
    renew: bool = False


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A command fanout creates from a script, in one region of one account (the ledger's
    `commands` row): its CreateCommand intent, then its CommandId."""

    account: str
    region: str
    name: str  # fanout-<sha256 prefix>: the same in every region
    content_hash: str
    command_type: str
    state: CommandState
    command_id: str | None = None
    owner: str | None = None  # the process holding the creation claim (host:pid)
    claimed_until: float | None = None  # the claim is another process's to take after this
    created_at: float | None = None
    updated_at: float = 0.0
    run_id: str | None = None  # the run whose start created it


@dataclass(frozen=True, slots=True)
class ClaimCommand:
    """Write the CreateCommand intent: claim the creation of `record` (state creating, with
    its owner and claim deadline). Granted when there is no row, or a deleted one, or one
    this owner already claims, or one whose claim expired (or `force`: its holder is gone);
    never over a created command. The result is (granted, the row as it now stands)."""

    record: CommandRecord
    now: float
    force: bool = False


@dataclass(frozen=True, slots=True)
class RecordCommand:
    """The command was created (or found by its name): record its CommandId; the claim ends.
    `record` names it (and describes it, should its row be missing)."""

    record: CommandRecord
    command_id: str
    now: float


@dataclass(frozen=True, slots=True)
class DropCommand:
    """The command is gone (deleted by `fanout commands --prune`, or found missing)."""

    account: str
    region: str
    name: str
    now: float


@dataclass(frozen=True, slots=True)
class SetRegionCommand:
    """Give a run's batches in `region` their CommandId (once its command exists there)."""

    run_id: str
    region: str
    command_id: str
    now: float


Op = (
    BeginAttempt
    | FinishAttempt
    | SetBatch
    | ShrinkBatch
    | AddBatch
    | SetInstances
    | SetRun
    | AppendEvent
    | AcquireLease
    | ClaimCommand
    | RecordCommand
    | DropCommand
    | SetRegionCommand
    | ReleaseQuota
    | SetQuotaLimit
)

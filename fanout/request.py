"""The one description of a rollout: what to invoke where, and how to pace and judge it.

A `RunRequest` is built where input enters — the CLI (flags and the config file's `[rollout]`
table), the Python API (`fanout.api`), `retry` and the demo — and handed whole to
`fanout.runner.start_run(request, settings)`; no options mapping crosses a module boundary.
`ResumeRequest` is the same for `fanout resume`. Settings (batch size, concurrency, rate, quota)
stay in `fanout.settings.Settings`: they are the operator's defaults, not the rollout's content.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fanout.aliyun.command import CommandSpec
from fanout.sources import CommandIdSource, CommandSource
from fanout.targets import Target

__all__ = ["CommandSpec", "ResumeRequest", "RunRequest"]


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A new run: targets, the command with its options, waves, the error budget, and waiting.

    `source` says where the command comes from in each region (`fanout.sources`); None is
    `spec.command_id` in every region. `spec.command_id` is then the source's label.
    """

    targets: tuple[Target, ...]
    spec: CommandSpec
    source: CommandSource | None = None
    secret_keys: tuple[str, ...] = ()
    waves: str | None = None
    wave_order: str = "spread"  # or "region-by-region" (fanout.plan.WAVE_ORDERS)
    max_errors: str | None = None  # run-wide: halts mid-wave
    wave_max_failures: str | None = None  # per wave, judged when its results are in
    wave_wait_s: float = 0.0  # bake time after each wave's results, before the next wave
    pause_after_wave: bool = False
    preflight: bool = True
    wait: bool = False
    wait_for_quota: bool = False
    strict: bool = False  # preflight exclusions fail the run (exit 1)
    not_after: float | None = None  # epoch s: no batch sent and no wave started after it
    allow_overlap: bool = False  # may target open instances of another run in progress
    parent_run_id: str | None = None
    allow_short_secret: bool = False  # secret values under 8 characters (fanout.fingerprints)
    count_unreachable: bool = False  # unreachable instances count against --max-errors
    # Linked runs (fanout.linked): a health check on each wave's succeeded instances at the end
    # of its bake time, and the rollback run when the run halts on its error budget (exit 3).
    wave_check: CommandSource | None = None
    on_halt: CommandSource | None = None
    on_halt_scope: str = "succeeded"  # or "all-invoked" (fanout.linked.ROLLBACK_SCOPES)
    kind: str = "run"  # run, retry, rollback or wave_check (fanout.linked.KINDS)
    check_wave: int | None = None  # a wave check's wave (from 1)

    @property
    def command_source(self) -> CommandSource:
        """The command source (`spec.command_id` in every region when none was given)."""
        return self.source or CommandIdSource(self.spec.command_id)


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """Continue a stored run: secret values again (they are never stored), and how to wait."""

    run_id: str
    secret_params: Mapping[str, str] = field(default_factory=dict)
    wait: bool | None = None  # None: as the run was started
    wait_for_quota: bool = False
    force_lease: bool = False
    not_after: float | None = None  # this leg's change window (a stored one is not reused)
    # A new error budget from this leg on (kept for later legs): the run's earlier failures
    # still count, so a run halted by its budget goes on only with a larger one.
    max_errors: str | None = None
    wave_max_failures: str | None = None

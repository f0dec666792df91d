"""Run control: the one owner of "may this run still send, and why not".

Every stage that can end dispatching says so through one verb, `RunControl.halt(reason)`: the
error budget (`BUDGET`), a `fanout stop` request seen in the ledger (`STOP_REQUESTED`), SIGINT or
SIGTERM (`SIGNAL`), a fatal API answer (`FATAL`), `--pause-after-wave` (`PAUSE`). A region whose
daily quota is spent is blocked on its own (`block_region`, with the `QuotaBlock` saying why:
fanout's own count, or the API's refusal): the other regions go on, and the run waits for it or
ends with exit 4. A region unblocked after an API refusal is *probing*: it sends one call, and
only when that one is accepted (`probe_passed`) the rest. The verdict (`fanout.verdict`) reads a
`HaltState` snapshot, never the live object.

    halt reason        dispatching   results collection
    BUDGET, PAUSE      stops         goes on (what was sent is followed to its end)
    SIGNAL, STOP_...   stops         stops (resume picks it up)
    FATAL              stops         stops
"""

from __future__ import annotations

import anyio

from fanout.clock import Clock, sleep_or_wake
from fanout.quota import QuotaBlock
from fanout.times import iso
from fanout.verdict import HaltReason, HaltState

__all__ = ["HaltReason", "HaltState", "RunControl"]


# Reasons that also end results collection: the operator wants the process back now.
_ABORTING = frozenset({HaltReason.STOP_REQUESTED, HaltReason.SIGNAL, HaltReason.FATAL})


class RunControl:
    """Halting state of one leg of a run, with the waits on it."""

    __slots__ = (
        "_abort",
        "_blocks",
        "_clock",
        "_details",
        "_halt",
        "_not_after",
        "_probing",
        "_quota_blocked",
        "_reasons",
    )

    def __init__(self, clock: Clock, *, not_after: float | None = None) -> None:
        self._clock = clock
        self._not_after = not_after  # --not-after: nothing is sent and no wave starts after it
        self._reasons: set[HaltReason] = set()
        self._details: dict[HaltReason, str] = {}
        self._quota_blocked: set[str] = set()
        self._blocks: dict[str, QuotaBlock] = {}  # why each region was last blocked
        self._probing: set[str] = set()
        self._halt = anyio.Event()
        self._abort = anyio.Event()

    def halt(self, reason: HaltReason, detail: str | None = None) -> bool:
        """Stop dispatching for `reason`; True if this reason is new.

        `detail` (the first one per reason wins) is what the verdict reports: the fatal error,
        the budget that was spent.
        """
        new = reason not in self._reasons
        self._reasons.add(reason)
        if detail is not None:
            self._details.setdefault(reason, detail)
        self._halt.set()
        if reason in _ABORTING:
            self._abort.set()
        return new

    def halted_by(self, *reasons: HaltReason) -> bool:
        """True if the run halted for any of `reasons` (for any reason when none are named)."""
        return bool(self._reasons.intersection(reasons)) if reasons else bool(self._reasons)

    @property
    def halted(self) -> bool:
        """True once nothing more may be dispatched (the change window is looked at too)."""
        if not self._reasons and self._not_after is not None:
            self._check_window()
        return bool(self._reasons)

    def _check_window(self) -> None:
        """Halt with WINDOW once the clock is past `--not-after`."""
        assert self._not_after is not None
        if self._clock.time() >= self._not_after:
            when = iso(self._not_after)
            self.halt(HaltReason.WINDOW, f"the change window closed at {when} (--not-after)")

    def seconds_left(self) -> float | None:
        """Seconds until `--not-after` (None: no window)."""
        return None if self._not_after is None else self._not_after - self._clock.time()

    @property
    def fatal(self) -> bool:
        """True after a fatal API answer."""
        return HaltReason.FATAL in self._reasons

    @property
    def halt_event(self) -> anyio.Event:
        """Set when dispatching stops."""
        return self._halt

    @property
    def abort_event(self) -> anyio.Event:
        """Set when results collection stops too."""
        return self._abort

    def block_region(self, region: str, block: QuotaBlock | None = None) -> None:
        """The region's daily quota is spent: send nothing more there until `unblock_region`.

        A block while the region is already blocked (an answer to a call that was already on
        the wire) keeps the first reason - it is the same exhaustion, not a new one - except
        that the API's refusal replaces fanout's own count: the API's word is the one that holds.
        """
        new = block or QuotaBlock(region)
        current = self._blocks.get(region) if region in self._quota_blocked else None
        if current is None or (new.refused and not current.refused):
            self._blocks[region] = new
        self._quota_blocked.add(region)
        self._probing.discard(region)

    def settle_block(self, region: str, block: QuotaBlock) -> None:
        """Replace the provisional block set when a refusal arrived by what it means."""
        current = self._blocks.get(region)
        if current is None or not current.settled:
            self._blocks[region] = block

    def quota_block(self, region: str) -> QuotaBlock | None:
        """Why the region was last blocked (kept until a probe passes)."""
        return self._blocks.get(region)

    def is_blocked(self, region: str) -> bool:
        """True while `region`'s quota is spent."""
        return region in self._quota_blocked

    @property
    def quota_blocked(self) -> frozenset[str]:
        """The regions whose quota is spent now."""
        return frozenset(self._quota_blocked)

    def unblock_region(self, region: str) -> None:
        """`region` may send again: all at once after fanout's own count, one probe call first
        after an API refusal."""
        self._quota_blocked.discard(region)
        block = self._blocks.get(region)
        if block is not None and block.refused:
            self._probing.add(region)
        else:
            self._blocks.pop(region, None)

    def start_probing(self, region: str) -> None:
        """`region` sends one call alone before the rest (its first call of this leg: if the
        account's quota was spent elsewhere, one refusal says so, not a burst of them)."""
        self._probing.add(region)

    def probing(self, region: str) -> bool:
        """True while `region` must send one call alone, to learn whether capacity is back."""
        return region in self._probing

    def probe_passed(self, region: str) -> None:
        """The probe call was accepted: the region sends at full speed again."""
        self._probing.discard(region)
        self._blocks.pop(region, None)

    async def sleep(self, seconds: float) -> None:
        """Sleep on the run's clock, waking early if the run halts or its window closes."""
        left = self.seconds_left()
        if left is not None and left < seconds:
            await sleep_or_wake(self._clock, max(0.0, left), self._halt)
            self._check_window()
            return
        await sleep_or_wake(self._clock, seconds, self._halt)

    def state(self) -> HaltState:
        """A snapshot for the verdict."""
        return HaltState(
            frozenset(self._reasons),
            dict(self._details),
            frozenset(self._quota_blocked),
            {r: self._blocks[r] for r in sorted(self._quota_blocked) if r in self._blocks},
        )

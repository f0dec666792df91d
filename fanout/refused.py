"""The API's quota refusal (`Invocation.ExceedQuota`): authoritative, recorded, explained.

When InvokeCommand is refused for the daily quota, the region stops at once (`RunControl.
block_region`), the refused attempt gives its reservation back (it used nothing) and the
refusal is kept in the ledger with the API's code, message and RequestId. Whether fanout can
say when capacity returns depends on who spent it:

- fanout's own calls in the window reach the API's limit (`explained`): capacity frees as that
  window moves, at the time the ledger's calls give;
- otherwise other users of the account's quota spent it (the console, other tools: facts 10),
  and nobody can say when it returns: the region is probed with one call at a time, on a
  growing schedule (`fanout.quota.probe_at`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
import structlog

from fanout.errors import CallError
from fanout.halt import RunControl
from fanout.ledger import LedgerStore, QuotaRefusal, ReleaseQuota
from fanout.quota import DAY_S, QuotaBlock, probe_at

if TYPE_CHECKING:
    from fanout.invoke import InvokeContext

__all__ = ["block_at_once", "probe_after_recent_refusals", "quota_refused", "refusal_block"]

log = structlog.get_logger("fanout.quota")


def refusal_block(
    refusal: QuotaRefusal, times: list[float], ctx: InvokeContext, previous: QuotaBlock | None
) -> QuotaBlock:
    """What a refusal means for its region, given fanout's own calls in the window (`times`)."""
    policy = ctx.quotas.policy(refusal.region)
    limit = ctx.quotas.api_limit(refusal.region) or policy.daily_quota
    used = len(times)
    block = QuotaBlock(
        region=refusal.region,
        code=refusal.code,
        message=refusal.message,
        request_id=refusal.request_id,
        used=used,
        limit=limit,
    )
    if used >= limit:  # fanout alone spent the account's quota: its window says when it frees
        frees = replace(policy, daily_quota=limit, reserve=0).frees_at(times, refusal.at)
        return replace(block, explained=True, frees_at=frees)
    refusals = previous.refusals + 1 if previous is not None and previous.refused else 1
    return replace(
        block,
        explained=False,
        probe_at=probe_at(policy, refusal.at, refusals),
        refusals=refusals,
    )


def block_at_once(ctx: InvokeContext, region: str, err: CallError) -> None:
    """Block the region the instant the refusal arrives, before the call's gate slot is given
    back: no other call of the region goes out meanwhile (`quota_refused` then weighs it)."""
    previous = ctx.control.quota_block(region)
    refusals = previous.refusals if previous is not None and previous.refused else 0
    provisional = QuotaBlock(region, code=err.code, explained=False, refusals=refusals,
                             settled=False)  # fmt: skip
    ctx.control.block_region(region, provisional)


async def quota_refused(
    ctx: InvokeContext,
    batch_id: str,
    region: str,
    attempt: int,
    err: CallError,
) -> QuotaBlock:
    """Block the region, give the attempt's reservation back, record the refusal; the block."""
    now = ctx.clock.time()
    policy = ctx.quotas.policy(region)
    rows = await anyio.to_thread.run_sync(
        ctx.store.quota_reservations, ctx.account, region, policy.window_start(now)
    )
    # Reservations of calls that never reached the API are not fanout's calls: this one, those
    # still waiting (or being reserved) and those withdrawn, whose release may not be committed
    # yet. Taken after the read, so a reservation made meanwhile is known as unsent too; the
    # region is blocked since the refusal, so none of them has been sent since.
    unsent = {
        *ctx.unsent.get(region, ()),
        *ctx.withdrawn.get(region, ()),
        (batch_id, attempt),
    }
    times = [ts for ts, batch, number in rows if (batch, number) not in unsent]
    message = getattr(err, "api_message", str(err))
    draft = QuotaRefusal(ctx.account, region, now, err.code, message, err.request_id, 0, None,
                         explained=False, retry_at=None)  # fmt: skip
    block = refusal_block(draft, times, ctx, ctx.control.quota_block(region))
    refusal = replace(
        draft,
        used=block.used,
        limit=block.limit,
        explained=block.explained,
        retry_at=block.until,
        run_id=ctx.run_id,
        batch_id=batch_id,
        attempt=attempt,
    )
    ctx.control.block_region(region, block)
    ctx.control.settle_block(region, block)  # a later answer of the same exhaustion keeps it
    ctx.ledger.post(ReleaseQuota(ctx.account, region, ctx.run_id, batch_id, attempt, refusal))
    log.warning(
        "quota refused",
        run_id=ctx.run_id,
        region=region,
        code=err.code,
        message=message,
        request_id=err.request_id,
        own_calls=block.used,
        limit=block.limit,
        explained=block.explained,
        until=block.until,
    )
    return ctx.control.quota_block(region) or block


def probe_after_recent_refusals(
    control: RunControl, store: LedgerStore, account: str, regions: set[str], now: float
) -> list[QuotaRefusal]:
    """Regions whose last refusal says to wait still (a resume before its probe time) start
    probing: one call first, so a resume adds at most one refused call per region. Blocking
    call (reads the ledger). The refusals that did so."""
    seen: set[str] = set()
    waiting = []
    for refusal in store.quota_refusals(account, since=now - DAY_S):  # newest first
        if refusal.region in seen or refusal.region not in regions:
            continue
        seen.add(refusal.region)
        if refusal.retry_at is not None and refusal.retry_at > now:
            block = QuotaBlock(refusal.region, refusal.code, refusal.message, refusal.request_id,
                               refusal.used, refusal.limit, refusal.explained,
                               frees_at=refusal.retry_at if refusal.explained else None,
                               probe_at=None if refusal.explained else refusal.retry_at,
                               refusals=1)  # fmt: skip
            control.block_region(refusal.region, block)
            control.unblock_region(refusal.region)  # probing
            waiting.append(refusal)
    return waiting

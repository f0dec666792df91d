"""A run's command in each target region: resolve the command source, create what is missing.

A CommandId belongs to one region, so a run resolves its command source (`fanout.sources`)
region by region, with free DescribeCommands calls, before anything is stored:

- `--command-id c-...`: the id must exist in every target region; the error names the regions
  where it does not and the sources that fit a multi-region run.
- `--command-id REGION=c-...`: each region's own id (a region without one is refused first).
- `--command-name NAME`: DescribeCommands(Name) per region; none or several is refused, the
  candidates listed. With `--provider` (or an `ACS-...` id), a public command:
  DescribeCommands(Provider, Name), invoked by its name.
- `--script FILE`: reused where the ledger (or DescribeCommands by its content-hash name) knows
  it, created where it is missing — but only when the run is driven (`ensure_commands`), never
  by `plan`, so that the run is stored first and a resume finishes what a crash left.

Creating one command in one region (`ensure_commands`) is, in this order: the CreateCommand
intent committed to the ledger (a claim: one fanout process at a time, whatever host), then
DescribeCommands(Name) — a command that an earlier process created but could not record is
found and adopted, never created twice — then CreateCommand, then its id recorded with the
run's batches of the region. A claim whose holder died on this host (kill -9 between
CreateCommand and its record) is taken at once; another host's after `lease_s`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio
import structlog

from fanout.aliyun.command import CommandSpec
from fanout.aliyun.responses import Command
from fanout.clock import Clock
from fanout.errors import CallError, CallKind, ConfigError, is_permission_code
from fanout.lease import holder_is_gone, owner
from fanout.ledger import (
    ClaimCommand,
    CommandRecord,
    CommandState,
    DropCommand,
    LedgerStore,
    Op,
    RecordCommand,
    RunRecord,
    SetRegionCommand,
)
from fanout.sources import (
    CommandIdMap,
    CommandIdSource,
    CommandNameSource,
    CommandSource,
    ScriptSource,
    is_public_name,
    label,
    missing_regions,
    script_command,
    source_from_options,
)
from fanout.validate import validate_command

if TYPE_CHECKING:
    from fanout.aliyun.client import EcsClient

__all__ = [
    "RegionCommand",
    "Resolution",
    "ensure_commands",
    "fill_run_commands",
    "resolve_commands",
]

log = structlog.get_logger("fanout.commands")

# How often a process waiting for another's CreateCommand claim looks again.
_CLAIM_POLL_S = 0.5
# The most candidates a refusal lists (names and ids stay on one line).
_MAX_CANDIDATES = 5
_ALTERNATIVES = (
    "a CommandId belongs to one region: give each region's id with --command-id REGION=c-..., "
    "or use --command-name NAME or --script FILE"
)


@dataclass(frozen=True, slots=True)
class RegionCommand:
    """A region's command, resolved: the CommandId to invoke (None: `--script` creates it when
    the run is driven), and the command as DescribeCommands shows it (None: not checked)."""

    region: str
    command_id: str | None
    command: Command | None
    action: str  # "exists", "reuses" (a script's command) or "creates"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The command of a run in each of its target regions."""

    source: CommandSource
    regions: Mapping[str, RegionCommand]

    def command_ids(self) -> dict[str, str | None]:
        """Region -> the CommandId its batches invoke (None: to be created)."""
        return {region: rc.command_id for region, rc in self.regions.items()}

    def summary(self) -> dict[str, object]:
        """What `fanout plan` shows of the command: per region its id or what happens."""
        return {
            "source": label(self.source),
            "regions": {
                region: {"command_id": rc.command_id, "action": rc.action}
                for region, rc in sorted(self.regions.items())
            },
        }


async def resolve_commands(
    client: EcsClient,
    store: LedgerStore,
    source: CommandSource,
    regions: Sequence[str],
    *,
    account: str,
    spec: CommandSpec,
    content_limit_bytes: int,
    now_s: float,
) -> Resolution:
    """Resolve `source` in every region (free DescribeCommands calls, every region at once),
    then validate `spec` against each region's command. Creates nothing."""
    wanted = sorted(set(regions))
    lacking = missing_regions(source, wanted)
    if lacking:
        raise ConfigError(
            f"--command-id: no id for {', '.join(lacking)} (a target region needs its own "
            "REGION=c-... entry)"
        )
    found: dict[str, RegionCommand] = {}

    async def one(region: str) -> None:
        found[region] = await _resolve_region(client, store, source, region, account)

    async with anyio.create_task_group() as tg:
        for region in wanted:
            tg.start_soon(one, region)
    _refuse_missing(source, found)
    for region in wanted:
        rc = found[region]
        command = rc.command
        if command is None and isinstance(source, ScriptSource):
            command = script_command(source, region)
        if command is None:  # DescribeCommands could not be asked: InvokeCommand decides
            continue
        validate_command(
            command,
            spec.for_command(command.command_id),
            region=region,
            content_limit_bytes=content_limit_bytes,
            now_s=now_s,
        )
    return Resolution(source, {r: found[r] for r in wanted})


async def _resolve_region(
    client: EcsClient, store: LedgerStore, source: CommandSource, region: str, account: str
) -> RegionCommand:
    """One region's command; `command_id` None with action "missing" when there is none."""
    try:
        if isinstance(source, ScriptSource):
            return await _resolve_script(client, store, source, region, account)
        if isinstance(source, CommandNameSource):
            return await _resolve_name(client, region, source.name, source.provider)
        command_id = source.ids[region] if isinstance(source, CommandIdMap) else source.command_id
        provider = source.provider if isinstance(source, CommandIdSource) else None
        if provider or is_public_name(command_id):
            return await _resolve_name(client, region, command_id, provider)
        listed = await client.describe_commands(region, command_id=command_id)
        command = next((c for c in listed if c.command_id == command_id), None)
        action = "exists" if command else "missing"
        return RegionCommand(region, command_id if command else None, command, action)
    except CallError as exc:
        # A signature, key or token refused: every InvokeCommand would be refused the same
        # way, so nothing is sent (the credentials check, --no-preflight or not). A RAM
        # permission refused is a fact no retry changes (issue 14): exit 6 naming the action and
        # its ecs: permission, fixed before the run rather than found in its middle.
        if exc.is_authentication or is_permission_code(exc.code):
            raise
        if isinstance(source, ScriptSource | CommandNameSource):
            raise  # a name cannot be invoked unresolved
        # An id can be used unchecked when DescribeCommands fails for a passing reason (the
        # API unreachable, throttled past the retries): InvokeCommand applies every rule itself.
        log.warning(
            "command_not_checked",
            region=region,
            command_id=label(source),
            error=str(exc),
            hint="DescribeCommands failed; InvokeCommand will apply the rules itself",
        )
        command_id = source.ids[region] if isinstance(source, CommandIdMap) else source.command_id
        return RegionCommand(region, command_id, None, "unchecked")


async def _resolve_name(
    client: EcsClient, region: str, name: str, provider: str | None
) -> RegionCommand:
    """The one command named `name` in the region (a public one with `provider`)."""
    listed = await client.describe_commands(region, name=name, provider=provider)
    exact = [c for c in listed if c.name == name]
    if len(exact) > 1:
        candidates = ", ".join(
            f"{c.command_id} (created {c.creation_time or '?'})" for c in exact[:_MAX_CANDIDATES]
        )
        raise ConfigError(
            f"--command-name {name}: {len(exact)} commands of that name in {region}: "
            f"{candidates}; give the one to run with --command-id {region}=c-..."
        )
    if not exact:
        return RegionCommand(region, None, None, "missing")
    command = exact[0]
    # A public command is invoked by its name, valid in every region (InvokeCommand reference).
    return RegionCommand(region, name if provider else command.command_id, command, "exists")


async def _resolve_script(
    client: EcsClient, store: LedgerStore, script: ScriptSource, region: str, account: str
) -> RegionCommand:
    """A script's command in the region: the one the ledger recorded (if it still exists), or
    one of its name and content found by DescribeCommands; else it is to be created."""
    record = await anyio.to_thread.run_sync(store.command_record, account, region, script.name)
    if record is not None and record.state is CommandState.CREATED and record.command_id:
        listed = await client.describe_commands(region, command_id=record.command_id)
        command = next((c for c in listed if _is_script(c, script)), None)
        if command is not None:
            return RegionCommand(region, command.command_id, command, "reuses")
    command = await _find_script(client, script, region)
    if command is not None:
        return RegionCommand(region, command.command_id, command, "reuses")
    return RegionCommand(region, None, None, "creates")


async def _find_script(client: EcsClient, script: ScriptSource, region: str) -> Command | None:
    """The command of the script's name and content in the region, if one exists (oldest)."""
    listed = await client.describe_commands(region, name=script.name)
    same = [c for c in listed if _is_script(c, script)]
    if not same and any(c.name == script.name for c in listed):
        raise ConfigError(
            f"--script: a command named {script.name} exists in {region} with other content "
            f"({', '.join(c.command_id for c in listed if c.name == script.name)}); "
            "fanout will not run or replace it: delete it, or change the script"
        )
    return min(same, key=lambda c: c.creation_time or "", default=None)


def _is_script(command: Command, script: ScriptSource) -> bool:
    """True if `command` is what CreateCommand makes of `script`."""
    return (
        command.name == script.name
        and command.content == script.content
        and command.type == script.command_type
        and command.enable_parameter == script.enable_parameter
        and command.timeout_s == script.timeout_s
        and (command.working_dir or "") == (script.working_dir or "")
    )


def _refuse_missing(source: CommandSource, found: Mapping[str, RegionCommand]) -> None:
    """One ConfigError naming every region without the command, and what to do instead."""
    missing = sorted(r for r, rc in found.items() if rc.action == "missing")
    if not missing:
        return
    where = ", ".join(missing)
    if isinstance(source, CommandNameSource):
        kind = f"public command of {source.provider}" if source.provider else "command"
        if is_public_name(source.name) and not source.provider:
            raise ConfigError(
                f"--command-name {source.name}: no command of that name in {where}; a public "
                "command is listed only with its provider: add --provider AlibabaCloud (or its "
                "own provider)"
            )
        raise ConfigError(
            f"--command-name {source.name}: no {kind} of that name in {where} (DescribeCommands"
            f"{'(Provider)' if source.provider else ''} found none); create it there, or use "
            "--script FILE"
        )
    if isinstance(source, CommandIdMap):
        ids = ", ".join(f"{r}={source.ids[r]}" for r in missing)
        raise ConfigError(f"--command-id {ids}: no such command there (DescribeCommands)")
    assert isinstance(source, CommandIdSource)
    if is_public_name(source.command_id) and not source.provider:
        raise ConfigError(
            f"--command-id {source.command_id}: no such command in {where}; a public command "
            "is listed only with its provider: add --provider AlibabaCloud (or its own provider)"
        )
    present = sorted(r for r, rc in found.items() if rc.action != "missing")
    also = f" (it exists in {', '.join(present)})" if present else ""
    raise ConfigError(
        f"--command-id {source.command_id}: no such command in {where}{also}; {_ALTERNATIVES}"
    )


async def ensure_commands(
    client: EcsClient,
    store: LedgerStore,
    script: ScriptSource,
    run_id: str,
    regions: Sequence[str],
    *,
    account: str,
    clock: Clock,
    claim_s: float,
) -> dict[str, tuple[str, bool]]:
    """Create (or adopt) the script's command in each of `regions` and give the run's batches
    there its id; region -> (CommandId, created by this call). One region at a time."""
    done: dict[str, tuple[str, bool]] = {}
    for region in sorted(regions):
        done[region] = await _ensure_region(
            client, store, script, run_id, region, account=account, clock=clock, claim_s=claim_s
        )
    return done


async def _apply(store: LedgerStore, *ops: Op) -> list[object]:
    """Apply ledger operations in one transaction (a thread)."""
    return await anyio.to_thread.run_sync(store.apply, list(ops))


async def _ensure_region(
    client: EcsClient,
    store: LedgerStore,
    script: ScriptSource,
    run_id: str,
    region: str,
    *,
    account: str,
    clock: Clock,
    claim_s: float,
) -> tuple[str, bool]:
    """The claim loop of one region (module docstring): (CommandId, created here)."""
    # This call's own claim: two runs in one process must not share one (host:pid#token).
    me = f"{owner()}#{secrets.token_hex(4)}"
    while True:
        now = clock.time()
        intent = CommandRecord(
            account=account,
            region=region,
            name=script.name,
            content_hash=script.content_hash,
            command_type=script.command_type,
            state=CommandState.CREATING,
            owner=me,
            claimed_until=now + claim_s,
            run_id=run_id,
        )
        granted, row = await _claim(store, ClaimCommand(intent, now))
        # Its holder died on this host between its intent and its record: taken at once.
        gone = (
            store.local
            and row.state is CommandState.CREATING
            and holder_is_gone((row.owner or "").partition("#")[0])
        )
        if not granted and gone:
            granted, row = await _claim(store, ClaimCommand(intent, now, force=True))
        if granted:
            return await _create_or_adopt(client, store, script, run_id, intent, clock)
        if row.state is CommandState.CREATED and row.command_id:
            listed = await client.describe_commands(region, command_id=row.command_id)
            if any(_is_script(c, script) for c in listed):
                await _apply(store, SetRegionCommand(run_id, region, row.command_id, now))
                return row.command_id, False
            await _apply(store, DropCommand(account, region, script.name, now))  # gone
            continue
        log.info("command_claim_wait", region=region, name=script.name, holder=row.owner)
        await clock.sleep(_CLAIM_POLL_S)


async def _claim(store: LedgerStore, op: ClaimCommand) -> tuple[bool, CommandRecord]:
    """Apply one claim: (granted, the row as it now stands)."""
    (result,) = await _apply(store, op)
    assert isinstance(result, tuple)
    granted, row = result
    assert isinstance(row, CommandRecord)
    return bool(granted), row


async def _create_or_adopt(
    client: EcsClient,
    store: LedgerStore,
    script: ScriptSource,
    run_id: str,
    intent: CommandRecord,
    clock: Clock,
) -> tuple[str, bool]:
    """Holding the claim: adopt the command if it already exists, else CreateCommand; then
    record its id and give the run's batches in the region that id."""
    region = intent.region
    found = await _find_script(client, script, region)
    created = found is None
    if found is not None:
        command_id = found.command_id
    else:
        try:
            command_id = await client.create_command(
                region,
                name=script.name,
                content=script.content,
                command_type=script.command_type,
                enable_parameter=script.enable_parameter,
                timeout_s=script.timeout_s,
                working_dir=script.working_dir,
                description=_description(script),
            )
        except CallError as exc:
            if exc.kind is not CallKind.AMBIGUOUS:
                raise
            # The answer was lost: the command may exist. Its name tells; never create twice.
            again = await _find_script(client, script, region)
            if again is None:
                raise
            command_id, created = again.command_id, True
    now = clock.time()
    await _apply(
        store,
        RecordCommand(replace(intent, run_id=run_id), command_id, now),
        SetRegionCommand(run_id, region, command_id, now),
    )
    log.info("command_ready", region=region, name=script.name, command_id=command_id)
    return command_id, created


def _description(script: ScriptSource) -> str:
    """CreateCommand's Description (at most 512 characters): who made it, from what."""
    origin = f" from {script.path}" if script.path else ""
    return f"created by fanout{origin} (sha256 {script.content_hash[:16]})"[:512]


async def fill_run_commands(
    client: EcsClient,
    store: LedgerStore,
    run: RunRecord,
    *,
    clock: Clock,
    claim_s: float,
) -> dict[str, tuple[str, bool]]:
    """Give every batch of a stored run its region's CommandId before anything is dispatched:
    a script's command is created (or adopted) where it is missing; batches stored without an
    id otherwise (by hand, in tests) take their source's. Region -> (CommandId, created now)."""
    ids = await anyio.to_thread.run_sync(store.command_ids, run.run_id)
    missing = sorted(region for region, command_id in ids.items() if command_id is None)
    if not missing:
        return {}
    source = source_from_options(run.options.get("source"), run.command_id)
    if isinstance(source, ScriptSource):
        return await ensure_commands(
            client,
            store,
            source,
            run.run_id,
            missing,
            account=run.account,
            clock=clock,
            claim_s=claim_s,
        )
    filled: dict[str, tuple[str, bool]] = {}
    for region in missing:
        if isinstance(source, CommandIdMap):
            filled[region] = (source.ids[region], False)
        elif isinstance(source, CommandIdSource):
            filled[region] = (source.command_id, False)
        else:  # a name is resolved before a run is stored: its batches always have ids
            raise ConfigError(f"run {run.run_id}: no CommandId stored for {region}")
    now = clock.time()
    await _apply(
        store, *(SetRegionCommand(run.run_id, r, cid, now) for r, (cid, _) in filled.items())
    )
    return filled

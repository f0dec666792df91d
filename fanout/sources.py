"""Where a run's command comes from: exactly one command source per run (DESIGN section 3). Pure.

On the real ECS API a CommandId belongs to one region: CreateCommand in cn-hangzhou and in
cn-beijing gives two ids. So a run over several regions needs one of:

- `CommandIdSource` — `--command-id c-...`: one id that must exist in every target region (or,
  with `provider`, the name of a public command such as `ACS-ECS-...`, valid in every region);
- `CommandIdMap` — `--command-id REGION=c-...` (repeatable): each region's own id;
- `CommandNameSource` — `--command-name NAME`: resolved per region with DescribeCommands(Name);
  with `provider`, a public command looked up with DescribeCommands(Provider, Name);
- `ScriptSource` — `--script FILE`: fanout creates the command in each target region with
  CreateCommand, named from a hash of what defines it (`fanout-<sha256 prefix>`), and reuses it.

`fanout.commands` resolves a source per region against the API and the ledger; this module only
describes sources, names scripts, stores and restores them, and checks what needs no call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fanout.aliyun.responses import Command
from fanout.errors import ConfigError
from fanout.validate import check_parameters

__all__ = [
    "DEFAULT_SCRIPT_TIMEOUT_S",
    "SCRIPT_NAME_PREFIX",
    "SCRIPT_TYPES",
    "CommandIdMap",
    "CommandIdSource",
    "CommandNameSource",
    "CommandSource",
    "ScriptSource",
    "check_script",
    "is_public_name",
    "label",
    "missing_regions",
    "parse_command_ids",
    "placeholders",
    "script_command",
    "source_from_options",
    "source_options",
    "type_for_path",
]

SCRIPT_TYPES = ("RunShellScript", "RunBatScript", "RunPowerShellScript")
_EXTENSION_TYPES = {
    ".sh": "RunShellScript",
    ".bash": "RunShellScript",
    ".bat": "RunBatScript",
    ".cmd": "RunBatScript",
    ".ps1": "RunPowerShellScript",
}
# The name of a command fanout creates: this prefix and the first 16 hex digits (64 bits) of the
# SHA-256 of what defines it. CreateCommand names may have 128 characters.
SCRIPT_NAME_PREFIX = "fanout-"
_HASH_CHARS = 16
# CreateCommand's default Timeout (the CreateCommand reference): sent explicitly, so a script
# given with and without `--command-timeout 60` is one command, not two.
DEFAULT_SCRIPT_TIMEOUT_S = 60
# Public (common) commands are named `ACS-...` (the InvokeCommand reference's note on them).
_PUBLIC_PREFIX = "ACS-"
# CreateCommand's custom parameters: `{{name}}`, spaces around the name ignored; names of
# letters, digits, `_` and `-`; `{{ACS::...}}` are built-in environment parameters, never
# user-defined (the CreateCommand reference, CommandContent).
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_\-]+|ACS::[A-Za-z0-9_]+)\s*\}\}")
# CreateCommand: at most 20 custom parameters in one command (the create-a-command guide).
_MAX_SCRIPT_PARAMETERS = 20
# Anything that looks like a placeholder, e.g. `{{.Names}}` in a docker format string.
_LOOKS_LIKE_PLACEHOLDER = re.compile(r"\{\{[^{}\n]{1,80}\}\}")


@dataclass(frozen=True, slots=True)
class CommandIdSource:
    """One CommandId for every region (a public command's name with `provider`)."""

    command_id: str
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class CommandIdMap:
    """Each region's own CommandId."""

    ids: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class CommandNameSource:
    """A command name, resolved per region (a public command's with `provider`)."""

    name: str
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class ScriptSource:
    """A script that fanout creates as a command in each target region (and reuses)."""

    content: str
    command_type: str = "RunShellScript"
    working_dir: str | None = None
    timeout_s: int = DEFAULT_SCRIPT_TIMEOUT_S
    enable_parameter: bool = False
    path: str | None = field(default=None, compare=False)  # where it was read, for messages

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of everything that defines the command: content, type, working
        directory, timeout and whether custom parameters are enabled."""
        identity = {
            "content": self.content,
            "type": self.command_type,
            "working_dir": self.working_dir or "",
            "timeout_s": self.timeout_s,
            "enable_parameter": self.enable_parameter,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    @property
    def name(self) -> str:
        """The command's name in every region: `fanout-` + 16 hex digits of `content_hash`."""
        return SCRIPT_NAME_PREFIX + self.content_hash[:_HASH_CHARS]

    @property
    def content_b64(self) -> str:
        """CommandContent as CreateCommand takes it."""
        return base64.b64encode(self.content.encode("utf-8")).decode("ascii")

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """The custom parameters CreateCommand will define (none unless enabled)."""
        return placeholders(self.content) if self.enable_parameter else ()

    def lookalikes(self) -> tuple[str, ...]:
        """`{{...}}` texts in a script whose parameters are not enabled: they are sent as
        they are (`{{.Names}}` in a docker format string is not a parameter)."""
        if self.enable_parameter:
            return ()
        return tuple(dict.fromkeys(_LOOKS_LIKE_PLACEHOLDER.findall(self.content)))


CommandSource = CommandIdSource | CommandIdMap | CommandNameSource | ScriptSource


def is_public_name(command_id: str) -> bool:
    """True for a public command's name (`ACS-...`), which is valid in every region."""
    return command_id.startswith(_PUBLIC_PREFIX)


def type_for_path(path: str) -> str:
    """The command type a script file's extension implies (RunShellScript when it implies none)."""
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = "." + base.rsplit(".", 1)[1].lower() if "." in base.strip(".") else ""
    return _EXTENSION_TYPES.get(suffix, "RunShellScript")


def placeholders(content: str) -> tuple[str, ...]:
    """The custom parameter names of a command text, in first-use order (built-ins excluded)."""
    names: dict[str, None] = {}
    for match in _PLACEHOLDER.finditer(content):
        if not match.group(1).startswith("ACS::"):
            names[match.group(1)] = None
    return tuple(names)


def label(source: CommandSource) -> str:
    """How a run names its command (`runs.command_id`, `fanout runs`, `status`)."""
    if isinstance(source, CommandIdSource):
        return source.command_id
    if isinstance(source, CommandIdMap):
        return ",".join(f"{region}={cid}" for region, cid in sorted(source.ids.items()))
    if isinstance(source, CommandNameSource):
        return source.name
    return source.name


def missing_regions(source: CommandSource, regions: Sequence[str]) -> list[str]:
    """The target regions a `CommandIdMap` has no id for (none for the other sources)."""
    if not isinstance(source, CommandIdMap):
        return []
    return sorted({r for r in regions if r not in source.ids})


def source_options(source: CommandSource) -> dict[str, object]:
    """The source as stored with a run (JSON), so resume and retry use the same command."""
    if isinstance(source, CommandIdSource):
        return {"kind": "id", "command_id": source.command_id, "provider": source.provider}
    if isinstance(source, CommandIdMap):
        return {"kind": "map", "ids": dict(sorted(source.ids.items()))}
    if isinstance(source, CommandNameSource):
        return {"kind": "name", "name": source.name, "provider": source.provider}
    return {
        "kind": "script",
        "content": source.content,
        "command_type": source.command_type,
        "working_dir": source.working_dir,
        "timeout_s": source.timeout_s,
        "enable_parameter": source.enable_parameter,
        "path": source.path,
    }


def source_from_options(stored: object, command_id: str) -> CommandSource:
    """The source stored with a run; a run stored before sources existed used `command_id`."""
    data = stored if isinstance(stored, Mapping) else {}
    kind = data.get("kind")
    if kind == "map" and isinstance(data.get("ids"), Mapping):
        return CommandIdMap({str(k): str(v) for k, v in data["ids"].items()})
    if kind == "name":
        return CommandNameSource(str(data["name"]), _optional(data.get("provider")))
    if kind == "script":
        return ScriptSource(
            content=str(data["content"]),
            command_type=str(data["command_type"]),
            working_dir=_optional(data.get("working_dir")),
            timeout_s=int(data["timeout_s"]),
            enable_parameter=bool(data["enable_parameter"]),
            path=_optional(data.get("path")),
        )
    if kind == "id":
        return CommandIdSource(str(data["command_id"]), _optional(data.get("provider")))
    return CommandIdSource(command_id)


def _optional(value: object) -> str | None:
    """A stored optional string."""
    return None if value is None else str(value)


def parse_command_ids(items: Sequence[str]) -> CommandIdSource | CommandIdMap:
    """`--command-id` values: one `c-...` for every region, or `REGION=c-...` items (not both)."""
    pairs = [item.partition("=") for item in items]
    mapped = [p for p in pairs if p[1]]
    if not mapped:
        if len(items) > 1:
            raise ConfigError(
                "--command-id given twice: use one id for every region, or REGION=c-... per region"
            )
        return CommandIdSource(items[0].strip())
    if len(mapped) != len(pairs):
        raise ConfigError("--command-id: give either one id or REGION=c-... items, not both")
    ids: dict[str, str] = {}
    for raw_region, _, raw_id in mapped:
        region, command_id = raw_region.strip(), raw_id.strip()
        if not region or not command_id:
            raise ConfigError(f"--command-id {region}={command_id}: expected REGION=c-...")
        if region in ids and ids[region] != command_id:
            raise ConfigError(f"--command-id: {region} given twice with different ids")
        ids[region] = command_id
    return CommandIdMap(ids)


def script_command(script: ScriptSource, region: str) -> Command:
    """The command CreateCommand makes of `script` (to validate parameters before it exists)."""
    return Command(
        command_id=script.name,
        name=script.name,
        type=script.command_type,
        content=script.content,
        enable_parameter=script.enable_parameter,
        parameter_names=script.parameter_names,
        timeout_s=script.timeout_s,
        working_dir=script.working_dir or "",
        description=f"{script.name} in {region}",
    )


def check_script(
    script: ScriptSource, parameters: Mapping[str, str] | None, *, content_limit_bytes: int
) -> tuple[str, ...]:
    """What a script's command needs before any call: content, at most 20 custom parameters,
    and the parameter rules against the command it will be (P1-P6, S11, the size limit).
    Returns the `{{...}}` texts that will be sent as they are (parameters not enabled)."""
    where = script.path or "--script"
    if not script.content.strip():
        raise ConfigError(f"{where}: the script is empty")
    if script.command_type not in SCRIPT_TYPES:
        raise ConfigError(f"--type {script.command_type}: one of {', '.join(SCRIPT_TYPES)}")
    if parameters and not script.enable_parameter:
        raise ConfigError(
            f"{where}: parameters given but the script's custom parameters are not enabled: add "
            "--enable-parameter (its {{name}} placeholders become parameters) (spec P6)"
        )
    if len(script.parameter_names) > _MAX_SCRIPT_PARAMETERS:
        raise ConfigError(
            f"{where}: {len(script.parameter_names)} custom parameters, a command may define at "
            f"most {_MAX_SCRIPT_PARAMETERS} (CreateCommand)"
        )
    check_parameters(
        script_command(script, "every region"),
        parameters,
        content_limit_bytes=content_limit_bytes,
    )
    return script.lookalikes()

"""Cloud Assistant commands: the per-region catalogue (the actions on it: `command_actions`).

How the real service behaves here, and where that is written:
- A CommandId belongs to one region: CreateCommand in two regions gives two ids, and each
  region's demo commands have their own id (`demo_command_id`). InvokeCommand and
  DescribeCommands in one region never see another region's commands. (InvokeCommand and
  CreateCommand references: "the region ID of the command"; issue 13.)
- Public (common) commands are listed by DescribeCommands only when `Provider` is given, and
  then only theirs: `AlibabaCloud` lists every common command of Alibaba Cloud, a provider such
  as `AlibabaCloud.ECS.GuestOS` only its own; InvokeCommand runs one by its name (SDK model
  `DescribeCommandsRequest.provider`; InvokeCommand reference, CommandId; facts 10 [1][11]).
  The two here are examples: the real catalogue differs.
- DescribeCommands' `Name`: without `Provider`, an exact name or a prefix ending in `*`; with
  it, fuzzy (a substring). (SDK model `DescribeCommandsRequest.name`.)
- CreateCommand: Base64 content at most 18 KB (`content_limit_bytes`), name at most 128
  characters, description 512, working directory 200, custom parameters from `{{name}}` only
  when enabled (CreateCommand reference; the create-a-command guide, updated 2026-04); at most
  500 commands kept per region by default, `max-axt-command-count` (the guide: 500 to 50 000).
- DeleteCommand: `InvalidCmdId.NotFound` (404) for an unknown id, `InvalidStatus.CmdIdInUse`
  (403) while an invocation of it is still pending, running or scheduled, `Operation.Forbidden`
  (403) for a public command (DeleteCommand reference, error codes).
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from fanout.emulator.config import DEMO_COMMAND_NAME, DEMO_PARAM_COMMAND_NAME, demo_command_id

__all__ = [
    "COMMAND_TYPES",
    "DEMO_COMMAND_NAME",
    "DEMO_PARAM_COMMAND_NAME",
    "MAX_COMMANDS_PER_REGION",
    "PUBLIC_COMMANDS",
    "Command",
    "CommandCatalog",
    "demo_command_id",
    "parameter_names",
]

COMMAND_TYPES = ("RunShellScript", "RunBatScript", "RunPowerShellScript")
MAX_COMMANDS_PER_REGION = 500  # the guide's default command quota per region
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# `{{name}}` placeholders; `{{ACS::...}}` are built-in environment parameters, never user-defined.
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_\-]+|ACS::[A-Za-z0-9_]+)\s*\}\}")
_DEFAULT_TIMEOUT_S = 60  # CreateCommand's documented default
# Alibaba Cloud's own providers: `Provider=AlibabaCloud` lists all of them.
_ALIBABA_PROVIDER = "AlibabaCloud"


def parameter_names(content: str) -> tuple[str, ...]:
    """The custom parameter names of a command text, in first-use order (built-ins excluded)."""
    names: dict[str, None] = {}
    for match in _PLACEHOLDER.finditer(content):
        if not match.group(1).startswith("ACS::"):
            names[match.group(1)] = None
    return tuple(names)


class Command:
    """A Cloud Assistant command: one created in a region, or a public one."""

    __slots__ = (
        "category",
        "command_id",
        "content_b64",
        "created_s",
        "description",
        "enable_parameter",
        "name",
        "parameter_definitions",
        "parameter_names",
        "provider",
        "timeout_s",
        "type",
        "working_dir",
    )

    def __init__(
        self,
        command_id: str,
        name: str,
        content: str,
        *,
        type_: str = "RunShellScript",
        enable_parameter: bool = False,
        timeout_s: int = _DEFAULT_TIMEOUT_S,
        working_dir: str = "",
        description: str = "",
        created_s: float = 0.0,
        provider: str = "",
        category: str = "",
        parameter_definitions: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.command_id = command_id
        self.name = name
        self.type = type_
        self.content_b64 = base64.b64encode(content.encode()).decode("ascii")
        self.enable_parameter = enable_parameter
        self.parameter_names = parameter_names(content) if enable_parameter else ()
        self.timeout_s = timeout_s
        self.working_dir = working_dir
        self.description = description
        self.created_s = created_s
        self.provider = provider
        self.category = category
        self.parameter_definitions = tuple(parameter_definitions)

    @property
    def content(self) -> str:
        """The command text, decoded."""
        return base64.b64decode(self.content_b64).decode("utf-8", errors="replace")

    @property
    def public(self) -> bool:
        """A common command of a provider (not one the account created)."""
        return bool(self.provider)


def _public(
    name: str, provider: str, content: str, definitions: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "provider": provider,
        "content": content,
        "definitions": definitions,
    }


# Example public commands (the real catalogue is larger and differs): one with parameters, one
# without, under two providers. ParameterDefinitions as DescribeCommands returns them.
PUBLIC_COMMANDS: tuple[dict[str, Any], ...] = (
    _public(
        "ACS-ECS-DemoInstallPackage-linux.sh",
        "AlibabaCloud",
        '#!/bin/bash\necho "{{action}} {{packageName}} on $(hostname)"\n',
        (
            {
                "ParameterName": "packageName",
                "Required": True,
                "DefaultValue": "",
                "Description": "The package",
            },
            {
                "ParameterName": "action",
                "Required": False,
                "DefaultValue": "install",
                "PossibleValues": {"PossibleValue": ["install", "remove"]},
                "Description": "install or remove",
            },
        ),
    ),
    _public(
        "ACS-ECS-DemoDiagnose-linux.sh",
        "AlibabaCloud.ECS.GuestOSDiagnose",
        '#!/bin/bash\necho "diagnosed $(hostname): ok"\n',
        (),
    ),
)


class CommandCatalog:
    """The commands of every region: the account's own (the demo ones first, each region with
    its own ids) and the public ones (listed only with Provider)."""

    def __init__(self, regions: Iterable[str], now_s: float, rng: random.Random) -> None:
        self._rng = rng
        self._own: dict[str, dict[str, Command]] = {}
        self._public: dict[str, dict[str, Command]] = {}
        for region in regions:
            self._own[region] = {}
            for command in _demo_commands(region, now_s):
                self.add(region, command)
            self._public[region] = {}
            for entry in PUBLIC_COMMANDS:
                command = Command(
                    self.new_id(),
                    entry["name"],
                    entry["content"],
                    enable_parameter=bool(entry["definitions"]),
                    description=f"Example common command of {entry['provider']}",
                    created_s=now_s,
                    provider=entry["provider"],
                    category="Demo",
                    parameter_definitions=entry["definitions"],
                )
                self._public[region][command.command_id] = command

    def add(self, region: str, command: Command) -> None:
        """Register a command the account created in a region."""
        self._own[region][command.command_id] = command

    def remove(self, region: str, command_id: str) -> None:
        """Forget a command the account created (DeleteCommand)."""
        self._own[region].pop(command_id, None)

    def get(self, region: str, command_id: str) -> Command | None:
        """The command InvokeCommand's CommandId names in the region: one of the account's by
        id, or a public one by id or by name."""
        own = self._own[region].get(command_id)
        if own is not None:
            return own
        public = self._public[region]
        found = public.get(command_id)
        if found is not None:
            return found
        return next((c for c in public.values() if c.name == command_id), None)

    def in_region(self, region: str) -> Sequence[Command]:
        """The account's own commands of the region, oldest first."""
        return list(self._own[region].values())

    def all_public_in(self, region: str) -> Sequence[Command]:
        """Every public command of the region, whatever its provider."""
        return list(self._public[region].values())

    def public_in(self, region: str, provider: str) -> Sequence[Command]:
        """The public commands `Provider=provider` lists in the region."""
        return [
            c
            for c in self._public[region].values()
            if c.provider == provider
            or (provider == _ALIBABA_PROVIDER and c.provider.startswith(_ALIBABA_PROVIDER))
        ]

    def new_id(self) -> str:
        """A fresh CommandId in the real format: `c-` + 17 lowercase alphanumerics."""
        return "c-" + "".join(self._rng.choices(_ID_ALPHABET, k=17))

    def __iter__(self) -> Iterator[str]:
        return iter(self._own)


def _demo_commands(region: str, now_s: float) -> list[Command]:
    """The two demo commands, with this region's own ids."""
    return [
        Command(
            demo_command_id(region),
            DEMO_COMMAND_NAME,
            '#!/bin/bash\necho "hello from $(hostname)"\n',
            description="fanout demo command: prints a greeting",
            created_s=now_s,
        ),
        Command(
            demo_command_id(region, DEMO_PARAM_COMMAND_NAME),
            DEMO_PARAM_COMMAND_NAME,
            '#!/bin/bash\necho "deploying {{name}} version {{version}} on $(hostname)"\n',
            enable_parameter=True,
            description="fanout demo command with parameters name and version",
            created_s=now_s,
        ),
    ]

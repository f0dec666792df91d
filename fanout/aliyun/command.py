"""What one InvokeCommand sends besides the instances and the ClientToken: the command and its options.

`CommandSpec` is the one description of InvokeCommand's options in fanout: the CLI, the config
file's `[rollout]` table and the Python API build it, the ledger stores it (secret values apart),
and the client turns it into the wire parameters (`wire.invoke_command_params`). A new
InvokeCommand parameter is added here, in `wire.invoke_command_params` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["SPEC_OPTIONS", "CommandSpec"]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """The command of a run and InvokeCommand's options (None: not sent, the API's default)."""

    command_id: str
    parameters: Mapping[str, str] | None = None
    timed: bool | None = None
    frequency: str | None = None
    repeat_mode: str | None = None
    timeout_s: int | None = None
    username: str | None = None
    working_dir: str | None = None

    def options(self) -> dict[str, object]:
        """The options besides the command and its parameters, as stored with a run."""
        return {name: getattr(self, name) for name in SPEC_OPTIONS}


# The option fields of CommandSpec (everything but command_id and parameters), in wire order.
SPEC_OPTIONS = ("timed", "frequency", "repeat_mode", "timeout_s", "username", "working_dir")

"""The `fanout` command group: every sub-command attached, exit codes in the help.

The commands live by what they do: `run` (plan, run, resume, demo), `control` (status, runs,
report, quota, retry, stop); they share `options` (flags as typed values, settings, ledger,
credentials), `inputs` (flags and the `[rollout]` table into a `RunRequest`), `views` (output)
and `exits` (errors into one line and an exit code). This module only assembles them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from fanout import allocator
from fanout.cli.exits import EXIT_CODES, one_line
from fanout.cli.pipes import keep_writing_after_a_closed_pipe
from fanout.errors import ExitCode
from fanout.logs import configure_logging

__all__ = ["main"]

# Each command and the module that defines it, imported when the command is run (or `--help`
# lists them all): `fanout status` loads the ledger and the report's rendering, not the HTTP
# client, the runner and the emulator (issue 18: a person waits for it).
_COMMANDS = {
    "commands": "fanout.cli.commands:commands_command",
    "demo": "fanout.cli.run:demo_command",
    "doctor": "fanout.cli.doctor:doctor_command",
    "emulator": "fanout.emulator.cli:emulator_command",
    "plan": "fanout.cli.run:plan_command",
    "quota": "fanout.cli.control:quota_command",
    "report": "fanout.cli.control:report_command",
    "resume": "fanout.cli.run:resume_command",
    "retry": "fanout.cli.control:retry_command",
    "rollback": "fanout.cli.rollback:rollback_command",
    "run": "fanout.cli.run:run_command",
    "runs": "fanout.cli.status:runs_command",
    "simulate": "fanout.cli.simulate:simulate_command",
    "status": "fanout.cli.status:status_command",
    "stop": "fanout.cli.control:stop_command",
}

# Commands whose process lives as long as a rollout: `fanout.allocator` tunes their malloc. The
# others (status, report, ...) allocate once and exit; trimming would only cost them time.
_LONG_RUNNING = frozenset({"demo", "emulator", "resume", "retry", "rollback", "run", "simulate"})


class _Fanout(click.Group):
    """The `fanout` group: click's own errors as one `fanout: error:` line, as fanout's are.

    Click prints a usage error as three or four lines (usage, a hint, a blank line, the error);
    a script reading stderr wants one. The full usage stays in `--help`."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        keep_writing_after_a_closed_pipe()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            _usage_error(exc)
        except click.Abort:  # Ctrl-C or end of input at a prompt: nothing was sent
            click.echo("fanout: error: interrupted: nothing was sent", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, none of them imported."""
        return sorted({*_COMMANDS, *self.commands})

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The command to run; one that drives a rollout for hours (or serves the emulator)
        first has the C allocator give freed memory back (before any thread starts)."""
        name, command, rest = super().resolve_command(ctx, args)
        if name in _LONG_RUNNING:
            allocator.tune()
        return name, command, rest

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, its module imported on first use (None: no such command)."""
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            module, name = _COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module), name)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


def _usage_error(exc: click.ClickException) -> NoReturn:
    """One line for click's error, naming the command whose `--help` has the full usage."""
    context = getattr(exc, "ctx", None)
    names: list[str] = []
    while isinstance(context, click.Context) and context.parent is not None:
        names.insert(0, context.info_name or "")
        context = context.parent
    path = " ".join(["fanout", *names])
    hint = f" (see {path} --help)" if isinstance(exc, click.UsageError) else ""
    click.echo(f"fanout: error: {one_line(exc.format_message())}{hint}", err=True)
    sys.exit(exc.exit_code)


@click.group(
    cls=_Fanout,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
@click.version_option(package_name="fanout", prog_name="fanout")
def main() -> None:
    """fanout: run one Cloud Assistant command across a whole ECS fleet, safely.

    \b
    fanout plan --script deploy.sh --targets hosts.txt --region cn-hangzhou
    fanout run  --script deploy.sh --targets hosts.txt --region cn-hangzhou
    fanout status RUN_ID ; fanout resume RUN_ID ; fanout report RUN_ID
    fanout commands    (the commands fanout created per region; --prune)
    """
    configure_logging("warning")  # on stderr for every command; --log-level sets it again

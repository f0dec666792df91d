"""The `fanout` command group: every sub-command attached, exit codes in the help.

The commands live by what they do: `run` (plan, run, resume, demo), `control` (status, runs,
report, quota, retry, stop); they share `options` (flags as typed values, settings, ledger,
credentials), `inputs` (flags and the `[rollout]` table into a `RunRequest`), `views` (output)
and `exits` (errors into one line and an exit code). This module only assembles them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from fanout.cli.commands import COMMANDS as COMMAND_COMMANDS
from fanout.cli.control import COMMANDS as CONTROL_COMMANDS
from fanout.cli.doctor import doctor_command
from fanout.cli.exits import EXIT_CODES, one_line
from fanout.cli.pipes import keep_writing_after_a_closed_pipe
from fanout.cli.rollback import rollback_command
from fanout.cli.run import COMMANDS as RUN_COMMANDS
from fanout.cli.simulate import simulate_command
from fanout.emulator.cli import emulator_command
from fanout.errors import ExitCode
from fanout.logs import configure_logging

__all__ = ["main"]


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


for _command in (*RUN_COMMANDS, *CONTROL_COMMANDS, *COMMAND_COMMANDS):
    main.add_command(_command)
main.add_command(doctor_command)
main.add_command(rollback_command)
main.add_command(simulate_command)
main.add_command(emulator_command, name="emulator")

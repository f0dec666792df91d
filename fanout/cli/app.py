"""The `fanout` command group: every sub-command attached, exit codes in the help.

The commands live by what they do: `run` (plan, run, resume, demo), `control` (status, runs,
report, quota, retry, stop); they share `options` (flags as typed values, settings, ledger,
credentials), `inputs` (flags and the `[rollout]` table into a `RunRequest`), `views` (output)
and `exits` (errors into one line and an exit code). This module only assembles them.
"""

from __future__ import annotations

import click

from fanout.cli.commands import COMMANDS as COMMAND_COMMANDS
from fanout.cli.control import COMMANDS as CONTROL_COMMANDS
from fanout.cli.exits import EXIT_CODES
from fanout.cli.run import COMMANDS as RUN_COMMANDS
from fanout.emulator.cli import emulator_command

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.version_option(package_name="fanout", prog_name="fanout")
def main() -> None:
    """fanout: run one Cloud Assistant command across a whole ECS fleet, safely.

    \b
    fanout plan --script deploy.sh --targets hosts.txt --region cn-hangzhou
    fanout run  --script deploy.sh --targets hosts.txt --region cn-hangzhou
    fanout status RUN_ID ; fanout resume RUN_ID ; fanout report RUN_ID
    fanout commands    (the commands fanout created per region; --prune)
    """


for _command in (*RUN_COMMANDS, *CONTROL_COMMANDS, *COMMAND_COMMANDS):
    main.add_command(_command)
main.add_command(emulator_command, name="emulator")

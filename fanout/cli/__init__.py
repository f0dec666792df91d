"""The command line (console script `fanout`, also `python -m fanout`): parse, load settings,
call the library, map errors to the documented exit codes. `fanout.cli.app` assembles it."""

from __future__ import annotations

from fanout.cli.app import main

__all__ = ["main"]

"""The command line (console script `fanout`, also `python -m fanout`)."""

from __future__ import annotations

from fanout.cli.app import main

__all__ = ["main"]

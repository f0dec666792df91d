"""The installed distribution's version (`fanout.__version__`), read from its metadata.

A module of its own so that only asking for the version pays for importlib.metadata, which
scans the installed distributions' files.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("fanout")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

"""Times as the JSON contract writes them (pure): ISO-8601 UTC with `Z`, to the second."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso"]


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC (`2026-11-28T06:35:12Z`); None stays None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

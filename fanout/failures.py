"""Failures grouped by what they printed last (pure): is it one error 300 times, or 300 errors?

Two failed instances belong to one group when the tails of their outputs are the same once the
parts that differ from host to host are masked: instance ids, IP addresses, times, long hex
strings and long numbers. An instance that printed nothing is grouped by its error code and
reason instead. Every failed instance is in exactly one group; the largest group comes first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fanout.ledger.model import InstanceRecord

__all__ = ["TAIL_LINES", "FailureGroup", "group_failures", "normalise_tail"]

# The last lines of an output carry the error (a stack trace's last frame, a tool's last word);
# five keep enough context without splitting one failure into many groups.
TAIL_LINES = 5
# What differs between hosts failing the same way, masked before comparing (order matters:
# times before plain numbers, ids before hex).
_MASKS = (
    (re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?(\.\d+)?(Z|[+-]\d\d:?\d\d)?\b"), "<time>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(\.\d+)?\b"), "<time>"),
    (re.compile(r"\bi-[0-9a-z]{6,}\b"), "<instance>"),
    (re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b"), "<ip>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b(0x)?[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\b\d{4,}\b"), "<n>"),
)
_SPACES = re.compile(r"[ \t]+")


def normalise_tail(output: str | None, lines: int = TAIL_LINES) -> str:
    """The last `lines` non-blank lines of `output`, host-specific parts masked."""
    kept = [line.strip() for line in (output or "").splitlines() if line.strip()][-lines:]
    text = "\n".join(_SPACES.sub(" ", line) for line in kept)
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed instances whose outputs end the same way."""

    key: str  # the normalised tail, or "(no output) CODE: reason"
    instances: tuple[InstanceRecord, ...]  # in the order given
    sample: InstanceRecord  # one member, its full output shown

    @property
    def count(self) -> int:
        """How many instances failed this way."""
        return len(self.instances)


def _key(record: InstanceRecord) -> str:
    """The group key of one failed instance."""
    tail = normalise_tail(record.output)
    if tail:
        return tail
    why = record.reason or record.error_info or "no reason recorded"
    return f"(no output) {record.error_code or 'no error code'}: {normalise_tail(why)}"


def group_failures(records: Iterable[InstanceRecord]) -> list[FailureGroup]:
    """The records, grouped by normalised output tail, largest group first (then by key)."""
    groups: dict[str, list[InstanceRecord]] = {}
    for record in records:
        groups.setdefault(_key(record), []).append(record)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [
        FailureGroup(key, tuple(members), max(members, key=lambda r: len(r.output or "")))
        for key, members in ordered
    ]

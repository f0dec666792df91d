"""Target lists: parse, validate and dedupe `(region, instance id)` pairs. Pure: no I/O.

A target line is `i-xxx` (the default region), `region,i-xxx` or `region:i-xxx`. Blank lines and
`#` comments (a whole line, or trailing after whitespace) are ignored; CRLF line ends and a UTF-8
byte order mark are accepted. Validation is strict and covers the whole input before anything is
returned: the first bad line raises `TargetError` with its `file:line`. Duplicates are dropped and
reported, the first occurrence wins.

Built for a million lines: one compiled regular expression per line on the fast path, one shared
string per region, and line numbers kept in a compact `array` instead of a string per target.
"""

from __future__ import annotations

import gc
import re
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from fanout.errors import TargetError

__all__ = [
    "INSTANCE_ID_PATTERN",
    "REGION_PATTERN",
    "Duplicate",
    "Target",
    "TargetList",
    "merge_targets",
    "parse_instance_ids",
    "parse_target_text",
]

# Real ECS ids are "i-" + 20 characters; 8..32 also admits older and emulator-made ids.
INSTANCE_ID_PATTERN = re.compile(r"i-[a-z0-9]{8,32}")
# Lowercase words joined by '-': cn-hangzhou, ap-southeast-1, cn-shanghai-finance-1.
REGION_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

# why 64: the longest real region id is about 25 characters; anything much longer is junk.
_MAX_REGION_CHARS = 64
# why 40: enough to recognise the token, short enough to keep the error on one line.
_QUOTE_CHARS = 40

# why 1 MiB of text: big enough that splitting stays in C, small enough to bound the copies.
_BLOCK_CHARS = 1 << 20

# The whole accepted line in one expression; anything else goes to `_diagnose` for a message.
_FAST_LINE = re.compile(r"(?:([a-z][a-z0-9-]*)[ \t]*[,:][ \t]*)?(i-[a-z0-9]{8,32})")
_TRAILING_COMMENT = re.compile(r"\s#")
_SEPARATORS = re.compile(r"[,:]")
_BOM = "\ufeff"
_NO_REGION = "no region: give region,i-... or --region"
_EMPTY_FILE = "no targets (the file is empty or only comments)"


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """One instance in one region."""

    region: str
    instance_id: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A target given more than once: where it was repeated and where it was first seen."""

    target: Target
    location: str
    first_location: str


@dataclass(frozen=True, slots=True, eq=False)
class _Locations:
    """Where each target came from: segment prefixes (`file:`) plus one line number per target."""

    prefixes: tuple[str, ...] = ()
    starts: tuple[int, ...] = ()
    numbers: array[int] = field(default_factory=lambda: array("I"))

    def at(self, index: int) -> str:
        """The `file:line` (or `--instance-id #N`) of the target at `index`."""
        segment = bisect_right(self.starts, index) - 1
        return f"{self.prefixes[segment]}{self.numbers[index]}"


@dataclass(frozen=True, slots=True)
class TargetList:
    """Targets in first-seen order, duplicates dropped and reported."""

    targets: tuple[Target, ...]
    duplicates: tuple[Duplicate, ...] = ()
    locations: _Locations = field(default_factory=_Locations, compare=False, repr=False)

    def location(self, index: int) -> str:
        """Where `targets[index]` was given, e.g. `hosts.txt:12` or `--instance-id #2`."""
        return _locations_of(self).at(index)


def _locations_of(targets: TargetList) -> _Locations:
    """The list's locations; a list built by hand has none, so its targets are numbered `#N`."""
    if len(targets.locations.numbers) == len(targets.targets):
        return targets.locations
    return _Locations(("#",), (0,), array("I", range(1, len(targets.targets) + 1)))


def _quote(token: str | bytes) -> str:
    """The token repr-escaped (junk prints safely on one line) and cut to about 40 characters."""
    escaped = repr(token)
    if len(escaped) <= _QUOTE_CHARS + 2:  # + 2: the quotes
        return escaped
    return f"{escaped[:_QUOTE_CHARS]}..."


class _LineError(Exception):
    """What is wrong with one line; the caller adds the location."""


def _check_region(text: str, known_regions: frozenset[str]) -> str:
    """`text` if it is a well-formed, known region (an empty `known_regions` checks shape only)."""
    if len(text) > _MAX_REGION_CHARS or REGION_PATTERN.fullmatch(text) is None:
        raise _LineError(f"malformed region {_quote(text)}")
    if known_regions and text not in known_regions:
        raise _LineError(f"unknown region {_quote(text)}")
    return text


def _check_id(text: str) -> None:
    """Refuse anything that is not an ECS instance id."""
    if INSTANCE_ID_PATTERN.fullmatch(text) is None:
        hint = " (separate region and id with ',' or ':')" if " " in text or "\t" in text else ""
        raise _LineError(f"bad instance id {_quote(text)}{hint}")


def _check_fields(
    line: str, fields: list[str], default_region: str | None, known: frozenset[str]
) -> None:
    """Raise the first problem of `line`, split into its one or two fields."""
    if len(fields) == 1:
        _check_id(fields[0])
        if default_region is None:
            raise _LineError(_NO_REGION)
        return
    region, instance_id = fields
    if INSTANCE_ID_PATTERN.fullmatch(region) and REGION_PATTERN.fullmatch(instance_id):
        raise _LineError(f"region and id swapped in {_quote(line)}: write region,i-...")
    if not region:
        raise _LineError(f"missing region before the separator in {_quote(line)}")
    _check_region(region, known)
    _check_id(instance_id)


def _diagnose(line: str, default_region: str | None, known_regions: frozenset[str]) -> _LineError:
    """Why `line` (stripped, comment removed) did not match the accepted form."""
    fields = [f.strip() for f in _SEPARATORS.split(line)]
    if len(fields) > 2:
        return _LineError(f"too many fields in {_quote(line)} (expected region,i-... or i-...)")
    try:
        _check_fields(line, fields, default_region, known_regions)
    except _LineError as problem:
        return problem
    return _LineError(f"unexpected characters in {_quote(line)}")  # e.g. unusual whitespace


class _Builder:
    """Accumulates validated targets, dropping and recording duplicates."""

    __slots__ = (
        "_by_text",
        "_default",
        "_dups",
        "_ids",
        "_known",
        "_numbers",
        "_prefix",
        "_targets",
    )

    def __init__(self, prefix: str, default_region: str | None, known: frozenset[str]) -> None:
        """Start an empty list whose locations read `prefix + number`."""
        self._prefix = prefix
        self._default = default_region
        self._known = known
        self._ids: dict[str, dict[str, int]] = {}  # region -> instance id -> target index
        # Region text as written (None: a bare id) -> the validated region and its ids.
        self._by_text: dict[str | None, tuple[str, dict[str, int]]] = {}
        if default_region is not None:
            self._by_text[None] = (default_region, self._ids.setdefault(default_region, {}))
        self._targets: list[Target] = []
        self._numbers: array[int] = array("I")  # line number of each kept target
        self._dups: list[Duplicate] = []

    def feed(self, lines: Iterable[str], first_number: int = 1) -> None:
        """Add every target line (hot loop: locals only), raising the first problem."""
        fullmatch = _FAST_LINE.fullmatch
        by_text = self._by_text
        targets = self._targets
        keep_number = self._numbers.append
        for number, raw in enumerate(lines, first_number):
            line = raw.strip()
            if not line or line[0] == "#":
                continue
            if "#" in line:
                line = _drop_comment(line)
            match = fullmatch(line)
            if match is None:
                raise self._error(number, _diagnose(line, self._default, self._known))
            region_text, instance_id = match.groups()
            entry = by_text.get(region_text) or self._region(region_text, number)
            count = len(targets)
            first = entry[1].setdefault(instance_id, count)
            if first == count:
                targets.append(Target(entry[0], instance_id))
                keep_number(number)
            else:
                self._duplicate(Target(entry[0], instance_id), number, first)

    def _error(self, number: int, problem: _LineError) -> TargetError:
        """The problem at line `number`, located."""
        return TargetError(f"{self._prefix}{number}", str(problem))

    def _region(self, text: str | None, number: int) -> tuple[str, dict[str, int]]:
        """Validate a region seen for the first time (None: a bare id without `--region`)."""
        if text is None:
            raise self._error(number, _LineError(_NO_REGION))
        try:
            region = _check_region(text, self._known)
        except _LineError as problem:
            raise self._error(number, problem) from None
        entry = self._by_text[text] = (region, self._ids.setdefault(region, {}))
        return entry

    def _duplicate(self, target: Target, number: int, first: int) -> None:
        """Record a repeated target with both locations."""
        where = f"{self._prefix}{number}"
        self._dups.append(Duplicate(target, where, f"{self._prefix}{self._numbers[first]}"))

    def result(self) -> TargetList:
        """The targets in first-seen order with their duplicates and locations."""
        locations = _Locations((self._prefix,), (0,), self._numbers)
        return TargetList(tuple(self._targets), tuple(self._dups), locations)


def _lines(text: str) -> Iterator[str]:
    """The lines of `text`, split a block at a time so a huge input is not copied whole."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + _BLOCK_CHARS)
        if end < 0:
            end = len(text)
        yield from text[start:end].split("\n")
        start = end + 1


def _drop_comment(line: str) -> str:
    """`line` without a trailing `#` comment (one that follows whitespace)."""
    comment = _TRAILING_COMMENT.search(line)
    return line if comment is None else line[: comment.start()].rstrip()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big list is built, then restore it.

    why: a million new `Target` objects trigger hundreds of collections that find no cycles
    (targets hold only strings) and cost a fifth of the parse time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _known_default(
    default_region: str | None, known_regions: frozenset[str], location: str
) -> str | None:
    """Validate the default region (from `--region`) once, up front."""
    if default_region is None:
        return None
    try:
        return _check_region(default_region, known_regions)
    except _LineError as problem:
        raise TargetError(location, str(problem)) from None


def _first_nul(text: str) -> tuple[int, int, str] | None:
    """(line number, line offset, problem) of the first NUL character, which marks binary junk."""
    index = text.find("\x00")
    if index < 0:
        return None
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    line = text[start:] if end < 0 else text[start:end]
    number = text.count("\n", 0, index) + 1
    return number, start, f"binary data (NUL byte), not a text line: {_quote(line)}"


def _decode(data: bytes | str) -> tuple[str, tuple[int, str] | None]:
    """The readable text before the first undecodable or binary line, and that line's problem."""
    bad: tuple[int, str] | None = None
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            start = data.rfind(b"\n", 0, exc.start) + 1
            end = data.find(b"\n", exc.start)
            raw = data[start:] if end < 0 else data[start:end]
            bad = (
                data.count(b"\n", 0, exc.start) + 1,
                f"not UTF-8 text (a binary file?): {_quote(raw)}",
            )
            text = data[:start].decode("utf-8")  # every line before the bad one decodes
    else:
        text = data
    nul = _first_nul(text)
    if nul is None:
        return text, bad
    number, start, problem = nul
    return text[:start], (number, problem)


def parse_target_text(
    data: bytes | str,
    *,
    source: str,
    default_region: str | None,
    known_regions: frozenset[str],
) -> TargetList:
    """Parse a whole target file (or stdin); `source` names it in errors (`source:line`)."""
    default = _known_default(default_region, known_regions, "--region")
    text, bad = _decode(data)
    if text.startswith(_BOM):
        text = text[1:]
    builder = _Builder(f"{source}:", default, known_regions)
    with _gc_paused():
        builder.feed(_lines(text))
    if bad is not None:
        raise TargetError(f"{source}:{bad[0]}", bad[1])
    result = builder.result()
    if not result.targets:
        raise TargetError(source, _EMPTY_FILE)
    return result


def parse_instance_ids(
    ids: Sequence[str], *, default_region: str | None, known_regions: frozenset[str]
) -> TargetList:
    """Parse `--instance-id` values (`i-...`, `region:i-...` or `region,i-...`); may be empty."""
    default = _known_default(default_region, known_regions, "--region")
    builder = _Builder("--instance-id #", default, known_regions)
    for number, value in enumerate(ids, 1):
        line = value.strip()
        if not line or "#" in line or "\x00" in line:  # a flag value is never a comment
            where = f"--instance-id #{number}"
            raise TargetError(where, f"bad instance id {_quote(value)}")
        builder.feed((line,), number)
    return builder.result()


class _Merger:
    """Concatenates target lists, keeping the first occurrence of each target."""

    __slots__ = ("dups", "numbers", "prefixes", "seen", "starts", "targets")

    def __init__(self) -> None:
        """Start empty."""
        self.seen: dict[str, dict[str, int]] = {}  # region -> instance id -> merged index
        self.targets: list[Target] = []
        self.dups: list[Duplicate] = []
        self.prefixes: list[str] = []
        self.starts: list[int] = []
        self.numbers: array[int] = array("I")

    def where(self, target: Target) -> str:
        """The location of the kept occurrence of `target`."""
        index = self.seen[target.region][target.instance_id]
        return self.result_locations().at(index)

    def result_locations(self) -> _Locations:
        """The locations of the targets kept so far."""
        return _Locations(tuple(self.prefixes), tuple(self.starts), self.numbers)

    def add(self, part: TargetList) -> None:
        """Append the targets of `part` not seen before and record its duplicates."""
        locations = _locations_of(part)
        bounds = (*locations.starts, len(part.targets))
        for segment, prefix in enumerate(locations.prefixes):
            self.prefixes.append(prefix)
            self.starts.append(len(self.targets))
            for index in range(bounds[segment], bounds[segment + 1]):
                self._take(part.targets[index], prefix, locations.numbers[index])
        for dup in part.duplicates:
            self.dups.append(Duplicate(dup.target, dup.location, self.where(dup.target)))

    def _take(self, target: Target, prefix: str, number: int) -> None:
        """Keep `target` unless an earlier list gave it already."""
        ids = self.seen.setdefault(target.region, {})
        first = ids.get(target.instance_id)
        if first is None:
            ids[target.instance_id] = len(self.targets)
            self.targets.append(target)
            self.numbers.append(number)
        else:
            here = f"{prefix}{number}"
            self.dups.append(Duplicate(target, here, self.result_locations().at(first)))


def merge_targets(*lists: TargetList) -> TargetList:
    """Concatenate target lists in order; a target already given earlier is reported and dropped."""
    filled = [part for part in lists if part.targets or part.duplicates]
    if len(filled) == 1:
        return filled[0]  # nothing to merge: skip a pass over a possibly huge list
    merger = _Merger()
    for part in filled:
        merger.add(part)
    return TargetList(tuple(merger.targets), tuple(merger.dups), merger.result_locations())

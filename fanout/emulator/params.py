"""Reading typed request parameters (flattened lists, booleans, ints) and paging tokens."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from fanout.emulator.wire import ApiFault, invalid_parameter, missing_parameter

__all__ = ["PageRequest", "Params", "decode_token", "encode_token", "page_request", "take_page"]

_TOKEN_PREFIX = "fo"  # noqa: S105 - a paging-token marker, not a secret
_T = TypeVar("_T")


class Params:
    """The decoded parameters of one request, with typed getters that raise API errors."""

    __slots__ = ("_repeated", "raw")

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw
        self._repeated: dict[str, list[str]] = {}

    def get(self, name: str, default: str = "") -> str:
        """A string parameter ("" when absent)."""
        return self.raw.get(name, default)

    def required(self, name: str) -> str:
        """A parameter that must be present and non-empty (else MissingParameter)."""
        value = self.raw.get(name, "")
        if not value:
            raise missing_parameter(name)
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        """`true`/`false` in any case (the Python SDK sends `True`/`False`)."""
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise invalid_parameter(name, "It must be true or false.")
        return lowered == "true"

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        """A decimal int within `low..high` (else InvalidParameter)."""
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        if not re.fullmatch(r"-?\d{1,12}", value):
            raise invalid_parameter(name, "It must be an integer.")
        number = int(value)
        if not low <= number <= high:
            raise invalid_parameter(name, f"It must be within {low}..{high}.")
        return number

    def repeated(self, name: str) -> list[str]:
        """A flattened list `Name.1`, `Name.2`, ... in N order (duplicates dropped)."""
        cached = self._repeated.get(name)
        if cached is None:
            cached = self._repeated[name] = self._collect(name)
        return list(cached)

    def _collect(self, name: str) -> list[str]:
        """Scan the parameters once for `Name.N`."""
        prefix = f"{name}."
        raw = self.raw
        # Hot path (InstanceId.1..50): `Name.1`, `Name.2`, ... in a row and nothing else.
        in_a_row: list[str] = []
        while (value := raw.get(f"{prefix}{len(in_a_row) + 1}")) is not None:
            in_a_row.append(value)
        if len(in_a_row) == sum(1 for key in raw if key.startswith(prefix)):
            return list(dict.fromkeys(value for value in in_a_row if value))
        numbered: list[tuple[int, str]] = []
        for key, value in raw.items():
            if key.startswith(prefix) and key[len(prefix) :].isdigit():
                numbered.append((int(key[len(prefix) :]), value))
        numbered.sort()
        return list(dict.fromkeys(value for _, value in numbered if value))

    def tags(self, name: str = "Tag") -> list[tuple[str, str]]:
        """`Tag.N.Key` / `Tag.N.Value` pairs in N order."""
        pattern = re.compile(rf"^{re.escape(name)}\.(\d+)\.Key$")
        found: list[tuple[int, str, str]] = []
        for key, value in self.raw.items():
            match = pattern.match(key)
            if match:
                number = match.group(1)
                found.append((int(number), value, self.raw.get(f"{name}.{number}.Value", "")))
        found.sort()
        return [(key, value) for _, key, value in found]


def encode_token(kind: str, *position: int) -> str:
    """An opaque NextToken naming where the next page starts."""
    text = f"{_TOKEN_PREFIX}{kind}:" + ".".join(str(p) for p in position)
    return text.encode().hex()


def decode_token(kind: str, token: str, size: int) -> tuple[int, ...] | None:
    """The position in a NextToken made by `encode_token` (None for no token)."""
    if not token:
        return None
    try:
        text = bytes.fromhex(token).decode()
        label, _, body = text.partition(":")
        position = tuple(int(part) for part in body.split("."))
    except ValueError as exc:
        raise _bad_token() from exc
    if label != f"{_TOKEN_PREFIX}{kind}" or len(position) != size or min(position) < 0:
        raise _bad_token()
    return position


def _bad_token() -> ApiFault:
    return invalid_parameter("NextToken", "Use the NextToken value of the previous response.")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page a Describe call asks for: a NextToken position, or (deprecated) a page number."""

    size: int  # MaxResults, or PageSize
    start: tuple[int, ...] | None  # where a NextToken says the page starts
    skip: int  # items before the page (PageNumber paging)
    number: int  # PageNumber as answered


def page_request(
    params: Params, kind: str, positions: int, default: int, low: int, high: int
) -> PageRequest:
    """MaxResults + NextToken; or, without a NextToken, the deprecated PageNumber + PageSize
    that every Describe action still takes (facts 2.1, 2.2, 10: "will soon be taken offline")."""
    token = params.get("NextToken")
    if token or not (params.get("PageNumber") or params.get("PageSize")):
        size = params.integer("MaxResults", default, low, high)
        return PageRequest(size, decode_token(kind, token, positions), 0, 1)
    size = params.integer("PageSize", params.integer("MaxResults", default, low, high), low, high)
    number = params.integer("PageNumber", 1, 1, 10**9)
    return PageRequest(size, None, (number - 1) * size, number)


def take_page(
    items: Iterable[tuple[tuple[int, ...], _T]], max_results: int, skip: int = 0
) -> tuple[list[_T], tuple[int, ...] | None]:
    """After `skip` items, the next `max_results` and the position of the one after them (None
    when none is left)."""
    page: list[_T] = []
    for position, item in items:
        if skip:
            skip -= 1
            continue
        if len(page) == max_results:
            return page, position
        page.append(item)
    return page, None

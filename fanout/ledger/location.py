"""Ledger locations: a SQLite path, a `sqlite:` URL, or a `postgresql://` URL. Pure.

- a plain path (`~` expanded when opened): `ledger.sqlite3`, `/var/lib/fanout/ledger.sqlite3`;
- `sqlite:///abs/path` is the absolute `/abs/path` (as in a `file:///` URL; `sqlite:////abs/path`,
  SQLAlchemy's absolute form, is the same file) and `sqlite:relative/path` a relative one;
  `?mode=ro` opens it read-only. A `sqlite:` URL names no host and is never in memory;
- `postgresql://USER:PASSWORD@HOST:PORT/DB` (or `postgres://`), checked before any connection.

A URL may carry a password (`user:password@host` or `?password=`); `redact_location` is the one
way a location is shown in any message, so the password never is (I5), even in a URL that does
not parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from fanout.errors import ConfigError

__all__ = [
    "Location",
    "is_postgres_location",
    "location_password",
    "parse_location",
    "redact_location",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_SCHEME = "sqlite:"
_HIDDEN = "***"
# Anything that starts like a URL (`scheme://`): a scheme fanout does not know is refused rather
# than taken for a relative path named "ftp:".
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# The password of a URL that does not parse: between the first ':' after `//` and the last '@'.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:)(.*)(@[^@]*)$")
_SQLITE_MODES = frozenset({"ro", "rw", "rwc"})


@dataclass(frozen=True, slots=True)
class Location:
    """Where a ledger is: a SQLite file (`path`, maybe read-only) or a PostgreSQL URL (`url`)."""

    kind: str  # "sqlite" | "postgres"
    path: str | None = None  # the SQLite file as given (relative or absolute, `~` not expanded)
    read_only: bool = False  # `?mode=ro`: never written
    url: str | None = None  # the PostgreSQL URL, password included (never shown)

    @property
    def shown(self) -> str:
        """This location for a message (a PostgreSQL URL without its password)."""
        return self.path if self.path is not None else redact_location(self.url or "")


def is_postgres_location(location: str) -> bool:
    """True for a `postgresql://` (or `postgres://`) URL."""
    return location.lower().startswith(_POSTGRES_SCHEMES)


def parse_location(location: str) -> Location:
    """The ledger a location names, or `ConfigError` saying why it names none."""
    if is_postgres_location(location):
        return _postgres(location)
    if location.lower().startswith(_SQLITE_SCHEME):
        return _sqlite_url(location)
    if _URL_START.match(location):
        scheme = location.split(":", 1)[0]
        raise ConfigError(
            f"ledger URL scheme {scheme!r} is not known: give a path, sqlite:///abs/path, "
            "sqlite:relative/path or postgresql://..."
        )
    if not location:
        raise ConfigError("the ledger location is empty")
    return Location("sqlite", path=location)


def _postgres(url: str) -> Location:
    """A PostgreSQL URL whose parts parse (host, port); the server is not contacted here."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsing it raises ValueError when it is not a port number
    except ValueError as exc:
        raise ConfigError(f"ledger {redact_location(url)}: not a valid URL ({exc})") from None
    if parts.fragment:
        raise ConfigError(f"ledger {redact_location(url)}: a URL fragment (#...) is not allowed")
    return Location("postgres", url=url)


def _sqlite_url(url: str) -> Location:
    """`sqlite:///abs`, `sqlite:////abs`, `sqlite:relative`, each with an optional `?mode=ro`."""
    rest = url[len(_SQLITE_SCHEME) :]
    rest, _, query = rest.partition("?")
    if rest.startswith("//") and not rest.startswith("///"):
        raise ConfigError(
            f"ledger {url}: a sqlite: URL names a file, not a host: write sqlite:///abs/path "
            "or sqlite:relative/path"
        )
    path = "/" + rest.lstrip("/") if rest.startswith("///") else rest
    if path in ("", "/") or path.endswith("/"):
        raise ConfigError(f"ledger {url}: names no file (an in-memory ledger would be lost)")
    read_only = False
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "mode" or value not in _SQLITE_MODES:
            raise ConfigError(
                f"ledger {url}: unknown parameter {key}={value} (only mode=ro is understood)"
            )
        read_only = value == "ro"
    return Location("sqlite", path=path, read_only=read_only)


def _split_userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """(user, password, host part) of a URL's netloc; the password may contain '@' or ':'."""
    if "@" not in netloc:
        return None, None, netloc
    userinfo, _, hosts = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return user, password if colon else None, hosts


def location_password(location: str) -> str | None:
    """The password a PostgreSQL URL carries (decoded), or None."""
    if not is_postgres_location(location):
        return None
    try:
        parts = urlsplit(location)
    except ValueError:
        found = _USERINFO.match(location.split("?", 1)[0])
        return unquote(found.group(2)) if found and found.group(2) else None
    _user, password, _hosts = _split_userinfo(parts.netloc)
    if password:
        return unquote(password)
    for key, value in parse_qsl(parts.query):
        if key == "password" and value:
            return value
    return None


def redact_location(location: str) -> str:
    """The location with any password replaced by `***` (also in a URL that does not parse)."""
    if not is_postgres_location(location):
        return location
    try:
        parts = urlsplit(location)
    except ValueError:
        base, sep, query = location.partition("?")
        found = _USERINFO.match(base)
        if found:
            base = f"{found.group(1)}{_HIDDEN}{found.group(3)}"
        return base + sep + _redact_query(query)
    user, password, hosts = _split_userinfo(parts.netloc)
    netloc = hosts
    if user is not None:
        netloc = f"{user}:{_HIDDEN}@{hosts}" if password is not None else f"{user}@{hosts}"
    return urlunsplit(
        (parts.scheme, netloc, parts.path, _redact_query(parts.query), parts.fragment)
    )


def _redact_query(query: str) -> str:
    """A URL query with any `password=` value hidden."""
    return "&".join(
        f"password={_HIDDEN}" if pair.partition("=")[0] == "password" else pair
        for pair in query.split("&")
        if pair
    )

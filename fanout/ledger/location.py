"""Ledger locations: a SQLite path (or `sqlite:///path`) or a `postgresql://` URL.

A URL may carry a password (`user:password@host` or `?password=`); `redact_location` is the one
way a location is shown in any message, so the password never is (I5).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

__all__ = ["is_postgres_location", "location_password", "redact_location"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_HIDDEN = "***"


def is_postgres_location(location: str) -> bool:
    """True for a `postgresql://` (or `postgres://`) URL."""
    return location.lower().startswith(_POSTGRES_SCHEMES)


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
    parts = urlsplit(location)
    _user, password, _hosts = _split_userinfo(parts.netloc)
    if password:
        return unquote(password)
    for key, value in parse_qsl(parts.query):
        if key == "password" and value:
            return value
    return None


def redact_location(location: str) -> str:
    """The location with any password replaced by `***`."""
    if not is_postgres_location(location):
        return location
    parts = urlsplit(location)
    user, password, hosts = _split_userinfo(parts.netloc)
    netloc = hosts
    if user is not None:
        netloc = f"{user}:{_HIDDEN}@{hosts}" if password is not None else f"{user}@{hosts}"
    query = "&".join(
        f"password={_HIDDEN}" if pair.partition("=")[0] == "password" else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

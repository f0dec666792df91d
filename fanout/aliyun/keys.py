"""Credentials as values, and the providers that keep them valid through a long rollout.

`Credentials` is one access key (and STS token, with its expiry when known). A
`CredentialsProvider` hands out the current ones: static keys as they are, renewable ones
(`fanout.aliyun.renewal`: the ECS instance RAM role, an aliyun CLI STS profile) renewed
*before* they expire, so no call is refused for an expired token. When they expire and cannot
be renewed, `current` raises `CredentialsExpiredError` instead of letting a call go out: a
clear halt (exit 6, resumable), never a stream of refused calls.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from fanout.errors import CallError, CredentialsError, CredentialsExpiredError

__all__ = [
    "CredentialSource",
    "Credentials",
    "CredentialsProvider",
    "Fetch",
    "StaticProvider",
    "account_key",
    "as_provider",
    "check_key_text",
]

# (method, url, headers) -> (HTTP status, body text): how a provider reaches a credentials
# service (the instance metadata service), through the client's one HTTP boundary.
Fetch = Callable[[str, str, Mapping[str, str]], Awaitable[tuple[int, str]]]


# Access key ids, secrets and STS tokens are printable ASCII without spaces (Base64 and
# alphanumerics). Anything else -- a newline pasted with the value, an undecodable byte -- would
# break the request's headers, so it is refused when read, without showing the value.
_PRINTABLE_ASCII = frozenset(chr(code) for code in range(0x21, 0x7F))


def check_key_text(value: str, what: str, where: str) -> str:
    """`value` if it is printable ASCII without spaces, else CredentialsError naming `what`."""
    if not set(value) <= _PRINTABLE_ASCII:
        raise CredentialsError(
            f"{where}: {what} holds a character that is not printable ASCII (a newline, a "
            "space, a control character or an undecodable byte); set it again"
        )
    return value


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key (and STS token); `repr` and `str` show the key id and source only."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    source: str = ""
    expiration: float | None = None  # epoch seconds, when known (STS)

    def __post_init__(self) -> None:
        """The same text rules for credentials from any source (the Python API's too, and the
        ones a renewal brings)."""
        where = self.source or "credentials"
        check_key_text(self.access_key_id, "the access key id", where)
        check_key_text(self.access_key_secret, "the access key secret", where)
        if self.security_token is not None:
            check_key_text(self.security_token, "the security token", where)

    @property
    def is_sts(self) -> bool:
        """True for temporary STS credentials (they carry a security token)."""
        return bool(self.security_token)


class CredentialsProvider(abc.ABC):
    """Hands out valid credentials, renewing them when they can be."""

    source: str = ""
    # The quota account when none is configured: stable across renewals (an STS key id is not).
    account_key: str = ""
    # Called with every new set (the CLI registers their secrets for redaction).
    on_new: Callable[[Credentials], None] | None = None
    stale: bool = False  # the API refused the current ones: renew before the next call

    @abc.abstractmethod
    async def current(self, fetch: Fetch, now: float) -> Credentials:
        """Credentials valid at `now` (epoch), renewed first if due; CredentialsExpiredError
        when they have expired and cannot be renewed."""

    def invalidate(self) -> None:
        """The API refused the current ones (an expired token): renew before the next call."""
        self.stale = True

    @property
    def renewable(self) -> bool:
        """True when new credentials can be had without the operator."""
        return False


class StaticProvider(CredentialsProvider):
    """Credentials that never change (an access key, or an STS token given by hand)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.source = credentials.source
        self.account_key = credentials.access_key_id

    async def current(self, fetch: Fetch, now: float) -> Credentials:
        """The credentials, unless they carry an expiry that has passed."""
        expiration = self.credentials.expiration
        if expiration is not None and now >= expiration:
            raise CredentialsExpiredError(
                self.source, expiration, "they were given as they are; nothing can renew them"
            )
        return self.credentials


CredentialSource = Credentials | CredentialsProvider


def as_provider(source: CredentialSource) -> CredentialsProvider:
    """A provider for either form."""
    return source if isinstance(source, CredentialsProvider) else StaticProvider(source)


def account_key(source: CredentialSource) -> str:
    """The default quota account of these credentials (stable across renewals)."""
    return source.access_key_id if isinstance(source, Credentials) else source.account_key


def renewal_error(exc: BaseException) -> str:
    """Why a renewal failed, in one line (never a secret: messages name sources only)."""
    if isinstance(exc, CredentialsError | CallError):
        return str(exc)
    return type(exc).__name__

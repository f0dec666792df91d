"""Credentials that renew themselves: the ECS instance RAM role, and an aliyun CLI STS profile.

A multi-day rollout outlives any STS token. Both providers renew *before* expiry, on the rule
of the official credentials library (aliyun/credentials-python `provider/ecs_ram_role.py`):
after an hour, or 15 minutes before `Expiration` (half the lifetime for tokens shorter than
half an hour), whichever comes first. A failed renewal keeps the current credentials while
they last (tried again a minute later); once they have expired - or are about to, within
`_EXPIRY_MARGIN_S` - `current` raises `CredentialsExpiredError` and nothing is sent.

- `EcsRamRole`: the instance metadata service (facts 5; 100.100.100.200 on an instance, any
  URL here so tests serve it from the emulator): an IMDSv2 session token (`PUT
  /latest/api/token`; without it, IMDSv1 unless `ALIBABA_CLOUD_IMDSV1_DISABLED=true`), the role
  name if not given, then `/latest/meta-data/ram/security-credentials/<role>`.
- `ProfileSts`: the aliyun CLI's `~/.aliyun/config.json` `StsToken` profile, read again when due
  or when the API refused the token (something outside fanout refreshes the file).
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from fanout.aliyun.keys import Credentials, CredentialsProvider, Fetch, renewal_error
from fanout.errors import CallError, CredentialsError, CredentialsExpiredError

__all__ = ["METADATA_ENDPOINT", "EcsRamRole", "ProfileSts", "profile_reader"]

METADATA_ENDPOINT = "http://100.100.100.200"  # the ECS instance metadata service (facts 5)
_CREDENTIALS_PATH = "/latest/meta-data/ram/security-credentials/"
_TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
_TOKEN_TTL_S = 21_600  # what the SDK asks for (6 hours)
_REFRESH_AFTER_S = 3_600.0  # the SDK's prefetch: renew after an hour
_STALE_BEFORE_S = 900.0  # the SDK's stale time: renew 15 minutes before expiry
_EXPIRY_MARGIN_S = 60.0  # past this close to expiry a token is not used (clocks differ)
_RETRY_RENEW_S = 60.0  # after a failed renewal, try again this much later
_EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _parse_expiration(text: object) -> float | None:
    """`2026-12-01T12:00:00Z` as epoch seconds (None when absent or malformed)."""
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, _EXPIRATION_FORMAT)))
    except ValueError:
        return None


class _Renewing(CredentialsProvider):
    """The renew-before-expiry rule shared by the renewable providers."""

    def __init__(self) -> None:
        self._cached: Credentials | None = None
        self._renew_at = 0.0
        self._lock = anyio.Lock()
        self.last_error: str | None = None  # why the last renewal failed

    @property
    def renewable(self) -> bool:
        """Yes: new credentials come without the operator."""
        return True

    @property
    def cached(self) -> Credentials | None:
        """The credentials in use (None before the first fetch)."""
        return self._cached

    async def current(self, fetch: Fetch, now: float) -> Credentials:
        """The cached credentials while fresh, else renewed ones (or the cached ones while they
        last, if renewing fails)."""
        creds = self._cached
        if creds is not None and not self.stale and now < self._renew_at:
            return creds
        async with self._lock:
            creds = self._cached
            if creds is not None and not self.stale and now < self._renew_at:
                return creds
            try:
                new = await self._fetch_new(fetch, now)
            except (CallError, CredentialsError, OSError, ValueError) as exc:
                return self._keep(creds, now, renewal_error(exc))
            if self.stale and creds is not None and new == creds:
                return self._keep(creds, now, "the source still holds the refused token", True)
            self._adopt(new, now)
            return new

    def _adopt(self, new: Credentials, now: float) -> None:
        """Use `new` from now on and schedule its renewal."""
        self._cached, self.stale, self.last_error = new, False, None
        self._renew_at = now + _REFRESH_AFTER_S
        if new.expiration is not None:
            lifetime = max(0.0, new.expiration - now)
            self._renew_at = min(
                self._renew_at, new.expiration - min(_STALE_BEFORE_S, lifetime / 2)
            )
        if self.on_new is not None:
            self.on_new(new)

    def _keep(
        self, creds: Credentials | None, now: float, why: str, refused: bool = False
    ) -> Credentials:
        """After a failed renewal: the current credentials if they are still good, else halt."""
        self.last_error = why
        expiration = creds.expiration if creds is not None else None
        usable = creds is not None and not refused and not self.stale
        if usable and (expiration is None or now < expiration - _EXPIRY_MARGIN_S):
            assert creds is not None
            self._renew_at = now + _RETRY_RENEW_S
            return creds
        raise CredentialsExpiredError(self.source, expiration, why)

    async def _fetch_new(self, fetch: Fetch, now: float) -> Credentials:
        raise NotImplementedError


class EcsRamRole(_Renewing):
    """STS credentials of the instance's RAM role, from the instance metadata service."""

    def __init__(
        self, role: str | None, endpoint: str = METADATA_ENDPOINT, *, v1_disabled: bool = False
    ) -> None:
        super().__init__()
        self.role = role
        self.endpoint = endpoint.rstrip("/")
        self.v1_disabled = v1_disabled
        self.source = f"the ECS instance RAM role {role or '(the instance role)'} ({self.endpoint})"
        self.account_key = f"ecs-ram-role:{role or 'instance'}"

    async def _fetch_new(self, fetch: Fetch, now: float) -> Credentials:
        """Session token, role name, then the role's credentials document."""
        headers = await self._session(fetch)
        role = self.role
        if not role:
            status, text = await fetch("GET", self.endpoint + _CREDENTIALS_PATH, headers)
            if status != 200 or not text.strip():
                raise CredentialsError(f"{self.source}: no role name (HTTP {status})")
            role = text.strip().splitlines()[0]
        status, text = await fetch("GET", self.endpoint + _CREDENTIALS_PATH + role, headers)
        if status != 200:
            raise CredentialsError(f"{self.source}: credentials refused (HTTP {status})")
        try:
            doc = json.loads(text)
        except ValueError:
            raise CredentialsError(f"{self.source}: the credentials are not JSON") from None
        if not isinstance(doc, dict) or doc.get("Code") != "Success":
            raise CredentialsError(f"{self.source}: the metadata service did not say Success")
        fields = [doc.get(k) for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken")]
        if not all(isinstance(v, str) and v for v in fields):
            raise CredentialsError(f"{self.source}: the credentials document is incomplete")
        key_id, secret, token = (str(v) for v in fields)
        return Credentials(key_id, secret, token, self.source, _parse_expiration(doc.get("Expiration")))  # fmt: skip

    async def _session(self, fetch: Fetch) -> dict[str, str]:
        """The IMDSv2 session token header (none with IMDSv1, unless that is disabled)."""
        ttl = {"X-aliyun-ecs-metadata-token-ttl-seconds": str(_TOKEN_TTL_S)}
        try:
            status, text = await fetch("PUT", self.endpoint + _TOKEN_PATH, ttl)
        except CallError:
            if self.v1_disabled:
                raise
            return {}
        if status == 200 and text:
            return {"X-aliyun-ecs-metadata-token": text.strip()}
        if self.v1_disabled:
            raise CredentialsError(f"{self.source}: no metadata session token (HTTP {status})")
        return {}


class ProfileSts(_Renewing):
    """An aliyun CLI `StsToken` profile, read again when due or after the API refused it."""

    def __init__(self, read: Callable[[], Credentials], source: str, account: str) -> None:
        super().__init__()
        self._read = read
        self.source = source
        self.account_key = account

    async def _fetch_new(self, fetch: Fetch, now: float) -> Credentials:
        """The profile as the file holds it now."""
        return await anyio.to_thread.run_sync(self._read)


def profile_reader(
    path: Path, load: Callable[[Path], Credentials | None]
) -> Callable[[], Credentials]:
    """A function reading one profile's credentials from `path` (CredentialsError if gone)."""

    def read() -> Credentials:
        found = load(path)
        if found is None:
            raise CredentialsError(f"{path}: the profile is gone")
        return found

    return read

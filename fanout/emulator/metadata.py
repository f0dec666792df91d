"""The ECS instance metadata service's RAM role credentials, served from the emulator's address.

On a real instance the service answers on http://100.100.100.200 (aliyun-api-facts.md 5); the
emulator serves the same paths on its own 127.0.0.1 address, so a client pointed there gets
short-lived STS credentials that the emulator's API then accepts, until they expire:

- `PUT /latest/api/token` with `X-aliyun-ecs-metadata-token-ttl-seconds` (1..21600): a session
  token (IMDSv2); later requests may send it as `X-aliyun-ecs-metadata-token`.
- `GET /latest/meta-data/ram/security-credentials/`: the instance's role name.
- `GET /latest/meta-data/ram/security-credentials/<role>`: `{"Code": "Success", "AccessKeyId",
  "AccessKeySecret", "SecurityToken", "Expiration": "YYYY-MM-DDTHH:MM:SSZ", "LastUpdated"}`.

Shapes and header names follow aliyun/credentials-python `provider/ecs_ram_role.py`. The
credentials last `sts_ttl_s` (6 h by default) on the emulator clock; a request for them gets
new ones once less than half of the current ones' life is left (the service rotates them well
before they expire). `deny` (POST /_emulator/metadata) makes the role endpoints answer 404, as
when the role was detached from the instance: nothing can be renewed.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from fanout.emulator.timing import iso_utc

__all__ = ["TOKEN_HEADER", "TOKEN_TTL_HEADER", "IssuedCredentials", "MetadataService"]

TOKEN_HEADER = "X-aliyun-ecs-metadata-token"  # noqa: S105 - a header name, not a secret
TOKEN_TTL_HEADER = "X-aliyun-ecs-metadata-token-ttl-seconds"  # noqa: S105 - a header name
_TOKEN_TTL_RANGE_S = (1, 21_600)  # the SDK asks for 21600 (6 hours)


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    """One set of STS credentials the service handed out."""

    access_key_id: str
    access_key_secret: str
    security_token: str
    issued_s: float
    expires_s: float

    def document(self) -> dict[str, str]:
        """The JSON the metadata service answers with."""
        return {
            "Code": "Success",
            "AccessKeyId": self.access_key_id,
            "AccessKeySecret": self.access_key_secret,
            "SecurityToken": self.security_token,
            "Expiration": iso_utc(self.expires_s),
            "LastUpdated": iso_utc(self.issued_s),
        }


class MetadataService:
    """The role, its current credentials, every credential issued (the API checks them) and
    the IMDSv2 session tokens."""

    def __init__(self, role: str | None, ttl_s: float, now: Callable[[], float], seed: int) -> None:
        self.role = role
        self.ttl_s = ttl_s
        self.denied = False
        self.fetches = 0  # credential documents served
        self._now = now
        self._rng = random.Random(f"sts:{seed}")
        self._current: IssuedCredentials | None = None
        self._issued: dict[str, IssuedCredentials] = {}
        self._sessions: dict[str, float] = {}  # session token -> expiry (emulator clock)

    def session_token(self, ttl_text: str | None) -> str | None:
        """A new IMDSv2 session token, or None when the TTL header is missing or out of range."""
        try:
            ttl = int(ttl_text or "")
        except ValueError:
            return None
        low, high = _TOKEN_TTL_RANGE_S
        if not low <= ttl <= high:
            return None
        token = secrets.token_urlsafe(24)
        self._sessions[token] = self._now() + ttl
        return token

    def session_ok(self, token: str | None) -> bool:
        """True without a token (IMDSv1) or with a live one."""
        return token is None or self._sessions.get(token, 0.0) > self._now()

    def serves(self, role: str) -> bool:
        """True when `role` is the instance's role and it may hand out credentials."""
        return self.role is not None and role == self.role and not self.denied

    def credentials(self) -> IssuedCredentials:
        """The current credentials, renewed when less than half their life is left."""
        now = self._now()
        current = self._current
        if current is None or current.expires_s - now < self.ttl_s / 2:
            current = self._current = IssuedCredentials(
                access_key_id=f"STS.{self._rng.getrandbits(96):024x}",
                access_key_secret=f"{self._rng.getrandbits(160):040x}",
                security_token=f"CAIS{self._rng.getrandbits(256):064x}",
                issued_s=now,
                expires_s=now + self.ttl_s,
            )
            self._issued[current.access_key_id] = current
        self.fetches += 1
        return current

    def issued(self, access_key_id: str) -> IssuedCredentials | None:
        """Credentials this service handed out under that key id (expired ones included)."""
        return self._issued.get(access_key_id)

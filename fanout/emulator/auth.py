"""Signature verification for both schemes, with the same pure functions the client signs with.

- V3 (`Authorization: ACS3-HMAC-SHA256 ...`): exactly the headers named in SignedHeaders are
  verified (`host` includes `:PORT`); `host` and every `x-acs-*` header sent must be signed, and
  `x-acs-content-sha256` must be the SHA-256 of the body. Only the query string is canonicalised.
- V1 (`Signature` parameter, HMAC-SHA1): every parameter but `Signature`, from the query and a
  form body, is signed; empty-valued parameters stay in the canonical string.

Timestamps are checked against the real wall clock (never the emulator's advanced clock) and
nonces are remembered for twice the skew window, in bounded memory. STS credentials handed out
by the emulated metadata service (`fanout.emulator.metadata`) expire on the emulator clock.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from fanout.aliyun.signing import (
    parse_v3_authorization,
    rpc_signature,
    rpc_string_to_sign,
    v3_canonical_request,
    v3_signature,
)
from fanout.emulator.metadata import IssuedCredentials
from fanout.emulator.wire import ApiFault, incomplete, missing_parameter

__all__ = ["Authenticator", "NonceMemory", "RequestView", "is_v3"]

_V3_PREFIX = "ACS3-HMAC-SHA256 "
# Beyond this many remembered nonces the oldest are forgotten first: bounded memory under load.
_MAX_REMEMBERED_NONCES = 1_000_000
# ISO 8601 in UTC, to the second or with up to 6 fractional digits.
_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z").fullmatch
_V1_REQUIRED = (
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
)


@dataclass(frozen=True, slots=True)
class RequestView:
    """What verification needs from one HTTP request, already decoded."""

    method: str
    path: str
    query: Mapping[str, str]  # decoded query string only (what V3 signs)
    params: Mapping[str, str]  # query plus form body (what V1 signs)
    headers: Mapping[str, str]  # lowercase names
    body: bytes


def is_v3(headers: Mapping[str, str]) -> bool:
    """V3 when an `ACS3-HMAC-SHA256` Authorization header is present, else V1."""
    return headers.get("authorization", "").startswith(_V3_PREFIX)


class NonceMemory:
    """Nonces seen within the replay window; the oldest go first when the window or cap is hit."""

    __slots__ = ("_expires", "_max_entries", "_ttl_s")

    def __init__(self, ttl_s: float, max_entries: int = _MAX_REMEMBERED_NONCES) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._expires: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        return len(self._expires)

    def seen_before(self, key_id: str, nonce: str) -> bool:
        """Remember the nonce; True if it was already used within the window."""
        now = time.monotonic()
        self._forget_expired(now)
        key = (key_id, nonce)
        if key in self._expires:
            return True
        self._expires[key] = now + self._ttl_s
        return False

    def _forget_expired(self, now: float) -> None:
        expires = self._expires
        while expires:
            oldest = next(iter(expires))
            if expires[oldest] > now and len(expires) < self._max_entries:
                return
            del expires[oldest]


class Authenticator:
    """Checks one request against the configured key pairs and STS tokens."""

    def __init__(
        self,
        access_keys: Mapping[str, str],
        sts_tokens: frozenset[str],
        max_clock_skew_s: float,
        issued: Callable[[str], IssuedCredentials | None] = lambda _key: None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._keys = dict(access_keys)
        self._sts_tokens = sts_tokens
        self._skew_s = max_clock_skew_s
        self._issued = issued  # STS key ids of the metadata service
        self._now = now  # the emulator clock: issued credentials expire on it
        # A request stamped up to `skew` in the future stays replayable until `now + 2 * skew`.
        self.nonces = NonceMemory(ttl_s=2 * max_clock_skew_s)

    def verify(self, req: RequestView) -> str:
        """The verified access key id, or raise the error the real API answers with."""
        if is_v3(req.headers):
            return self._verify_v3(req)
        return self._verify_v1(req)

    def _secret(self, key_id: str) -> str:
        secret = self._keys.get(key_id)
        if secret is None:
            issued = self._issued(key_id)
            secret = None if issued is None else issued.access_key_secret
        if secret is None:
            raise ApiFault(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        return secret

    def _check_timestamp(self, value: str) -> None:
        stamp = _parse_timestamp(value)
        if stamp is None:
            raise ApiFault(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            )
        if abs(time.time() - stamp) > self._skew_s:
            raise ApiFault(
                400,
                "InvalidTimeStamp.Expired",
                f"Specified time stamp or date value is expired. Timestamp {value} is "
                f"more than {int(self._skew_s)} seconds away from the server time.",
            )

    def _check_sts(self, key_id: str, token: str | None) -> None:
        issued = self._issued(key_id) if key_id not in self._keys else None
        if issued is not None:
            if token != issued.security_token:
                raise ApiFault(
                    403,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "Specified SecurityToken mismatch with the AccessKey.",
                )
            if self._now() >= issued.expires_s:
                raise ApiFault(
                    403, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired."
                )
            return
        if token is not None and token not in self._sts_tokens:
            raise ApiFault(
                403, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired."
            )

    def _check_nonce(self, key_id: str, nonce: str) -> None:
        if self.nonces.seen_before(key_id, nonce):
            raise ApiFault(400, "SignatureNonceUsed", "Specified signature nonce was used already.")

    def _verify_v1(self, req: RequestView) -> str:
        params = req.params
        if "Signature" not in params:
            raise missing_parameter("Signature")
        for name in _V1_REQUIRED:
            if not params.get(name):
                raise missing_parameter(name)
        key_id = params["AccessKeyId"]
        secret = self._secret(key_id)
        self._check_timestamp(params["Timestamp"])
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            raise incomplete(
                "Only SignatureMethod HMAC-SHA1 with SignatureVersion 1.0 is supported."
            )
        # base64 never contains a space: a raw `+` the client forgot to encode decodes to one.
        given = params["Signature"].replace(" ", "+")
        expected = rpc_signature(secret, req.method, params)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiFault(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:"
                + rpc_string_to_sign(req.method, params),
            )
        self._check_sts(key_id, params.get("SecurityToken"))
        self._check_nonce(key_id, params["SignatureNonce"])
        return key_id

    def _verify_v3(self, req: RequestView) -> str:
        auth = parse_v3_authorization(req.headers["authorization"])
        if auth is None:
            raise incomplete("The Authorization header cannot be parsed.")
        headers = req.headers
        for name in ("x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"):
            if not headers.get(name):
                raise missing_parameter(name)
        signed = set(auth.signed_headers)
        unsigned = [
            n for n in headers if (n == "host" or n.startswith("x-acs-")) and n not in signed
        ]
        if unsigned:
            raise incomplete(f"Headers must be signed: {', '.join(sorted(unsigned))}.")
        secret = self._secret(auth.access_key_id)
        self._check_timestamp(headers["x-acs-date"])
        payload_sha256 = headers["x-acs-content-sha256"]
        if payload_sha256 != hashlib.sha256(req.body).hexdigest():
            raise ApiFault(
                400,
                "SignatureDoesNotMatch",
                "The x-acs-content-sha256 header does not match the SHA-256 of the request body.",
            )
        canonical = v3_canonical_request(
            req.method, req.query, headers, auth.signed_headers, payload_sha256, req.path
        )
        if not hmac.compare_digest(auth.signature, v3_signature(secret, canonical)):
            raise ApiFault(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server canonical "
                "request is:" + canonical,
            )
        self._check_sts(auth.access_key_id, headers.get("x-acs-security-token"))
        self._check_nonce(auth.access_key_id, headers["x-acs-signature-nonce"])
        return auth.access_key_id


def _parse_timestamp(value: str) -> float | None:
    match = _TIMESTAMP(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        parsed = datetime(  # noqa: DTZ001 - the trailing Z means UTC
            int(year), int(month), int(day), int(hour), int(minute), int(second)
        )
    except ValueError:  # month 13, February 30, ...
        return None
    return calendar.timegm(parsed.timetuple()) + float(f"0.{fraction or 0}")

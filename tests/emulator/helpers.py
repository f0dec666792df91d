"""A tiny signed RPC client for the emulator tests (independent of fanout.aliyun.client)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from fanout.aliyun.signing import canonical_query, rpc_signature, v3_authorization
from fanout.emulator import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, Emulator

API_VERSION = "2014-05-26"
REGION = "cn-hangzhou"
_counter = itertools.count()


def utc_stamp(offset_s: float = 0.0) -> str:
    """A V1/V3 timestamp `offset_s` away from now."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_s))


def fresh_nonce() -> str:
    """A unique SignatureNonce."""
    return f"{uuid.uuid4().hex}{next(_counter)}"


@dataclass
class Reply:
    """One HTTP answer: status, parsed JSON body (or raw text), headers."""

    status: int
    body: Any
    text: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> str:
        """The error Code ("" on success)."""
        return str(self.body.get("Code", "")) if isinstance(self.body, dict) else ""


@dataclass(frozen=True)
class _Signing:
    secret: str
    key_id: str
    nonce: str
    timestamp: str
    sts_token: str | None


@dataclass
class Api:
    """Signs and sends RPC requests to one emulator."""

    session: aiohttp.ClientSession
    base_url: str
    key_id: str = DEMO_ACCESS_KEY_ID
    secret: str = DEMO_ACCESS_KEY_SECRET
    scheme: str = "v1"

    async def call(
        self,
        action: str,
        params: dict[str, str] | None = None,
        *,
        region: str | None = REGION,
        method: str = "POST",
        scheme: str | None = None,
        form_body: bool = False,
        fmt: str | None = "JSON",
        nonce: str | None = None,
        timestamp: str | None = None,
        secret: str | None = None,
        key_id: str | None = None,
        sts_token: str | None = None,
        tamper: dict[str, str] | None = None,
    ) -> Reply:
        """Send one signed call; `tamper` changes parameters after signing."""
        business = dict(params or {})
        if region is not None:
            business.setdefault("RegionId", region)
        sign = _Signing(
            secret=secret or self.secret,
            key_id=key_id or self.key_id,
            nonce=nonce or fresh_nonce(),
            timestamp=timestamp or utc_stamp(),
            sts_token=sts_token,
        )
        if (scheme or self.scheme) == "v3":
            return await self._v3(action, business, method, fmt, tamper or {}, sign)
        return await self._v1(action, business, method, form_body, fmt, tamper or {}, sign)

    async def _v1(
        self,
        action: str,
        business: dict[str, str],
        method: str,
        form_body: bool,
        fmt: str | None,
        tamper: dict[str, str],
        sign: _Signing,
    ) -> Reply:
        common = {
            "Action": action,
            "Version": API_VERSION,
            "AccessKeyId": sign.key_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": sign.nonce,
            "Timestamp": sign.timestamp,
        }
        if fmt is not None:
            common["Format"] = fmt
        if sign.sts_token is not None:
            common["SecurityToken"] = sign.sts_token
        signed = {**common, **business}
        signature = rpc_signature(sign.secret, method, signed)
        sent = {**signed, **tamper, "Signature": signature}
        if form_body:
            query = {**common, "Signature": signature}
            body_params = {**business, **tamper}
            return await self.send(
                method,
                canonical_query(query),
                body=canonical_query(body_params).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        return await self.send(method, canonical_query(sent))

    async def _v3(
        self,
        action: str,
        business: dict[str, str],
        method: str,
        fmt: str | None,
        tamper: dict[str, str],
        sign: _Signing,
    ) -> Reply:
        query = dict(business)
        if fmt is not None and fmt != "JSON":
            query["Format"] = fmt
        headers = {
            "host": urlsplit(self.base_url).netloc,
            "x-acs-action": action,
            "x-acs-version": API_VERSION,
            "x-acs-date": sign.timestamp,
            "x-acs-signature-nonce": sign.nonce,
            "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
        }
        if sign.sts_token is not None:
            headers["x-acs-security-token"] = sign.sts_token
            headers["x-acs-accesskey-id"] = sign.key_id
        headers["Authorization"] = v3_authorization(
            sign.key_id, sign.secret, method, query, headers
        )
        return await self.send(method, canonical_query({**query, **tamper}), headers=headers)

    async def send(
        self,
        method: str,
        raw_query: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send exactly this query string (no re-encoding) and body."""
        url = URL(f"{self.base_url}/?{raw_query}", encoded=True)
        async with self.session.request(method, url, data=body, headers=headers) as resp:
            text = await resp.text()
            parsed: Any = text
            if resp.content_type == "application/json":
                parsed = json.loads(text)
            return Reply(resp.status, parsed, text, dict(resp.headers))

    async def ok(
        self, action: str, params: dict[str, str] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """A call that must succeed; its JSON body."""
        reply = await self.call(action, params, **kw)
        assert reply.status == 200, reply.text
        assert isinstance(reply.body, dict)
        return reply.body

    async def error(self, action: str, params: dict[str, str] | None = None, **kw: Any) -> Reply:
        """A call that must fail; its reply."""
        reply = await self.call(action, params, **kw)
        assert reply.status != 200, reply.text
        return reply

    async def invoke(self, instance_ids: list[str], command_id: str, **extra: str) -> str:
        """InvokeCommand that must succeed; the InvokeId."""
        params = {"CommandId": command_id, **extra}
        params.update({f"InstanceId.{n}": iid for n, iid in enumerate(instance_ids, start=1)})
        body = await self.ok("InvokeCommand", params)
        return str(body["InvokeId"])

    async def control(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        """POST (or GET without payload) an unauthenticated `/_emulator/*` endpoint."""
        url = f"{self.base_url}/_emulator/{path}"
        if payload is None:
            async with self.session.get(url) as resp:
                assert resp.status == 200, await resp.text()
                return await resp.json()
        async with self.session.post(url, json=payload) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


def instance_params(instance_ids: list[str], name: str = "InstanceId") -> dict[str, str]:
    """`InstanceId.1..N` parameters."""
    return {f"{name}.{n}": iid for n, iid in enumerate(instance_ids, start=1)}


def calls(emulator: Emulator, action: str, region: str = REGION) -> int:
    """How many `action` calls the emulator has counted in `region` (its own record)."""
    counted: dict[str, int] = emulator.snapshot()["regions"][region]["calls"]
    return counted.get(action, 0)


# Loop turns a request on 127.0.0.1 to the in-process emulator takes at most, with a wide margin.
_SETTLE_ROUNDS = 100_000


async def settled(predicate: Callable[[], bool]) -> None:
    """Let the event loop (the in-process emulator serves in it) run until `predicate()` holds:
    turns of the loop, not time, so a busy machine cannot make it fail."""
    for _ in range(_SETTLE_ROUNDS):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the emulator never reached the expected state")

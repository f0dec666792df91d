"""A tiny real HTTP server on 127.0.0.1 for the client's transport tests.

It re-checks every request's signature with `fanout.aliyun.signing` (both schemes) from what
actually arrived on the wire, records what it saw, and answers from a script of steps: a reply,
a dropped connection, or a handler that hangs until the test ends.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

from aiohttp import web

from fanout.aliyun import signing

KEY_ID = "LTAI-test-key"
SECRET = "test-secret-DO-NOT-LEAK"
STS_KEY_ID = "STS.test-key"
STS_SECRET = "sts-secret-DO-NOT-LEAK"
STS_TOKEN = "sts-token-DO-NOT-LEAK"

# The headers a V3 signature must cover (aliyun-api-facts.md section 3.2).
V3_REQUIRED_SIGNED = frozenset(
    {
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    }
)


@dataclass
class Reply:
    """An HTTP answer; `body` None means the action's default success body."""

    status: int = 200
    body: dict[str, object] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


Step = Reply | Literal["drop", "hang"]


@dataclass
class Seen:
    """One request as the server received it."""

    action: str
    scheme: str  # "v3" or "rpc"
    params: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    peer_port: int
    verified: bool
    problem: str


def _default_body(action: str) -> dict[str, object]:
    """A minimal success answer for `action`."""
    if action == "InvokeCommand":
        return {"RequestId": "req-invoke", "InvokeId": "t-0001"}
    if action == "CreateCommand":
        return {"RequestId": "req-create", "CommandId": "c-new"}
    return {"RequestId": f"req-{action}"}


def _verify(
    method: str, raw_query: str, params: dict[str, str], headers: dict[str, str]
) -> tuple[str, str]:
    """(scheme, problem) for a request; problem is '' when the signature checks out."""
    if raw_query != signing.canonical_query(params):
        return "?", "query is not in canonical encoding"
    auth = signing.parse_v3_authorization(headers.get("authorization", ""))
    if auth is not None:
        secret = {KEY_ID: SECRET, STS_KEY_ID: STS_SECRET}.get(auth.access_key_id)
        if secret is None:
            return "v3", "unknown key"
        if not set(auth.signed_headers) >= V3_REQUIRED_SIGNED:
            return "v3", "a required header is not signed"
        canonical = signing.v3_canonical_request(
            method, params, headers, auth.signed_headers, headers.get("x-acs-content-sha256", "")
        )
        ok = hmac.compare_digest(signing.v3_signature(secret, canonical), auth.signature)
        return "v3", "" if ok else "v3 signature mismatch"
    secret = {KEY_ID: SECRET, STS_KEY_ID: STS_SECRET}.get(params.get("AccessKeyId", ""))
    if secret is None:
        return "rpc", "unknown key"
    expected = signing.rpc_signature(secret, method, params)
    ok = hmac.compare_digest(expected, params.get("Signature", ""))
    return "rpc", "" if ok else "rpc signature mismatch"


class Server:
    """The server's state: a script of steps and every request seen."""

    def __init__(self) -> None:
        self.script: deque[Step] = deque()
        self.seen: list[Seen] = []
        self.release = asyncio.Event()
        self.url = ""

    def then(self, *steps: Step) -> None:
        """Append steps to the script (after it runs out, every request gets a success)."""
        self.script.extend(steps)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record and verify the request, then play the next step."""
        raw_query = request.raw_path.partition("?")[2]
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in request.headers.items()}
        scheme, problem = _verify(request.method, raw_query, params, headers)
        action = headers.get("x-acs-action") or params.get("Action", "")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(
            Seen(
                action,
                scheme,
                params,
                raw_query,
                headers,
                peer[1] if peer else 0,
                not problem,
                problem,
            )
        )
        if problem:
            error = {"Code": "SignatureDoesNotMatch", "Message": problem, "RequestId": "bad"}
            return web.json_response(error, status=400)
        step = self.script.popleft() if self.script else Reply()
        if step == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if step == "hang":
            await self.release.wait()
            return web.json_response(_default_body(action))
        assert isinstance(step, Reply)
        if isinstance(step.body, bytes):
            return web.Response(body=step.body, status=step.status, headers=step.headers)
        body = _default_body(action) if step.body is None else step.body
        return web.json_response(body, status=step.status, headers=step.headers)


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """Run a `Server` on 127.0.0.1 (a free port) for the duration of the block."""
    server = Server()
    app = web.Application()
    app.router.add_route("*", "/", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    await site.start()
    server.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()
        sock.close()


def json_error(status: int, code: str, request_id: str = "req-err", **headers: str) -> Reply:
    """An Alibaba Cloud style JSON error answer."""
    body: dict[str, object] = {
        "RequestId": request_id,
        "HostId": "ecs.aliyuncs.com",
        "Code": code,
        "Message": f"{code} happened",
        "Recommend": "https://api.aliyun.com/troubleshoot",
    }
    return Reply(status=status, body=body, headers=headers)

"""The client over real HTTP on 127.0.0.1: error mapping, timeouts, connection reuse, retries."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from fanout.aliyun.client import ClientOptions, EcsClient, _transport_error
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.errors import ApiError, CallKind, TransportError
from tests.aliyun.server import (
    KEY_ID,
    SECRET,
    STS_KEY_ID,
    STS_SECRET,
    STS_TOKEN,
    Reply,
    Server,
    free_port,
    json_error,
    serve,
)

CREDS = Credentials(KEY_ID, SECRET, source="test")
STS = Credentials(STS_KEY_ID, STS_SECRET, STS_TOKEN, source="test")
REGION = "cn-hangzhou"
# Fast retries keep the tests quick; the policy (attempt count, which kinds) is unchanged.
FAST = ClientOptions(retry_base_delay_s=0.01, read_timeout_s=2.0)

MakeClient = Callable[..., EcsClient]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A fresh scripted server."""
    async with serve() as running:
        yield running


@pytest.fixture
async def make_client(server: Server) -> AsyncIterator[MakeClient]:
    """Build clients pointed at the server; all are closed at the end of the test."""
    async with AsyncExitStack() as stack:

        def build(credentials: Credentials = CREDS, **options: Any) -> EcsClient:
            opts = replace(FAST, endpoint=server.url, **options)
            client = EcsClient(credentials, opts)
            stack.push_async_callback(client.close)
            return client

        yield build


async def _invoke(client: EcsClient) -> object:
    return await client.invoke_command(
        REGION,
        CommandSpec("c-1", parameters={"pw": "hunter2"}),
        ["i-1", "i-2"],
        client_token="tok-1",
    )


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "Throttling.User", CallKind.RETRYABLE),
        (403, "Invocation.ExceedQuota", CallKind.QUOTA),
        (404, "InvalidInstance.NotFound", CallKind.PER_INSTANCE),
        (404, "InvalidCmdId.NotFound", CallKind.FATAL),
        (403, "IdempotentParameterMismatch", CallKind.FATAL),
        (403, "IdempotentProcessing", CallKind.RETRYABLE),
        (400, "InvalidParameter.Parameters", CallKind.BAD_REQUEST),
        (500, "InternalError.Dispatch", CallKind.RETRYABLE),
        (503, "ServiceUnavailable", CallKind.RETRYABLE),
    ],
)
async def test_api_errors(
    server: Server, make_client: MakeClient, status: int, code: str, kind: CallKind
) -> None:
    """A JSON error body becomes an ApiError with its code, status, request id and kind."""
    server.then(json_error(status, code, request_id="req-42"))
    with pytest.raises(ApiError) as info:
        await _invoke(make_client())
    err = info.value
    assert (err.code, err.http_status, err.request_id, err.kind) == (code, status, "req-42", kind)
    assert err.action == "InvokeCommand"
    assert err.retry_after_s is None
    assert len(server.seen) == 1


async def test_retry_after_header(server: Server, make_client: MakeClient) -> None:
    """x-acs-retry-after (milliseconds) becomes retry_after_s in seconds."""
    server.then(json_error(400, "Throttling", **{"x-acs-retry-after": "2500"}))
    with pytest.raises(ApiError) as info:
        await _invoke(make_client())
    assert info.value.retry_after_s == 2.5
    assert info.value.is_throttling


async def test_garbled_5xx_body(server: Server, make_client: MakeClient) -> None:
    """A 5xx whose body is not JSON is InternalError.Unparsable, retryable."""
    server.then(Reply(status=502, body=b"<html>Bad Gateway</html>"))
    with pytest.raises(ApiError) as info:
        await _invoke(make_client())
    assert (info.value.code, info.value.http_status) == ("InternalError.Unparsable", 502)
    assert info.value.kind is CallKind.RETRYABLE


async def test_connection_closed_mid_request_is_ambiguous(
    server: Server, make_client: MakeClient
) -> None:
    """The server closing the connection after receiving the request: sent=True, AMBIGUOUS."""
    server.then("drop")
    with pytest.raises(TransportError) as info:
        await _invoke(make_client(STS))
    err = info.value
    assert err.sent is True
    assert err.kind is CallKind.AMBIGUOUS
    assert len(server.seen) == 1
    assert server.seen[0].verified
    message = str(err)
    for part in ("InvokeCommand", REGION, "127.0.0.1", "ServerDisconnectedError"):
        assert part in message
    for secret in (STS_SECRET, STS_TOKEN, "hunter2", "Signature", "tok-1"):
        assert secret not in message
    assert err.__cause__ is None


async def test_closed_port_is_retryable() -> None:
    """Nothing listening: the request was never sent, sent=False, RETRYABLE."""
    port = free_port()
    async with EcsClient(CREDS, replace(FAST, endpoint=f"http://127.0.0.1:{port}")) as client:
        with pytest.raises(TransportError) as info:
            await _invoke(client)
    assert info.value.sent is False
    assert info.value.kind is CallKind.RETRYABLE
    assert "ClientConnectorError" in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


async def test_read_timeout_is_ambiguous(server: Server, make_client: MakeClient) -> None:
    """A server slower than the read timeout: the request was delivered, AMBIGUOUS."""
    server.then("hang")
    with pytest.raises(TransportError) as info:
        await _invoke(make_client(read_timeout_s=0.2))
    assert info.value.sent is True
    assert info.value.kind is CallKind.AMBIGUOUS
    assert "SocketTimeoutError" in str(info.value)
    assert len(server.seen) == 1


async def test_one_connection_for_sequential_calls(server: Server, make_client: MakeClient) -> None:
    """Twenty sequential calls reuse one keep-alive TCP connection (one client port)."""
    client = make_client()
    for _ in range(20):
        await client.describe_invocation_results(REGION, invoke_id="t-1")
    assert len(server.seen) == 20
    assert all(s.verified for s in server.seen)
    assert len({s.peer_port for s in server.seen}) == 1


async def test_describe_retries_500_then_succeeds(server: Server, make_client: MakeClient) -> None:
    """A read-only call retries a 500 and returns the later success, with a fresh nonce."""
    server.then(json_error(500, "InternalError"), "drop")
    result = await make_client().describe_invocation_results(REGION, invoke_id="t-1")
    assert result == []
    assert len(server.seen) == 3
    nonces = {s.headers["x-acs-signature-nonce"] for s in server.seen}
    assert len(nonces) == 3


async def test_describe_gives_up_after_the_attempt_limit(
    server: Server, make_client: MakeClient
) -> None:
    """A read-only call that keeps failing stops after `describe_attempts` tries."""
    server.then(*[json_error(503, "ServiceUnavailable")] * 10)
    with pytest.raises(ApiError) as info:
        await make_client(describe_attempts=4).describe_instances(REGION, instance_ids=["i-1"])
    assert info.value.code == "ServiceUnavailable"
    assert len(server.seen) == 4


async def test_describe_does_not_retry_a_bad_request(
    server: Server, make_client: MakeClient
) -> None:
    """A 4xx that is not transient is raised at once, even for a read-only call."""
    server.then(json_error(400, "InvalidParameter"))
    with pytest.raises(ApiError):
        await make_client().describe_cloud_assistant_status(REGION, ["i-1"])
    assert len(server.seen) == 1


@pytest.mark.parametrize("failure", [json_error(500, "InternalError.Dispatch"), "drop"])
async def test_invoke_command_is_never_retried(
    server: Server, make_client: MakeClient, failure: Reply | str
) -> None:
    """InvokeCommand is sent exactly once, whatever the failure: the runner owns its retries."""
    server.then(failure)  # type: ignore[arg-type]
    with pytest.raises((ApiError, TransportError)):
        await _invoke(make_client())
    assert len(server.seen) == 1


async def test_stop_invocation_is_never_retried(server: Server, make_client: MakeClient) -> None:
    """StopInvocation is sent exactly once on a transient failure."""
    server.then(json_error(503, "ServiceUnavailable"))
    with pytest.raises(ApiError):
        await make_client().stop_invocation(REGION, "t-1", ["i-1"])
    assert len(server.seen) == 1


def _key(port: int = 1) -> ConnectionKey:
    return ConnectionKey("127.0.0.1", port, False, True, None, None, None)


@pytest.mark.parametrize(
    ("exc", "sent"),
    [
        (
            aiohttp.ClientConnectorError(_key(), ConnectionRefusedError(errno.ECONNREFUSED, "no")),
            False,
        ),
        (aiohttp.ClientConnectorDNSError(_key(), OSError(-2, "Name or service not known")), False),
        (aiohttp.ConnectionTimeoutError("Connection timeout to host http://h/?Signature=x"), False),
        (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), True),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientPayloadError("Response payload is not completed"), True),
        (aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"), True),
        (TimeoutError(), True),
    ],
)
def test_transport_error_mapping(exc: BaseException, sent: bool) -> None:
    """Only connect-phase failures mean 'not sent'; the rest may have reached the server."""
    err = _transport_error(exc, action="InvokeCommand", region=REGION, host="h")
    assert err.sent is sent
    assert err.kind is (CallKind.AMBIGUOUS if sent else CallKind.RETRYABLE)
    assert (err.request_id, err.http_status) == (None, None)
    assert type(exc).__name__ in str(err)
    assert "Signature" not in str(err)

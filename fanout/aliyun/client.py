"""The ECS API client: the one place where fanout speaks HTTP.

One `aiohttp.ClientSession` per client, with one keep-alive connection pool and one TLS context
(certificates always verified for https; `ca_bundle` adds a trusted CA). Proxy variables are
ignored (`trust_env=False`): these calls carry signed credentials and go straight to the endpoint.

Every call is a POST to `/` with every parameter in the query, exactly as signed
(`fanout.aliyun.wire.sign_request`), and an empty body; a fresh nonce and timestamp per attempt.
Failures become `fanout.errors.CallError`s:

- an error body -> `ApiError` (Code, HTTP status, RequestId, `x-acs-retry-after`);
- no complete answer -> `TransportError`, translated from aiohttp, socket and timeout errors in
  exactly one function, `_transport_error`: `sent=False` (RETRYABLE) only when the connection was
  never made, else `sent=True` (AMBIGUOUS: the server may have applied the call).

The typed actions (`invoke_command`, `describe_*`, ...) come from `fanout.aliyun.actions.EcsActions`.
Read-only `Describe*` calls cost no quota, so the client retries their transient failures itself
(bounded exponential backoff with jitter). InvokeCommand, StopInvocation and CreateCommand are
sent exactly once per method call: the runner owns their retries, as ledger events.

Credentials come from a provider asked before every call (`fanout.aliyun.keys`): renewable ones
are renewed before they expire; if the API still refuses a token as expired, they are renewed
once and the call sent again (a refused call was not applied); when they cannot be renewed,
`CredentialsExpiredError` is raised before anything is sent. The instance metadata service the
RAM role provider reads is reached through this client's session too (`fetch`).
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, TypeVar

import aiohttp
import yarl

from fanout.aliyun import wire
from fanout.aliyun.actions import EcsActions
from fanout.aliyun.endpoints import resolve_endpoint
from fanout.aliyun.keys import Credentials, CredentialSource, CredentialsProvider, as_provider
from fanout.clock import SYSTEM_CLOCK, Backoff, Clock
from fanout.errors import ApiError, CallError, CallKind, ConfigError, TransportError

__all__ = ["DEFAULT_OPTIONS", "USER_AGENT", "ClientOptions", "EcsClient"]


def _package_version() -> str:
    """fanout's installed version, for the User-Agent."""
    try:
        return metadata.version("fanout")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"fanout/{_package_version()}"

# Backoff of read-only retries never waits longer than this, whatever the server asks.
_RETRY_CAP_S = 5.0
# ECS throttles per API, region and account in one-minute windows: throttled at minute T, a
# call goes through at T+1 (facts 6.2, 10 [9]). Throttled reads back off from 1 s, doubling up
# to 30 s, jittered between half and all: 9 waits add up to at least 75 s (at most about 150 s),
# past the end of any throttled minute, before a read gives up.
_THROTTLED_ATTEMPTS = 10
_THROTTLED_BASE_S = 1.0
_THROTTLED_CAP_S = 30.0
# Close idle pooled connections before the typical server idle timeout (15 s and up) does, so a
# request is rarely written into a connection the server has just closed (an ambiguous failure).
_KEEPALIVE_S = 10.0
_TRANSIENT = frozenset({CallKind.RETRYABLE, CallKind.AMBIGUOUS})
R = TypeVar("R")


# Observer of each request sent: (action, region, error code or None when it succeeded).
OnCall = Callable[[str, str, str | None], None]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How the client reaches the API."""

    endpoint: str | None = None  # one base URL for every region (the emulator)
    network: str = "public"  # or "vpc"
    signature: Literal["v3", "rpc"] = "v3"
    # The legacy SDK's defaults: connect 5 s; read 16 s for InvokeCommand and the Describe calls
    # fanout polls (aliyunsdkcore timeout_config.json, facts section 2.6).
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 16.0
    max_connections: int = 128
    ca_bundle: Path | None = None
    user_agent: str = USER_AGENT
    # Read-only calls: at most this many attempts, the first retry after about `retry_base_delay_s`.
    describe_attempts: int = 4
    retry_base_delay_s: float = 0.2


DEFAULT_OPTIONS = ClientOptions()


def _utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


class EcsClient(EcsActions):
    """Signed calls to the ECS API over one connection pool; use `async with` or call `close()`."""

    def __init__(
        self,
        credentials: CredentialSource,
        options: ClientOptions = DEFAULT_OPTIONS,
        *,
        clock: Clock = SYSTEM_CLOCK,
        signing_clock: Callable[[], datetime] | None = None,
        on_call: OnCall | None = None,
    ) -> None:
        # `clock` paces retries and judges credential expiry; `signing_clock` stamps requests
        # and is the real wall clock unless a test sets it (the server checks the stamp
        # against its own clock).
        self._provider = as_provider(credentials)
        self._options = options
        self._clock = clock
        self._signing_clock = signing_clock or _utc_now
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # When a read was last throttled, per region (monotonic): pollers slow down on it.
        self._reads_throttled_at: dict[str, float] = {}
        # Told of every request that went out (action, region, error code or None): metrics.
        self._on_call = on_call

    def __repr__(self) -> str:
        return f"EcsClient(source={self._provider.source!r}, options={self._options!r})"

    @property
    def credentials_provider(self) -> CredentialsProvider:
        """Where the client's credentials come from."""
        return self._provider

    async def credentials(self) -> Credentials:
        """The credentials the next call will be signed with (renewed first if due)."""
        return await self._provider.current(self.fetch, self._clock.time())

    async def __aenter__(self) -> Self:
        self._ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # ----------------------------------------------------------------------- transport

    def _ensure_session(self) -> aiohttp.ClientSession:
        """The one session of this client, created on first use."""
        if self._closed:
            raise RuntimeError("EcsClient is closed")
        if self._session is None:
            options = self._options
            # Building a TLS context reads the system CA store (~25 ms): only when it can be
            # used. `True` is aiohttp's verifying default, never verification off.
            plain_http = (options.endpoint or "").startswith("http://")
            connector = aiohttp.TCPConnector(
                limit=options.max_connections,
                ssl=True if plain_http else self._ssl_context(),
                keepalive_timeout=_KEEPALIVE_S,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=options.connect_timeout_s,
                    sock_read=options.read_timeout_s,
                ),
                headers={"User-Agent": options.user_agent, "Accept": "application/json"},
                trust_env=False,
            )
        return self._session

    def _ssl_context(self) -> ssl.SSLContext:
        """System CAs plus `ca_bundle`; hostname and certificate checks always on."""
        context = ssl.create_default_context()
        bundle = self._options.ca_bundle
        if bundle is not None:
            try:
                context.load_verify_locations(cafile=str(bundle))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"CA bundle {bundle}: cannot be loaded ({type(exc).__name__})"
                ) from None
        return context

    async def _send(
        self, action: str, region: str, params: Mapping[str, str], reader: wire.Reader[R]
    ) -> R:
        """One signed attempt with the current credentials: the answer as `reader` reads it, or
        a CallError. A token the API refused as expired is renewed once and the call sent again
        (the refused one was not applied); CredentialsExpiredError when it cannot be."""
        creds = await self.credentials()
        try:
            return await self._send_signed(creds, action, region, params, reader)
        except ApiError as err:
            if not err.code.startswith("InvalidSecurityToken") or not self._provider.renewable:
                raise
            self._provider.invalidate()
            fresh = await self.credentials()
        return await self._send_signed(fresh, action, region, params, reader)

    async def _send_signed(
        self,
        creds: Credentials,
        action: str,
        region: str,
        params: Mapping[str, str],
        reader: wire.Reader[R],
    ) -> R:
        """One attempt signed with `creds`."""
        session = self._ensure_session()
        base = resolve_endpoint(
            region, network=self._options.network, override=self._options.endpoint
        )
        request = wire.sign_request(
            self._options.signature,
            base,
            action,
            params,
            creds,
            nonce=secrets.token_hex(16),  # 32 hex digits as uuid4().hex, at a quarter of its CPU
            moment=self._signing_clock(),
        )
        try:
            with self._clock.exchange():  # the simulated-time seam (`fanout.simtime`)
                async with session.post(
                    yarl.URL(request.url, encoded=True), headers=request.headers
                ) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after = response.headers.get(wire.RETRY_AFTER_HEADER)
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            # `from None`: aiohttp's exceptions may quote the URL, whose query is signed data.
            error = _transport_error(exc, action=action, region=region, host=request.host)
            if error.sent:
                self._called(action, region, error.code)
            raise error from None
        try:
            answer = wire.read_answer(
                reader, raw, status, retry_after, action=action, region=region, host=request.host
            )
        except CallError as err:
            self._called(action, region, err.code or f"HTTP{status}")
            raise
        self._called(action, region, None)
        return answer

    def _called(self, action: str, region: str, error_code: str | None) -> None:
        """Tell the observer of one request that went out."""
        if self._on_call is not None:
            self._on_call(action, region, error_code)

    async def _send_read_only(
        self, action: str, region: str, params: Mapping[str, str], reader: wire.Reader[R]
    ) -> R:
        """`_send` with bounded retries of transient failures (for calls that change nothing).

        Throttling has its own, longer back-off (past a throttled minute); other transient
        failures `describe_attempts` tries; anything else (permission, authentication, a bad
        parameter) is raised at once: retrying cannot help.
        """
        attempts = max(1, self._options.describe_attempts)
        transient = Backoff(self._options.retry_base_delay_s, _RETRY_CAP_S)
        throttled = Backoff(_THROTTLED_BASE_S, _THROTTLED_CAP_S)
        failures = throttles = 0
        while True:
            try:
                return await self._send(action, region, params, reader)
            except CallError as err:
                if err.is_throttling:
                    self._reads_throttled_at[region] = self._clock.monotonic()
                    throttles += 1
                    if throttles >= _THROTTLED_ATTEMPTS:
                        raise
                    delay_s = throttled.next_delay_s(err.retry_after_s, hint_cap_s=_THROTTLED_CAP_S)
                else:
                    failures += 1
                    if failures >= attempts or err.kind not in _TRANSIENT:
                        raise
                    delay_s = transient.next_delay_s(err.retry_after_s, hint_cap_s=_RETRY_CAP_S)
            await self._clock.sleep(delay_s)

    async def fetch(self, method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str]:
        """An unsigned request to a credentials service (the instance metadata service): its
        HTTP status and body. Transport failures are mapped like every other call's."""
        session = self._ensure_session()
        host = yarl.URL(url).host or url
        try:
            async with session.request(method, url, headers=dict(headers)) as response:
                return response.status, (await response.read()).decode(errors="replace")
        except (aiohttp.ClientError, OSError) as exc:
            raise _transport_error(exc, action="credentials", region="-", host=host) from None

    def reads_throttled_at(self, region: str) -> float:
        """When a Describe call in `region` was last answered with Throttling (monotonic; 0: never)."""
        return self._reads_throttled_at.get(region, 0.0)

    async def call_as(
        self, action: str, region: str, params: Mapping[str, object], reader: wire.Reader[R]
    ) -> R:
        """Call `action` in `region`, read by `reader`; `RegionId` is added. `Describe*` actions
        retry, others never."""
        flat = wire.flatten({"RegionId": region, **params})
        if action.startswith("Describe"):
            return await self._send_read_only(action, region, flat, reader)
        return await self._send(action, region, flat, reader)


def _transport_error(exc: BaseException, *, action: str, region: str, host: str) -> TransportError:
    """THE translation of aiohttp / socket / timeout errors: was anything sent?

    Only a failure to connect proves that nothing was written. Everything later (disconnect,
    reset, truncated body, read timeout) may have reached the server: ambiguous. The message names
    the action, region, host and exception class, never the URL (its query is signed data).
    """
    sent = not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    detail = type(exc).__name__
    os_error = getattr(exc, "os_error", exc)
    if isinstance(os_error, OSError) and os_error.strerror:
        detail += f": {os_error.strerror}"
    effect = "the server may have received it" if sent else "nothing was sent"
    return TransportError(f"{action} in {region} via {host}: {detail} ({effect})", sent=sent)

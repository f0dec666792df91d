"""The ECS RPC wire format as pure functions: parameters in, signed request out; JSON in, values out.

- `flatten` turns Python values into the flat string map the API expects (`aliyun-api-facts.md` 1.3):
  lists become `Key.1..N`, lists of dicts `Key.N.Sub`, dicts compact JSON, booleans `true`/`false`.
- `sign_request` adds the common parameters or headers of either signing scheme (`rpc` = HMAC-SHA1
  V1, `v3` = ACS3-HMAC-SHA256) and returns the exact URL to send: its query *is* the canonical
  encoding that was signed, so no byte differs between what was signed and what is sent.
- `decode_answer` turns an HTTP status and body into the JSON object, or the `ApiError` it carries;
  `read_answer` then turns it into the action's values with a `Reader`, which may decode a 2xx
  body straight from its bytes (`fanout.aliyun.decoders`).
- The answers' values (`InstanceResult`, `Instance`, ...) and their parsers are in
  `fanout.aliyun.responses`; the values are re-exported here.

No clock, randomness or I/O: callers pass the nonce and the time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Generic, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from fanout.aliyun.command import CommandSpec

# The response values live in `responses`; they are re-exported here, where callers look first.
from fanout.aliyun.responses import (
    AgentStatus,
    Command,
    Instance,
    InstanceResult,
    Invocation,
    InvokeResult,
    Page,
)
from fanout.aliyun.signing import EMPTY_SHA256, canonical_query, rpc_signature, v3_authorization
from fanout.errors import ApiError, TransportError

__all__ = [
    "API_VERSION",
    "JSON_OBJECT",
    "RETRY_AFTER_HEADER",
    "AgentStatus",
    "Command",
    "Instance",
    "InstanceResult",
    "Invocation",
    "InvokeResult",
    "KeyPair",
    "Page",
    "Reader",
    "Scheme",
    "SignedRequest",
    "compact_json",
    "decode_answer",
    "flatten",
    "format_timestamp",
    "host_header",
    "invoke_command_params",
    "read_answer",
    "rpc_params",
    "sign_request",
]

API_VERSION = "2014-05-26"
RETRY_AFTER_HEADER = "x-acs-retry-after"  # milliseconds
# Longest server message kept in an ApiError.
_MESSAGE_MAX = 500
# Where a server message starts quoting the signed request back (it holds every parameter).
_SIGNED_ECHO = re.compile(r"(server\s+)?(string\s*to\s*sign|canonical\s*request)", re.IGNORECASE)
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_DEFAULT_PORTS = {"http": 80, "https": 443}

Scheme = Literal["v3", "rpc"]
R = TypeVar("R")


class KeyPair(Protocol):
    """What signing needs from credentials (`fanout.aliyun.credentials.Credentials` fits)."""

    @property
    def access_key_id(self) -> str: ...
    @property
    def access_key_secret(self) -> str: ...
    @property
    def security_token(self) -> str | None: ...


def compact_json(value: object) -> str:
    """JSON as the official SDK writes it: no spaces, non-ASCII kept raw (encoded later)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def flatten(params: Mapping[str, object]) -> dict[str, str]:
    """The flat `name -> string` map of `params`; None values are left out."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if type(value) is str:  # the common case, already flat (hot path: ~60 per request)
            out[key] = value
        elif isinstance(value, list | tuple) and all(type(v) is str for v in value):
            out.update(zip(_numbered(key, len(value)), value, strict=True))  # Key.1, Key.2, ...

        else:
            _flatten_into(out, key, value)
    return out


def _flatten_into(out: dict[str, str], key: str, value: object) -> None:
    """Write one value under `key`, expanding lists 1-based."""
    if value is None:
        return
    if isinstance(value, bool):  # before int: bool is an int
        out[key] = "true" if value else "false"
    elif isinstance(value, str):
        out[key] = value
    elif isinstance(value, int | float):
        out[key] = str(value)
    elif isinstance(value, Mapping):
        out[key] = compact_json(dict(value))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value, start=1):
            if isinstance(item, Mapping):
                for sub, sub_value in item.items():
                    _flatten_into(out, f"{key}.{index}.{sub}", sub_value)
            else:
                _flatten_into(out, f"{key}.{index}", item)
    else:
        raise TypeError(f"parameter {key}: cannot send a {type(value).__name__}")


def format_timestamp(moment: datetime) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ`; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return _format_second(moment.replace(microsecond=0, tzinfo=None))


@lru_cache(maxsize=8)  # one call per request, the same second for hundreds of them
def _format_second(moment: datetime) -> str:
    return moment.strftime(_TIMESTAMP_FORMAT)


def invoke_command_params(
    region: str,
    spec: CommandSpec,
    instance_ids: Sequence[str],
    *,
    client_token: str | None = None,
) -> dict[str, str]:
    """InvokeCommand's business parameters; the same input always gives the same bytes."""
    return flatten(
        {
            "RegionId": region,
            "CommandId": spec.command_id,
            "InstanceId": list(instance_ids),
            "ClientToken": client_token,
            "Parameters": dict(spec.parameters) if spec.parameters else None,
            "Timed": spec.timed,
            "Frequency": spec.frequency,
            "RepeatMode": spec.repeat_mode,
            "Timeout": spec.timeout_s,
            "Username": spec.username,
            "WorkingDir": spec.working_dir,
            "WindowsPasswordName": spec.windows_password_name,
            "ContainerId": spec.container_id,
            "ContainerName": spec.container_name,
            "TerminationMode": spec.termination_mode,
            "Launcher": spec.launcher,
            "ResourceGroupId": spec.resource_group_id,
            "OssOutputDelivery": spec.oss_output_delivery,
            "Tag": [{"Key": k, "Value": v} for k, v in (spec.invocation_tags or {}).items()],
        }
    )


def rpc_params(
    action: str, params: Mapping[str, str], key: KeyPair, *, nonce: str, moment: datetime
) -> dict[str, str]:
    """`params` plus the V1 common parameters (without `Signature`)."""
    full = dict(params)
    full.update(
        {
            "Action": action,
            "Version": API_VERSION,
            "Format": "JSON",
            "AccessKeyId": key.access_key_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": nonce,
            "Timestamp": format_timestamp(moment),
        }
    )
    if key.security_token:
        full["SecurityToken"] = key.security_token
    return full


@lru_cache(maxsize=64)
def host_header(base_url: str) -> str:
    """The `host` value for `base_url`: lowercase host, `:port` only when not the default."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    return host


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """One signed POST; `url` and `headers` carry secrets, so `repr` shows only the host."""

    host: str
    url: str = field(repr=False)
    headers: dict[str, str] = field(repr=False)
    method: str = "POST"


def sign_request(
    scheme: Scheme,
    base_url: str,
    action: str,
    params: Mapping[str, str],
    key: KeyPair,
    *,
    nonce: str,
    moment: datetime,
) -> SignedRequest:
    """The request to send for `action`: URL (canonical query) and headers, signed by `scheme`."""
    root = _root(base_url)
    host = host_header(base_url)

    if scheme == "rpc":
        query = rpc_params(action, params, key, nonce=nonce, moment=moment)
        query["Signature"] = rpc_signature(key.access_key_secret, "POST", query)
        return SignedRequest(host, f"{root}?{canonical_query(query)}", {"host": host})
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": API_VERSION,
        "x-acs-date": format_timestamp(moment),
        "x-acs-signature-nonce": nonce,
        "x-acs-content-sha256": EMPTY_SHA256,
    }
    if key.security_token:
        headers["x-acs-accesskey-id"] = key.access_key_id
        headers["x-acs-security-token"] = key.security_token
    query_string = canonical_query(params)  # signed and sent: computed once, byte-identical
    headers["Authorization"] = v3_authorization(
        key.access_key_id,
        key.access_key_secret,
        "POST",
        params,
        headers,
        query_string=query_string,
    )
    url = f"{root}?{query_string}" if params else root
    return SignedRequest(host, url, headers)


def decode_answer(
    raw: bytes, status: int, retry_after: str | None, *, action: str, region: str, host: str
) -> dict[str, Any]:
    """The JSON body of a 2xx answer; for any other status, the ApiError it carries."""
    body = _json_object(raw)
    if 200 <= status < 300:
        if body is None:
            raise TransportError(
                f"{action} in {region} via {host}: HTTP {status} with an unreadable body "
                "(the server may have applied it)",
                sent=True,
                http_status=status,
            )
        return body
    code = str(body.get("Code") or "") if body else ""
    message = _safe_message(str(body.get("Message") or "")) if body else ""
    if not code:
        code = "InternalError.Unparsable" if status >= 500 else "InvalidResponse.Unparsable"
        message = f"HTTP {status} from {host} without an API error body"
    denied = body.get("AccessDeniedDetail") if body else None
    auth_action = denied.get("AuthAction") if isinstance(denied, dict) else None
    raise ApiError(
        code=code,
        message=message,
        http_status=status,
        request_id=str(body.get("RequestId") or "") if body else None,
        action=action,
        retry_after_s=_retry_after_s(retry_after),
        auth_action=str(auth_action) if auth_action else None,
        region=region,
    )


@dataclass(frozen=True, slots=True)
class Reader(Generic[R]):
    """How a 2xx answer becomes an action's value: `parse` of its JSON object, unless `fast`,
    given the body's bytes, returns the value itself (None: not an answer it can read)."""

    parse: Callable[[dict[str, Any]], R]
    fast: Callable[[bytes], R | None] | None = None


def _the_object(body: dict[str, Any]) -> dict[str, Any]:
    return body


JSON_OBJECT = Reader(_the_object)  # the answer's JSON object, as it is


def read_answer(
    reader: Reader[R],
    raw: bytes,
    status: int,
    retry_after: str | None,
    *,
    action: str,
    region: str,
    host: str,
) -> R:
    """`reader`'s value of a 2xx answer; for any other status, the ApiError it carries."""
    if reader.fast is not None and 200 <= status < 300:
        value = reader.fast(raw)
        if value is not None:
            return value
    body = decode_answer(raw, status, retry_after, action=action, region=region, host=host)
    return reader.parse(body)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """`raw` parsed as a JSON object, None if it is not one."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _safe_message(message: str) -> str:
    """The server's message without any echo of the signed request, and not too long.

    On SignatureDoesNotMatch the server quotes its string to sign (V1) or canonical request (V3),
    which contain every parameter (secret `Parameters` values, the STS token): cut it off.
    """
    match = _SIGNED_ECHO.search(message)
    if match:
        message = (
            message[: match.start()].rstrip(" :,.") + " (server's copy of the request omitted)"
        )
    return message[:_MESSAGE_MAX]


def _retry_after_s(header: str | None) -> float | None:
    """`x-acs-retry-after` (milliseconds) in seconds, None if absent or not a number."""
    if not header:
        return None
    try:
        return max(0.0, float(header) / 1000)
    except ValueError:
        return None


@lru_cache(maxsize=64)
def _root(base_url: str) -> str:
    """`scheme://netloc/` of an endpoint (one per region: computed once each)."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/"


@lru_cache(maxsize=64)
def _numbered(key: str, count: int) -> tuple[str, ...]:
    """`Key.1` ... `Key.count` (InstanceId.1..50 on every InvokeCommand: built once)."""
    return tuple(f"{key}.{n}" for n in range(1, count + 1))

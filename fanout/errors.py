"""Every error fanout raises, as one tree.

```
FanoutError
 ├── UsageError              bad input or configuration; nothing was sent        exit 2
 │    ├── TargetError        a target list line (carries file:line)
 │    ├── ConfigError        a settings file, variable or flag
 │    └── CredentialsError   no usable access key, or a malformed profile
 ├── DeclinedError           the confirmation was answered no; nothing was sent  exit 5
 ├── LedgerError             the ledger cannot be opened, read or written as asked  exit 2
 │    ├── TransitionError    a state change that the state machine forbids
 │    ├── RunNotFoundError   no run with that id in the ledger                 exit 2
 │    ├── LeaseLostError     another runner took the run over: this one's writes are refused
 │    └── LedgerWriteError   it failed while a run was driven: calls may have gone out (what
 │                           went out is recorded, written ahead)             exit 6
 └── CallError               one API call did not succeed; `.kind` says what to do next,
      │                      `.request_id` / `.http_status` what the server said (None: unknown)
      ├── ApiError           the server answered with an error body (Code, HTTP status, RequestId)
      ├── TransportError     no complete answer: never connected, or lost after sending
      └── CredentialsExpiredError  the credentials expired and could not be renewed: nothing
                             was sent (FATAL: exit 6, resumable once there are new ones)
```

Foreign exceptions (aiohttp, socket, asyncio timeouts) are translated into `TransportError`
in exactly one place, `fanout.aliyun.client`.
"""

from __future__ import annotations

import datetime
import enum

__all__ = [
    "ApiError",
    "CallError",
    "CallKind",
    "ConfigError",
    "CredentialsError",
    "CredentialsExpiredError",
    "DeclinedError",
    "ExitCode",
    "FanoutError",
    "LeaseLostError",
    "LedgerError",
    "LedgerWriteError",
    "RunNotFoundError",
    "TargetError",
    "TransitionError",
    "TransportError",
    "UsageError",
    "classify_api_error",
    "is_permission_code",
]


class ExitCode(enum.IntEnum):
    """The process exit codes documented in the README and `fanout --help`."""

    OK = 0
    FINISHED_WITH_FAILURES = 1
    BAD_INPUT = 2
    HALTED = 3
    QUOTA = 4
    INTERRUPTED = 5
    FATAL_API = 6
    INTERNAL = 70  # a bug: any other exception; sysexits' EX_SOFTWARE


class CallKind(enum.StrEnum):
    """What the caller should do after a failed call."""

    RETRYABLE = "retryable"  # definitely not applied, or safe to repeat: back off and send again
    AMBIGUOUS = "ambiguous"  # may have been applied: re-send only with the same ClientToken
    PER_INSTANCE = "per_instance"  # some named instances are unusable: isolate them
    TOO_MANY_INSTANCES = "too_many_instances"  # more instances than one call takes: split
    QUOTA = "quota"  # the daily InvokeCommand quota of the region is spent
    BAD_REQUEST = "bad_request"  # the parameters are wrong: every batch would fail the same way
    FATAL = "fatal"  # credentials, permission, unknown command: nothing more may be sent


class FanoutError(Exception):
    """Root of every error fanout raises on purpose."""


class UsageError(FanoutError):
    """Bad input or configuration, found before anything was sent."""


class TargetError(UsageError):
    """A target could not be read; `location` is `file:line` (or `--instance-id`)."""

    def __init__(self, location: str, problem: str) -> None:
        super().__init__(f"{location}: {problem}")
        self.location = location
        self.problem = problem


class ConfigError(UsageError):
    """A setting in a file, the environment or a flag is unknown or invalid."""


class CredentialsError(UsageError):
    """No usable credentials were found, or a credentials source is malformed."""


class DeclinedError(FanoutError):
    """The operator answered no to the confirmation; nothing was sent."""


class LedgerError(FanoutError):
    """The ledger cannot do what was asked."""


class TransitionError(LedgerError):
    """A state change that the state machine does not allow."""


class RunNotFoundError(LedgerError):
    """No run with this id exists in the ledger."""


class LeaseLostError(LedgerError):
    """Another runner took the run over (`resume --force`, an expired lease): this runner's
    writes are refused, and it stops dispatching."""


class LedgerWriteError(LedgerError):
    """The ledger failed while a run was being driven, after calls may have gone out.

    Never "bad input, nothing sent" (exit 2): fatal, exit 6. Every call that went out was
    recorded before it was sent, so `fanout resume` continues once the ledger is fixed.
    """


class CallError(FanoutError):
    """One API call failed; `kind` tells the runner what may happen next.

    `request_id` and `http_status` are the server's, None when no answer told them (every
    subclass has both, so a caller records them without asking which error it holds).
    """

    kind: CallKind
    code: str
    retry_after_s: float | None
    request_id: str | None
    http_status: int | None

    def __init__(
        self,
        message: str,
        *,
        kind: CallKind,
        code: str,
        retry_after_s: float | None = None,
        request_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.retry_after_s = retry_after_s
        self.request_id = request_id or None
        self.http_status = http_status

    @property
    def is_throttling(self) -> bool:
        """True when the server asked us to slow down."""
        return self.code.startswith("Throttling")

    @property
    def is_authentication(self) -> bool:
        """True when the server did not accept who signed the call (key, secret, token, clock):
        every later call would be refused the same way."""
        return self.code.startswith(_AUTHENTICATION_PREFIXES)


class ApiError(CallError):
    """The server answered with an error body."""

    http_status: int

    def __init__(
        self,
        *,
        code: str,
        message: str,
        http_status: int,
        request_id: str | None = None,
        action: str = "",
        retry_after_s: float | None = None,
        auth_action: str | None = None,
        region: str | None = None,
    ) -> None:
        kind = classify_api_error(code, http_status)
        text = f"{action + ': ' if action else ''}{code} (HTTP {http_status}): {message}"
        if region and code.startswith(_REGION_CODES):  # the server's message does not name it
            text += f" (region {region}: not served by this endpoint or account)"
        permission = auth_action or (f"ecs:{action}" if action else None)
        if is_permission_code(code) and permission:
            text += f"; the RAM user or role needs the permission {permission}"
        if request_id:
            text += f" [RequestId {request_id}]"
        super().__init__(
            text,
            kind=kind,
            code=code,
            retry_after_s=retry_after_s,
            request_id=request_id,
            http_status=http_status,
        )
        self.api_message = message
        self.action = action
        self.permission = permission if is_permission_code(code) else None


class TransportError(CallError):
    """No complete answer arrived; `kind` is RETRYABLE if nothing was sent, else AMBIGUOUS.

    `http_status` is set when a status line arrived but the body could not be read.
    """

    def __init__(self, message: str, *, sent: bool, http_status: int | None = None) -> None:
        kind = CallKind.AMBIGUOUS if sent else CallKind.RETRYABLE
        code = "Transport.Ambiguous" if sent else "Transport.ConnectFailed"
        super().__init__(message, kind=kind, code=code, http_status=http_status)
        self.sent = sent


class CredentialsExpiredError(CallError):
    """The credentials expired (or the API refused them as expired) and could not be renewed.

    Raised before a call is sent, so nothing went out: the run halts (exit 6), and `fanout
    resume` continues once new credentials can be had.
    """

    def __init__(self, source: str, expiration: float | None, why: str) -> None:
        when = "" if expiration is None else f" at {_utc(expiration)}"
        super().__init__(
            f"the credentials from {source} expired{when} and could not be renewed ({why}); "
            "renew them, then `fanout resume` the run (one not stored yet: start it again)",
            kind=CallKind.FATAL,
            code="Credentials.Expired",
        )
        self.source = source
        self.expiration = expiration


def _utc(epoch: float) -> str:
    """Epoch seconds as ISO-8601 UTC, to the second."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


# Codes whose meaning does not follow from the HTTP status alone.
_RETRYABLE_PREFIXES = ("InternalError", "ServiceUnavailable", "Throttling", "UnknownError")
_RETRYABLE_CODES = frozenset({"IdempotentProcessing", "SignatureNonceUsed"})
# Codes with a kind of their own.
_KIND_OF_CODE = {
    "Invocation.ExceedQuota": CallKind.QUOTA,
    "InvalidInstance.NotFound": CallKind.PER_INSTANCE,
    "InvalidInstance.NotMatch": CallKind.PER_INSTANCE,
    # Refused before anything ran: the account's per-call instance limit is below the batch.
    "InstanceIds.ExceedLimit": CallKind.TOO_MANY_INSTANCES,
}
_AUTHENTICATION_PREFIXES = (
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "InvalidAccessKeySecret",
    "InvalidSecurityToken",
    "InvalidTimeStamp",
)
# A RAM identity without the permission for the action (ECS answers Forbidden.RAM; other
# products NoPermission or NotAuthorized: RAM's "troubleshoot an access denied error").
_PERMISSION_PREFIXES = ("Forbidden", "NoPermission", "NotAuthorized")
_FATAL_PREFIXES = (
    *_PERMISSION_PREFIXES,
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidAccessKeyId",
    "InvalidAccessKeySecret",
    "InvalidSecurityToken",
    "InvalidTimeStamp",
    "InvalidCmdId",
    "InvalidRegionId",
    "RegionId.ApiNotSupported",
    "Operation.Forbidden",
    "TemporaryAccessKey",
    "IdempotentParameterMismatch",
    "ParameterStore.NoPermission",
)


# Refusals of the request's RegionId itself (the target file's region, or --region).
_REGION_CODES = ("InvalidRegionId", "RegionId.ApiNotSupported")


def is_permission_code(code: str) -> bool:
    """True for a RAM permission refusal (Forbidden.RAM, NoPermission, ...)."""
    return code.startswith(_PERMISSION_PREFIXES)


def classify_api_error(code: str, http_status: int) -> CallKind:
    """Map an Alibaba Cloud error `Code` (and HTTP status) onto what the runner should do."""
    if code in _KIND_OF_CODE:
        return _KIND_OF_CODE[code]
    if code in _RETRYABLE_CODES or code.startswith(_RETRYABLE_PREFIXES):
        return CallKind.RETRYABLE
    if code.startswith(_FATAL_PREFIXES):
        return CallKind.FATAL
    if http_status >= 500:  # an unknown server-side failure: the token makes a retry safe
        return CallKind.RETRYABLE
    return CallKind.BAD_REQUEST

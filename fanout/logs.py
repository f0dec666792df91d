"""structlog, configured once: console lines on a TTY, JSON otherwise, secrets redacted.

Redaction is a processor, not a hope (invariant I5): every value registered with
`register_secret` (access key secret, STS token, secret parameter values) is replaced by `***` in
every event, whatever field it hides in.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from fanout.aliyun.keys import Credentials, CredentialSource
from fanout.redaction import REDACTED, redact_text

__all__ = ["configure_logging", "redact", "register_secret"]

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never log this value, however short: a short one (allowed only by --allow-short-secret)
    is redacted even where that mangles ordinary text."""
    if value:
        _SECRETS.add(value)


def register_credentials(source: CredentialSource) -> None:
    """Never log these credentials' secrets, nor those of every renewal to come."""
    if isinstance(source, Credentials):
        register_secret(source.access_key_secret)
        register_secret(source.security_token)
        return
    source.on_new = register_credentials


def redact(text: str) -> str:
    """`text` with every registered secret replaced (for messages printed outside the logs)."""
    return redact_text(text, _SECRETS) if _SECRETS else text


def _redact_value(value: object) -> object:
    """A value with every registered secret replaced."""
    if isinstance(value, str):
        return redact_text(value, _SECRETS) if _SECRETS else value
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if value is not None and not isinstance(value, int | float | bool) and _SECRETS:
        text = str(value)
        redacted = redact_text(text, _SECRETS)
        return redacted if redacted != text else value
    return value


def redact_secrets(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact every registered secret in every field."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(value)
    return event_dict


def configure_logging(level: str = "warning", *, stream: TextIO | None = None) -> None:
    """Console rendering on a TTY, JSON lines otherwise; on stderr (stdout is for --json)."""
    stream = stream or sys.stderr
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if stream.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


__all__ += ["REDACTED", "redact_secrets"]

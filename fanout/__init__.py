"""fanout: run one Alibaba Cloud Cloud Assistant command across a whole ECS fleet, safely.

The public API, for runbooks (see `fanout.api`)::

    from fanout import Target, rollout_blocking
    outcome = rollout_blocking([Target("cn-hangzhou", "i-...")], command_id="c-...")

Names are loaded on first use, so importing one stage (e.g. `fanout.targets`) stays light; that
includes `__version__`, read from the installed metadata only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fanout._lazy import lazy_getattr

if TYPE_CHECKING:
    from fanout._version import __version__
    from fanout.aliyun.credentials import Credentials, load_credentials
    from fanout.api import resume, resume_blocking, rollout, rollout_blocking, status
    from fanout.errors import (
        ApiError,
        CallError,
        ConfigError,
        CredentialsError,
        ExitCode,
        FanoutError,
        LedgerError,
        TargetError,
        UsageError,
    )
    from fanout.runner import RunOutcome
    from fanout.settings import Settings, load_settings
    from fanout.targets import Target

_EXPORTS = {
    "ApiError": "fanout.errors",
    "CallError": "fanout.errors",
    "ConfigError": "fanout.errors",
    "Credentials": "fanout.aliyun.credentials",
    "CredentialsError": "fanout.errors",
    "ExitCode": "fanout.errors",
    "FanoutError": "fanout.errors",
    "LedgerError": "fanout.errors",
    "RunOutcome": "fanout.runner",
    "Settings": "fanout.settings",
    "Target": "fanout.targets",
    "TargetError": "fanout.errors",
    "UsageError": "fanout.errors",
    "__version__": "fanout._version",
    "load_credentials": "fanout.aliyun.credentials",
    "load_settings": "fanout.settings",
    "resume": "fanout.api",
    "resume_blocking": "fanout.api",
    "rollout": "fanout.api",
    "rollout_blocking": "fanout.api",
    "status": "fanout.api",
}

__all__ = [
    "ApiError",
    "CallError",
    "ConfigError",
    "Credentials",
    "CredentialsError",
    "ExitCode",
    "FanoutError",
    "LedgerError",
    "RunOutcome",
    "Settings",
    "Target",
    "TargetError",
    "UsageError",
    "__version__",
    "load_credentials",
    "load_settings",
    "resume",
    "resume_blocking",
    "rollout",
    "rollout_blocking",
    "status",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)

"""The Python API for runbooks: the same rollouts as the CLI, from code.

```python
from fanout import Target, rollout_blocking

outcome = rollout_blocking(
    [Target("cn-hangzhou", "i-bp1aaaaaaaaaaaaaaaa1")],
    command_id="c-xxx",
    parameters={"version": "1.2.3"},
    waves="1,10%,100%",
    max_errors="2%",
)
if outcome.exit_code != 0:
    print(outcome.message)
```
Settings and credentials default to what the CLI would load (config file, `FANOUT_*`
environment, the credentials chain); pass them to override. No signal handlers are installed.
Nothing is ever written to stdout: unless the application configured structlog itself, fanout
logs warnings and errors to stderr.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import structlog

from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials, load_credentials
from fanout.launch import start_run
from fanout.ledger import LedgerStore, default_ledger_location, open_ledger
from fanout.logs import configure_logging, register_secret
from fanout.redaction import is_secret_key
from fanout.report import status_document
from fanout.request import ResumeRequest, RunRequest
from fanout.runner import RunOutcome, resume_run
from fanout.settings import Settings, load_settings
from fanout.targets import Target

__all__ = [
    "resume",
    "resume_blocking",
    "rollout",
    "rollout_blocking",
    "status",
]

OnEvent = Callable[[str, Mapping[str, object]], None]


def _logs_to_stderr() -> None:
    """Unless the application configured structlog, log warnings to stderr: never stdout.

    (structlog's own default prints to stdout, which a runbook may be parsing.)
    """
    if not structlog.is_configured():
        configure_logging("warning")


def _prepare(
    settings: Settings | None, credentials: Credentials | None
) -> tuple[Settings, Credentials, LedgerStore]:
    """Defaults as the CLI loads them; secrets registered for redaction; logs on stderr."""
    _logs_to_stderr()
    settings = settings or load_settings()
    credentials = credentials or load_credentials(profile=settings.profile)
    register_secret(credentials.access_key_secret)
    register_secret(credentials.security_token)
    return settings, credentials, open_ledger(settings.ledger or default_ledger_location())


async def rollout(
    targets: Sequence[Target],
    *,
    command_id: str,
    parameters: Mapping[str, str] | None = None,
    secret_keys: Sequence[str] = (),
    waves: str | None = None,
    wave_order: str = "spread",
    max_errors: str | None = None,
    wave_max_failures: str | None = None,
    wait: bool = True,
    preflight: bool = True,
    strict: bool = False,
    timeout_s: int | None = None,
    settings: Settings | None = None,
    credentials: Credentials | None = None,
    on_event: OnEvent | None = None,
) -> RunOutcome:
    """Plan, store and run a rollout; the outcome carries the run id and the exit code."""
    settings, credentials, store = _prepare(settings, credentials)
    keys = tuple(sorted({*secret_keys, *(k for k in parameters or {} if is_secret_key(k))}))
    for key in keys:
        register_secret((parameters or {}).get(key))
    request = RunRequest(
        targets=tuple(targets),
        spec=CommandSpec(command_id=command_id, parameters=parameters, timeout_s=timeout_s),
        secret_keys=keys,
        waves=waves,
        wave_order=wave_order,
        max_errors=max_errors,
        wave_max_failures=wave_max_failures,
        preflight=preflight,
        wait=wait,
        strict=strict,
    )
    try:
        return await start_run(
            settings, credentials, store, request, emit=on_event or _quiet, handle_signals=False
        )
    finally:
        store.close()


async def resume(
    run_id: str,
    *,
    secret_params: Mapping[str, str] | None = None,
    wait: bool | None = None,
    settings: Settings | None = None,
    credentials: Credentials | None = None,
    on_event: OnEvent | None = None,
) -> RunOutcome:
    """Continue a stored run (same tokens: nothing is invoked twice)."""
    settings, credentials, store = _prepare(settings, credentials)
    for value in (secret_params or {}).values():
        register_secret(value)
    try:
        return await resume_run(
            settings,
            credentials,
            store,
            ResumeRequest(run_id, secret_params or {}, wait=wait),
            emit=on_event or _quiet,
            handle_signals=False,
        )
    finally:
        store.close()


def rollout_blocking(targets: Sequence[Target], **kwargs: Any) -> RunOutcome:
    """`rollout` for code without an event loop."""
    return anyio.run(lambda: rollout(targets, **kwargs), backend="asyncio")


def resume_blocking(run_id: str, **kwargs: Any) -> RunOutcome:
    """`resume` for code without an event loop."""
    return anyio.run(lambda: resume(run_id, **kwargs), backend="asyncio")


def status(run_id: str, *, settings: Settings | None = None) -> dict[str, object]:
    """The `fanout status --json` document of a run."""
    _logs_to_stderr()
    settings = settings or load_settings()
    store = open_ledger(settings.ledger or default_ledger_location())
    try:
        run = store.get_run(run_id)
        return status_document(run, store.instance_counts(run_id), store.batch_counts(run_id))
    finally:
        store.close()


def _quiet(_kind: str, _data: Mapping[str, object]) -> None:
    """The default event sink: nothing."""

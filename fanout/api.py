"""The Python API for runbooks: the same rollouts as the CLI, from code.

```python
from fanout import Target, rollout_blocking

outcome = rollout_blocking(
    [Target("cn-hangzhou", "i-bp1aaaaaaaaaaaaaaaa1"), Target("cn-beijing", "i-2ze...")],
    script="deploy.sh",  # or command_name="deploy", or command_id={"cn-hangzhou": "c-..."}
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

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from fanout import eventloop
from fanout.aliyun.command import SPEC_OPTIONS, CommandSpec, check_options, oss_output_delivery
from fanout.aliyun.credentials import CredentialSource, load_credentials
from fanout.clock import SYSTEM_CLOCK
from fanout.errors import ConfigError, RunNotFoundError
from fanout.launch import linked_runs, prepare_run, store_and_drive
from fanout.ledger import (
    NO_LEDGER,
    LedgerStore,
    default_ledger_location,
    open_existing_ledger,
    open_ledger,
)
from fanout.linked import ROLLBACK_SCOPES, linked_entries
from fanout.logs import configure_logging, register_credentials, register_secret
from fanout.redaction import is_secret_key
from fanout.report import status_document
from fanout.request import ResumeRequest, RunRequest
from fanout.runner import RunOutcome, resume_run
from fanout.settings import Settings, load_settings
from fanout.sources import (
    DEFAULT_SCRIPT_TIMEOUT_S,
    CommandIdMap,
    CommandIdSource,
    CommandNameSource,
    CommandSource,
    ScriptSource,
    check_script,
    label,
    type_for_path,
)
from fanout.targets import Target
from fanout.validate import check_schedule

__all__ = [
    "resume",
    "resume_blocking",
    "rollout",
    "rollout_blocking",
    "status",
]

OnEvent = Callable[[str, Mapping[str, object]], None]
# A linked run's command: {"command_name": ...}, {"command_id": id or {region: id}} or
# {"script": path} - one key, as the run's own command sources.
LinkedCommand = Mapping[str, "str | Path | Mapping[str, str]"]


def _logs_to_stderr() -> None:
    """Unless the application configured structlog, log warnings to stderr: never stdout.

    (structlog's own default prints to stdout, which a runbook may be parsing.)
    """
    if not structlog.is_configured():
        configure_logging("warning")


def _defaults(
    settings: Settings | None, credentials: CredentialSource | None
) -> tuple[Settings, CredentialSource]:
    """Defaults as the CLI loads them; secrets registered for redaction (renewed ones too);
    logs on stderr."""
    _logs_to_stderr()
    settings = settings or load_settings()
    credentials = credentials or load_credentials(
        profile=settings.profile, metadata_endpoint=settings.metadata_endpoint
    )
    register_credentials(credentials)
    return settings, credentials


def _ledger(settings: Settings) -> LedgerStore:
    """The configured ledger, opened to write."""
    return open_ledger(settings.ledger or default_ledger_location())


async def rollout(
    targets: Sequence[Target],
    *,
    command_id: str | Mapping[str, str] | None = None,
    command_name: str | None = None,
    provider: str | None = None,
    script: str | Path | None = None,
    script_type: str | None = None,
    command_timeout_s: int | None = None,
    enable_parameter: bool = False,
    parameters: Mapping[str, str] | None = None,
    secret_keys: Sequence[str] = (),
    waves: str | None = None,
    wave_order: str = "spread",
    max_errors: str | None = None,
    wave_max_failures: str | None = None,
    wave_wait_s: float = 0.0,
    wave_check: LinkedCommand | None = None,
    on_halt: LinkedCommand | None = None,
    on_halt_scope: str = "succeeded",
    wait: bool = True,
    preflight: bool = True,
    strict: bool = False,
    allow_short_secret: bool = False,
    settings: Settings | None = None,
    credentials: CredentialSource | None = None,
    on_event: OnEvent | None = None,
    **options: Any,
) -> RunOutcome:
    """Check, plan, store and run a rollout; the outcome carries the run id and the exit code.

    The command source, exactly one (as the CLI's): `command_id` (one id valid in every target
    region, or a `{region: id}` mapping), `command_name` (resolved per region; with `provider`
    a public command, as is an `ACS-...` `command_id`), or `script` (a file fanout creates as a
    command in each region and reuses: `script_type`, `command_timeout_s`, `enable_parameter`).
    `wave_wait_s` is the bake time after each wave; `wave_check` a command run on each wave's
    succeeded instances at its end (a linked run, its failures counted against the wave's
    budget), `on_halt` one run on the instances that succeeded (`on_halt_scope="all-invoked"`:
    every invoked one) when the run halts on its budget; each a `{"command_name": ...}`,
    `{"command_id": ...}` (an id, or `{region: id}`) or `{"script": path}`.
    `options` are InvokeCommand's, named as the fields of `fanout.aliyun.command.CommandSpec`
    (`timeout_s`, `username`, `working_dir`, `container_id`, `termination_mode`,
    `oss_output_delivery`, `invocation_tags`, ...), checked as the CLI checks its flags
    (`ConfigError`, nothing sent, nothing stored): `timeout_s` 10..86400, parameter names and
    values, secret values of at least 8 characters unless `allow_short_secret`.
    """
    settings, credentials = _defaults(settings, credentials)
    keys = tuple(sorted({*secret_keys, *(k for k in parameters or {} if is_secret_key(k))}))
    for key in keys:
        register_secret((parameters or {}).get(key))
    source = _source(
        command_id,
        command_name,
        provider,
        _script(script, script_type, command_timeout_s, enable_parameter, options),
        parameters,
        settings.content_limit_bytes,
    )
    request = RunRequest(
        targets=tuple(targets),
        spec=_spec(label(source), parameters, options),
        source=source,
        secret_keys=keys,
        waves=waves,
        wave_order=wave_order,
        max_errors=max_errors,
        wave_max_failures=wave_max_failures,
        wave_wait_s=wave_wait_s,
        wave_check=_linked("wave_check", wave_check, settings.content_limit_bytes),
        on_halt=_linked("on_halt", on_halt, settings.content_limit_bytes),
        on_halt_scope=_scope(on_halt_scope),
        preflight=preflight,
        wait=wait,
        strict=strict,
        allow_short_secret=allow_short_secret,
    )
    # Checked and preflighted before the ledger is opened to write: a refusal leaves nothing.
    location = settings.ledger or default_ledger_location()
    reader = open_existing_ledger(location)
    try:
        prepared = await prepare_run(settings, credentials, request, reader=reader or NO_LEDGER)
    finally:
        if reader is not None:
            reader.close()
    store = open_ledger(location)
    try:
        return await store_and_drive(
            settings, credentials, store, prepared, emit=on_event or _quiet, handle_signals=False
        )
    finally:
        store.close()


def _spec(
    command_id: str, parameters: Mapping[str, str] | None, options: Mapping[str, Any]
) -> CommandSpec:
    """The InvokeCommand options of `rollout`, checked (`check_options`, the schedule)."""
    unknown = sorted(set(options) - set(SPEC_OPTIONS))
    if unknown:
        raise ConfigError(
            f"rollout(): unknown option {', '.join(unknown)} (InvokeCommand's: "
            f"{', '.join(SPEC_OPTIONS)})"
        )
    values = dict(options)
    if values.get("oss_output_delivery"):
        values["oss_output_delivery"] = oss_output_delivery(str(values["oss_output_delivery"]))
    spec = CommandSpec(command_id=command_id, parameters=parameters, **values)
    check_options(spec)
    check_schedule(spec, time.time())
    return spec


def _linked(
    what: str, given: LinkedCommand | None, content_limit_bytes: int
) -> CommandSource | None:
    """`wave_check=` / `on_halt=`: one command source, checked as the run's own (no call)."""
    if given is None:
        return None
    unknown = sorted(set(given) - {"command_id", "command_name", "script"})
    if unknown or len(given) != 1:
        msg = (
            f"rollout(): {what} takes one of command_id, command_name, script (got {sorted(given)})"
        )
        raise ConfigError(msg)
    ((key, value),) = given.items()
    if key == "script" and isinstance(value, str | Path):
        script = _script(value, None, None, False, {})
        return _source(None, None, None, script, None, content_limit_bytes)
    if key == "command_name" and isinstance(value, str):
        return _source(None, value, None, None, None, content_limit_bytes)
    if key == "command_id" and isinstance(value, str | Mapping):
        return _source(value, None, None, None, None, content_limit_bytes)
    msg = f"rollout(): {what}={{{key!r}: {value!r}}}: not a command source"
    raise ConfigError(msg)


def _scope(scope: str) -> str:
    """`on_halt_scope=`: succeeded or all-invoked."""
    if scope not in ROLLBACK_SCOPES:
        msg = f"rollout(): on_halt_scope {scope!r}: one of {', '.join(ROLLBACK_SCOPES)}"
        raise ConfigError(msg)
    return scope


def _script(
    path: str | Path | None,
    script_type: str | None,
    command_timeout_s: int | None,
    enable_parameter: bool,
    options: Mapping[str, Any],
) -> ScriptSource | None:
    """`script=` as the command fanout creates (its working directory is `working_dir`)."""
    if path is None:
        return None
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"script {path}: cannot read it as UTF-8 text ({exc})") from exc
    return ScriptSource(
        content=content,
        command_type=script_type or type_for_path(str(path)),
        working_dir=options.get("working_dir"),
        timeout_s=command_timeout_s or DEFAULT_SCRIPT_TIMEOUT_S,
        enable_parameter=enable_parameter,
        path=str(path),
    )


def _source(
    command_id: str | Mapping[str, str] | None,
    command_name: str | None,
    provider: str | None,
    script: ScriptSource | None,
    parameters: Mapping[str, str] | None,
    content_limit_bytes: int,
) -> CommandSource:
    """Exactly one command source, checked as far as it can be without a call."""
    given = [
        n
        for n, v in (("command_id", command_id), ("command_name", command_name), ("script", script))
        if v
    ]
    if len(given) != 1:
        raise ConfigError(
            f"rollout(): give exactly one of command_id, command_name, script (got {given or 'none'})"
        )
    if script is not None:
        check_script(script, parameters, content_limit_bytes=content_limit_bytes)
        return script
    if command_name:
        return CommandNameSource(command_name, provider)
    if isinstance(command_id, Mapping):
        return CommandIdMap(dict(command_id))
    assert command_id is not None
    return CommandIdSource(command_id, provider)


async def resume(
    run_id: str,
    *,
    secret_params: Mapping[str, str] | None = None,
    wait: bool | None = None,
    settings: Settings | None = None,
    credentials: CredentialSource | None = None,
    on_event: OnEvent | None = None,
) -> RunOutcome:
    """Continue a stored run (same tokens: nothing is invoked twice)."""
    settings, credentials = _defaults(settings, credentials)
    store = _ledger(settings)
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
            linked=linked_runs(settings, credentials, store, SYSTEM_CLOCK),
        )
    finally:
        store.close()


def rollout_blocking(targets: Sequence[Target], **kwargs: Any) -> RunOutcome:
    """`rollout` for code without an event loop."""
    return eventloop.run(lambda: rollout(targets, **kwargs))


def resume_blocking(run_id: str, **kwargs: Any) -> RunOutcome:
    """`resume` for code without an event loop."""
    return eventloop.run(lambda: resume(run_id, **kwargs))


def status(run_id: str, *, settings: Settings | None = None) -> dict[str, object]:
    """The `fanout status --json` document of a run (the ledger is only read)."""
    _logs_to_stderr()
    settings = settings or load_settings()
    location = settings.ledger or default_ledger_location()
    store = open_existing_ledger(location)
    if store is None:
        msg = f"no run {run_id!r}: there is no ledger at {location}"
        raise RunNotFoundError(msg)
    try:
        run = store.get_run(run_id)
        return status_document(
            run,
            store.instance_counts(run_id),
            store.batch_counts(run_id),
            store.command_ids(run_id),
            linked=linked_entries(store, run_id),
        )
    finally:
        store.close()


def _quiet(_kind: str, _data: Mapping[str, object]) -> None:
    """The default event sink: nothing."""

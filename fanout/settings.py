"""Settings: built-in defaults < config file < `FANOUT_*` environment < flags (DESIGN section 4).

Every knob lives in `Settings` with its default; `config/fanout.toml` documents each one. Unknown
keys and bad values are refused with where they came from (file and key, variable, or flag).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fanout.errors import ConfigError
from fanout.quota import DEFAULT_DAILY_QUOTA, QuotaMode, QuotaPolicy

__all__ = ["Settings", "config_file_location", "load_rollout", "load_settings"]

_ENV_PREFIX = "FANOUT_"
# Settings whose command-line flag is not `--` + the name in kebab case (errors name the flag).
_FLAG_NAMES = {"rate_per_s": "--rate"}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting fanout reads, with its built-in default."""

    ledger: str | None = None  # None: $FANOUT_LEDGER, else $XDG_STATE_HOME/fanout/ledger.sqlite3
    endpoint: str | None = None  # one URL for every region (the emulator); None: per-region
    network: str = "public"  # public | vpc endpoints
    signature: str = "v3"  # v3 (ACS3-HMAC-SHA256) | rpc (HMAC-SHA1)
    ca_bundle: str | None = None  # extra trusted CA file (PEM)
    profile: str | None = None  # credentials profile name
    account: str | None = None  # quota account key; None: the AccessKeyId
    region: str | None = None  # default region for bare instance ids
    batch_size: int = 50  # instances per InvokeCommand call (seed limit 50; API allows 100)
    concurrency: int = 16  # InvokeCommand calls in flight, all regions together
    region_concurrency: int = 8  # InvokeCommand calls in flight per region
    # Preflight / tag Describe calls in flight per region, every region at once (README: why 8).
    preflight_concurrency: int = 8
    rate_per_s: float = 10.0  # InvokeCommand calls per second per region (0: unlimited)
    daily_quota: int = DEFAULT_DAILY_QUOTA  # calls per region per quota day (spec S1)
    quota_reserve: int = 0  # calls per region left for other tools and people
    quota_mode: str = "rolling"  # rolling (24 h window) | calendar
    quota_time_zone: str = "Asia/Shanghai"  # calendar mode: the day's time zone
    max_attempts: int = 8  # InvokeCommand attempts per batch before it is failed / unknown
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 16.0  # the SDK's read timeout for InvokeCommand
    poll_interval_s: float = 1.0  # seconds between results sweeps (Describe calls, no quota)
    max_output_bytes: int = 4096  # output kept per instance in the ledger
    describe_rate_per_s: float = 200.0  # results fetches per second per region, at most (0: none)
    lease_s: float = 60.0  # a run's lease; renewed while it is driven
    # Spec P4: Base64 of a saved command's content + parameters (fanout.validate says why 18 KB).
    content_limit_bytes: int = 18 * 1024
    notify: tuple[str, ...] | None = None  # webhook URLs told of waves, halts and the end
    notify_format: str = "json"  # json | dingtalk | slack

    @property
    def quota(self) -> QuotaPolicy:
        """The quota policy these settings describe."""
        return QuotaPolicy(
            daily_quota=self.daily_quota,
            reserve=self.quota_reserve,
            mode=QuotaMode(self.quota_mode),
            time_zone=self.quota_time_zone,
        )


def _positive_int(value: object) -> int:
    """An integer >= 1."""
    number = _int(value)
    if number < 1:
        msg = "must be at least 1"
        raise ValueError(msg)
    return number


def _int(value: object) -> int:
    """An integer (>= 0)."""
    if isinstance(value, bool):
        msg = "must be an integer"
        raise ValueError(msg)
    number = int(str(value).strip()) if isinstance(value, str) else int(value)  # type: ignore[call-overload]
    if number < 0:
        msg = "must not be negative"
        raise ValueError(msg)
    return number


def _float(value: object) -> float:
    """A float >= 0."""
    number = float(str(value).strip()) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    if number < 0:
        msg = "must not be negative"
        raise ValueError(msg)
    return number


def _text(value: object) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        msg = "must be a non-empty string"
        raise ValueError(msg)
    return value.strip()


def _urls(value: object) -> tuple[str, ...]:
    """A list of URLs (TOML), or one string of comma-separated URLs (environment)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(u, str) for u in items):
        msg = "must be a list of URLs"
        raise ValueError(msg)
    return tuple(u.strip() for u in items if u.strip())


def _choice(*options: str) -> Callable[[object], str]:
    """One of `options`."""

    def parse(value: object) -> str:
        text = _text(value)
        if text not in options:
            msg = f"must be one of {', '.join(options)}"
            raise ValueError(msg)
        return text

    return parse


_PARSERS: Mapping[str, Callable[[object], object]] = {
    "ledger": _text,
    "endpoint": _text,
    "network": _choice("public", "vpc"),
    "signature": _choice("v3", "rpc"),
    "ca_bundle": _text,
    "profile": _text,
    "account": _text,
    "region": _text,
    "batch_size": _positive_int,
    "concurrency": _positive_int,
    "region_concurrency": _positive_int,
    "preflight_concurrency": _positive_int,
    "rate_per_s": _float,
    "daily_quota": _int,
    "quota_reserve": _int,
    "quota_mode": _choice(*QuotaMode),
    "quota_time_zone": _text,
    "max_attempts": _positive_int,
    "connect_timeout_s": _float,
    "read_timeout_s": _float,
    "poll_interval_s": _float,
    "max_output_bytes": _int,
    "describe_rate_per_s": _float,
    "lease_s": _float,
    "content_limit_bytes": _positive_int,
    "notify": _urls,
    "notify_format": _choice("json", "dingtalk", "slack"),
}
assert set(_PARSERS) == {f.name for f in fields(Settings)}, "every setting needs a parser"


def config_file_location(env: Mapping[str, str]) -> Path | None:
    """`$FANOUT_CONFIG`, else `$XDG_CONFIG_HOME/fanout/fanout.toml` if it exists."""
    if env.get("FANOUT_CONFIG"):
        return Path(env["FANOUT_CONFIG"])
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidate = base / "fanout" / "fanout.toml"
    return candidate if candidate.is_file() else None


def _read_file(path: Path) -> dict[str, Any]:
    """The settings table of a TOML file (top level, or `[fanout]`)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        msg = f"{path}: config file not found"
        raise ConfigError(msg) from exc
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{path}: cannot read config file ({exc.__class__.__name__})"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: invalid TOML: {exc}"
        raise ConfigError(msg) from exc
    table = data.get("fanout", data)
    if not isinstance(table, dict):
        msg = f"{path}: [fanout] must be a table"
        raise ConfigError(msg)
    return {k: v for k, v in table.items() if k != "rollout"}


# `[rollout]` keys: defaults for the `run` / `plan` flags of the same name, so a reviewed file
# can describe a whole rollout. Values: strings, except the lists and the params table.
_ROLLOUT_KEYS: Mapping[str, type] = {
    # The command source, exactly one: command_id (every region), command_ids (a table
    # region = id), command_name (with provider for a public command), or script (with
    # command_type, command_timeout_s, enable_parameter).
    "command_id": str,
    "command_ids": dict,
    "command_name": str,
    "provider": str,
    "script": str,
    "command_type": str,
    "command_timeout_s": int,
    "enable_parameter": bool,
    "targets": str,
    "regions": list,
    "instance_ids": list,
    "tags": list,
    "params": dict,
    "secret_params": list,
    "waves": str,
    "wave_order": str,
    "max_errors": str,
    "wave_max_failures": str,
    "wave_wait": str,
    "frequency": str,
    "repeat_mode": str,
    "timed": bool,
    "timeout_s": int,
    "username": str,
    "working_dir": str,
    "windows_password_name": str,
    "container_id": str,
    "container_name": str,
    "termination_mode": str,
    "launcher": str,
    "resource_group_id": str,
    "oss_output": str,
    "invocation_tags": dict,
}


def load_rollout(config_file: Path | None) -> dict[str, Any]:
    """The `[rollout]` table of a config file (empty without one), checked key by key."""
    if config_file is None:
        return {}
    try:
        data = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        msg = f"{config_file}: cannot read config file ({exc})"
        raise ConfigError(msg) from exc
    table = data.get("rollout", {})
    if not isinstance(table, dict):
        msg = f"{config_file}: [rollout] must be a table"
        raise ConfigError(msg)
    for key, value in table.items():
        kind = _ROLLOUT_KEYS.get(key)
        if kind is None:
            msg = (
                f"{config_file}: [rollout] key {key!r}: unknown (known: {', '.join(_ROLLOUT_KEYS)})"
            )
            raise ConfigError(msg)
        items = value.values() if isinstance(value, dict) else value
        if not isinstance(value, kind) or (
            isinstance(value, list | dict) and not all(isinstance(v, str) for v in items)
        ):
            msg = f"{config_file}: [rollout] key {key!r}: expected {kind.__name__} of strings"
            raise ConfigError(msg)
    return dict(table)


def _parse(name: str, value: object, where: str) -> object:
    """One value through its parser, errors naming where it came from."""
    if name not in _PARSERS:
        msg = f"{where}: unknown setting {name!r}"
        raise ConfigError(msg)
    try:
        return _PARSERS[name](value)
    except (ValueError, TypeError) as exc:
        msg = f"{where}: {name} {exc}"
        raise ConfigError(msg) from exc


def load_settings(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> Settings:
    """Merge defaults < file < environment < flags (None flags are ignored) and validate."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    path = config_file or config_file_location(env)
    if path is not None:
        for name, value in _read_file(path).items():
            values[name] = _parse(name, value, f"{path}: key {name!r}")
    for name in _PARSERS:
        variable = _ENV_PREFIX + name.upper()
        if env.get(variable):
            values[name] = _parse(name, env[variable], f"environment {variable}")
    for name, value in (flags or {}).items():
        if value is not None:
            flag = _FLAG_NAMES.get(name, f"--{name.replace('_', '-')}")
            values[name] = _parse(name, value, flag)
    settings = dataclasses.replace(Settings(), **values)  # type: ignore[arg-type]
    if settings.quota_reserve > settings.daily_quota:
        msg = "quota_reserve is larger than daily_quota: no call could ever be made"
        raise ConfigError(msg)
    try:
        settings.quota.window_start(0)
    except (KeyError, ValueError) as exc:
        msg = f"quota_time_zone {settings.quota_time_zone!r} is not a known time zone"
        raise ConfigError(msg) from exc
    return settings

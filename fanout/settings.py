"""Settings: built-in defaults < config file < `FANOUT_*` environment < flags (DESIGN section 4).

Every knob lives in `Settings` with its default; `config/fanout.toml` documents each one. Unknown
keys and bad values are refused with where they came from (file and key, variable, or flag).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fanout import values
from fanout.aliyun.endpoints import check_endpoint, is_loopback
from fanout.errors import ConfigError
from fanout.ledger.location import parse_location
from fanout.quota import DEFAULT_DAILY_QUOTA, QuotaMode, QuotaPolicy

__all__ = [
    "MAX_BATCH_SIZE",
    "MIN_LEASE_S",
    "RolloutTable",
    "Settings",
    "config_file_location",
    "flag_name",
    "load_rollout",
    "load_settings",
]

_ENV_PREFIX = "FANOUT_"
# The variable the Alibaba Cloud SDKs read for an extra trusted CA (below FANOUT_CA_BUNDLE).
_CA_BUNDLE_VARIABLE = "ALIBABA_CLOUD_CA_BUNDLE"
# Settings whose command-line flag is not `--` + the name in kebab case (errors name the flag).
_FLAG_NAMES = {"rate_per_s": "--rate"}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting fanout reads, with its built-in default."""

    ledger: str | None = None  # None: $FANOUT_LEDGER, else $XDG_STATE_HOME/fanout/ledger.sqlite3
    endpoint: str | None = None  # one URL for every region (the emulator); None: per-region
    # A plain http:// endpoint on another host is refused unless this is set (it warns each run).
    insecure_http: bool = False
    network: str = "public"  # public | vpc endpoints
    signature: str = "v3"  # v3 (ACS3-HMAC-SHA256) | rpc (HMAC-SHA1)
    ca_bundle: str | None = None  # extra trusted CA file (PEM)
    profile: str | None = None  # credentials profile name
    # The ECS instance metadata service (credentials of the instance's RAM role): its usual
    # address on an instance; tests and other setups point it elsewhere.
    metadata_endpoint: str = "http://100.100.100.200"
    account: str | None = None  # quota account key; None: the AccessKeyId
    region: str | None = None  # default region for bare instance ids
    batch_size: int = 50  # instances per InvokeCommand call, at most max_batch_size
    # The account's per-call instance limit as far as fanout knows (the API does not report it):
    # 50 in the seed document, 100 by default today, raisable by a quota ticket up to... 100 here.
    max_batch_size: int = 50
    # InvokeCommand calls in flight, all regions together: 8 regions at their own 8 (README).
    concurrency: int = 64
    region_concurrency: int = 8  # InvokeCommand calls in flight per region
    # Preflight / tag Describe calls in flight per region, every region at once (README: why 8).
    preflight_concurrency: int = 8
    rate_per_s: float = 10.0  # InvokeCommand calls per second per region (0: unlimited)
    # Calls per region per quota day; None: the account's own (DescribeAccountAttributes
    # max-axt-invocation-daily, read per region), DEFAULT_DAILY_QUOTA where it cannot be read.
    daily_quota: int | None = None
    quota_reserve: int = 0  # calls per region left for other tools and people
    quota_mode: str = "rolling"  # rolling (24 h window) | calendar
    quota_time_zone: str = "Asia/Shanghai"  # calendar mode: the day's time zone
    max_attempts: int = 8  # InvokeCommand attempts per batch before it is failed / unknown
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 16.0  # the SDK's read timeout for InvokeCommand
    poll_interval_s: float = 1.0  # seconds between results sweeps (Describe calls, no quota)
    # Output kept per instance in the ledger, its end (the API keeps the last 24 KB: facts 2.1).
    max_output_bytes: int = 24 * 1024
    describe_rate_per_s: float = 200.0  # results fetches per second per region, at most (0: none)
    lease_s: float = 60.0  # a run's lease; renewed while it is driven
    # Spec P4: Base64 of a saved command's content + parameters (fanout.validate says why 18 KB).
    content_limit_bytes: int = 18 * 1024
    notify: tuple[str, ...] | None = None  # webhook URLs told of waves, halts and the end
    notify_format: str = "json"  # json | dingtalk | slack

    def __post_init__(self) -> None:
        """Every value through the rules `load_settings` applies (the Python API's settings too)."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is not None:
                where = f"Settings({spec.name}=...)"
                object.__setattr__(self, spec.name, _parse(spec.name, value, where, named=False))
        problem = _problem_together(asdict(self))
        if problem is not None:
            names, rule = problem
            raise ConfigError(f"Settings({', '.join(names)}): {rule}")

    @property
    def quota(self) -> QuotaPolicy:
        """The quota policy these settings describe (the fallback limit when not configured)."""
        return QuotaPolicy(
            daily_quota=DEFAULT_DAILY_QUOTA if self.daily_quota is None else self.daily_quota,
            reserve=self.quota_reserve,
            mode=QuotaMode(self.quota_mode),
            time_zone=self.quota_time_zone,
        )


# Bounds of the numeric settings: wide enough for any real use, narrow enough that no value can
# overflow a timer, a database column or a limiter (and a typo is caught, not obeyed).
MAX_BATCH_SIZE = 100  # the current per-call InstanceId limit (aliyun-api-facts 1.1)
_MAX_CONCURRENCY = 10_000
_MAX_DAILY_QUOTA = 1_000_000_000
_MAX_ATTEMPTS = 1_000
_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
_MAX_CONTENT_LIMIT_BYTES = 1024 * 1024
# Rates (per second): 0 means no limit; below one call per 100 s is a mistake, not a pace.
_MIN_RATE_PER_S = 0.01
_MAX_RATE_PER_S = 100_000.0
_MAX_SECONDS = 3_600.0  # a timeout or poll interval over an hour is a typo
# why 3 s: the runner renews its lease and looks for `fanout stop` every second and renews after
# a third of lease_s; a shorter lease would lapse between two renewals (two runners, one run).
MIN_LEASE_S = 3.0
_MAX_LEASE_S = 86_400.0


def _int_in(low: int, high: int) -> Callable[[object], int]:
    """An integer within low..high (never a float, a bool or a rounded string)."""
    return lambda value: values.integer(value, low=low, high=high)


def _seconds(low: float, high: float) -> Callable[[object], float]:
    """A finite number of seconds above `low`, at most `high`."""
    return lambda value: values.number(value, low=low, high=high, low_open=True)


def _rate(value: object) -> float:
    """Calls per second: 0 (no limit), or a finite pace."""
    return values.rate(value, low=_MIN_RATE_PER_S, high=_MAX_RATE_PER_S)


def _name(value: object) -> str:
    """A non-empty name or path: text without control characters."""
    return values.text(value)


def _urls(value: object) -> tuple[str, ...]:
    """A list of http(s) URLs (TOML), or one string of comma-separated URLs (environment)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(u, str) for u in items):
        raise values.ValueRuleError("must be a list of URLs")
    urls = tuple(values.text(u) for u in items if u.strip())
    for url in urls:
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError as exc:
            raise values.ValueRuleError(f"holds a URL that does not parse ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise values.ValueRuleError("must be http:// or https:// URLs")
    return urls


def _choice(*options: str) -> Callable[[object], str]:
    """One of `options`."""
    return lambda value: values.choice(value, options)


def _endpoint(value: object) -> str:
    """An endpoint URL (https://, or http:// for the emulator)."""
    url = values.text(value)
    try:
        return check_endpoint(url)
    except ValueError as exc:
        raise values.ValueRuleError(str(exc)) from None


def _ledger(value: object) -> str:
    """A ledger location: a path, `sqlite:` URL or `postgresql://` URL (checked, never shown)."""
    location = values.text(value)
    try:
        parse_location(location)
    except ConfigError as exc:
        raise values.ValueRuleError(str(exc)) from None
    return location


_PARSERS: Mapping[str, Callable[[object], object]] = {
    "ledger": _ledger,
    "endpoint": _endpoint,
    "insecure_http": values.boolean,
    "network": _choice("public", "vpc"),
    "signature": _choice("v3", "rpc"),
    "ca_bundle": _name,
    "profile": _name,
    "metadata_endpoint": _endpoint,  # the instance metadata service (plain http: link-local)
    "account": _name,
    "region": _name,
    "batch_size": _int_in(1, MAX_BATCH_SIZE),
    "max_batch_size": _int_in(1, MAX_BATCH_SIZE),
    "concurrency": _int_in(1, _MAX_CONCURRENCY),
    "region_concurrency": _int_in(1, _MAX_CONCURRENCY),
    "preflight_concurrency": _int_in(1, _MAX_CONCURRENCY),
    "rate_per_s": _rate,
    "daily_quota": _int_in(0, _MAX_DAILY_QUOTA),
    "quota_reserve": _int_in(0, _MAX_DAILY_QUOTA),
    "quota_mode": _choice(*QuotaMode),
    "quota_time_zone": _name,
    "max_attempts": _int_in(1, _MAX_ATTEMPTS),
    "connect_timeout_s": _seconds(0.0, _MAX_SECONDS),
    "read_timeout_s": _seconds(0.0, _MAX_SECONDS),
    "poll_interval_s": _seconds(0.0, _MAX_SECONDS),
    "max_output_bytes": _int_in(0, _MAX_OUTPUT_BYTES),
    "describe_rate_per_s": _rate,
    "lease_s": lambda value: values.number(value, low=MIN_LEASE_S, high=_MAX_LEASE_S),
    "content_limit_bytes": _int_in(1, _MAX_CONTENT_LIMIT_BYTES),
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


_TABLE_LINE = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(?:#.*)?")
_KEY_LINE = re.compile(r"""\s*(["']?)([A-Za-z0-9_-]+)\1\s*=""")


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """(table, key) -> the line where the key is set (the top level is table "")."""
    lines: dict[tuple[str, str], int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE_LINE.fullmatch(line)
        if header:
            table = header.group(1)
            continue
        key = _KEY_LINE.match(line)
        if key:
            lines.setdefault((table, key.group(2)), number)
    return lines


@dataclass(frozen=True, slots=True)
class _TomlFile:
    """A parsed TOML file and where each key is set."""

    path: Path
    data: dict[str, Any]
    lines: dict[tuple[str, str], int]

    def where(self, table: str, key: str) -> str:
        """`file:line` of a key (just `file` when the line is not found)."""
        line = self.lines.get((table, key))
        return f"{self.path}:{line}" if line else str(self.path)


def _read_toml(path: Path) -> _TomlFile:
    """Read and parse a TOML file; every failure is one ConfigError line naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: config file is not valid UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    return _TomlFile(path, data, _key_lines(text))


def _settings_table(toml: _TomlFile) -> tuple[str, dict[str, Any]]:
    """(table name, the settings) of a config file: the top level, or `[fanout]`."""
    if "fanout" not in toml.data:
        return "", {k: v for k, v in toml.data.items() if k != "rollout"}
    table = toml.data["fanout"]
    if not isinstance(table, dict):
        raise ConfigError(f"{toml.where('', 'fanout')}: [fanout] must be a table")
    return "fanout", {k: v for k, v in table.items() if k != "rollout"}


# `[rollout]` keys: defaults for the `run` / `plan` flags of the same name, so a reviewed file
# can describe a whole rollout. Values: strings, except the lists, the params table and the
# timeout. Their values pass the same rules as the flags (`fanout.validate`), naming file:line.
# `[rollout]` keys that name a file: relative to the config file's folder, as an operator who
# keeps `rollout.toml` beside `deploy.sh` expects wherever fanout is run from (`-` is stdin).
_ROLLOUT_PATHS = frozenset({"targets", "script", "wave_check_script", "on_halt_script"})

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
    # Linked runs (fanout.linked), each with the command sources of the run's own command:
    # a check after each wave's bake time, a rollback when the run halts on its budget.
    "wave_check_command_id": str,
    "wave_check_command_ids": dict,
    "wave_check_command_name": str,
    "wave_check_script": str,
    "on_halt_command_id": str,
    "on_halt_command_ids": dict,
    "on_halt_command_name": str,
    "on_halt_script": str,
    "on_halt_scope": str,
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


@dataclass(frozen=True, slots=True)
class RolloutTable:
    """The `[rollout]` table of a config file: its values, and where each one is set."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]  # key -> "file:line: [rollout] key"


def load_rollout(config_file: Path | None) -> RolloutTable:
    """The `[rollout]` table of a config file (empty without one), checked key by key."""
    if config_file is None:
        return RolloutTable({}, {})
    toml = _read_toml(config_file)
    table = toml.data.get("rollout", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{toml.where('', 'rollout')}: [rollout] must be a table")
    sources = {key: f"{toml.where('rollout', key)}: [rollout] {key}" for key in table}
    for key, value in table.items():
        kind = _ROLLOUT_KEYS.get(key)
        if kind is None:
            msg = f"{sources[key]}: unknown key (known: {', '.join(_ROLLOUT_KEYS)})"
            raise ConfigError(msg)
        items = value.values() if isinstance(value, dict) else value
        if (
            not isinstance(value, kind)
            or (isinstance(value, bool) and kind is not bool)
            or (isinstance(value, list | dict) and not all(isinstance(v, str) for v in items))
        ):
            what = f"{kind.__name__} of strings" if kind in (list, dict) else kind.__name__
            raise ConfigError(f"{sources[key]}: expected {what}, got {values.shown(value)}")
    base = config_file.parent
    resolved = {
        key: str(base / value)
        if key in _ROLLOUT_PATHS and isinstance(value, str) and value != "-"
        else value
        for key, value in table.items()
    }
    return RolloutTable(resolved, sources)


def _parse(name: str, value: object, where: str, *, named: bool = True) -> object:
    """One value through its parser; a refusal names where it came from and the rule."""
    if name not in _PARSERS:
        raise ConfigError(f"{where}: unknown setting {name!r}")
    try:
        return _PARSERS[name](value)
    except values.ValueRuleError as exc:
        raise ConfigError(f"{where}: {name + ' ' if named else ''}{exc}") from None


def flag_name(name: str) -> str:
    """The command-line flag of a setting (errors name the flag the user typed)."""
    return _FLAG_NAMES.get(name, f"--{name.replace('_', '-')}")


def load_settings(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> Settings:
    """Merge defaults < file < environment < flags (None flags are ignored) and validate.

    Every value is refused, with its source, by the same rule whatever the source: the flag, the
    variable (`FANOUT_<NAME>`; `ALIBABA_CLOUD_CA_BUNDLE` too, below `FANOUT_CA_BUNDLE`) or the
    file and line.
    """
    env = os.environ if env is None else env
    parsed: dict[str, object] = {}
    sources: dict[str, str] = {}
    path = config_file or config_file_location(env)
    if path is not None:
        toml = _read_toml(path)
        table, items = _settings_table(toml)
        for name, value in items.items():
            sources[name] = toml.where(table, name)
            parsed[name] = _parse(name, value, sources[name])
    for name, variable in _env_names():
        if env.get(variable):
            sources[name] = f"environment {variable}"
            parsed[name] = _parse(name, env[variable], sources[name])
    for name, value in (flags or {}).items():
        if value is not None:
            sources[name] = flag_name(name)
            parsed[name] = _parse(name, value, sources[name], named=False)
    merged = {**asdict(_DEFAULTS), **parsed}
    problem = _problem_together(merged)
    if problem is not None:
        names, rule = problem
        where = [f"{n} ({sources[n]})" if n in sources else f"{n} (default)" for n in names]
        raise ConfigError(f"{' vs '.join(where)}: {rule}")
    return Settings(**merged)


def _env_names() -> list[tuple[str, str]]:
    """(setting, variable) pairs, the lower-precedence variable of a setting first."""
    names = [("ca_bundle", _CA_BUNDLE_VARIABLE)]
    return names + [(name, _ENV_PREFIX + name.upper()) for name in _PARSERS]


def _problem_together(v: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    """The first rule between settings that the values `v` break: (the settings, the rule)."""
    if v["batch_size"] > v["max_batch_size"]:
        return ("batch_size", "max_batch_size"), (
            f"{v['batch_size']} instances per call is above max_batch_size "
            f"{v['max_batch_size']} (the API refuses bigger calls with "
            f"InstanceIds.ExceedLimit; raise max_batch_size, at most {MAX_BATCH_SIZE}, only if "
            "your account's limit is higher)"
        )
    if v["daily_quota"] is not None and v["quota_reserve"] > v["daily_quota"]:
        return ("quota_reserve", "daily_quota"), (
            "the reserve is larger than the daily quota: no call could ever be made"
        )
    endpoint = v["endpoint"]
    if (
        endpoint
        and endpoint.startswith("http://")
        and not is_loopback(endpoint)
        and not v["insecure_http"]
    ):
        return ("endpoint",), (
            "a plain http:// endpoint on another host sends signed requests and any STS token "
            "in clear text; use https://, or give --insecure-http to accept that"
        )
    return None if _time_zone_ok(v["quota_time_zone"]) else _bad_zone(v)


def _bad_zone(v: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """The refusal of an unknown time zone."""
    return ("quota_time_zone",), f"{values.shown(v['quota_time_zone'])} is not a known time zone"


def _time_zone_ok(name: str) -> bool:
    """True if `name` is a time zone of the system's database (checked in every quota mode)."""
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError, UnicodeError):
        return False
    return True


_DEFAULTS = Settings()

"""Alibaba Cloud credentials: the chain that finds them (DESIGN.md section 4).

Order, first hit wins:
1. `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET` (+ `ALIBABA_CLOUD_SECURITY_TOKEN`);
2. the aliyun CLI profile file `~/.aliyun/config.json` (modes `AK`, `StsToken` - read again when
   its token is due or refused - and `EcsRamRole`), skipped when
   `ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true`;
3. `~/.alibabacloud/credentials.ini` (or `ALIBABA_CLOUD_CREDENTIALS_FILE`), types `access_key`,
   `sts` and `ecs_ram_role`;
4. the ECS instance RAM role named by `ALIBABA_CLOUD_ECS_METADATA` (the instance metadata service,
   unless `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true`), as the official chain does last.

Static keys come back as `Credentials`; renewable ones as a `CredentialsProvider`
(`fanout.aliyun.renewal`), which the client asks before every call.

The profile is the `profile` argument, else `ALIBABA_CLOUD_PROFILE`, else the CLI file's `current`
(the ini file's `default` section). Errors name the file, the profile and the line, never a value:
a secret must not reach a terminal or a log (invariant I5).
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanout.aliyun.keys import Credentials, CredentialSource, check_key_text
from fanout.aliyun.renewal import METADATA_ENDPOINT, EcsRamRole, ProfileSts, profile_reader
from fanout.errors import CredentialsError

__all__ = ["CredentialSource", "Credentials", "load_credentials"]

ENV_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"  # noqa: S105 - a variable name, not a secret
ENV_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"  # noqa: S105 - a variable name, not a secret
ENV_PROFILE = "ALIBABA_CLOUD_PROFILE"
ENV_CLI_DISABLED = "ALIBABA_CLOUD_CLI_PROFILE_DISABLED"
ENV_INI_FILE = "ALIBABA_CLOUD_CREDENTIALS_FILE"
ENV_ECS_ROLE = "ALIBABA_CLOUD_ECS_METADATA"
ENV_ECS_DISABLED = "ALIBABA_CLOUD_ECS_METADATA_DISABLED"
ENV_IMDSV1_DISABLED = "ALIBABA_CLOUD_IMDSV1_DISABLED"

_CLI_FILE = Path(".aliyun") / "config.json"
_INI_FILE = Path(".alibabacloud") / "credentials.ini"
_CLI_MODES = frozenset({"AK", "StsToken", "EcsRamRole"})
_INI_TYPES = frozenset({"access_key", "sts", "ecs_ram_role"})


def _true(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def load_credentials(
    *,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    metadata_endpoint: str = METADATA_ENDPOINT,
) -> CredentialSource:
    """The first credentials found along the chain; `CredentialsError` if none or a source is bad.

    `metadata_endpoint` is where the ECS instance metadata service answers (settings
    `metadata_endpoint`: tests serve it from the emulator).
    """
    env = os.environ if env is None else env
    return _chain(profile, env, home, metadata_endpoint)


def _chain(
    profile: str | None, env: Mapping[str, str], home: Path | None, metadata_endpoint: str
) -> CredentialSource:
    """Walk the chain (see the module docstring)."""
    home = Path.home() if home is None else home
    profile = profile or env.get(ENV_PROFILE) or None
    looked: list[str] = [f"environment ({ENV_KEY_ID}, {ENV_KEY_SECRET})"]

    found: CredentialSource | None = _from_env(env)
    if found is not None:
        return found
    role = _RoleFactory(metadata_endpoint, v1_disabled=_true(env, ENV_IMDSV1_DISABLED))
    if _true(env, ENV_CLI_DISABLED):
        looked.append(f"{home / _CLI_FILE} (skipped: {ENV_CLI_DISABLED}=true)")
    else:
        cli_path = home / _CLI_FILE
        looked.append(f"{cli_path} (profile {profile or 'current'})")
        found = _from_cli_file(cli_path, profile, role)
        if found is not None:
            return found
    ini_path, explicit = _ini_path(env, home)
    section = profile or "default"
    looked.append(f"{ini_path} [{section}]")
    found = _from_ini_file(ini_path, section, role, explicit=explicit)
    if found is not None:
        return found
    role_name = env.get(ENV_ECS_ROLE, "").strip()
    if role_name and not _true(env, ENV_ECS_DISABLED):
        return role(role_name)
    looked.append(f"the instance RAM role ({ENV_ECS_ROLE} unset)")
    raise CredentialsError("no Alibaba Cloud credentials found; looked in: " + "; ".join(looked))


@dataclass(frozen=True, slots=True)
class _RoleFactory:
    """Makes the instance RAM role provider with the metadata service's address."""

    endpoint: str
    v1_disabled: bool = False

    def __call__(self, role: str) -> EcsRamRole:
        return EcsRamRole(role or None, self.endpoint, v1_disabled=self.v1_disabled)


def _from_env(env: Mapping[str, str]) -> Credentials | None:
    """Credentials from the environment, None if neither key variable is set."""
    key_id = env.get(ENV_KEY_ID, "").strip()
    secret = env.get(ENV_KEY_SECRET, "").strip()
    if not key_id and not secret:
        return None
    if not key_id or not secret:
        missing = ENV_KEY_SECRET if key_id else ENV_KEY_ID
        present = ENV_KEY_ID if key_id else ENV_KEY_SECRET
        raise CredentialsError(f"{present} is set but {missing} is empty or unset")
    token = env.get(ENV_TOKEN, "").strip() or None
    check_key_text(key_id, ENV_KEY_ID, "environment")
    check_key_text(secret, ENV_KEY_SECRET, "environment")
    if token is not None:
        check_key_text(token, ENV_TOKEN, "environment")
    return Credentials(key_id, secret, token, source="environment")


def _from_cli_file(path: Path, profile: str | None, role: _RoleFactory) -> CredentialSource | None:
    """Credentials from the aliyun CLI's config.json; None if the file or the profile is absent.

    A `StsToken` profile becomes a provider that reads the file again when its token is due
    (`sts_expiration`, epoch seconds, when the CLI wrote one) or was refused.
    """
    found = _cli_profile(path, profile)
    if found is None:
        return None
    name, entry = found
    where = f"{path}: profile {name!r}"
    mode = entry.get("mode") or "AK"
    if mode == "EcsRamRole":
        return role(str(entry.get("ram_role_name") or ""))
    creds = _cli_credentials(entry, where, f"{path} profile {name}")
    if mode != "StsToken":
        return creds

    def load(file: Path) -> Credentials | None:
        again = _cli_profile(file, name)
        return None if again is None else _cli_credentials(again[1], where, creds.source)

    return ProfileSts(profile_reader(path, load), creds.source, f"aliyun-profile:{name}")


def _cli_profile(path: Path, profile: str | None) -> tuple[str, dict[str, Any]] | None:
    """(profile name, its entry) in config.json; None if the file or the profile is absent."""
    data = _read_json(path)
    if data is None:
        return None
    name = profile or data.get("current") or "default"
    profiles = data.get("profiles", [])
    if not isinstance(profiles, list):
        raise CredentialsError(f"{path}: 'profiles' is not a list")
    entry = next((p for p in profiles if isinstance(p, dict) and p.get("name") == name), None)
    if entry is None:
        return None
    mode = entry.get("mode") or "AK"
    if mode not in _CLI_MODES:
        raise CredentialsError(
            f"{path}: profile {name!r} uses mode {mode!r}, which fanout does not support "
            f"(supported: {', '.join(sorted(_CLI_MODES))})"
        )
    return str(name), entry


def _cli_credentials(entry: Mapping[str, Any], where: str, source: str) -> Credentials:
    """An `AK` or `StsToken` profile's credentials."""
    key_id = _required(entry, "access_key_id", where)
    secret = _required(entry, "access_key_secret", where)
    sts = (entry.get("mode") or "AK") == "StsToken"
    token = _required(entry, "sts_token", where) if sts else None
    expiration = entry.get("sts_expiration") if sts else None
    expires = float(expiration) if isinstance(expiration, int | float) and expiration > 0 else None
    return Credentials(key_id, secret, token, source=source, expiration=expires)


def _read_json(path: Path) -> dict[str, Any] | None:
    """The parsed JSON object in `path`, None if the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"{path}: cannot be read ({type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:  # exc.msg never quotes the document
        raise CredentialsError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{path}: expected a JSON object at the top level")
    return data


def _required(entry: Mapping[str, Any], key: str, where: str) -> str:
    """A non-empty string field of a profile, or an error naming the field (not its value)."""
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CredentialsError(f"{where} has no {key}")
    return value.strip()


def _ini_path(env: Mapping[str, str], home: Path) -> tuple[Path, bool]:
    """The ini file to read, and whether the user named it explicitly."""
    named = env.get(ENV_INI_FILE, "").strip()
    if named:
        try:
            return Path(named).expanduser(), True
        except RuntimeError:  # `~name` of a user that does not exist
            raise CredentialsError(f"{ENV_INI_FILE}: no home folder for {named!r}") from None
    return home / _INI_FILE, False


def _from_ini_file(
    path: Path, section: str, role: _RoleFactory, *, explicit: bool
) -> CredentialSource | None:
    """Credentials from credentials.ini; None if the file (when not named) or section is absent."""
    parser = _read_ini(path, explicit=explicit)
    if parser is None or not parser.has_section(section):
        return None
    entry = dict(parser.items(section))
    where = f"{path} [{section}]"
    kind = entry.get("type") or "access_key"
    if kind not in _INI_TYPES:
        raise CredentialsError(
            f"{where} has type {kind!r}, which fanout does not support "
            f"(supported: {', '.join(sorted(_INI_TYPES))})"
        )
    if kind == "ecs_ram_role":
        return role(entry.get("role_name", "").strip())
    key_id = _required(entry, "access_key_id", where)
    secret = _required(entry, "access_key_secret", where)
    token = _required(entry, "security_token", where) if kind == "sts" else None
    return Credentials(key_id, secret, token, source=where)


def _read_ini(path: Path, *, explicit: bool) -> configparser.ConfigParser | None:
    """The parsed ini file; None if it does not exist and was not named by the user."""
    # No interpolation: a secret may contain '%'. Text after ' #' is a comment, as in the SDK.
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#",))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise CredentialsError(f"{path} ({ENV_INI_FILE}) does not exist") from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"{path}: cannot be read ({type(exc).__name__})") from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:  # its message may quote the line: report the number only
        raise CredentialsError(f"{path}:{_ini_error_line(exc)}: not a valid ini file") from None
    return parser


def _ini_error_line(exc: configparser.Error) -> str:
    """The line number a configparser error points at, or '?'."""
    line = getattr(exc, "lineno", None)
    if line is None and isinstance(exc, configparser.ParsingError) and exc.errors:
        line = exc.errors[0][0]
    return str(line) if line is not None else "?"

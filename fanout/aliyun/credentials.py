"""Alibaba Cloud credentials: the value, and the chain that finds it (DESIGN.md section 4).

Order, first hit wins:
1. `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET` (+ `ALIBABA_CLOUD_SECURITY_TOKEN`);
2. the aliyun CLI profile file `~/.aliyun/config.json` (modes `AK` and `StsToken`), skipped when
   `ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true`;
3. `~/.alibabacloud/credentials.ini` (or `ALIBABA_CLOUD_CREDENTIALS_FILE`), types `access_key`, `sts`.

The profile is the `profile` argument, else `ALIBABA_CLOUD_PROFILE`, else the CLI file's `current`
(the ini file's `default` section). Errors name the file, the profile and the line, never a value:
a secret must not reach a terminal or a log (invariant I5).
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanout.errors import CredentialsError

__all__ = ["Credentials", "load_credentials"]

ENV_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"  # noqa: S105 - a variable name, not a secret
ENV_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"  # noqa: S105 - a variable name, not a secret
ENV_PROFILE = "ALIBABA_CLOUD_PROFILE"
ENV_CLI_DISABLED = "ALIBABA_CLOUD_CLI_PROFILE_DISABLED"
ENV_INI_FILE = "ALIBABA_CLOUD_CREDENTIALS_FILE"

_CLI_FILE = Path(".aliyun") / "config.json"
_INI_FILE = Path(".alibabacloud") / "credentials.ini"
_CLI_MODES = frozenset({"AK", "StsToken"})
_INI_TYPES = frozenset({"access_key", "sts"})


# Access key ids, secrets and STS tokens are printable ASCII without spaces (Base64 and
# alphanumerics). Anything else -- a newline pasted with the value, an undecodable byte -- would
# break the request's headers, so it is refused when read, without showing the value.
_PRINTABLE_ASCII = frozenset(chr(code) for code in range(0x21, 0x7F))


def _check_text(value: str, what: str, where: str) -> str:
    """`value` if it is printable ASCII without spaces, else CredentialsError naming `what`."""
    if not set(value) <= _PRINTABLE_ASCII:
        raise CredentialsError(
            f"{where}: {what} holds a character that is not printable ASCII (a newline, a "
            "space, a control character or an undecodable byte); set it again"
        )
    return value


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key (and STS token); `repr` and `str` show the key id and source only."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    source: str = ""

    def __post_init__(self) -> None:
        """The same text rules for credentials from any source (the Python API's too)."""
        where = self.source or "credentials"
        _check_text(self.access_key_id, "the access key id", where)
        _check_text(self.access_key_secret, "the access key secret", where)
        if self.security_token is not None:
            _check_text(self.security_token, "the security token", where)

    @property
    def is_sts(self) -> bool:
        """True for temporary STS credentials (they carry a security token)."""
        return bool(self.security_token)


def load_credentials(
    *,
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Credentials:
    """The first credentials found along the chain; `CredentialsError` if none or a source is bad."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    profile = profile or env.get(ENV_PROFILE) or None
    looked: list[str] = [f"environment ({ENV_KEY_ID}, {ENV_KEY_SECRET})"]

    found = _from_env(env)
    if found is not None:
        return found
    if env.get(ENV_CLI_DISABLED, "").strip().lower() == "true":
        looked.append(f"{home / _CLI_FILE} (skipped: {ENV_CLI_DISABLED}=true)")
    else:
        cli_path = home / _CLI_FILE
        looked.append(f"{cli_path} (profile {profile or 'current'})")
        found = _from_cli_file(cli_path, profile)
        if found is not None:
            return found
    ini_path, explicit = _ini_path(env, home)
    section = profile or "default"
    looked.append(f"{ini_path} [{section}]")
    found = _from_ini_file(ini_path, section, explicit=explicit)
    if found is not None:
        return found
    raise CredentialsError("no Alibaba Cloud credentials found; looked in: " + "; ".join(looked))


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
    _check_text(key_id, ENV_KEY_ID, "environment")
    _check_text(secret, ENV_KEY_SECRET, "environment")
    if token is not None:
        _check_text(token, ENV_TOKEN, "environment")
    return Credentials(key_id, secret, token, source="environment")


def _from_cli_file(path: Path, profile: str | None) -> Credentials | None:
    """Credentials from the aliyun CLI's config.json; None if the file or the profile is absent."""
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
    where = f"{path}: profile {name!r}"
    mode = entry.get("mode") or "AK"
    if mode not in _CLI_MODES:
        raise CredentialsError(
            f"{where} uses mode {mode!r}, which fanout does not support "
            f"(supported: {', '.join(sorted(_CLI_MODES))})"
        )
    key_id = _required(entry, "access_key_id", where)
    secret = _required(entry, "access_key_secret", where)
    token = _required(entry, "sts_token", where) if mode == "StsToken" else None
    return Credentials(key_id, secret, token, source=f"{path} profile {name}")


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


def _from_ini_file(path: Path, section: str, *, explicit: bool) -> Credentials | None:
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

"""The credentials chain: environment > aliyun CLI profile > credentials.ini, with real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fanout.aliyun.credentials import Credentials, load_credentials
from fanout.aliyun.renewal import EcsRamRole, ProfileSts
from fanout.errors import CredentialsError, CredentialsExpiredError

SECRET = "Sup3rS3cretValue"


def _load(**kwargs: Any) -> Credentials:
    """The chain's answer, which must be static credentials."""
    found = load_credentials(**kwargs)
    assert isinstance(found, Credentials), found
    return found


TOKEN = "sts-T0ken-Value"


def _cli(home: Path, profiles: list[dict[str, Any]], current: str = "default") -> Path:
    path = home / ".aliyun" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"current": current, "profiles": profiles}))
    return path


def _ini(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _ak(name: str, key_id: str, **extra: str) -> dict[str, str]:
    return {
        "name": name,
        "mode": "AK",
        "access_key_id": key_id,
        "access_key_secret": SECRET,
        **extra,
    }


def test_environment_first(tmp_path: Path) -> None:
    """The environment wins over both files."""
    _cli(tmp_path, [_ak("default", "from-cli")])
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "from-env", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}
    creds = _load(env=env, home=tmp_path)
    assert creds == Credentials("from-env", SECRET, None, source="environment")
    assert not creds.is_sts


def test_environment_sts(tmp_path: Path) -> None:
    """ALIBABA_CLOUD_SECURITY_TOKEN makes STS credentials."""
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.id",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "ALIBABA_CLOUD_SECURITY_TOKEN": TOKEN,
    }
    creds = _load(env=env, home=tmp_path)
    assert creds.security_token == TOKEN
    assert creds.is_sts


def test_half_set_environment_is_an_error(tmp_path: Path) -> None:
    """A key id without its secret is refused, naming the missing variable."""
    with pytest.raises(CredentialsError, match="ALIBABA_CLOUD_ACCESS_KEY_SECRET is empty"):
        _load(env={"ALIBABA_CLOUD_ACCESS_KEY_ID": "x"}, home=tmp_path)


def test_cli_profile_before_ini(tmp_path: Path) -> None:
    """The CLI profile file wins over credentials.ini; `current` picks the profile."""
    path = _cli(tmp_path, [_ak("default", "cli-default"), _ak("work", "cli-work")], current="work")
    _ini(
        tmp_path / ".alibabacloud" / "credentials.ini",
        "[default]\ntype = access_key\naccess_key_id = ini\naccess_key_secret = x\n",
    )
    creds = _load(env={}, home=tmp_path)
    assert creds.access_key_id == "cli-work"
    assert creds.source == f"{path} profile work"


def test_profile_argument_and_env_variable(tmp_path: Path) -> None:
    """The profile argument beats ALIBABA_CLOUD_PROFILE, which beats the file's `current`."""
    _cli(tmp_path, [_ak("default", "d"), _ak("a", "aa"), _ak("b", "bb")])
    env = {"ALIBABA_CLOUD_PROFILE": "a"}
    assert _load(env=env, home=tmp_path).access_key_id == "aa"
    assert _load(profile="b", env=env, home=tmp_path).access_key_id == "bb"
    assert _load(env={}, home=tmp_path).access_key_id == "d"


async def test_cli_sts_token_mode_is_read_again_when_refused(tmp_path: Path) -> None:
    """StsToken mode reads sts_token (and sts_expiration), as a provider that reads the profile
    again once the API refused its token - new credentials written there meanwhile are used;
    the same token again cannot be renewed."""
    entry: dict[str, Any] = {**_ak("default", "STS.x"), "mode": "StsToken", "sts_token": TOKEN}
    path = _cli(tmp_path, [{**entry, "sts_expiration": 1_900_000_000}])
    provider = load_credentials(env={}, home=tmp_path)
    assert isinstance(provider, ProfileSts)
    assert provider.account_key == "aliyun-profile:default"

    async def fetch(method: str, url: str, headers: Any) -> tuple[int, str]:
        raise AssertionError("a profile needs no HTTP")

    first = await provider.current(fetch, 1_800_000_000)
    assert (first.security_token, first.expiration) == (TOKEN, 1_900_000_000)
    path.write_text(json.dumps({"current": "default", "profiles": [{**entry, "sts_token": "new"}]}))
    provider.invalidate()
    assert (await provider.current(fetch, 1_800_000_001)).security_token == "new"
    provider.invalidate()
    with pytest.raises(CredentialsExpiredError, match="could not be renewed"):
        await provider.current(fetch, 1_800_000_002)


def test_ecs_ram_role_from_profile_ini_or_environment(tmp_path: Path) -> None:
    """The instance RAM role: CLI mode EcsRamRole (ram_role_name), ini type ecs_ram_role
    (role_name), or ALIBABA_CLOUD_ECS_METADATA last - at the metadata endpoint given."""
    _cli(tmp_path, [{"name": "default", "mode": "EcsRamRole", "ram_role_name": "cli-role"}])
    found = load_credentials(env={}, home=tmp_path, metadata_endpoint="http://127.0.0.1:9")
    assert isinstance(found, EcsRamRole)
    assert (found.role, found.endpoint) == ("cli-role", "http://127.0.0.1:9")
    assert found.account_key == "ecs-ram-role:cli-role"
    env = {"ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true"}
    _ini(
        tmp_path / ".alibabacloud" / "credentials.ini",
        "[default]\ntype = ecs_ram_role\nrole_name = r\n",
    )
    found = load_credentials(env=env, home=tmp_path)
    assert isinstance(found, EcsRamRole)
    assert found.role == "r"
    (tmp_path / ".alibabacloud" / "credentials.ini").unlink()
    found = load_credentials(env={**env, "ALIBABA_CLOUD_ECS_METADATA": "env-role"}, home=tmp_path)
    assert isinstance(found, EcsRamRole)
    assert found.role == "env-role"
    disabled = {
        **env,
        "ALIBABA_CLOUD_ECS_METADATA": "x",
        "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
    }
    with pytest.raises(CredentialsError, match="no Alibaba Cloud credentials"):
        load_credentials(env=disabled, home=tmp_path)


def test_cli_sts_mode_without_token(tmp_path: Path) -> None:
    """StsToken mode without a token names the missing field, not any value."""
    _cli(tmp_path, [{**_ak("default", "STS.x"), "mode": "StsToken"}])
    with pytest.raises(CredentialsError, match="has no sts_token") as info:
        _load(env={}, home=tmp_path)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("mode", ["RamRoleArn", "OIDC", "CloudSSO", "External"])
def test_cli_unsupported_mode(tmp_path: Path, mode: str) -> None:
    """Other CLI modes are refused by name."""
    _cli(tmp_path, [{**_ak("default", "x"), "mode": mode}])
    with pytest.raises(CredentialsError, match=f"mode '{mode}'.*not support"):
        _load(env={}, home=tmp_path)


def test_cli_file_disabled(tmp_path: Path) -> None:
    """ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true skips config.json and falls through to the ini."""
    _cli(tmp_path, [_ak("default", "cli")])
    _ini(
        tmp_path / ".alibabacloud" / "credentials.ini",
        "[default]\ntype = access_key\naccess_key_id = ini\naccess_key_secret = s\n",
    )
    env = {"ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "True"}
    assert _load(env=env, home=tmp_path).access_key_id == "ini"


def test_ini_sections_and_comments(tmp_path: Path) -> None:
    """The ini's section is the profile (default `default`); text after ` #` is a comment."""
    path = _ini(
        tmp_path / ".alibabacloud" / "credentials.ini",
        "[default]\ntype = access_key   # plain keys\naccess_key_id = d\n"
        "access_key_secret = %pct\n\n[client1]\ntype = sts\naccess_key_id = c\n"
        f"access_key_secret = s\nsecurity_token = {TOKEN}\n",
    )
    default = _load(env={}, home=tmp_path)
    assert (default.access_key_id, default.access_key_secret) == ("d", "%pct")
    assert default.source == f"{path} [default]"
    sts = _load(profile="client1", env={}, home=tmp_path)
    assert sts.security_token == TOKEN


def test_ini_file_from_environment(tmp_path: Path) -> None:
    """ALIBABA_CLOUD_CREDENTIALS_FILE names the ini; a named file that is missing is an error."""
    path = _ini(tmp_path / "elsewhere.ini", "[default]\naccess_key_id = e\naccess_key_secret = s\n")
    env = {"ALIBABA_CLOUD_CREDENTIALS_FILE": str(path)}
    assert _load(env=env, home=tmp_path).access_key_id == "e"
    env = {"ALIBABA_CLOUD_CREDENTIALS_FILE": str(tmp_path / "nope.ini")}
    with pytest.raises(CredentialsError, match=r"nope\.ini .*does not exist"):
        _load(env=env, home=tmp_path)


def test_ini_unsupported_type(tmp_path: Path) -> None:
    """An ini profile of another type (e.g. oidc_role_arn) is refused by name."""
    _ini(
        tmp_path / ".alibabacloud" / "credentials.ini",
        "[default]\ntype = oidc_role_arn\nrole_name = r\n",
    )
    with pytest.raises(CredentialsError, match="type 'oidc_role_arn'"):
        _load(env={}, home=tmp_path)


def test_nothing_found_lists_every_place(tmp_path: Path) -> None:
    """With no source, the error lists the environment and both files that were looked at."""
    with pytest.raises(CredentialsError) as info:
        _load(profile="p1", env={}, home=tmp_path)
    message = str(info.value)
    assert message.startswith("no Alibaba Cloud credentials found; looked in: ")
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in message
    assert str(tmp_path / ".aliyun" / "config.json") in message
    assert str(tmp_path / ".alibabacloud" / "credentials.ini") + " [p1]" in message


def test_missing_profile_falls_through(tmp_path: Path) -> None:
    """A profile absent from config.json is looked for in the ini file."""
    _cli(tmp_path, [_ak("default", "cli")])
    _ini(
        tmp_path / ".alibabacloud" / "credentials.ini",
        "[ops]\naccess_key_id = ini-ops\naccess_key_secret = s\n",
    )
    assert _load(profile="ops", env={}, home=tmp_path).access_key_id == "ini-ops"


def test_malformed_json_names_file_and_line_without_secrets(tmp_path: Path) -> None:
    """Broken config.json gives file:line and never echoes its content."""
    path = tmp_path / ".aliyun" / "config.json"
    path.parent.mkdir(parents=True)
    path.write_text('{\n "profiles": [\n  {"access_key_secret": "' + SECRET + '",}\n ]\n}\n')
    with pytest.raises(CredentialsError) as info:
        _load(env={}, home=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: not valid JSON")
    assert SECRET not in message


def test_malformed_ini_names_file_and_line_without_secrets(tmp_path: Path) -> None:
    """Broken credentials.ini gives file:line and never echoes the offending line."""
    path = _ini(
        tmp_path / ".alibabacloud" / "credentials.ini", f"access_key_secret = {SECRET}\n[default]\n"
    )
    with pytest.raises(CredentialsError) as info:
        _load(env={}, home=tmp_path)
    assert str(info.value) == f"{path}:1: not a valid ini file"


def test_repr_and_str_hide_secret_and_token() -> None:
    """Neither repr nor str of Credentials shows the secret or the STS token."""
    creds = Credentials("AKID", SECRET, TOKEN, source="environment")
    for text in (repr(creds), str(creds), f"{creds}"):
        assert SECRET not in text
        assert TOKEN not in text
        assert "AKID" in text

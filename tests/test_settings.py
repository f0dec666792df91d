"""Settings precedence and validation: defaults < file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanout.errors import ConfigError
from fanout.settings import Settings, load_settings


def test_defaults() -> None:
    """With nothing given, the documented defaults apply."""
    settings = load_settings(env={}, config_file=None)
    assert settings == Settings()
    assert settings.batch_size == 50
    assert settings.daily_quota is None  # the account's own limit, read from the API
    assert settings.quota.daily_quota == 5000  # the fallback where it cannot be read


def test_precedence(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the file, which beats the default."""
    cfg = tmp_path / "f.toml"
    cfg.write_text("batch_size = 20\nconcurrency = 3\nrate_per_s = 1.5\n")
    env = {"FANOUT_CONCURRENCY": "7", "FANOUT_DAILY_QUOTA": "30"}
    settings = load_settings(config_file=cfg, env=env, flags={"daily_quota": 10, "region": None})
    assert (settings.batch_size, settings.concurrency, settings.daily_quota) == (20, 7, 10)
    assert settings.rate_per_s == 1.5


def test_fanout_table_is_read(tmp_path: Path) -> None:
    """Settings may also sit under a [fanout] table."""
    cfg = tmp_path / "f.toml"
    cfg.write_text("[fanout]\nbatch_size = 10\n")
    assert load_settings(config_file=cfg, env={}).batch_size == 10


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("bogus = 1\n", "unknown setting 'bogus'"),
        ("batch_size = 0\n", r"bad\.toml:1: batch_size must be an integer from 1 to 100, got 0"),
        ("quota_mode = 'weekly'\n", "quota_mode must be one of"),
        ("batch_size = [\n", "invalid TOML"),
    ],
)
def test_file_errors_name_file_and_key(tmp_path: Path, content: str, message: str) -> None:
    """A bad config file is refused with its path and the problem."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(config_file=cfg, env={})
    assert "bad.toml" in str(info.value)


def test_env_and_flag_errors_name_source() -> None:
    """Bad environment and flag values name the variable or flag."""
    with pytest.raises(ConfigError, match="FANOUT_CONCURRENCY"):
        load_settings(env={"FANOUT_CONCURRENCY": "many"})
    with pytest.raises(ConfigError, match="--batch-size"):
        load_settings(env={}, flags={"batch_size": -1})


def test_reserve_above_quota_refused() -> None:
    """A reserve larger than the quota could never allow a call."""
    with pytest.raises(ConfigError, match="quota_reserve"):
        load_settings(env={}, flags={"daily_quota": 10, "quota_reserve": 11})


def test_unknown_time_zone_refused() -> None:
    """A calendar time zone that does not exist is refused."""
    with pytest.raises(ConfigError, match="time zone"):
        load_settings(env={}, flags={"quota_mode": "calendar", "quota_time_zone": "Mars/Base"})

"""The shipped config files: every setting documented with its true default."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from fanout.errors import ConfigError
from fanout.settings import Settings, load_rollout, load_settings

CONFIG = Path(__file__).parent.parent / "config" / "fanout.toml"


def test_fanout_toml_documents_every_setting() -> None:
    """Each setting appears in config/fanout.toml, set to its default or commented out if unset."""
    text = CONFIG.read_text()
    values = tomllib.loads(text)
    defaults = Settings()
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        if default is None:
            assert re.search(rf"^# {f.name} = ", text, re.MULTILINE), f.name
        else:
            assert values[f.name] == default, f.name


def test_fanout_toml_loads_to_defaults() -> None:
    """Loading the documented file changes nothing."""
    assert load_settings(config_file=CONFIG, env={}) == Settings()


EXAMPLE = CONFIG.parent / "example-rollout.toml"


def test_example_rollout_loads() -> None:
    """config/example-rollout.toml is valid: its settings load and its [rollout] keys are known."""
    settings = load_settings(config_file=EXAMPLE, env={})
    assert settings.quota_reserve == 500
    rollout = load_rollout(EXAMPLE)
    assert rollout.values["waves"] == "1,10%,100%"
    assert rollout.values["params"] == {"name": "nginx", "version": "1.25.3"}
    assert rollout.sources["waves"].startswith(f"{EXAMPLE}:")


def test_unknown_rollout_key_is_refused(tmp_path: Path) -> None:
    """A [rollout] key that is not a flag is refused with the file and the key."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[rollout]\ncommand_id = "c-x"\nwavez = "1"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml:3: \[rollout\] wavez: unknown key"):
        load_rollout(bad)

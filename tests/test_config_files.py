"""The shipped config files: every setting documented with its true default."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

from fanout.settings import Settings, load_settings

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

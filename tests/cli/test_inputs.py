"""From the command line to a `RunRequest`: flags over the config file's `[rollout]` table, read
into one request (real files, the real settings and credentials chain, no API call)."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import pytest

from fanout.aliyun.credentials import Credentials
from fanout.cli.inputs import ParamInput, read_params, read_rollout, with_rollout_table
from fanout.cli.options import CommonFlags, RolloutFlags, SpendFlags
from fanout.errors import ConfigError
from fanout.settings import RolloutTable
from fanout.sources import CommandIdMap, ScriptSource
from fanout.targets import Target

HZ1, HZ2, BJ1 = "i-bp1aaaaaaaaaaaaaaaa1", "i-bp1aaaaaaaaaaaaaaaa2", "i-2zeaaaaaaaaaaaaaaaa1"


def rollout_flags(**given: Any) -> RolloutFlags:
    """`RolloutFlags` as click gives them when only `given` is on the command line."""
    empty: dict[str, Any] = {
        field.name: () if field.type == "tuple[str, ...]" else None
        for field in dataclasses.fields(RolloutFlags)
    }
    flags = dict.fromkeys(
        (
            "pause_after_wave",
            "no_preflight",
            "strict",
            "allow_overlap",
            "enable_parameter",
            "allow_short_secret",
            "count_unreachable",
        ),
        False,
    )
    return RolloutFlags(**{**empty, **flags, **given})


def spend_flags(config_file: Path | None = None, **given: Any) -> SpendFlags:
    """`SpendFlags` as click gives them when only `given` is on the command line."""
    common = CommonFlags(config_file=config_file, ledger=None, as_json=False, log_level="warning")
    empty: dict[str, Any] = {field.name: None for field in dataclasses.fields(SpendFlags)}
    flags = {"common": common, "yes": False, "wait_for_quota": False, "insecure_http": False}
    return SpendFlags(**{**empty, **flags, **given})


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FANOUT_* or config file of the person running the tests; an access key in the env."""
    for name in list(os.environ):
        if name.startswith(("FANOUT_", "ALIBABA_CLOUD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tTestKeyId000000")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret-value-0000")
    monkeypatch.chdir(tmp_path)


def test_the_table_fills_only_what_the_flags_left_out() -> None:
    """A `[rollout]` value is used where no flag was given; a given flag wins."""
    flags = rollout_flags(waves="1,100%", instance_ids=("cn-hangzhou:" + HZ1,))
    table = {
        "command_id": "c-fromthetable",
        "targets": "hosts.txt",
        "waves": "1,10%,100%",
        "instance_ids": [BJ1],
        "regions": ["cn-hangzhou", "cn-beijing"],
        "timeout_s": 300,
    }
    sources = {key: f"f.toml:{n}: [rollout] {key}" for n, key in enumerate(table, start=1)}
    merged, where = with_rollout_table(flags, RolloutTable(table, sources))
    assert merged.command_id == ("c-fromthetable",)
    assert merged.targets_file == "hosts.txt"
    assert merged.waves == "1,100%"
    assert merged.instance_ids == ("cn-hangzhou:" + HZ1,)
    assert merged.regions == ("cn-hangzhou", "cn-beijing")
    assert merged.timeout_s == 300
    assert merged.max_errors is None
    assert where["waves"] == "--waves"
    assert where["timeout_s"] == "f.toml:6: [rollout] timeout_s"
    assert where["command_id"] == "f.toml:1: [rollout] command_id"


def test_params_merge_key_by_key_and_a_flag_wins() -> None:
    """`--param` and the table's params are merged; for the same key the flag's value is kept."""
    params = read_params(
        ParamInput(params=("version=2.0", "user=ops")),
        env={},
        table=({"name": "nginx", "version": "1.25.3"}, "f.toml:3: [rollout] params"),
    )
    assert params == {"name": "nginx", "version": "2.0", "user": "ops"}


def test_no_table_changes_nothing() -> None:
    """Without a `[rollout]` table the flags are the request's input as given."""
    flags = rollout_flags(command_id=("c-x",), params=("a=1",))
    assert with_rollout_table(flags, RolloutTable({}, {}))[0] == flags


def test_read_rollout_builds_the_request_from_the_file_and_the_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flags over the config file's settings and `[rollout]` table become one request: targets
    from the file's target list, the command and its options, secret keys, waves, budget and
    waiting; the settings carry the file's values under the flags'."""
    (tmp_path / "hosts.txt").write_text(
        f"cn-hangzhou,{HZ1}\ncn-hangzhou,{HZ2}\ncn-hangzhou,{HZ1}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = tmp_path / "rollout.toml"
    config.write_text(
        "batch_size = 25\nconcurrency = 4\n\n[rollout]\n"
        'command_id = "c-fanoutdemoparam01"\ntargets = "hosts.txt"\n'
        'params = { name = "nginx", db_password = "hunter2-secret" }\n'
        'waves = "1,100%"\nmax_errors = "2%"\ntimeout_s = 300\nusername = "ops"\n'
    )
    read = read_rollout(
        rollout_flags(instance_ids=(f"cn-beijing:{BJ1}",), max_errors="5"),
        spend_flags(config, wait=False, concurrency=2, wait_for_quota=True),
    )
    request = read.request
    assert request.targets == (
        Target("cn-hangzhou", HZ1),
        Target("cn-hangzhou", HZ2),
        Target("cn-beijing", BJ1),
    )
    # The file named in the table is the one beside the config file, wherever fanout runs.
    assert [d.location for d in read.duplicates] == [f"{tmp_path / 'hosts.txt'}:3"]
    assert request.spec.command_id == "c-fanoutdemoparam01"
    assert request.spec.parameters == {"name": "nginx", "db_password": "hunter2-secret"}
    assert (request.spec.timeout_s, request.spec.username) == (300, "ops")
    assert request.secret_keys == ("db_password",)  # its name looks secret
    assert (request.waves, request.max_errors) == ("1,100%", "5")
    assert (request.wait, request.wait_for_quota, request.preflight) == (False, True, True)
    assert (read.settings.batch_size, read.settings.concurrency) == (25, 2)
    assert isinstance(read.credentials, Credentials)
    assert read.credentials.access_key_id == "LTAI5tTestKeyId000000"


def test_read_rollout_waits_unless_told_not_to() -> None:
    """Without --wait/--no-wait the run follows every instance to its result."""
    read = read_rollout(
        rollout_flags(command_id=("c-x",), instance_ids=(f"cn-hangzhou:{HZ1}",), no_preflight=True),
        spend_flags(),
    )
    assert (read.request.wait, read.request.preflight) == (True, False)


def test_a_command_id_is_required_from_a_flag_or_the_table(tmp_path: Path) -> None:
    """No command source, neither a flag nor the table's key: refused, naming every source."""
    config = tmp_path / "rollout.toml"
    config.write_text('[rollout]\nwaves = "1,100%"\n')
    with pytest.raises(ConfigError, match=r"exactly one command source .*--script.*\[rollout\]"):
        read_rollout(rollout_flags(instance_ids=(f"cn-hangzhou:{HZ1}",)), spend_flags(config))


def test_the_table_describes_every_command_source_and_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`[rollout]` keys for a script source (type, timeout, parameters on) and every
    InvokeCommand option build the same request the flags would; `command_ids` is the
    REGION=c-... map; a script with `{{...}}` and parameters off is warned about."""
    (tmp_path / "deploy.ps1").write_text("Write-Output {{version}}\n")
    config = tmp_path / "rollout.toml"
    config.write_text(
        "[rollout]\n"
        'script = "deploy.ps1"\ncommand_timeout_s = 120\nenable_parameter = true\n'
        'params = { version = "1.2" }\n'
        'termination_mode = "ProcessTree"\noss_output = "logs/fanout"\n'
        'container_name = "web-1"\nlauncher = "pwsh"\nresource_group_id = "rg-ops1"\n'
        'windows_password_name = "axtPassword"\nusername = "deploy"\n'
        'invocation_tags = { team = "sre" }\n'
    )
    read = read_rollout(rollout_flags(instance_ids=(f"cn-hangzhou:{HZ1}",)), spend_flags(config))
    source, spec = read.request.source, read.request.spec
    assert isinstance(source, ScriptSource)
    assert (source.command_type, source.timeout_s, source.enable_parameter) == (
        "RunPowerShellScript",
        120,
        True,
    )
    assert spec.command_id == source.name
    assert spec.parameters == {"version": "1.2"}
    assert (spec.termination_mode, spec.oss_output_delivery) == ("ProcessTree", "oss://logs/fanout")
    assert (spec.container_name, spec.launcher, spec.resource_group_id) == (
        "web-1",
        "pwsh",
        "rg-ops1",
    )
    assert (spec.windows_password_name, spec.username) == ("axtPassword", "deploy")
    assert spec.invocation_tags == {"team": "sre"}
    assert capsys.readouterr().err == ""

    config.write_text('[rollout]\ncommand_ids = { cn-hangzhou = "c-a", cn-beijing = "c-b" }\n')
    flags = rollout_flags(instance_ids=(f"cn-hangzhou:{HZ1}", f"cn-beijing:{BJ1}"))
    read = read_rollout(flags, spend_flags(config))
    assert read.request.source == CommandIdMap({"cn-hangzhou": "c-a", "cn-beijing": "c-b"})

    (tmp_path / "docker.sh").write_text("docker ps --format '{{.Names}}'\n")
    read_rollout(
        rollout_flags(script="docker.sh", instance_ids=(f"cn-hangzhou:{HZ1}",)), spend_flags()
    )
    assert "{{.Names}} is sent as it is" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "refusal"),
    [
        ({"command_name": "a", "script": "x.sh"}, "got --command-name and --script"),
        ({"command_id": ("c-1",), "command_type": "RunBatScript"}, "--type: only with --script"),
        ({"script": "x.sh", "provider": "AlibabaCloud"}, "--provider: only with"),
        ({"command_id": ("cn-hangzhou=c-1",)}, "no REGION=c-... entry for cn-beijing"),
        ({"script": "absent.sh"}, "--script absent.sh: cannot read"),
    ],
)
def test_command_source_mistakes_are_refused_before_any_call(
    given: dict[str, Any], refusal: str
) -> None:
    """Two sources, script-only flags without a script, a provider with a script, a map
    without a target region, an unreadable script: each refused (exit 2) before any call."""
    flags = rollout_flags(instance_ids=(f"cn-hangzhou:{HZ1}", f"cn-beijing:{BJ1}"), **given)
    with pytest.raises(ConfigError, match=re.escape(refusal)):
        read_rollout(flags, spend_flags())

"""Command sources (pure): script names from a content hash, the `--command-id` forms, what a
run stores and restores, and the checks a script gets before any call."""

from __future__ import annotations

import pytest

from fanout.errors import ConfigError
from fanout.sources import (
    CommandIdMap,
    CommandIdSource,
    CommandNameSource,
    ScriptSource,
    check_script,
    label,
    missing_regions,
    parse_command_ids,
    placeholders,
    source_from_options,
    source_options,
    type_for_path,
)
from fanout.validate import DEFAULT_CONTENT_LIMIT_BYTES

SCRIPT = ScriptSource("#!/bin/bash\necho {{name}}\n")


def test_script_name_is_stable_and_depends_on_everything_that_defines_the_command() -> None:
    """`fanout-` + 16 hex digits of SHA-256 over content, type, working dir, timeout and
    enable-parameter: the same script is one command; a change in any of them is another; the
    file it was read from is not part of it."""
    assert SCRIPT.name.startswith("fanout-")
    assert len(SCRIPT.name) == len("fanout-") + 16
    assert ScriptSource(SCRIPT.content, path="elsewhere/deploy.sh").name == SCRIPT.name
    variants = [
        ScriptSource(SCRIPT.content + " "),
        ScriptSource(SCRIPT.content, command_type="RunBatScript"),
        ScriptSource(SCRIPT.content, working_dir="/srv"),
        ScriptSource(SCRIPT.content, timeout_s=61),
        ScriptSource(SCRIPT.content, enable_parameter=True),
    ]
    names = {v.name for v in variants}
    assert len(names) == len(variants)
    assert SCRIPT.name not in names


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("deploy.sh", "RunShellScript"),
        ("deploy.BASH", "RunShellScript"),
        ("C:\\ops\\run.bat", "RunBatScript"),
        ("run.cmd", "RunBatScript"),
        ("dir/x.ps1", "RunPowerShellScript"),
        ("noext", "RunShellScript"),
        (".profile", "RunShellScript"),
    ],
)
def test_type_from_the_extension(path: str, kind: str) -> None:
    """The command type follows the extension, RunShellScript when it says nothing."""
    assert type_for_path(path) == kind


def test_placeholders_and_lookalikes() -> None:
    """`{{name}}` (spaces ignored, ACS:: built-ins excluded) are parameters when enabled;
    otherwise `{{...}}` texts are reported to warn about, `{{.Names}}` included."""
    text = "echo {{ a }} {{b-1}} {{ACS::InstanceId}} {{a}} {{.Names}}"
    assert placeholders(text) == ("a", "b-1")
    assert ScriptSource(text).lookalikes() == (
        "{{ a }}",
        "{{b-1}}",
        "{{ACS::InstanceId}}",
        "{{a}}",
        "{{.Names}}",
    )
    assert ScriptSource(text, enable_parameter=True).lookalikes() == ()
    assert ScriptSource(text, enable_parameter=True).parameter_names == ("a", "b-1")


def test_command_id_forms() -> None:
    """One id, or REGION=id items; mixing them, one id twice or an empty part is refused."""
    assert parse_command_ids(["c-1"]) == CommandIdSource("c-1")
    assert parse_command_ids(["cn-a=c-1", "cn-b=c-2"]) == CommandIdMap(
        {"cn-a": "c-1", "cn-b": "c-2"}
    )
    for bad in (["c-1", "c-2"], ["c-1", "cn-a=c-2"], ["cn-a="], ["cn-a=c-1", "cn-a=c-2"]):
        with pytest.raises(ConfigError, match="--command-id"):
            parse_command_ids(bad)
    source = CommandIdMap({"cn-a": "c-1"})
    assert missing_regions(source, ["cn-a", "cn-b", "cn-b"]) == ["cn-b"]
    assert missing_regions(CommandIdSource("c-1"), ["cn-b"]) == []


@pytest.mark.parametrize(
    "source",
    [
        CommandIdSource("c-1"),
        CommandIdSource("ACS-ECS-X", provider="AlibabaCloud"),
        CommandIdMap({"cn-b": "c-2", "cn-a": "c-1"}),
        CommandNameSource("deploy"),
        CommandNameSource("ACS-ECS-X", provider="AlibabaCloud"),
        ScriptSource("echo\n", "RunShellScript", "/srv", 90, enable_parameter=True, path="x.sh"),
    ],
)
def test_a_stored_source_comes_back_the_same(source: object) -> None:
    """What a run stores of its source restores to the same source (resume and retry)."""
    assert source_from_options(source_options(source), "unused") == source  # type: ignore[arg-type]


def test_a_run_stored_before_sources_uses_its_command_id() -> None:
    """A run without a stored source (schema 1) invoked its `command_id` everywhere."""
    assert source_from_options(None, "c-old") == CommandIdSource("c-old")
    assert label(CommandIdMap({"cn-b": "c-2", "cn-a": "c-1"})) == "cn-a=c-1,cn-b=c-2"
    assert label(SCRIPT) == SCRIPT.name


def test_script_checks_before_any_call() -> None:
    """Empty, parameters without --enable-parameter, more than 20 placeholders, and the size
    rule (the limit and its source named) are refused; lookalikes are returned to warn."""
    limit = DEFAULT_CONTENT_LIMIT_BYTES
    assert check_script(SCRIPT, None, content_limit_bytes=limit) == ("{{name}}",)
    with pytest.raises(ConfigError, match="empty"):
        check_script(ScriptSource("  \n"), None, content_limit_bytes=limit)
    with pytest.raises(ConfigError, match="--enable-parameter"):
        check_script(SCRIPT, {"name": "x"}, content_limit_bytes=limit)
    many = ScriptSource(" ".join(f"{{{{p{i}}}}}" for i in range(21)), enable_parameter=True)
    with pytest.raises(ConfigError, match="at most 20"):
        check_script(many, None, content_limit_bytes=limit)
    enabled = ScriptSource(SCRIPT.content, enable_parameter=True)
    with pytest.raises(ConfigError, match="spec S11"):
        check_script(enabled, None, content_limit_bytes=limit)
    check_script(enabled, {"name": "x"}, content_limit_bytes=limit)
    big = ScriptSource("#" * (limit // 4 * 3 + 1))
    with pytest.raises(ConfigError, match=r"at most 18432 \(spec P4.*default 18 KB"):
        check_script(big, None, content_limit_bytes=limit)
    with pytest.raises(ConfigError, match=r"at most 20 \(spec P4.*as configured"):
        check_script(SCRIPT, None, content_limit_bytes=20)

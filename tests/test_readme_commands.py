"""The README shows command sources that work on the real cloud (issue 13): the operator's path
uses `--script`, the section "Commands" names the four sources and when to use each, and every
InvokeCommand flag it lists is a flag of `fanout run`."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from fanout.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of a `## title` section, up to the next `## `."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.MULTILINE | re.DOTALL)
    assert match, title
    return match.group(1)


def test_operators_path_and_emulator_example_use_real_cloud_sources() -> None:
    """No command id that exists only in the emulator; the operator's path runs a script."""
    assert "c-fanoutdemo" not in README
    path = README[README.index("The operator's path") :]
    block = path[path.index("```bash") : path.index("```", path.index("```bash") + 3)]
    assert "fanout plan   --script deploy.sh" in block
    assert "fanout run    --script deploy.sh" in block


def test_commands_section_names_the_four_sources() -> None:
    """The section "Commands" has a row for each source with when to use it."""
    text = section("Commands")
    rows = [line for line in text.splitlines() if line.startswith("| `--")]
    sources = ("`--script FILE`", "`--command-name NAME`", "`--command-id REGION=c-...`")
    for source in (*sources, "`--command-id c-...`"):
        assert any(row.startswith(f"| {source}") for row in rows), source
    assert "one region" in text
    assert "--provider" in text
    assert "18 KB" in text


def test_every_listed_invoke_command_flag_exists() -> None:
    """Each flag of the README's InvokeCommand table is a `fanout run` flag."""
    help_text = CliRunner().invoke(main, ["run", "--help"], terminal_width=200).output
    table = section("Commands").split("**InvokeCommand's options**")[1]
    flags = re.findall(r"`(--[a-z-]+)", table)
    assert len(set(flags)) >= 12
    for flag in flags:
        assert flag in help_text, flag


def test_bake_time_checks_and_rollback_are_documented_with_real_flags() -> None:
    """The README's bake-time section says a wait without a check only delays the next wave,
    says how the two budgets combine, and every flag it names is one of `run` or `rollback`."""
    text = section("Waves, error budget, retry and stop")
    assert "without a wave check the wait\n  only delays the next wave" in text.lower()
    assert "How the budgets combine" in text
    runner = CliRunner()
    helps = " ".join(
        runner.invoke(main, [name, "--help"], terminal_width=200).output
        for name in ("run", "rollback")
    )
    part = text[text.index("### Bake time, wave checks and rollback") :]
    flags = set(re.findall(r"`(--[a-z-]+)", part)) | set(re.findall(r" (--[a-z-]+[a-z])", part))
    assert {"--wave-wait", "--wave-check-script", "--on-halt-scope", "--scope"} <= flags
    for flag in flags:
        assert flag in helps, flag

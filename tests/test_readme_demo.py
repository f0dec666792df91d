"""The README's first command, followed as a new user would (issue 6).

The first ```bash block of README.md (create a virtual environment, install this checkout, run
`fanout demo`) runs as written, with three substitutions: the venv lives in tmp_path, the
interpreter is the one running the tests (Python 3.11+, whatever `python3` is on this host), and
the demo writes its ledger into tmp_path (`--dir`). It needs the package registry (or pip's cache)
for the dependencies, as CI has. Then `fanout status --json`, through the new venv, on the run id
and ledger the demo printed must account for all 10 000 targets.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_TARGETS = 10_000
# Creating the venv and installing (dependencies from pip's cache or the registry) takes about
# 20-60 s and the demo itself well under a minute; this bounds a hung download.
INSTALL_AND_DEMO_TIMEOUT_S = 540


def first_bash_block(markdown: str) -> str:
    """The body of the first ```bash fenced block."""
    match = re.search(r"^```bash\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no ```bash block"
    return match.group(1)


def substituted(block: str, venv: Path, demo_dir: Path) -> str:
    """The README's commands with the venv, the interpreter and the demo folder put in place."""
    script = re.sub(r"(?<![\w./-])\.venv(?=/|\s|$)", str(venv), block)
    script = re.sub(r"(?<![\w./-])python3(?=\s)", sys.executable, script)
    script = re.sub(r"(\bfanout demo)\b", rf"\1 --dir {demo_dir}", script)
    assert str(venv) in script, block
    assert f"fanout demo --dir {demo_dir}" in script, block
    return script


def user_env(tmp_path: Path) -> dict[str, str]:
    """This environment (pip's settings and cache included) without fanout's own variables or
    an active venv, and with no fanout config file of the developer's."""
    drop = ("FANOUT_", "ALIBABA_CLOUD_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_AND_DEMO_TIMEOUT_S + 60)
def test_readme_demo_command_in_a_fresh_venv(tmp_path: Path) -> None:
    """The README's install-and-demo command exits 0 with the report summary, and `fanout status`
    on the ledger it printed accounts for all 10 000 targets."""
    block = first_bash_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert "pip install" in block
    assert "fanout demo" in block
    venv, demo_dir = tmp_path / "venv", tmp_path / "demo"
    env = user_env(tmp_path)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", substituted(block, venv, demo_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_AND_DEMO_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # The report summary: the run's final state and counts, then one line per region.
    summary = re.search(
        r"^run (r\S+): finished \(exit 1\), 10000 targets: (.+)$", done.stdout, re.MULTILINE
    )
    assert summary, done.stdout
    counts = {state: int(n) for n, state in re.findall(r"(\d+) (\w+)", summary.group(2))}
    assert sum(counts.values()) == DEMO_TARGETS
    assert counts["succeeded"] > 0
    assert counts["failed"] > 0  # the demo fleet has failing executions
    assert counts["excluded"] > 0  # and instances preflight excludes
    assert len(re.findall(r"^  cn-\S+: instances \d+ succeeded", done.stdout, re.MULTILINE)) == 3

    # `fanout status RUN_ID --ledger PATH`, as the demo says, through the new venv.
    printed = re.search(r"^\s*fanout status (\S+) --ledger (\S+)$", done.stderr, re.MULTILINE)
    assert printed, done.stderr
    run_id, ledger = printed.groups()
    assert run_id == summary.group(1)
    assert Path(ledger).is_relative_to(demo_dir)
    status = subprocess.run(
        [str(venv / "bin" / "fanout"), "status", run_id, "--ledger", ledger, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["run_id"] == run_id
    assert doc["target_count"] == DEMO_TARGETS
    assert sum(doc["instances"].values()) == DEMO_TARGETS
    assert sum(sum(r["instances"].values()) for r in doc["regions"].values()) == DEMO_TARGETS
    assert len(doc["regions"]) == 3

    # The HTML report beside the ledger, printed too; `fanout demo --clean` removes both.
    report = re.search(r"^report: (\S+)$", done.stderr, re.MULTILINE)
    assert report, done.stderr
    assert Path(report.group(1)).parent == Path(ledger).parent
    assert Path(report.group(1)).read_text().startswith("<!DOCTYPE html>")
    clean = subprocess.run(
        [str(venv / "bin" / "fanout"), "demo", "--clean", "--dir", str(demo_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert clean.returncode == 0, clean.stderr
    assert not Path(ledger).exists()
    assert not Path(report.group(1)).exists()

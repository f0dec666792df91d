"""`fanout doctor` against the emulator (issue 14): one call per action, OK or the missing RAM
permission, the account's daily quota, the credentials' source and expiry, the endpoint; and
the README's RAM policy is exactly the actions fanout calls."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from pathlib import Path

import fanout
from fanout.aliyun.permissions import USED_ACTIONS, policy_document
from fanout.emulator import EmulatorThread
from tests.conftest import Fanout
from tests.emulator_process import emulator_process

Start = Callable[..., EmulatorThread]
Bind = Callable[[EmulatorThread], Fanout]
REGIONS = ("cn-hangzhou", "cn-beijing")
README = Path(fanout.__file__).parent.parent / "README.md"


def test_doctor_all_ok(emulator: Start, fanout_cli: Bind) -> None:
    """Against the emulator every action is OK in every region, exit 0; the document names the
    daily quota the API reports, the endpoint and the credentials' source (no expiry)."""
    emu = emulator(regions=REGIONS, daily_quota=1234)
    cli = fanout_cli(emu)
    done = cli.run("doctor", "--region", REGIONS[0], "--region", REGIONS[1], "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is True
    assert doc["credentials"]["source"] == "environment"
    assert doc["credentials"]["expires_at"] is None
    for region in REGIONS:
        data = doc["regions"][region]
        assert data["daily_quota"] == 1234
        assert data["endpoint"] == emu.url
        assert set(data["checks"]) == {
            "DescribeAccountAttributes",
            "DescribeInstances",
            "DescribeCloudAssistantStatus",
            "DescribeCommands",
            "DescribeInvocations",
            "DescribeInvocationResults",
        }
        assert all(check["ok"] for check in data["checks"].values())
    for region in REGIONS:  # one call of each action per region
        calls = emu.snapshot()["regions"][region]["calls"]
        assert all(calls[action] == 1 for action in doc["regions"][region]["checks"])
    text = cli.run("doctor", "--region", REGIONS[0])
    assert "daily invocation quota 1234" in text.stdout
    assert "all checks passed" in text.stdout


def test_doctor_names_a_missing_permission_and_exits_6(emulator: Start, fanout_cli: Bind) -> None:
    """With --deny-action DescribeCloudAssistantStatus that action is MISSING, naming
    ecs:DescribeCloudAssistantStatus; the others are OK; exit 6."""
    emu = emulator(denied_actions=frozenset({"DescribeCloudAssistantStatus"}))
    cli = fanout_cli(emu)
    done = cli.run("doctor", "--region", "cn-hangzhou")
    assert done.returncode == 6
    (line,) = [ln for ln in done.stdout.splitlines() if "DescribeCloudAssistantStatus" in ln]
    assert line.strip().startswith("MISSING")
    assert "needs ecs:DescribeCloudAssistantStatus" in line
    assert sum("OK" in ln.split()[:1] for ln in done.stdout.splitlines()) == 5
    doc = json.loads(cli.run("doctor", "--region", "cn-hangzhou", "--json").stdout)
    check = doc["regions"]["cn-hangzhou"]["checks"]["DescribeCloudAssistantStatus"]
    assert (check["ok"], check["missing_permission"], check["code"]) == (
        False,
        True,
        "Forbidden.RAM",
    )


def test_doctor_check_invoke_dry_runs_and_says_what_it_costs(
    emulator: Start, fanout_cli: Bind
) -> None:
    """--check-invoke first says what the dry run may cost, then checks InvokeCommand with
    RepeatMode=DryRun (nothing is executed), StopInvocation of no invocation, CreateCommand of
    no command type and DeleteCommand of no command (nothing created or deleted)."""
    emu = emulator()
    cli = fanout_cli(emu)
    done = cli.run("doctor", "--region", "cn-hangzhou", "--check-invoke", "--json")
    assert done.returncode == 0, done.stdout
    assert "DryRun" in done.stderr
    assert "count on it costing one" in done.stderr
    checks = json.loads(done.stdout)["regions"]["cn-hangzhou"]["checks"]
    assert checks["InvokeCommand"]["ok"]
    assert checks["StopInvocation"]["ok"]
    assert checks["CreateCommand"]["ok"]
    assert checks["DeleteCommand"]["ok"]
    state = emu.snapshot()
    assert state["invocations"] == []  # a dry run executes nothing
    assert state["regions"]["cn-hangzhou"]["commands_created"] == 0
    assert state["regions"]["cn-hangzhou"]["dry_runs"] == 1
    denied = emulator(denied_actions=frozenset({"InvokeCommand"}))
    done = fanout_cli(denied).run("doctor", "--region", "cn-hangzhou", "--check-invoke")
    assert done.returncode == 6
    assert "needs ecs:InvokeCommand" in done.stdout


def test_doctor_shows_role_credentials_and_when_they_expire(
    emulator: Start, fanout_cli: Bind
) -> None:
    """On the instance RAM role (from the emulated metadata service) doctor names the role and
    when its STS credentials expire, and that they are renewed."""
    emu = emulator(ram_role="deployer", sts_ttl_s=3600)
    cli = fanout_cli(emu)
    env = {k: v for k, v in cli.env.items() if not k.startswith("ALIBABA_CLOUD_ACCESS_KEY")}
    env |= {"ALIBABA_CLOUD_ECS_METADATA": "deployer", "FANOUT_METADATA_ENDPOINT": emu.url}
    done = cli.run("doctor", "--region", "cn-hangzhou", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    creds = json.loads(done.stdout)["credentials"]
    assert "ECS instance RAM role deployer" in creds["source"]
    assert creds["sts"] is True
    assert creds["renewable"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", creds["expires_at"])


def test_the_readme_policy_is_exactly_the_actions_fanout_calls() -> None:
    """The README's RAM policy JSON is `policy_document()`, and its actions are exactly those
    fanout's code sends (every `call("Action", ...)` and typed action used outside the API
    client and the emulator)."""
    text = README.read_text()
    match = re.search(r"```json\n(\{\n  \"Version\": \"1\".*?\n\})\n```", text, re.DOTALL)
    assert match, "the README shows the RAM policy as a json block"
    assert json.loads(match.group(1)) == policy_document()
    typed = {
        "invoke_command": "InvokeCommand",
        "stop_invocation": "StopInvocation",
        "describe_instances": "DescribeInstances",
        "describe_cloud_assistant_status": "DescribeCloudAssistantStatus",
        "describe_commands": "DescribeCommands",
        "invocation_pages": "DescribeInvocations",
        "describe_invocations": "DescribeInvocations",
        "describe_invocation_results": "DescribeInvocationResults",
        "describe_account_attributes": "DescribeAccountAttributes",
        "create_command": "CreateCommand",
        "delete_command": "DeleteCommand",
    }
    used: set[str] = set()
    root = Path(fanout.__file__).parent
    for path in root.rglob("*.py"):
        if path.is_relative_to(root / "emulator") or path.is_relative_to(root / "aliyun"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                if name in typed:
                    used.add(typed[name])
                first = node.args[0] if node.args else None
                if name == "call" and isinstance(first, ast.Constant):
                    used.add(str(first.value))
    assert used == set(USED_ACTIONS)


def test_doctor_against_the_emulator_command_line(tmp_path: Path) -> None:
    """`fanout emulator` started as its own process: `doctor` is all OK (exit 0); against one
    started with `--deny-action DescribeCloudAssistantStatus` it names that action and
    ecs:DescribeCloudAssistantStatus and exits 6 (the flag, not a test-built config)."""
    with emulator_process("--regions", "cn-hangzhou") as url:
        cli = Fanout(endpoint=url, ledger=str(tmp_path / "l.sqlite3"), home=tmp_path)
        ok = cli.run("doctor", "--region", "cn-hangzhou")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all checks passed" in ok.stdout
    deny = ("--regions", "cn-hangzhou", "--deny-action", "DescribeCloudAssistantStatus")
    with emulator_process(*deny) as url:
        cli = Fanout(endpoint=url, ledger=str(tmp_path / "l.sqlite3"), home=tmp_path)
        done = cli.run("doctor", "--region", "cn-hangzhou")
    assert done.returncode == 6, done.stdout + done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if "DescribeCloudAssistantStatus" in ln]
    assert line.strip().startswith("MISSING")
    assert "needs ecs:DescribeCloudAssistantStatus" in line

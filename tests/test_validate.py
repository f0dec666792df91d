"""`fanout.validate`: each request-wide InvokeCommand rule refused with its name, before any call."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from fanout.aliyun.command import CommandSpec
from fanout.aliyun.responses import Command
from fanout.errors import ConfigError
from fanout.validate import (
    DEFAULT_CONTENT_LIMIT_BYTES,
    check_parameters,
    check_schedule,
    encoded_size,
    validate_command,
)
from tests.test_architecture import forbidden_imports

NOW_S = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
LIMIT = DEFAULT_CONTENT_LIMIT_BYTES


def command(
    *names: str, enable: bool = True, content: str = "echo {{name}} {{version}}"
) -> Command:
    """A command as DescribeCommands returns it."""
    return Command("c-test0000000000001", "t", "RunShellScript", content, enable, names, 60)


PARAM_COMMAND = command("name", "version")
PLAIN_COMMAND = command(enable=False, content="echo hello")


def refusal(cmd: Command | None, spec: CommandSpec, limit: int = LIMIT) -> str:
    """The one-line message `validate_command` refuses `spec` with."""
    with pytest.raises(ConfigError) as caught:
        validate_command(cmd, spec, region="cn-hangzhou", content_limit_bytes=limit, now_s=NOW_S)
    message = str(caught.value)
    assert "\n" not in message
    return message


def accepts(cmd: Command, spec: CommandSpec, limit: int = LIMIT) -> None:
    """`validate_command` lets `spec` through."""
    validate_command(cmd, spec, region="cn-hangzhou", content_limit_bytes=limit, now_s=NOW_S)


def spec(parameters: dict[str, str] | None = None, **options: object) -> CommandSpec:
    """A spec for the test command."""
    return CommandSpec("c-test0000000000001", parameters, **options)  # type: ignore[arg-type]


def test_p1_more_than_ten_parameters_are_refused() -> None:
    """Spec P1: eleven parameters are refused; ten are fine."""
    names = [f"k{i}" for i in range(11)]
    cmd = command(*names)
    assert "spec P1" in refusal(cmd, spec(dict.fromkeys(names, "v")))
    accepts(cmd, spec(dict.fromkeys(names[:10], "v")))


@pytest.mark.parametrize("key", ["", "k" * 65])
def test_p2_empty_or_long_names_are_refused(key: str) -> None:
    """Spec P2: a name is non-empty and at most 64 characters."""
    cmd = command(key, "k" * 64)
    assert "spec P2" in refusal(cmd, spec({key: "v"}))
    accepts(cmd, spec({"k" * 64: "v"}))


def test_p3_empty_values_are_fine() -> None:
    """Spec P3: a value may be the empty string."""
    accepts(PARAM_COMMAND, spec({"name": "", "version": ""}))


def test_p4_content_plus_parameters_over_the_limit_is_refused() -> None:
    """Spec P4: Base64(content) + Base64(parameters JSON) is measured against the limit exactly."""
    params = {"name": "x" * 100}
    size = encoded_size(PARAM_COMMAND.content, params)
    expected = len(base64.b64encode(PARAM_COMMAND.content.encode())) + len(
        base64.b64encode(json.dumps(params, separators=(",", ":")).encode())
    )
    assert size == expected
    accepts(PARAM_COMMAND, spec(params), limit=size)
    message = refusal(PARAM_COMMAND, spec(params), limit=size - 1)
    assert "spec P4" in message
    assert f"{size} bytes" in message


def test_p4_counts_non_ascii_as_utf8_bytes() -> None:
    """Spec P4: the size is of UTF-8 bytes, as sent on the wire."""
    assert encoded_size("é", None) == len(base64.b64encode("é".encode()))
    assert encoded_size("", {"name": "中"}) == len(base64.b64encode('{"name":"中"}'.encode()))


def test_p5_an_undefined_name_is_refused() -> None:
    """Spec P5: names must be a subset of the command's; a subset is fine."""
    message = refusal(PARAM_COMMAND, spec({"name": "a", "colour": "red"}))
    assert "spec P5" in message
    assert "'colour'" in message
    accepts(PARAM_COMMAND, spec({"name": "a"}))


def test_p6_parameters_for_a_command_without_them_are_refused() -> None:
    """Spec P6 / Parameter.Disabled: no parameters for a command that does not enable them."""
    assert "Parameter.Disabled" in refusal(PLAIN_COMMAND, spec({"name": "a"}))
    accepts(PLAIN_COMMAND, spec(None))
    accepts(PLAIN_COMMAND, spec({}))  # an empty map is not sent


@pytest.mark.parametrize("parameters", [None, {}])
def test_s11_a_command_with_parameters_needs_them(parameters: dict[str, str] | None) -> None:
    """Spec S11: a command that defines parameters refuses a run without Parameters."""
    message = refusal(PARAM_COMMAND, spec(parameters))
    assert "spec S11" in message
    assert "name, version" in message


def test_enabled_without_defined_names_needs_nothing() -> None:
    """A command that enables parameters but defines none runs without them."""
    accepts(command(content="echo hi"), spec(None))


def test_unknown_command_id_is_refused_with_the_region() -> None:
    """A command DescribeCommands does not know is refused, naming the id and the region."""
    message = refusal(None, spec(None))
    assert "c-test0000000000001" in message
    assert "cn-hangzhou" in message


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({"timed": True}, "--timed needs --frequency"),
        ({"repeat_mode": "Period"}, "--repeat-mode Period needs --frequency"),
        ({"timed": True, "frequency": "*/5 * * * * *"}, "InvalidParam.Frequency"),
        ({"repeat_mode": "Period", "frequency": "rate(30s)"}, "InvalidParam.Frequency"),
        (
            {"repeat_mode": "Once", "frequency": "rate(5m)"},
            "--repeat-mode Once and --frequency contradict",
        ),
        (
            {"repeat_mode": "DryRun", "timed": True, "frequency": "rate(5m)"},
            "--repeat-mode DryRun and --frequency contradict",
        ),
        ({"repeat_mode": "EveryReboot", "timed": True}, "--repeat-mode EveryReboot and --timed"),
        ({"frequency": "rate(5m)"}, "--frequency without --repeat-mode Period"),
    ],
)
def test_s7_schedules_are_checked(options: dict[str, object], rule: str) -> None:
    """Spec S7: Timed needs a Frequency, and the Frequency must be valid whatever the mode."""
    with pytest.raises(ConfigError, match="spec S7") as caught:
        check_schedule(spec(None, **options), NOW_S)
    assert rule in str(caught.value)


def test_a_valid_schedule_is_returned() -> None:
    """A valid Frequency comes back parsed; none given, nothing to check."""
    parsed = check_schedule(spec(None, timed=True, frequency="0 */20 * * * *"), NOW_S)
    assert parsed is not None
    assert parsed.min_interval_s == 1200
    assert check_schedule(spec(None), NOW_S) is None


def test_messages_never_show_parameter_values() -> None:
    """A refusal names keys and sizes, never a value (values may be secrets)."""
    secret = "s3cr3t-value-never-shown"
    messages = [
        refusal(PARAM_COMMAND, spec({"name": secret, "nope": secret})),
        refusal(PLAIN_COMMAND, spec({"name": secret})),
        refusal(PARAM_COMMAND, spec({"name": secret * 1000})),
    ]
    assert all(secret not in m for m in messages)


def test_check_parameters_alone_uses_the_given_limit() -> None:
    """check_parameters applies P4 with the configured limit (content_limit_bytes)."""
    with pytest.raises(ConfigError, match="at most 10"):
        check_parameters(PLAIN_COMMAND, None, content_limit_bytes=10)


@pytest.mark.parametrize("module", ["fanout.validate", "fanout.schedule"])
def test_validation_is_pure(module: str) -> None:
    """validate and schedule reach no network, file, clock or event-loop library."""
    assert forbidden_imports(module) == []

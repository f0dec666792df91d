"""CommandSpec's options: the reference's rule for each, checked before any call (pure)."""

from __future__ import annotations

import pytest

from fanout.aliyun.command import (
    SPEC_OPTIONS,
    CommandSpec,
    check_options,
    oss_output_delivery,
)
from fanout.errors import ConfigError

OK = CommandSpec(
    "c-1",
    timeout_s=10,
    username="u" * 255,
    working_dir="w" * 200,
    windows_password_name="p" * 255,
    container_id="cri-o://" + "a" * 64,
    container_name="a" * 128,
    termination_mode="Process",
    launcher="x" * 1024,
    resource_group_id="rg-abc123",
    oss_output_delivery="oss://my-bucket",
    invocation_tags={f"k{n}": "v" * 128 for n in range(20)},
)


def test_values_at_every_limit_pass() -> None:
    """Each option at its documented limit is accepted."""
    check_options(OK)
    check_options(CommandSpec("c-1"))


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"timeout_s": 9}, "at least 10"),
        ({"username": "u" * 256}, "Username.ExceedLimit"),
        ({"working_dir": "w" * 201}, "InvalidParameter.WorkingDir"),
        ({"windows_password_name": "p" * 256}, "WindowsPasswordName.ExceedLimit"),
        ({"container_id": "a" * 63}, "InvalidContainerId.Malformed"),
        ({"container_id": "podman://" + "a" * 64}, "InvalidContainerId.Malformed"),
        ({"container_name": "a" * 129}, "InvalidContainerName.Malformed"),
        ({"termination_mode": "processtree"}, "InvalidTerminationMode.NotFound"),
        ({"launcher": "é" * 513}, "InvalidLauncher.LengthLimitExceeded"),  # 1026 bytes
        ({"resource_group_id": "RG-1"}, "resource group id"),
        ({"oss_output_delivery": "oss://B"}, "bucket name"),
        ({"invocation_tags": {f"k{n}": "" for n in range(21)}}, "at most 20"),
        ({"invocation_tags": {"": "x"}}, "Tag.N.Key"),
        ({"invocation_tags": {"acs:x": "y"}}, "acs: or aliyun"),
        ({"invocation_tags": {"k": "v" * 129}}, "at most 128"),
        ({"invocation_tags": {"k": "https://x"}}, "http"),
    ],
)
def test_a_value_over_the_rule_is_refused(change: dict[str, object], rule: str) -> None:
    """One value past its rule: a ConfigError naming the rule (the API's code where it has one)."""
    spec = CommandSpec("c-1", **change)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rule):
        check_options(spec)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("my-bucket/runs/x", "oss://my-bucket/runs/x"),
        ("oss://my-bucket/", "oss://my-bucket/"),
        ("oss://my-bucket", "oss://my-bucket"),
    ],
)
def test_oss_output_takes_bucket_and_prefix(given: str, sent: str) -> None:
    """`--oss-output` with or without `oss://` is sent as `oss://BUCKET/PREFIX`."""
    assert oss_output_delivery(given) == sent


def test_for_command_changes_only_the_command_id() -> None:
    """A region's own CommandId replaces the label; every option stays."""
    other = OK.for_command("c-2")
    assert other.command_id == "c-2"
    assert all(getattr(other, name) == getattr(OK, name) for name in SPEC_OPTIONS)
    assert OK.for_command("c-1") is OK

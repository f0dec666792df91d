"""What one InvokeCommand sends besides the instances and the ClientToken: the command and its options.

`CommandSpec` is the one description of InvokeCommand's options in fanout: the CLI, the config
file's `[rollout]` table and the Python API build it, the ledger stores it (secret values apart),
and the client turns it into the wire parameters (`wire.invoke_command_params`). A new
InvokeCommand parameter is added here, in `wire.invoke_command_params` and nowhere else.

`check_options` applies the rules the current API reference states for each option, before any
call (sources: the InvokeCommand reference with changes up to 2025-12-09 and the SDK request
model `alibabacloud_ecs20140526.models.InvokeCommandRequest`, facts 1.1 and 10 [1][5]):

| option | wire name | rule |
|---|---|---|
| timeout_s | Timeout | at least 10 seconds |
| username | Username | at most 255 characters |
| windows_password_name | WindowsPasswordName | at most 255 characters |
| working_dir | WorkingDir | at most 200 characters |
| container_id | ContainerId | 64 hex digits, optional `docker://`, `containerd://`, `cri-o://` |
| container_name | ContainerName | a container name (letters, digits, `_.-`, at most 128) [INF] |
| termination_mode | TerminationMode | `Process` or `ProcessTree` |
| launcher | Launcher | at most 1 KB |
| resource_group_id | ResourceGroupId | a resource group id, `rg-` + lowercase letters and digits [INF] |
| oss_output_delivery | OssOutputDelivery | `oss://BUCKET/PREFIX` (facts 1.1); OSS bucket naming |
| invocation_tags | Tag.N.Key / Value | 1..20 tags; key 1..64, value <= 128; no `acs:` / `aliyun` key prefix, no `http(s)://` |

`ResourceTag.N` (instances chosen by tag on the server) is not an option: the API refuses it
together with `InstanceId.N`, and fanout always names its instances (`--tag` resolves tags with
DescribeInstances first, so every batch is exactly 50 known instances).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from fanout.errors import ConfigError

__all__ = [
    "MAX_INVOCATION_TAGS",
    "SPEC_OPTIONS",
    "TERMINATION_MODES",
    "CommandSpec",
    "check_options",
    "oss_output_delivery",
]

TERMINATION_MODES = ("Process", "ProcessTree")
MAX_INVOCATION_TAGS = 20  # Tag.N, N = 1..20
_MIN_TIMEOUT_S = 10
_MAX_USERNAME_CHARS = 255
_MAX_WINDOWS_PASSWORD_NAME_CHARS = 255
_MAX_WORKING_DIR_CHARS = 200
_MAX_LAUNCHER_BYTES = 1024
_MAX_TAG_KEY_CHARS = 64
_MAX_TAG_VALUE_CHARS = 128
_CONTAINER_ID = re.compile(r"(?:(?:docker|containerd|cri-o)://)?[0-9a-f]{64}")
# Docker's container name rule; the reference says only "the name of the container" [INF].
_CONTAINER_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.\-]{0,127}")
# Resource group ids look like `rg-acfmzw2jz2z****` in every example of the reference [INF].
_RESOURCE_GROUP_ID = re.compile(r"rg-[0-9a-z]{1,61}")
# OSS bucket names: 3 to 63 lowercase letters, digits and hyphens, starting and ending with a
# letter or a digit (OSS "bucket naming conventions").
_OSS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_OSS_SCHEME = "oss://"
_TAG_KEY_PREFIXES = ("acs:", "aliyun")
_URL_MARKERS = ("http://", "https://")


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """The command of a run and InvokeCommand's options (None: not sent, the API's default).

    `command_id` is what InvokeCommand's `CommandId` carries: a `c-...` id, or the name of a
    public command. A command id belongs to one region: a run over several regions invokes
    each region's own id (stored per batch in the ledger); there `command_id` is the run's
    label (`fanout.sources.CommandSource.label`) and `for_command` gives the spec to send.
    """

    command_id: str
    parameters: Mapping[str, str] | None = None
    timed: bool | None = None
    frequency: str | None = None
    repeat_mode: str | None = None
    timeout_s: int | None = None
    username: str | None = None
    working_dir: str | None = None
    windows_password_name: str | None = None
    container_id: str | None = None
    container_name: str | None = None
    termination_mode: str | None = None
    launcher: str | None = None
    resource_group_id: str | None = None
    oss_output_delivery: str | None = None
    invocation_tags: Mapping[str, str] | None = None

    def options(self) -> dict[str, object]:
        """The options besides the command and its parameters, as stored with a run."""
        return {name: getattr(self, name) for name in SPEC_OPTIONS}

    def for_command(self, command_id: str) -> CommandSpec:
        """This spec with another CommandId (a region's own id of the run's command)."""
        return self if command_id == self.command_id else replace(self, command_id=command_id)


# The option fields of CommandSpec (everything but command_id and parameters), in wire order.
SPEC_OPTIONS = (
    "timed",
    "frequency",
    "repeat_mode",
    "timeout_s",
    "username",
    "working_dir",
    "windows_password_name",
    "container_id",
    "container_name",
    "termination_mode",
    "launcher",
    "resource_group_id",
    "oss_output_delivery",
    "invocation_tags",
)


def oss_output_delivery(value: str) -> str:
    """`--oss-output` as OssOutputDelivery: `oss://BUCKET[/PREFIX]` (`BUCKET/PREFIX` gets the
    scheme added); ConfigError naming the rule when it is not one."""
    text = value.strip()
    path = text.removeprefix(_OSS_SCHEME)
    bucket, _, prefix = path.partition("/")
    if not _OSS_BUCKET.fullmatch(bucket):
        raise ConfigError(
            f"--oss-output {value!r}: expected oss://BUCKET/PREFIX with a bucket name of 3 to 63 "
            "lowercase letters, digits and hyphens (OssOutputDelivery)"
        )
    if "//" in prefix or any(ord(c) < 32 for c in prefix):
        raise ConfigError(f"--oss-output {value!r}: the prefix has an empty or control segment")
    return f"{_OSS_SCHEME}{path}"


def check_options(spec: CommandSpec) -> None:
    """Every rule the reference states for an option of `spec` (table above); ConfigError."""
    _check_lengths(spec)
    if spec.timeout_s is not None and spec.timeout_s < _MIN_TIMEOUT_S:
        raise ConfigError(
            f"--timeout {spec.timeout_s}: at least {_MIN_TIMEOUT_S} seconds (Timeout)"
        )
    if spec.container_id is not None and not _CONTAINER_ID.fullmatch(spec.container_id):
        raise ConfigError(
            f"--container-id {spec.container_id[:80]!r}: expected 64 hexadecimal digits, "
            "optionally after docker://, containerd:// or cri-o:// (InvalidContainerId.Malformed)"
        )
    if spec.container_name is not None and not _CONTAINER_NAME.fullmatch(spec.container_name):
        raise ConfigError(
            f"--container-name {spec.container_name[:80]!r}: letters, digits, '_', '.' and '-', "
            "starting with a letter or digit, at most 128 (InvalidContainerName.Malformed)"
        )
    if spec.termination_mode is not None and spec.termination_mode not in TERMINATION_MODES:
        raise ConfigError(
            f"--termination-mode {spec.termination_mode[:40]!r}: one of "
            f"{', '.join(TERMINATION_MODES)} (InvalidTerminationMode.NotFound)"
        )
    if spec.resource_group_id is not None and not _RESOURCE_GROUP_ID.fullmatch(
        spec.resource_group_id
    ):
        raise ConfigError(
            f"--resource-group-id {spec.resource_group_id[:80]!r}: expected a resource group id "
            "(rg- and lowercase letters and digits) (InvalidResourceGroup.NotFound)"
        )
    if spec.oss_output_delivery is not None:
        oss_output_delivery(spec.oss_output_delivery)
    _check_tags(spec.invocation_tags or {})


def _check_lengths(spec: CommandSpec) -> None:
    """The options whose only rule is a length."""
    limits = (
        ("--username", spec.username, _MAX_USERNAME_CHARS, "Username.ExceedLimit"),
        (
            "--windows-password-name",
            spec.windows_password_name,
            _MAX_WINDOWS_PASSWORD_NAME_CHARS,
            "WindowsPasswordName.ExceedLimit",
        ),
        ("--working-dir", spec.working_dir, _MAX_WORKING_DIR_CHARS, "InvalidParameter.WorkingDir"),
    )
    for flag, value, most, code in limits:
        if value is not None and len(value) > most:
            raise ConfigError(f"{flag}: {len(value)} characters, at most {most} ({code})")
    if spec.launcher is not None and len(spec.launcher.encode("utf-8")) > _MAX_LAUNCHER_BYTES:
        raise ConfigError(
            f"--launcher: {len(spec.launcher.encode('utf-8'))} bytes, at most "
            f"{_MAX_LAUNCHER_BYTES} (InvalidLauncher.LengthLimitExceeded)"
        )


def _check_tags(tags: Mapping[str, str]) -> None:
    """Tag.N of the invocation: 1..20, key 1..64, value <= 128, reserved prefixes, no URLs."""
    if len(tags) > MAX_INVOCATION_TAGS:
        raise ConfigError(
            f"--invocation-tag: {len(tags)} tags, at most {MAX_INVOCATION_TAGS} (Tag.N)"
        )
    for key, value in tags.items():
        where = f"--invocation-tag {key[:40]!r}"
        if not key or len(key) > _MAX_TAG_KEY_CHARS:
            raise ConfigError(
                f"{where}: a key has 1 to {_MAX_TAG_KEY_CHARS} characters (Tag.N.Key)"
            )
        if key.lower().startswith(_TAG_KEY_PREFIXES):
            raise ConfigError(f"{where}: a key may not start with acs: or aliyun (Tag.N.Key)")
        if len(value) > _MAX_TAG_VALUE_CHARS:
            raise ConfigError(f"{where}: a value has at most {_MAX_TAG_VALUE_CHARS} characters")
        if any(m in key or m in value for m in _URL_MARKERS):
            raise ConfigError(f"{where}: keys and values may not contain http:// or https://")

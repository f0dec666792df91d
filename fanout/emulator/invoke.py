"""InvokeCommand: every rule of the reference (S1-S11, P1-P6) and its error codes, in the order
the real service applies them: ClientToken, idempotency, quota, validation, instances.

Every evaluated call costs one unit of the daily quota, even when validation then fails;
a repeated ClientToken with identical parameters returns the original InvokeId for free.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from fanout.emulator.commands import Command
from fanout.emulator.executions import InvocationSpec
from fanout.emulator.params import Params
from fanout.emulator.schedule import Schedule, parse_frequency
from fanout.emulator.state import Call, IdempotencyEntry, World
from fanout.emulator.wire import ApiFault, Body, invalid_parameter, missing_parameter

__all__ = ["invoke_command"]

_MAX_TOKEN_CHARS = 64  # ClientToken: ASCII, at most 64 characters
_MAX_PARAMETERS = 10  # spec P1
_MAX_PARAMETER_KEY_CHARS = 64  # spec P2
_MAX_USERNAME_CHARS = 255
_MAX_WORKING_DIR_CHARS = 200
_MAX_WINDOWS_PASSWORD_NAME_CHARS = 255
_MAX_LAUNCHER_BYTES = 1024
_TIMEOUT_RANGE_S = (10, 86400)
_REPEAT_MODES = ("Once", "Period", "NextRebootOnly", "EveryReboot", "DryRun")
_TERMINATION_MODES = ("Process", "ProcessTree")
_CONTAINER_ID = re.compile(r"^(?:(?:docker|containerd|cri-o)://)?[0-9a-f]{64}$")
_CONTAINER_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.\-]{0,127}$")
# ResourceGroupId: the instances must belong to it (SDK model InvokeCommandRequest); the
# emulated fleet belongs to no group, so only a malformed id is refused (rg-... in every
# example of the reference), with the reference's InvalidResourceGroup.NotFound.
_RESOURCE_GROUP_ID = re.compile(r"^rg-[0-9a-z]{1,61}$")
# OssOutputDelivery: `oss://${Bucket}/${Prefix}` (facts 1.1) with an OSS bucket name (3 to 63
# lowercase letters, digits, hyphens). No error code is documented for a bad value: this one
# follows the reference's InvalidParameter.<Name> pattern (as InvalidParameter.WorkingDir) [INF].
_OSS_OUTPUT = re.compile(r"^oss://[a-z0-9][a-z0-9-]{1,61}[a-z0-9](/.*)?$")
# What an invocation records as its options: every InvokeCommand parameter of the current
# reference (SDK model InvokeCommandRequest) but the instances, the token and Parameters.
_RECORDED_OPTIONS = (
    "ContainerId", "ContainerName", "Frequency", "Launcher", "OssOutputDelivery", "RepeatMode",
    "ResourceGroupId", "TerminationMode", "Timed", "Timeout", "Username", "WindowsPasswordName",
    "WorkingDir",
)  # fmt: skip
# Request parameters that are not part of what an idempotent repeat must match.
_NOT_FINGERPRINTED = frozenset(
    {
        "AccessKeyId", "Action", "ClientToken", "Format", "Parameters", "RegionId",
        "SecurityToken", "Signature", "SignatureMethod", "SignatureNonce", "SignatureType",
        "SignatureVersion", "Timed", "Timestamp", "Version",
    }
)  # fmt: skip


def _fault(status: int, code: str, message: str) -> ApiFault:
    return ApiFault(status, code, message)


async def invoke_command(call: Call) -> Body:
    """Handle one InvokeCommand call."""
    world, region, params = call.world, call.region, call.params
    token = params.get("ClientToken")
    if token and (not token.isascii() or len(token) > _MAX_TOKEN_CHARS):
        raise _fault(400, "InvalidClientToken.Malformed", "The specified ClientToken is not valid: ASCII only, at most 64 characters.")  # fmt: skip
    key = (region, token)
    if token and (entry := world.tokens.get(key)) is not None:
        return _repeat(entry, params)
    if not world.consume_quota(region):  # spec S1
        raise _fault(403, "Invocation.ExceedQuota", "The invocation quota in the current region has been reached for today.")  # fmt: skip
    if token:
        world.tokens[key] = IdempotencyEntry(params.raw)
    try:
        spec = _validate(call)
        if call.processing_s:  # in flight: a repeat now is IdempotentProcessing
            await world.clock.sleep(call.processing_s)
        invoke_id = world.invocations.new_invoke_id()
        if spec.repeat_mode == "DryRun":
            world.regions[region].dry_runs += 1
            world.tokens.pop(key, None)
        else:
            world.invocations.create(invoke_id, region, spec, world.clock.now())
            if token:
                world.tokens[key].invoke_id = invoke_id
    except BaseException:
        if token and (entry := world.tokens.get(key)) is not None and entry.invoke_id is None:
            del world.tokens[key]
        raise
    return {"InvokeId": invoke_id}


def _repeat(entry: IdempotencyEntry, params: Params) -> Body:
    """A ClientToken seen before: the original InvokeId, or why not."""
    if _fingerprint(Params(entry.params)) != _fingerprint(params):
        raise _fault(403, "IdempotentParameterMismatch", "The request uses the same client token as a previous, but non-identical request.")  # fmt: skip
    if entry.invoke_id is None:
        raise _fault(403, "IdempotentProcessing", "The previous idempotent request(s) is still processing, please try again later.")  # fmt: skip
    return {"InvokeId": entry.invoke_id}


def _fingerprint(params: Params) -> tuple[Any, ...]:
    """What must be identical for a repeated ClientToken: Parameters compared as parsed JSON."""
    raw = params.raw
    parts: list[Any] = [
        (name, value)
        for name, value in sorted(raw.items())
        if name not in _NOT_FINGERPRINTED and not name.startswith("InstanceId.")
    ]
    parts.append(("InstanceId", tuple(params.repeated("InstanceId"))))
    timed = raw.get("Timed", "false").lower() or "false"
    parts.append(("Timed", timed))
    text = raw.get("Parameters", "")
    try:
        parsed = json.loads(text) if text else None
        parts.append(("Parameters", json.dumps(parsed, sort_keys=True)))
    except json.JSONDecodeError:
        parts.append(("Parameters", text))
    return tuple(parts)


def _validate(call: Call) -> InvocationSpec:
    """Every request rule, in order; the instances last (spec S9: the call fails as a whole)."""
    params, world = call.params, call.world
    instance_ids = _instance_ids(params, world.config.max_instances_per_call)
    command = _command(params, world, call.region)
    repeat_mode, frequency, schedule = _repeat_mode(params, call.now_s)
    parameters = _parameters(params, command, world.config.content_limit_bytes)
    options = _options(params, command)
    _check_instances(world, call.region, instance_ids)
    return InvocationSpec(
        command=command,
        instance_ids=tuple(instance_ids),
        client_token=params.get("ClientToken"),
        parameters=parameters,
        repeat_mode=repeat_mode,
        frequency=frequency,
        schedule=schedule,
        timed=repeat_mode == "Period",
        timeout_s=options.timeout_s,
        username=options.username,
        working_dir=options.working_dir,
        termination_mode=options.termination_mode,
        options=_recorded_options(params),
    )


def _recorded_options(params: Params) -> dict[str, str]:
    """The options the call carried, as sent; invocation tags as `Tag.N.Key` / `Tag.N.Value`."""
    recorded = {name: params.get(name) for name in _RECORDED_OPTIONS if name in params.raw}
    for number, (key, value) in enumerate(params.tags(), start=1):
        recorded[f"Tag.{number}.Key"] = key
        recorded[f"Tag.{number}.Value"] = value
    return recorded


def _instance_ids(params: Params, limit: int) -> list[str]:
    ids = params.repeated("InstanceId")
    if not ids:
        raise _fault(400, "MissingParam.InstanceId", "The parameter InstanceId is required.")
    if len(ids) > limit:
        raise _fault(403, "InstanceIds.ExceedLimit", f"The maximum number of instances is exceeded: at most {limit} instances per call.")  # fmt: skip
    return ids


def _command(params: Params, world: World, region: str) -> Command:
    command_id = params.get("CommandId")
    if not command_id:
        raise missing_parameter("CommandId")
    command = world.commands.get(region, command_id)
    if command is None:
        raise _fault(404, "InvalidCmdId.NotFound", f"The specified command ID does not exist: {command_id}.")  # fmt: skip
    return command


def _repeat_mode(params: Params, now_s: float) -> tuple[str, str, Schedule | None]:
    """(RepeatMode, Frequency, schedule): spec S6, S7 and the Frequency rules."""
    try:
        timed = params.boolean("Timed")
    except ApiFault:
        raise invalid_parameter("Timed", "It must be true or false.") from None
    frequency = params.get("Frequency")
    mode = params.get("RepeatMode") or ("Period" if frequency or timed else "Once")
    if mode not in _REPEAT_MODES:
        raise _fault(404, "InvalidRepeatMode.NotFound", f"The specified RepeatMode does not exist: {mode}.")  # fmt: skip
    if (timed or mode == "Period") and not frequency:  # spec S7
        raise _fault(403, "MissingParam.Frequency", "The frequency must be specified when you create a timed task.")  # fmt: skip
    schedule: Schedule | None = None
    if frequency:  # checked whatever the mode; only Period runs on it
        try:
            schedule = parse_frequency(frequency, now_s)
        except ValueError as exc:
            raise _fault(400, "InvalidParam.Frequency", f"The specified frequency is not valid: {exc}.") from None  # fmt: skip
    return mode, frequency, schedule if mode == "Period" else None


def _parameters(params: Params, command: Command, limit_bytes: int) -> dict[str, str] | None:
    """Spec P1-P6 and S11."""
    text = params.get("Parameters")
    pairs = _parse_parameters(text) if text else []
    if pairs and not command.enable_parameter:
        raise _fault(404, "Parameter.Disabled", "Parameters cannot be passed in when the command customization function is disabled.")  # fmt: skip
    if not text and command.enable_parameter and command.parameter_names:  # spec S11
        raise _fault(400, "Parameter.MissingValue", "The command has custom parameters enabled: Parameters must be passed.")  # fmt: skip
    if len(pairs) > _MAX_PARAMETERS:  # spec P1
        raise _fault(403, "ParameterCount.ExceedLimit", "The maximum number of parameters is exceeded.")  # fmt: skip
    values: dict[str, str] = {}
    for key, value in pairs:
        _check_key(key, values, command)
        values[key] = value
    encoded_len = len(command.content_b64) + _b64_len(len(text.encode()))
    if encoded_len > limit_bytes:  # spec P4
        raise _fault(403, "CmdContent.ExceedLimit", f"The maximum length of a command is exceeded: {encoded_len} bytes after Base64 encoding, at most {limit_bytes}.")  # fmt: skip
    if not pairs:
        return None  # spec P6
    return {name: values.get(name, "") for name in command.parameter_names} | values  # spec P5


def _parse_parameters(text: str) -> list[tuple[str, str]]:
    try:
        parsed = json.loads(text, object_pairs_hook=_Pairs)
    except (json.JSONDecodeError, RecursionError):
        raise _fault(400, "InvalidParameter.Parameters", "The specified Parameters is not a valid JSON object.") from None  # fmt: skip
    if not isinstance(parsed, _Pairs):
        raise _fault(400, "InvalidParameter.Parameters", "The specified Parameters is not a valid JSON object.")  # fmt: skip
    pairs: list[tuple[str, str]] = []
    for key, value in parsed.items:
        if isinstance(value, _Pairs | list) or value is None:
            raise _fault(403, "ParameterType.NotSupported", f"The value of parameter {key!r} must be a string.")  # fmt: skip
        pairs.append((key, value if isinstance(value, str) else json.dumps(value)))
    return pairs


@dataclass(slots=True)
class _Pairs:
    """A JSON object as its key/value pairs in order, duplicates kept (to detect them)."""

    items: list[tuple[str, Any]]


def _check_key(key: str, seen: dict[str, str], command: Command) -> None:
    if not key:  # spec P2
        raise _fault(400, "InvalidParameter.Parameters", "A parameter name cannot be an empty string.")  # fmt: skip
    if len(key) > _MAX_PARAMETER_KEY_CHARS:  # spec P2
        raise _fault(403, "ParameterKey.ExceedLimit", "The maximum length of a parameter name is exceeded.")  # fmt: skip
    if key in seen:
        raise _fault(403, "ParameterKey.Duplicate", "Parameter names cannot be duplicated.")
    if key not in command.parameter_names:  # spec P5
        raise _fault(403, "Parameter.NotMatched", "The passed-in parameters do not match the parameters defined when you created the command.")  # fmt: skip


def _b64_len(raw_len: int) -> int:
    return 4 * math.ceil(raw_len / 3)


@dataclass(frozen=True, slots=True)
class _Options:
    timeout_s: int
    username: str
    working_dir: str
    termination_mode: str


def _options(params: Params, command: Command) -> _Options:
    low, high = _TIMEOUT_RANGE_S
    timeout_s = params.integer("Timeout", command.timeout_s, low, high)
    username = params.get("Username")
    if len(username) > _MAX_USERNAME_CHARS:
        raise _fault(403, "Username.ExceedLimit", "The maximum length of Username is exceeded.")
    working_dir = params.get("WorkingDir", command.working_dir)
    if len(working_dir) > _MAX_WORKING_DIR_CHARS:
        raise _fault(400, "InvalidParameter.WorkingDir", "The specified WorkingDir is too long.")
    if len(params.get("WindowsPasswordName")) > _MAX_WINDOWS_PASSWORD_NAME_CHARS:
        raise _fault(403, "WindowsPasswordName.ExceedLimit", "The maximum length of WindowsPasswordName is exceeded.")  # fmt: skip
    if len(params.get("Launcher").encode()) > _MAX_LAUNCHER_BYTES:
        raise _fault(403, "InvalidLauncher.LengthLimitExceeded", "The maximum length of Launcher is exceeded.")  # fmt: skip
    _check_container(params)
    resource_group = params.get("ResourceGroupId")
    if resource_group and not _RESOURCE_GROUP_ID.match(resource_group):
        raise _fault(404, "InvalidResourceGroup.NotFound", "The specified ResourceGroupId does not exist.")  # fmt: skip
    oss_output = params.get("OssOutputDelivery")
    if oss_output and not _OSS_OUTPUT.match(oss_output):
        raise _fault(400, "InvalidParameter.OssOutputDelivery", "The specified OssOutputDelivery is not valid: expected oss://bucket/prefix.")  # fmt: skip
    termination_mode = params.get("TerminationMode")
    if termination_mode and termination_mode not in _TERMINATION_MODES:
        raise _fault(404, "InvalidTerminationMode.NotFound", f"The specified TerminationMode does not exist: {termination_mode}.")  # fmt: skip
    return _Options(timeout_s, username, working_dir, termination_mode)


def _check_container(params: Params) -> None:
    container_id = params.get("ContainerId")
    if container_id and not _CONTAINER_ID.match(container_id):
        raise _fault(400, "InvalidContainerId.Malformed", "The specified ContainerId is not valid.")
    container_name = params.get("ContainerName")
    if container_name and not _CONTAINER_NAME.match(container_name):
        raise _fault(400, "InvalidContainerName.Malformed", "The specified ContainerName is not valid.")  # fmt: skip


def _check_instances(world: World, region: str, instance_ids: list[str]) -> None:
    """Spec S2, S3, S4 and S9: one unusable instance fails the whole call."""
    by_id = world.fleet.regions[region].by_id
    missing = [iid for iid in instance_ids if iid not in by_id]
    if missing:
        raise _fault(404, "InvalidInstance.NotFound", f"The specified instance does not exist: {', '.join(missing)}.")  # fmt: skip
    reasons = []
    for iid in instance_ids:
        reason = by_id[iid].unusable_reason()
        if reason is not None:
            reasons.append(f"{iid}: {reason}")
    if reasons:
        raise _fault(400, "InvalidInstance.NotMatch", "The specified instances do not meet the conditions to run the command (Running, VPC, Cloud Assistant online): " + "; ".join(reasons) + ".")  # fmt: skip

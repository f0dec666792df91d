"""Every error the emulator can produce, seen through EcsClient over real HTTP on 127.0.0.1.

Each refused call must reach the caller as the right `ApiError` / `TransportError` (Code, HTTP
status, RequestId, CallKind), and the emulator's state must show that it created nothing.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
import pytest
import yarl

from fanout.aliyun import wire
from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.aliyun.responses import InvokeResult
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    DEMO_PARAM_COMMAND_ID,
    Emulator,
    EmulatorConfig,
    running_emulator,
)
from fanout.errors import ApiError, CallKind, TransportError

Signature = Literal["v3", "rpc"]
SIGNATURES: tuple[Signature, ...] = ("v3", "rpc")
DEMO = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, source="demo")
REGION = "cn-hangzhou"
# 64 instances: 3 stopped, 3 classic, 3 agent-offline (maybe overlapping) leave >= 55 usable,
# enough for a 51-instance batch made only of usable instances.
CONFIG = EmulatorConfig(
    regions=(REGION,),
    instances_per_region=64,
    stopped_fraction=0.05,
    classic_fraction=0.05,
    agent_offline_fraction=0.05,
    seed=11,
    sts_tokens=frozenset({"good"}),
)
EMULATOR_BATCH_LIMIT = CONFIG.max_instances_per_call  # 50, the emulator's default
# The emulator's RequestIds are uppercase UUIDs, as the real API's are.
REQUEST_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
UNKNOWN_INSTANCE = "i-doesnotexist0000000"
UNKNOWN_COMMAND = "c-doesnotexist00000"
# Bounds the seeded accept-then-drop loops: at rate 0.5, 40 straight drops has odds of 2**-40.
MAX_ATTEMPTS = 40


@dataclass(frozen=True, slots=True)
class Fleet:
    """The emulator's instances as the client's preflight calls see them."""

    usable: list[str]
    stopped: str
    classic: str
    offline: str


def _options(emulator: Emulator, signature: Signature = "v3") -> ClientOptions:
    return ClientOptions(endpoint=emulator.url, signature=signature, retry_base_delay_s=0.01)


async def _preflight(client: EcsClient) -> Fleet:
    """Sort the instances into usable / stopped / classic / agent-offline, via DescribeInstances
    and DescribeCloudAssistantStatus (one unusable reason each for the three named ones)."""
    instances = await client.describe_instances(REGION)
    statuses = await client.describe_cloud_assistant_status(
        REGION, [i.instance_id for i in instances]
    )
    online = {s.instance_id for s in statuses if s.online}
    running = [i for i in instances if i.status == "Running"]
    return Fleet(
        usable=[
            i.instance_id for i in running if i.network_type == "vpc" and i.instance_id in online
        ],
        stopped=next(i.instance_id for i in instances if i.status == "Stopped"),
        classic=next(i.instance_id for i in running if i.network_type == "classic"),
        offline=next(
            i.instance_id
            for i in running
            if i.network_type == "vpc" and i.instance_id not in online
        ),
    )


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A one-region emulator with a few stopped, classic and agent-offline instances."""
    async with running_emulator(CONFIG) as running:
        yield running


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[EcsClient]:
    """Our client, V3-signed with the demo key, pointed at the emulator."""
    async with EcsClient(DEMO, _options(emulator)) as ecs:
        yield ecs


@pytest.fixture
async def fleet(client: EcsClient) -> Fleet:
    """The emulator's instances, sorted by the client's own preflight calls."""
    return await _preflight(client)


def _assert_api_error(err: ApiError, code: str, http_status: int, kind: CallKind) -> None:
    """The error carries the code, status and kind expected, and the server's RequestId."""
    assert (err.code, err.http_status, err.kind) == (code, http_status, kind)
    assert REQUEST_ID.fullmatch(err.request_id or ""), err.request_id
    assert err.action == "InvokeCommand"


def _region_state(emulator: Emulator) -> dict[str, Any]:
    region: dict[str, Any] = emulator.snapshot()["regions"][REGION]
    return region


def _tokens(emulator: Emulator) -> list[str]:
    """The ClientToken of every invocation the emulator created, in creation order."""
    return [inv["client_token"] for inv in emulator.snapshot()["invocations"]]


# ----------------------------------------------------------------- refused InvokeCommand calls


@dataclass(frozen=True, slots=True)
class Refusal:
    """One InvokeCommand the emulator must refuse, and the error it must become."""

    code: str
    http_status: int
    kind: CallKind
    batch: str  # usable | stopped | classic | offline | unknown | over_limit
    command_id: str
    options: Mapping[str, Any]


def _batch(fleet: Fleet, name: str) -> list[str]:
    """Three usable instances plus (for the S9 cases) one bad one, or a batch over the limit."""
    if name == "over_limit":
        return fleet.usable[: EMULATOR_BATCH_LIMIT + 1]
    bad = {
        "stopped": fleet.stopped,
        "classic": fleet.classic,
        "offline": fleet.offline,
        "unknown": UNKNOWN_INSTANCE,
    }
    return fleet.usable[:3] + ([bad[name]] if name in bad else [])


def _refusal(
    code: str,
    http_status: int,
    kind: CallKind,
    batch: str = "usable",
    command_id: str = DEMO_COMMAND_ID,
    **options: Any,
) -> Refusal:
    return Refusal(code, http_status, kind, batch, command_id, options)


PER_INSTANCE, BAD, FATAL = CallKind.PER_INSTANCE, CallKind.BAD_REQUEST, CallKind.FATAL
PARAM_CMD = DEMO_PARAM_COMMAND_ID  # defines `name` and `version`
REFUSALS = {
    "S3-stopped": _refusal("InvalidInstance.NotMatch", 400, PER_INSTANCE, "stopped"),
    "S2-classic": _refusal("InvalidInstance.NotMatch", 400, PER_INSTANCE, "classic"),
    "S4-agent-offline": _refusal("InvalidInstance.NotMatch", 400, PER_INSTANCE, "offline"),
    "not-found": _refusal("InvalidInstance.NotFound", 404, PER_INSTANCE, "unknown"),
    "51-instances": _refusal(
        "InstanceIds.ExceedLimit", 403, CallKind.TOO_MANY_INSTANCES, "over_limit"
    ),
    "timed-no-frequency": _refusal("MissingParam.Frequency", 403, BAD, timed=True),
    "frequency-5s": _refusal(
        "InvalidParam.Frequency", 400, BAD, timed=True, frequency="*/5 * * * * *"
    ),
    "11-parameters": _refusal(
        "ParameterCount.ExceedLimit", 403, BAD, command_id=PARAM_CMD,
        parameters={f"p{n}": "v" for n in range(11)},
    ),
    "65-char-key": _refusal(
        "ParameterKey.ExceedLimit", 403, BAD, command_id=PARAM_CMD, parameters={"k" * 65: "v"}
    ),
    "undefined-key": _refusal(
        "Parameter.NotMatched", 403, BAD, command_id=PARAM_CMD,
        parameters={"name": "web", "colour": "blue"},
    ),
    "parameters-disabled": _refusal("Parameter.Disabled", 404, BAD, parameters={"name": "web"}),
    "S11-parameters-omitted": _refusal("Parameter.MissingValue", 400, BAD, command_id=PARAM_CMD),
    "unknown-command": _refusal("InvalidCmdId.NotFound", 404, FATAL, command_id=UNKNOWN_COMMAND),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
async def test_refused_invoke_is_typed_and_creates_nothing(
    emulator: Emulator, client: EcsClient, fleet: Fleet, case: Refusal
) -> None:
    """A refused InvokeCommand raises ApiError with its code, status, RequestId and kind, and creates no invocation."""
    batch = _batch(fleet, case.batch)
    with pytest.raises(ApiError) as info:
        await client.invoke_command(
            REGION, CommandSpec(case.command_id, **case.options), batch, client_token="refused"
        )
    _assert_api_error(info.value, case.code, case.http_status, case.kind)
    if case.batch in ("stopped", "classic", "offline", "unknown"):
        assert batch[-1] in info.value.api_message  # the message names the unusable instance
    assert emulator.snapshot()["invocations"] == []
    region = _region_state(emulator)
    assert region["calls"]["InvokeCommand"] == 1
    assert region["quota_used"] == 1  # the emulator charges every evaluated call (invoke.py)
    # Nothing was remembered for the token: the same token with a valid request now succeeds.
    await client.invoke_command(
        REGION, CommandSpec(DEMO_COMMAND_ID), fleet.usable[:3], client_token="refused"
    )
    assert _tokens(emulator) == ["refused"]


async def test_content_and_parameters_over_the_size_limit() -> None:
    """Command content plus Parameters over content_limit_bytes (after Base64) is CmdContent.ExceedLimit; under it passes."""
    config = replace(CONFIG, content_limit_bytes=256)
    async with running_emulator(config) as emulator, EcsClient(DEMO, _options(emulator)) as ecs:
        usable = (await _preflight(ecs)).usable[:2]
        with pytest.raises(ApiError) as info:
            await ecs.invoke_command(
                REGION,
                CommandSpec(DEMO_PARAM_COMMAND_ID, parameters={"name": "x" * 200, "version": "1"}),
                usable,
                client_token="big",
            )
        _assert_api_error(info.value, "CmdContent.ExceedLimit", 403, CallKind.BAD_REQUEST)
        assert emulator.snapshot()["invocations"] == []
        small = {"name": "web", "version": "1"}
        await ecs.invoke_command(
            REGION,
            CommandSpec(DEMO_PARAM_COMMAND_ID, parameters=small),
            usable,
            client_token="small",
        )
        assert _tokens(emulator) == ["small"]


# ----------------------------------------------------------------------- quota and throttling


async def test_daily_quota_reached_is_quota_kind() -> None:
    """With daily_quota=2 the third InvokeCommand is Invocation.ExceedQuota (QUOTA); a repeated token stays free."""
    async with (
        running_emulator(replace(CONFIG, daily_quota=2)) as emulator,
        EcsClient(DEMO, _options(emulator)) as ecs,
    ):
        usable = (await _preflight(ecs)).usable[:2]
        first = await ecs.invoke_command(
            REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="q1"
        )
        await ecs.invoke_command(REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="q2")
        with pytest.raises(ApiError) as info:
            await ecs.invoke_command(
                REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="q3"
            )
        _assert_api_error(info.value, "Invocation.ExceedQuota", 403, CallKind.QUOTA)
        again = await ecs.invoke_command(
            REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="q1"
        )
        assert again.invoke_id == first.invoke_id
    assert _tokens(emulator) == ["q1", "q2"]
    assert _region_state(emulator)["quota_used"] == 2


async def test_qps_limit_is_retryable_throttling() -> None:
    """Over qps=1 (one-second windows here), back-to-back InvokeCommands are Throttling, RETRYABLE and is_throttling, and cost nothing."""
    # Every instance usable: one DescribeInstances finds them (a paged preflight would be
    # throttled itself, since the limit is per action and region).
    config = replace(
        CONFIG,
        qps=1,
        throttle_window_s=1,
        stopped_fraction=0,
        classic_fraction=0,
        agent_offline_fraction=0,
    )
    async with running_emulator(config) as emulator, EcsClient(DEMO, _options(emulator)) as ecs:
        usable = [i.instance_id for i in await ecs.describe_instances(REGION)][:2]
        outcomes = await asyncio.gather(
            *(
                ecs.invoke_command(
                    REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token=f"t{n}"
                )
                for n in range(5)
            ),
            return_exceptions=True,
        )
    passed = [o for o in outcomes if isinstance(o, InvokeResult)]
    throttled = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(passed) + len(throttled) == 5
    assert 1 <= len(passed) <= 2  # one per one-second window; the burst may straddle two
    for err in throttled:
        _assert_api_error(err, "Throttling", 400, CallKind.RETRYABLE)
        assert err.is_throttling
    region = _region_state(emulator)
    assert len(emulator.snapshot()["invocations"]) == len(passed)
    assert region["quota_used"] == len(passed)
    assert region["calls"]["InvokeCommand"] == 5


# ---------------------------------------------------------------------------- authentication


def _stale_clock() -> datetime:
    """A clock one hour behind, far outside the emulator's 15-minute window."""
    return datetime.now(UTC) - timedelta(hours=1)


AUTH_FAILURES = {
    "wrong-secret": (
        Credentials(DEMO_ACCESS_KEY_ID, "wrong-secret", source="test"),
        False,
        ("SignatureDoesNotMatch", 400),
    ),
    "unknown-key-id": (
        Credentials("LTAI5tNoSuchKeyId000000", DEMO_ACCESS_KEY_SECRET, source="test"),
        False,
        ("InvalidAccessKeyId.NotFound", 404),
    ),
    "stale-timestamp": (DEMO, True, ("InvalidTimeStamp.Expired", 400)),
    "bad-sts-token": (
        Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, "bad", source="test"),
        False,
        ("InvalidSecurityToken.Expired", 403),
    ),
}


@pytest.mark.parametrize("signature", SIGNATURES)
@pytest.mark.parametrize(
    ("credentials", "stale", "expected"), AUTH_FAILURES.values(), ids=AUTH_FAILURES.keys()
)
async def test_auth_failures_are_fatal_and_uncounted(
    emulator: Emulator,
    fleet: Fleet,
    signature: Signature,
    credentials: Credentials,
    stale: bool,
    expected: tuple[str, int],
) -> None:
    """A bad secret, key id, timestamp or STS token is a FATAL ApiError, and the call is never counted."""
    clock = _stale_clock if stale else None
    calls_before = dict(_region_state(emulator)["calls"])  # the preflight's Describe calls
    async with EcsClient(credentials, _options(emulator, signature), signing_clock=clock) as ecs:
        with pytest.raises(ApiError) as info:
            await ecs.invoke_command(
                REGION,
                CommandSpec(DEMO_COMMAND_ID, parameters={"pw": "hunter2"}),
                fleet.usable[:2],
                client_token="auth",
            )
    code, http_status = expected
    _assert_api_error(info.value, code, http_status, CallKind.FATAL)
    assert "hunter2" not in str(info.value)
    region = _region_state(emulator)
    assert region["calls"] == calls_before
    assert (region["quota_used"], emulator.snapshot()["invocations"]) == (0, [])


@pytest.mark.parametrize("signature", SIGNATURES)
async def test_known_sts_token_works(
    emulator: Emulator, fleet: Fleet, signature: Signature
) -> None:
    """Credentials carrying an STS token the emulator knows are accepted by both schemes."""
    sts = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, "good", source="test")
    async with EcsClient(sts, _options(emulator, signature)) as ecs:
        result = await ecs.invoke_command(
            REGION, CommandSpec(DEMO_COMMAND_ID), fleet.usable[:2], client_token="sts"
        )
    assert [inv["invoke_id"] for inv in emulator.snapshot()["invocations"]] == [result.invoke_id]


async def _post(session: aiohttp.ClientSession, request: wire.SignedRequest, url: str) -> Any:
    """Send one pre-signed request as is; the decoded answer, or the ApiError it carries."""
    async with session.post(yarl.URL(url, encoded=True), headers=request.headers) as response:
        raw, status = await response.read(), response.status
    try:
        return wire.decode_answer(
            raw, status, None, action="InvokeCommand", region=REGION, host=request.host
        )
    except ApiError as err:
        return err


@pytest.mark.parametrize("signature", SIGNATURES)
async def test_tampered_and_replayed_requests(
    emulator: Emulator, fleet: Fleet, signature: Signature
) -> None:
    """Uses aiohttp directly (a correct client never tampers or replays): a request signed by wire.sign_request with one query value altered is SignatureDoesNotMatch, and the same signed request sent twice is SignatureNonceUsed."""
    params = wire.invoke_command_params(
        REGION, CommandSpec(DEMO_COMMAND_ID), fleet.usable[:2], client_token="signed-once"
    )
    request = wire.sign_request(
        signature,
        emulator.url,
        "InvokeCommand",
        params,
        DEMO,
        nonce=uuid.uuid4().hex,
        moment=datetime.now(UTC),
    )
    tampered_url = request.url.replace("ClientToken=signed-once", "ClientToken=signed-twice")
    assert tampered_url != request.url
    async with aiohttp.ClientSession() as session:
        tampered = await _post(session, request, tampered_url)
        first = await _post(session, request, request.url)
        replayed = await _post(session, request, request.url)
    assert isinstance(tampered, ApiError)
    _assert_api_error(tampered, "SignatureDoesNotMatch", 400, CallKind.FATAL)
    assert isinstance(first, dict)
    assert isinstance(replayed, ApiError)
    _assert_api_error(replayed, "SignatureNonceUsed", 400, CallKind.RETRYABLE)
    assert [inv["invoke_id"] for inv in emulator.snapshot()["invocations"]] == [first["InvokeId"]]
    assert _region_state(emulator)["quota_used"] == 1


# --------------------------------------------------------------------------- accept-then-drop


async def test_accept_then_drop_is_ambiguous_but_applied() -> None:
    """An InvokeCommand applied and then dropped is an AMBIGUOUS TransportError; the state already holds its one invocation, and re-sends add none."""
    config = replace(CONFIG, accept_then_drop_rate=1.0, fault_actions=frozenset({"InvokeCommand"}))
    async with running_emulator(config) as emulator, EcsClient(DEMO, _options(emulator)) as ecs:
        usable = (await _preflight(ecs)).usable[:3]
        for attempt in (1, 2):  # the first send, then a re-send with the same ClientToken
            with pytest.raises(TransportError) as info:
                await ecs.invoke_command(
                    REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token="lost"
                )
            assert (info.value.kind, info.value.sent) == (CallKind.AMBIGUOUS, True)
            assert info.value.code == "Transport.Ambiguous"
            (record,) = emulator.snapshot()["invocations"]
            assert record["client_token"] == "lost"
            assert record["instance_ids"] == usable
            region = _region_state(emulator)
            assert (region["quota_used"], region["calls"]["InvokeCommand"]) == (1, attempt)
        # The read-only calls are never dropped: the client can find what was applied.
        found = await ecs.describe_invocations(REGION, instance_id=usable[0])
    assert [inv.invoke_id for inv in found] == [record["invoke_id"]]


async def _send_until_dropped(ecs: EcsClient, usable: list[str]) -> tuple[str, int, CallKind]:
    """Send new tokens until one answer is lost; (that token, tokens sent, the error's kind)."""
    for n in range(1, MAX_ATTEMPTS + 1):
        token = f"tok-{n}"
        try:
            await ecs.invoke_command(
                REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token=token
            )
        except TransportError as err:
            return token, n, err.kind
    raise AssertionError(f"no answer was dropped in {MAX_ATTEMPTS} calls")


async def _resend_until_answered(
    ecs: EcsClient, usable: list[str], token: str
) -> tuple[InvokeResult, list[CallKind]]:
    """Re-send the same ClientToken until an answer arrives; (it, the kinds of the lost ones)."""
    lost: list[CallKind] = []
    while len(lost) < MAX_ATTEMPTS:
        try:
            result = await ecs.invoke_command(
                REGION, CommandSpec(DEMO_COMMAND_ID), usable, client_token=token
            )
        except TransportError as err:
            lost.append(err.kind)
            continue
        return result, lost
    raise AssertionError(f"every one of {MAX_ATTEMPTS} re-sends was dropped")


async def test_resend_after_drop_returns_the_original_invoke_id() -> None:
    """After a dropped answer, re-sending the same ClientToken returns the InvokeId already in the state, with one invocation and honest quota."""
    # The emulator has no switch to turn a fault off while running, so the drop is seeded at
    # rate 0.5 instead: some answers are lost, and a re-send eventually gets through.
    config = replace(
        CONFIG, accept_then_drop_rate=0.5, fault_actions=frozenset({"InvokeCommand"}), seed=3
    )
    async with running_emulator(config) as emulator, EcsClient(DEMO, _options(emulator)) as ecs:
        usable = (await _preflight(ecs)).usable[:3]
        token, tokens_sent, kind = await _send_until_dropped(ecs, usable)
        (record,) = [i for i in emulator.snapshot()["invocations"] if i["client_token"] == token]
        result, lost = await _resend_until_answered(ecs, usable, token)
    assert kind is CallKind.AMBIGUOUS
    assert set(lost) <= {CallKind.AMBIGUOUS}
    assert result.invoke_id == record["invoke_id"]
    assert REQUEST_ID.fullmatch(result.request_id)
    assert [i for i in _tokens(emulator) if i == token] == [token]
    assert len(_tokens(emulator)) == tokens_sent  # one invocation per distinct token
    region = _region_state(emulator)
    assert region["quota_used"] == tokens_sent  # re-sends of a known token are free
    assert region["calls"]["InvokeCommand"] == tokens_sent + len(lost) + 1

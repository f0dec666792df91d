"""What the client puts on the wire, checked by a real server on 127.0.0.1 that re-verifies it."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.aliyun.wire import compact_json
from fanout.errors import ConfigError, TransportError
from tests.aliyun.server import (
    KEY_ID,
    SECRET,
    STS_KEY_ID,
    STS_SECRET,
    STS_TOKEN,
    Reply,
    Server,
    free_port,
    serve,
)

CREDS = Credentials(KEY_ID, SECRET, source="test")
STS = Credentials(STS_KEY_ID, STS_SECRET, STS_TOKEN, source="test")
REGION = "cn-hangzhou"
# A value with space, `*`, `:`, `~`, `/`, `+`, `&`, `=`, `?` and non-ASCII: all must survive exactly.
TRICKY = "a b*c:d ~é中/+&=?"

MakeClient = Callable[..., EcsClient]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A fresh scripted server."""
    async with serve() as running:
        yield running


@pytest.fixture
async def make_client(server: Server) -> AsyncIterator[MakeClient]:
    """Build clients pointed at the server; all are closed at the end of the test."""
    async with AsyncExitStack() as stack:

        def build(
            credentials: Credentials = CREDS,
            clock: Callable[[], datetime] | None = None,
            **options: Any,
        ) -> EcsClient:
            opts = ClientOptions(endpoint=server.url, retry_base_delay_s=0.01, **options)
            client = EcsClient(credentials, opts, signing_clock=clock)
            stack.push_async_callback(client.close)
            return client

        yield build


@pytest.mark.parametrize("signature", ["v3", "rpc"])
@pytest.mark.parametrize("credentials", [CREDS, STS], ids=["ak", "sts"])
async def test_signature_verified_by_the_server(
    server: Server, make_client: MakeClient, signature: str, credentials: Credentials
) -> None:
    """The server recomputes the signature from the bytes it got and it matches, tricky values too."""
    result = await make_client(credentials, signature=signature).invoke_command(
        REGION,
        CommandSpec(
            "c-1", parameters={"msg": TRICKY}, username="some user", working_dir="/opt/x y"
        ),
        [f"i-{n}" for n in range(1, 12)],
        client_token="tok-1",
    )
    assert (result.invoke_id, result.request_id) == ("t-0001", "req-invoke")
    (seen,) = server.seen
    assert seen.verified, seen.problem
    assert seen.scheme == signature
    assert seen.action == "InvokeCommand"
    assert seen.params["Parameters"] == compact_json({"msg": TRICKY})
    assert seen.params["Username"] == "some user"
    assert seen.params["InstanceId.11"] == "i-11"
    assert seen.params["RegionId"] == REGION
    assert "%20" in seen.raw_query
    assert "%2A" in seen.raw_query
    assert "%E4%B8%AD" in seen.raw_query
    assert "+" not in seen.raw_query
    assert seen.headers.get("content-length", "0") == "0"
    if signature == "v3":
        assert seen.headers["host"] == server.url.removeprefix("http://")
        assert "Action" not in seen.params
        if credentials.is_sts:
            assert seen.headers["x-acs-security-token"] == STS_TOKEN
            assert "x-acs-security-token" in seen.headers["authorization"]
    else:
        assert seen.params["Format"] == "JSON"
        assert seen.params["Action"] == "InvokeCommand"
        assert seen.params.get("SecurityToken") == (STS_TOKEN if credentials.is_sts else None)


async def test_clock_and_nonce_per_call(server: Server, make_client: MakeClient) -> None:
    """Each call is stamped with the injected clock and a new nonce."""
    moment = datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC)
    v3 = make_client(clock=lambda: moment)
    rpc = make_client(signature="rpc", clock=lambda: moment)
    await v3.describe_invocations(REGION, invoke_id="t-1")
    await v3.describe_invocations(REGION, invoke_id="t-1")
    await rpc.describe_invocations(REGION, invoke_id="t-1")
    first, second, third = server.seen
    assert first.headers["x-acs-date"] == second.headers["x-acs-date"] == "2026-11-28T06:00:00Z"
    assert third.params["Timestamp"] == "2026-11-28T06:00:00Z"
    nonces = {
        first.headers["x-acs-signature-nonce"],
        second.headers["x-acs-signature-nonce"],
        third.params["SignatureNonce"],
    }
    assert len(nonces) == 3


def _results_page(ids: list[str], token: str) -> Reply:
    rows = [{"InvokeId": "t-1", "InstanceId": i, "InvocationStatus": "Success"} for i in ids]
    return Reply(
        body={"Invocation": {"NextToken": token, "InvocationResults": {"InvocationResult": rows}}}
    )


async def test_invocation_results_follow_next_token(
    server: Server, make_client: MakeClient
) -> None:
    """DescribeInvocationResults pages with NextToken until the token is empty."""
    server.then(
        _results_page(["i-1", "i-2"], "p2"), _results_page(["i-3"], "p3"), _results_page([], "")
    )
    results = await make_client().describe_invocation_results(REGION, invoke_id="t-1")
    assert [r.instance_id for r in results] == ["i-1", "i-2", "i-3"]
    assert [s.params.get("NextToken") for s in server.seen] == [None, "p2", "p3"]
    assert all(s.params["MaxResults"] == "50" for s in server.seen)
    assert all(s.params["ContentEncoding"] == "PlainText" for s in server.seen)


async def test_paging_stops_on_a_repeated_token(server: Server, make_client: MakeClient) -> None:
    """A server that repeats its NextToken cannot keep the client paging forever."""
    server.then(*[Reply(body={"NextToken": "same"})] * 5)
    assert await make_client().describe_invocations(REGION) == []
    assert len(server.seen) == 2


async def test_stop_invocation_splits_instance_lists(
    server: Server, make_client: MakeClient
) -> None:
    """StopInvocation sends at most 50 instance ids per call; None stops all; [] sends nothing."""
    client = make_client()
    ids = [f"i-{n:03d}" for n in range(120)]
    server.then(
        Reply(body={"RequestId": "r1"}),
        Reply(body={"RequestId": "r2"}),
        Reply(body={"RequestId": "r3"}),
    )
    assert await client.stop_invocation(REGION, "t-1", ids) == "r3"
    sizes = [sum(k.startswith("InstanceId.") for k in s.params) for s in server.seen]
    assert sizes == [50, 50, 20]
    sent = [
        s.params[f"InstanceId.{n}"]
        for s in server.seen
        for n in range(1, 51)
        if f"InstanceId.{n}" in s.params
    ]
    assert sent == ids
    assert await client.stop_invocation(REGION, "t-1") == "req-StopInvocation"
    assert not any(k.startswith("InstanceId") for k in server.seen[-1].params)
    assert await client.stop_invocation(REGION, "t-1", []) == ""
    assert len(server.seen) == 4


async def test_describe_instances_sends_json_arrays_of_at_most_100(
    server: Server, make_client: MakeClient
) -> None:
    """DescribeInstances sends InstanceIds as a JSON array string, 100 ids per call, and tags."""
    ids = [f"i-{n:03d}" for n in range(150)]
    server.then(
        Reply(body={"Instances": {"Instance": [{"InstanceId": "i-000", "Status": "Running"}]}}),
        Reply(body={"Instances": {"Instance": [{"InstanceId": "i-149", "Status": "Stopped"}]}}),
    )
    found = await make_client().describe_instances(
        REGION, instance_ids=ids, tags={"env": "prod"}, status="Running"
    )
    assert [(i.instance_id, i.status, i.region) for i in found] == [
        ("i-000", "Running", REGION),
        ("i-149", "Stopped", REGION),
    ]
    assert [json.loads(s.params["InstanceIds"]) for s in server.seen] == [ids[:100], ids[100:]]
    assert server.seen[0].params["Tag.1.Key"] == "env"
    assert server.seen[0].params["Tag.1.Value"] == "prod"
    assert server.seen[0].params["Status"] == "Running"


async def test_create_command_and_account_attributes(
    server: Server, make_client: MakeClient
) -> None:
    """CreateCommand Base64-encodes the content; DescribeAccountAttributes lists AttributeName.N."""
    client = make_client()
    assert await client.create_command(REGION, name="n", content="echo é") == "c-new"
    server.then(
        Reply(
            body={
                "AccountAttributeItems": {
                    "AccountAttributeItem": [
                        {
                            "AttributeName": "max-axt-invocation-daily",
                            "AttributeValues": {"ValueItem": [{"Value": "5000"}]},
                        }
                    ]
                }
            }
        )
    )
    attrs = await client.describe_account_attributes(REGION, ["max-axt-invocation-daily"])
    assert attrs == {"max-axt-invocation-daily": ["5000"]}
    create, describe = server.seen
    assert base64.b64decode(create.params["CommandContent"]).decode() == "echo é"
    assert create.params["Type"] == "RunShellScript"
    assert create.params["EnableParameter"] == "false"
    assert create.params["Timeout"] == "60"
    assert describe.params["AttributeName.1"] == "max-axt-invocation-daily"


async def test_proxy_variables_are_ignored(
    server: Server, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY never diverts the signed calls: they go straight to the endpoint."""
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, dead)
    await make_client().describe_commands(REGION, command_id="c-1")
    assert len(server.seen) == 1


async def test_headers_identify_fanout(server: Server, make_client: MakeClient) -> None:
    """Requests carry a fanout User-Agent and ask for JSON."""
    await make_client().describe_commands(REGION)
    (seen,) = server.seen
    assert seen.headers["user-agent"].startswith("fanout/")
    assert seen.headers["accept"] == "application/json"


async def test_closed_client_refuses_calls(make_client: MakeClient) -> None:
    """After close() the client sends nothing more."""
    client = make_client()
    await client.close()
    with pytest.raises(RuntimeError, match="closed"):
        await client.describe_commands(REGION)


async def test_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    """A CA bundle that cannot be loaded is refused before anything is sent."""
    options = ClientOptions(endpoint="https://127.0.0.1:1", ca_bundle=tmp_path / "none.pem")
    with pytest.raises(ConfigError, match=r"none\.pem"):
        async with EcsClient(CREDS, options):
            pass
    client = EcsClient(CREDS, options)
    with pytest.raises(ConfigError, match=r"none\.pem: cannot be loaded"):
        await client.describe_commands(REGION)
    await client.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_is_verified_and_ca_bundle_trusts(tmp_path: Path) -> None:
    """https with an unknown CA fails before sending; with ca_bundle the same call succeeds."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with serve(context) as server:
        base = ClientOptions(endpoint=server.url, describe_attempts=1)
        async with EcsClient(CREDS, base) as untrusting:
            with pytest.raises(TransportError) as info:
                await untrusting.describe_commands(REGION)
        assert info.value.sent is False
        assert "Certificate" in str(info.value)
        assert server.seen == []
        async with EcsClient(CREDS, replace(base, ca_bundle=cert)) as trusting:
            assert await trusting.describe_commands(REGION) == []
        (seen,) = server.seen
        assert seen.verified
        assert seen.headers["host"] == server.url.removeprefix("https://")


async def test_empty_id_lists_send_nothing(server: Server, make_client: MakeClient) -> None:
    """Describe calls over an empty list of instance ids answer [] without a request."""
    client = make_client()
    assert await client.describe_instances(REGION, instance_ids=[]) == []
    assert await client.describe_cloud_assistant_status(REGION, []) == []
    assert server.seen == []

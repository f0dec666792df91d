"""Request building and response parsing of fanout.aliyun.wire / responses (pure functions)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from fanout.aliyun import decoders, responses, wire
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.signing import EMPTY_SHA256, canonical_query, parse_v3_authorization
from fanout.errors import ApiError, CallKind, TransportError

MOMENT = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class _Key:
    access_key_id: str = "AKID"
    access_key_secret: str = "s3cr3t-value"
    security_token: str | None = None


def test_flatten_types() -> None:
    """Lists are 1-based, dicts compact JSON, bools lowercase, ints decimal, None dropped."""
    flat = wire.flatten(
        {
            "InstanceId": ["i-1", "i-2"],
            "Tag": [{"Key": "k1", "Value": "v1"}, {"Key": "k2", "Value": None}],
            "Parameters": {"name": "Jack", "中": "文"},
            "Timed": True,
            "IncludeOutput": False,
            "Timeout": 60,
            "Username": None,
            "Empty": [],
        }
    )
    assert flat == {
        "InstanceId.1": "i-1",
        "InstanceId.2": "i-2",
        "Tag.1.Key": "k1",
        "Tag.1.Value": "v1",
        "Tag.2.Key": "k2",
        "Parameters": '{"name":"Jack","中":"文"}',
        "Timed": "true",
        "IncludeOutput": "false",
        "Timeout": "60",
    }


def test_flatten_refuses_unknown_types() -> None:
    """A value with no wire form is refused rather than sent as its repr."""
    with pytest.raises(TypeError, match="Bad"):
        wire.flatten({"Bad": object()})


def test_invoke_command_params_full() -> None:
    """Every InvokeCommand option lands under its wire name; more than nine ids sort as strings."""
    ids = [f"i-{n}" for n in range(1, 12)]
    params = wire.invoke_command_params(
        "cn-shanghai",
        CommandSpec(
            "c-1",
            parameters={"a": "1"},
            timed=False,
            frequency="0 */20 * * * *",
            repeat_mode="Period",
            timeout_s=120,
            username="root",
            working_dir="/tmp",
            windows_password_name="axtPassword",
            container_id="containerd://" + "0" * 64,
            container_name="web-1",
            termination_mode="ProcessTree",
            launcher="python3",
            resource_group_id="rg-acfm",
            oss_output_delivery="oss://logs/fanout",
            invocation_tags={"team": "sre", "ticket": ""},
        ),
        ids,
        client_token="tok-1",
    )
    assert params["ClientToken"] == "tok-1"
    assert params["InstanceId.11"] == "i-11"
    assert params["Timed"] == "false"
    assert params["Frequency"] == "0 */20 * * * *"
    assert params["RepeatMode"] == "Period"
    assert params["Timeout"] == "120"
    assert params["WorkingDir"] == "/tmp"
    assert params["WindowsPasswordName"] == "axtPassword"
    assert params["ContainerId"] == "containerd://" + "0" * 64
    assert params["ContainerName"] == "web-1"
    assert params["TerminationMode"] == "ProcessTree"
    assert params["Launcher"] == "python3"
    assert params["ResourceGroupId"] == "rg-acfm"
    assert params["OssOutputDelivery"] == "oss://logs/fanout"
    assert [params[f"Tag.{n}.{k}"] for n in (1, 2) for k in ("Key", "Value")] == [
        "team",
        "sre",
        "ticket",
        "",
    ]
    keys = canonical_query(params).split("&")
    assert keys.index("InstanceId.10=i-10") < keys.index("InstanceId.2=i-2")


def test_invoke_command_params_omit_unset_and_empty_parameters() -> None:
    """Options left at None and an empty Parameters map are not sent at all."""
    params = wire.invoke_command_params("cn-hangzhou", CommandSpec("c-1", parameters={}), ["i-1"])
    assert params == {"RegionId": "cn-hangzhou", "CommandId": "c-1", "InstanceId.1": "i-1"}


def test_format_timestamp_converts_to_utc() -> None:
    """Timestamps are UTC with a Z, whatever zone the clock gave (naive means UTC)."""
    east8 = timezone(timedelta(hours=8))
    assert wire.format_timestamp(datetime(2024, 1, 1, 20, 0, 0, tzinfo=east8)) == (
        "2024-01-01T12:00:00Z"
    )
    assert wire.format_timestamp(datetime(2024, 1, 1, 12, 0, 0)) == "2024-01-01T12:00:00Z"  # noqa: DTZ001


@pytest.mark.parametrize(
    ("base", "host"),
    [
        ("https://ecs.cn-beijing.aliyuncs.com", "ecs.cn-beijing.aliyuncs.com"),
        ("https://ECS.example.com:443", "ecs.example.com"),
        ("http://127.0.0.1:80/", "127.0.0.1"),
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("https://127.0.0.1:8443", "127.0.0.1:8443"),
        ("http://[::1]:9000", "[::1]:9000"),
    ],
)
def test_host_header(base: str, host: str) -> None:
    """The host value carries the port only when it is not the scheme's default."""
    assert wire.host_header(base) == host


def test_v3_request_headers_and_url() -> None:
    """A V3 request signs host and the x-acs-* headers and sends the canonical query as its URL."""
    request = wire.sign_request(
        "v3",
        "http://127.0.0.1:8080",
        "DescribeInstances",
        {"RegionId": "cn-hangzhou", "InstanceIds": '["i-1"]'},
        _Key(),
        nonce="n1",
        moment=MOMENT,
    )
    assert request.url == (
        "http://127.0.0.1:8080/?InstanceIds=%5B%22i-1%22%5D&RegionId=cn-hangzhou"
    )
    assert request.headers["host"] == "127.0.0.1:8080"
    assert request.headers["x-acs-action"] == "DescribeInstances"
    assert request.headers["x-acs-version"] == "2014-05-26"
    assert request.headers["x-acs-date"] == "2024-01-01T12:00:00Z"
    assert request.headers["x-acs-signature-nonce"] == "n1"
    assert request.headers["x-acs-content-sha256"] == EMPTY_SHA256
    auth = parse_v3_authorization(request.headers["Authorization"])
    assert auth is not None
    assert auth.access_key_id == "AKID"
    assert auth.signed_headers == [
        "host",
        "x-acs-action",
        "x-acs-content-sha256",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-version",
    ]
    assert "x-acs-security-token" not in request.headers


def test_v3_sts_headers_are_signed() -> None:
    """With STS credentials the key id and token headers are sent and signed."""
    request = wire.sign_request(
        "v3", "https://h", "X", {}, _Key(security_token="tok"), nonce="n", moment=MOMENT
    )
    assert request.headers["x-acs-security-token"] == "tok"
    assert request.headers["x-acs-accesskey-id"] == "AKID"
    auth = parse_v3_authorization(request.headers["Authorization"])
    assert auth is not None
    assert {"x-acs-security-token", "x-acs-accesskey-id"} <= set(auth.signed_headers)
    assert request.url == "https://h/"


def test_rpc_request_has_common_params_and_security_token() -> None:
    """A V1 request's query holds Action, Version, Format=JSON, the nonce, SecurityToken, Signature."""
    request = wire.sign_request(
        "rpc",
        "https://h",
        "StopInvocation",
        {"InvokeId": "t-1"},
        _Key(security_token="tok"),
        nonce="n",
        moment=MOMENT,
    )
    query = request.url.split("?", 1)[1]
    for part in (
        "Action=StopInvocation",
        "Version=2014-05-26",
        "Format=JSON",
        "SignatureMethod=HMAC-SHA1",
        "SignatureVersion=1.0",
        "SignatureNonce=n",
        "SecurityToken=tok",
        "Timestamp=2024-01-01T12%3A00%3A00Z",
    ):
        assert part in query.split("&")
    assert "Signature=" in query


def test_signed_request_repr_hides_url_and_headers() -> None:
    """The repr of a signed request shows no query and no header (they carry secrets)."""
    request = wire.sign_request(
        "v3",
        "https://h",
        "InvokeCommand",
        {"Parameters": '{"pw":"hunter2"}'},
        _Key(security_token="sts-secret"),
        nonce="n",
        moment=MOMENT,
    )
    text = repr(request)
    assert "hunter2" not in text
    assert "sts-secret" not in text
    assert "h" in text


def _result(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "InvokeId": "t-1",
        "InstanceId": "i-1",
        "CommandId": "c-1",
        "InvocationStatus": "Success",
        "ExitCode": 0,
        "Output": "hello",
        "Dropped": 0,
        "ErrorCode": "",
        "ErrorInfo": "",
        "StartTime": "2024-01-01T12:00:00Z",
        "FinishedTime": "2024-01-01T12:00:05Z",
        "StopTime": "",
        "Repeats": 1,
    }
    base.update(fields)
    return base


def test_parse_invocation_results() -> None:
    """DescribeInvocationResults rows become InstanceResult values, with the page's NextToken."""
    body = {
        "RequestId": "r",
        "Invocation": {
            "NextToken": "nt",
            "InvocationResults": {
                "InvocationResult": [
                    _result(),
                    _result(InstanceId="i-2", InvocationStatus="Failed", ExitCode=3, Dropped=7),
                ]
            },
        },
    }
    page = responses.parse_invocation_results(body)
    assert page.next_token == "nt"
    first, second = page.items
    assert first == responses.InstanceResult(
        invoke_id="t-1",
        instance_id="i-1",
        command_id="c-1",
        status="Success",
        exit_code=0,
        output="hello",
        dropped=0,
        error_code="",
        error_info="",
        start_time="2024-01-01T12:00:00Z",
        finish_time="2024-01-01T12:00:05Z",
        stop_time=None,
        repeats=1,
    )
    assert (second.instance_id, second.status, second.exit_code, second.dropped) == (
        "i-2",
        "Failed",
        3,
        7,
    )


def test_parse_invocation_results_base64_output() -> None:
    """Base64 output is decoded as UTF-8 when ContentEncoding was Base64."""
    encoded = base64.b64encode("héllo\n".encode()).decode()
    body = {"Invocation": {"InvocationResults": {"InvocationResult": [_result(Output=encoded)]}}}
    (row,) = responses.parse_invocation_results(body, "Base64").items
    assert row.output == "héllo\n"


def test_parse_tolerates_missing_fields() -> None:
    """Missing fields and wrappers read as empty values, never as an exception."""
    assert responses.parse_invocation_results({}).items == ()
    (row,) = responses.parse_invocation_results(
        {"Invocation": {"InvocationResults": {"InvocationResult": [{"InstanceId": "i-9"}]}}}
    ).items
    assert row.instance_id == "i-9"
    assert row.exit_code is None
    assert row.start_time is None
    assert row.output == ""


def test_a_sweep_parses_only_the_instances_it_still_waits_for() -> None:
    """`instance_ids` (invoke id -> ids) keeps, of the invocations it names, only those
    instances, on the typed and the generic path alike; an invocation it does not name keeps
    all of its instances."""
    entry = {"InvocationStatus": "Success", "ExitCode": 0}
    body = {
        "Invocations": {
            "Invocation": [
                {
                    "InvokeId": invoke_id,
                    "InvokeInstances": {
                        "InvokeInstance": [{"InstanceId": iid, **entry} for iid in ("i-1", "i-2")]
                    },
                }
                for invoke_id in ("t-1", "t-2")
            ]
        }
    }
    wanted = {"t-1": {"i-2"}}
    typed = decoders.decode_invocations(json.dumps(body).encode(), instance_ids=wanted)
    generic = responses.parse_invocations(body, instance_ids=wanted)
    for page in (typed, generic):
        assert page is not None
        assert [(inv.invoke_id, [i.instance_id for i in inv.instances]) for inv in page.items] == [
            ("t-1", ["i-2"]),
            ("t-2", ["i-1", "i-2"]),
        ]


def test_parse_invocations() -> None:
    """DescribeInvocations' instances are InstanceResult values too: FinishTime is their
    finish_time, and the invocation's InvokeId and CommandId are theirs."""
    body = {
        "NextToken": "",
        "Invocations": {
            "Invocation": [
                {
                    "InvokeId": "t-1",
                    "CommandId": "c-1",
                    "InvocationStatus": "Running",
                    "CreationTime": "2024-01-01T12:00:00Z",
                    "InvokeInstances": {
                        "InvokeInstance": [
                            {
                                "InstanceId": "i-1",
                                "InvocationStatus": "Success",
                                "ExitCode": 0,
                                "FinishTime": "2024-01-01T12:00:03Z",
                                "Output": "ok",
                            },
                            {"InstanceId": "i-2", "InvocationStatus": "Running"},
                        ]
                    },
                }
            ]
        },
    }
    (inv,) = responses.parse_invocations(body).items
    assert (inv.invoke_id, inv.command_id, inv.status) == ("t-1", "c-1", "Running")
    assert inv.creation_time == "2024-01-01T12:00:00Z"
    assert [i.instance_id for i in inv.instances] == ["i-1", "i-2"]
    assert inv.instances[0] == responses.InstanceResult(
        invoke_id="t-1",
        instance_id="i-1",
        command_id="c-1",
        status="Success",
        exit_code=0,
        output="ok",
        dropped=0,
        error_code="",
        error_info="",
        start_time=None,
        finish_time="2024-01-01T12:00:03Z",
        stop_time=None,
        repeats=0,
    )


def test_parse_instances_with_tags() -> None:
    """DescribeInstances rows become Instance values with their tags as a dict."""
    body = {
        "NextToken": "x",
        "Instances": {
            "Instance": [
                {
                    "InstanceId": "i-1",
                    "RegionId": "cn-beijing",
                    "Status": "Running",
                    "InstanceNetworkType": "vpc",
                    "OSType": "linux",
                    "ZoneId": "cn-beijing-a",
                    "Tags": {"Tag": [{"TagKey": "env", "TagValue": "prod"}]},
                }
            ]
        },
    }
    page = responses.parse_instances(body, "cn-hangzhou")
    assert page.next_token == "x"
    assert page.items == (
        responses.Instance(
            "i-1", "cn-beijing", "Running", "vpc", "linux", "cn-beijing-a", {"env": "prod"}
        ),
    )


@pytest.mark.parametrize(
    ("value", "online"),
    [("true", True), ("True", True), ("false", False), ("", False), (True, True)],
)
def test_parse_agent_status(value: object, online: bool) -> None:
    """CloudAssistantStatus "true" in any case (or a JSON true) means online."""
    body = {
        "InstanceCloudAssistantStatusSet": {
            "InstanceCloudAssistantStatus": [
                {
                    "InstanceId": "i-1",
                    "CloudAssistantStatus": value,
                    "CloudAssistantVersion": "2.2",
                    "OSType": "Linux",
                }
            ]
        }
    }
    (status,) = responses.parse_agent_statuses(body).items
    assert status == responses.AgentStatus("i-1", online, "2.2", "Linux")


def test_parse_commands_decodes_content() -> None:
    """DescribeCommands content is Base64-decoded and parameter names become a tuple."""
    body = {
        "Commands": {
            "Command": [
                {
                    "CommandId": "c-1",
                    "Name": "hello",
                    "Type": "RunShellScript",
                    "CommandContent": base64.b64encode(b"echo {{name}}").decode(),
                    "EnableParameter": True,
                    "ParameterNames": {"ParameterName": ["name"]},
                    "Timeout": 60,
                }
            ]
        }
    }
    (command,) = responses.parse_commands(body).items
    assert command == responses.Command(
        "c-1", "hello", "RunShellScript", "echo {{name}}", True, ("name",), 60
    )


def test_parse_account_attributes() -> None:
    """DescribeAccountAttributes becomes name -> list of values as text."""
    body = {
        "AccountAttributeItems": {
            "AccountAttributeItem": [
                {
                    "AttributeName": "max-axt-invocation-daily",
                    "AttributeValues": {"ValueItem": [{"Value": 5000, "Count": 1}]},
                }
            ]
        }
    }
    assert responses.parse_account_attributes(body) == {"max-axt-invocation-daily": ["5000"]}


def _decode(raw: bytes, status: int, retry_after: str | None = None) -> dict[str, object]:
    return wire.decode_answer(
        raw, status, retry_after, action="InvokeCommand", region="cn-hangzhou", host="h"
    )


def test_decode_answer_success() -> None:
    """A 2xx JSON object is returned as is."""
    assert _decode(b'{"InvokeId":"t-1","RequestId":"r"}', 200) == {
        "InvokeId": "t-1",
        "RequestId": "r",
    }


def test_decode_answer_error_body() -> None:
    """An error body becomes an ApiError with its code, status, request id and retry delay."""
    raw = json.dumps({"Code": "Throttling.User", "Message": "slow down", "RequestId": "r-1"})
    with pytest.raises(ApiError) as info:
        _decode(raw.encode(), 400, "1500")
    err = info.value
    assert (err.code, err.http_status, err.request_id, err.action) == (
        "Throttling.User",
        400,
        "r-1",
        "InvokeCommand",
    )
    assert err.retry_after_s == 1.5
    assert err.kind is CallKind.RETRYABLE


@pytest.mark.parametrize(
    "echo",
    [
        "server string to sign is:POST&%2F&Parameters%3D%257B%2522pw%2522%253A%2522hunter2%2522%257D",
        "server canonical request is:POST\n/\nParameters=%7B%22pw%22%3A%22hunter2%22%7D\n",
        "StringToSign: POST&%2F&SecurityToken%3Dhunter2",
    ],
)
def test_decode_answer_cuts_the_servers_copy_of_the_request(echo: str) -> None:
    """A SignatureDoesNotMatch message never repeats the server's string to sign / canonical request."""
    raw = json.dumps(
        {
            "Code": "SignatureDoesNotMatch",
            "Message": "Specified signature is not matched with our calculation. " + echo,
        }
    )
    with pytest.raises(ApiError) as info:
        _decode(raw.encode(), 400)
    assert "hunter2" not in str(info.value)
    assert "not matched with our calculation (server's copy of the request omitted)" in str(
        info.value
    )
    assert info.value.kind is CallKind.FATAL


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (502, "InternalError.Unparsable", CallKind.RETRYABLE),
        (404, "InvalidResponse.Unparsable", CallKind.BAD_REQUEST),
    ],
)
def test_decode_answer_unparsable_error(status: int, code: str, kind: CallKind) -> None:
    """A non-JSON error body still gives an ApiError, retryable only on 5xx."""
    with pytest.raises(ApiError) as info:
        _decode(b"<html>bad gateway</html>", status)
    assert (info.value.code, info.value.http_status, info.value.kind) == (code, status, kind)
    assert info.value.request_id is None


def test_decode_answer_garbled_success_is_ambiguous() -> None:
    """A 2xx answer whose body cannot be read may have been applied: AMBIGUOUS."""
    with pytest.raises(TransportError) as info:
        _decode(b'{"InvokeId": "t-', 200)
    assert info.value.sent is True
    assert info.value.kind is CallKind.AMBIGUOUS
    assert (info.value.http_status, info.value.request_id) == (200, None)

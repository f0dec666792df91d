"""Known-answer tests: every signing vector of aliyun-api-facts.md section 3, and wire.py's output."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.aliyun import signing, wire
from fanout.aliyun.command import CommandSpec

KEY_ID = "testid"
SECRET = "testsecret"
NONCE = "15215528852396"
MOMENT = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
INSTANCES = ("i-bp1aaaaaaaaaaaaaaaa1", "i-bp1aaaaaaaaaaaaaaaa2", "i-bp1aaaaaaaaaaaaaaaa3")

DOCS_EXAMPLE = {
    "AccessKeyId": "testid",
    "Action": "DescribeRegions",
    "Format": "XML",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    "SignatureVersion": "1.0",
    "Timestamp": "2016-02-23T12:46:24Z",
    "Version": "2014-05-26",
}

VECTOR_A = {
    "Action": "InvokeCommand",
    "Version": "2014-05-26",
    "Format": "JSON",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureVersion": "1.0",
    "AccessKeyId": KEY_ID,
    "SignatureNonce": NONCE,
    "Timestamp": "2024-01-01T12:00:00Z",
    "RegionId": "cn-hangzhou",
    "CommandId": "c-hz01272yr52abcd",
    "InstanceId.1": INSTANCES[0],
    "InstanceId.2": INSTANCES[1],
    "InstanceId.3": INSTANCES[2],
    "Parameters": '{"name":"Jack"}',
}

VECTOR_A_CANONICAL = (
    "AccessKeyId=testid&Action=InvokeCommand&CommandId=c-hz01272yr52abcd&Format=JSON"
    "&InstanceId.1=i-bp1aaaaaaaaaaaaaaaa1&InstanceId.2=i-bp1aaaaaaaaaaaaaaaa2"
    "&InstanceId.3=i-bp1aaaaaaaaaaaaaaaa3&Parameters=%7B%22name%22%3A%22Jack%22%7D"
    "&RegionId=cn-hangzhou&SignatureMethod=HMAC-SHA1&SignatureNonce=15215528852396"
    "&SignatureVersion=1.0&Timestamp=2024-01-01T12%3A00%3A00Z&Version=2014-05-26"
)

VECTOR_A_STRING_TO_SIGN = (
    "POST&%2F&AccessKeyId%3Dtestid%26Action%3DInvokeCommand%26CommandId%3Dc-hz01272yr52abcd"
    "%26Format%3DJSON%26InstanceId.1%3Di-bp1aaaaaaaaaaaaaaaa1%26InstanceId.2%3D"
    "i-bp1aaaaaaaaaaaaaaaa2%26InstanceId.3%3Di-bp1aaaaaaaaaaaaaaaa3%26Parameters%3D"
    "%257B%2522name%2522%253A%2522Jack%2522%257D%26RegionId%3Dcn-hangzhou%26SignatureMethod"
    "%3DHMAC-SHA1%26SignatureNonce%3D15215528852396%26SignatureVersion%3D1.0%26Timestamp%3D"
    "2024-01-01T12%253A00%253A00Z%26Version%3D2014-05-26"
)

V3_BUSINESS = {
    "RegionId": "cn-hangzhou",
    "CommandId": "c-hz01272yr52abcd",
    "InstanceId.1": INSTANCES[0],
    "InstanceId.2": INSTANCES[1],
    "InstanceId.3": INSTANCES[2],
    "Parameters": '{"name":"Jack"}',
}

V3_HEADERS = {
    "host": "ecs-cn-hangzhou.aliyuncs.com",
    "x-acs-action": "InvokeCommand",
    "x-acs-content-sha256": signing.EMPTY_SHA256,
    "x-acs-date": "2024-01-01T12:00:00Z",
    "x-acs-signature-nonce": NONCE,
    "x-acs-version": "2014-05-26",
}

V3_SIGNED = "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"


@dataclass(frozen=True)
class _Key:
    access_key_id: str = KEY_ID
    access_key_secret: str = SECRET
    security_token: str | None = None


def test_docs_example_string_to_sign_and_signature() -> None:
    """The documented DescribeRegions GET example signs to OLeaidS1JvxuMvnyHOwuJ+uX5qY=."""
    assert signing.rpc_string_to_sign("GET", DOCS_EXAMPLE) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z"
        "%26Version%3D2014-05-26"
    )
    assert (
        signing.rpc_signature("testsecret", "GET", DOCS_EXAMPLE) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    )


def test_vector_a_canonical_query_and_string_to_sign() -> None:
    """Vector A's canonical query and POST StringToSign match the published text byte for byte."""
    assert signing.canonical_query(VECTOR_A) == VECTOR_A_CANONICAL
    assert signing.rpc_string_to_sign("POST", VECTOR_A) == VECTOR_A_STRING_TO_SIGN


@pytest.mark.parametrize(
    ("method", "extra", "expected"),
    [
        ("POST", {}, "azfwYFdf1PxuIlI3ujHZ4jPnsPg="),
        ("GET", {}, "N102opjodJ8xVqy0eMg7ghIq5jg="),
        ("POST", {"SecurityToken": "test-sts-token"}, "aOpbbUwKl2w89rggnwC5KnVYHDM="),
    ],
)
def test_vector_a_signatures(method: str, extra: dict[str, str], expected: str) -> None:
    """Vector A signs to the published value for POST, GET and POST with an STS token."""
    assert signing.rpc_signature(SECRET, method, {**VECTOR_A, **extra}) == expected


def test_vector_b_star_is_encoded() -> None:
    """Vector B: `*` in a value becomes %2A (and %252A in the StringToSign)."""
    params = {**VECTOR_A, "CommandId": "c-hz01272yr52****"}
    assert "CommandId=c-hz01272yr52%2A%2A%2A%2A" in signing.canonical_query(params)
    assert "c-hz01272yr52%252A%252A%252A%252A" in signing.rpc_string_to_sign("POST", params)
    assert signing.rpc_signature(SECRET, "POST", params) == "jnVNUJhMBIuwPV4en+QT5rw27u0="


def test_vector_c_empty_signature_type_is_signed() -> None:
    """Vector C: the legacy SDK's empty `SignatureType=` stays in the canonical string."""
    params = {**VECTOR_A, "CommandId": "c-hz01272yr52****", "SignatureType": ""}
    assert "SignatureNonce=15215528852396&SignatureType=&SignatureVersion=1.0" in (
        signing.canonical_query(params)
    )
    assert signing.rpc_signature(SECRET, "POST", params) == "3hdbf2gJ4mMeMGdhFJnd+geQFh8="


def test_v3_docs_example() -> None:
    """The official V3 RunInstances example hashes and signs to the published values."""
    headers = {
        "host": "ecs.cn-shanghai.aliyuncs.com",
        "x-acs-action": "RunInstances",
        "x-acs-content-sha256": signing.EMPTY_SHA256,
        "x-acs-date": "2023-10-26T10:22:32Z",
        "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
        "x-acs-version": "2014-05-26",
    }
    query = {
        "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
        "RegionId": "cn-shanghai",
    }
    canonical = signing.v3_canonical_request(
        "POST", query, headers, sorted(headers), signing.EMPTY_SHA256
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    )
    assert signing.v3_signature("YourAccessKeySecret", canonical) == (
        "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )


def test_v3_invoke_command_vector() -> None:
    """The V3 InvokeCommand vector: canonical request text, its hash and the Authorization value."""
    canonical = signing.v3_canonical_request(
        "POST", V3_BUSINESS, V3_HEADERS, sorted(V3_HEADERS), signing.EMPTY_SHA256
    )
    assert canonical == "\n".join(
        [
            "POST",
            "/",
            "CommandId=c-hz01272yr52abcd&InstanceId.1=i-bp1aaaaaaaaaaaaaaaa1"
            "&InstanceId.2=i-bp1aaaaaaaaaaaaaaaa2&InstanceId.3=i-bp1aaaaaaaaaaaaaaaa3"
            "&Parameters=%7B%22name%22%3A%22Jack%22%7D&RegionId=cn-hangzhou",
            "host:ecs-cn-hangzhou.aliyuncs.com",
            "x-acs-action:InvokeCommand",
            f"x-acs-content-sha256:{signing.EMPTY_SHA256}",
            "x-acs-date:2024-01-01T12:00:00Z",
            "x-acs-signature-nonce:15215528852396",
            "x-acs-version:2014-05-26",
            "",
            V3_SIGNED,
            signing.EMPTY_SHA256,
        ]
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "595a667eb582e802f5ff2de113b4801f3be16aebd745e34af62cf5c9e63739bd"
    )
    assert signing.v3_authorization(KEY_ID, SECRET, "POST", V3_BUSINESS, V3_HEADERS) == (
        f"ACS3-HMAC-SHA256 Credential=testid,SignedHeaders={V3_SIGNED},"
        "Signature=665a5a6ad972f3d8520afccb62e6cbce065ca6b63e9018b2db247b96d38d6633"
    )


def test_v3_sts_vector() -> None:
    """With STS the two extra signed headers give the published V3 signature."""
    headers = {
        **V3_HEADERS,
        "x-acs-accesskey-id": KEY_ID,
        "x-acs-security-token": "test-sts-token",
    }
    authorization = signing.v3_authorization(KEY_ID, SECRET, "POST", V3_BUSINESS, headers)
    assert authorization.endswith(
        "Signature=e7cb322745a39939117f4b83ab942d108dbfcb18eac7024b54d38a64fb8ebd1f"
    )


def test_wire_builds_vector_a_from_an_invoke_command_call() -> None:
    """wire.py turns an invoke_command-shaped call into exactly vector A's parameter set."""
    business = wire.invoke_command_params(
        "cn-hangzhou", CommandSpec("c-hz01272yr52abcd", parameters={"name": "Jack"}), INSTANCES
    )
    params = wire.rpc_params("InvokeCommand", business, _Key(), nonce=NONCE, moment=MOMENT)
    assert params == VECTOR_A
    assert signing.rpc_signature(SECRET, "POST", params) == "azfwYFdf1PxuIlI3ujHZ4jPnsPg="


def test_wire_rpc_request_url_is_vector_a_plus_signature() -> None:
    """The V1 URL's query is vector A's canonical query with the encoded signature merged in."""
    business = wire.invoke_command_params(
        "cn-hangzhou", CommandSpec("c-hz01272yr52abcd", parameters={"name": "Jack"}), INSTANCES
    )
    request = wire.sign_request(
        "rpc",
        "https://ecs-cn-hangzhou.aliyuncs.com",
        "InvokeCommand",
        business,
        _Key(),
        nonce=NONCE,
        moment=MOMENT,
    )
    expected = signing.canonical_query({**VECTOR_A, "Signature": "azfwYFdf1PxuIlI3ujHZ4jPnsPg="})
    assert request.url == f"https://ecs-cn-hangzhou.aliyuncs.com/?{expected}"
    assert "Signature=azfwYFdf1PxuIlI3ujHZ4jPnsPg%3D" in request.url


def test_wire_v3_request_matches_the_v3_vectors() -> None:
    """wire.py's V3 headers for vector A's call carry the published Authorization, plain and STS."""
    business = wire.invoke_command_params(
        "cn-hangzhou", CommandSpec("c-hz01272yr52abcd", parameters={"name": "Jack"}), INSTANCES
    )
    request = wire.sign_request(
        "v3",
        "https://ecs-cn-hangzhou.aliyuncs.com",
        "InvokeCommand",
        business,
        _Key(),
        nonce=NONCE,
        moment=MOMENT,
    )
    assert request.headers["Authorization"].endswith(
        "Signature=665a5a6ad972f3d8520afccb62e6cbce065ca6b63e9018b2db247b96d38d6633"
    )
    assert request.url.endswith("/?" + signing.canonical_query(V3_BUSINESS))
    sts = wire.sign_request(
        "v3",
        "https://ecs-cn-hangzhou.aliyuncs.com",
        "InvokeCommand",
        business,
        _Key(security_token="test-sts-token"),
        nonce=NONCE,
        moment=MOMENT,
    )
    assert sts.headers["Authorization"].endswith(
        "Signature=e7cb322745a39939117f4b83ab942d108dbfcb18eac7024b54d38a64fb8ebd1f"
    )


_QUERY_TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["=", "&", "a=b", "x&y=z", "i-bp1abc", "InstanceId.10", "~._-", "", " ", "+", "%2A"]
)


@given(st.dictionaries(_QUERY_TEXT, _QUERY_TEXT, max_size=8))
def test_canonical_query_equals_encoding_every_pair(params: dict[str, str]) -> None:
    """The one-scan fast path never changes the bytes: `=` and `&` inside keys or values,
    reserved and non-ASCII characters all come out as the pair-by-pair encoding gives them."""
    expected = "&".join(
        f"{quote(key, safe='~')}={quote(params[key], safe='~')}" for key in sorted(params)
    )
    assert signing.canonical_query(params) == expected


@given(st.text(max_size=300) | st.text(st.sampled_from('i-bp1z[]",%é~ &=*+/\x00'), max_size=300))
def test_percent_encode_equals_quote(value: str) -> None:
    """The replace-per-byte fast path gives exactly `quote(value, safe="~")`, for any text:
    few or many distinct bytes to escape, `%` among them, non-ASCII, control characters."""
    assert signing.percent_encode(value) == quote(value, safe="~")


@pytest.mark.parametrize("value", ["\ud800", 'x"\udfff"'])
def test_percent_encode_refuses_lone_surrogates_as_quote_does(value: str) -> None:
    """Text that is not valid Unicode raises UnicodeEncodeError, as `quote` does."""
    with pytest.raises(UnicodeEncodeError):
        quote(value, safe="~")
    with pytest.raises(UnicodeEncodeError):
        signing.percent_encode(value)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2024, 1, 1, 12, 0, 0, 999_999, tzinfo=UTC),
        datetime(2024, 1, 1, 20, 0, 0, 500, tzinfo=timezone(timedelta(hours=8))),
        datetime(2024, 1, 1, 12, 0, 0),  # noqa: DTZ001 - naive: taken as UTC
    ],
)
def test_timestamps_are_utc_seconds(moment: datetime) -> None:
    assert wire.format_timestamp(moment) == "2024-01-01T12:00:00Z"

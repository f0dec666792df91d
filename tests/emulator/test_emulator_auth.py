"""Signature verification: both schemes accepted, every kind of bad request refused."""

from __future__ import annotations

import hashlib
import re
import time
from urllib.parse import quote_plus

from fanout.aliyun.signing import canonical_query, rpc_signature, v3_authorization
from fanout.emulator import DEMO_COMMAND_ID, Emulator
from fanout.emulator.auth import NonceMemory

from .conftest import MakeApi
from .helpers import API_VERSION, REGION, Api, fresh_nonce, utc_stamp

_DESCRIBE = {"MaxResults": "10"}


async def test_v1_post_with_query_is_accepted(api: Api) -> None:
    """A V1 (HMAC-SHA1) POST with every parameter in the query is answered."""
    body = await api.ok("DescribeInstances", _DESCRIBE)
    assert len(body["Instances"]["Instance"]) == 10


async def test_v1_get_is_accepted(api: Api) -> None:
    """A V1 GET is verified with GET in the string to sign."""
    body = await api.ok("DescribeInstances", _DESCRIBE, method="GET")
    assert body["TotalCount"] == 100


async def test_v1_post_with_form_body_is_accepted(api: Api) -> None:
    """Business parameters in an x-www-form-urlencoded body are signed and used."""
    body = await api.ok("DescribeInstances", {"MaxResults": "20"}, form_body=True)
    assert len(body["Instances"]["Instance"]) == 20


async def test_v3_is_accepted_without_action_in_query(api: Api) -> None:
    """ACS3-HMAC-SHA256 takes the action from x-acs-action and answers JSON by default."""
    body = await api.ok("DescribeInstances", _DESCRIBE, scheme="v3", fmt=None)
    assert body["TotalCount"] == 100
    assert "RequestId" in body


async def test_v1_lowercase_format_and_empty_signature_type(api: Api) -> None:
    """`Format=json` (lowercase) answers JSON, and an empty SignatureType stays signed."""
    reply = await api.call("DescribeInstances", {"SignatureType": ""}, fmt="json")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")


async def test_v1_plus_encoded_query_as_requests_sends_it(api: Api) -> None:
    """A query encoded the `urlencode` way (space as +, ':' as %3A) verifies after decoding."""
    params = {
        "Action": "DescribeInstances", "Version": API_VERSION, "Format": "JSON",
        "AccessKeyId": api.key_id, "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
        "SignatureNonce": fresh_nonce(), "Timestamp": utc_stamp(), "RegionId": REGION,
        "Status": "Running", "Tag.1.Key": "env", "Tag.1.Value": "prod",
        "ZoneId": "",
    }  # fmt: skip
    params["Signature"] = rpc_signature(api.secret, "POST", params)
    raw = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in params.items())
    reply = await api.send("POST", raw)
    assert reply.status == 200, reply.text
    assert all(i["Status"] == "Running" for i in reply.body["Instances"]["Instance"])


async def test_v1_literal_characters_as_aiohttp_sends_them(api: Api) -> None:
    """A query with literal ':' and '/' and a '+'-encoded space (yarl style) verifies too."""
    params = {
        "Action": "DescribeInstances", "Version": API_VERSION, "Format": "JSON",
        "AccessKeyId": api.key_id, "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
        "SignatureNonce": fresh_nonce(), "Timestamp": utc_stamp(), "RegionId": REGION,
        "ZoneId": "a b/c",
    }  # fmt: skip
    params["Signature"] = rpc_signature(api.secret, "POST", params)
    raw = (
        "&".join(f"{k}={quote_plus(v, safe=':/')}" for k, v in params.items() if k != "Signature")
        + "&Signature="
        + quote_plus(params["Signature"], safe="")
    )
    reply = await api.send("POST", raw)
    assert reply.status == 200, reply.text
    assert reply.body["Instances"]["Instance"] == []


async def test_wrong_secret_is_refused_with_string_to_sign(api: Api) -> None:
    """A signature made with another secret gets SignatureDoesNotMatch and the server's string."""
    reply = await api.error("DescribeInstances", secret="not-the-secret")
    assert reply.status == 400
    assert reply.code == "SignatureDoesNotMatch"
    prefix = "Specified signature is not matched with our calculation. server string to sign is:"
    assert reply.body["Message"].startswith(prefix + "POST&%2F&AccessKeyId%3D")


async def test_tampered_parameter_is_refused(api: Api) -> None:
    """Changing a parameter after signing breaks the V1 signature."""
    reply = await api.error(
        "DescribeInstances", {"Status": "Running"}, tamper={"Status": "Stopped"}
    )
    assert reply.code == "SignatureDoesNotMatch"


async def test_v3_tampered_query_is_refused(api: Api) -> None:
    """Changing the query after signing breaks the V3 signature."""
    reply = await api.error("DescribeInstances", {"Status": "Running"}, scheme="v3", tamper={"Status": "Stopped"})  # fmt: skip
    assert (reply.status, reply.code) == (400, "SignatureDoesNotMatch")


async def test_v3_wrong_secret_is_refused(api: Api) -> None:
    """A V3 signature with another secret is refused."""
    reply = await api.error("DescribeInstances", scheme="v3", secret="wrong")
    assert (reply.status, reply.code) == (400, "SignatureDoesNotMatch")


async def test_replayed_nonce_is_refused(api: Api) -> None:
    """The same SignatureNonce twice: the second request is SignatureNonceUsed."""
    nonce = fresh_nonce()
    await api.ok("DescribeInstances", nonce=nonce)
    reply = await api.error("DescribeInstances", nonce=nonce)
    assert (reply.status, reply.code) == (400, "SignatureNonceUsed")


async def test_v3_replayed_nonce_is_refused(api: Api) -> None:
    """The same x-acs-signature-nonce twice is refused too."""
    nonce = fresh_nonce()
    await api.ok("DescribeInstances", nonce=nonce, scheme="v3")
    reply = await api.error("DescribeInstances", nonce=nonce, scheme="v3")
    assert reply.code == "SignatureNonceUsed"


async def test_stale_timestamp_is_refused(api: Api) -> None:
    """A Timestamp 16 minutes old is outside the 15-minute window."""
    reply = await api.error("DescribeInstances", timestamp=utc_stamp(-16 * 60))
    assert (reply.status, reply.code) == (400, "InvalidTimeStamp.Expired")


async def test_future_v3_date_is_refused(api: Api) -> None:
    """An x-acs-date 16 minutes ahead is refused as well."""
    reply = await api.error("DescribeInstances", timestamp=utc_stamp(16 * 60), scheme="v3")
    assert reply.code == "InvalidTimeStamp.Expired"


async def test_timestamp_within_skew_is_accepted(api: Api) -> None:
    """A Timestamp 10 minutes old is still accepted."""
    await api.ok("DescribeInstances", timestamp=utc_stamp(-10 * 60))


async def test_clock_advance_does_not_affect_timestamp_checks(api: Api) -> None:
    """Signatures are checked against the real clock, not the advanced emulator clock."""
    await api.control("clock", {"advance_s": 3 * 86400})
    await api.ok("DescribeInstances")


async def test_malformed_timestamp_is_refused(api: Api) -> None:
    """A Timestamp that is not ISO 8601 UTC is InvalidTimeStamp.Format."""
    reply = await api.error("DescribeInstances", timestamp="yesterday")
    assert reply.code == "InvalidTimeStamp.Format"


async def test_unknown_key_is_refused(api: Api) -> None:
    """An AccessKeyId that is not configured gets InvalidAccessKeyId.NotFound (404)."""
    reply = await api.error("DescribeInstances", key_id="LTAI-nobody")
    assert (reply.status, reply.code) == (404, "InvalidAccessKeyId.NotFound")
    reply = await api.error("DescribeInstances", key_id="LTAI-nobody", scheme="v3")
    assert reply.code == "InvalidAccessKeyId.NotFound"


async def test_missing_signature_is_missing_parameter(api: Api) -> None:
    """A request without any signature is MissingParameter."""
    raw = canonical_query(
        {"Action": "DescribeInstances", "RegionId": REGION, "Version": API_VERSION}
    )
    reply = await api.send("GET", raw)
    assert (reply.status, reply.code) == (400, "MissingParameter")


async def test_malformed_v3_authorization_is_incomplete(api: Api) -> None:
    """An ACS3 Authorization header without its parts is IncompleteSignature."""
    headers = {"Authorization": "ACS3-HMAC-SHA256 garbage", "x-acs-action": "DescribeInstances"}
    reply = await api.send("POST", "RegionId=cn-hangzhou", headers=headers)
    assert (reply.status, reply.code) == (400, "IncompleteSignature")


async def test_v3_unsigned_acs_header_is_incomplete(api: Api) -> None:
    """An x-acs-* header left out of SignedHeaders is refused."""
    host = api.base_url.split("//")[1]
    headers = {
        "host": host,
        "x-acs-date": utc_stamp(),
        "x-acs-signature-nonce": fresh_nonce(),
        "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
        "x-acs-version": API_VERSION,
    }
    query = {"RegionId": REGION}
    headers["Authorization"] = v3_authorization(api.key_id, api.secret, "POST", query, headers)
    headers["x-acs-action"] = "DescribeInstances"  # added after signing
    reply = await api.send("POST", canonical_query(query), headers=headers)
    assert reply.code == "IncompleteSignature"


async def test_v3_body_hash_must_match(api: Api) -> None:
    """x-acs-content-sha256 must be the SHA-256 of the body actually sent."""
    host = api.base_url.split("//")[1]
    headers = {
        "host": host,
        "x-acs-action": "DescribeInstances",
        "x-acs-version": API_VERSION,
        "x-acs-date": utc_stamp(),
        "x-acs-signature-nonce": fresh_nonce(),
        "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
    }
    query = {"RegionId": REGION}
    headers["Authorization"] = v3_authorization(api.key_id, api.secret, "POST", query, headers)
    reply = await api.send("POST", canonical_query(query), body=b"surprise", headers=headers)
    assert (reply.status, reply.code) == (400, "SignatureDoesNotMatch")


async def test_sts_token_accepted_when_configured(make_api: MakeApi) -> None:
    """A configured SecurityToken is accepted on V1 and V3; others are InvalidSecurityToken.Expired."""
    _, api = await make_api(sts_tokens=frozenset({"good-token"}))
    await api.ok("DescribeInstances", sts_token="good-token")
    await api.ok("DescribeInstances", sts_token="good-token", scheme="v3")
    reply = await api.error("DescribeInstances", sts_token="stale-token")
    assert (reply.status, reply.code) == (403, "InvalidSecurityToken.Expired")
    reply = await api.error("DescribeInstances", sts_token="stale-token", scheme="v3")
    assert reply.code == "InvalidSecurityToken.Expired"


async def test_configured_key_pair_replaces_demo(make_api: MakeApi) -> None:
    """Only the configured key pairs are accepted."""
    _, api = await make_api(access_keys={"my-key": "my-secret"})
    reply = await api.error("DescribeInstances")
    assert reply.code == "InvalidAccessKeyId.NotFound"
    await api.ok("DescribeInstances", key_id="my-key", secret="my-secret")


async def test_auth_failures_are_not_counted(api: Api) -> None:
    """`calls` counts authenticated requests only."""
    await api.error("DescribeInstances", secret="wrong")
    await api.ok("DescribeInstances")
    state = await api.control("state")
    assert state["regions"][REGION]["calls"] == {"DescribeInstances": 1}


async def test_xml_format_renders_xml(api: Api) -> None:
    """Format=XML answers `<ActionResponse>` with lists as repeated elements."""
    reply = await api.call("DescribeInstances", {"MaxResults": "10"}, fmt="XML")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/xml;charset=utf-8"
    assert reply.text.startswith("<?xml")
    assert "<DescribeInstancesResponse><RequestId>" in reply.text
    assert reply.text.count("<Instance><InstanceId>i-") == 10


async def test_xml_error_body(api: Api) -> None:
    """Errors in XML use the `<Error>` root with Code and Message."""
    reply = await api.call("DescribeInstances", fmt="xml", secret="wrong")
    assert reply.status == 400
    assert reply.headers["Content-Type"] == "text/xml;charset=utf-8"
    assert "<Error><RequestId>" in reply.text
    assert "<Code>SignatureDoesNotMatch</Code>" in reply.text


async def test_error_body_shape_and_fresh_request_ids(api: Api) -> None:
    """An error body has RequestId, HostId, Code, Message, Recommend; RequestIds never repeat."""
    first = await api.error("NoSuchAction")
    second = await api.error("NoSuchAction")
    assert (first.status, first.code) == (404, "InvalidAction.NotFound")
    assert set(first.body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
    assert "InvalidAction.NotFound" in first.body["Recommend"]
    assert first.body["RequestId"] != second.body["RequestId"]
    assert first.body["RequestId"] == first.body["RequestId"].upper()


async def test_region_errors(api: Api) -> None:
    """No RegionId is MissingParameter (400); an unknown one is InvalidRegionId.NotFound (404)."""
    reply = await api.error("DescribeInstances", region=None)
    assert (reply.status, reply.code) == (400, "MissingParameter")
    reply = await api.error("DescribeInstances", region="mars-north-1")
    assert (reply.status, reply.code) == (404, "InvalidRegionId.NotFound")


async def test_v3_with_form_body(api: Api) -> None:
    """V3 may carry business parameters in a form body: its hash is signed, its values used."""
    host = api.base_url.split("//")[1]
    body = b"MaxResults=20&Status=Running"
    headers = {
        "host": host,
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-action": "DescribeInstances",
        "x-acs-version": API_VERSION,
        "x-acs-date": utc_stamp(),
        "x-acs-signature-nonce": fresh_nonce(),
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    query = {"RegionId": REGION}
    headers["Authorization"] = v3_authorization(
        api.key_id, api.secret, "POST", query, headers, hashlib.sha256(body).hexdigest()
    )
    reply = await api.send("POST", canonical_query(query), body=body, headers=headers)
    assert reply.status == 200, reply.text
    assert len(reply.body["Instances"]["Instance"]) == 20


def test_nonce_memory_is_bounded_and_expires() -> None:
    """Nonces are forgotten after the window, and the oldest go first beyond the cap."""
    memory = NonceMemory(ttl_s=0.05, max_entries=3)
    assert not memory.seen_before("k", "a")
    assert memory.seen_before("k", "a")
    assert not memory.seen_before("other-key", "a")
    for nonce in ("b", "c", "d"):
        memory.seen_before("k", nonce)
    assert len(memory) <= 3
    time.sleep(0.06)
    assert not memory.seen_before("k", "d")
    assert len(memory) == 1


async def test_xml_invoke_command_response(emu_api: tuple[Emulator, Api]) -> None:
    """InvokeCommand in XML: `<InvokeCommandResponse><RequestId/><InvokeId/>`."""
    emulator, api = emu_api
    iid = emulator.world.fleet.regions[REGION].instances[0].instance_id
    reply = await api.call(
        "InvokeCommand", {"CommandId": DEMO_COMMAND_ID, "InstanceId.1": iid}, fmt="XML"
    )
    assert reply.status == 200
    assert re.fullmatch(
        r"<\?xml version='1.0' encoding='UTF-8'\?><InvokeCommandResponse><RequestId>[0-9A-F-]{36}"
        r"</RequestId><InvokeId>t-[0-9a-f]{30}</InvokeId></InvokeCommandResponse>",
        reply.text,
    )

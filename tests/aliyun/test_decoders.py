"""The typed decoders of the preflight answers read every answer as the generic parsers do."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fanout.aliyun import decoders, responses, wire

REGION = "cn-hangzhou"

# Field values as servers send them, and as they might: text, null, numbers, booleans, objects.
_ODD: st.SearchStrategy[Any] = (
    st.none() | st.integers() | st.booleans() | st.floats(allow_nan=False) | st.just({})
)
_TEXT = st.text(max_size=8) | st.sampled_from(["true", "TRUE", " True ", "false", "Running"])
_VALUE = _TEXT | _ODD


def _fields(names: list[str], value: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of `names` (and an unknown field or not)."""
    return st.fixed_dictionaries(
        {}, optional={**dict.fromkeys(names, value), "Extra": st.just([1, {"a": None}])}
    )


def _wrapped(key: str, items: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A one-key wrapper object around a list (or what a lax server sends instead)."""
    lists = st.lists(items, max_size=4)
    return st.fixed_dictionaries({key: lists}) | st.just({}) | st.none() | lists


_TAG = _fields(["TagKey", "TagValue"], _VALUE) | _ODD
_INSTANCE = (
    _fields(
        ["InstanceId", "RegionId", "Status", "InstanceNetworkType", "OSType", "ZoneId"], _VALUE
    ).flatmap(lambda base: st.fixed_dictionaries({"Tags": _wrapped("Tag", _TAG)}).map(base.__or__))
    | _ODD
)
_STATUS = _fields(
    ["InstanceId", "CloudAssistantStatus", "CloudAssistantVersion", "OSType"], _VALUE
) | st.just(7)
_TOKEN = st.fixed_dictionaries({}, optional={"NextToken": _VALUE, "RequestId": _TEXT})


def _answer(key: str, inner: str, items: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return _TOKEN.flatmap(
        lambda top: st.fixed_dictionaries({}, optional={key: _wrapped(inner, items)}).map(
            top.__or__
        )
    )


def _read(reader: wire.Reader[Any], raw: bytes) -> Any:
    return wire.read_answer(reader, raw, 200, None, action="A", region=REGION, host="h")


def _instances_reader() -> wire.Reader[responses.Page[responses.Instance]]:
    return wire.Reader(
        lambda body: responses.parse_instances(body, REGION),
        lambda raw: decoders.decode_instances(raw, REGION),
    )


@given(_answer("Instances", "Instance", _INSTANCE))
def test_instances_read_as_the_generic_parser_reads_them(body: dict[str, Any]) -> None:
    """Any DescribeInstances answer, odd field types included, reads the same as json.loads and
    `parse_instances` read it (the typed decoder gives way where its schema does not fit)."""
    raw = json.dumps(body).encode()
    assert _read(_instances_reader(), raw) == responses.parse_instances(json.loads(raw), REGION)


@given(_answer("InstanceCloudAssistantStatusSet", "InstanceCloudAssistantStatus", _STATUS))
def test_agent_statuses_read_as_the_generic_parser_reads_them(body: dict[str, Any]) -> None:
    """Any DescribeCloudAssistantStatus answer reads the same as `parse_agent_statuses` reads it."""
    raw = json.dumps(body).encode()
    reader = wire.Reader(responses.parse_agent_statuses, decoders.decode_agent_statuses)
    assert _read(reader, raw) == responses.parse_agent_statuses(json.loads(raw))


def test_a_usual_page_is_decoded_typed() -> None:
    """The answer as ECS sends it takes the typed path: every field read, tags flattened."""
    item = {
        "InstanceId": "i-1", "Status": "Running", "InstanceNetworkType": "vpc", "OSType": "linux",
        "ZoneId": "cn-hangzhou-b", "Cpu": 2, "VpcAttributes": {"VpcId": "vpc-1"},
        "Tags": {"Tag": [{"TagKey": "env", "TagValue": "prod"}]},
    }  # fmt: skip
    raw = json.dumps({"NextToken": "t2", "Instances": {"Instance": [item]}}).encode()
    page = decoders.decode_instances(raw, REGION)
    assert page is not None
    assert page.next_token == "t2"
    (inst,) = page.items
    assert (inst.instance_id, inst.region, inst.status, inst.network_type, inst.zone_id) == (
        "i-1", REGION, "Running", "vpc", "cn-hangzhou-b"
    )  # fmt: skip
    assert inst.tags == {"env": "prod"}
    status = {"InstanceId": "i-1", "CloudAssistantStatus": "true", "OSType": "Linux"}
    statuses = decoders.decode_agent_statuses(
        json.dumps(
            {"InstanceCloudAssistantStatusSet": {"InstanceCloudAssistantStatus": [status]}}
        ).encode()
    )
    assert statuses is not None
    assert [(s.instance_id, s.online, s.os_type) for s in statuses.items] == [
        ("i-1", True, "Linux")
    ]


def test_what_the_schema_does_not_fit_is_left_to_the_generic_parser() -> None:
    """A number where text is expected, UTF-16 text, or no JSON at all: None from the decoder."""
    assert decoders.decode_instances(b'{"Instances":{"Instance":[{"Status":1}]}}', REGION) is None
    assert decoders.decode_instances('{"NextToken":""}'.encode("utf-16"), REGION) is None
    assert decoders.decode_agent_statuses(b"<xml/>") is None

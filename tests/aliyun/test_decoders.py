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


_EXECUTION_FIELDS = [
    "InstanceId", "InvokeId", "CommandId", "InvocationStatus", "InstanceInvokeStatus",
    "ErrorCode", "ErrorInfo", "StartTime", "FinishTime", "FinishedTime", "StopTime",
]  # fmt: skip
_INT_FIELDS = ["ExitCode", "Dropped", "Repeats"]
_STATUS_TEXT = st.sampled_from(["Running", "Success", "Failed", "Finished", "Stopped", ""])
_INVOKE_IDS = st.sampled_from(["t-1", "t-2", ""])
_INSTANCE_IDS = st.sampled_from(["i-1", "i-2", ""])
# Well-typed entries, as a server sends them: the typed path reads every one of these.
_TYPED_EXECUTION = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(_EXECUTION_FIELDS, _STATUS_TEXT | _TEXT | st.none()),
        "InvokeId": _INVOKE_IDS | st.none(),
        "InstanceId": _INSTANCE_IDS | _TEXT | st.none(),
        "InvocationStatus": _STATUS_TEXT | st.none(),
        "InstanceInvokeStatus": _STATUS_TEXT | st.none(),
        **dict.fromkeys(_INT_FIELDS, st.integers(-(2**70), 2**70) | st.none()),
        "Output": st.sampled_from(["", "aGVsbG8=", "hello", "!!"]) | st.none(),
        "Timed": st.booleans(),
    },
)
# ... and what a lax server might send: numbers as text, odd types (the generic path).
_EXECUTION = (
    _TYPED_EXECUTION
    | _fields(_EXECUTION_FIELDS + _INT_FIELDS, _STATUS_TEXT | _VALUE | st.sampled_from(["7", "x"]))
    | _ODD
)


def _invocation(entries: st.SearchStrategy[Any], odd: bool) -> st.SearchStrategy[Any]:
    """A DescribeInvocations entry with `entries` as its instances."""
    fields = {
        "InvokeId": _INVOKE_IDS | st.none(),
        "CommandId": _TEXT | st.none(),
        "InvocationStatus": _STATUS_TEXT | st.none(),
        "InvokeStatus": _STATUS_TEXT | (_ODD if odd else st.none()),
        "CreationTime": st.sampled_from(["", "2026-01-01T00:00:00Z"]) | st.none(),
    }
    return st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda base: st.fixed_dictionaries(
            {}, optional={"InvokeInstances": _listed("InvokeInstance", entries, odd)}
        ).map(base.__or__)
    )


def _listed(key: str, items: st.SearchStrategy[Any], odd: bool) -> st.SearchStrategy[Any]:
    """A wrapper object around a list of `items`; with `odd`, what a lax server sends too."""
    lists = st.fixed_dictionaries({key: st.lists(items, max_size=4) | st.none()})
    return _wrapped(key, items) if odd else lists | st.none()


def _invocations_answer(odd: bool) -> st.SearchStrategy[Any]:
    entries = _EXECUTION if odd else _TYPED_EXECUTION
    invocation = _invocation(entries, odd) | (_ODD if odd else st.nothing())
    token = _TOKEN if odd else st.fixed_dictionaries({}, optional={"NextToken": _TEXT})
    return token.flatmap(
        lambda top: st.fixed_dictionaries(
            {}, optional={"Invocations": _listed("Invocation", invocation, odd)}
        ).map(top.__or__)
    )


def _results_answer(odd: bool) -> st.SearchStrategy[Any]:
    entries = _EXECUTION if odd else _TYPED_EXECUTION
    token = _TOKEN if odd else st.fixed_dictionaries({}, optional={"NextToken": _TEXT})
    wrapper = token.flatmap(
        lambda inner: st.fixed_dictionaries(
            {}, optional={"InvocationResults": _listed("InvocationResult", entries, odd)}
        ).map(inner.__or__)
    )
    return token.flatmap(
        lambda top: st.fixed_dictionaries(
            {}, optional={"Invocation": wrapper | (_ODD if odd else st.none())}
        ).map(top.__or__)
    )


_KEEP_IDS = st.none() | st.sets(st.sampled_from(["t-1", "t-2", ""]))
_KEEP_STATUSES = st.none() | st.sets(st.sampled_from(["Success", "Failed", "Finished", ""]))
_ENCODING = st.sampled_from(["PlainText", "Base64"])
# Per invocation, the instances a sweep still waits for (the others are not parsed again).
_KEEP_INSTANCES = st.none() | st.dictionaries(_INVOKE_IDS, st.sets(_INSTANCE_IDS), max_size=2)


@given(
    st.booleans().flatmap(_invocations_answer),
    _KEEP_IDS,
    _KEEP_STATUSES,
    _ENCODING,
    _KEEP_INSTANCES,
)
def test_invocations_read_as_the_generic_parser_reads_them(
    body: dict[str, Any],
    invoke_ids: set[str] | None,
    statuses: set[str] | None,
    encoding: str,
    instance_ids: dict[str, set[str]] | None,
) -> None:
    """Any DescribeInvocations answer, odd field types included, reads the same as
    `parse_invocations` reads it, with the same invocation, status and instance filters."""
    raw = json.dumps(body).encode()
    keep: dict[str, Any] = {
        "invoke_ids": invoke_ids,
        "statuses": statuses,
        "instance_ids": instance_ids,
    }
    reader = wire.Reader(
        lambda b: responses.parse_invocations(b, encoding, **keep),
        lambda r: decoders.decode_invocations(r, encoding, **keep),
    )
    expected = responses.parse_invocations(json.loads(raw), encoding, **keep)
    assert _read(reader, raw) == expected


@given(_invocations_answer(odd=False), _KEEP_IDS, _KEEP_STATUSES, _KEEP_INSTANCES)
def test_well_typed_invocations_take_the_typed_path(
    body: dict[str, Any],
    invoke_ids: set[str] | None,
    statuses: set[str] | None,
    instance_ids: dict[str, set[str]] | None,
) -> None:
    """A DescribeInvocations answer of the documented types is decoded typed, as
    `parse_invocations` reads it."""
    raw = json.dumps(body).encode()
    keep: dict[str, Any] = {
        "invoke_ids": invoke_ids,
        "statuses": statuses,
        "instance_ids": instance_ids,
    }
    page = decoders.decode_invocations(raw, **keep)
    assert page is not None
    assert page == responses.parse_invocations(json.loads(raw), **keep)


@given(st.booleans().flatmap(_results_answer), _ENCODING)
def test_invocation_results_read_as_the_generic_parser_reads_them(
    body: dict[str, Any], encoding: str
) -> None:
    """Any DescribeInvocationResults answer reads the same as `parse_invocation_results`."""
    raw = json.dumps(body).encode()
    reader = wire.Reader(
        lambda b: responses.parse_invocation_results(b, encoding),
        lambda r: decoders.decode_invocation_results(r, encoding),
    )
    assert _read(reader, raw) == responses.parse_invocation_results(json.loads(raw), encoding)


@given(_results_answer(odd=False), _ENCODING)
def test_well_typed_invocation_results_take_the_typed_path(
    body: dict[str, Any], encoding: str
) -> None:
    """A DescribeInvocationResults answer of the documented types is decoded typed, as
    `parse_invocation_results` reads it."""
    raw = json.dumps(body).encode()
    page = decoders.decode_invocation_results(raw, encoding)
    assert page is not None
    assert page == responses.parse_invocation_results(json.loads(raw), encoding)


def test_invocation_answers_the_schema_does_not_fit_are_left_to_the_generic_parser() -> None:
    """ExitCode as text, an instance that is not an object, no JSON: None from the decoders."""
    assert decoders.decode_invocation_results(b'{"Invocation":{"InvocationResults":{"InvocationResult":[{"ExitCode":"0"}]}}}') is None  # fmt: skip
    assert decoders.decode_invocations(b'{"Invocations":{"Invocation":[{"InvokeInstances":{"InvokeInstance":[7]}}]}}') is None  # fmt: skip
    assert decoders.decode_invocations(b"<xml/>") is None


def test_usual_invocation_pages_are_decoded_typed() -> None:
    """DescribeInvocations and DescribeInvocationResults as the emulator sends them take the
    typed path: the status filter reads InvocationStatus first, the end time is FinishTime in
    the first and FinishedTime in the second."""
    entry = {
        "InstanceId": "i-1", "InvocationStatus": "Success", "InstanceInvokeStatus": "Finished",
        "ExitCode": 0, "Output": "hi", "Dropped": 0, "ErrorCode": "", "ErrorInfo": "",
        "Repeats": 1, "Timed": False, "StartTime": "2026-01-01T00:00:01Z",
        "FinishTime": "2026-01-01T00:00:09Z", "StopTime": "", "Tags": {"Tag": []},
    }  # fmt: skip
    legacy = {**entry, "InstanceId": "i-2", "InvocationStatus": "", "InstanceInvokeStatus": "Failed"}  # fmt: skip
    invocation = {
        "InvokeId": "t-1", "CommandId": "c-1", "InvocationStatus": "Running",
        "InvokeStatus": "Running", "CreationTime": "", "Timeout": 60,
        "InvokeInstances": {"InvokeInstance": [entry, legacy]},
    }  # fmt: skip
    other = {**invocation, "InvokeId": "t-2"}
    raw = json.dumps({"NextToken": "n", "Invocations": {"Invocation": [invocation, other]}})
    for statuses, kept in (({"Success"}, ["i-1"]), ({"Finished"}, []), ({"Failed"}, ["i-2"])):
        page = decoders.decode_invocations(raw.encode(), invoke_ids={"t-1"}, statuses=statuses)
        assert page is not None
        assert page == responses.parse_invocations(
            json.loads(raw), invoke_ids={"t-1"}, statuses=statuses
        )
        (inv,) = page.items
        assert (inv.invoke_id, inv.creation_time, page.next_token) == ("t-1", None, "n")
        assert [r.instance_id for r in inv.instances] == kept
    (inv,) = decoders.decode_invocations(raw.encode(), invoke_ids={"t-1"}).items  # type: ignore[union-attr]
    assert [(r.status, r.finish_time, r.command_id) for r in inv.instances] == [
        ("Success", "2026-01-01T00:00:09Z", "c-1"), ("Failed", "2026-01-01T00:00:09Z", "c-1")
    ]  # fmt: skip
    record = {**entry, "InvokeId": "t-1", "CommandId": "c-1", "FinishedTime": "2026-01-01T00:00:08Z"}  # fmt: skip
    raw = json.dumps({"Invocation": {"NextToken": "", "InvocationResults": {"InvocationResult": [record]}}})  # fmt: skip
    results = decoders.decode_invocation_results(raw.encode())
    assert results is not None
    assert results == responses.parse_invocation_results(json.loads(raw))
    assert results.items[0].finish_time == "2026-01-01T00:00:08Z"

"""Target lists: line formats, strict validation with file:line, dedupe and merge."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.errors import TargetError
from fanout.targets import (
    INSTANCE_ID_PATTERN,
    REGION_PATTERN,
    Duplicate,
    Target,
    TargetList,
    merge_targets,
    parse_instance_ids,
    parse_target_text,
)

KNOWN = frozenset({"cn-hangzhou", "cn-beijing", "ap-southeast-1", "cn-shanghai-finance-1"})
ID_A = "i-bp1aaaaaaaaaaaaaaaa1"
ID_B = "i-bp1aaaaaaaaaaaaaaaa2"
ID_C = "i-bp1aaaaaaaaaaaaaaaa3"


def parse(data: bytes | str, default: str | None = "cn-hangzhou") -> TargetList:
    """Parse `data` as the file `hosts.txt` with the test's known regions."""
    return parse_target_text(data, source="hosts.txt", default_region=default, known_regions=KNOWN)


def error_of(data: bytes | str, default: str | None = "cn-hangzhou") -> TargetError:
    """The TargetError that parsing `data` raises."""
    with pytest.raises(TargetError) as caught:
        parse(data, default)
    return caught.value


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (ID_A, Target("cn-hangzhou", ID_A)),
        (f"cn-beijing,{ID_A}", Target("cn-beijing", ID_A)),
        (f"cn-beijing:{ID_A}", Target("cn-beijing", ID_A)),
        (f"  cn-beijing , {ID_A}  ", Target("cn-beijing", ID_A)),
        (f"\tap-southeast-1:{ID_A}\t# trailing comment", Target("ap-southeast-1", ID_A)),
        (f"cn-shanghai-finance-1,{ID_A}", Target("cn-shanghai-finance-1", ID_A)),
        (f"{ID_A} # a comment with, commas: and colons", Target("cn-hangzhou", ID_A)),
        ("i-12345678", Target("cn-hangzhou", "i-12345678")),
        ("i-" + "z" * 32, Target("cn-hangzhou", "i-" + "z" * 32)),
    ],
)
def test_each_line_format_gives_its_target(line: str, expected: Target) -> None:
    """Every documented line form (bare id, comma, colon, padding, comments) is read."""
    assert parse(line + "\n").targets == (expected,)


def test_crlf_bom_blank_lines_and_comments_are_ignored_with_line_numbers_kept() -> None:
    """CRLF endings, a UTF-8 BOM, blank and comment lines do not disturb targets or numbering."""
    data = (
        f"\ufeff# fleet\r\n\r\n{ID_A}\r\n   # indented comment\r\ncn-beijing:{ID_B}\r\n{ID_A}\r\n"
    )
    result = parse(data.encode("utf-8"))
    assert result.targets == (Target("cn-hangzhou", ID_A), Target("cn-beijing", ID_B))
    assert [result.location(i) for i in range(2)] == ["hosts.txt:3", "hosts.txt:5"]
    assert result.duplicates == (
        Duplicate(Target("cn-hangzhou", ID_A), "hosts.txt:6", "hosts.txt:3"),
    )


def test_str_input_is_accepted_like_bytes() -> None:
    """Text given as str (stdin already decoded) parses exactly like the same bytes."""
    data = f"{ID_A}\ncn-beijing,{ID_B}\n"
    assert parse(data) == parse(data.encode())


def test_duplicates_keep_the_first_and_report_every_repeat() -> None:
    """A target repeated in any written form is dropped and reported against its first line."""
    data = f"{ID_A}\ncn-hangzhou,{ID_A}\ncn-hangzhou:{ID_A}\ncn-beijing,{ID_A}\n"
    result = parse(data)
    assert result.targets == (Target("cn-hangzhou", ID_A), Target("cn-beijing", ID_A))
    assert [(d.location, d.first_location) for d in result.duplicates] == [
        ("hosts.txt:2", "hosts.txt:1"),
        ("hosts.txt:3", "hosts.txt:1"),
    ]


def test_targets_keep_input_order_not_sorted() -> None:
    """Targets come back in first-seen order, whatever their region or id."""
    data = f"cn-beijing,{ID_C}\n{ID_B}\nap-southeast-1,{ID_A}\n"
    assert [t.instance_id for t in parse(data).targets] == [ID_C, ID_B, ID_A]


@pytest.mark.parametrize(
    ("data", "location", "problem"),
    [
        (f"{ID_A}\nfoo\n", "hosts.txt:2", "bad instance id 'foo'"),
        (f"{ID_A}\ni-SHOUTING1\n", "hosts.txt:2", "bad instance id 'i-SHOUTING1'"),
        (f"{ID_A}\ni-short\n", "hosts.txt:2", "bad instance id 'i-short'"),
        (f"{ID_A}\ncn-nowhere,{ID_B}\n", "hosts.txt:2", "unknown region 'cn-nowhere'"),
        (f"{ID_A}\nCN-Beijing,{ID_B}\n", "hosts.txt:2", "malformed region 'CN-Beijing'"),
        (f"cn--beijing,{ID_B}\n", "hosts.txt:1", "malformed region 'cn--beijing'"),
        (f"cn-beijing,{ID_A},x\n", "hosts.txt:1", "too many fields in"),
        (f"cn-beijing:{ID_A}:x\n", "hosts.txt:1", "too many fields in"),
        (f",{ID_A}\n", "hosts.txt:1", "missing region"),
        (f"{ID_A},cn-beijing\n", "hosts.txt:1", "region and id swapped"),
        (f"cn-beijing {ID_A}\n", "hosts.txt:1", "separate region and id with ',' or ':'"),
        (f"{ID_A}#no-space-before-hash\n", "hosts.txt:1", "bad instance id"),
        ("\n\n\ncn-beijing,\n", "hosts.txt:4", "bad instance id ''"),
    ],
)
def test_bad_line_names_file_line_and_token(data: str, location: str, problem: str) -> None:
    """Each kind of bad line raises TargetError at its exact file:line quoting the culprit."""
    error = error_of(data)
    assert error.location == location
    assert problem in error.problem
    assert str(error).startswith(f"{location}: ")


def test_bare_id_without_default_region_is_refused() -> None:
    """A bare id needs `--region`; the message says how to fix it."""
    error = error_of(f"cn-beijing,{ID_A}\n{ID_B}\n", default=None)
    assert (error.location, error.problem) == (
        "hosts.txt:2",
        "no region: give region,i-... or --region",
    )


def test_region_prefixed_lines_need_no_default_region() -> None:
    """Lines that name their region parse without `--region`."""
    assert parse(f"cn-beijing,{ID_A}\n", default=None).targets == (Target("cn-beijing", ID_A),)


def test_unknown_default_region_is_refused_up_front() -> None:
    """A `--region` that is not a known region is an error located at `--region`."""
    error = error_of(f"{ID_A}\n", default="cn-nowhere")
    assert (error.location, error.problem) == ("--region", "unknown region 'cn-nowhere'")


def test_empty_known_regions_checks_region_shape_only() -> None:
    """With no region list every well-formed region is accepted, a malformed one still is not."""
    result = parse_target_text(
        f"xx-new-region-9,{ID_A}\n", source="f", default_region=None, known_regions=frozenset()
    )
    assert result.targets == (Target("xx-new-region-9", ID_A),)
    with pytest.raises(TargetError, match="malformed region"):
        parse_target_text(
            f"Bad_Region,{ID_A}\n", source="f", default_region=None, known_regions=frozenset()
        )


@pytest.mark.parametrize(
    "data",
    [b"", b"\n\n", b"# only a comment\n", b"\xef\xbb\xbf# bom and comment\r\n\r\n   \t\n"],
)
def test_file_without_targets_is_an_error_at_the_file(data: bytes) -> None:
    """An empty or comment-only file is refused, located at the file itself."""
    error = error_of(data)
    assert (error.location, error.problem) == (
        "hosts.txt",
        "no targets (the file is empty or only comments)",
    )


def test_binary_junk_is_refused_on_line_one_and_printed_safely() -> None:
    """Binary data fails on its line with the bytes escaped onto one printable line."""
    error = error_of(b"\x00\xff\xfe\x01\n\x07junk\x1b[31m")
    assert error.location == "hosts.txt:1"
    assert "not UTF-8" in error.problem
    assert "\\x00\\xff\\xfe\\x01" in error.problem
    assert error.problem.isprintable()


def test_nul_byte_in_valid_utf8_counts_as_binary() -> None:
    """A NUL character is binary junk even when the bytes decode as UTF-8."""
    error = error_of(f"{ID_A}\n{ID_B}\x00\n".encode())
    assert error.location == "hosts.txt:2"
    assert "binary data (NUL byte)" in error.problem
    assert "\\x00" in error.problem


def test_invalid_utf8_on_line_three_is_reported_on_line_three() -> None:
    """Undecodable bytes are located on their own line, not the file's first."""
    error = error_of(f"{ID_A}\n# ok\n".encode() + b"cn-beijing,i-\xe9t\xe9\n" + ID_B.encode())
    assert error.location == "hosts.txt:3"
    assert "not UTF-8" in error.problem
    assert "\\xe9" in error.problem


def test_first_error_in_line_order_wins_over_a_later_decode_error() -> None:
    """A bad id before undecodable bytes is the error reported: validation runs in line order."""
    error = error_of(b"i-aaaaaaaa\nnot-an-id\n\xff\xff\n")
    assert (error.location, error.problem) == ("hosts.txt:2", "bad instance id 'not-an-id'")


def test_long_and_control_tokens_are_truncated_and_escaped() -> None:
    """A long token is cut to about 40 characters and control characters are escaped."""
    error = error_of("i-" + "\x1b" * 200 + "\n")
    assert len(error.problem) < 80
    assert error.problem.isprintable()
    assert error.problem.endswith("...")


@pytest.mark.parametrize("count", [1, 49, 50, 51, 10_000])
def test_many_lines_parse_in_order_and_count(count: int) -> None:
    """Generated files of edge sizes come back complete and in order."""
    ids = [f"i-{n:020x}" for n in range(count)]
    result = parse("\n".join(f"cn-beijing,{i}" for i in ids))
    assert [t.instance_id for t in result.targets] == ids
    assert result.location(count - 1) == f"hosts.txt:{count}"


def test_input_over_a_mebibyte_keeps_line_numbers_across_blocks() -> None:
    """A file split into blocks internally still reports exact line numbers past the first block."""
    count = 60_000  # about 2 MiB of text: the parser reads it in 1 MiB blocks
    lines = [f"cn-beijing,i-{n:020x}" for n in range(count)]
    result = parse("\n".join(lines) + "\n")
    assert len(result.targets) == count
    assert [result.location(i) for i in (0, 30_000, count - 1)] == [
        "hosts.txt:1",
        "hosts.txt:30001",
        f"hosts.txt:{count}",
    ]
    lines[count - 2] = "cn-beijing,i-BAD"
    error = error_of("\n".join(lines))
    assert (error.location, error.problem) == (f"hosts.txt:{count - 1}", "bad instance id 'i-BAD'")


@pytest.mark.parametrize("enabled", [True, False])
def test_parsing_restores_the_garbage_collector_state(enabled: bool) -> None:
    """The collector pause around a parse leaves gc enabled or disabled as it was, even on error."""
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        parse(f"{ID_A}\n")
        with pytest.raises(TargetError):
            parse("junk\n")
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_instance_id_flags_parse_with_their_own_locations() -> None:
    """`--instance-id` values accept all three forms and report duplicates by flag position."""
    result = parse_instance_ids(
        [ID_A, f"cn-beijing:{ID_B}", f" cn-hangzhou,{ID_A} "],
        default_region="cn-hangzhou",
        known_regions=KNOWN,
    )
    assert result.targets == (Target("cn-hangzhou", ID_A), Target("cn-beijing", ID_B))
    assert result.duplicates == (
        Duplicate(Target("cn-hangzhou", ID_A), "--instance-id #3", "--instance-id #1"),
    )
    assert result.location(1) == "--instance-id #2"


@pytest.mark.parametrize(
    ("ids", "location", "problem"),
    [
        ([ID_A, "i-x"], "--instance-id #2", "bad instance id 'i-x'"),
        ([ID_A, ""], "--instance-id #2", "bad instance id ''"),
        (["# a comment"], "--instance-id #1", "bad instance id '# a comment'"),
        ([f"cn-nowhere:{ID_A}"], "--instance-id #1", "unknown region 'cn-nowhere'"),
    ],
)
def test_bad_instance_id_flag_is_located(ids: list[str], location: str, problem: str) -> None:
    """A bad `--instance-id` value names its flag position; a comment is not skipped."""
    with pytest.raises(TargetError) as caught:
        parse_instance_ids(ids, default_region="cn-hangzhou", known_regions=KNOWN)
    assert (caught.value.location, caught.value.problem) == (location, problem)


def test_no_instance_id_flags_give_an_empty_list() -> None:
    """Zero `--instance-id` flags is not an error by itself (a file may give the targets)."""
    result = parse_instance_ids([], default_region=None, known_regions=KNOWN)
    assert (result.targets, result.duplicates) == ((), ())


def test_merge_keeps_order_and_reports_cross_list_duplicates_against_the_first() -> None:
    """Merging drops targets already given by an earlier list and names both locations."""
    file_list = parse(f"{ID_A}\n{ID_B}\n{ID_A}\n")
    flags = parse_instance_ids(
        [ID_C, f"cn-hangzhou:{ID_B}", ID_C], default_region="cn-hangzhou", known_regions=KNOWN
    )
    merged = merge_targets(file_list, flags)
    assert [t.instance_id for t in merged.targets] == [ID_A, ID_B, ID_C]
    assert [merged.location(i) for i in range(3)] == [
        "hosts.txt:1",
        "hosts.txt:2",
        "--instance-id #1",
    ]
    assert {(d.location, d.first_location) for d in merged.duplicates} == {
        ("hosts.txt:3", "hosts.txt:1"),
        ("--instance-id #2", "hosts.txt:2"),
        ("--instance-id #3", "--instance-id #1"),
    }


def test_merge_of_a_merged_list_keeps_every_location() -> None:
    """Merging is associative for targets and locations."""
    a = parse(f"{ID_A}\n")
    b = parse_instance_ids([ID_B], default_region="cn-hangzhou", known_regions=KNOWN)
    c = parse_target_text(
        f"{ID_C}\n{ID_A}\n", source="more.txt", default_region="cn-hangzhou", known_regions=KNOWN
    )
    merged = merge_targets(merge_targets(a, b), c)
    assert merged.targets == merge_targets(a, b, c).targets
    assert [merged.location(i) for i in range(3)] == [
        "hosts.txt:1",
        "--instance-id #1",
        "more.txt:1",
    ]
    assert merged.duplicates == (
        Duplicate(Target("cn-hangzhou", ID_A), "more.txt:2", "hosts.txt:1"),
    )


def test_merge_of_hand_built_lists_keeps_their_targets() -> None:
    """Lists built without locations still merge, their targets numbered `#N`."""
    one = TargetList((Target("cn-beijing", ID_A),))
    two = TargetList((Target("cn-beijing", ID_B), Target("cn-beijing", ID_A)))
    merged = merge_targets(one, two)
    assert merged.targets == (Target("cn-beijing", ID_A), Target("cn-beijing", ID_B))
    assert merged.duplicates == (Duplicate(Target("cn-beijing", ID_A), "#2", "#1"),)


def test_merge_with_only_empty_lists_is_empty() -> None:
    """Merging nothing gives an empty list."""
    assert merge_targets().targets == ()
    assert merge_targets(TargetList(()), TargetList(())).targets == ()


def test_patterns_match_documented_examples() -> None:
    """The exported patterns accept real ids and regions and refuse near misses."""
    assert INSTANCE_ID_PATTERN.fullmatch("i-bp185dy2o3o6neg1nj7b")
    assert not INSTANCE_ID_PATTERN.fullmatch("i-bp185dy")  # 7 characters after "i-"
    assert not INSTANCE_ID_PATTERN.fullmatch("I-BP185DY2O3O6NEG1NJ7B")
    for region in ("cn-hangzhou", "ap-southeast-1", "cn-shanghai-finance-1", "us-east-1"):
        assert REGION_PATTERN.fullmatch(region)
    for bad in ("cn_hangzhou", "-cn", "cn-", "1cn", "cn hangzhou"):
        assert not REGION_PATTERN.fullmatch(bad)


_REGIONS = st.sampled_from(sorted(KNOWN))
_IDS = st.from_regex(r"i-[a-z0-9]{8,12}", fullmatch=True)
_ENTRY = st.tuples(_REGIONS, _IDS, st.sampled_from(["{r},{i}", "{r}:{i}", " {r} , {i} # c"]))


@given(st.lists(_ENTRY, max_size=60), st.lists(st.sampled_from(["", "# x", "  "]), max_size=5))
def test_parse_keeps_each_distinct_target_once_in_first_seen_order(
    entries: list[tuple[str, str, str]], filler: list[str]
) -> None:
    """Whatever the mix of forms and repeats, each distinct target is kept once, first-seen first."""
    lines = [*filler, *(form.format(r=r, i=i) for r, i, form in entries)]
    expected = list(dict.fromkeys(Target(r, i) for r, i, _ in entries))
    if not expected:
        with pytest.raises(TargetError, match="no targets"):
            parse("\n".join(lines))
        return
    result = parse("\r\n".join(lines))
    assert list(result.targets) == expected
    assert len(result.targets) + len(result.duplicates) == len(entries)
    for index in range(len(result.targets)):
        line = int(result.location(index).rsplit(":", 1)[1])
        assert lines[line - 1].replace(" ", "").startswith(result.targets[index].region)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_a_located_target_error(data: bytes) -> None:
    """No input crashes the parser: it returns targets or raises TargetError with a location."""
    try:
        result = parse(data)
    except TargetError as exc:
        error = exc
    else:
        assert result.targets
        return
    assert error.location.startswith("hosts.txt")
    assert error.problem.isprintable()

"""The emulator's query decoding gives what `unquote_plus` gives, for any query."""

from __future__ import annotations

from urllib.parse import quote, unquote_plus

from hypothesis import example, given
from hypothesis import strategies as st

from fanout.emulator.wire import parse_form

# Encoded text as clients send it, and as they should not: valid escapes of any byte (`%25`
# among them, lower- and uppercase hex), stray `%` and `+`, raw non-ASCII; and a small alphabet
# of escapes and hex digits that, decoded next to a `%`, would spell another escape.
_PIECE = (
    st.text(max_size=6).map(lambda t: quote(t, safe=""))
    | st.text(max_size=6).map(lambda t: quote(t, safe="").lower())
    | st.sampled_from(["%", "%2", "%zz", "+", "%2B", "\u00e9", "%C3", "%a9"])
    | st.text(st.characters(codec="ascii", exclude_characters="&="), max_size=4)
)
_TRICKY = st.sampled_from(["%", "%25", "%41", "%34", "%31", "%61", "41", "4", "1", "%2C", "+"])
_ENCODED = st.lists(_PIECE, max_size=12).map("".join) | st.lists(_TRICKY, max_size=8).map("".join)


@given(st.lists(st.tuples(_ENCODED, _ENCODED), max_size=4))
@example([("%2541%41", "%%34%31%41"), ("%2561%61", "%%34%2C%2c")])
def test_parse_form_decodes_as_unquote_plus(pairs: list[tuple[str, str]]) -> None:
    """Every key and value decodes exactly as `unquote_plus(errors="replace")` decodes it."""
    raw = "&".join(f"{key}={value}" for key, value in pairs)
    expected = {
        unquote_plus(k, errors="replace"): unquote_plus(v, errors="replace") for k, v in pairs
    }
    assert parse_form(raw) == expected


def test_parse_form_decodes_a_json_array_of_ids() -> None:
    """DescribeInstances' InstanceIds, percent-encoded, comes back as the JSON text sent."""
    ids = '["i-bp1","i-bp2"]'
    assert parse_form(f"InstanceIds={quote(ids, safe='~')}&RegionId=cn-hangzhou") == {
        "InstanceIds": ids,
        "RegionId": "cn-hangzhou",
    }

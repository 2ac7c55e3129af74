"""The Range and conditional-request rules of RFC 9110, without HTTP."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.ranges import ByteRange, Unsatisfiable, http_date, parse_range, plan_response

ETAG = '"abc-1"'
MTIME = 1_700_000_000.0


@pytest.mark.parametrize(
    "header, expected",
    [
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=100-", ByteRange(100, 1000)),
        ("bytes=-100", ByteRange(900, 1000)),
        ("bytes=-5000", ByteRange(0, 1000)),
        ("bytes=990-5000", ByteRange(990, 1000)),
        ("bytes=999-999", ByteRange(999, 1000)),
        ("Bytes = 5-9", ByteRange(5, 10)),
        (" bytes=5-9 ,", ByteRange(5, 10)),
    ],
)
def test_single_ranges(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    "header",
    [None, "", "bytes", "bytes=", "bytes=-", "items=0-5", "bytes=5-1", "bytes=a-b", "bytes=1-2-3",
     "bytes=0-1,5-6", "bytes=+1-2", "bytes=１-２", "bytes=0x10-20", "bytes=" + "9" * 2000],
)
def test_ranges_a_server_ignores(header):
    """Malformed, other units and multi-range: RFC 9110 lets us send the whole body."""
    assert parse_range(header, 1000) is None


@pytest.mark.parametrize("header, size", [("bytes=1000-", 1000), ("bytes=5000-6000", 1000), ("bytes=-0", 1000), ("bytes=-5", 0), ("bytes=0-", 0)])
def test_unsatisfiable(header, size):
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


@given(size=st.integers(0, 10**12), first=st.integers(0, 10**13), last=st.one_of(st.none(), st.integers(0, 10**13)))
def test_range_parser_properties(size, first, last):
    header = f"bytes={first}-{'' if last is None else last}"
    try:
        selected = parse_range(header, size)
    except Unsatisfiable:
        assert first >= size
        return
    if selected is None:
        assert last is not None and last < first
        return
    assert 0 <= selected.start < selected.end <= size
    assert selected.start == first
    assert selected.end == (size if last is None else min(last + 1, size))
    assert selected.content_range(size) == f"bytes {selected.start}-{selected.end - 1}/{size}"


@given(size=st.integers(0, 10**12), suffix=st.integers(0, 10**13))
def test_suffix_range_properties(size, suffix):
    try:
        selected = parse_range(f"bytes=-{suffix}", size)
    except Unsatisfiable:
        assert suffix == 0 or size == 0
        return
    assert selected == ByteRange(max(0, size - suffix), size)


@given(st.text(max_size=60))
def test_any_header_gives_a_range_inside_or_nothing(header):
    try:
        selected = parse_range(header, 500)
    except Unsatisfiable:
        return
    assert selected is None or 0 <= selected.start < selected.end <= 500


def plan(**headers):
    return plan_response({k.replace("_", "-"): v for k, v in headers.items()}, 1000, ETAG, MTIME)


def test_plain_get_is_whole_body():
    assert (plan().status, plan().byte_range) == (200, ByteRange(0, 1000))


def test_if_none_match():
    assert plan(If_None_Match=ETAG).status == 304
    assert plan(If_None_Match='W/"abc-1"').status == 304  # weak comparison
    assert plan(If_None_Match='"other", ' + ETAG).status == 304
    assert plan(If_None_Match="*").status == 304
    assert plan(If_None_Match='"other"').status == 200


def test_if_none_match_wins_over_if_modified_since():
    assert plan(If_None_Match='"other"', If_Modified_Since=http_date(MTIME + 10)).status == 200


def test_if_modified_since():
    assert plan(If_Modified_Since=http_date(MTIME)).status == 304
    assert plan(If_Modified_Since=http_date(MTIME - 10)).status == 200
    assert plan(If_Modified_Since="not a date").status == 200


def test_if_match_and_if_unmodified_since():
    assert plan(If_Match='"other"').status == 412
    assert plan(If_Match='W/"abc-1"').status == 412  # strong comparison
    assert plan(If_Match=ETAG, Range="bytes=0-9").status == 206
    assert plan(If_Unmodified_Since=http_date(MTIME - 10)).status == 412
    assert plan(If_Unmodified_Since=http_date(MTIME)).status == 200


def test_range_and_if_range():
    assert plan(Range="bytes=10-19").byte_range == ByteRange(10, 20)
    assert plan(Range="bytes=10-19", If_Range=ETAG).status == 206
    assert plan(Range="bytes=10-19", If_Range='"stale"').status == 200
    assert plan(Range="bytes=10-19", If_Range='W/"abc-1"').status == 200  # weak tags never match If-Range
    assert plan(Range="bytes=10-19", If_Range=http_date(MTIME)).status == 206
    assert plan(Range="bytes=10-19", If_Range=http_date(MTIME + 1)).status == 200
    assert plan(Range="bytes=5000-").status == 416
    assert plan(Range="bytes=5000-", If_Range='"stale"').status == 200
    assert plan(Range="bytes=0-1,4-5").status == 200

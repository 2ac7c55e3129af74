"""The Range and conditional-request rules of RFC 9110, without HTTP."""

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.ranges import ByteRange, Unsatisfiable, http_date, parse_range, plan_response

ETAG = '"abc-1"'
MTIME = 1_700_000_000.0
# The responses' Date: an hour after MTIME, unless a test says otherwise.
DATE = MTIME + 3600


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


def plan(method="GET", modified=MTIME, date=DATE, **headers):
    return plan_response({k.replace("_", "-"): v for k, v in headers.items()}, method, 1000, ETAG, modified, date)


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


def test_head_ignores_range():
    """RFC 9110 §14.2: only GET defines Range; a HEAD gets the whole representation's 200, or 416 never."""
    head = plan("HEAD", Range="bytes=10-19")
    assert (head.status, head.byte_range) == (200, ByteRange(0, 1000))
    assert plan("HEAD", Range="bytes=5000-").status == 200
    assert plan("HEAD", Range="bytes=10-19", If_Range=ETAG).status == 200
    assert plan("HEAD", If_None_Match=ETAG).status == 304  # preconditions still apply
    assert plan("HEAD", If_Match='"other"').status == 412


def test_a_future_modification_time_is_sent_as_the_date():
    """RFC 9110 §8.8.2.1: Last-Modified never passes the Date; the date preconditions go by what was sent."""
    future = DATE + 86400
    assert plan(modified=future).last_modified == int(DATE)
    assert plan().last_modified == int(MTIME)
    assert plan(modified=future, If_Modified_Since=http_date(DATE)).status == 304
    assert plan(modified=future, If_Modified_Since=http_date(DATE - 1)).status == 200
    assert plan(modified=future, If_Unmodified_Since=http_date(DATE)).status == 200
    assert plan(modified=future, If_Unmodified_Since=http_date(DATE - 1)).status == 412
    # A Last-Modified held back to the Date is a weak validator: If-Range by that date sends everything.
    assert plan(modified=future, Range="bytes=0-9", If_Range=http_date(DATE)).status == 200
    assert plan(modified=future, Range="bytes=0-9", If_Range=ETAG).status == 206


def test_a_date_of_the_response_second_is_weak_for_if_range():
    """RFC 9110 §8.8.2.2: a date within the Date's own second may hide a second change, so If-Range by it fails."""
    assert plan(date=MTIME + 0.5, Range="bytes=0-9", If_Range=http_date(MTIME)).status == 200
    assert plan(date=MTIME + 1, Range="bytes=0-9", If_Range=http_date(MTIME)).status == 206


# ---------------------------------------------------------------- RFC 9110 §13.2.2 as an oracle
#
# Each generated header value comes with what RFC 9110 says it means, worked
# out from how it was built, never by parsing it; ``rfc9110_plan`` then
# evaluates those meanings in §13.2.2's order. plan_response must agree on
# every request.

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FIRST_SECOND = int((datetime(1, 1, 1, tzinfo=timezone.utc) - EPOCH).total_seconds())
LAST_SECOND = int((datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc) - EPOCH).total_seconds())
# Characters an opaque-tag may hold (etagc): anything visible but DQUOTE, and obs-text.
ETAGC = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters='"\x7f')
# Text that can be neither an entity tag nor "*" nor a byte range: no DQUOTE, '*' or '='.
GARBAGE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters='"*=\x7f'), max_size=20)


@dataclass(frozen=True)
class Field:
    """A header value as sent, and its meaning: a date in seconds, a tag list, a range; None when invalid."""

    text: str
    meaning: object = None


def as_utc(seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def imf_fixdate(t: datetime) -> str:
    return f"{DAYS[t.weekday()]}, {t.day:02} {MONTHS[t.month - 1]} {t.year:04} {t:%H:%M:%S} GMT"


def rfc850_date(t: datetime) -> str:
    return f"{LONG_DAYS[t.weekday()]}, {t.day:02}-{MONTHS[t.month - 1]}-{t.year % 100:02} {t:%H:%M:%S} GMT"


def asctime_date(t: datetime) -> str:
    return f"{DAYS[t.weekday()]} {MONTHS[t.month - 1]} {t.day:2} {t:%H:%M:%S} {t.year:04}"


# Near misses of an HTTP-date, each invalid under RFC 9110 §5.6.7 (a recipient must ignore the field).
BROKEN_DATES = [
    lambda t: imf_fixdate(t).replace("GMT", "+0000"),
    lambda t: imf_fixdate(t).replace("GMT", "UTC"),
    lambda t: imf_fixdate(t).lower(),
    lambda t: imf_fixdate(t)[5:],  # no day name
    lambda t: imf_fixdate(t).replace(f" {t.year:04} ", f" {t.year % 100:02} "),
    lambda t: f"{imf_fixdate(t)}, {imf_fixdate(t)}",  # a list of dates
    lambda t: f"{DAYS[t.weekday()]}, {t.day} {MONTHS[t.month - 1]} {t.year:04} {t:%H:%M:%S} GMT" if t.day < 10 else "",
    lambda t: "Sun, 31 Feb 2021 10:00:00 GMT",
    lambda t: "Sun, 06 Nov 1994 24:00:00 GMT",
    lambda t: "Sun, 06 Nov 0000 08:49:37 GMT",
]


@st.composite
def http_dates(draw, near: int) -> Field:
    """An HTTP-date in any of its three forms, or a near miss; dates cluster around ``near`` to hit the boundaries."""
    seconds = draw(st.one_of(st.integers(-2, 2).map(lambda d: near + d), st.integers(FIRST_SECOND, LAST_SECOND)))
    t = as_utc(seconds)
    this_year = time.gmtime().tm_year
    forms = [imf_fixdate, asctime_date]
    # rfc850's two-digit year is read as the nearest year not over 50 years ahead: stay clear of the edge.
    if abs(t.year - this_year) < 40:
        forms.append(rfc850_date)
    if draw(st.integers(0, 3)) == 0:
        return Field(draw(st.sampled_from(BROKEN_DATES))(t) or draw(GARBAGE))
    return Field(draw(st.sampled_from(forms))(t), seconds)


@st.composite
def entity_tags(draw, current: str) -> tuple[str, tuple[bool, str]]:
    opaque = draw(st.one_of(st.just(current), st.text(ETAGC, max_size=8)))
    weak = draw(st.booleans())
    return ("W/" if weak else "") + f'"{opaque}"', (weak, opaque)


@st.composite
def etag_lists(draw, current: str) -> Field:
    """An If-Match/If-None-Match value; meaning "*", a list of (weak, opaque), or () for text with no tag at all."""
    kind = draw(st.sampled_from(["star", "list", "garbage"]))
    if kind == "star":
        return Field(draw(st.sampled_from(["*", " * "])).strip(), "*")
    if kind == "garbage":
        return Field(draw(GARBAGE).strip(), ())
    tags = draw(st.lists(entity_tags(current), min_size=1, max_size=4))
    # A list may have empty elements and whitespace around its commas.
    separators = draw(st.lists(st.sampled_from([",", ", ", " ,", ",,", ", ,"]), min_size=len(tags), max_size=len(tags)))
    text = "".join(tag + sep for (tag, _), sep in zip(tags, separators))[: -len(separators[-1])]
    return Field(text, tuple(meaning for _, meaning in tags))


def digits(n: int) -> st.SearchStrategy[str]:
    return st.sampled_from(["", "0", "00"]).map(lambda zeros: zeros + str(n))


@st.composite
def byte_positions(draw, size: int) -> int:
    return draw(st.one_of(st.sampled_from([0, 1, size - 1, size, size + 1]).filter(lambda n: n >= 0),
                          st.integers(0, size + 10), st.integers(0, size + 10), st.integers(0, 10**13)))


@st.composite
def range_specs(draw, size: int) -> tuple[str, tuple]:
    """One range-spec and its meaning: ("int", first, last or None), ("suffix", length), or ("invalid",)."""
    if draw(st.booleans()):
        length = draw(byte_positions(size))
        return "-" + draw(digits(length)), ("suffix", length)
    first = draw(byte_positions(size))
    last = draw(st.one_of(st.none(), byte_positions(size)))
    text = draw(digits(first)) + "-" + ("" if last is None else draw(digits(last)))
    return text, ("invalid",) if last is not None and last < first else ("int", first, last)


@st.composite
def range_fields(draw, size: int) -> Field:
    """A Range value; meaning is the list of its range-specs, or None where it is not a valid bytes range."""
    kind = draw(st.sampled_from(["bytes"] * 4 + ["other unit", "garbage"]))
    if kind == "garbage":
        return Field(draw(GARBAGE))
    count = draw(st.sampled_from([1, 1, 1, 2, 3]))
    specs = draw(st.lists(range_specs(size), min_size=count, max_size=count))
    text = ",".join(draw(st.sampled_from(["{}", "{},", " {}", "{} ", ",{}"])).format(spec) for spec, _ in specs)
    if kind == "other unit":
        return Field(draw(st.sampled_from(["items", "pages", "byte"])) + "=" + text)
    unit = draw(st.sampled_from(["bytes", "Bytes", "BYTES"]))  # range units are case-insensitive (§14.1)
    return Field(f"{unit}={text}", [meaning for _, meaning in specs])


@dataclass(frozen=True)
class Representation:
    size: int
    opaque: str
    last_modified: float
    date: float  # the response's

    @property
    def etag(self) -> str:
        return f'"{self.opaque}"'

    @property
    def modified_second(self) -> int:
        """Last-Modified as sent: whole seconds, and never past the Date (§8.8.2.1)."""
        return min(math.floor(self.last_modified), math.floor(self.date))

    @property
    def modified_second_is_strong(self) -> bool:
        """Whether Last-Modified is a strong validator: a second or more before the Date (§8.8.2.2)."""
        return self.modified_second < math.floor(self.date)


MODIFIED_TIMES = st.one_of(st.integers(0, 2**33).map(float), st.floats(0, 2**33, allow_nan=False))


@st.composite
def representations(draw) -> Representation:
    """A representation and its response's Date: mostly well after its change, at times in the
    same second or before it (a modification time in the future)."""
    last_modified = draw(MODIFIED_TIMES)
    date = draw(st.one_of(
        st.floats(1, 10**6).map(lambda after: last_modified + after),
        st.floats(-2, 2).map(lambda near: max(0.0, last_modified + near)),
        MODIFIED_TIMES,
    ))
    return Representation(
        size=draw(st.one_of(st.integers(0, 2000), st.integers(0, 10**12))),
        opaque=draw(st.text("0123456789abcdef-", min_size=1, max_size=20)),
        last_modified=last_modified,
        date=date,
    )


@st.composite
def requests(draw) -> tuple[str, Representation, dict[str, Field]]:
    """A method, a representation and the fields of a request for it; preconditions are rare enough that many get past them all."""
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD"]))
    rep = draw(representations())
    near = rep.modified_second
    if_range = st.one_of(http_dates(near), entity_tags(rep.opaque).map(lambda t: Field(*t)), GARBAGE.map(Field))
    # Each field with its chance of being sent, in sixths.
    strategies = {
        "If-Match": (etag_lists(rep.opaque), 1),
        "If-Unmodified-Since": (http_dates(near), 1),
        "If-None-Match": (etag_lists(rep.opaque), 1),
        "If-Modified-Since": (http_dates(near), 1),
        "If-Range": (if_range, 2),
        "Range": (range_fields(rep.size), 5),
    }
    return method, rep, {
        name: draw(strategy) for name, (strategy, sixths) in strategies.items() if draw(st.integers(1, 6)) <= sixths
    }


def tag_list_matches(meaning, rep: Representation, weak_comparison: bool) -> bool:
    if meaning == "*":
        return True
    return any(opaque == rep.opaque and (weak_comparison or not weak) for weak, opaque in meaning)


def rfc9110_plan(method: str, rep: Representation, fields: dict[str, Field]) -> tuple[int, ByteRange | None]:
    """What RFC 9110 has a GET or HEAD answer, by §13.2.2's steps, with this project's policy where it leaves a choice."""
    whole = (200, ByteRange(0, rep.size))
    # Step 1: If-Match, strong comparison; else step 2: If-Unmodified-Since, when a valid date.
    if "If-Match" in fields:
        if not tag_list_matches(fields["If-Match"].meaning, rep, weak_comparison=False):
            return 412, None
    elif "If-Unmodified-Since" in fields and fields["If-Unmodified-Since"].meaning is not None:
        if rep.modified_second > fields["If-Unmodified-Since"].meaning:
            return 412, None
    # Step 3: If-None-Match, weak comparison; else step 4: If-Modified-Since, when a valid date.
    if "If-None-Match" in fields:
        if tag_list_matches(fields["If-None-Match"].meaning, rep, weak_comparison=True):
            return 304, None
    elif "If-Modified-Since" in fields and fields["If-Modified-Since"].meaning is not None:
        if rep.modified_second <= fields["If-Modified-Since"].meaning:
            return 304, None
    # Step 5: Range, on a GET only (§14.2), unless an If-Range validator fails to match
    # (§13.1.5: tags strongly, dates exactly and only when strong, §8.8.2.2).
    if method != "GET" or "Range" not in fields:
        return whole
    if "If-Range" in fields:
        validator = fields["If-Range"].meaning
        if isinstance(validator, tuple):
            holds = validator == (False, rep.opaque)
        else:
            holds = validator is not None and validator == rep.modified_second and rep.modified_second_is_strong
        if not holds:
            return whole
    specs = fields["Range"].meaning
    # Not a valid bytes range, or several ranges: the server may ignore it (§14.2), and this one does.
    if specs is None or len(specs) != 1 or specs[0] == ("invalid",):
        return whole
    spec = specs[0]
    if spec[0] == "suffix":
        # §14.1.1 calls a non-zero suffix of an empty representation satisfiable, but no
        # Content-Range can name its zero bytes: this project answers 416, as for "-0".
        if spec[1] == 0 or rep.size == 0:
            return 416, None
        return 206, ByteRange(max(0, rep.size - spec[1]), rep.size)
    _, first, last = spec
    if first >= rep.size:
        return 416, None
    return 206, ByteRange(first, rep.size if last is None else min(last + 1, rep.size))


@settings(max_examples=400, deadline=1000)
@given(requests())
def test_plan_response_follows_rfc9110_evaluation_order(request):
    """plan_response gives the status and bytes RFC 9110 §13.2.2 prescribes, for any mix of
    conditional headers, validators, Range values, sizes, methods and Dates."""
    method, rep, fields = request
    planned = plan_response({name: field.text for name, field in fields.items()}, method, rep.size, rep.etag,
                            rep.last_modified, rep.date)
    assert (planned.status, planned.byte_range) == rfc9110_plan(method, rep, fields)
    assert planned.last_modified == rep.modified_second


@pytest.mark.parametrize("form", [imf_fixdate, rfc850_date, asctime_date])
def test_all_three_http_date_forms_are_read(form):
    """RFC 9110 §5.6.7: a recipient must accept IMF-fixdate, rfc850-date and asctime-date alike."""
    t = as_utc(int(MTIME))
    assert plan(If_Modified_Since=form(t)).status == 304
    assert plan(If_Unmodified_Since=form(t - timedelta(seconds=1))).status == 412
    assert plan(Range="bytes=0-0", If_Range=form(t)).status == 206

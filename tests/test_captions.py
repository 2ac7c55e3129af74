"""SRT and WebVTT sources as found in the wild, converted and read back with webvtt-py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import types

import pytest
import webvtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captions.cache import CaptionCache
from captions.convert import MAX_INPUT_BYTES, CaptionError, decode_subtitle_bytes, srt_to_vtt, to_vtt, vtt_to_vtt
from tests.subtitle_lines import LEGACY_SUBTITLES


def read_back(vtt: str) -> list[tuple[str, str, str]]:
    """(start, end, text) of every cue, read by webvtt-py in strict mode."""
    assert vtt.startswith("WEBVTT\n\n")
    parsed = webvtt.from_string(vtt, strict=True)
    # Every timing line written is a cue read back.
    assert len(parsed.captions) == vtt.count("-->")
    return [(c.start, c.end, c.raw_text) for c in parsed.captions]


def settings_of(vtt: str) -> list[str]:
    return [str(c.settings) for c in webvtt.from_string(vtt, strict=True).captions]


def srt(*cues: str, newline: str = "\n") -> str:
    """An SRT file of numbered cues, each given as "timing\\ntext"."""
    return "".join(f"{n}\n{cue}\n\n" for n, cue in enumerate(cues, 1)).replace("\n", newline)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fails the test, rather than hanging it, when the body runs too long."""

    def expire(signum, frame):
        raise TimeoutError(f"took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- encodings

FRENCH = srt("00:00:01,000 --> 00:00:02,000\nCafé l’été", "00:00:03,000 --> 00:00:04,000\nÀ bientôt, ça va ?")


def test_cp1252_with_accents_and_curly_apostrophe():
    # Short Western text that charset-normalizer alone reads as mac_latin2.
    data = FRENCH.encode("cp1252")
    assert read_back(srt_to_vtt(data)) == [
        ("00:00:01.000", "00:00:02.000", "Café l’été"),
        ("00:00:03.000", "00:00:04.000", "À bientôt, ça va ?"),
    ]


def test_latin1():
    data = srt("00:00:01,000 --> 00:00:02,000\nÜber die Brücke, schön!").encode("latin-1")
    assert read_back(srt_to_vtt(data))[0][2] == "Über die Brücke, schön!"


def test_cp1250_polish():
    data = srt("00:00:01,000 --> 00:00:02,000\nZażółć gęślą jaźń, mówię ci.").encode("cp1250")
    assert read_back(srt_to_vtt(data))[0][2] == "Zażółć gęślą jaźń, mówię ci."


def test_cp1251_cyrillic():
    data = srt("00:00:01,000 --> 00:00:02,000\nПривет, как дела? Всё хорошо.").encode("cp1251")
    assert read_back(srt_to_vtt(data))[0][2] == "Привет, как дела? Всё хорошо."


def legacy_srt(lines: list[str]) -> str:
    """One cue a second, one line each."""
    return srt(*(f"{srt_time(n * 1000, ',')} --> {srt_time(n * 1000 + 900, ',')}\n{line}" for n, line in enumerate(lines, 1)))


@pytest.mark.parametrize("lang, encoding", list(LEGACY_SUBTITLES))
def test_legacy_code_pages_read_as_their_language(lang, encoding):
    lines = LEGACY_SUBTITLES[lang, encoding]
    data = legacy_srt(lines).encode(encoding)
    assert [text for _, _, text in read_back(srt_to_vtt(data, lang))] == lines
    if (lang, encoding) != ("lv", "cp1257"):
        # Without the tag too; Latvian's letters are also Turkish ones in cp1254 ("Mēs" "Mçs"), so it needs the tag.
        assert [text for _, _, text in read_back(srt_to_vtt(data))] == lines


def test_croatian_cp1250_is_not_read_as_cp1252_even_when_short():
    # "Ðino, doðavola." is letters in cp1252 too (Icelandic ones): the tag decides.
    data = legacy_srt(["Đino, dođavola."]).encode("cp1250")
    assert read_back(to_vtt(data, "srt", "hr"))[0][2] == "Đino, dođavola."
    assert read_back(to_vtt(data, "srt", "hr-HR"))[0][2] == "Đino, dođavola."


def test_a_whole_film_in_cp1250_is_read_whole():
    lines = LEGACY_SUBTITLES["hr", "cp1250"] * 300
    data = legacy_srt(lines).encode("cp1250")
    assert [text for _, _, text in read_back(srt_to_vtt(data, "hr"))] == lines


def test_a_wrong_language_tag_loses_to_the_text():
    # A Russian file filed under "hr": no code page reads it as Croatian.
    lines = LEGACY_SUBTITLES["ru", "cp1251"]
    assert [text for _, _, text in read_back(srt_to_vtt(legacy_srt(lines).encode("cp1251"), "hr"))] == lines


def test_a_file_no_code_page_reads_coherently_is_served_and_logged(caplog):
    noise = bytes(range(0x80, 0x100)).decode("latin-1")
    data = srt(f"00:00:01,000 --> 00:00:02,000\nKeep {noise}").encode("latin-1")
    with caplog.at_level(logging.WARNING, logger="binge.captions"):
        cues = read_back(srt_to_vtt(data, "de"))
    assert len(cues) == 1 and cues[0][2].startswith("Keep ")
    assert "no code page reads the subtitle file as text of one language" in caplog.text


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_byte_order_marks(encoding):
    # Python's utf-16/utf-32 codecs write a mark; utf-16-be gets one by hand.
    data = FRENCH.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    assert read_back(srt_to_vtt(data))[0] == ("00:00:01.000", "00:00:02.000", "Café l’été")


def test_utf16_without_mark():
    data = srt("00:00:01,000 --> 00:00:02,000\nHello there").encode("utf-16-le")
    assert read_back(srt_to_vtt(data)) == [("00:00:01.000", "00:00:02.000", "Hello there")]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_line_ends(newline):
    data = srt("00:00:01,000 --> 00:00:02,000\nOne\nTwo", "00:00:03,000 --> 00:00:04,000\nThree", newline=newline)
    assert read_back(srt_to_vtt(data.encode())) == [
        ("00:00:01.000", "00:00:02.000", "One\nTwo"),
        ("00:00:03.000", "00:00:04.000", "Three"),
    ]
    assert decode_subtitle_bytes(data.encode()) == data.replace(newline, "\n")


# ---------------------------------------------------------------- structure and timings


def test_missing_cue_numbers():
    data = b"00:00:01,000 --> 00:00:02,000\nFirst\n\n00:00:03,000 --> 00:00:04,000\nSecond\n"
    assert read_back(srt_to_vtt(data)) == [
        ("00:00:01.000", "00:00:02.000", "First"),
        ("00:00:03.000", "00:00:04.000", "Second"),
    ]


def test_repeated_cue_numbers_and_a_number_as_text():
    data = b"1\n00:00:01,000 --> 00:00:02,000\nThe year was\n1984\n\n1\n00:00:03,000 --> 00:00:04,000\nSecond\n"
    assert read_back(srt_to_vtt(data)) == [
        ("00:00:01.000", "00:00:02.000", "The year was\n1984"),
        ("00:00:03.000", "00:00:04.000", "Second"),
    ]


def test_dot_separator_and_short_fields():
    # Unpadded fields are integers as written: "1,5" is 1 s 5 ms, as ffmpeg and VLC read it.
    data = b"1\n0:0:1,5 --> 0:0:2.25\nShort\n\n2\n00:00:03.000 --> 00:00:04.000\nDots\n"
    assert read_back(srt_to_vtt(data)) == [
        ("00:00:01.005", "00:00:02.025", "Short"),
        ("00:00:03.000", "00:00:04.000", "Dots"),
    ]


def test_colon_before_the_milliseconds():
    data = b"1\n00:00:07,000 --> 00:00:11:890\nColon\n\n2\n00:11:890 --> 00:12,000\nNo hours: seconds 890\n"
    assert read_back(srt_to_vtt(data)) == [("00:00:07.000", "00:00:11.890", "Colon")]


def test_blank_line_inside_a_cue():
    data = b"1\n00:00:01,000 --> 00:00:02,000\nFirst part\n\nafter a blank line\n\n2\n00:00:03,000 --> 00:00:04,000\nNext\n"
    assert read_back(srt_to_vtt(data)) == [
        ("00:00:01.000", "00:00:02.000", "First part\nafter a blank line"),
        ("00:00:03.000", "00:00:04.000", "Next"),
    ]


def test_no_final_newline():
    data = b"1\n00:00:01,000 --> 00:00:02,000\nLast words"
    assert read_back(srt_to_vtt(data)) == [("00:00:01.000", "00:00:02.000", "Last words")]


def test_end_before_start_is_swapped_and_cues_are_sorted():
    data = srt("00:00:09,000 --> 00:00:08,000\nBackwards", "00:00:01,000 --> 00:00:02,000\nEarlier").encode()
    assert read_back(srt_to_vtt(data)) == [
        ("00:00:01.000", "00:00:02.000", "Earlier"),
        ("00:00:08.000", "00:00:09.000", "Backwards"),
    ]


def test_hours_beyond_99():
    data = srt("100:00:01,000 --> 123:45:06,789\nA long film").encode()
    vtt = srt_to_vtt(data)
    assert "100:00:01.000 --> 123:45:06.789" in vtt
    assert read_back(vtt) == [("100:00:01.000", "123:45:06.789", "A long film")]


def test_srt_position_coordinates_after_the_timing_are_ignored():
    data = srt("00:00:01,000 --> 00:00:02,000  X1:100 X2:600 Y1:50 Y2:80\nText").encode()
    assert read_back(srt_to_vtt(data)) == [("00:00:01.000", "00:00:02.000", "Text")]


# ---------------------------------------------------------------- text


def test_ampersand_and_less_than_are_escaped():
    data = srt("00:00:01,000 --> 00:00:02,000\nTom & Jerry <3 a -> b").encode()
    assert read_back(srt_to_vtt(data))[0][2] == "Tom &amp; Jerry &lt;3 a -&gt; b"


def test_italic_bold_underline_are_kept_and_balanced():
    data = srt("00:00:01,000 --> 00:00:02,000\n<I>Shout</i> <b>bold <u>both</b> under\nstill</u> </i>done <i>open").encode()
    assert read_back(srt_to_vtt(data))[0][2] == (
        "<i>Shout</i> <b>bold <u>both</u></b><u> under\nstill</u> done <i>open</i>"
    )


def test_font_tags_are_dropped():
    data = srt('00:00:01,000 --> 00:00:02,000\n<font color="#ff0000">Red</font> and <font face=Arial size=3>plain</font>').encode()
    assert read_back(srt_to_vtt(data))[0][2] == "Red and plain"


def test_an8_becomes_a_top_line_setting():
    data = srt(
        "00:00:01,000 --> 00:00:02,000\n{\\an8}On top",
        "00:00:03,000 --> 00:00:04,000\n{\\an7\\i1}Top left",
        "00:00:05,000 --> 00:00:06,000\n{\\an5}Middle",
        "00:00:07,000 --> 00:00:08,000\n{\\an2}{\\b1}Default {not an override}",
    ).encode()
    vtt = srt_to_vtt(data)
    assert [text for _, _, text in read_back(vtt)] == [
        "On top", "<i>Top left</i>", "Middle", "<b>Default {not an override}</b>"
    ]
    assert settings_of(vtt) == ["line:0", "line:0 align:left", "line:50%,center", ""]


def test_ass_style_overrides_become_webvtt_tags():
    data = srt(
        "00:00:01,000 --> 00:00:02,000\n{\\i1}Leaning{\\i0} {\\b1}heavy{\\b0} {\\u1}under{\\u}",
        "00:00:03,000 --> 00:00:04,000\n{\\b700\\i1}Both{\\r} reset {\\i1}open to the end",
    ).encode()
    assert [text for _, _, text in read_back(srt_to_vtt(data))] == [
        "<i>Leaning</i> <b>heavy</b> <u>under</u>",
        "<b><i>Both</i></b> reset <i>open to the end</i>",
    ]


def test_other_override_and_microdvd_blocks_are_dropped_braced_words_kept():
    data = srt(
        "00:00:01,000 --> 00:00:02,000\n{\\c&HFF0000&\\fs20}Blue{\\c} {\\some_letters}text",
        "00:00:03,000 --> 00:00:04,000\n{Y:i}Whole cue {c:$0000FF}coloured",
        "00:00:05,000 --> 00:00:06,000\nbut show this: {normal text} and {\\unclosed",
    ).encode()
    assert [text for _, _, text in read_back(srt_to_vtt(data))] == [
        "Blue text",
        "Whole cue coloured",
        "but show this: {normal text} and {\\unclosed",
    ]


def test_ass_line_break_and_hard_space_escapes():
    data = srt(
        "00:00:01,000 --> 00:00:02,000\nFirst\\Nsecond\\N\\Nthird",
        "00:00:03,000 --> 00:00:04,000\nno\\hbreak\\h\\h here \\TEST \\-) \\ N",
    ).encode()
    assert [text for _, _, text in read_back(srt_to_vtt(data))] == [
        # A blank line would end a WebVTT cue, so the doubled break is one.
        "First\nsecond\nthird",
        "no\u00a0break\u00a0\u00a0 here \\TEST \\-) \\ N",
    ]


def test_strike_and_unknown_tags_are_dropped_but_not_less_than_signs():
    data = srt(
        "00:00:01,000 --> 00:00:02,000\n<s>Struck</s> <invalid_tag>closed</invalid_tag> <wwww>x</wwww>",
        "00:00:03,000 --> 00:00:04,000\n<invalid_tag par=5>with attributes</invalid_tag_not_opened> <v Bob>voice",
        "00:00:05,000 --> 00:00:06,000\n<u>2<3,5>1,4<6</u> a < 5 > c <<>>",
    ).encode()
    assert [text for _, _, text in read_back(srt_to_vtt(data))] == [
        "Struck closed x",
        "with attributes voice",
        "<u>2&lt;3,5&gt;1,4&lt;6</u> a &lt; 5 &gt; c &lt;&lt;&gt;&gt;",
    ]


def test_markup_only_lines_join_the_text():
    data = srt("00:00:01,000 --> 00:00:02,000\n<i>\nInside\n</i>").encode()
    assert read_back(srt_to_vtt(data))[0][2] == "<i>Inside</i>"


# ---------------------------------------------------------------- bad cues and bad files


def test_bad_cues_are_skipped_and_logged(caplog):
    data = srt(
        "00:00:01,000 --> 00:00:02,000\nGood",
        "00:00:xx,000 --> 00:00:04,000\nBad timing",
        "00:00:05,000 --> 00:00:05,000\nZero length",
        "00:00:06,000 --> 00:00:07,000\n<font color=red></font>",
        "00:00:08,000 --> 00:00:09,000\nAlso good",
    ).encode()
    with caplog.at_level(logging.WARNING, logger="binge.captions"):
        vtt = srt_to_vtt(data)
    assert [text for _, _, text in read_back(vtt)] == ["Good", "Also good"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cue 2 (line 6)" in w and "timing" in w for w in warnings)
    assert any("cue 3 (line 10)" in w for w in warnings)
    assert any("cue 4 (line 14)" in w and "no text" in w for w in warnings)


def test_a_flood_of_bad_cues_logs_a_count(caplog):
    data = b"00:00:01,000 --> 00:00:02,000\nGood\n" + b"xx --> yy\n" * 500
    with caplog.at_level(logging.WARNING, logger="binge.captions"):
        assert len(read_back(srt_to_vtt(data))) == 1
    assert len(caplog.records) < 30
    assert "skipped 480 more cues" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"just some words\nno timings here\n", "no cue timing line"),
        (bytes(range(256)) * 4, "no cue timing line"),
        (b"1\n00:00:xx --> 00:00:01\nBad\n", "all 1 cues were unusable"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "no usable subtitles"),
    ],
)
def test_files_without_a_usable_cue_raise_a_clear_error(data, message):
    with pytest.raises(CaptionError, match=message):
        srt_to_vtt(data)


def test_oversized_input_is_refused():
    with pytest.raises(CaptionError, match="limit"):
        srt_to_vtt(b"a" * (MAX_INPUT_BYTES + 1))


def test_unknown_format_is_a_caption_error():
    with pytest.raises(CaptionError, match="unsupported subtitle format 'ass'"):
        to_vtt(b"[Script Info]\n", "ass")


@pytest.mark.parametrize(
    "line",
    [
        "<" * 300_000,
        "{\\" * 150_000,
        "<i>" * 100_000 + "</i>" * 100_000,
        "&>" * 150_000,
        "9" * 300_000 + ":00 --> 1",
        " " * 300_000 + "-->",
    ],
)
def test_pathological_lines_convert_in_linear_time(line):
    data = f"00:00:01,000 --> 00:00:02,000\nok\n{line}\n".encode()
    with time_limit(10):
        assert read_back(to_vtt(data, "srt"))[0][:2] == ("00:00:01.000", "00:00:02.000")


# ---------------------------------------------------------------- WebVTT sources

VTT = """WEBVTT - a header text
X-TIMESTAMP-MAP=LOCAL:00:00:00.000,MPEGTS:0

REGION
id:top width:40% regionanchor:0%,100% bogus:1

STYLE
::cue(.loud) { color: red }

NOTE a comment

intro
00:01.000 --> 00:02.500 line:0 align:start nonsense:1 line:x
<v Roger>Hi</v> <c.loud>there</c> &amp; bye

00:00:03.000 --> 00:00:04.000 region:top
Second
"""


def test_vtt_passes_through_validated():
    vtt = vtt_to_vtt(VTT.encode("utf-8-sig"))
    assert read_back(vtt) == [
        ("00:00:01.000", "00:00:02.500", "<v Roger>Hi</v> <c.loud>there</c> &amp; bye"),
        ("00:00:03.000", "00:00:04.000", "Second"),
    ]
    parsed = webvtt.from_string(vtt, strict=True)
    assert parsed.captions[0].identifier == "intro"
    assert settings_of(vtt) == ["line:0 align:start", "region:top"]
    assert [str(r) for r in parsed.regions] == ["id:top width:40% regionanchor:0%,100%"]
    assert parsed.styles[0].text == "::cue(.loud) { color: red }"
    assert "NOTE" not in vtt and "X-TIMESTAMP-MAP" not in vtt


def test_vtt_with_malformed_cues_keeps_the_good_ones(caplog):
    data = b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nGood\n\n00:00:99.000 --> 00:01:00.000\nBad\n"
    with caplog.at_level(logging.WARNING, logger="binge.captions"):
        assert read_back(vtt_to_vtt(data)) == [("00:00:01.000", "00:00:02.000", "Good")]
    assert "skipped 1 malformed WebVTT cue block" in caplog.text


def test_vtt_without_usable_cues_is_an_error():
    with pytest.raises(CaptionError, match="no cue timing line"):
        vtt_to_vtt(b"WEBVTT\n\nNOTE nothing here\n")
    with pytest.raises(CaptionError, match="all 1 cues were unusable"):
        vtt_to_vtt(b"WEBVTT\n\n00:00:99.000 --> 00:01:00.000\nBad\n")


def test_content_decides_the_format():
    # An SRT renamed .vtt, and a WebVTT file named .srt.
    assert read_back(to_vtt(srt("00:00:01,000 --> 00:00:02,000\nRenamed").encode(), "vtt")) == [
        ("00:00:01.000", "00:00:02.000", "Renamed")
    ]
    assert settings_of(to_vtt(b"\nWEBVTT\n\n00:01.000 --> 00:02.000 line:0\nReal VTT\n", "SRT")) == ["line:0"]


# ---------------------------------------------------------------- properties

FUZZ = settings(max_examples=150, deadline=3000, suppress_health_check=[HealthCheck.too_slow])


def assert_webvtt_or_caption_error(data: bytes, fmt: str) -> None:
    with time_limit(10):
        try:
            vtt = to_vtt(data, fmt)
        except CaptionError as error:
            assert str(error)
            return
    assert read_back(vtt)


@FUZZ
@given(data=st.binary(max_size=4096), fmt=st.sampled_from(["srt", "vtt"]))
def test_any_bytes_give_webvtt_or_a_caption_error(data, fmt):
    assert_webvtt_or_caption_error(data, fmt)


SRT_TOKENS = [
    "1", "12", "\n", "\n", "\n", "\r\n", "\r", " ", "-->", " --> ", "00:00:01,000", "0:0:2.5", "100:00:00,000",
    "99:59:59,999", "00:61:00,000", ":", ",", ".", "<i>", "</i>", "<B>", "</u>", "<font color=red>", "</font>",
    "<", ">", "&", "{\\an8}", "{\\an", "{", "}", "\\", "WEBVTT", "NOTE", "STYLE", "REGION", "id:r width:40%",
    "line:0", "align:left", "é", "’", "\x00", "\ufeff", "\u2028", "text", "1984",
]


@FUZZ
@given(
    tokens=st.lists(st.sampled_from(SRT_TOKENS), max_size=120),
    encoding=st.sampled_from(["utf-8", "utf-16", "cp1252"]),
    fmt=st.sampled_from(["srt", "vtt"]),
)
def test_subtitle_like_noise_gives_webvtt_or_a_caption_error(tokens, encoding, fmt):
    assert_webvtt_or_caption_error("".join(tokens).encode(encoding, errors="replace"), fmt)


# Text that an SRT writer would write: no "-->", no tags ("<" never closes
# as there is no ">"), no override blocks.
cue_line = st.text(
    alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="<>{}\\"),
    min_size=1,
    max_size=25,
).map(str.strip).filter(bool)
cue_text = st.lists(cue_line, min_size=1, max_size=3)
timing = st.tuples(st.integers(0, 150 * 3_600_000), st.integers(1, 600_000))


def srt_time(ms: int, separator: str) -> str:
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def vtt_time(ms: int) -> str:
    return srt_time(ms, ".")


@settings(max_examples=100, deadline=3000)
@given(
    cues=st.lists(st.tuples(timing, cue_text), min_size=1, max_size=8),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    numbering=st.sampled_from(["counted", "missing", "repeated"]),
    separator=st.sampled_from([",", "."]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
    final_newline=st.booleans(),
)
def test_well_formed_srt_round_trips(cues, newline, numbering, separator, encoding, final_newline):
    blocks = []
    for n, ((start, length), lines) in enumerate(cues, 1):
        number = {"counted": f"{n}\n", "missing": "", "repeated": "1\n"}[numbering]
        blocks.append(f"{number}{srt_time(start, separator)} --> {srt_time(start + length, separator)}\n" + "\n".join(lines))
    text = "\n\n".join(blocks) + ("\n" if final_newline else "")
    data = text.replace("\n", newline).encode(encoding)

    expected = sorted(
        ((vtt_time(start), vtt_time(start + length), "\n".join(lines)) for (start, length), lines in cues),
        key=lambda cue: (webvtt.models.Timestamp.from_string(cue[0]), webvtt.models.Timestamp.from_string(cue[1])),
    )
    escaped = [(start, end, text.replace("&", "&amp;").replace("<", "&lt;")) for start, end, text in expected]
    with time_limit(10):
        assert read_back(srt_to_vtt(data)) == escaped


# ---------------------------------------------------------------- cache


class CountingConverter:
    """to_vtt, counting its calls, optionally slow to let requests overlap."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.langs: list[str | None] = []
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, data: bytes, fmt: str, lang: str | None) -> str:
        with self._lock:
            self.calls += 1
            self.langs.append(lang)
        time.sleep(self.delay)
        return to_vtt(data, fmt, lang)


def one_cue(text: str) -> bytes:
    return srt(f"00:00:01,000 --> 00:00:02,000\n{text}").encode()


def test_cache_reconverts_only_when_the_version_changes(tmp_path):
    convert = CountingConverter()
    cache = CaptionCache(str(tmp_path), convert=convert)

    async def scenario():
        first = await cache.get("alpha/en", "v1", one_cue("One"), "srt")
        again = await cache.get("alpha/en", "v1", one_cue("One"), "srt")
        assert first == again and convert.calls == 1
        changed = await cache.get("alpha/en", "v2", one_cue("Two"), "srt")
        assert read_back(changed)[0][2] == "Two" and convert.calls == 2
        await cache.get("alpha/fr", "v1", one_cue("Un"), "srt")
        assert convert.calls == 3

    asyncio.run(scenario())
    # The old version's file was replaced by the new one.
    track_folders = os.listdir(tmp_path / "captions")
    assert len(track_folders) == 2
    assert all(len(os.listdir(tmp_path / "captions" / folder)) == 1 for folder in track_folders)


def test_cache_survives_a_restart_without_reconverting(tmp_path):
    asyncio.run(CaptionCache(str(tmp_path)).get("alpha/en", "v1", one_cue("Kept"), "srt"))

    convert = CountingConverter()
    restarted = CaptionCache(str(tmp_path), convert=convert)
    vtt = asyncio.run(restarted.get("alpha/en", "v1", one_cue("Kept"), "srt"))
    assert read_back(vtt)[0][2] == "Kept" and convert.calls == 0


def test_concurrent_requests_share_one_conversion(tmp_path):
    convert = CountingConverter(delay=0.3)
    cache = CaptionCache(str(tmp_path), convert=convert)

    async def scenario():
        return await asyncio.gather(*(cache.get("alpha/en", "v1", one_cue("Shared"), "srt") for _ in range(8)))

    results = asyncio.run(scenario())
    assert convert.calls == 1 and len(set(results)) == 1


def test_memory_is_bounded_and_evicted_tracks_come_back_from_disk(tmp_path):
    convert = CountingConverter()
    cache = CaptionCache(str(tmp_path), max_entries=2, convert=convert)

    async def scenario():
        for key in ("a", "b", "c"):
            await cache.get(key, "v1", one_cue(key), "srt")
        for folder in os.listdir(tmp_path / "captions"):
            for name in os.listdir(tmp_path / "captions" / folder):
                os.unlink(tmp_path / "captions" / folder / name)
        await cache.get("c", "v1", one_cue("c"), "srt")  # still in memory
        assert convert.calls == 3
        await cache.get("a", "v1", one_cue("a"), "srt")  # evicted, and its file is gone
        assert convert.calls == 4

    asyncio.run(scenario())


def test_unusable_source_raises_each_time_but_converts_once(tmp_path):
    convert = CountingConverter()
    cache = CaptionCache(str(tmp_path), convert=convert)

    async def scenario():
        for _ in range(2):
            with pytest.raises(CaptionError, match="no usable subtitles"):
                await cache.get("alpha/en", "v1", b"not subtitles", "srt")

    asyncio.run(scenario())
    assert convert.calls == 1
    assert not list(tmp_path.rglob("*.vtt"))


def test_cache_file_names_are_hashes_inside_the_cache(tmp_path):
    cache = CaptionCache(str(tmp_path / "cache"))
    for key in ("../../escape", "a/b\\c", "\udc80 odd\0key"):
        asyncio.run(cache.get(key, "../v", one_cue("x"), "srt"))
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(files) == 3
    for path in files:
        relative = path.relative_to(tmp_path / "cache" / "captions")
        assert [len(part.removesuffix(".vtt")) for part in relative.parts] == [64, 64]


def test_vtt_reads_the_track_from_the_store(tmp_path):
    class Store:
        def __init__(self) -> None:
            self.source = (one_cue("From the store"), "1-1")

        async def caption_source(self, video, lang):
            assert (video.id, lang) == ("alpha", "en")
            return self.source

    store, convert = Store(), CountingConverter()
    cache = CaptionCache(str(tmp_path), convert=convert)
    video = types.SimpleNamespace(id="alpha")
    track = types.SimpleNamespace(lang="en", format="srt")

    async def scenario():
        assert read_back(await cache.vtt(store, video, track))[0][2] == "From the store"
        await cache.vtt(store, video, track)
        store.source = (one_cue("Edited"), "2-2")
        assert read_back(await cache.vtt(store, video, track))[0][2] == "Edited"

    asyncio.run(scenario())
    assert convert.calls == 2 and convert.langs == ["en", "en"]


def test_vtt_reads_legacy_code_pages_in_the_tracks_language(tmp_path):
    class Store:
        async def caption_source(self, video, lang):
            return legacy_srt(["Đino, dođavola."]).encode("cp1250"), "1-1"

    cache = CaptionCache(str(tmp_path))
    video = types.SimpleNamespace(id="alpha")
    track = types.SimpleNamespace(lang="hr", format="srt")
    assert read_back(asyncio.run(cache.vtt(Store(), video, track)))[0][2] == "Đino, dođavola."

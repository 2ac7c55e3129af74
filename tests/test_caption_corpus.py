"""Real and hand-made subtitle files, read by Binge+ and by two independent readers, compared cue by cue.

The readers are FFmpeg (its SubRip and WebVTT demuxers and decoders,
through PyAV) and pysubs2. Each reading becomes a sorted list of (start ms,
end ms, visible text). The real files and the differences Binge+ makes on purpose are listed
in tests/subtitle_corpus.yaml; the rules that hold for every file are here:

* A cue that ends when it starts, or has no visible text, is dropped by
  Binge+ (it is never on screen, and WebVTT has no use for it); it is
  dropped from the readers' lists too.
* Cues are compared sorted: WebVTT wants them in start order.
* Visible text is compared line by line, spaces at the ends of a line and
  blank lines left out: every reader trims those, and a blank line cannot
  be inside a WebVTT cue. ``\\h`` is a no-break space to all three.
"""

from __future__ import annotations

import html
import pathlib
import re

import av
import pysubs2
import pytest
import webvtt
import yaml

from captions.convert import CaptionError, to_vtt
from tests.subtitle_lines import LEGACY_SUBTITLES

ROOT = pathlib.Path(__file__).resolve().parent.parent
MANIFEST = yaml.safe_load((ROOT / "tests" / "subtitle_corpus.yaml").read_text(encoding="utf-8"))
CORPUS = ROOT / "var" / "subtitle-corpus"
READERS = ("ffmpeg", "pysubs2")

Cue = tuple[int, int, str]


class CannotRead(Exception):
    """The reader refused the whole file."""


def visible_lines(text: str) -> str:
    lines = (line.strip(" \t") for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def ass_visible(text: str) -> str:
    """Visible text of the ASS markup both readers turn cue text into."""
    text = re.sub(r"\{\\[^}]*\}", "", text)
    return visible_lines(text.replace("\\N", "\n").replace("\\h", "\u00a0"))


def shown(cues: list[Cue]) -> list[Cue]:
    return sorted(cue for cue in cues if cue[0] != cue[1] and cue[2])


def read_with_binge(data: bytes, lang: str | None, fmt: str = "srt") -> list[Cue]:
    """Binge+'s cues, read back from its WebVTT by webvtt-py in strict mode."""
    vtt = to_vtt(data, fmt, lang)
    cues = []
    for caption in webvtt.from_string(vtt, strict=True).captions:
        text = html.unescape(re.sub(r"<[^>]*>", "", caption.raw_text))
        cues.append((caption.start_time.in_milliseconds(), caption.end_time.in_milliseconds(), visible_lines(text)))
    return sorted(cues)


def ffmpeg_charset(encoding: str) -> str | None:
    # FFmpeg finds UTF-8 and UTF-16 itself; legacy code pages go to iconv by name.
    if encoding.startswith("utf") or encoding == "ascii":
        return None
    return encoding.upper().replace("_", "-")


def read_with_ffmpeg(path: pathlib.Path, encoding: str) -> list[Cue]:
    try:
        container = av.open(str(path))
    except av.error.InvalidDataError as error:
        raise CannotRead(error) from error
    with container:
        stream = container.streams.subtitles[0]
        charset = ffmpeg_charset(encoding)
        if charset:
            stream.codec_context.options = {"sub_charenc": charset}
        cues = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            for subtitle in stream.codec_context.decode(packet):
                # An ASS dialogue line: the text is the ninth field.
                text = subtitle.ass.decode("utf-8").split(",", 8)[8]
                cues.append((packet.pts, packet.pts + packet.duration, ass_visible(text)))
    return cues


def read_with_pysubs2(path: pathlib.Path, encoding: str) -> list[Cue]:
    try:
        subtitles = pysubs2.load(str(path), encoding=encoding, format_=subtitle_format(path))
    except (UnicodeDecodeError, pysubs2.Pysubs2Error) as error:
        raise CannotRead(error) from error
    return [(event.start, event.end, ass_visible(event.text)) for event in subtitles]


READ = {"ffmpeg": read_with_ffmpeg, "pysubs2": read_with_pysubs2}


def subtitle_format(path: pathlib.Path) -> str:
    return path.suffix.lstrip(".").lower()


def as_cues(listed: list) -> list[Cue]:
    return [(start, end, text) for start, end, text in listed]


def expected_from(reader: str, theirs: list[Cue], differences: list[dict]) -> list[Cue]:
    """The reader's cues with the listed deliberate differences made; each listed cue must be in its reading."""
    expected = shown(theirs)
    for difference in differences:
        if reader not in difference["readers"]:
            continue
        for cue in as_cues(difference["theirs"]):
            assert cue in expected, f"{reader} no longer reads {cue!r}: update the manifest ({difference['why']})"
            expected.remove(cue)
        expected.extend(as_cues(difference["ours"]))
    return sorted(expected)


def compare(path: pathlib.Path, encoding: str, lang: str | None, unreadable_by: dict, differences: list[dict]) -> None:
    try:
        ours: list[Cue] | None = read_with_binge(path.read_bytes(), lang, subtitle_format(path))
    except CaptionError:
        ours = None  # no usable cue in the file
    compared = 0
    for reader in READERS:
        try:
            theirs = READ[reader](path, encoding)
        except CannotRead:
            assert reader in unreadable_by, f"{reader} cannot read {path.name}, and the manifest does not say so"
            continue
        assert reader not in unreadable_by, f"{reader} reads {path.name} now: {unreadable_by[reader]} no longer holds"
        expected = expected_from(reader, theirs, differences)
        if ours is None:
            assert expected == [], f"Binge+ found no usable cue where {reader} shows {len(expected)}"
        else:
            assert ours == expected, f"Binge+ and {reader} differ on {path.name}"
        compared += 1
    assert compared, f"no independent reader read {path.name}"


# ---------------------------------------------------------------- real files


@pytest.mark.parametrize("entry", MANIFEST["files"], ids=lambda entry: entry["path"].rsplit("/", 1)[-1])
def test_real_files_read_as_ffmpeg_and_pysubs2_read_them(entry):
    path = CORPUS / entry["path"]
    assert path.is_file(), f"{path} is missing: scripts/setup --test fetches the corpus"
    compare(path, entry["encoding"], entry.get("lang"), entry.get("unreadable_by", {}), entry.get("differences", []))


def test_the_corpus_has_many_cues_and_every_kind_of_file():
    # Guards the test above against a manifest that shrank to trivial files.
    assert len(MANIFEST["files"]) >= 20
    encodings = {entry["encoding"] for entry in MANIFEST["files"]}
    assert {"utf-8", "utf-8-sig", "utf-16", "utf-32", "cp1252", "gb2312"} <= encodings
    films = [entry["path"] for entry in MANIFEST["files"] if entry["path"].endswith(("/utf-8.srt", "/windows-1252.srt"))]
    assert [len(read_with_binge((CORPUS / path).read_bytes(), None)) for path in films] == [1332, 1332]


# ---------------------------------------------------------------- files written here


def written_srt(lines: list[str], newline: str = "\n", numbers: bool = True) -> str:
    blocks = []
    for n, line in enumerate(lines, 1):
        number = f"{n}\n" if numbers else ""
        blocks.append(f"{number}00:00:{n:02d},250 --> 00:00:{n:02d},900\n{line}\n")
    return "\n".join(blocks).replace("\n", newline)


@pytest.mark.parametrize("lang, encoding", list(LEGACY_SUBTITLES))
def test_legacy_code_pages_read_as_ffmpeg_and_pysubs2_read_them(tmp_path, lang, encoding):
    path = tmp_path / f"film.{lang}.srt"
    path.write_bytes(written_srt(LEGACY_SUBTITLES[lang, encoding]).encode(encoding))
    compare(path, encoding, lang, {}, [])


ENGLISH = ["Where were you all night?", "We waited for hours.", "I'm sorry, I didn't mean to worry you."]


@pytest.mark.parametrize(
    "name, data, encoding, unreadable_by, differences",
    [
        ("utf-8 mark", written_srt(ENGLISH).encode("utf-8-sig"), "utf-8-sig", {}, []),
        ("utf-16 mark", written_srt(ENGLISH).encode("utf-16"), "utf-16", {}, []),
        ("crlf", written_srt(ENGLISH, "\r\n").encode(), "utf-8", {}, []),
        ("cr only", written_srt(ENGLISH, "\r").encode(), "utf-8", {}, []),
        (
            "no numbers", written_srt(ENGLISH, numbers=False).encode(), "utf-8",
            {"ffmpeg": "FFmpeg's SubRip probe wants a cue number first"}, [],
        ),
        (
            "bad timing",
            written_srt(ENGLISH).replace("00:00:02,250 --> 00:00:02,900", "00:00:02,250 --> 00:00:xx,900").encode(),
            "utf-8", {},
            [{
                "readers": ["ffmpeg", "pysubs2"],
                "theirs": [[1250, 1900, "Where were you all night?\n2\n00:00:02,250 --> 00:00:xx,900\nWe waited for hours."]],
                "ours": [[1250, 1900, "Where were you all night?"]],
                "why": "a cue with an unreadable timing is skipped; the readers show it as text of the cue before",
            }],
        ),
        (
            "truncated in the last cue's text",
            written_srt(ENGLISH).encode()[:-12], "utf-8", {}, [],
        ),
        (
            "truncated in the last timing line",
            written_srt(ENGLISH).encode()[: written_srt(ENGLISH).index("00:00:03,900")], "utf-8", {},
            [{
                "readers": ["ffmpeg", "pysubs2"],
                "theirs": [[1250, 1900, "Where were you all night?"], [2250, 2900, "We waited for hours.\n3\n00:00:03,250 -->"]],
                "ours": [[1250, 1900, "Where were you all night?"], [2250, 2900, "We waited for hours."]],
                "why": "a cut timing line is skipped with its cue; the readers show it as text of the cue before",
            }],
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else "",
)
def test_damaged_files_read_as_ffmpeg_and_pysubs2_read_them(tmp_path, name, data, encoding, unreadable_by, differences):
    path = tmp_path / "film.en.srt"
    path.write_bytes(data)
    compare(path, encoding, "en", unreadable_by, differences)

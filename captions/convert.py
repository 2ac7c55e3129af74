"""Subtitle files as people really make them in, clean WebVTT out.

The content decides how a file is read, not its name: a file that starts
with the ``WEBVTT`` signature is read as WebVTT by webvtt-py, anything else
with the tolerant SRT reader below (renamed files are common). Output always
starts with ``WEBVTT\\n\\n`` and reads back with webvtt-py in strict mode.

What the SRT reader accepts and how it repairs it:

* Encodings: a UTF-8, UTF-16 or UTF-32 byte order mark; else UTF-8; else
  the legacy code page whose reading is most coherent, the track's language
  tag telling which language to expect: Western, Central European,
  Cyrillic, Greek, Turkish, Baltic, Hebrew and Arabic code pages, GBK, Big5,
  Shift_JIS and EUC-KR (see :func:`_decode_legacy`). CRLF and CR become LF.
* Cue numbers are ignored, so missing or repeated ones do not matter, and
  WebVTT identifiers (which must be unique) are not written.
* Timings: ``,`` or ``.`` before the milliseconds (or ``:`` after hours,
  minutes and seconds, a slip that FFmpeg and pysubs2 show as cue text),
  fields without zero padding, hours past 99, no milliseconds at all.
  Fields are integers as written, so ``0:0:1,5`` is 1.005 s, as ffmpeg, VLC
  and webvtt-py's own SRT reader read it: short fields come from tools that
  do not zero-pad.
* Blank lines inside a cue are dropped: a cue runs to the next timing line.
* End before start: the two are swapped (browsers reject such cues, and a
  swap keeps the text on screen for the intended length). Cues are written
  sorted by start time, as WebVTT requires.
* Text is escaped for WebVTT: ``&``, ``>`` and any ``<`` that does not start
  a tag. ``<i> <b> <u>`` and their closers are kept (case folded,
  balanced); other tags (``<font ...>``, ``<s>``, made-up ones such as
  ``<invalid_tag>``: a letter right after the ``<``) are dropped and their
  text kept, as FFmpeg and VLC show them; ``2<3`` stays text.
* ASS markup that SRT writers copy: ``\\N`` is a line break, ``\\h`` a
  non-breaking space; in ``{\\...}`` override blocks ``\\i1``/``\\i0``,
  ``\\b1``/``\\b0`` and ``\\u1``/``\\u0`` become those tags and ``\\r``
  closes them, ``{\\anN}`` (an ASS position) becomes cue settings: the top
  row (7-9) ``line:0``, the middle row (4-6) ``line:50%,center``, the left
  column (1, 4, 7) ``align:left``, the right column (3, 6, 9)
  ``align:right``. Everything else in an override block (colours, fonts)
  and MicroDVD blocks such as ``{Y:i}`` are dropped; braces around plain
  words (``{normal text}``) are text.

A cue that cannot be repaired (unreadable timing, zero length, no visible
text) is skipped and logged on ``binge.captions`` at WARNING with its
position ("cue 3 (line 12)": the third timing line of the file, as cue
numbers cannot be trusted); only a file with no usable cue at all raises
:class:`CaptionError`.
Every step is linear in the input, which is capped at
:data:`MAX_INPUT_BYTES`.
"""

from __future__ import annotations

import codecs
import collections
import logging
import re
import unicodedata
from dataclasses import dataclass, field

import charset_normalizer
from charset_normalizer.cd import coherence_ratio
from charset_normalizer.md import mess_ratio
import webvtt
from webvtt.models import Timestamp

log = logging.getLogger("binge.captions")

MAX_INPUT_BYTES = 10 * 1024 * 1024

# Skipped cues past this many are logged as one count.
_MAX_LOGGED_SKIPS = 20


class CaptionError(ValueError):
    """The file is not a subtitle file, or has no cue that could be used."""


# ---------------------------------------------------------------- decoding

# UTF-32 LE first: its mark starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Non-letters that real subtitle text uses; any other non-ASCII non-letter
# counts against a candidate decoding.
_TYPOGRAPHY = frozenset("‘’‚“”„–—…«»‹›¡¿°€£¥§©®·•\u00a0♪♫")

# C0 controls (bar tab and LF) and DEL, removed from the text.
_CONTROLS = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])


@dataclass(frozen=True)
class _Language:
    """What a language's subtitle text is made of, and the legacy code pages its files come in.

    ``letters`` are the letters beyond ASCII it writes (lower case; upper
    case counts too); ``scripts`` the Unicode scripts, by the first word of
    the characters' names, for languages not written in Latin letters.
    Code pages are Python codec names, the one its files mostly use first;
    the East Asian ones are the Windows supersets, as players read them.
    """

    encodings: tuple[str, ...]
    letters: str = ""
    scripts: tuple[str, ...] = ()


_CENTRAL_EUROPEAN = ("cp1250", "iso8859_2")
_WESTERN = ("cp1252", "latin_1")
_CYRILLIC = ("cp1251", "koi8_r", "koi8_u", "iso8859_5")
_BALTIC = ("cp1257", "iso8859_13", "iso8859_4")

# Keyed by the primary subtag of the language tag in the file name
# (`<id>.<lang>.srt`); "zh-hant" (and Taiwan, Hong Kong, Macao) is keyed
# apart as its files are Big5, not GBK, and Serbian's Cyrillic as "sr-cyrl".
# English is absent: ASCII says nothing.
_LANGUAGES = {
    "fr": _Language(_WESTERN, letters="àâæçéèêëîïôœùûüÿ"),
    "de": _Language(_WESTERN, letters="äöüß"),
    "es": _Language(_WESTERN, letters="áéíñóúü"),
    "pt": _Language(_WESTERN, letters="áâãàçéêíóôõú"),
    "it": _Language(_WESTERN, letters="àèéìíîòóùú"),
    "nl": _Language(_WESTERN, letters="áéèëïóöü"),
    "ca": _Language(_WESTERN, letters="àçèéíïòóú"),
    "sv": _Language(_WESTERN, letters="åäöé"),
    "fi": _Language(_WESTERN, letters="åäöšž"),
    "da": _Language(_WESTERN, letters="æøåé"),
    "no": _Language(_WESTERN, letters="æøåéóò"),
    "nb": _Language(_WESTERN, letters="æøåéóò"),
    "is": _Language(_WESTERN, letters="áðéíóúýþæö"),
    "pl": _Language(_CENTRAL_EUROPEAN, letters="ąćęłńóśźż"),
    "cs": _Language(_CENTRAL_EUROPEAN, letters="áčďéěíňóřšťúůýž"),
    "sk": _Language(_CENTRAL_EUROPEAN, letters="áäčďéíĺľňóôŕšťúýž"),
    "sl": _Language(_CENTRAL_EUROPEAN, letters="čšžćđ"),
    "hr": _Language(_CENTRAL_EUROPEAN, letters="čćđšž"),
    "bs": _Language(_CENTRAL_EUROPEAN, letters="čćđšž"),
    "sr": _Language(("cp1250", "cp1251", "iso8859_2"), letters="čćđšž"),
    "sr-cyrl": _Language(("cp1251", "iso8859_5"), scripts=("CYRILLIC",)),
    "hu": _Language(_CENTRAL_EUROPEAN, letters="áéíóöőúüű"),
    "ro": _Language(("cp1250", "iso8859_16", "iso8859_2"), letters="ăâîșțşţ"),
    "sq": _Language(("cp1250", "cp1252"), letters="çë"),
    "ru": _Language(_CYRILLIC, scripts=("CYRILLIC",)),
    "uk": _Language(("cp1251", "koi8_u", "iso8859_5"), scripts=("CYRILLIC",)),
    "be": _Language(_CYRILLIC, scripts=("CYRILLIC",)),
    "bg": _Language(_CYRILLIC, scripts=("CYRILLIC",)),
    "mk": _Language(_CYRILLIC, scripts=("CYRILLIC",)),
    "el": _Language(("cp1253", "iso8859_7"), scripts=("GREEK",)),
    "tr": _Language(("cp1254", "iso8859_9"), letters="âçğıîöşûü"),
    "lt": _Language(_BALTIC, letters="ąčęėįšųūž"),
    "lv": _Language(_BALTIC, letters="āčēģīķļņšūž"),
    "et": _Language(_BALTIC, letters="äöõüšž"),
    "he": _Language(("cp1255", "iso8859_8"), scripts=("HEBREW",)),
    "yi": _Language(("cp1255", "iso8859_8"), scripts=("HEBREW",)),
    "ar": _Language(("cp1256", "iso8859_6"), scripts=("ARABIC",)),
    "fa": _Language(("cp1256",), scripts=("ARABIC",)),
    "ur": _Language(("cp1256",), scripts=("ARABIC",)),
    "zh": _Language(("gb18030", "cp950"), scripts=("CJK",)),
    "zh-hant": _Language(("cp950", "big5hkscs", "gb18030"), scripts=("CJK",)),
    "ja": _Language(("cp932", "euc_jp"), scripts=("CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA")),
    "ko": _Language(("cp949",), scripts=("HANGUL",)),
}
_TRADITIONAL_CHINESE = {"hant", "tw", "hk", "mo"}
# Every code page of the table, tried for a file whatever its tag says, as tags can be wrong.
_LEGACY_ENCODINGS = tuple(dict.fromkeys(["cp1252", *(e for lang in _LANGUAGES.values() for e in lang.encodings)]))

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_NOT_ASCII_LETTERS = bytes(byte for byte in range(128) if not chr(byte).isalpha())

# Enough for any film's subtitles; a larger file is judged by its start.
_SCORED_BYTES = 1024 * 1024

# Below this, no reading of the file looks like text in any language: it
# is served all the same, and logged.
_COHERENT = 0.9


def decode_subtitle_bytes(data: bytes, lang: str | None = None) -> str:
    """Decodes a subtitle file to text with LF line ends and no byte order mark.

    A byte order mark wins; otherwise strict UTF-8; otherwise the legacy
    code page whose reading is most coherent (see :func:`_decode_legacy`),
    ``lang`` (the file's language tag, such as ``hr`` or ``zh-TW``) telling
    which language to expect. NUL characters and other C0 controls are
    removed.

    :raises CaptionError: if ``data`` is empty or over :data:`MAX_INPUT_BYTES`
    """
    if not data:
        raise CaptionError("the subtitle file is empty")
    if len(data) > MAX_INPUT_BYTES:
        raise CaptionError(
            f"the subtitle file is {len(data) / 2**20:.1f} MiB, "
            f"over the {MAX_INPUT_BYTES // 2**20} MiB limit"
        )
    text = _decode(data, lang)
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROLS)
    return text.removeprefix("\ufeff")


def _decode(data: bytes, lang: str | None) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding, errors="replace")
    # NUL bytes mean UTF-16 or UTF-32 without a mark, which ASCII content
    # makes valid UTF-8 too.
    if b"\x00" not in data:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return _decode_legacy(data, _language(lang))


def _language(tag: str | None) -> _Language | None:
    if not tag:
        return None
    primary, *rest = tag.lower().replace("_", "-").split("-")
    if primary == "zh" and _TRADITIONAL_CHINESE.intersection(rest):
        primary = "zh-hant"
    elif primary == "sr" and "cyrl" in rest:
        primary = "sr-cyrl"
    return _LANGUAGES.get(primary)


def _decode_legacy(data: bytes, expected: _Language | None) -> str:
    """The reading of ``data`` in the code page that makes the most coherent text.

    Single-byte code pages read any bytes as some letters, and a byte
    frequency guess often takes one for another (cp1252 for Croatian cp1250,
    turning "đ" into "ð"), so each candidate's reading of the file (its
    first :data:`_SCORED_BYTES`, a whole film's subtitles) is judged by the
    share of its non-ASCII characters that are letters of one language, or
    subtitle typography: of ``expected``, when the file's tag names a
    language and some candidate reads as it, else of the language it fits
    best. Among the best, charset-normalizer's coherence (letter
    frequencies) less its mess ratio (case swaps, stray symbols) decides,
    then the order of the candidates: the expected language's code pages,
    charset-normalizer's guesses, then every code page of
    :data:`_LANGUAGES`, cp1252 first, as most legacy subtitle files use it.
    A file that no candidate reads as one language is served in the best
    reading and logged.
    """
    sample = data[:_SCORED_BYTES]
    detected = [match.encoding for match in charset_normalizer.from_bytes(sample)]
    preferred = [*(expected.encodings if expected else ()), *detected, *_LEGACY_ENCODINGS]
    # latin_1 reads any bytes, so there is always a reading.
    readings: dict[str, str] = {}
    for encoding in dict.fromkeys(codecs.lookup(name).name for name in preferred):
        try:
            # Not final: the sample may end inside a multi-byte character.
            readings[encoding] = codecs.getincrementaldecoder(encoding)().decode(sample, final=len(sample) == len(data))
        except UnicodeDecodeError:
            continue
    fits = {encoding: _Fit(text, expected) for encoding, text in readings.items()}
    use_expected = expected is not None and max(fit.expected for fit in fits.values()) >= _COHERENT
    order = list(readings)

    def letters(encoding: str) -> float:
        # Rounded, so that one odd character in a long file does not
        # outweigh the language evidence of the rest.
        return round(fits[encoding].expected if use_expected else fits[encoding].best, 2)

    top = max(letters(encoding) for encoding in readings)
    # charset-normalizer's measures are slower: only for the best fits.
    best = max(
        (encoding for encoding in readings if letters(encoding) == top),
        key=lambda encoding: (_coherence(readings[encoding]), -order.index(encoding)),
    )
    if top < _COHERENT:
        log.warning(
            "no code page reads the subtitle file as text of one language; served as %s (%.0f%% fits)",
            best, 100 * top,
        )
    if len(sample) == len(data):
        return readings[best]
    # Past the sample, bytes this code page lacks become U+FFFD.
    return data.decode(best, errors="replace")


def _coherence(text: str) -> float:
    """charset-normalizer's letter-frequency coherence of ``text``, less its mess ratio (case swaps, stray symbols)."""
    languages = coherence_ratio(text)
    return max((ratio for _, ratio in languages), default=0.0) - mess_ratio(text, maximum_threshold=1.0)


class _Fit:
    """How much of one reading of a file is letters of one language."""

    def __init__(self, text: str, expected: _Language | None) -> None:
        # Subtitle text is mostly ASCII: counting only the rest keeps this
        # cheap for each of the two dozen candidates.
        counts = collections.Counter("".join(_NON_ASCII.findall(text)))
        total = sum(counts.values())
        typography = sum(count for char, count in counts.items() if _is_typography(char))
        # Text in a non-Latin script has few ASCII letters: a code page
        # that sprinkles Cyrillic into Latin words is not Russian.
        ascii_letters = len(text.encode("ascii", "ignore").translate(None, _NOT_ASCII_LETTERS))

        def share(language: _Language) -> float:
            considered = total + (ascii_letters if language.scripts else 0)
            if not considered:
                return 1.0
            letters = sum(count for char, count in counts.items() if _writes(language, char))
            return (letters + typography) / considered

        self.expected = share(expected) if expected is not None else 0.0
        self.best = max(share(language) for language in _LANGUAGES.values())


def _writes(language: _Language, char: str) -> bool:
    if char.lower() in language.letters:
        return True
    return unicodedata.name(char, "").split(" ", 1)[0] in language.scripts


def _is_typography(char: str) -> bool:
    # CJK and full-width punctuation ("。", "？") belong to the East Asian readings.
    return char in _TYPOGRAPHY or "\u3000" <= char <= "\u303f" or "\uff00" <= char <= "\uff65"


# ---------------------------------------------------------------- conversion


def to_vtt(data: bytes, fmt: str, lang: str | None = None) -> str:
    """Converts a caption file whose declared format is ``fmt`` ("srt" or "vtt") to WebVTT.

    ``lang`` is the track's language tag (``hr``, ``zh-TW``), evidence for
    reading a file in a legacy code page (see :func:`decode_subtitle_bytes`).

    :raises CaptionError: for another format, or see :func:`srt_to_vtt`
    """
    converters = {"srt": srt_to_vtt, "vtt": vtt_to_vtt}
    converter = converters.get(fmt.lower().lstrip("."))
    if converter is None:
        raise CaptionError(f"unsupported subtitle format {fmt!r}: use SRT or WebVTT")
    return converter(data, lang)


def srt_to_vtt(data: bytes, lang: str | None = None) -> str:
    """Converts an SRT file to WebVTT, repairing what can be repaired (see the module doc).

    A file that is really WebVTT is passed through as :func:`vtt_to_vtt` does.

    :raises CaptionError: if the file is empty, too large, or has no usable cue
    """
    return _convert(data, "srt", lang)


def vtt_to_vtt(data: bytes, lang: str | None = None) -> str:
    """Validates and normalises a WebVTT file.

    webvtt-py reads it (malformed cue blocks are skipped); cues, their
    identifiers and text, valid cue settings, regions and styles are kept;
    header text, metadata, comments and invalid settings are dropped. Cues
    are repaired as SRT ones are (swapped times, order). A file without the
    ``WEBVTT`` signature is read as SRT, as renamed SRT files are common.

    :raises CaptionError: if the file is empty, too large, or has no usable cue
    """
    return _convert(data, "vtt", lang)


def _convert(data: bytes, declared: str, lang: str | None) -> str:
    text = decode_subtitle_bytes(data, lang)
    # webvtt-py accepts anything starting with the signature; leading blank
    # lines are a common slip.
    stripped = text.lstrip()
    actual = "vtt" if stripped.startswith("WEBVTT") else "srt"
    if actual != declared:
        log.info("subtitle file declared %s reads as %s", declared.upper(), actual.upper())
    if actual == "vtt":
        return _vtt_from_webvtt(stripped)
    return _vtt_from_srt(text)


@dataclass
class _Cue:
    """A cue on its way out: times in milliseconds, where it came from, for logs."""

    number: int
    line: int | None
    start: int
    end: int
    caption: webvtt.Caption


def _where(number: int, line: int | None) -> str:
    return f"cue {number}" + (f" (line {line})" if line is not None else "")


class _Skips:
    """Logs skipped cues: the first few one by one, then only a count, so a broken file cannot flood the log."""

    def __init__(self) -> None:
        self.count = 0
        self.unlogged = 0

    def skip(self, number: int, line: int | None, reason: str) -> None:
        self.count += 1
        if self.count <= _MAX_LOGGED_SKIPS:
            log.warning("skipped %s: %s", _where(number, line), reason)
        else:
            self.unlogged += 1

    def skip_unlocated(self, count: int, what: str) -> None:
        self.count += count
        log.warning("skipped %d %s", count, what)

    def close(self) -> None:
        if self.unlogged:
            log.warning("skipped %d more cues", self.unlogged)


def _write(cues: list[_Cue], skips: _Skips, **blocks: list) -> str:
    """Repairs times, orders the cues and writes them with webvtt-py."""
    usable = []
    for cue in cues:
        if cue.start == cue.end:
            skips.skip(cue.number, cue.line, "it ends when it starts")
            continue
        if cue.end < cue.start:
            log.info("%s: end before start, times swapped", _where(cue.number, cue.line))
            cue.start, cue.end = cue.end, cue.start
            cue.caption.start_time, cue.caption.end_time = cue.caption.end_time, cue.caption.start_time
        usable.append(cue)
    skips.close()
    if not usable:
        reason = f"all {skips.count} cues were unusable" if skips.count else "no cue timing line (start --> end) found"
        raise CaptionError(f"no usable subtitles in the file: {reason}")
    usable.sort(key=lambda cue: (cue.start, cue.end))
    return webvtt.WebVTT(captions=[cue.caption for cue in usable], **blocks).content


# ---------------------------------------------------------------- WebVTT


def _vtt_from_webvtt(text: str) -> str:
    parsed = webvtt.from_string(text)
    skips = _Skips()
    # webvtt-py drops malformed cue blocks silently; every cue block has one
    # timing line, so the difference counts them.
    dropped = sum("-->" in line for line in text.split("\n")) - len(parsed.captions)
    if dropped > 0:
        skips.skip_unlocated(dropped, "malformed WebVTT cue block(s)")
    cues = []
    for number, caption in enumerate(parsed.captions, 1):
        if not caption.text.strip():
            skips.skip(number, None, "no text")
            continue
        caption.settings = _valid_cue_settings(caption.settings)
        caption.comments = []
        cues.append(_Cue(number, None, caption.start_time.in_milliseconds(), caption.end_time.in_milliseconds(), caption))
    regions = [_valid_region(region) for region in parsed.regions]
    for style in parsed.styles:
        style.comments = []
    return _write(cues, skips, styles=parsed.styles, regions=regions)


def _valid_cue_settings(settings: webvtt.CueSettings) -> webvtt.CueSettings:
    # The properties give the last valid value of each setting; rebuilding
    # from them drops unknown, invalid and repeated ones.
    return webvtt.CueSettings(
        vertical=settings.vertical,
        line=settings.line,
        position=settings.position,
        size=settings.size,
        align=settings.align,
        region=settings.region,
    )


def _valid_region(region: webvtt.Region) -> webvtt.Region:
    return webvtt.Region(
        id=region.id,
        width=region.width,
        lines=region.lines,
        regionanchor=region.regionanchor,
        viewportanchor=region.viewportanchor,
        scroll=region.scroll,
    )


# ---------------------------------------------------------------- SRT

# Every quantifier is bounded and the pattern is anchored at the line start,
# so a match attempt costs at most a few dozen steps past leading spaces.
# Whatever follows the end time (SRT's X1:… coordinates) is ignored.
_TIME = r"(?:(\d{1,10})\s*:\s*)?(\d{1,3})\s*:\s*(\d{1,3})(?:\s*[,.:]\s*(\d{1,9}))?"
# The end time must end there: "00:00:xx" is not a time that reads "00:00".
_TIMING = re.compile(rf"\s*{_TIME}\s*-->\s*{_TIME}(?![\d:,.])")


@dataclass
class _SrtBlock:
    """A timing line and the text lines up to the next one."""

    number: int
    line: int
    timing: str
    text: list[str] = field(default_factory=list)


def _vtt_from_srt(text: str) -> str:
    skips = _Skips()
    cues = []
    for block in _srt_blocks(text):
        cue = _srt_cue(block, skips)
        if cue is not None:
            cues.append(cue)
    return _write(cues, skips)


def _srt_blocks(text: str) -> list[_SrtBlock]:
    """Splits the text at timing lines; lines before the first one are not subtitles."""
    blocks: list[_SrtBlock] = []
    for number, line in enumerate(text.split("\n"), 1):
        if "-->" in line:
            # A number right above a timing line is the next cue's number,
            # not the previous cue's text.
            if blocks and blocks[-1].text and blocks[-1].text[-1].strip().isdigit():
                blocks[-1].text.pop()
            blocks.append(_SrtBlock(len(blocks) + 1, number, line))
        elif blocks:
            blocks[-1].text.append(line)
    return blocks


def _srt_cue(block: _SrtBlock, skips: _Skips) -> _Cue | None:
    match = _TIMING.match(block.timing)
    start = end = None
    if match:
        start, end = _milliseconds(*match.group(1, 2, 3, 4)), _milliseconds(*match.group(5, 6, 7, 8))
    if start is None or end is None:
        skips.skip(block.number, block.line, f"unreadable timing {block.timing[:80]!r}")
        return None
    lines, settings = _CueText.convert(block.text)
    if not lines:
        skips.skip(block.number, block.line, "no text")
        return None
    caption = webvtt.Caption(_timestamp(start), _timestamp(end), lines, settings=settings)
    return _Cue(block.number, block.line, start, end, caption)


def _milliseconds(hours: str | None, minutes: str, seconds: str, millis: str | None) -> int | None:
    """The time in milliseconds, or None when a field is out of its range."""
    h, m, s, ms = int(hours or 0), int(minutes), int(seconds), int(millis or 0)
    if m > 59 or s > 59 or ms > 999:
        return None
    return ((h * 60 + m) * 60 + s) * 1000 + ms


def _timestamp(milliseconds: int) -> str:
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return str(Timestamp(hours, minutes, *divmod(rest, 1000)))


# ---------------------------------------------------------------- cue text

_KEPT_TAGS = ("i", "b", "u")
_SPECIAL = re.compile(r"[<>&{\\]")
# A '<' or '{' further than this from its closer is text: bounding the
# search keeps a line full of unclosed '<' linear.
_MAX_TAG = 256
# What FFmpeg and VLC take for an HTML-like tag: a name starting with a
# letter, then attributes. "<3" or "< 5" stay text.
_HTML_TAG = re.compile(r"\s*/?\s*[A-Za-z][\w.:-]*(?:\s[^<]*)?/?\s*")
# MicroDVD style blocks ({Y:i}, {c:$0000FF}) that converters leave in SRT files.
_MICRODVD_BLOCK = re.compile(r"[CcFfoPSsYy]:[^{]*")
# ASS style switches: \i1 \i0 \b1 \b700 \u0 ..., no number meaning the default (off).
_ASS_STYLE = re.compile(r"([ibu])(\d*)")
_ASS_ESCAPES = {"h": "\u00a0"}

_VERTICAL = {7: "0", 8: "0", 9: "0", 4: "50%,center", 5: "50%,center", 6: "50%,center"}
_HORIZONTAL = {1: "left", 4: "left", 7: "left", 3: "right", 6: "right", 9: "right"}


class _CueText:
    """SRT cue text to WebVTT cue text: escaped, kept tags balanced, overrides read."""

    def __init__(self) -> None:
        self.open_tags: list[str] = []
        self.lines: list[str] = []
        # Markup from lines with nothing visible, carried to the next visible line.
        self.pending = ""
        self.alignment: int | None = None

    @classmethod
    def convert(cls, lines: list[str]) -> tuple[list[str], webvtt.CueSettings | None]:
        """The WebVTT lines (empty when nothing is visible) and the cue settings from ``{\\anN}``."""
        text = cls()
        for line in lines:
            # \N is ASS's forced line break, which SRT writers copy; a blank
            # line it would make cannot be in a WebVTT cue, so it goes.
            for part in line.split("\\N"):
                text.add_line(part.strip())
        if not text.lines:
            return [], None
        text.lines[-1] += text.pending + "".join(f"</{tag}>" for tag in reversed(text.open_tags))
        return text.lines, text.settings()

    def settings(self) -> webvtt.CueSettings | None:
        if self.alignment is None:
            return None
        return webvtt.CueSettings(line=_VERTICAL.get(self.alignment), align=_HORIZONTAL.get(self.alignment))

    def add_line(self, line: str) -> None:
        out: list[str] = []
        visible = False
        pos = 0
        while (match := _SPECIAL.search(line, pos)) is not None:
            i = match.start()
            out.append(line[pos:i])
            visible = visible or bool(line[pos:i].strip())
            char = line[i]
            pos = i + 1
            if char == "&":
                out.append("&amp;")
                visible = True
            elif char == ">":
                out.append("&gt;")
                visible = True
            elif char == "\\":
                escaped = _ASS_ESCAPES.get(line[pos:pos + 1])
                if escaped is None:
                    out.append("\\")
                    visible = True
                else:
                    out.append(escaped)
                    pos += 1
            elif char == "<":
                end = line.find(">", pos, pos + _MAX_TAG)
                markup = self._tag(line[pos:end]) if end != -1 else None
                if markup is None:
                    out.append("&lt;")
                    visible = True
                else:
                    out.append(markup)
                    pos = end + 1
            else:  # "{"
                end = line.find("}", pos, pos + _MAX_TAG)
                body = line[pos:end]
                if end != -1 and body.startswith("\\"):
                    out.append(self._override(body))
                    pos = end + 1
                elif end != -1 and _MICRODVD_BLOCK.fullmatch(body):
                    pos = end + 1
                else:
                    # Braces around plain words are text, as VLC and FFmpeg show them.
                    out.append("{")
                    visible = True
        out.append(line[pos:])
        visible = visible or bool(line[pos:].strip())
        if visible:
            self.lines.append(self.pending + "".join(out))
            self.pending = ""
        else:
            self.pending += "".join(out)

    def _tag(self, content: str) -> str | None:
        """The markup for the tag ``<content>``: "" to drop it, None when it is not a tag but text.

        Tags WebVTT has no equivalent for (``<font>``, ``<s>``, made-up
        ones) are dropped and their text kept, as FFmpeg and VLC show them.
        """
        name = "".join(content.split()).lower()
        if name in _KEPT_TAGS:
            return self._open(name)
        if name.startswith("/") and name[1:] in _KEPT_TAGS:
            return self._close(name[1:])
        if _HTML_TAG.fullmatch(content):
            return ""
        return None

    def _open(self, name: str) -> str:
        # Nesting a tag in itself changes nothing; refusing it keeps the
        # stack at most three deep, so closing stays cheap.
        if name in self.open_tags:
            return ""
        self.open_tags.append(name)
        return f"<{name}>"

    def _close(self, name: str) -> str:
        if name not in self.open_tags:
            return ""
        # Close the tags opened inside it too, and reopen them, so the
        # output stays well nested.
        index = self.open_tags.index(name)
        inner = self.open_tags[index + 1:]
        del self.open_tags[index:]
        self.open_tags.extend(inner)
        closers = "".join(f"</{tag}>" for tag in reversed(inner))
        return f"{closers}</{name}>" + "".join(f"<{tag}>" for tag in inner)

    def _override(self, body: str) -> str:
        """The markup for an ASS override block ``{body}``: italic, bold and underline switches; the rest is dropped."""
        markup = []
        for part in body.split("\\"):
            part = part.strip()
            if self.alignment is None and len(part) >= 3 and part.startswith("an") and part[2] in "123456789":
                self.alignment = int(part[2])
            elif part == "r":  # back to the style's defaults
                markup.extend(self._close(tag) for tag in reversed(self.open_tags))
            elif style := _ASS_STYLE.fullmatch(part):
                name, value = style.groups()
                markup.append(self._open(name) if value and int(value) else self._close(name))
        return "".join(markup)

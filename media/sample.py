"""Synthetic videos and captions for tests, demos and a first run.

The picture is a scrolling diagonal ramp in shifting colours, crossed by a
sweeping white bar, with the frame number in binary along the top and a
playback-position band along the bottom, so any two frames differ and a
poster is never blank. The sound is a low tone with a short high beep on
every whole second. All of it is made in-process with PyAV, fast enough to
run per test session: a 4 s 320x240 clip takes about a tenth of a second.

``python -m media.sample --library DIR [--seconds N]`` fills an empty
library with two captioned samples, the first-run step of the README.
"""

from __future__ import annotations

import argparse
import array
import math
import os
import pathlib
import sys
import tempfile
from fractions import Fraction

import av

import atomic_write
from media.filesystem_ingest import write_into_folder
from media.ingest import new_video
from media.store import VIDEO_TYPES

AUDIO_RATE = 48000
# container -> (muxer, video encoder, audio encoder, muxer options)
_FORMATS = {
    "mp4": ("mp4", "libx264", "aac", {"movflags": "+faststart"}),
    "m4v": ("mp4", "libx264", "aac", {"movflags": "+faststart"}),
    "mov": ("mov", "libx264", "aac", {"movflags": "+faststart"}),
    "mkv": ("matroska", "libx264", "aac", {}),
    "webm": ("webm", "libvpx-vp9", "libopus", {}),
}
_ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast"},
    # Realtime VP9 is some 50x faster than the default "good" deadline.
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "lag-in-frames": "0"},
}
# Bump when the picture or sound changes, so cached clips are made afresh.
_PATTERN_VERSION = 1
_BLACK, _WHITE = 16, 235  # video-range luma


def make_video(
    path: str, seconds: float = 4.0, container: str = "mp4", width: int = 320, height: int = 240, fps: int = 24
) -> str:
    """Writes a ``seconds`` long clip with sound to ``path`` and returns ``path``.

    mp4, m4v, mov and mkv hold H.264 (yuv420p) and AAC, with the index at the
    front of mp4/m4v/mov so playback starts before the download ends; webm
    holds VP9 and Opus. There is a keyframe every second, so seeking is exact
    to the second. A failed write leaves no file behind.
    """
    if container not in _FORMATS:
        raise ValueError(f"container must be one of {', '.join(_FORMATS)}, not {container!r}")
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and at least 2, not {width}x{height}")
    if seconds <= 0 or fps <= 0:
        raise ValueError("seconds and fps must be positive")
    muxer, video_codec, audio_codec, muxer_options = _FORMATS[container]
    frames = max(1, round(seconds * fps))
    sound = _sound(seconds)
    sound_samples = len(sound) // 2
    try:
        with av.open(path, "w", format=muxer, container_options=muxer_options) as output:
            video = output.add_stream(video_codec, rate=fps, options=_ENCODER_OPTIONS[video_codec])
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.gop_size = fps
            audio = output.add_stream(audio_codec, rate=AUDIO_RATE, layout="mono")
            picture = _Picture(width, height, frames)
            for index in range(frames):
                output.mux(video.encode(picture.frame(index, fps)))
                # The sound is cut at frame boundaries so the muxer gets both
                # streams in step and interleaves them finely.
                first, end = index * AUDIO_RATE // fps, (index + 1) * AUDIO_RATE // fps
                if first < sound_samples:
                    output.mux(audio.encode(_audio_frame(sound, first, min(end, sound_samples))))
            output.mux(video.encode())
            output.mux(audio.encode())
    except BaseException:
        pathlib.Path(path).unlink(missing_ok=True)
        raise
    return path


def cached_video(
    container: str = "mp4", seconds: float = 4.0, width: int = 320, height: int = 240, fps: int = 24
) -> str:
    """The path of a clip as :func:`make_video` makes it, made once per machine and user.

    Clips live in a folder under the system temp dir, named by their
    parameters; a test may read but must not modify them.
    """
    folder = os.path.join(tempfile.gettempdir(), f"binge-sample-media-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"v{_PATTERN_VERSION}-{seconds:g}s-{width}x{height}-{fps}fps.{container}")
    if not os.path.exists(path):
        # Made under a private name and renamed, so a parallel test run never
        # reads a clip half-written.
        with atomic_write.staged(path) as part:
            make_video(part, seconds, container, width, height, fps)
    return path


def write_srt(path: str, cues: list[tuple[float, float, str]]) -> str:
    """Writes ``(start, end, text)`` cues, times in seconds, as a UTF-8 SubRip file."""
    blocks = [f"{n}\n{_srt_time(start)} --> {_srt_time(end)}\n{text}\n" for n, (start, end, text) in enumerate(cues, 1)]
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(blocks))
    return path


def populate_library(folder: str, seconds: float = 10.0) -> list[str]:
    """Adds two captioned sample videos to ``folder`` unless it already holds a video.

    ``sample`` is 640x360 H.264/AAC MP4 with English captions and
    ``sample-webm`` VP9/Opus WebM with French ones (the WebM plays in every browser, Chromium
    builds without H.264 included). Both go in as ``binge-ingest`` would put
    them, posters and metadata included. Returns the ids added.
    """
    os.makedirs(folder, exist_ok=True)
    if any(_is_video_name(name) for name in os.listdir(folder)):
        return []
    samples = [
        ("sample", "Binge+ sample (H.264)", "mp4", "en", _caption_script("en", seconds)),
        ("sample-webm", "Binge+ sample (VP9)", "webm", "fr", _caption_script("fr", seconds)),
    ]
    added = []
    with tempfile.TemporaryDirectory() as scratch:
        for video_id, name, container, lang, cues in samples:
            video = make_video(os.path.join(scratch, f"{video_id}.{container}"), seconds, container, 640, 360)
            captions = write_srt(os.path.join(scratch, f"{video_id}.{lang}.srt"), cues)
            write_into_folder(folder, new_video(video, video_id, name, [(captions, lang)]), lambda done: None)
            added.append(video_id)
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m media.sample", description="Fill an empty video library with captioned sample videos."
    )
    parser.add_argument("--library", required=True, help="library folder (created if missing)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each sample (default 10)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be between 0 and 600")
    added = populate_library(args.library, args.seconds)
    if added:
        print(f"added {', '.join(added)} to {os.path.abspath(args.library)}")
    else:
        print(f"{os.path.abspath(args.library)} already holds videos; added none", file=sys.stderr)
    return 0


class _Picture:
    """Frames of the test pattern; rows are slices of a precomputed ramp, so a frame costs a few hundred slices."""

    def __init__(self, width: int, height: int, frames: int) -> None:
        self.width, self.height, self.frames = width, height, frames
        self.ramp = bytes(_BLACK + k % (_WHITE - _BLACK) for k in range(width + height + (_WHITE - _BLACK)))
        self.bar_width = max(2, width // 16)
        self.cell = max(1, width // 16)  # one bit of the frame number
        self.strip = max(2, height // 24 * 2)  # even, so it covers whole chroma rows

    def frame(self, index: int, fps: int) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        luma, cb, cr = frame.planes
        luma.update(self._rows(self._luma_rows(index), luma.line_size))
        chroma_w, chroma_h = cb.width, cb.height
        # The top and bottom strips stay grey so their bits read as black and white.
        grey = bytes([128]) * chroma_w
        in_strip = [y < self.strip // 2 or y >= chroma_h - self.strip // 2 for y in range(chroma_h)]
        cb_rows = [grey if in_strip[y] else bytes([64 + (y * 128 // chroma_h + 3 * index) % 128]) * chroma_w
                   for y in range(chroma_h)]
        cr_row = bytes(64 + (x * 128 // chroma_w + 5 * index) % 128 for x in range(chroma_w))
        cb.update(self._rows(cb_rows, cb.line_size))
        cr.update(self._rows([grey if strip else cr_row for strip in in_strip], cr.line_size))
        frame.pts = index
        frame.time_base = Fraction(1, fps)
        return frame

    def _luma_rows(self, index: int) -> list[bytes]:
        w, h, period = self.width, self.height, _WHITE - _BLACK
        shift = 3 * index % period
        bar_x = index * 4 % (w - self.bar_width) if w > self.bar_width else 0
        bar = bytes([_WHITE]) * self.bar_width
        counter = b"".join(bytes([_WHITE if index >> bit & 1 else _BLACK]) * self.cell for bit in reversed(range(16)))
        counter = counter[:w].ljust(w, bytes([_BLACK]))
        filled = w * (index + 1) // self.frames
        position = bytes([_WHITE]) * filled + bytes([_BLACK]) * (w - filled)
        rows = []
        for y in range(h):
            if y < self.strip:
                rows.append(counter)
            elif y >= h - self.strip:
                rows.append(position)
            else:
                row = self.ramp[y + shift : y + shift + w]
                rows.append(row[:bar_x] + bar + row[bar_x + self.bar_width :])
        return rows

    @staticmethod
    def _rows(rows: list[bytes], line_size: int) -> bytes:
        # Planes may be padded past their width for alignment.
        pad = b"\0" * (line_size - len(rows[0]))
        return b"".join(row + pad for row in rows) if pad else b"".join(rows)


def _sound(seconds: float) -> bytes:
    """Mono signed 16-bit samples: a 480 Hz tone with a 960 Hz beep on each second."""
    # Both periods are whole numbers of samples at 48 kHz, so one period repeats exactly.
    tone = array.array("h", (round(3000 * math.sin(2 * math.pi * k / 100)) for k in range(100)))
    beep = array.array("h", (round(9000 * math.sin(2 * math.pi * k / 50)) for k in range(50)))
    second = beep * (AUDIO_RATE // 10 // 50) + tone * (AUDIO_RATE * 9 // 10 // 100)
    samples = second * math.ceil(seconds)
    return samples[: round(seconds * AUDIO_RATE)].tobytes()


def _audio_frame(sound: bytes, first: int, end: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="mono", samples=end - first)
    frame.planes[0].update(sound[2 * first : 2 * end])
    frame.sample_rate = AUDIO_RATE
    frame.pts = first
    frame.time_base = Fraction(1, AUDIO_RATE)
    return frame


def _caption_script(lang: str, seconds: float) -> list[tuple[float, float, str]]:
    lines = {
        "en": ["Welcome to <b>Binge+</b>", "This is a sample video", "Captions follow playback", "Enjoy the show"],
        "fr": ["Bienvenue sur <b>Binge+</b>", "Ceci est une vidéo d'exemple", "Les sous-titres suivent la lecture",
               "Bon visionnage"],
    }[lang]
    step = seconds / len(lines)
    gap = min(0.1, step / 4)
    return [(i * step, (i + 1) * step - gap, text) for i, text in enumerate(lines)]


def _srt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02}:{minutes:02}:{secs:02},{millis:03}"


def _is_video_name(name: str) -> bool:
    stem, _, ext = name.rpartition(".")
    return bool(stem) and not name.startswith(".") and ext.lower() in VIDEO_TYPES


if __name__ == "__main__":
    sys.exit(main())

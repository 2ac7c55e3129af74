"""What is inside a video file: duration, container, codecs, and a poster frame.

Everything here reads the media itself with PyAV; file names and extensions
are only a hint for telling apart containers that share a demuxer (mp4, m4v
and mov; webm and mkv). A file that is not a video the server can serve
raises :class:`media.store.InvalidInput` with a message fit for a user.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction

import av
import av.filter
from av.stream import Disposition

from media.store import VIDEO_TYPES, InvalidInput

# Codecs the WebM specification allows; anything else in Matroska is served as mkv.
_WEBM_CODECS = {"vp8", "vp9", "av1", "opus", "vorbis"}
# A seek here (in microseconds, about 30 years) lands on the last keyframe; far
# larger values overflow when rescaled to a stream's time base.
_END_OF_TIME = 10**15
# JPEG quantiser scale, as ffmpeg's -q:v (2 best .. 31 worst).
_JPEG_QSCALE = "3"


@dataclass(frozen=True)
class MediaInfo:
    duration_seconds: float | None
    # Our extension key for the container: mp4, m4v, mov, webm or mkv.
    container: str
    mime_type: str
    # Coded frame size; a rotated phone video reports its sensor orientation.
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None


def probe(path: str) -> MediaInfo:
    """Reads the container header (and, if it has no duration, its last packets).

    Raises ``InvalidInput`` for a file that is not media, has no video stream,
    or is in a container the server does not serve; ``OSError`` for a file
    that cannot be read at all.
    """
    with _open(path) as container:
        video = _video_stream(container, path)
        audio = next(iter(container.streams.audio), None)
        return MediaInfo(
            duration_seconds=_duration(container, video),
            container=(key := _container_key(container, path)),
            mime_type=VIDEO_TYPES[key],
            width=video.codec_context.width or None,
            height=video.codec_context.height or None,
            video_codec=_codec_name(video),
            audio_codec=_codec_name(audio) if audio is not None else None,
        )


def poster_jpeg(path: str, at_fraction: float = 0.1, max_width: int = 640) -> bytes:
    """A JPEG of the frame ``at_fraction`` of the way in, at most ``max_width`` wide.

    The frame is turned upright by the video's display rotation and scaled to
    its display aspect ratio, so the poster looks like the first moments of
    playback. Raises ``InvalidInput`` when no frame can be decoded.
    """
    with _open(path) as container:
        stream = _video_stream(container, path)
        duration = _duration(container, stream)
        frame = _frame_at(container, stream, (duration or 0.0) * min(max(at_fraction, 0.0), 1.0))
        if frame is None:
            raise InvalidInput(f"{_name(path)}: no video frame could be decoded; the file may be damaged or cut short")
        sar = stream.codec_context.sample_aspect_ratio or Fraction(1)
        clockwise = -frame.rotation % 360
        frame = _upright(frame, clockwise)
        if clockwise in (90, 270):
            sar = 1 / sar
        return _encode_jpeg(frame, _poster_size(frame.width * sar, frame.height, max_width))


def human_duration(seconds: float | None) -> str:
    """A duration as the catalog shows it: "45 secs", "1 min", "3 mins", "1 hr 5 mins".

    Seconds below a minute, otherwise whole minutes (rounded half up), with
    hours split off from 60 minutes on. ``None`` or a nonsensical value gives
    "unknown".
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "unknown"
    if math.floor(seconds + 0.5) < 60:
        return _plural(math.floor(seconds + 0.5), "sec")
    minutes = math.floor(seconds / 60 + 0.5)
    if minutes < 60:
        return _plural(minutes, "min")
    hours, minutes = divmod(minutes, 60)
    return _plural(hours, "hr") + (f" {_plural(minutes, 'min')}" if minutes else "")


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _name(path: str) -> str:
    return os.path.basename(path) or path


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, "r", metadata_errors="replace")
    except av.FFmpegError as e:
        # Demuxers report damaged data with errno codes too (EIO, EPERM), so
        # only a file Python cannot read counts as an OSError.
        if isinstance(e, OSError) and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise
        raise InvalidInput(f"{_name(path)}: not a video file, or a damaged one ({e.strerror or e})") from None


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    # An audio file's cover art is a one-picture "video" stream; it is not a video.
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    raise InvalidInput(f"{_name(path)}: has no video stream")


def _container_key(container: av.container.InputContainer, path: str) -> str:
    demuxer = container.format.name.split(",")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if "mp4" in demuxer:
        if ext in ("mp4", "m4v", "mov"):
            return ext
        return "mov" if container.metadata.get("major_brand", "").strip() == "qt" else "mp4"
    if "matroska" in demuxer:
        codecs = {_codec_name(s) for s in container.streams if s.type in ("video", "audio")}
        return "webm" if ext != "mkv" and codecs <= _WEBM_CODECS else "mkv"
    # FFmpeg reads any .txt file as a terminal recording ("tty"); call it what it is.
    kind = "text" if demuxer == ["tty"] else container.format.long_name
    raise InvalidInput(f"{_name(path)}: not a video the server plays ({kind}); use {', '.join(VIDEO_TYPES)}")


def _codec_name(stream: av.stream.Stream) -> str:
    # The format's name ("av1"), not the decoder's that FFmpeg picked ("libdav1d").
    return stream.codec_context.codec.canonical_name


def _duration(container: av.container.InputContainer, video: av.video.stream.VideoStream) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if video.duration is not None and video.duration > 0 and video.time_base:
        return float(video.duration * video.time_base)
    return _duration_from_packets(container)


def _duration_from_packets(container: av.container.InputContainer) -> float | None:
    """The end of the last packet, for containers that never wrote a duration.

    WebM recorded live (MediaRecorder, a non-seekable muxer) is the usual case.
    A seek to the end of time lands on the last keyframe, so only the tail is
    read; a container that cannot seek is read from the start.
    """
    start = container.start_time / av.time_base if container.start_time is not None else 0.0
    try:
        container.seek(_END_OF_TIME, backward=True)
    except av.FFmpegError:
        _rewind(container)
    end = None
    try:
        for packet in container.demux():
            if packet.pts is None or packet.time_base is None:
                continue
            packet_end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            end = packet_end if end is None else max(end, packet_end)
    except av.FFmpegError:
        # A damaged tail: the packets read before it still bound the duration.
        pass
    return end - start if end is not None and end > start else None


def _frame_at(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, seconds: float
) -> av.VideoFrame | None:
    """The first frame at or after ``seconds``, else the last one before it."""
    if seconds > 0 and stream.time_base:
        start = stream.start_time or 0
        try:
            container.seek(start + int(seconds / stream.time_base), stream=stream)
        except av.FFmpegError:
            _rewind(container)
    last = None
    try:
        for frame in container.decode(stream):
            if frame.time is None or frame.time >= seconds:
                return frame
            last = frame
    except av.FFmpegError:
        # A damaged tail still leaves the frames decoded before it.
        pass
    return last


def _rewind(container: av.container.InputContainer) -> None:
    """Back to the start after a failed seek; where even that fails, reading goes on from where it is."""
    try:
        container.seek(0)
    except av.FFmpegError:
        pass


def _upright(frame: av.VideoFrame, clockwise: int) -> av.VideoFrame:
    """``frame`` turned ``clockwise`` degrees, as a player applying its display matrix shows it."""
    filters = {90: [("transpose", "clock")], 180: [("hflip", None), ("vflip", None)],
               270: [("transpose", "cclock")]}.get(clockwise)
    if not filters:
        return frame
    graph = av.filter.Graph()
    nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                              time_base=frame.time_base or Fraction(1, 1))]
    nodes += [graph.add(name, args) for name, args in filters]
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    graph.push(frame)
    return graph.pull()


def _poster_size(display_width: Fraction | float, height: int, max_width: int) -> tuple[int, int]:
    # Even sizes: the JPEG is 4:2:0, whose chroma planes are half size.
    width = min(max_width, round(display_width))
    scaled_height = round(height * width / display_width)
    return max(2, width - width % 2), max(2, scaled_height - scaled_height % 2)


def _encode_jpeg(frame: av.VideoFrame, size: tuple[int, int]) -> bytes:
    width, height = size
    # JPEG is full range; the conversion expands the video's limited-range levels.
    picture = frame.reformat(width, height, format="yuv420p", dst_color_range="JPEG")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.color_range = picture.color_range
    encoder.time_base = Fraction(1, 1)
    encoder.options = {"qmin": _JPEG_QSCALE, "qmax": _JPEG_QSCALE}
    picture.pts = 0
    picture.time_base = encoder.time_base
    return b"".join(bytes(p) for p in encoder.encode(picture) + encoder.encode(None))

"""How the Pravega store lays videos and their catalog out in a scope.

Each ingested version of a video is one single-segment byte stream named
``v-<hash of the id>-<write id>``, sealed once written: the video's bytes
from offset 0, then its poster (JPEG) and caption files. A fresh stream per version is what makes
ingest safe to re-run: the client's byte writer can only append to a stream
it wrote from offset 0, and a reader of the previous version keeps reading
unchanged bytes while the new one is written.

The catalog is the event stream ``catalog`` (one segment, so one order for
everybody). Each event is one UTF-8 JSON record, written only after the
video's bytes are flushed; the latest record for an id wins::

    {"v": 1, "id": "alpha", "stream": "v-…-…", "size": 1234567,
     "name": "Alpha Clip", "mimeType": "video/mp4", "durationSeconds": 4.0,
     "writtenAt": 1732467000.5, "digest": "<sha256 of the ingested content>",
     "poster": {"offset": 1234567, "length": 20480} | null,
     "captions": [{"lang": "en", "label": "English", "format": "srt",
                   "offset": 1255047, "length": 512}],
     "metadata": {...}}

Records of another ``v`` are skipped, so a newer writer cannot confuse an
older reader.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ujson

from media.store import VIDEO_TYPES, CaptionTrack, VideoRecord, poster_url
from pravega_workers.layout import name_prefix

log = logging.getLogger("binge.store")

CATALOG_STREAM = "catalog"
RECORD_VERSION = 1
# Every video stream is named "v-...", and nothing else in the scope is.
_VIDEO_STREAMS = "v"


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int


@dataclass(frozen=True)
class StoredVideo:
    """A catalog record: the video as served, and where its parts lie in its stream."""

    record: VideoRecord
    stream: str
    digest: str
    poster: Extent | None
    captions: dict[str, Extent]


def stream_prefix(video_id: str) -> str:
    """The start of the names of every stream written for ``video_id``."""
    return name_prefix(_VIDEO_STREAMS, video_id)


def video_stream_name(video_id: str, write_id: str) -> str:
    return stream_prefix(video_id) + write_id


def encode_record(
    *,
    video_id: str,
    stream: str,
    size: int,
    name: str,
    mime_type: str,
    duration_seconds: float | None,
    written_at: float,
    digest: str,
    poster: Extent | None,
    captions: list[tuple[CaptionTrack, Extent]],
    metadata: dict,
) -> bytes:
    record = {
        "v": RECORD_VERSION,
        "id": video_id,
        "stream": stream,
        "size": size,
        "name": name,
        "mimeType": mime_type,
        "durationSeconds": duration_seconds,
        "writtenAt": written_at,
        "digest": digest,
        "poster": _extent_json(poster) if poster else None,
        "captions": [
            {"lang": t.lang, "label": t.label, "format": t.format, **_extent_json(e)} for t, e in captions
        ],
        "metadata": metadata,
    }
    return ujson.dumps(record, ensure_ascii=False, escape_forward_slashes=False).encode()


def decode_record(data: bytes) -> StoredVideo | None:
    """The video a record describes; None, with a warning, for one this version cannot use."""
    try:
        raw = ujson.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != RECORD_VERSION:
            log.warning("skipping a catalog record of an unknown version: %.200r", data)
            return None
        return _stored_video(raw)
    except (ValueError, KeyError, TypeError) as e:
        log.warning("skipping a malformed catalog record (%s): %.200r", e, data)
        return None


def _extent_json(extent: Extent) -> dict:
    return {"offset": extent.offset, "length": extent.length}


def _extent(raw: dict) -> Extent:
    offset, length = raw["offset"], raw["length"]
    if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
        raise ValueError(f"bad extent {raw!r}")
    return Extent(offset, length)


def _stored_video(raw: dict) -> StoredVideo:
    video_id, stream, size = raw["id"], raw["stream"], raw["size"]
    if not isinstance(video_id, str) or not isinstance(stream, str) or not isinstance(size, int) or size < 0:
        raise ValueError("id, stream or size missing")
    mime_type = raw["mimeType"]
    if mime_type not in VIDEO_TYPES.values():
        raise ValueError(f"unknown type {mime_type!r}")
    metadata = raw.get("metadata") or {}
    poster = _extent(raw["poster"]) if raw.get("poster") else None
    captions = {c["lang"]: (CaptionTrack(c["lang"], c["label"], c["format"]), _extent(c)) for c in raw["captions"]}
    duration = raw.get("durationSeconds")
    written_at = float(raw["writtenAt"])
    record = VideoRecord(
        id=video_id,
        name=raw["name"],
        size=size,
        mime_type=mime_type,
        # The stream name holds a write id of its own, so the tag changes with every ingest.
        etag=f'"{stream}.{size:x}"',
        last_modified=written_at,
        duration_seconds=float(duration) if isinstance(duration, (int, float)) else None,
        captions=tuple(track for track, _ in captions.values()),
        poster_url=poster_url(metadata),
        has_poster=poster is not None,
        metadata=metadata,
        locator=stream,
    )
    return StoredVideo(
        record=record,
        stream=stream,
        digest=str(raw["digest"]),
        poster=poster,
        captions={lang: extent for lang, (_, extent) in captions.items()},
    )

"""Puts an ingested video into Pravega, in the layout of :mod:`media.pravega_catalog`.

The order makes a failure at any point invisible: the video's bytes, poster
and captions go into a new stream and are flushed, the length is checked,
the stream is sealed, and only then is the catalog record written, in one
event. A stream left by
an ingest that died before its record is never served, and is deleted by the
next ingest of that id.

Running an ingest again is safe: when the content (video bytes, poster,
captions, name, type, duration and metadata) is what the catalog already
holds for the id, nothing is written; otherwise the new version replaces the
old one. The version it replaces is kept, so that reads already under way
on other servers finish, and deleted by the ingest after that. Two ingests
of one id at the same time are not supported: the later record wins.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from typing import Callable

import ujson

from media.filesystem import language_label
from media.pravega_catalog import (
    CATALOG_STREAM,
    Extent,
    StoredVideo,
    decode_record,
    encode_record,
    stream_prefix,
    video_stream_name,
)
from media.store import (
    VIDEO_TYPES, CaptionTrack, InvalidInput, NewVideo, Unavailable, VideoRecord, check_captions, check_video_id,
)
from pravega_workers.blocking import (
    EventReader, PravegaError, calling, delete_streams, ensure_event_stream, stream_manager,
)
from settings import Settings

log = logging.getLogger("binge.ingest")

# The client appends at most 8 MiB per call.
_APPEND = 8 * 1024 * 1024


def ingest_into_pravega(settings: Settings, item: NewVideo, progress: Callable[[int], None]) -> VideoRecord:
    """Writes ``item`` into the configured scope and returns its catalog record.

    ``progress`` is called with the number of video bytes written so far.
    Raises ``InvalidInput`` for a bad item, ``Unavailable`` when Pravega
    fails (the client retries an unreachable controller for about a minute
    first) and ``OSError`` when the source cannot be read.
    """
    _check(item)
    size = os.path.getsize(item.source_path)
    digest = _digest(item)
    scope = settings.pravega.scope
    try:
        manager = stream_manager(settings.pravega.controller_uri)
        ensure_event_stream(manager, scope, CATALOG_STREAM)
        current = replay_catalog(manager, scope).get(item.id)
        if current is not None and current.digest == digest:
            progress(size)
            return current.record
        stream = video_stream_name(item.id, uuid.uuid4().hex[:16])
        with calling(f"creating stream {stream!r}"):
            manager.create_stream(scope, stream, 1)
            byte_stream = manager.create_byte_stream(scope, stream)
        poster, captions = _write_content(byte_stream, item, size, progress)
        # A sealed stream is immutable, and a read at its end returns at once instead of waiting for data.
        with calling(f"sealing stream {stream!r}"):
            manager.seal_stream(scope, stream)
        record = encode_record(
            video_id=item.id,
            stream=stream,
            size=size,
            name=item.name,
            mime_type=item.mime_type,
            duration_seconds=item.duration_seconds,
            written_at=time.time(),
            digest=digest,
            poster=poster,
            captions=captions,
            metadata=item.metadata,
        )
        with calling("writing the catalog record"):
            writer = manager.create_writer(scope, CATALOG_STREAM)
            writer.write_event_bytes(record)
            writer.flush()
        _delete_old_versions(manager, scope, item.id, keep={stream, current.stream if current else stream})
    except PravegaError as e:
        raise Unavailable(f"Pravega at {settings.pravega.controller_uri}: {e}") from None
    return decode_record(record).record


def _check(item: NewVideo) -> None:
    check_video_id(item.id)
    if item.mime_type not in VIDEO_TYPES.values():
        raise InvalidInput(f"video {item.id!r}: {item.mime_type!r} is not a type the store serves")
    check_captions(item.captions)


def _digest(item: NewVideo) -> str:
    """A hash of everything a record and its stream would hold, to recognise a repeated ingest."""
    h = hashlib.sha256()
    with open(item.source_path, "rb", buffering=0) as f:
        buffer = memoryview(bytearray(_APPEND))
        while n := f.readinto(buffer):
            h.update(buffer[:n])
    described = {
        "name": item.name, "mimeType": item.mime_type, "durationSeconds": item.duration_seconds,
        "metadata": item.metadata, "poster": hashlib.sha256(item.poster).hexdigest() if item.poster else None,
        "captions": {lang: [fmt, hashlib.sha256(data).hexdigest()] for lang, (data, fmt) in item.captions.items()},
    }
    h.update(ujson.dumps(described, sort_keys=True).encode())
    return h.hexdigest()


def _write_content(
    byte_stream, item: NewVideo, size: int, progress: Callable[[int], None]
) -> tuple[Extent | None, list[tuple[CaptionTrack, Extent]]]:
    """Appends the video, then the poster and captions; returns where those two went."""
    written = 0

    def append(data: bytes) -> None:
        nonlocal written
        done = 0
        with calling("appending"):
            while done < len(data):
                # write() takes bytes and appends at most 8 MiB of them.
                done += byte_stream.write(data[done:] if done else data)
        written += len(data)

    with open(item.source_path, "rb", buffering=0) as f:
        while written < size and (data := f.read(min(_APPEND, size - written))):
            append(data)
            progress(written)
    if written != size:
        raise InvalidInput(f"{item.source_path} changed while it was being ingested")
    poster = None
    if item.poster:
        poster = Extent(written, len(item.poster))
        append(item.poster)
    captions = []
    for lang, (data, fmt) in sorted(item.captions.items()):
        captions.append((CaptionTrack(lang, language_label(lang), fmt), Extent(written, len(data))))
        append(data)
    with calling("flushing"):
        byte_stream.flush()
        tail = byte_stream.current_tail_offset()
    if tail != written:
        raise PravegaError("unavailable", f"the stream holds {tail} bytes after writing {written}")
    return poster, captions


def _delete_old_versions(manager, scope: str, video_id: str, keep: set[str]) -> None:
    """Deletes this id's streams other than ``keep``: versions two ingests old and unpublished ones.

    Best effort: a stream that cannot be deleted now is deleted by a later ingest.
    """
    try:
        delete_streams(manager, scope, stream_prefix(video_id), keep=keep)
    except PravegaError as e:
        log.warning("cannot delete old versions of %r: %s", video_id, e)


def replay_catalog(manager, scope: str) -> dict[str, StoredVideo]:
    """The catalog as it stands now: the latest usable record of each id."""
    reader = EventReader(manager, scope, CATALOG_STREAM)
    videos: dict[str, StoredVideo] = {}
    caught_up = False
    while not caught_up:
        records, caught_up = reader.read_new()
        for _, data in records:
            stored = decode_record(data)
            if stored is not None:
                videos[stored.record.id] = stored
    return videos

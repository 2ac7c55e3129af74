"""Puts an ingested video into a filesystem library, in the layout the store reads.

For id ``ID`` it writes ``ID.<ext>`` (the video, copied), ``ID.<lang>.srt|vtt``
(captions), ``ID.jpg`` (the poster) and ``ID.json`` (``name``,
``durationSeconds``, ``poster`` and the item's other metadata). Every file is
written under a hidden ``.part`` name, which the store skips, and renamed
into place, so a scan never sees half a file; the video is copied first and
renamed last, so a failed copy changes nothing and a new video appears with
its captions and metadata already beside it. Ingesting an id again replaces
it: files of the old version that the new one lacks (another container,
captions in a language no longer given, a poster) are removed.
"""

from __future__ import annotations

import os
import pathlib
from typing import Callable

import ujson

import atomic_write
from media.store import (
    CAPTION_FORMATS, LANGUAGE_TAG, VIDEO_TYPES, InvalidInput, NewVideo, check_captions, check_video_id,
)
from settings import Settings

_COPY_CHUNK = 1024 * 1024


def ingest_into_library(settings: Settings, item: NewVideo, progress: Callable[[int], None]) -> str:
    """Writes ``item`` into ``settings.storage.library``; see :func:`write_into_folder`."""
    return write_into_folder(settings.storage.library, item, progress)


def write_into_folder(folder: str, item: NewVideo, progress: Callable[[int], None]) -> str:
    """Writes ``item`` into the library ``folder`` and returns the video's file name.

    ``progress`` is called with the number of video bytes copied so far.
    """
    check_video_id(item.id)
    check_captions(item.captions)
    video_name = f"{item.id}.{_extension(item)}"
    files = {f"{item.id}.{lang}.{fmt}": data for lang, (data, fmt) in item.captions.items()}
    if item.poster is not None:
        files[f"{item.id}.jpg"] = item.poster
    meta = ujson.dumps(_metadata(item), ensure_ascii=False, escape_forward_slashes=False, indent=2)
    files[f"{item.id}.json"] = meta.encode()
    with atomic_write.staged(os.path.join(folder, video_name)) as staged_video:
        _copy(item.source_path, staged_video, progress)
        for name, data in files.items():
            atomic_write.write(os.path.join(folder, name), data, durable=True)
    _remove_stale(folder, item.id, keep={video_name, *files})
    return video_name


def _extension(item: NewVideo) -> str:
    """The source's own extension when it names the same type, else the type's first."""
    ext = os.path.splitext(item.source_path)[1].lower().lstrip(".")
    if VIDEO_TYPES.get(ext) == item.mime_type:
        return ext
    for ext, mime_type in VIDEO_TYPES.items():
        if mime_type == item.mime_type:
            return ext
    raise InvalidInput(f"video {item.id!r}: {item.mime_type!r} is not a type the library holds")


def _metadata(item: NewVideo) -> dict:
    meta: dict = {"name": item.name}
    if item.duration_seconds is not None:
        meta["durationSeconds"] = round(item.duration_seconds, 3)
    if item.poster is not None:
        meta["poster"] = f"{item.id}.jpg"
    for key, value in item.metadata.items():
        meta.setdefault(key, value)
    return meta


def _copy(source: str, destination: str, progress: Callable[[int], None]) -> None:
    buffer = memoryview(bytearray(_COPY_CHUNK))
    done = 0
    with open(source, "rb", buffering=0) as src, open(destination, "wb", buffering=0) as dst:
        while n := src.readinto(buffer):
            dst.write(buffer[:n])
            done += n
            progress(done)
        os.fsync(dst.fileno())


def _remove_stale(folder: str, video_id: str, keep: set[str]) -> None:
    """Removes the files of an earlier ingest of ``video_id`` that are not in ``keep``."""
    names = set(os.listdir(folder))
    for name in names - keep:
        if not name.startswith(video_id + "."):
            continue
        middle, _, ext = name[len(video_id) + 1 :].rpartition(".")
        ext = ext.lower()
        if middle == "" and ext in (*VIDEO_TYPES, *CAPTION_FORMATS, "jpg"):
            pathlib.Path(folder, name).unlink(missing_ok=True)
        # "ID.fr.srt" is ours, unless "ID.fr" is itself the id of a video beside it.
        elif ext in CAPTION_FORMATS and LANGUAGE_TAG.match(middle) and not _has_video(names, f"{video_id}.{middle}"):
            pathlib.Path(folder, name).unlink(missing_ok=True)


def _has_video(names: set[str], video_id: str) -> bool:
    return any(f"{video_id}.{ext}" in names for ext in VIDEO_TYPES)


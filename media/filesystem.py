"""The embedded store: a folder of video files, the default for a first run.

Layout (see README): ``<id>.<ext>`` is a video, ``<id>.<lang>.srt|vtt`` and
``<id>.srt|vtt`` its captions, ``<id>.json`` its metadata and ``<id>.jpg`` its
poster. The folder is rescanned every ``storage.scan_interval`` seconds, so
files dropped in while the server runs show up on their own; a file whose
size and mtime are unchanged is not probed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import AsyncIterator, BinaryIO

import ujson

from media.probe import probe
from media.store import (
    CAPTION_FORMATS,
    LANGUAGE_TAG,
    VIDEO_ID,
    VIDEO_TYPES,
    CaptionTrack,
    InvalidInput,
    NotFound,
    Store,
    Unavailable,
    VideoRecord,
    poster_url,
)
from settings import StorageSettings

log = logging.getLogger("binge.store")

LANGUAGE_NAMES = {
    "en": "English", "fr": "Français", "de": "Deutsch", "es": "Español", "it": "Italiano",
    "nl": "Nederlands", "pt": "Português", "ja": "日本語", "zh": "中文", "ko": "한국어", "ru": "Русский",
}


def language_label(lang: str) -> str:
    return LANGUAGE_NAMES.get(lang.split("-")[0].lower(), lang)


@dataclass(frozen=True)
class _FileStamp:
    size: int
    mtime_ns: int
    inode: int


class FilesystemStore(Store):
    name = "filesystem"

    def __init__(self, settings: StorageSettings) -> None:
        super().__init__()
        self.folder = settings.library
        self.scan_interval = settings.scan_interval
        self._videos: dict[str, VideoRecord] = {}
        # Probe results by path and stamp, so a rescan costs a stat per file.
        self._probed: dict[str, tuple[_FileStamp, float | None]] = {}
        self._scan_task: asyncio.Task | None = None
        self._last_error: str | None = None

    async def start(self) -> None:
        await self.rescan()
        self._scan_task = asyncio.create_task(self._scan_forever())

    async def close(self) -> None:
        if self._scan_task:
            self._scan_task.cancel()
            await asyncio.gather(self._scan_task, return_exceptions=True)

    async def _scan_forever(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval)
            try:
                await self.rescan()
            except Exception:
                log.exception("library scan failed")

    async def rescan(self) -> None:
        """Rereads the folder; listeners hear of it only when the catalog changed."""
        try:
            videos = await asyncio.get_running_loop().run_in_executor(None, self._scan)
            self._last_error = None
        except OSError as e:
            self._last_error = f"cannot read library {self.folder}: {e.strerror}"
            log.error(self._last_error)
            return
        if videos != self._videos:
            self._videos = videos
            self._catalog_changed()

    def videos(self) -> dict[str, VideoRecord]:
        return self._videos

    def _scan(self) -> dict[str, VideoRecord]:
        entries = {e.name: e for e in os.scandir(self.folder) if not e.name.startswith(".") and e.is_file()}
        videos: dict[str, VideoRecord] = {}
        for name, entry in entries.items():
            stem, _, ext = name.rpartition(".")
            if ext.lower() not in VIDEO_TYPES or not VIDEO_ID.match(stem):
                continue
            if stem in videos:
                log.warning("two videos with id %r in %s; using %s", stem, self.folder, videos[stem].locator)
                continue
            try:
                videos[stem] = self._record(stem, entry, ext.lower(), entries)
            except OSError as e:
                log.warning("skipping %s: %s", name, e)
        live = {os.path.join(self.folder, v.locator) for v in videos.values()}
        self._probed = {path: value for path, value in self._probed.items() if path in live}
        return videos

    def _record(self, video_id: str, entry: os.DirEntry, ext: str, entries: dict[str, os.DirEntry]) -> VideoRecord:
        st = entry.stat()
        stamp = _FileStamp(st.st_size, st.st_mtime_ns, st.st_ino)
        meta = self._metadata(video_id, entries)
        captions = []
        for name in sorted(entries):
            if not name.startswith(video_id + "."):
                continue
            middle, _, fmt = name[len(video_id) + 1 :].rpartition(".")
            if fmt.lower() in CAPTION_FORMATS and (middle == "" or LANGUAGE_TAG.match(middle)):
                lang = middle or "en"
                if all(t.lang != lang for t in captions):
                    captions.append(CaptionTrack(lang, language_label(lang), fmt.lower()))
        duration = meta.get("durationSeconds")
        if not isinstance(duration, (int, float)) or isinstance(duration, bool):
            duration = self._probe_duration(entry.path, stamp)
        name = meta.get("name") if isinstance(meta.get("name"), str) else video_id
        return VideoRecord(
            id=video_id,
            name=name,
            size=st.st_size,
            mime_type=VIDEO_TYPES[ext],
            etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}"',
            last_modified=st.st_mtime,
            duration_seconds=float(duration) if duration is not None else None,
            captions=tuple(sorted(captions, key=lambda t: t.lang)),
            poster_url=poster_url(meta),
            has_poster=f"{video_id}.jpg" in entries,
            metadata=meta,
            locator=entry.name,
        )

    def _metadata(self, video_id: str, entries: dict[str, os.DirEntry]) -> dict:
        entry = entries.get(f"{video_id}.json")
        if entry is None:
            return {}
        try:
            with open(entry.path, "rb") as f:
                meta = ujson.loads(f.read(1024 * 1024))
        except (OSError, ValueError) as e:
            log.warning("ignoring metadata %s: %s", entry.path, e)
            return {}
        return meta if isinstance(meta, dict) else {}

    def _probe_duration(self, path: str, stamp: _FileStamp) -> float | None:
        known = self._probed.get(path)
        if known and known[0] == stamp:
            return known[1]
        try:
            duration = probe(path).duration_seconds
        except InvalidInput as e:
            log.warning("cannot probe %s: %s", path, e)
            duration = None
        self._probed[path] = (stamp, duration)
        return duration

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def open_file(self, video: VideoRecord) -> BinaryIO:
        try:
            f = open(self._path(video.locator), "rb", buffering=0)
        except FileNotFoundError:
            raise NotFound(f"video {video.id!r} is no longer in the library") from None
        except OSError as e:
            raise Unavailable(f"cannot open video {video.id!r}: {e.strerror}") from None
        if os.fstat(f.fileno()).st_size != video.size:
            f.close()
            raise Unavailable(f"video {video.id!r} changed on disk; try again in a moment")
        return f

    async def read(self, video: VideoRecord, start: int, end: int, chunk_size: int) -> AsyncIterator[memoryview]:
        with self.open_file(video) as f:
            buffer = memoryview(bytearray(min(chunk_size, max(end - start, 1))))
            offset = start
            # Reads come from the page cache in well under a millisecond, cheaper
            # than a hop through a thread pool, so they run on the event loop.
            while offset < end:
                n = os.preadv(f.fileno(), [buffer[: min(len(buffer), end - offset)]], offset)
                if n == 0:
                    raise Unavailable(f"video {video.id!r} was truncated while being served")
                offset += n
                yield buffer[:n]

    async def caption_source(self, video: VideoRecord, lang: str) -> tuple[bytes, str]:
        track = video.caption(lang)
        if track is None:
            raise NotFound(f"video {video.id!r} has no {lang!r} captions")
        candidates = [f"{video.id}.{lang}.{track.format}"] + ([f"{video.id}.{track.format}"] if lang == "en" else [])
        for name in candidates:
            try:
                with open(self._path(name), "rb") as f:
                    st = os.fstat(f.fileno())
                    return f.read(), f"{st.st_size:x}-{st.st_mtime_ns:x}"
            except FileNotFoundError:
                continue
        raise NotFound(f"captions {lang!r} of video {video.id!r} are no longer in the library")

    async def poster(self, video: VideoRecord) -> bytes:
        if not video.has_poster:
            raise NotFound(f"video {video.id!r} has no poster")
        try:
            with open(self._path(f"{video.id}.jpg"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise NotFound(f"the poster of video {video.id!r} is no longer in the library") from None

    async def health(self) -> dict:
        ok = self._last_error is None and os.path.isdir(self.folder)
        return {"ok": ok, "backend": self.name, "library": self.folder, "videos": len(self._videos),
                **({"error": self._last_error} if self._last_error else {})}


"""What every storage backend offers the server.

A store owns the catalog (one :class:`VideoRecord` per video) and the bytes
behind it. Handlers and the peer layer only talk to this interface, so the
filesystem store and the Pravega store are interchangeable, and the same HTTP
tests run against both.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import AsyncIterator, BinaryIO, Callable

VIDEO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")

# Container extension -> MIME type a <video> element understands.
VIDEO_TYPES = {
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
}


CAPTION_FORMATS = ("srt", "vtt")
# A BCP 47-ish language tag, as caption file names carry it: en, pt-BR, zh-Hant.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z")


class StoreError(Exception):
    """A request the store cannot serve; ``status`` is the HTTP status to answer with."""

    status = 500


class NotFound(StoreError):
    status = 404


class Unavailable(StoreError):
    """The backing storage cannot be reached right now (Pravega down, disk gone)."""

    status = 503


class InvalidInput(StoreError):
    status = 400


def check_video_id(video_id: str) -> str:
    if not VIDEO_ID.match(video_id) or len(video_id) > 200:
        raise InvalidInput(f"invalid video id {video_id!r}: use letters, digits, '.', '_' and '-'")
    return video_id


@dataclass(frozen=True)
class CaptionTrack:
    lang: str
    label: str
    # "srt" or "vtt": what the stored source is, so it is converted only when needed.
    format: str


@dataclass(frozen=True)
class VideoRecord:
    """One video as the store knows it. Immutable: a change makes a new record."""

    id: str
    name: str
    size: int
    mime_type: str
    # Strong validator, quoted as it goes in the ETag header; changes with the bytes.
    etag: str
    last_modified: float
    duration_seconds: float | None = None
    captions: tuple[CaptionTrack, ...] = ()
    # A URL given by the video's metadata, or None.
    poster_url: str | None = None
    # True where the store holds a poster image of its own (served at /videos/{id}/poster).
    has_poster: bool = False
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def caption(self, lang: str) -> CaptionTrack | None:
        return next((t for t in self.captions if t.lang == lang), None)

    def default_caption(self) -> CaptionTrack | None:
        """The track a player shows first: English if there is one, else the first."""
        return self.caption("en") or next(iter(self.captions), None)


@dataclass(frozen=True)
class NewVideo:
    """A video on its way into a store, as the ingest command has probed it."""

    id: str
    source_path: str
    name: str
    mime_type: str
    duration_seconds: float | None
    # lang -> (caption file bytes, "srt" or "vtt")
    captions: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    poster: bytes | None = None  # JPEG
    metadata: dict = field(default_factory=dict)


class Store(abc.ABC):
    """A catalog of videos and their bytes."""

    name: str

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    async def start(self) -> None:
        """Loads the catalog and starts following changes to it."""

    async def close(self) -> None:
        """Releases files, processes and connections."""

    @abc.abstractmethod
    def videos(self) -> dict[str, VideoRecord]:
        """The catalog as it stands now, by id."""

    async def servable(self) -> dict[str, VideoRecord]:
        """The catalog ``GET /videos`` answers with; a store that may have none to give raises a StoreError."""
        return self.videos()

    def get(self, video_id: str) -> VideoRecord:
        record = self.videos().get(video_id)
        if record is None:
            raise NotFound(f"no video with id {video_id!r}")
        return record

    @abc.abstractmethod
    def read(self, video: VideoRecord, start: int, end: int, chunk_size: int) -> AsyncIterator[memoryview]:
        """Yields the bytes ``start`` to ``end`` (exclusive) in chunks of at most ``chunk_size``.

        A yielded chunk is only valid until the consumer asks for the next one:
        stores reuse one buffer per read, which keeps memory flat. Callers wrap
        the iterator in ``contextlib.aclosing`` so an abandoned read releases
        its file or reader at once.
        """

    def open_file(self, video: VideoRecord) -> BinaryIO | None:
        """An open file holding the video's bytes at their own offsets, or None.

        Where a store has one, the stream handler sends from it with
        sendfile(2), so the bytes never pass through Python. Stores whose bytes
        live elsewhere (Pravega, peers) return None and are read with
        :meth:`read`.
        """
        return None

    @abc.abstractmethod
    async def caption_source(self, video: VideoRecord, lang: str) -> tuple[bytes, str]:
        """The stored caption file for ``lang`` and a version string that changes with it."""

    @abc.abstractmethod
    async def poster(self, video: VideoRecord) -> bytes:
        """The poster image (JPEG) the store holds for ``video``."""

    @abc.abstractmethod
    async def health(self) -> dict:
        """``{"ok": bool, ...}`` with whatever tells an operator the store's state."""

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Calls ``callback()`` whenever the catalog changes."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self._listeners.remove(callback)

    def _catalog_changed(self) -> None:
        for callback in list(self._listeners):
            callback()

"""The Pravega store: videos, posters, captions and the catalog in a Pravega scope.

The layout is in :mod:`media.pravega_catalog`. This process never calls the
Pravega client itself (see :mod:`pravega_workers`): a follow worker process
follows the catalog (:class:`CatalogFollower`) and ``pravega.workers``
reader processes serve reads, so an unreachable Pravega
shows up as a :class:`~media.store.Unavailable` after at most
``pravega.timeout`` seconds, never as a stalled event loop. While the
catalog worker cannot reach Pravega, reads fail at once. Service resumes by
itself once Pravega answers again.

:func:`ingest_into_pravega` is the write side, run by ``binge-ingest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator, Callable, Iterator

from media.pravega_catalog import CATALOG_STREAM, Extent, StoredVideo, decode_record
from media.pravega_ingest import ingest_into_pravega
from media.store import NotFound, Store, Unavailable, VideoRecord
from pravega_workers.errors import NOT_FOUND, PravegaError
from pravega_workers.follower import StreamFollower
from pravega_workers.pool import ReaderPool
from settings import PravegaSettings, Settings

__all__ = ["PravegaStore", "ingest_into_pravega"]

log = logging.getLogger("binge.store")

# Posters and caption files are read in pieces of this size at most.
_SIDECAR_CHUNK = 1024 * 1024
# Each chunk is one reply from a worker, held whole in both processes: a
# chunk_size far above what a socket moves at once gains nothing.
_MAX_CHUNK = 16 * 1024 * 1024


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Answers a failed Pravega call as the store's 404 (the stream is gone) or 503."""
    try:
        yield
    except PravegaError as e:
        raise (NotFound if e.kind == NOT_FOUND else Unavailable)(str(e)) from None


class PravegaStore(Store):
    name = "pravega"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings.pravega
        self._stored: dict[str, StoredVideo] = {}
        self._videos: dict[str, VideoRecord] = {}
        self._readers = ReaderPool(self.settings)
        self._follower = CatalogFollower(self.settings, self._on_catalog)

    async def start(self) -> None:
        """Starts the workers and waits for the catalog's first replay.

        A Pravega that does not answer within ``pravega.timeout`` (from when
        the follow worker is up) does not hold the server up: it starts with
        an empty catalog, reports itself degraded, and fills the catalog when
        Pravega comes.
        """
        self._readers.start()
        self._follower.start()
        await self._follower.started()
        try:
            async with asyncio.timeout(self.settings.timeout):
                await self._follower.caught_up.wait()
        except TimeoutError:
            log.warning(
                "Pravega at %s did not answer within %gs; starting with an empty catalog (%s)",
                self.settings.controller_uri, self.settings.timeout, self._follower.failure or "no answer",
            )

    async def close(self) -> None:
        await self._follower.close()
        self._readers.close()

    def videos(self) -> dict[str, VideoRecord]:
        return self._videos

    def _on_catalog(self, stored: dict[str, StoredVideo]) -> None:
        self._stored = stored
        videos = {video_id: s.record for video_id, s in stored.items()}
        if videos != self._videos:
            self._videos = videos
            self._catalog_changed()

    def _check_reachable(self) -> None:
        # While the catalog worker cannot reach Pravega, a read would only wait out the timeout.
        if not self._follower.healthy():
            raise Unavailable(f"Pravega at {self.settings.controller_uri} is unreachable: {self._problem()}")

    def _problem(self) -> str:
        if self._follower.failure:
            return self._follower.failure
        return f"no answer for {self._follower.seconds_since_contact():.0f}s"

    async def read(self, video: VideoRecord, start: int, end: int, chunk_size: int) -> AsyncIterator[memoryview]:
        if not 0 <= start <= end <= video.size:
            raise ValueError(f"range {start}-{end} is outside video {video.id!r} of {video.size} bytes")
        self._check_reachable()
        stream = video.locator  # the stream of the record's own version
        buffer = memoryview(bytearray(min(chunk_size, _MAX_CHUNK, max(end - start, 1))))
        with self._readers.session() as session:
            offset = start
            while offset < end:
                chunk = buffer[: min(len(buffer), end - offset)]
                # The first chunk fails fast, so the client still gets a 503; once the status line
                # is out, a failure could only cut the body short, so the read is resumed instead.
                resume_for = self.settings.failover_timeout if offset > start else 0
                with store_errors():
                    await session.read_into(stream, offset, chunk, resume_for)
                offset += len(chunk)
                yield chunk

    async def caption_source(self, video: VideoRecord, lang: str) -> tuple[bytes, str]:
        stored = self._stored_for(video)
        extent = stored.captions.get(lang)
        if extent is None:
            raise NotFound(f"video {video.id!r} has no {lang!r} captions")
        data = await self._read_extent(stored.stream, extent)
        return data, f"{stored.stream}.{extent.offset:x}"

    async def poster(self, video: VideoRecord) -> bytes:
        stored = self._stored_for(video)
        if stored.poster is None:
            raise NotFound(f"video {video.id!r} has no poster")
        return await self._read_extent(stored.stream, stored.poster)

    def _stored_for(self, video: VideoRecord) -> StoredVideo:
        stored = self._stored.get(video.id)
        if stored is None:
            raise NotFound(f"no video with id {video.id!r}")
        return stored

    async def _read_extent(self, stream: str, extent: Extent) -> bytes:
        self._check_reachable()
        data = bytearray(extent.length)
        view = memoryview(data)
        with self._readers.session() as session, store_errors():
            for offset in range(0, extent.length, _SIDECAR_CHUNK):
                await session.read_into(stream, extent.offset + offset, view[offset : offset + _SIDECAR_CHUNK])
        return bytes(data)

    async def health(self) -> dict:
        ok = self._follower.healthy()
        since = self._follower.seconds_since_contact()
        return {
            "ok": ok,
            "backend": self.name,
            "controller": self.settings.controller_uri,
            "scope": self.settings.scope,
            "videos": len(self._videos),
            "catalogOffset": self._follower.position,
            "secondsSinceContact": None if since == float("inf") else round(since, 1),
            "readerWorkers": self._readers.alive(),
            "readsInProgress": self._readers.sessions_open(),
            **({} if ok else {"error": self._problem()}),
        }


class CatalogFollower(StreamFollower):
    """Follows the ``catalog`` stream and keeps :attr:`videos` as it says.

    A replay (after a start or a failure) is gathered aside and replaces the
    catalog only once it reaches the tail, so videos do not blink out while
    it runs. ``on_change`` is called after each batch that changed something.
    """

    def __init__(self, settings: PravegaSettings, on_change: Callable[[dict[str, StoredVideo]], None]) -> None:
        # Often enough that a new video shows within a second, rarely enough to cost nothing.
        super().__init__(settings, CATALOG_STREAM, poll=min(0.5, settings.timeout / 4))
        self.on_change = on_change
        self.videos: dict[str, StoredVideo] = {}
        self.caught_up = asyncio.Event()
        self._staging: dict[str, StoredVideo] | None = None
        self._changed = False

    def on_reset(self) -> None:
        self._staging = {}

    def on_record(self, data: bytes) -> None:
        stored = decode_record(data)
        if stored is None:
            return
        if self._staging is not None:
            self._staging[stored.record.id] = stored
        else:
            self.videos = {**self.videos, stored.record.id: stored}
            self._changed = True

    def on_caught_up(self) -> None:
        if self._staging is not None:
            self._changed = self._changed or self._staging != self.videos
            self.videos, self._staging = self._staging, None
        self.caught_up.set()
        if self._changed:
            self._changed = False
            self.on_change(self.videos)

"""The Pravega store: videos, posters, captions and the catalog in a Pravega scope.

The layout is in :mod:`media.pravega_catalog`. This process never calls the
Pravega client itself: a catalog worker process follows the catalog (see
:mod:`media.pravega_follower`) and ``pravega.workers`` reader processes
serve reads (see :mod:`media.pravega_pool`), so an unreachable Pravega
shows up as a :class:`~media.store.Unavailable` after at most
``pravega.timeout`` seconds, never as a stalled event loop. While the
catalog worker cannot reach Pravega, reads fail at once. Service resumes by
itself once Pravega answers again.

:func:`ingest_into_pravega` is the write side, run by ``binge-ingest``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from media.pravega_catalog import Extent, StoredVideo
from media.pravega_follower import CatalogFollower
from media.pravega_ingest import ingest_into_pravega
from media.pravega_pool import ReaderPool
from media.store import NotFound, Store, Unavailable, VideoRecord
from settings import Settings

__all__ = ["PravegaStore", "ingest_into_pravega"]

log = logging.getLogger("binge.store")

# Posters and caption files are read in pieces of this size at most.
_SIDECAR_CHUNK = 1024 * 1024
# Each chunk is one reply from a worker, held whole in both processes: a
# chunk_size far above what a socket moves at once gains nothing.
_MAX_CHUNK = 16 * 1024 * 1024


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

        A Pravega that does not answer within ``pravega.timeout`` does not
        hold the server up: it starts with an empty catalog, reports itself
        degraded, and fills the catalog when Pravega comes.
        """
        self._readers.start()
        self._follower.start()
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
                await session.read_into(stream, offset, chunk)
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
        with self._readers.session() as session:
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

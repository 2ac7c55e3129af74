"""The store of a peer node: the upstream's catalog, and bytes verified piece by piece.

``videos()`` is the upstream's catalog (:mod:`peers.catalog`), with the
upstream's ETag and Last-Modified, so a node's clients see the validators
they would see at the origin. ``read()`` yields only bytes that match the
upstream's manifest: pieces held locally, else fetched from the peers of the
video, else from the upstream (:mod:`peers.session`); since the stream
handler only talks to this interface, a node serves ranges, conditionals and
HEAD exactly as the origin does. Captions and posters are passed through
from the upstream (captions already as WebVTT).

On the first read of a video the node takes its manifest from the upstream
(or from its own disk, when it still holds pieces of that version) and asks
for the video's peers, waiting at most ``DISCOVERY_WAIT`` seconds for them
so a first byte comes quickly even when a peer is slow to answer.

Pieces are kept by the node's own backend: on the filesystem, at their
offsets in sparse files in ``<storage.library>/.pieces``
(:class:`~peers.pieces.SparseFilePieces`), so any range can be kept; in
Pravega, the verified prefix of each video in an event stream of
``pravega.scope`` (:mod:`peers.pravega_pieces`), other ranges streamed
through.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from typing import AsyncIterator, Callable
from urllib.parse import quote

from media.single_flight import SingleFlight
from media.store import NotFound, Store, Unavailable, VideoRecord
from peers.announce import Announcer
from peers.catalog import UpstreamCatalog
from peers.fetcher import PieceFetcher, VideoChanged
from peers.manifest import Manifest
from peers.pieces import PieceStorage, SparseFilePieces
from peers.pravega_pieces import PieceStreams
from peers.session import VideoSession
from peers.swarm import Swarm
from peers.upstream import Upstream
from presence.state import Presence
from settings import Settings

log = logging.getLogger("binge.peers")

DISCOVERY_WAIT = 0.5
SOURCES = ("local", "peers", "origin")


class PeerNodeStore(Store):
    name = "peer"

    def __init__(self, config: Settings) -> None:
        super().__init__()
        self.upstream = Upstream(config.peer.upstream)
        self.public_url = config.peer.public_url.rstrip("/") if config.peer.public_url else None
        self.catalog = UpstreamCatalog(self.upstream, config.storage.scan_interval, self._catalog_changed)
        self._piece_streams: PieceStreams | None = None
        self._new_storage: Callable[[str], PieceStorage]
        if config.storage.backend == "pravega":
            self._piece_streams = PieceStreams(config.pravega)
            self._new_storage = self._piece_streams.storage
        else:
            folder = os.path.join(config.storage.library, ".pieces")
            self._new_storage = lambda video_id: SparseFilePieces(folder, video_id)
        # Peers that sent bytes failing verification, for every video.
        self.bad_peers: set[str] = set()
        # video id -> bytes served to this node's readers, by source (see peers.session).
        self.sources: dict[str, dict[str, int]] = {}
        # Told "peers" or "origin" for each piece failing verification (the app counts them).
        self.on_bad_piece: Callable[[str], None] = lambda source: None
        self._storages: dict[str, PieceStorage] = {}
        self._sessions: dict[str, VideoSession] = {}
        self._opening: SingleFlight[VideoSession] = SingleFlight()
        self._follow_task: asyncio.Task | None = None
        self._announcer: Announcer | None = None

    async def start(self) -> None:
        if self._piece_streams:
            self._piece_streams.start()
        await self.catalog.refresh()
        self._follow_task = asyncio.ensure_future(self.catalog.follow())

    def announce(self, presence: Presence) -> None:
        """Mirrors ``presence`` (this node's clients) onto the upstream's, see :mod:`peers.announce`."""
        self._announcer = Announcer(presence, self.upstream.presence_url(), self.public_url)
        self._announcer.start()

    async def close(self) -> None:
        if self._follow_task:
            self._follow_task.cancel()
        if self._announcer:
            await self._announcer.close()
        for session in self._sessions.values():
            session.close()
        for storage in self._storages.values():
            storage.close()
        if self._piece_streams:
            self._piece_streams.close()

    def videos(self) -> dict[str, VideoRecord]:
        return self.catalog.videos

    def get(self, video_id: str) -> VideoRecord:
        try:
            return super().get(video_id)
        except NotFound:
            self.catalog.refresh_soon()  # it may have been added upstream since the last look
            raise

    def pieces(self, video_id: str) -> PieceStorage:
        """The node's pieces of the video (of whichever version it last fetched)."""
        storage = self._storages.get(video_id)
        if storage is None:
            storage = self._storages[video_id] = self._new_storage(video_id)
        return storage

    def source_counts(self, video_id: str) -> dict[str, int]:
        return self.sources.setdefault(video_id, dict.fromkeys(SOURCES, 0))

    async def manifest(self, video: VideoRecord) -> Manifest:
        return (await self.session(video)).manifest

    async def session(self, video: VideoRecord) -> VideoSession:
        current = self._sessions.get(video.id)
        if current is not None and current.manifest.etag == video.etag:
            return current
        return await self._opening.run((video.id, video.etag), lambda: self._open(video))

    async def _open(self, video: VideoRecord) -> VideoSession:
        storage = self.pieces(video.id)
        manifest = storage.manifest
        if manifest is None or manifest.etag != video.etag:
            manifest = await self.upstream.manifest(video.id)
        if manifest.etag != video.etag or manifest.size != video.size:
            self.catalog.invalidate(video.id)
            raise Unavailable(f"video {video.id!r} is changing upstream; try again")
        old = self._sessions.pop(video.id, None)
        if old is not None:
            old.close()  # first, so that none of its fetches lands in the storage adopted next
        await storage.adopt(manifest)
        swarm = Swarm(self.upstream, manifest, self.public_url, self.bad_peers)
        fetcher = PieceFetcher(manifest, swarm, self.upstream, on_bad_piece=self.on_bad_piece)
        session = VideoSession(manifest, storage, fetcher, self.source_counts(video.id))
        # Readers arriving meanwhile wait on this opening too, rather than skip past the peers.
        await swarm.refresh(DISCOVERY_WAIT)
        self._sessions[video.id] = session
        return session

    async def read(self, video: VideoRecord, start: int, end: int, chunk_size: int) -> AsyncIterator[memoryview]:
        session = await self.session(video)
        try:
            async with contextlib.aclosing(session.read(start, end, chunk_size)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except VideoChanged:
            self.catalog.invalidate(video.id)
            raise

    async def caption_source(self, video: VideoRecord, lang: str) -> tuple[bytes, str]:
        if video.caption(lang) is None:
            raise NotFound(f"video {video.id!r} has no {lang!r} captions")
        data = await self.upstream.body(video.id, f"/captions/{quote(lang, safe='')}.vtt")
        return data, hashlib.sha256(data).hexdigest()[:16]

    async def poster(self, video: VideoRecord) -> bytes:
        if not video.has_poster:
            raise NotFound(f"video {video.id!r} has no poster")
        return await self.upstream.body(video.id, "/poster")

    async def health(self) -> dict:
        error = self.catalog.last_error
        return {
            "ok": error is None,
            "backend": self.name,
            "upstream": self.upstream.url,
            "publicUrl": self.public_url,
            "videos": len(self.catalog.videos),
            "piecesHeld": {video_id: len(s.held()) for video_id, s in self._storages.items()},
            **({"error": error} if error else {}),
        }

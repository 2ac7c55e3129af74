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

Pieces are kept by the node's own backend (a :class:`~peers.pieces.PieceStore`,
which :mod:`backends` picks): on the filesystem, at their
offsets in sparse files in ``<storage.library>/.pieces``
(:class:`~peers.pieces.SparseFilePieces`), so any range can be kept; in
Pravega, the verified prefix of each video in an event stream of
``pravega.scope`` (:mod:`peers.pravega_pieces`), other ranges streamed
through.

What is kept is bounded by ``peer.max_held_bytes``: after each piece kept,
at the end of each read and at start (counting what earlier runs left), the
store asks :class:`~peers.eviction.HeldPieces` which videos to evict and
removes all their pieces for good, least recently read first. Never evicted:
a video being read (by a client or by another node), opened, or read in the
last ``peer.evict_idle_seconds``, or with pieces being fetched, or watched
by one of the node's clients on its presence websocket (a paused player
reads nothing, yet its viewer is still there).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import AsyncIterator, Callable, Iterator

import api_paths
from media.single_flight import SingleFlight
from media.store import NotFound, Store, StoreError, Unavailable, UpstreamManifests, VideoRecord
from peers.announce import Announcer
from peers.catalog import UpstreamCatalog
from peers.eviction import HeldPieces
from peers.fetcher import PieceFetcher, VideoChanged
from peers.have import have_document
from peers.hops import LoopDetected
from peers.links import PeerLinks
from peers.manifest import Manifest
from peers.pieces import PieceStorage, PieceStore
from peers.session import VideoSession
from peers.swarm import Swarm
from peers.upstream import Upstream
from ops.metrics import Metrics
from presence.signalling import Signalling
from presence.state import Presence
from settings import Settings

log = logging.getLogger("binge.peers")

DISCOVERY_WAIT = 0.5
SOURCES = ("local", "peers", "origin")


class PeerNodeStore(Store):
    name = "peer"

    def __init__(self, config: Settings, pieces: PieceStore) -> None:
        super().__init__()
        self.upstream = Upstream(config.peer.upstream)
        self.node_id = self.upstream.node_id
        self.public_url = config.peer.public_url.rstrip("/") if config.peer.public_url else None
        self.catalog = UpstreamCatalog(self.upstream, config.storage.scan_interval, self._catalog_changed)
        self._piece_store = pieces
        # Bytes of pieces held by video, and when each was last read: what to evict (see peers.eviction).
        self.held = HeldPieces(config.peer.max_held_bytes, config.peer.evict_idle_seconds)
        self.evictions = 0
        self._presence: Presence | None = None
        self._check_handle: asyncio.Handle | None = None
        self._recheck_handle: asyncio.TimerHandle | None = None
        self._counting: asyncio.Task | None = None
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
        # Data channels to peers no HTTP request reaches, and from them (once joined).
        self._links: PeerLinks | None = None

    async def start(self) -> None:
        self._piece_store.start()
        if self._piece_store.count_before_serving:
            await self._count_left_behind()
        else:
            self._counting = asyncio.ensure_future(self._count_left_behind())
        await self.catalog.refresh()
        self._follow_task = asyncio.ensure_future(self.catalog.follow())

    async def _count_left_behind(self) -> None:
        """Counts the pieces earlier runs left, each video last read when its storage says, if it knows."""
        try:
            found = await self._piece_store.left_by_earlier_runs()
        except StoreError as e:
            log.warning("cannot count the pieces earlier runs kept; they are not evicted: %s", e)
            return
        monotonic_offset = time.time() - time.monotonic()
        for video_id, (nbytes, last_read) in found.items():
            storage = self._storages.get(video_id)
            if storage is None or storage.manifest is None:  # an open one counts itself
                self.held.stored(video_id, nbytes, None if last_read is None else last_read - monotonic_offset)
        if found:
            log.info("holding %d bytes of pieces of %d videos from earlier runs", sum(n for n, _ in found.values()),
                     len(found))
        self._check_soon()

    def join(self, presence: Presence, signalling: Signalling, metrics: Metrics) -> None:
        """Mirrors ``presence`` (this node's clients) onto the upstream's (see :mod:`peers.announce`), and counts.

        Signals of its clients for sockets it does not know go up on the
        same sockets, and answers come back down (see :mod:`presence.signalling`);
        so do those of the node's own data channels to peers (:mod:`peers.links`).
        The videos watched there are also never evicted.
        """
        self._presence = presence
        self._announcer = Announcer(presence, self.upstream.presence_url(), self.public_url, signalling.from_upstream)
        signalling.upstream = self._announcer.send
        self._links = PeerLinks(self._announcer.send, self.upstream.ice_servers, self._have_for_peer,
                                self.piece_for_peer)
        signalling.own = self._links.on_signal
        self._announcer.start()
        self.on_bad_piece = metrics.piece_failed
        metrics.count_sources(self.sources)
        metrics.count_held(lambda: self.held.total)

    async def close(self) -> None:
        for handle in (self._check_handle, self._recheck_handle, self._counting):
            if handle is not None:
                handle.cancel()
        if self._follow_task:
            self._follow_task.cancel()
        if self._announcer:
            await self._announcer.close()
        if self._links:
            await self._links.close()
        for session in self._sessions.values():
            session.close()
        for storage in self._storages.values():
            storage.close()
        self._piece_store.close()

    def videos(self) -> dict[str, VideoRecord]:
        return self.catalog.videos

    async def servable(self) -> dict[str, VideoRecord]:
        return await self.catalog.servable()  # a loop of upstreams is a 508, not an empty catalog

    def get(self, video_id: str) -> VideoRecord:
        try:
            return super().get(video_id)
        except NotFound:
            if self.catalog.loop is not None:
                raise LoopDetected(self.catalog.loop) from None  # not "no such video": no catalog at all
            self.catalog.refresh_soon()  # it may have been added upstream since the last look
            raise

    def pieces(self, video_id: str) -> PieceStorage:
        storage = self._storages.get(video_id)
        if storage is None:
            storage = self._storages[video_id] = self._piece_store.storage(video_id, self._check_soon)
        return storage

    async def piece_for_peer(self, video_id: str, n: int, root: str | None) -> bytes | None:
        """Serving other nodes is using the video: one that only peers still
        fetch is not evicted from under them as if nobody wanted it.
        """
        storage = self.pieces(video_id)
        if storage.manifest is None or storage.manifest.root != root:
            return None
        with self._in_use(video_id):
            return await storage.raw(n)

    def source_counts(self, video_id: str) -> dict[str, int]:
        return self.sources.setdefault(video_id, dict.fromkeys(SOURCES, 0))

    def peer_routes(self, video_id: str) -> dict[str, str]:
        session = self._sessions.get(video_id)
        peers = session.fetcher.swarm.peers.values() if session is not None else ()
        return {p.url: p.reached for p in peers if p.reached is not None}

    def _have_for_peer(self, video_id: str) -> dict:
        """``/have``, for a peer asking over a data channel."""
        if video_id not in self.catalog.videos:
            raise KeyError(f"no video {video_id!r}")
        return have_document(self.pieces(video_id))

    def upstream_manifests(self) -> _SessionManifests:
        return _SessionManifests(self)

    async def upstream_peers(self, video_id: str) -> list[dict]:
        return await self.upstream.peers(video_id)

    async def manifest(self, video: VideoRecord) -> Manifest:
        return (await self.session(video)).manifest

    async def session(self, video: VideoRecord) -> VideoSession:
        current = self._sessions.get(video.id)
        if current is not None and current.manifest.etag == video.etag:
            return current
        # Not evicted while it opens: that waits on the upstream and the storage (a manifest asked for, say).
        with self._in_use(video.id):
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
        swarm = Swarm(self.upstream, manifest, self.public_url, self.bad_peers, self._links)
        fetcher = PieceFetcher(manifest, swarm, self.upstream, on_bad_piece=self.on_bad_piece)
        session = VideoSession(manifest, storage, fetcher, self.source_counts(video.id), on_kept=self._check_soon)
        # Readers arriving meanwhile wait on this opening too, rather than skip past the peers.
        await swarm.refresh(DISCOVERY_WAIT)
        self._sessions[video.id] = session
        return session

    async def read(self, video: VideoRecord, start: int, end: int, chunk_size: int) -> AsyncIterator[memoryview]:
        try:
            with self._in_use(video.id):
                session = await self.session(video)
                async with contextlib.aclosing(session.read(start, end, chunk_size)) as chunks:
                    async for chunk in chunks:
                        yield chunk
        except VideoChanged:
            self.catalog.invalidate(video.id)
            raise

    @contextlib.contextmanager
    def _in_use(self, video_id: str) -> Iterator[None]:
        """The video is being read (by a client or a peer): its pieces are not evicted meanwhile."""
        self.held.read_began(video_id, time.monotonic())
        try:
            yield
        finally:
            self.held.read_ended(video_id, time.monotonic())
            storage = self._storages.get(video_id)
            if storage is not None:
                storage.touch()
            self._check_soon()

    # --- keeping within peer.max_held_bytes (see peers.eviction) ---------------

    def _check_soon(self) -> None:
        """Looks at what is held once the current burst of pieces and reads is handled, not after each."""
        if self._check_handle is None:
            self._check_handle = asyncio.get_running_loop().call_soon(self._evict_over_limit)

    def _evict_over_limit(self) -> None:
        self._check_handle = None
        for video_id, storage in self._storages.items():
            if storage.manifest is not None:  # else what it holds is not known yet; what was counted stands
                self.held.stored(video_id, storage.held_bytes())
        now = time.monotonic()
        pinned = self._pinned()
        for video_id in self.held.victims(now, pinned):
            self.evict(video_id)
        if self._recheck_handle is not None:
            self._recheck_handle.cancel()
            self._recheck_handle = None
        when = self.held.next_check(now, pinned)
        if when is not None:
            # Over the limit with videos read moments ago: look again once the first of them may go.
            self._recheck_handle = asyncio.get_running_loop().call_later(when - now + 0.01, self._check_soon)
        elif self.held.total > self.held.limit:
            log.debug("holding %d bytes of pieces, over peer.max_held_bytes, all of them in use", self.held.total)

    def _pinned(self) -> set[str]:
        """Videos whose pieces are being fetched, or that a client of this node watches."""
        pinned = {video_id for video_id, session in self._sessions.items() if session.busy()}
        if self._presence is not None:
            pinned |= self.held.videos().keys() & self._presence.watched_videos()
        return pinned

    def evict(self, video_id: str) -> None:
        """Removes every piece of the video the node holds, for good; it is fetched again when next read."""
        nbytes = self.held.bytes_of(video_id)
        session = self._sessions.pop(video_id, None)
        if session is not None:
            session.close()
        # One not open (left by an earlier run) is opened only to be discarded.
        storage = self._storages.pop(video_id, None) or self._piece_store.storage(video_id, self._check_soon)
        storage.discard()
        self.held.forget(video_id)
        self.evictions += 1
        log.info("evicted the %d bytes of pieces held of %s, the least recently read, to keep within "
                 "peer.max_held_bytes (%d); %d bytes held now", nbytes, video_id, self.held.limit, self.held.total)

    async def caption_source(self, video: VideoRecord, lang: str) -> tuple[bytes, str]:
        if video.caption(lang) is None:
            raise NotFound(f"video {video.id!r} has no {lang!r} captions")
        data = await self.upstream.body(api_paths.CAPTION(video_id=video.id, lang=lang))
        return data, hashlib.sha256(data).hexdigest()[:16]

    async def poster(self, video: VideoRecord) -> bytes:
        if not video.has_poster:
            raise NotFound(f"video {video.id!r} has no poster")
        return await self.upstream.body(api_paths.POSTER(video_id=video.id))

    async def health(self) -> dict:
        error = self.catalog.last_error
        return {
            "ok": error is None,
            "backend": self.name,
            "upstream": self.upstream.url,
            "publicUrl": self.public_url,
            "videos": len(self.catalog.videos),
            "piecesHeld": {video_id: len(s.held()) for video_id, s in self._storages.items()},
            "heldBytes": self.held.total,
            "maxHeldBytes": self.held.limit,
            "evictions": self.evictions,
            **({"error": error} if error else {}),
        }


class _SessionManifests(UpstreamManifests):
    """The manifests of a node's open sessions, each taken from the upstream when the session opened."""

    def __init__(self, store: PeerNodeStore) -> None:
        self.store = store

    async def get(self, video: VideoRecord) -> Manifest:
        return await self.store.manifest(video)

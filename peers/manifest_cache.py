"""The origin's manifests: computed once per version of a video, kept on disk.

A manifest is computed from the store's bytes (so it works alike on every
backend) and saved as ``<storage.cache_dir>/manifests/<id>.json``; it is
good for as long as the video's ETag and ``peer.piece_size`` stay the same,
across restarts. Two requests for one manifest share one computation, and
so do the worker processes of one server (:mod:`ops.workers`), which share
the folder: a worker computes a manifest only while it holds the flock(2) of
``.<id>.lock`` beside its file, and one that finds it held waits, then reads
the file the other wrote.

The cache follows the catalog (:meth:`ManifestCache.follow_catalog`, called
when the origin starts): ``PRECOMPUTE_DELAY`` seconds after the start, and
after each change, the manifests missing are computed in the background one
at a time, so that nodes asking later find them ready; a request for one not
computed yet computes it at once, and one for a manifest being computed
waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from typing import AsyncIterator

import ujson

import atomic_write
from media.single_flight import SingleFlight
from media.store import Store, StoreError, VideoRecord
from peers.manifest import Manifest, compute_manifest

log = logging.getLogger("binge.peers")

# Seconds between a catalog change and hashing what it brought: an ingest
# changes the catalog a few times in a row, and a starting server has
# requests to answer first.
PRECOMPUTE_DELAY = 2.0
# Seconds between tries at a manifest's lock another worker holds: it holds
# it for as long as hashing the video takes, seconds for a film.
LOCK_POLL = 0.05


class ManifestCache:
    def __init__(self, store: Store, cache_dir: str, piece_size: int) -> None:
        self.store = store
        self.folder = os.path.join(cache_dir, "manifests")
        self.piece_size = piece_size
        self._known: dict[str, Manifest] = {}
        self._computing: SingleFlight[Manifest] = SingleFlight()
        self._precompute_task: asyncio.Task | None = None
        self._precompute_soon: asyncio.TimerHandle | None = None
        self._catalog_dirty = False

    def follow_catalog(self) -> None:
        """Computes the catalog's missing manifests shortly, and again shortly after every catalog change."""
        self.store.add_listener(self._catalog_changed)
        self._catalog_changed()

    async def close(self) -> None:
        """Stops precomputing; a manifest half-hashed is simply computed again next time."""
        self.store.remove_listener(self._catalog_changed)
        if self._precompute_soon is not None:
            self._precompute_soon.cancel()
            self._precompute_soon = None
        pending = [f for f in (self._precompute_task, *self._computing.in_flight()) if f is not None and not f.done()]
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def get(self, video: VideoRecord) -> Manifest:
        known = self._known.get(video.id)
        if known is not None and known.etag == video.etag and known.piece_size == self.piece_size:
            return known
        return await self._computing.run((video.id, video.etag), lambda: self._load_or_compute(video))

    async def _load_or_compute(self, video: VideoRecord) -> Manifest:
        loop = asyncio.get_running_loop()
        manifest = await loop.run_in_executor(None, self._load, video)
        if manifest is None:
            async with self._computing_alone(video.id):
                # Another worker may have written it while this one waited.
                manifest = await loop.run_in_executor(None, self._load, video)
                if manifest is None:
                    manifest = await compute_manifest(self.store, video, self.piece_size)
                    await loop.run_in_executor(None, self._save, manifest)
                    log.info("manifest of %s: %d pieces of %d bytes", video.id, manifest.piece_count,
                             self.piece_size)
        self._known[video.id] = manifest
        return manifest

    @contextlib.asynccontextmanager
    async def _computing_alone(self, video_id: str) -> AsyncIterator[None]:
        """Holds the lock of ``video_id``'s manifest, shared by every process using this folder.

        Tried without blocking, again every ``LOCK_POLL`` seconds, so that
        no thread waits on it and a cancelled wait leaves nothing behind.
        The lock file stays: removing it could let two processes hold locks
        on two files of one name.
        """
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(os.path.join(self.folder, f".{video_id}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(LOCK_POLL)
            yield
        finally:
            os.close(fd)  # which releases the lock

    def _path(self, video_id: str) -> str:
        return os.path.join(self.folder, f"{video_id}.json")

    def _load(self, video: VideoRecord) -> Manifest | None:
        try:
            with open(self._path(video.id), "rb") as f:
                manifest = Manifest.from_json(ujson.loads(f.read()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("recomputing the manifest of %s: %s", video.id, e)
            return None
        fresh = manifest.etag == video.etag and manifest.piece_size == self.piece_size and manifest.size == video.size
        return manifest if fresh else None

    def _save(self, manifest: Manifest) -> None:
        os.makedirs(self.folder, exist_ok=True)
        atomic_write.write(self._path(manifest.video_id), ujson.dumps(manifest.to_json()))

    def _catalog_changed(self) -> None:
        self._catalog_dirty = True
        running = self._precompute_task is not None and not self._precompute_task.done()
        if not running and self._precompute_soon is None:
            self._precompute_soon = asyncio.get_running_loop().call_later(PRECOMPUTE_DELAY, self._precompute)

    def _precompute(self) -> None:
        self._precompute_soon = None
        self._precompute_task = asyncio.ensure_future(self._precompute_all())

    async def _precompute_all(self) -> None:
        while self._catalog_dirty:
            self._catalog_dirty = False
            videos = self.store.videos()
            self._known = {k: v for k, v in self._known.items() if k in videos}
            for video in list(videos.values()):
                try:
                    await self.get(video)
                except StoreError as e:
                    log.warning("cannot compute the manifest of %s yet: %s", video.id, e)

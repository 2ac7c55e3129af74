"""One video on a node: reading it from held pieces, fetching the others, reading ahead.

A read walks the pieces covering its range. A piece the node holds is read
back (and hashed again, see :mod:`peers.pieces`); any other is fetched
(:mod:`peers.fetcher`), kept and served. Two readers wanting one piece share
one fetch. While a reader is at piece ``n``, pieces ``n + 1`` to
``n + READ_AHEAD`` are fetched ahead, at most ``MAX_IN_FLIGHT`` at once (and
held here until read when the storage does not keep them), so
sequential playback finds its next pieces ready; the window moves on as
fetches finish, not only as the reader moves, so it stays full while the
client is slow to take bytes.

Counters (``counters``, the node store's per video) count the bytes served
to readers by where they came from: a piece fetched for this node counts
toward ``"peers"`` or ``"origin"`` the first time a reader is served it to
its end; any other read of a held piece counts toward ``"local"``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Callable

from peers.fetcher import PieceFetcher, VideoChanged
from peers.manifest import Manifest
from peers.pieces import PieceStorage

log = logging.getLogger("binge.peers")

READ_AHEAD = 8
MAX_IN_FLIGHT = 4


class VideoSession:
    def __init__(
        self, manifest: Manifest, storage: PieceStorage, fetcher: PieceFetcher, counters: dict[str, int],
        on_kept: Callable[[], None] = lambda: None,
    ) -> None:
        self.manifest = manifest
        self.storage = storage
        self.fetcher = fetcher
        self.counters = counters
        # Told after each piece is kept: the node store then sees whether it holds too much (peers.eviction).
        self.on_kept = on_kept
        self._fetches: dict[int, asyncio.Task] = {}
        # Pieces fetched ahead that the storage did not keep (see peers.pravega_pieces), until the reader
        # comes to them or passes them; without them here the read-ahead would fetch them again and again.
        self._unkept: dict[int, bytes] = {}
        # Pieces fetched and not yet served to their end once: piece -> "peers" | "origin".
        self._fresh: dict[int, str] = {}
        self._position = 0
        self._closed = False

    async def read(self, start: int, end: int, chunk_size: int) -> AsyncIterator[memoryview]:
        """Yields verified bytes ``start`` to ``end`` (excluded), at most ``chunk_size`` at a time."""
        for n in self.manifest.pieces_covering(start, end):
            self._position = n
            self._read_ahead()
            data = await self._piece(n)
            first, last = self.manifest.piece_range(n)
            lo, hi = max(start, first) - first, min(end, last) - first
            view = memoryview(data)[lo:hi]
            for offset in range(0, len(view), chunk_size):
                yield view[offset : offset + chunk_size]
            kind = self._fresh.get(n, "local")
            self.counters[kind] += hi - lo
            if hi == last - first:
                self._fresh.pop(n, None)

    async def _piece(self, n: int) -> bytes:
        self._check_current()
        if (data := self._unkept.pop(n, None)) is not None:
            return data
        if n not in self._fetches and self.storage.holds(n):
            data = await self.storage.get(n)
            if data is not None:
                return data
        task = self._fetches.get(n) or self._fetch(n)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._closed and task.cancelled():
                raise VideoChanged(f"video {self.manifest.video_id!r} changed while being read") from None
            raise

    def _check_current(self) -> None:
        """A newer version replaced this one (see PeerNodeStore): its readers must stop, not mix bytes."""
        if self._closed or self.storage.manifest is not self.manifest:
            raise VideoChanged(f"video {self.manifest.video_id!r} changed while being read")

    def _read_ahead(self) -> None:
        if self._closed:
            return
        for n in [n for n in self._unkept if not self._position <= n <= self._position + READ_AHEAD]:
            del self._unkept[n]  # the reader went elsewhere
        for n in range(self._position + 1, min(self._position + 1 + READ_AHEAD, self.manifest.piece_count)):
            if len(self._fetches) >= MAX_IN_FLIGHT:
                return
            if n not in self._fetches and n not in self._unkept and not self.storage.holds(n):
                self._fetch(n)

    def _fetch(self, n: int) -> asyncio.Task:
        task = asyncio.ensure_future(self._fetch_and_keep(n))
        self._fetches[n] = task
        task.add_done_callback(lambda t: self._fetched(n, t))
        return task

    async def _fetch_and_keep(self, n: int) -> bytes:
        data, kind = await self.fetcher.fetch(n)
        self._check_current()
        await self.storage.put(n, data)
        if not self.storage.holds(n) and n > self._position:
            self._unkept[n] = data
        self._fresh[n] = kind
        self.on_kept()
        return data

    def busy(self) -> bool:
        """Whether pieces are being fetched, read ahead for a reader that may have paused between requests."""
        return bool(self._fetches)

    def _fetched(self, n: int, task: asyncio.Task) -> None:
        del self._fetches[n]
        if task.cancelled():
            return
        if task.exception() is not None:
            # Not refilled from here: a fetch that fails at once would loop.
            log.info("fetching piece %d of %s failed: %s", n, self.manifest.video_id, task.exception())
            return
        self._read_ahead()

    def close(self) -> None:
        self._closed = True
        for task in list(self._fetches.values()):
            task.cancel()

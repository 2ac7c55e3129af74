"""A node's pieces in its own Pravega: the verified prefix of each video, in an event stream.

Pravega streams only grow at their tail, so a node configured for Pravega
keeps, of each video, the pieces from the first one on without a gap: the
*verified prefix*. Other pieces it fetches (after a seek, say) are served to
its client and to peers while in hand, and not kept. Pieces that arrive a
little ahead of the prefix, as the read-ahead's parallel fetches finish out
of order, wait in memory for the gap to close: those at most
``READ_AHEAD`` pieces past the first missing one, the read-ahead's reach.
When appending falls behind, the fetches that bring pieces wait for it.

The client's byte writer cannot append to a stream another writer began
(see :mod:`pravega_workers.blocking`), which would rule out going on after a
restart, so the prefix is written as events: one event per piece, each
appended whole by one long-lived event writer in an appender worker
(:class:`~pravega_workers.pool.EventAppender`). An event in a segment is an
8-byte frame header and the bytes, so every piece lies at an offset known
from the piece size alone, and the node's reader workers read it back as a
byte range. One stream per version of a video, ``p-<id hash>-<root>``, in
``pravega.scope``::

    event 0     header: JSON {"v": 1, "id", "root", "size", "pieceSize"}
    event 1+n   piece n, exactly as long as the manifest says

After a restart the stream's length says how many pieces it holds, and the
header which version they are; creating the stream of a new version deletes
those of older ones. Every piece read back for the node's own client is
hashed again (see :class:`~peers.pieces.PieceStorage`), so a stream holding
anything but the manifest's bytes costs a refetch, never a wrong byte.

Nothing here may hold a reader up: while the node's Pravega does not
answer, a video is served as if nothing were kept. ``REOPEN_AFTER`` seconds
after Pravega failed to open the stream or take a piece, the stream is
opened again, and again after each failure, whether or not more pieces
come: pieces that were waiting when it failed go in once it answers. The
stream's length also says whether a piece whose append failed landed.

Evicting a video (see :mod:`peers.eviction`) seals and deletes every stream
named for it (:meth:`PravegaPrefixPieces.discard`). The appender worker
takes requests in order, so a stream created for the video after that is a
fresh one. At start the node lists the ``p-`` streams of its scope and
reads their headers (:meth:`PieceStreams.stored`), so what an earlier run
kept counts toward ``peer.max_held_bytes`` too; Pravega records no time of
last use, so those go first, in no particular order among themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

import ujson

from media.store import Unavailable
from peers.manifest import Manifest
from peers.pieces import PieceStorage, PieceStore
from peers.session import READ_AHEAD
from pravega_workers.errors import PravegaError
from pravega_workers.layout import EVENT_FRAME, MAX_EVENT, name_prefix
from pravega_workers.pool import EventAppender, ReaderPool
from settings import PravegaSettings

log = logging.getLogger("binge.peers")

HEADER_VERSION = 1
# How long opening a video's stream may hold up its first read; it goes on after that.
OPEN_WAIT = 1.0
# After Pravega failed to open the stream or take a piece, the stream is opened again after this long.
REOPEN_AFTER = 10.0
# Every stream of pieces is named "p-...", and nothing else in the scope is.
_PIECE_STREAMS = "p"
STREAMS_PREFIX = f"{_PIECE_STREAMS}-"
# A header longer than this is not one of ours.
MAX_HEADER = 64 * 1024


def stream_prefix(video_id: str) -> str:
    return name_prefix(_PIECE_STREAMS, video_id)


class PieceStreams(PieceStore):
    """The node's Pravega for its pieces: worker processes shared by the pieces of every video."""

    count_before_serving = False  # Pravega may be slow or away

    def __init__(self, settings: PravegaSettings) -> None:
        self.readers = ReaderPool(settings)
        self.appender = EventAppender(settings)

    def start(self) -> None:
        self.readers.start()
        self.appender.start()

    def close(self) -> None:
        self.readers.close()
        self.appender.close()

    def storage(self, video_id: str, on_stored: Callable[[], None] = lambda: None) -> PravegaPrefixPieces:
        return PravegaPrefixPieces(self, video_id, on_stored)

    async def left_by_earlier_runs(self) -> dict[str, tuple[int, float | None]]:
        try:
            found = await self.stored()
        except PravegaError as e:
            raise Unavailable(str(e)) from None
        return {video_id: (nbytes, None) for video_id, nbytes in found.items()}  # Pravega records no time of use

    async def stored(self) -> dict[str, int]:
        """What earlier runs kept: video id -> bytes of pieces in its streams.

        The video's id is in each stream's header (its name has only a hash
        of it). A stream whose header cannot be read is left out and logged:
        it is not known to be ours to count or to delete.
        """
        found: dict[str, int] = {}
        for stream, tail in (await self.appender.list(STREAMS_PREFIX)).items():
            try:
                header, base = await self.read_header(stream, tail)
                video_id = header["id"]
                layout = _Layout(header["size"], header["pieceSize"], base)
            except (PravegaError, ValueError, KeyError, TypeError) as e:
                log.warning("not counting Pravega stream %s toward peer.max_held_bytes: %s", stream, e)
                continue
            if not stream.startswith(stream_prefix(video_id)):
                log.warning("not counting Pravega stream %s: its header names video %r", stream, video_id)
                continue
            found[video_id] = found.get(video_id, 0) + layout.bytes_of(layout.pieces_within(tail))
        return found

    async def read_header(self, stream: str, tail: int) -> tuple[dict, int]:
        """The header of a stream of pieces ``tail`` bytes long, and the offset where it ends."""
        frame = bytearray(EVENT_FRAME.size)
        with self.readers.session() as session:
            if tail < len(frame):
                raise ValueError(f"{tail} bytes long, shorter than a header")
            await session.read_into(stream, 0, memoryview(frame))
            _, length = EVENT_FRAME.unpack(frame)
            if not 0 < length <= min(MAX_HEADER, tail - len(frame)):
                raise ValueError(f"a header of {length} bytes")
            data = bytearray(length)
            await session.read_into(stream, len(frame), memoryview(data))
        header = ujson.loads(bytes(data))
        if not isinstance(header, dict) or header.get("v") != HEADER_VERSION:
            raise ValueError(f"not a header of pieces: {bytes(data)[:200]!r}")
        if not all(isinstance(header.get(k), int) and header[k] > 0 for k in ("size", "pieceSize")):
            raise ValueError(f"a header without sizes: {bytes(data)[:200]!r}")
        return header, len(frame) + length


class _Layout:
    """Where the pieces of a video of ``size`` bytes lie in a stream whose header event ends at ``base``."""

    def __init__(self, size: int, piece_size: int, base: int) -> None:
        self.size = size
        self.piece_size = piece_size
        self.piece_count = -(-size // piece_size)
        self.base = base

    def offset(self, n: int) -> int:
        return self.base + n * (EVENT_FRAME.size + self.piece_size) + EVENT_FRAME.size

    def end(self, n: int) -> int:
        return self.offset(n) + min(self.piece_size, self.size - n * self.piece_size)

    def pieces_within(self, tail: int) -> int:
        """How many pieces a stream ``tail`` bytes long holds."""
        held = min(self.piece_count, max(0, tail - self.base) // (EVENT_FRAME.size + self.piece_size))
        if held == self.piece_count - 1 and tail >= self.end(held):
            held = self.piece_count  # the last piece, shorter than the others
        return held

    def bytes_of(self, pieces: int) -> int:
        """The bytes of the video in its first ``pieces`` pieces."""
        return min(pieces * self.piece_size, self.size)


def _header(manifest: Manifest) -> dict:
    return {
        "v": HEADER_VERSION, "id": manifest.video_id, "root": manifest.root,
        "size": manifest.size, "pieceSize": manifest.piece_size,
    }


class PravegaPrefixPieces(PieceStorage):
    """The verified prefix of one video in an event stream of the node's Pravega (see module doc)."""

    def __init__(self, streams: PieceStreams, video_id: str, on_stored: Callable[[], None]) -> None:
        self.streams = streams
        self.video_id = video_id
        # Told each time a piece lands in Pravega, which is after put() returned (the node store counts bytes held).
        self.on_stored = on_stored
        self.stream: str | None = None
        self._layout: _Layout | None = None
        # Pieces 0 to prefix - 1 are in the stream.
        self._prefix = 0
        self._waiting: dict[int, bytes] = {}
        # False while nothing is added: the stream is not open, or a piece in it failed verification.
        self._keeping = False
        # Opens the stream again once Pravega failed to open it or to take a piece.
        self._reopening: asyncio.TimerHandle | None = None
        self._opening: asyncio.Task | None = None
        self._appending: asyncio.Task | None = None
        # Deleting the video's streams, once evicted.
        self.deleting: asyncio.Task | None = None

    def held(self) -> set[int]:
        return set(range(self._prefix)) | self._waiting.keys()

    def holds(self, n: int) -> bool:
        return n < self._prefix or n in self._waiting

    async def adopt(self, manifest: Manifest) -> None:
        if self.manifest is not None and self.manifest.root == manifest.root:
            self.manifest = manifest  # the same bytes under a new ETag: the pieces stay good
            return
        self.close()
        self.manifest = manifest
        self.stream, self._layout, self._prefix, self._keeping = None, None, 0, False
        if manifest.piece_size > MAX_EVENT:
            log.warning("%s comes in pieces of %d bytes, more than a Pravega event holds; keeping none",
                        self.video_id, manifest.piece_size)
            return
        self._opening = asyncio.ensure_future(self._open(manifest))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._opening), OPEN_WAIT)

    async def _open(self, manifest: Manifest) -> None:
        stream = f"{stream_prefix(self.video_id)}{manifest.root[:32]}"
        header = _header(manifest)
        try:
            tail = await self.streams.appender.create(stream)
            await self.streams.appender.delete(stream_prefix(self.video_id), keep=[stream])  # older versions
            if tail == 0:
                encoded = ujson.dumps(header).encode()
                await self.streams.appender.append(stream, encoded)
                tail = base = EVENT_FRAME.size + len(encoded)
            else:
                found, base = await self.streams.read_header(stream, tail)
                if found != header:
                    raise ValueError(f"stream {stream} was written for {found}, not {header}")
        except (PravegaError, ValueError) as e:
            log.warning("keeping no pieces of %s in Pravega for now: %s", self.video_id, e)
            self._reopen_later()
            return
        self._layout = _Layout(manifest.size, manifest.piece_size, base)
        self.stream = stream
        self._prefix = self._layout.pieces_within(tail)
        self._keeping = True
        # Pieces that came while the stream was being opened.
        self._waiting = {n: data for n, data in self._waiting.items() if n >= self._prefix}
        self._append_soon()
        log.info("%s: %d of %d pieces held in Pravega stream %s", self.video_id, self._prefix,
                 manifest.piece_count, stream)

    def _reopen_later(self) -> None:
        """Opens the stream again after ``REOPEN_AFTER``; its length then also says whether a failed append landed."""
        def reopen() -> None:
            self._reopening = None
            self._opening = asyncio.ensure_future(self._open(self.manifest))

        if self._reopening is None:
            self._reopening = asyncio.get_running_loop().call_later(REOPEN_AFTER, reopen)

    async def put(self, n: int, data: bytes) -> None:
        opening = self._opening is not None and not self._opening.done()
        # While the stream opens, the prefix it holds is not known yet: a piece near the start may extend it.
        if not (self._keeping or opening) or n in self._waiting:
            return
        reach = self._frontier() if self._keeping else self._prefix
        if not self._prefix <= n <= reach + READ_AHEAD:
            return
        self._waiting[n] = data
        self._append_soon()
        if len(self._waiting) > READ_AHEAD and self._appending is not None:
            # Pravega is behind the fetches: they wait for it rather than pile pieces up in memory.
            await asyncio.wait([self._appending])

    def _frontier(self) -> int:
        """The first piece neither in the stream nor waiting to go in."""
        n = self._prefix
        while n in self._waiting:
            n += 1
        return n

    def _append_soon(self) -> None:
        if self._keeping and self._prefix in self._waiting and (self._appending is None or self._appending.done()):
            self._appending = asyncio.ensure_future(self._append_waiting())

    async def _append_waiting(self) -> None:
        while self._keeping and (data := self._waiting.get(self._prefix)) is not None:
            try:
                await self.streams.appender.append(self.stream, data)
            except PravegaError as e:
                log.warning("piece %d of %s not kept in Pravega: %s; keeping no more of it for now", self._prefix,
                            self.video_id, e)
                self._stop_keeping()
                self._reopen_later()
                return
            if not self._keeping:
                return  # dropped meanwhile
            del self._waiting[self._prefix]
            self._prefix += 1
            self.on_stored()

    async def raw(self, n: int) -> bytes | None:
        if n in self._waiting:
            return self._waiting[n]
        if n >= self._prefix:
            return None
        start, end = self.manifest.piece_range(n)
        data = bytearray(end - start)
        try:
            with self.streams.readers.session() as session:
                await session.read_into(self.stream, self._layout.offset(n), memoryview(data))
        except PravegaError as e:
            log.warning("cannot read piece %d of %s from Pravega: %s", n, self.video_id, e)
            return None
        return bytes(data)

    def drop(self, n: int) -> None:
        # A stream only grows: what follows a bad piece can no longer be told apart, so the prefix ends there.
        self._waiting.pop(n, None)
        if n < self._prefix:
            self._prefix = n
            self._stop_keeping()

    def _stop_keeping(self) -> None:
        self._keeping = False
        self._waiting.clear()

    def close(self) -> None:
        for task in (self._opening, self._appending):
            if task is not None:
                task.cancel()
        if self._reopening is not None:
            self._reopening.cancel()
            self._reopening = None
        self._waiting.clear()

    def held_bytes(self) -> int:
        # What is in Pravega: pieces waiting in memory to go in do not take its space.
        return 0 if self._layout is None else self._layout.bytes_of(self._prefix)

    def discard(self) -> None:
        """Forgets the pieces at once and has every stream of the video sealed and deleted.

        The request is sent ahead of any that a new copy of the video would
        send (tasks take their first step in the order they were made, and
        the appender worker answers requests in the order they came), so a
        stream created for the video afterwards is a fresh one.
        """
        self.close()
        self.manifest, self.stream, self._layout, self._prefix = None, None, None, 0
        self._stop_keeping()
        self.deleting = asyncio.ensure_future(self._delete())

    async def _delete(self) -> list[str]:
        try:
            deleted = await self.streams.appender.delete(stream_prefix(self.video_id))
        except PravegaError as e:
            # It stays in Pravega, counted again at the node's next start.
            log.warning("the Pravega streams of %s's pieces were not deleted: %s", self.video_id, e)
            return []
        log.info("deleted the Pravega streams of %s's pieces: %s", self.video_id, ", ".join(deleted) or "none")
        return deleted

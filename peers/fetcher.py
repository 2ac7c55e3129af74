"""Fetching one piece: from peers that hold it, else the upstream, checked against the manifest.

A piece is asked of the source :meth:`Swarm.choose` picks (over HTTP, or
over the peer's data channel when its URL gives no answer); with no peer to
ask it comes from the upstream's ``/stream`` (with ``If-Match`` on the
manifest's ETag). Bytes are hashed as they arrive. When a source fails
midway — refused, silent for its stall timeout, disconnected — the bytes it
did send are kept and the next source is asked for the rest only, starting
at the exact byte where they end; the piece is checked once complete.

A complete piece that does not hash to the manifest is thrown away and
fetched again from scratch; every peer that sent part of it is marked bad
(if a piece came from two peers, which one lied cannot be told, and a node
that dropped mid-piece is rarely missed). Bytes from the upstream that fail
are not retried: the upstream is the trusted source, so the video changed
under the manifest, or the upstream is broken; either way the read fails
rather than serve wrong bytes. An upstream answering 508 found a loop of
upstreams (:mod:`peers.hops`): the read fails at once with
:class:`~peers.hops.LoopDetected`, since asking again cannot help.

Peers are tried at most once per piece; the upstream is retried with a
growing pause, until ``give_up`` seconds pass without a single new byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Callable

from media.store import Unavailable
from peers.hops import LoopDetected
from peers.manifest import Manifest
from peers.swarm import HAVE_TIMEOUT, Peer, Swarm
from peers.transfer import TransferError, get_range
from peers.upstream import Upstream

log = logging.getLogger("binge.peers")

# Seconds without a byte before a source is given up. An upstream that is
# itself a node may first have to wait out a stalled source of its own.
PEER_STALL = 2.0
UPSTREAM_STALL = 2 * PEER_STALL + 1.0
GIVE_UP = 20.0


class VideoChanged(Unavailable):
    """The upstream's bytes are no longer those the manifest describes."""


class _Partial:
    """A piece being received: its bytes so far, their running hash, who sent them."""

    def __init__(self, length: int) -> None:
        self.buffer = bytearray(length)
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.hash = hashlib.sha256()
        self.senders: set[str] = set()

    def add(self, chunk: bytes, sender: str | None) -> None:
        self.buffer[self.received : self.received + len(chunk)] = chunk
        self.received += len(chunk)
        self.hash.update(chunk)
        if sender is not None:
            self.senders.add(sender)


class PieceFetcher:
    def __init__(
        self,
        manifest: Manifest,
        swarm: Swarm,
        upstream: Upstream,
        peer_stall: float = PEER_STALL,
        upstream_stall: float = UPSTREAM_STALL,
        give_up: float = GIVE_UP,
        on_bad_piece: Callable[[str], None] = lambda source: None,
    ) -> None:
        self.manifest = manifest
        self.swarm = swarm
        self.upstream = upstream
        self.peer_stall = peer_stall
        self.upstream_stall = upstream_stall
        self.give_up = give_up
        # Told "peers" or "origin" for each complete piece that fails verification.
        self.on_bad_piece = on_bad_piece

    async def fetch(self, n: int) -> tuple[bytes, str]:
        """Piece ``n``, verified, and where its last bytes came from: ``"peers"`` or ``"origin"``."""
        start, end = self.manifest.piece_range(n)
        piece = _Partial(end - start)
        tried: set[str] = set()
        pause = 0.25
        last_progress = time.monotonic()
        while True:
            self.swarm.keep_fresh()
            peer = self.swarm.choose(n, tried)
            if peer is None and self.swarm.have_is_stale():
                await self.swarm.refresh(HAVE_TIMEOUT)
                peer = self.swarm.choose(n, tried)
            before = piece.received
            try:
                if peer is not None:
                    await self._from_peer(peer, n, piece)
                else:
                    await self._from_upstream(start, piece)
            except TransferError as e:
                if piece.received > before:
                    last_progress = time.monotonic()
                if peer is not None:
                    tried.add(peer.url)
                    self.swarm.failed(peer, n, e)
                    continue
                if e.status == 412:
                    raise VideoChanged(f"video {self.manifest.video_id!r} changed upstream") from None
                if e.status == LoopDetected.status:
                    raise LoopDetected(e.detail or f"piece {n} of {self.manifest.video_id!r}: {e}") from None
                if time.monotonic() - last_progress > self.give_up:
                    raise Unavailable(f"piece {n} of {self.manifest.video_id!r}: no source answers ({e})") from None
                log.info("piece %d of %s from the upstream failed: %s", n, self.manifest.video_id, e)
                await asyncio.sleep(pause)
                pause = min(2 * pause, 2.0)
                continue
            if piece.hash.digest() == self.manifest.digests[n]:
                log.debug("piece %d of %s from %s", n, self.manifest.video_id, peer.url if peer else "the upstream")
                return bytes(piece.buffer), "origin" if peer is None else "peers"
            self.on_bad_piece("peers" if piece.senders else "origin")
            if not piece.senders:
                raise VideoChanged(f"piece {n} of {self.manifest.video_id!r} from the upstream fails verification")
            for url in piece.senders:
                self.swarm.mark_bad(url)
            piece.reset()

    async def _from_peer(self, peer: Peer, n: int, piece: _Partial) -> None:
        if peer.via == "channel" and peer.channel is None:
            raise TransferError(f"peer {peer.url}: no data channel open")
        peer.busy += 1
        try:
            if peer.via == "channel":
                chunks = peer.channel.get_range(self.manifest.video_id, n, self.manifest.root, piece.received,
                                                len(piece.buffer), self.peer_stall)
            else:
                chunks = get_range(self.swarm.piece_url(peer, n), piece.received, len(piece.buffer), self.peer_stall)
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    piece.add(chunk, peer.url)
        finally:
            peer.busy -= 1

    async def _from_upstream(self, start: int, piece: _Partial) -> None:
        first, end = start + piece.received, start + len(piece.buffer)
        chunks = self.upstream.stream_range(self.manifest.video_id, first, end, self.upstream_stall,
                                            self.manifest.etag)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                piece.add(chunk, None)

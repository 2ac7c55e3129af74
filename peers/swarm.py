"""The other nodes that may hold pieces of one video, and what each of them holds.

The list of peers comes from the upstream's ``/videos/{id}/peers``, closest
first, less this node itself; each peer's ``/videos/{id}/have`` says which
verified pieces it holds of the manifest this node uses (a peer with
another manifest holds nothing usable). Both are read again only while the
video is being fetched: the list every ``PEERS_EVERY`` seconds, the haves
every ``HAVE_EVERY`` seconds, and the haves at once (:meth:`Swarm.refresh`)
when a piece is wanted that no known peer holds.

:meth:`Swarm.choose` picks, for a piece, among the peers known to hold it
that are neither bad nor resting: the one with the fewest pieces in flight
(so a few pieces come from different sources at once), then the one with
the shortest measured round trip (in ``RTT_STEP`` steps, so that noise does
not reorder peers), then the upstream's closest-first order. ``None`` means
no peer can give it: the caller falls back to the upstream.

A peer is asked over HTTP at its URL. One whose ``/have`` gets no answer
at all (refused, timed out: it is behind a NAT, or its URL leads nowhere
from here) and that is listed with a ``socketId`` is asked over a data
channel instead (:mod:`peers.links`); ``Peer.via`` says which. A channel
whose ICE pair joins two host candidates shows the peer on this node's own
network: if its ``/have`` answers over HTTP at that address (the URL's port
kept), HTTP is used there from then on, since on a LAN it carries pieces many
times faster than a channel (bench/RESULTS.md). A peer whose channel fails
is asked over HTTP first again when its rest is over, so a peer that has
become reachable is read the faster way, and one that has not is dialled
anew; meanwhile the upstream serves, as for any failed peer.

A peer that failed a request (refused it, stalled, dropped the connection)
rests for ``REST`` seconds. A peer that sent bytes failing verification is
*bad*: it is never asked again, for any video, while this node runs (the
set is shared by the node's swarms).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from dataclasses import dataclass, field

import api_paths
from media.store import StoreError
from peers.channel import ChannelClient
from peers.have import from_ranges
from peers.links import PeerLinks
from peers.manifest import Manifest
from peers.transfer import TransferError, get_json
from peers.upstream import Upstream

log = logging.getLogger("binge.peers")

PEERS_EVERY = 3.0
HAVE_EVERY = 1.0
HAVE_TIMEOUT = 1.0
REST = 10.0
RTT_STEP = 0.005


@dataclass(eq=False)
class Peer:
    url: str
    # Position in the upstream's closest-first list.
    order: int
    have: set[int] = field(default_factory=set)
    rtt: float | None = None
    busy: int = 0
    resting_until: float = 0.0
    # Its socket at the upstream's presence, when listed with one: where a signal to it goes.
    socket_id: str | None = None
    # "http", or "channel" once its URL gave no answer (then ``channel`` is its open channel, if any).
    via: str = "http"
    channel: ChannelClient | None = None
    # How its last have came: "http", "direct-channel" or "relayed-channel" (its channel's ICE pair); None before any did.
    reached: str | None = None
    # Where HTTP requests to it go: its URL, or its address on this node's LAN (see the module docstring).
    http_url: str = ""

    def __post_init__(self) -> None:
        self.http_url = self.http_url or self.url


class Swarm:
    def __init__(self, upstream: Upstream, manifest: Manifest, own_url: str | None, bad: set[str],
                 links: PeerLinks | None = None) -> None:
        self.upstream = upstream
        self.links = links
        self.manifest = manifest
        self.own_url = own_url
        self.bad = bad
        self.peers: dict[str, Peer] = {}
        self._listed_at = float("-inf")
        self._have_at = float("-inf")
        self._refreshing: asyncio.Task | None = None

    def piece_url(self, peer: Peer, n: int) -> str:
        return f"{peer.http_url}{api_paths.PIECE(video_id=self.manifest.video_id, index=n)}?root={self.manifest.root}"

    def choose(self, n: int, avoid: set[str]) -> Peer | None:
        now = time.monotonic()
        holders = [
            p for p in self.peers.values()
            if n in p.have and p.url not in avoid and p.url not in self.bad and p.resting_until <= now
        ]
        return min(holders, key=lambda p: (p.busy, _rtt_steps(p), p.order), default=None)

    def failed(self, peer: Peer, n: int, error: TransferError) -> None:
        if error.status == 404:
            peer.have.discard(n)  # it no longer holds it, or never did: its have was stale
        else:
            log.info("peer %s failed: %s; resting it %g s", peer.url, error, REST)
            peer.resting_until = time.monotonic() + REST
            if peer.via == "channel":
                peer.via, peer.channel = "http", None

    def mark_bad(self, url: str) -> None:
        if url not in self.bad:
            log.warning("peer %s sent a piece of %s that fails verification; not asking it again",
                        url, self.manifest.video_id)
        self.bad.add(url)

    def have_is_stale(self) -> bool:
        return time.monotonic() - self._have_at >= HAVE_EVERY / 4

    def keep_fresh(self) -> None:
        """Starts reading the list and the haves again in the background if they are old."""
        if time.monotonic() - self._have_at >= HAVE_EVERY:
            self._start_refresh()

    async def refresh(self, wait: float) -> None:
        """Reads the haves again (and the list, if old), waiting for them at most ``wait`` seconds."""
        task = self._start_refresh()
        try:
            await asyncio.wait_for(asyncio.shield(task), wait)
        except asyncio.TimeoutError:
            pass

    def _start_refresh(self) -> asyncio.Task:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        return self._refreshing

    async def _refresh(self) -> None:
        if time.monotonic() - self._listed_at >= PEERS_EVERY:
            try:
                listed = await self.upstream.peers(self.manifest.video_id)
            except StoreError as e:
                log.info("cannot list the peers of %s: %s", self.manifest.video_id, e)
            else:
                self._listed_at = time.monotonic()
                sockets = {p["url"].rstrip("/"): p.get("socketId") for p in reversed(listed)}
                urls = [u for u in dict.fromkeys(p["url"].rstrip("/") for p in listed) if u != self.own_url]
                self.peers = {u: self.peers.get(u) or Peer(u, i) for i, u in enumerate(urls)}
                for i, url in enumerate(urls):
                    self.peers[url].order = i
                    self.peers[url].socket_id = sockets[url]
        now = time.monotonic()
        usable = [p for p in self.peers.values() if p.url not in self.bad and p.resting_until <= now]
        await asyncio.gather(*(self._read_have(p) for p in usable))
        self._have_at = time.monotonic()

    async def _read_have(self, peer: Peer) -> None:
        try:
            have, rtt = await self._ask_have(peer)
            if not isinstance(have, dict):
                raise ValueError("not a JSON object")
            same = have.get("root") == self.manifest.root
            peer.have = from_ranges(have.get("pieces"), self.manifest.piece_count) if same else set()
            peer.reached = peer.channel.route if peer.via == "channel" else "http"
        except (TransferError, ValueError) as e:
            log.info("no have from peer %s: %s; resting it %g s", peer.url, e, REST)
            peer.have = set()
            peer.resting_until = time.monotonic() + REST
            return
        peer.rtt = rtt if peer.rtt is None else 0.8 * peer.rtt + 0.2 * rtt

    async def _ask_have(self, peer: Peer) -> tuple[object, float]:
        """The peer's have document, and the seconds it took, asked the way the peer is reached."""
        video_id = self.manifest.video_id
        if peer.via == "http":
            started = time.monotonic()
            try:
                return await get_json(peer.http_url + api_paths.HAVE(video_id=video_id), HAVE_TIMEOUT), time.monotonic() - started
            except TransferError as e:
                if e.status is not None or self.links is None or peer.socket_id is None:
                    raise
                log.info("peer %s gives no answer over HTTP (%s); asking it over a data channel", peer.url, e)
                peer.via = "channel"
        if peer.socket_id is None or self.links is None:
            raise TransferError(f"peer {peer.url}: no socket to signal to")
        peer.channel = None
        peer.channel = await self.links.dial(video_id, peer.socket_id)
        on_lan = await self._have_on_lan(peer)
        if on_lan is not None:
            return on_lan
        started = time.monotonic()
        return await peer.channel.have(video_id, HAVE_TIMEOUT), time.monotonic() - started

    async def _have_on_lan(self, peer: Peer) -> tuple[object, float] | None:
        """The have over HTTP at the LAN address the peer's channel shows, switching the peer to it; None if none answers."""
        remote = peer.channel.pair["remote"] if peer.channel.pair else None
        if remote is None or remote["type"] != "host":
            return None
        parts = urllib.parse.urlsplit(peer.url)
        url = f"{parts.scheme}://{remote['address']}{f':{parts.port}' if parts.port else ''}{parts.path}".rstrip("/")
        started = time.monotonic()
        try:
            have = await get_json(url + api_paths.HAVE(video_id=self.manifest.video_id), HAVE_TIMEOUT)
        except TransferError as e:
            log.info("peer %s is on this LAN at %s, whose HTTP gives no have (%s); keeping the channel", peer.url,
                     remote["address"], e)
            return None
        log.info("peer %s is on this LAN: reading it over HTTP at %s", peer.url, url)
        peer.via, peer.http_url, peer.channel = "http", url, None
        return have, time.monotonic() - started


def _rtt_steps(peer: Peer) -> int:
    return int(peer.rtt / RTT_STEP) if peer.rtt is not None else 0

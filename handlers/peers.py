"""The peer protocol's endpoints (see :mod:`peers` for the whole protocol).

On the origin: ``/videos/{id}/manifest``, ``/videos/{id}/peers`` and
``/ice-servers`` (on any server). On a
node, those two (the upstream's manifest; the node's own peers joined to its
upstream's) and also ``/have``, ``/pieces/{n}`` and ``/sources``, which an
origin answers with 404: it holds whole videos, and nodes read those from
its ``/stream``.
"""

from __future__ import annotations

import logging
import time

from handlers.base import ApiError, BaseHandler
from media.ranges import Unsatisfiable, parse_range
from media.store import StoreError, VideoRecord, check_video_id
from peers import hops
from peers.have import have_document
from peers.hops import LoopDetected
from peers.ice import ice_servers
from peers.ordering import closest_first

log = logging.getLogger("binge.peers")


class PeerHandler(BaseHandler):
    def video(self, video_id: str) -> VideoRecord:
        return self.application.store.get(check_video_id(video_id))


class ManifestHandler(PeerHandler):
    """``GET /videos/{id}/manifest``: computed here on the origin, the upstream's on a node."""

    async def get(self, video_id: str) -> None:
        manifest = await self.application.manifests.get(self.video(video_id))
        self.set_header("Cache-Control", "no-cache")
        self.write_json(manifest.to_json())


class PeersHandler(PeerHandler):
    """``GET /videos/{id}/peers``: ``[{"url", "address", "socketId"}]``, the nodes watching the video, closest to the asker first.

    ``socketId`` is the node's socket on this server's presence, what a
    signal to it is addressed to (see :mod:`presence.signalling`); for a
    peer listed by the upstream, the upstream's, which this server relays to.

    A node adds its upstream's list to the nodes announced to itself; if the
    upstream does not answer, its own are the answer, but a 508 from it (a
    loop of upstreams, see :mod:`peers.hops`) is answered as such.
    """

    etag_from_body = False  # no-store

    async def get(self, video_id: str) -> None:
        video = self.video(video_id)
        peers = [
            {"url": w["peer"], "address": w["ipaddress"], "socketId": w["socketId"]}
            for w in self.application.presence.watchers(video.id)
            if "peer" in w
        ]
        try:
            peers += await self.application.store.upstream_peers(video.id)
        except LoopDetected:
            raise
        except StoreError as e:
            log.info("listing peers of %s without the upstream's: %s", video.id, e)
        unique: dict[str, dict] = {}
        for peer in peers:
            unique.setdefault(peer["url"], {k: peer[k] for k in ("url", "address", "socketId") if k in peer})
        self.set_header("Cache-Control", "no-store")
        self.write_json(closest_first(self.client_ip(), list(unique.values())))


class HaveHandler(PeerHandler):
    """``GET /videos/{id}/have``: ``{"root", "pieceSize", "pieces": [[first, end], ...]}``, the verified pieces held."""

    etag_from_body = False  # no-store

    def get(self, video_id: str) -> None:
        storage = self.application.store.pieces(self.video(video_id).id)
        self.set_header("Cache-Control", "no-store")
        self.write_json(have_document(storage))


class PieceHandler(PeerHandler):
    """``GET|HEAD /videos/{id}/pieces/{n}?root=HEX``: one held piece, with Range inside it on a GET.

    404 unless this node holds piece ``n`` of the manifest ``root`` names.
    The bytes are sent as stored: the receiver verifies them.
    """

    etag_from_body = False  # no-store

    async def get(self, video_id: str, index: str) -> None:
        await self._serve(video_id, int(index), include_body=True)

    async def head(self, video_id: str, index: str) -> None:
        await self._serve(video_id, int(index), include_body=False)

    async def _serve(self, video_id: str, n: int, include_body: bool) -> None:
        data = await self.application.store.piece_for_peer(self.video(video_id).id, n, self.get_query_argument("root", None))
        if data is None:
            raise ApiError(404, f"this node does not hold piece {n} of that manifest of {video_id!r}")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Cache-Control", "no-store")
        # Only GET defines Range (RFC 9110 §14.2): a HEAD describes the whole piece.
        range_header = self.request.headers.get("Range") if include_body else None
        try:
            selected = parse_range(range_header, len(data))
        except Unsatisfiable:
            self.refuse_range(len(data), f"piece {n}")
            return
        self.set_header("Content-Type", "application/octet-stream")
        if selected is not None:
            self.set_status(206)
            self.set_header("Content-Range", selected.content_range(len(data)))
            data = data[selected.start : selected.end]
        self.set_header("Content-Length", len(data))
        self.finish(data if include_body else None)


class SourcesHandler(PeerHandler):
    """``GET /videos/{id}/sources``: ``{"local", "peers", "origin", "reached"}``: bytes served here by where
    they came from, and how each peer of the video is reached (``{url: "http" | "direct-channel" |
    "relayed-channel"}``; a channel is relayed when its ICE pair has a TURN end)."""

    etag_from_body = False  # no-store

    def get(self, video_id: str) -> None:
        store = self.application.store
        video = self.video(video_id)
        self.set_header("Cache-Control", "no-store")
        self.write_json({**store.source_counts(video.id), "reached": store.peer_routes(video.id)})


class IceServersHandler(BaseHandler):
    """``GET /ice-servers``: ``{"iceServers": [{"urls"[, "username", "credential"]}][, "ttl"]}`` (see :mod:`peers.ice`).

    The TURN username names the asking node (the last id of its
    ``Binge-Via``), or ``viewer`` for a player.
    """

    etag_from_body = False  # no-store: every answer holds fresh credentials

    def get(self) -> None:
        chain = hops.incoming()
        self.set_header("Cache-Control", "no-store")
        self.write_json(ice_servers(self.application.config.peer, chain[-1] if chain else "viewer", time.time()))

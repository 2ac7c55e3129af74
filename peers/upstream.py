"""A node's upstream — the origin, or a node nearer to it — as the node's store calls it.

Every request to the upstream carries ``Binge-Via`` (:mod:`peers.hops`):
the chain of the request being served, then this node's id
(:attr:`Upstream.node_id`), so a loop of upstreams is refused at once.

Every call maps the upstream's failures onto store errors: its 404 is
:class:`NotFound`, its 508 is :class:`~peers.hops.LoopDetected` with the
upstream's own message (the one naming the loop, passed down unchanged),
anything else (refused, timed out, a 5xx, a bad answer) is
:class:`Unavailable`, so handlers answer them as they would a local store's.
"""

from __future__ import annotations

import email.utils
from typing import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

from tornado.httpclient import HTTPResponse

import api_paths
from media.store import NotFound, StoreError, Unavailable
from peers import hops
from peers.manifest import Manifest
from peers.transfer import TransferError, fetch, get_json, get_range

JSON_TIMEOUT = 5.0
# The origin computes a manifest it has not made yet while the request waits.
MANIFEST_TIMEOUT = 120.0


class Upstream:
    def __init__(self, url: str, node_id: str | None = None) -> None:
        self.url = url.rstrip("/")
        # This node's id in Binge-Via; drawn at random unless given.
        self.node_id = node_id or hops.new_node_id()

    def headers(self) -> dict[str, str]:
        """The headers every request to the upstream carries: ``Binge-Via``."""
        return hops.outgoing(self.node_id)

    def url_of(self, path: str) -> str:
        """The upstream's URL for ``path``, one of :mod:`api_paths`."""
        return self.url + path

    def presence_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + api_paths.PRESENCE(), "", ""))

    async def catalog(self) -> list[dict]:
        url = self.url_of(api_paths.VIDEOS())
        videos = await self._json(url, JSON_TIMEOUT)
        if not isinstance(videos, list) or not all(isinstance(v, dict) for v in videos):
            raise Unavailable(f"{url}: not a list of videos")
        return videos

    async def validators(self, video_id: str) -> tuple[str, float]:
        """The video's ``ETag`` and ``Last-Modified`` (as a timestamp), from a HEAD of its stream."""
        response = await self._fetch(self.url_of(api_paths.STREAM(video_id=video_id)), "HEAD", JSON_TIMEOUT)
        etag = response.headers.get("ETag")
        try:
            last_modified = email.utils.parsedate_to_datetime(response.headers.get("Last-Modified", "")).timestamp()
        except (TypeError, ValueError):
            last_modified = None
        if not etag or last_modified is None:
            raise Unavailable(f"{self.url}: the stream of {video_id!r} has no ETag or Last-Modified")
        return etag, last_modified

    async def manifest(self, video_id: str) -> Manifest:
        obj = await self._json(self.url_of(api_paths.MANIFEST(video_id=video_id)), MANIFEST_TIMEOUT)
        try:
            manifest = Manifest.from_json(obj)
        except ValueError as e:
            raise Unavailable(f"{self.url}: {e}") from None
        if manifest.video_id != video_id:
            raise Unavailable(f"{self.url}: asked for the manifest of {video_id!r}, got {manifest.video_id!r}")
        return manifest

    async def peers(self, video_id: str) -> list[dict]:
        """The upstream's ``[{"url", "address"[, "socketId"]}]`` for the video; malformed entries are left out."""
        peers = await self._json(self.url_of(api_paths.PEERS(video_id=video_id)), JSON_TIMEOUT)
        if not isinstance(peers, list):
            raise Unavailable(f"{self.url}: the peers of {video_id!r} are not a list")
        return [
            p for p in peers
            if isinstance(p, dict) and isinstance(p.get("url"), str) and isinstance(p.get("address"), str)
            and isinstance(p.get("socketId", ""), str)
        ]

    async def ice_servers(self) -> list[dict]:
        """The upstream's ``iceServers`` (see peers.ice): STUN, and TURN with credentials fresh for this node."""
        answer = await self._json(self.url_of(api_paths.ICE_SERVERS()), JSON_TIMEOUT)
        servers = answer.get("iceServers") if isinstance(answer, dict) else None
        if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
            raise Unavailable(f"{self.url}: its ICE servers are not a list of RTCIceServer objects")
        return servers

    async def body(self, path: str) -> bytes:
        """The body of ``GET path`` (a caption track, a poster: one of :mod:`api_paths`)."""
        return (await self._fetch(self.url_of(path), "GET", JSON_TIMEOUT)).body

    def stream_range(self, video_id: str, start: int, end: int, stall: float, etag: str) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` of the video's ``/stream``, only of the version ``etag`` names.

        As :func:`peers.transfer.get_range`: TransferErrors, raised after the
        bytes that did arrive, so the caller can resume (a 412 means the
        video changed; a 508 a loop of upstreams).
        """
        headers = {"If-Match": etag, **self.headers()}
        return get_range(self.url_of(api_paths.STREAM(video_id=video_id)), start, end, stall, headers)

    async def _json(self, url: str, timeout: float) -> object:
        try:
            return await get_json(url, timeout, self.headers())
        except TransferError as e:
            raise _store_error(e) from None

    async def _fetch(self, url: str, method: str, timeout: float) -> HTTPResponse:
        try:
            return await fetch(url, timeout, method, self.headers())
        except TransferError as e:
            raise _store_error(e) from None


def _store_error(e: TransferError) -> StoreError:
    if e.status == 404:
        return NotFound(str(e))
    if e.status == hops.LoopDetected.status:
        return hops.LoopDetected(e.detail or f"the upstream found a loop of upstreams: {e}")
    return Unavailable(f"the upstream failed: {e}")

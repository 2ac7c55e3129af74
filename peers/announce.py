"""Telling the upstream what this node's clients watch, so other nodes find it.

The node's own presence (its clients' websockets, and those of nodes
chained below it) is mirrored onto the upstream's: for every video at
least one of them watches, the node keeps one websocket open to the
upstream's ``/presence`` and sends ``{"type": "watch", "video": ID, "peer":
public_url}`` on it; when the last of them leaves the video, that socket
is closed and the upstream drops the node from the video's watchers. A
socket that drops is opened again after a pause that doubles from
``RETRY_MIN`` to ``RETRY_MAX`` seconds while the upstream stays away.

Each of those sockets also carries signals (see :mod:`presence.signalling`):
:meth:`Announcer.send` puts one up on the socket of a video, once its watch
has gone, and signals and signal errors coming down are handed to
``on_signal(video_id, message)``.

Without ``peer.public_url`` the node watches without a ``peer``: it is
counted as a viewer but not offered to others. If the upstream refuses the
``peer`` (its host is not the address the upstream sees the node at), the
node says so in the log and watches without it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import ujson
from tornado.httpclient import HTTPClientError
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, WebSocketError, websocket_connect

from presence.state import Change, Presence

log = logging.getLogger("binge.peers")

RETRY_MIN = 0.5
RETRY_MAX = 10.0
CONNECT_TIMEOUT = 5.0
# Pings find an upstream that vanished without closing the connection.
PING_INTERVAL = 10.0


class Announcer:
    def __init__(self, presence: Presence, presence_url: str, public_url: str | None,
                 on_signal: Callable[[str, dict], None]) -> None:
        self.presence = presence
        self.presence_url = presence_url
        self.public_url = public_url
        self.on_signal = on_signal
        self._sockets: dict[str, asyncio.Task] = {}
        # video id -> its socket at the upstream, once the watch is sent.
        self._open: dict[str, WebSocketClientConnection] = {}
        self._closed = False

    def start(self) -> None:
        self.presence.subscribe(self._changed)
        self._sync()

    def _changed(self, change: Change) -> None:
        self._sync()

    def _sync(self) -> None:
        if self._closed:
            return
        watched = self.presence.watched_videos()
        for video_id in watched - self._sockets.keys():
            self._sockets[video_id] = asyncio.ensure_future(self._watch(video_id))
        for video_id in self._sockets.keys() - watched:
            self._sockets.pop(video_id).cancel()

    async def _watch(self, video_id: str) -> None:
        """Keeps one socket watching ``video_id`` at the upstream, until cancelled."""
        pause = RETRY_MIN
        while True:
            try:
                ws = await websocket_connect(
                    self.presence_url, connect_timeout=CONNECT_TIMEOUT, ping_interval=PING_INTERVAL
                )
            except (OSError, HTTPClientError, WebSocketError) as e:  # refused, timed out, no upgrade
                log.info("cannot reach the upstream's presence at %s: %s", self.presence_url, e)
            else:
                pause = RETRY_MIN
                try:
                    await self._hold(ws, video_id)
                except (WebSocketClosedError, StreamClosedError):
                    pass
                finally:
                    ws.close()
            await asyncio.sleep(pause)
            pause = min(2 * pause, RETRY_MAX)

    def send(self, video_id: str, message: dict) -> bool:
        """Writes ``message`` on the socket watching ``video_id`` at the upstream; False if none is open."""
        ws = self._open.get(video_id)
        if ws is None:
            return False
        try:
            ws.write_message(ujson.dumps(message))
        except WebSocketClosedError:
            return False
        return True

    async def _hold(self, ws: WebSocketClientConnection, video_id: str) -> None:
        peer = self.public_url
        await ws.write_message(_watch_message(video_id, peer))
        self._open[video_id] = ws
        try:
            await self._read(ws, video_id, peer)
        finally:
            if self._open.get(video_id) is ws:
                del self._open[video_id]

    async def _read(self, ws: WebSocketClientConnection, video_id: str, peer: str | None) -> None:
        while (message := await ws.read_message()) is not None:
            try:
                reply = ujson.loads(message)
            except ValueError:
                continue
            if not isinstance(reply, dict):
                continue
            if reply.get("type") == "signal" or reply.get("type") == "error" and "to" in reply:
                self.on_signal(video_id, reply)
            elif reply.get("type") == "error":
                log.warning("the upstream refused to list this node for %s: %s", video_id, reply.get("error"))
                if peer is not None:
                    peer = None
                    await ws.write_message(_watch_message(video_id, None))

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._sockets.values())
        self._sockets.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _watch_message(video_id: str, peer: str | None) -> str:
    return ujson.dumps({"type": "watch", "video": video_id, **({"peer": peer} if peer else {})})

"""Real Binge+ servers on loopback (or in a namespace of harness/netns.py) for the peer tests and benchmark.

:class:`Server` runs ``server.py`` in a process of its own with a config in
a folder of its own: an origin when it has no upstream, a peer node when it
has one. :class:`CountingProxy` is a TCP proxy that counts the bytes a
server sends through it. :class:`Viewer` is a node's client as the Electron
app would be: it watches a video over the presence websocket and reads it
with sequential HTTP Range requests, like a ``<video>`` element, optionally
paced to a playback rate, timing each request.

All of it runs on the caller's asyncio loop; servers are stopped by pid.
Each server logs to ``<name>.log`` in its folder, at ``$BINGE_LOG_LEVEL``
(default INFO; DEBUG shows where every piece came from).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass, field

import ujson
from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import websocket_connect

from harness.http import get_json
from harness.media import MiB
from harness.netns import Namespace
from harness.server_process import ServerProcess


class Server(ServerProcess):
    """One ``server.py`` process with a library of its own; ``upstream`` makes it a peer node."""

    def __init__(self, folder: str, name: str, upstream: str | None = None, piece_size: int = 64 * 1024,
                 public_url: str | None = None, pravega: dict | None = None, peer: dict | None = None,
                 namespace: Namespace | None = None, workers: int = 1) -> None:
        super().__init__(os.path.join(folder, name), {"server": {"workers": workers}}, name, namespace=namespace)
        self.library = os.path.join(self.folder, "library")
        os.makedirs(self.library, exist_ok=True)
        self.upstream = upstream
        self.piece_size = piece_size
        # The URL announced to others; may be changed before start (to a proxy's, say).
        self.public_url = public_url or self.url
        # The ``pravega`` section of a node whose own store is Pravega.
        self.pravega = pravega
        # More keys of the ``peer`` section (max_held_bytes, say); may be changed before a restart.
        self.peer = dict(peer or {})

    def start(self) -> Server:
        self.config = {
            # ServerProcess's server keys (host, port, workers) stay; a peer node has one worker (server.workers).
            "server": {**self.config["server"], "shutdown_grace": 1},
            "storage": {"library": "library", "cache_dir": "cache", "scan_interval": 0.5},
            "peer": {"piece_size": self.piece_size, **self.peer},
        }
        if self.upstream:
            self.config["peer"].update(upstream=self.upstream, public_url=self.public_url)
        if self.pravega:
            self.config.update(pravega=self.pravega)
            self.config["storage"]["backend"] = "pravega"
        super().start()
        return self

    def pieces_file(self, video_id: str) -> str:
        return os.path.join(self.library, ".pieces", f"{video_id}.data")

    def stop(self, timeout: float = 5) -> None:
        super().stop(timeout)


async def start_all(*servers: Server, video: str | None = None) -> None:
    for server in servers:
        server.start()
    await asyncio.gather(*(s.ready(video=video) for s in servers))


async def peer_urls(server: Server, video_id: str) -> list[str]:
    return [p["url"] for p in await get_json(f"{server.url}/videos/{video_id}/peers")]


class CountingProxy:
    """A TCP proxy on loopback to ``target_port`` that counts the bytes the target sends back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _connection(self, client_reader, client_writer) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, target_writer}
        await asyncio.gather(
            self._pipe(client_reader, target_writer, count=False),
            self._pipe(target_reader, client_writer, count=True),
        )
        self._writers -= {client_writer, target_writer}

    async def _pipe(self, reader, writer, count: bool) -> None:
        try:
            while data := await reader.read(65536):
                if count:
                    self.sent += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0.05)  # lets the pipes see their connections closed and end


@dataclass
class Playback:
    body: bytes
    # Seconds from each request to its first byte of body, and to its last.
    first_byte: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def longest_request(self) -> float:
        return max(self.durations, default=0.0)


class Viewer:
    """A client of the server at ``url``: presence over a websocket, bytes over sequential Range requests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received = 0
        self._ws = None

    async def watch(self, video_id: str) -> None:
        welcomed = asyncio.get_running_loop().create_future()

        def on_message(message: str | None) -> None:
            # Every message is taken as it comes: a Tornado client left unread
            # stops reading its socket, answers no pings, and is closed as dead
            # after the server's ping interval and timeout, which takes the
            # viewer out of presence mid-test.
            if not welcomed.done():
                welcomed.set_result(message)

        self._ws = await websocket_connect(self.url.replace("http://", "ws://") + "/presence",
                                           on_message_callback=on_message)
        await welcomed
        await self._ws.write_message(ujson.dumps({"type": "watch", "video": video_id}))

    async def play(self, video_id: str, range_size: int = MiB, rate: float | None = None,
                   start: int = 0, end: int | None = None) -> Playback:
        """Reads bytes ``start`` to ``end`` (default: the video's end), ``range_size`` bytes a request.

        With ``rate``, requests are spaced so that at most ``rate`` bytes a second are read, as a player does.
        """
        if end is None:
            end = (await get_json(f"{self.url}/videos/{video_id}"))["size"]
        playback = Playback(b"")
        body = bytearray()
        began = time.monotonic()
        for offset in range(start, end, range_size):
            sent = time.monotonic()
            first: list[float] = []

            def chunk(data: bytes) -> None:
                if not first:
                    first.append(time.monotonic())
                body.extend(data)
                self.received += len(data)

            response = await AsyncHTTPClient().fetch(
                f"{self.url}/videos/{video_id}/stream",
                headers={"Range": f"bytes={offset}-{min(offset + range_size, end) - 1}"},
                streaming_callback=chunk, request_timeout=60,
            )
            assert response.code == 206, response.code
            done = time.monotonic()
            playback.first_byte.append(first[0] - sent)
            playback.durations.append(done - sent)
            if rate:
                await asyncio.sleep(max(0.0, began + (offset + range_size - start) / rate - done))
        playback.body = bytes(body)
        return playback

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()

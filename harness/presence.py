"""Presence instances for real: ``server.py`` processes sharing one Pravega scope, and websocket clients of them.

:class:`Scope` makes a fresh scope holding one small video, ``clip``, and
starts :class:`Instance` servers on it; :class:`Client` is a presence
websocket that keeps every message, of any server (an instance or a node). The shared-presence tests and
``bench/shared_presence.py`` run on these.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import ujson
from tornado.websocket import websocket_connect

from harness.http import get_json
from harness.media import write_random_video
from harness.server_process import ServerProcess
from pravega_workers.blocking import EventReader, stream_manager
from media.pravega_store import ingest_into_pravega
from media.store import NewVideo
from presence.pravega_link import PRESENCE_STREAM
from presence.shared import decode_record
from settings import settings_from_dict


class Instance(ServerProcess):
    """One ``server.py`` on the Pravega store."""

    def __init__(self, folder, name: str, uri: str, scope: str, instance_timeout: float) -> None:
        super().__init__(folder, {
            "server": {"shutdown_grace": 1},
            "storage": {"backend": "pravega", "cache_dir": str(folder / f"{name}-cache")},
            "pravega": {"controller_uri": uri, "scope": scope, "instance_timeout": instance_timeout},
        }, name)

    async def ready(self, timeout: float = 20.0) -> None:
        """Waits until the server answers and has replayed the catalog, which holds ``clip``."""
        await super().ready(timeout, video="clip")

    async def presence(self) -> dict:
        return await get_json(f"{self.url}/presence", timeout=5)


class Client:
    """A presence websocket that keeps every message as it comes, and the version of each presence it was sent."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.versions: list[int] = []

    async def connect(self, instance: Instance) -> "Client":
        self.conn = await websocket_connect(instance.url.replace("http", "ws") + "/presence",
                                            on_message_callback=self.inbox.put_nowait)
        welcome = await self.next()
        self.socket_id = welcome["socketId"]
        return self

    async def next(self, timeout: float = 10.0) -> dict:
        raw = await asyncio.wait_for(self.inbox.get(), timeout)
        assert raw is not None, "socket closed"
        message = ujson.loads(raw)
        if message["type"] in ("presence", "changes"):
            self.versions.append(message["version"])
        return message

    async def presence_until(self, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if message["type"] == "presence" and predicate(message["presence"]):
                return message["presence"]

    async def relayed(self, timeout: float = 10.0) -> dict:
        """The next signal or error (see presence.signalling), past any presence."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if message["type"] in ("signal", "error"):
                return message

    def send(self, message: dict) -> None:
        self.conn.write_message(ujson.dumps(message))


def watching(socket_id: str, video: str):
    return lambda p: any(w["socketId"] == socket_id for w in p["videos"].get(video, []))


class Scope:
    """A fresh scope holding one small video, and the instances started on it."""

    def __init__(self, uri: str, folder, instance_timeout: float) -> None:
        self.uri, self.folder, self.instance_timeout = uri, folder, instance_timeout
        self.name = f"test-{uuid.uuid4().hex[:12]}"
        video = folder / "clip.mp4"
        write_random_video(str(video), 100_000, seed=5)
        settings = settings_from_dict({"storage": {"backend": "pravega"},
                                       "pravega": {"controller_uri": uri, "scope": self.name}})
        item = NewVideo(id="clip", source_path=str(video), name="Clip", mime_type="video/mp4",
                        duration_seconds=1.0, captions={}, poster=None)
        ingest_into_pravega(settings, item, lambda done: None)
        self.instances: list[Instance] = []

    def start(self, name: str) -> Instance:
        self.instances.append(Instance(self.folder, name, self.uri, self.name, self.instance_timeout).start())
        return self.instances[-1]

    def presence_stream(self) -> tuple[int, list]:
        """The head offset of the scope's presence stream, and its records from there, as a replay reads them."""
        reader = EventReader(stream_manager(self.uri), self.name, PRESENCE_STREAM)
        head = reader.position
        records, caught_up = reader.read_new()
        assert caught_up
        return head, [decode_record(data) for _, data in records]

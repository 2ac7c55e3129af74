"""Presence as changes (``/presence?changes=1``): a snapshot first, then changes that rebuild every later one.

First the broadcaster alone, with random operations and a client that
applies what it gets as a browser would; then real websockets against the
app on loopback.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import ujson
from tornado.websocket import websocket_connect

from presence.broadcast import Broadcaster
from presence.state import Presence
from settings import PresenceSettings
from tests.conftest import make_config


def apply(presence: dict | None, message: dict) -> dict:
    """What a client following changes holds after ``message``: the reference for the protocol."""
    if message["type"] == "presence":
        return message["presence"]
    assert message["type"] == "changes" and presence is not None
    assert message["from"] == presence["version"], "a change is missing"
    sockets, videos = presence["sockets"], presence["videos"]
    for change in message["changes"]:
        socket_id = change["socketId"]
        old = next((v for v, entries in videos.items() if any(e["socketId"] == socket_id for e in entries)), None)
        new = None if change.get("gone") else change["video"]
        entry = {k: v for k, v in change.items() if k != "video"}
        if old is not None and old == new:
            videos[old] = [entry if e["socketId"] == socket_id else e for e in videos[old]]
        else:
            if old is not None:
                videos[old] = [e for e in videos[old] if e["socketId"] != socket_id]
                if not videos[old]:
                    del videos[old]
            if new is not None:
                videos.setdefault(new, []).append(entry)
        if change.get("gone"):
            del sockets[socket_id]
        else:
            sockets[socket_id] = change["ipaddress"]
    presence["version"] = message["version"]
    return presence


class Recorder:
    """A client that takes every write at once and keeps what it was sent, decoded."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    def write_message(self, message: bytes, binary: bool = False):
        self.messages.append(ujson.loads(message))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def close(self, code=None, reason=None) -> None:
        raise AssertionError("a client that keeps up is never closed")


def random_operation(rng: random.Random, presence: Presence, sockets: list[str], serial: list[int]) -> None:
    kind = rng.choice(["connect", "watch", "watch", "peer", "leave", "disconnect"] if sockets else ["connect"])
    if kind == "connect":
        serial[0] += 1
        sockets.append(f"s{serial[0]}")
        presence.connect(sockets[-1], f"10.0.0.{serial[0] % 250}")
        return
    socket_id = rng.choice(sockets)
    if kind == "watch":
        presence.watch(socket_id, rng.choice(["alpha", "beta", "gamma"]))
    elif kind == "peer":
        video = rng.choice(["alpha", "beta"])
        presence.watch(socket_id, video, peer=f"http://10.0.0.{rng.randrange(250)}:8081/")
    elif kind == "leave":
        presence.leave(socket_id)
    else:
        sockets.remove(socket_id)
        presence.disconnect(socket_id)


@pytest.mark.parametrize("seed", range(5))
def test_changes_rebuild_every_snapshot_in_order(seed):
    async def scenario() -> None:
        rng = random.Random(seed)
        presence = Presence()
        broadcaster = Broadcaster(presence, PresenceSettings(coalesce_interval=0.005))
        follower, watcher = Recorder(), Recorder()
        broadcaster.join(follower, changes=True)
        broadcaster.join(watcher)
        sockets: list[str] = []
        serial = [0]
        late = None
        held, seen = None, 0
        for burst in range(60):
            for _ in range(rng.randrange(1, 8)):
                random_operation(rng, presence, sockets, serial)
            if burst == 20:
                late = Recorder()  # joins with a backlog of history it never saw
                broadcaster.join(late, changes=True)
            await asyncio.sleep(0.008)
            for message in follower.messages[seen:]:
                held = apply(held, message)
            seen = len(follower.messages)
            assert held == presence.snapshot()
            assert watcher.messages[-1]["presence"] == presence.snapshot()
        assert all(m["type"] == "presence" for m in watcher.messages)
        kinds = [m["type"] for m in follower.messages]
        assert kinds[0] == "presence" and "changes" in kinds
        late_held = None
        for message in late.messages:
            late_held = apply(late_held, message)
        assert late.messages[0]["type"] == "presence" and late_held == presence.snapshot()

    asyncio.run(scenario())


def test_a_burst_bigger_than_presence_goes_out_as_a_snapshot():
    async def scenario() -> None:
        presence = Presence()
        broadcaster = Broadcaster(presence, PresenceSettings(coalesce_interval=0.005))
        follower = Recorder()
        broadcaster.join(follower, changes=True)
        presence.connect("s1", "10.0.0.1")
        await asyncio.sleep(0.01)
        presence.watch("s1", "alpha")
        await asyncio.sleep(0.01)
        for video in ("beta", "gamma", "alpha", "beta"):
            presence.watch("s1", video)
        await asyncio.sleep(0.01)
        assert [m["type"] for m in follower.messages] == ["presence", "changes", "presence"]
        assert follower.messages[1]["changes"] == [{"socketId": "s1", "ipaddress": "10.0.0.1", "video": "alpha"}]
        assert follower.messages[2]["presence"] == presence.snapshot()

    asyncio.run(scenario())


# ---------------------------------------------------------------- websockets against the app


@pytest.fixture
def config(tmp_path, library):
    return make_config(tmp_path)


async def next_message(conn) -> dict:
    message = await asyncio.wait_for(conn.read_message(), 5)
    assert message is not None, "socket closed"
    return ujson.loads(message)


@pytest.mark.gen_test
async def test_a_changes_client_follows_while_a_plain_one_gets_snapshots(http_server, http_port, http_client):
    url = f"ws://127.0.0.1:{http_port}/presence"
    follower = await websocket_connect(url + "?changes=1")
    plain = await websocket_connect(url)
    assert (await next_message(follower))["type"] == "welcome"
    held = None
    while held is None or len(held["sockets"]) < 2:
        held = apply(held, await next_message(follower))
    assert (await next_message(plain))["type"] == "welcome"
    plain.write_message(ujson.dumps({"type": "watch", "video": "alpha"}))
    message = await next_message(follower)
    assert message["type"] == "changes" and message["from"] == held["version"]
    held = apply(held, message)
    answer = ujson.loads((await http_client.fetch(f"http://127.0.0.1:{http_port}/presence")).body)
    assert held == answer
    while (message := await next_message(plain))["version"] < answer["version"]:
        assert message["type"] == "presence"
    assert message["presence"] == answer
    follower.close()
    plain.close()

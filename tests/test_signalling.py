"""Signals: the relay's routing on its own, then across a chain of real servers (origin, node A, node B below A).

The cases on one server (forged senders, other videos, floods) are in
test_presence.py; a socket of another instance sharing presence, in
test_presence_shared.py.
"""

from __future__ import annotations

import asyncio
import os

from harness.http import get_json
from harness.loopback import until
from harness.media import write_random_video
from harness.presence import Client

from presence.messages import Signal
from presence.signalling import Signalling
from presence.state import Presence


def _sockets(*watching: tuple[str, str]) -> tuple[Signalling, dict[str, list]]:
    presence = Presence()
    signalling = Signalling(presence, 10)
    got: dict[str, list] = {}
    for socket_id, video in watching:
        presence.connect(socket_id, "10.0.0.1")
        presence.watch(socket_id, video)
        got[socket_id] = []
        signalling.join(socket_id, got[socket_id].append, lambda code, reason: None)
    return signalling, got


def test_a_node_sends_up_what_it_cannot_deliver_and_refuses_it_when_no_upstream_socket_is_open():
    signalling, got = _sockets(("s1", "alpha"))
    sent: list[tuple[str, dict]] = []
    signalling.upstream = lambda video, message: sent.append((video, message)) or True
    signalling.signal("s1", Signal("far/deeper", {"sdp": "..."}, relay_for="below"))
    assert sent == [("alpha", {"type": "signal", "to": "far/deeper", "relayFor": "s1/below", "data": {"sdp": "..."}})]
    signalling.upstream = lambda video, message: False
    signalling.signal("s1", Signal("far", 1))
    assert got["s1"] == [{"type": "error", "error": "no socket far here nor at the upstream", "reason": "unknown",
                          "to": "far"}]


def test_what_comes_down_goes_only_to_the_socket_it_names_watching_that_video():
    signalling, got = _sockets(("s1", "alpha"), ("s2", "beta"))
    signalling.from_upstream("alpha", {"type": "signal", "from": "x", "to": "s1/deeper", "data": 1})
    signalling.from_upstream("alpha", {"type": "signal", "from": "x", "to": "s2", "data": 2})  # s2 watches beta
    signalling.from_upstream("alpha", {"type": "signal", "from": "x", "data": 3})  # for the node itself
    signalling.from_upstream("alpha", {"type": "error", "error": "no socket y", "reason": "unknown", "to": "y",
                                       "for": "s1"})
    assert got == {
        "s1": [{"type": "signal", "from": "x", "to": "deeper", "data": 1},
               {"type": "error", "error": "no socket y", "reason": "unknown", "to": "y"}],
        "s2": [],
    }


# Seconds for a watch to reach the origin through two nodes' announcers (one
# websocket each), with room for a machine three times slower.
ANNOUNCED = 15.0


def test_a_signal_crosses_a_chain_of_nodes_and_the_answer_and_errors_come_back(servers):
    origin = servers("origin")
    write_random_video(os.path.join(origin.library, "clip.mp4"), 100_000, seed=7)
    a = servers("a", upstream=origin.url)
    b = servers("b", upstream=a.url)

    async def scenario():
        for server in (origin, a, b):
            server.start()
            await server.ready(video="clip")
        viewer = await Client().connect(origin)
        far = await Client().connect(b)
        for client in (viewer, far):
            client.send({"type": "watch", "video": "clip"})
        # far's watch climbs as b's socket at a, then a's socket at the origin.
        presence = await viewer.presence_until(lambda p: len(p["videos"].get("clip", [])) == 2, ANNOUNCED)
        (a_socket,) = [w for w in presence["videos"]["clip"] if w["socketId"] != viewer.socket_id]
        assert a_socket["peer"] == a.url

        offer = {"type": "offer", "sdp": "v=0\r\n"}
        far.send({"type": "signal", "to": viewer.socket_id, "data": offer})
        signal = await viewer.relayed()
        # The origin names a's socket, a names b's, b names far: each hop vouches for its own part.
        hops = signal["from"].split("/")
        assert (signal["type"], signal["data"], len(hops)) == ("signal", offer, 3)
        assert hops[0] == a_socket["socketId"] and hops[2] == far.socket_id

        viewer.send({"type": "signal", "to": signal["from"], "data": {"type": "answer"}})
        assert await far.relayed() == {"type": "signal", "from": viewer.socket_id, "data": {"type": "answer"}}

        # An error for a relayed signal comes back down to its sender alone.
        far.send({"type": "signal", "to": "nobody", "data": {}})
        error = await far.relayed()
        assert (error["type"], error["reason"], error["to"]) == ("error", "unknown", "nobody")
        assert "for" not in error
        viewer.conn.close()
        await until(lambda: _lacks(origin, viewer.socket_id), 5.0, "the viewer gone from the origin")
        far.send({"type": "signal", "to": viewer.socket_id, "data": {}})
        assert (await far.relayed())["reason"] == "gone"
        far.conn.close()

    asyncio.run(scenario())


async def _lacks(server, socket_id: str) -> bool:
    return socket_id not in (await get_json(f"{server.url}/presence"))["sockets"]

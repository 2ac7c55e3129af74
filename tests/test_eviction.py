"""Bounded piece storage: a node evicts whole videos, least recently read first, past peer.max_held_bytes.

The policy and the storages are tested on their own first; then real nodes
(``server.py`` processes, see :mod:`harness.nodes`) play one video after
another with a small limit, on the filesystem and on Pravega, and are
restarted with a smaller one to show that what an earlier run left counts.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from harness.http import get_json
from harness.loopback import until
from harness.media import write_random_video
from harness.nodes import MiB, Server, Viewer, start_all
from peers.eviction import HeldPieces
from peers.pieces import SparseFilePieces, stored_on_disk
from peers.pravega_pieces import PieceStreams, stream_prefix
from tests.pieces import PIECE, manifest_of, streams_of, until_held

# --- the policy ---------------------------------------------------------------


def test_least_recently_read_whole_videos_go_until_within_the_limit():
    held = HeldPieces(limit=100, idle=5)
    held.stored("from-last-run", 40, last_read=0.0)
    held.stored("damaged", 10)  # left by an earlier run, never known to be read: first to go
    for video_id, t in (("a", 10.0), ("b", 20.0), ("c", 30.0)):
        held.read_began(video_id, t)
        held.stored(video_id, 30)
        held.read_ended(video_id, t + 1)
    assert held.total == 140
    # 140 - 10 - 40 = 90: within the limit, so "a", the next least recently read, stays.
    assert held.victims(now=100.0) == ["damaged", "from-last-run"]
    for video_id in ("damaged", "from-last-run"):
        held.forget(video_id)
    assert held.victims(now=100.0) == [] and held.next_check(100.0) is None

    held.stored("c", 60)  # c grows past the limit: the least recently read of the others goes
    assert held.victims(now=100.0) == ["a"]
    assert held.victims(now=100.0, pinned={"a"}) == ["b"]
    # Everything else in use: nothing can go, and the total stays over the limit for now.
    assert held.victims(now=100.0, pinned={"a", "b", "c"}) == []


def test_reads_in_progress_recent_reads_and_pins_are_never_evicted():
    held = HeldPieces(limit=10, idle=5)
    held.read_began("playing", 0.0)
    held.stored("playing", 50)
    held.read_began("paused", 1.0)
    held.stored("paused", 50)
    held.read_ended("paused", 2.0)
    held.stored("fetching", 50, last_read=-100.0)
    now = 3.0
    assert held.victims(now, pinned={"fetching"}) == []
    # "paused" may go 5 s after its last read; "playing" only once its read is over.
    assert held.next_check(now, pinned={"fetching"}) == 7.0
    assert held.victims(7.0, pinned={"fetching"}) == ["paused"]
    held.read_ended("playing", 8.0)
    assert held.victims(12.9) == ["fetching", "paused"]
    assert held.victims(13.0) == ["fetching", "paused", "playing"]  # none alone fits: all may go
    # A time from an earlier run never moves a video's last read of this run back.
    held.stored("playing", 50, last_read=-math.inf)
    assert not held.evictable("playing", 12.0)


def test_sparse_pieces_are_counted_after_a_restart_and_discarded_for_real(tmp_path):
    data = os.urandom(5 * PIECE + 1000)
    manifest = manifest_of(data)
    (tmp_path / "broken.data").write_bytes(b"x" * 10_000)  # a crash before its record was written

    async def scenario():
        storage = SparseFilePieces(str(tmp_path), "v")
        await storage.adopt(manifest)
        await storage.put(0, data[:PIECE])
        await storage.put(5, data[5 * PIECE :])
        bytes_held = storage.held_bytes()
        storage.close()
        found = stored_on_disk(str(tmp_path))
        again = SparseFilePieces(str(tmp_path), "v")
        again.discard()
        await again.put(1, data[PIECE : 2 * PIECE])  # kept by nobody: the storage is gone
        return bytes_held, found, again.held(), again.manifest

    bytes_held, found, held_after, manifest_after = asyncio.run(scenario())
    assert bytes_held == PIECE + 1000
    assert found["v"][0] == PIECE + 1000 and found["v"][1] == pytest.approx(time.time(), abs=60)
    assert found["broken"][0] >= 10_000 and found["broken"][1] is None
    assert held_after == set() and manifest_after is None
    assert sorted(os.listdir(tmp_path)) == ["broken.data"]


@pytest.mark.pravega
def test_the_appender_lists_and_deletes_streams_by_prefix(pravega_settings):
    data = os.urandom(3 * PIECE)

    async def scenario():
        streams = PieceStreams(pravega_settings)
        streams.start()
        try:
            kept = []
            for video_id in ("one", "two"):
                storage = streams.storage(video_id)
                await storage.adopt(manifest_of(data, video_id=video_id))
                for n in range(3):
                    await storage.put(n, data[n * PIECE : (n + 1) * PIECE])
                await until_held(storage, {0, 1, 2})
                kept.append(storage)
            listed = await streams.appender.list("p-")
            counted = await streams.stored()
            names = [s.stream for s in kept]
            kept[0].discard()
            deleted = await kept[0].deleting
            return listed, counted, deleted, kept[0].held(), names
        finally:
            streams.close()

    listed, counted, deleted, held_after, names = asyncio.run(scenario())
    assert sorted(listed) == sorted(names) and all(tail > 3 * PIECE for tail in listed.values())
    assert counted == {"one": 3 * PIECE, "two": 3 * PIECE}
    assert deleted == [names[0]] and names[0].startswith(stream_prefix("one")) and held_after == set()
    assert streams_of(pravega_settings) == [names[1]]


# --- real nodes ---------------------------------------------------------------

SIZE = MiB + 1000  # 17 pieces of 64 KiB
# Room for two of them, not three.
LIMIT = 2 * SIZE + SIZE // 2
IDLE = 0.3


def _node_with_three_videos(servers, **kwargs) -> tuple[Server, Server, dict[str, bytes]]:
    origin = servers("origin")
    videos = {v: write_random_video(os.path.join(origin.library, f"{v}.mp4"), SIZE, seed=i)
              for i, v in enumerate("abc")}
    node = servers("node", upstream=origin.url, peer={"max_held_bytes": LIMIT, "evict_idle_seconds": IDLE}, **kwargs)
    return origin, node, videos


async def _have(server: Server, video_id: str) -> list:
    return (await get_json(f"{server.url}/videos/{video_id}/have"))["pieces"]


async def _play_each(node: Server, viewer: Viewer, videos: dict[str, bytes], order: str) -> None:
    for video_id in order:
        assert (await viewer.play(video_id)).body == videos[video_id]
        await until(lambda: _holds_all(node, video_id), what=f"all of {video_id} held")


async def _holds_all(server: Server, video_id: str) -> bool:
    return await _have(server, video_id) == [[0, 17]]


async def _held_bytes_are(server: Server, nbytes: int) -> bool:
    return (await get_json(f"{server.url}/healthz"))["store"]["heldBytes"] == nbytes


async def _holds_none(server: Server, video_id: str) -> bool:
    return await _have(server, video_id) == []


def _files(node: Server) -> list[str]:
    """The node's piece files, but a record being rewritten at that moment."""
    return sorted(name for name in os.listdir(os.path.join(node.library, ".pieces")) if not name.endswith(".part"))


def test_a_node_evicts_the_least_recently_read_video_and_fetches_it_again(servers):
    origin, node, videos = _node_with_three_videos(servers)

    async def scenario():
        await start_all(origin, node, video="c")
        viewer = Viewer(node.url)
        await _play_each(node, viewer, videos, "abc")
        await until(lambda: _holds_none(node, "a"), what="a evicted")
        facts = {"files after c": _files(node), "have b": await _have(node, "b"), "have c": await _have(node, "c"),
                 "health": (await get_json(f"{node.url}/healthz"))["store"]}
        again = await viewer.play("a")
        await until(lambda: _holds_none(node, "b"), what="b evicted once a came back")
        facts.update({"files after a again": _files(node), "have a": await _have(node, "a"),
                      "sources a": await get_json(f"{node.url}/videos/a/sources")})
        # An earlier run's pieces count: restarted with room for one video, the one read longer ago goes.
        node.stop()
        node.peer["max_held_bytes"] = SIZE + SIZE // 2
        node.start()
        await node.ready(video="c")
        await until(lambda: _gone_from_disk(node, "c"), what="c evicted at start")
        facts.update({"files after restart": _files(node), "have a after restart": await _have(node, "a"),
                      "health after restart": (await get_json(f"{node.url}/healthz"))["store"]})
        viewer.close()
        return again, facts

    again, facts = asyncio.run(scenario())
    assert facts["files after c"] == [f"{v}.{kind}" for v in "bc" for kind in ("data", "have.json", "manifest.json")]
    assert facts["have b"] == facts["have c"] == [[0, 17]]
    health = facts["health"]
    assert health["heldBytes"] == 2 * SIZE and health["maxHeldBytes"] == LIMIT and health["evictions"] == 1
    assert again.body == videos["a"]
    # Every byte of a came from the origin twice: nothing of it was left to read locally.
    assert facts["sources a"] == {"local": 0, "peers": 0, "origin": 2 * SIZE, "reached": {}}
    assert facts["have a"] == [[0, 17]]
    assert facts["files after a again"] == [f"{v}.{kind}" for v in "ac" for kind in ("data", "have.json", "manifest.json")]
    assert facts["files after restart"] == ["a.data", "a.have.json", "a.manifest.json"]
    assert facts["have a after restart"] == [[0, 17]]
    assert facts["health after restart"]["heldBytes"] == SIZE


def _gone_from_disk(node: Server, video_id: str) -> bool:
    return not any(name.startswith(f"{video_id}.") for name in _files(node))


@pytest.mark.pravega
def test_a_pravega_node_deletes_the_stream_of_an_evicted_video(servers, pravega_settings):
    pravega = {"controller_uri": pravega_settings.controller_uri, "scope": pravega_settings.scope}
    origin, node, videos = _node_with_three_videos(servers, pravega=pravega)

    def streams_for(video_id: str) -> list[str]:
        return [s for s in streams_of(pravega_settings) if s.startswith(stream_prefix(video_id))]

    async def scenario():
        await start_all(origin, node, video="c")
        viewer = Viewer(node.url)
        await _play_each(node, viewer, videos, "ab")
        streams_before = {v: streams_for(v) for v in "ab"}
        await _play_each(node, viewer, videos, "c")
        await until(lambda: _holds_none(node, "a"), what="a evicted")
        await until(lambda: not streams_for("a"), what="a's stream deleted")
        # Pieces go into Pravega behind the client's reads: c's last ones may still be on their way.
        await until(lambda: _held_bytes_are(node, 2 * SIZE), what="b and c wholly in Pravega")
        facts = {"before": streams_before, "after": {v: streams_for(v) for v in "abc"},
                 "health": (await get_json(f"{node.url}/healthz"))["store"]}
        again = await viewer.play("a")
        await until(lambda: _holds_all(node, "a"), what="all of a held again")
        await until(lambda: not streams_for("b"), what="b's stream deleted once a came back")
        # Counted at start from the streams' headers: restarted with room for one video, a or c goes.
        node.stop()
        node.peer["max_held_bytes"] = SIZE + SIZE // 2
        node.start()
        await node.ready(video="c")
        await until(lambda: len(streams_of(pravega_settings)) == 1, what="one stream left", timeout=20)
        viewer.close()
        return again, facts

    again, facts = asyncio.run(scenario())
    assert all(len(names) == 1 for names in facts["before"].values())
    assert facts["after"]["a"] == [] and facts["after"]["b"] == facts["before"]["b"] and len(facts["after"]["c"]) == 1
    assert facts["health"]["heldBytes"] == 2 * SIZE and facts["health"]["evictions"] == 1
    assert again.body == videos["a"]
    assert not os.path.exists(os.path.join(node.library, ".pieces"))


def test_a_video_served_to_peers_counts_as_used(servers):
    origin, node, videos = _node_with_three_videos(servers)

    async def scenario():
        await start_all(origin, node, video="c")
        viewer = Viewer(node.url)
        await _play_each(node, viewer, videos, "ab")
        # Another node fetches a piece of a, played longer ago than b.
        root = (await get_json(f"{node.url}/videos/a/have"))["root"]
        piece = await AsyncHTTPClient().fetch(f"{node.url}/videos/a/pieces/3?root={root}")
        await _play_each(node, viewer, videos, "c")
        await until(lambda: _holds_none(node, "b"), what="b evicted, not a")
        viewer.close()
        return piece.body, await _have(node, "a")

    piece, have_a = asyncio.run(scenario())
    assert piece == videos["a"][3 * PIECE : 4 * PIECE]
    assert have_a == [[0, 17]]

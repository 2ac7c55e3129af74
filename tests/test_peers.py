"""Peer nodes: manifests, piece storage, multi-source fetching, and real nodes on loopback.

The first tests exercise the parts on their own (fetching runs against small
in-process servers that misbehave on purpose: cut a piece short, stall,
send wrong bytes). The last ones start real ``server.py`` processes — an
origin and peer nodes, each with its own library — and play videos through
them as a client would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import signal
import time

import pytest
import tornado.web
import ujson
from tornado.httpclient import AsyncHTTPClient
from tornado.testing import bind_unused_port

from harness.http import get_json
from harness.in_process import listen
from harness.loopback import free_port, until
from harness.media import write_random_video
from harness.nodes import (
    MiB,
    CountingProxy,
    Playback,
    Server,
    Viewer,
    peer_urls,
    start_all,
)
from media.filesystem import FilesystemStore
from media.sample import make_video, write_srt
from peers import manifest_cache, pravega_pieces
from peers.fetcher import PieceFetcher
from peers.have import from_ranges, to_ranges
from peers.manifest import Manifest, compute_manifest
from peers.ordering import closest_first
from peers.pieces import SparseFilePieces
from peers.pravega_pieces import PieceStreams
from peers.session import MAX_IN_FLIGHT, READ_AHEAD, VideoSession
from peers.swarm import Swarm
from peers.upstream import Upstream
from settings import PravegaSettings, StorageSettings
from tests.conftest import read_bytes
from tests.pieces import PIECE, manifest_of, streams_of, until_held


# --- the parts ---------------------------------------------------------------


def test_manifest_from_store_matches_the_bytes(tmp_path):
    data = os.urandom(5 * PIECE + 123)
    (tmp_path / "v.mp4").write_bytes(data)

    async def scenario():
        store = FilesystemStore(StorageSettings(library=str(tmp_path)))
        await store.rescan()
        return await compute_manifest(store, store.get("v"), PIECE)

    manifest = asyncio.run(scenario())
    assert manifest == manifest_of(data, etag=manifest.etag)
    assert manifest.piece_count == 6 and manifest.piece_range(5) == (5 * PIECE, len(data))
    assert list(manifest.pieces_covering(PIECE - 1, PIECE + 1)) == [0, 1]
    assert Manifest.from_json(ujson.loads(ujson.dumps(manifest.to_json()))) == manifest


def test_origin_computes_manifests_ahead_and_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_cache, "PRECOMPUTE_DELAY", 0.05)
    library = tmp_path / "library"
    library.mkdir()
    write_random_video(str(library / "one.mp4"), 3 * PIECE, seed=1)
    saved = tmp_path / "cache" / "manifests"

    async def scenario():
        store = FilesystemStore(StorageSettings(library=str(library), scan_interval=60))
        await store.rescan()
        cache = manifest_cache.ManifestCache(store, str(tmp_path / "cache"), PIECE)
        cache.follow_catalog()
        # Precomputing runs off the loop, as soon as the thread pool gets to it.
        await until(lambda: (saved / "one.json").exists(), what="the first manifest")
        first = manifests(saved)
        write_random_video(str(library / "two.mp4"), PIECE + 1, seed=2)
        await store.rescan()  # what the scan every storage.scan_interval does
        await until(lambda: (saved / "two.json").exists(), what="the second manifest")
        written = os.stat(saved / "two.json").st_mtime_ns
        restarted = manifest_cache.ManifestCache(store, str(tmp_path / "cache"), PIECE)
        two = await restarted.get(store.get("two"))
        return first, manifests(saved), two, written == os.stat(saved / "two.json").st_mtime_ns

    def manifests(folder) -> list[str]:
        """The manifest files, not the hidden locks beside them."""
        return sorted(p.name for p in folder.glob("*.json"))

    first, then, two, read_not_rewritten = asyncio.run(scenario())
    assert first == ["one.json"] and then == ["one.json", "two.json"] and read_not_rewritten
    assert two == manifest_of((library / "two.mp4").read_bytes(), video_id="two", etag=two.etag)


@pytest.mark.parametrize("change", [
    {"root": "0" * 64}, {"pieces": []}, {"pieceSize": 0}, {"size": -1}, {"pieces": ["zz"] * 6},
])
def test_manifest_that_does_not_add_up_is_refused(change):
    obj = {**manifest_of(os.urandom(5 * PIECE + 1)).to_json(), **change}
    with pytest.raises(ValueError):
        Manifest.from_json(obj)


def test_have_ranges_round_trip():
    assert to_ranges({5, 0, 1, 2, 9}) == [[0, 3], [5, 6], [9, 10]]
    assert from_ranges([[0, 3], [9, 10]], 10) == {0, 1, 2, 9}
    # Overlapping or out of order, a peer could make a short list cost a set insert per piece, many times over.
    for bad in ([[3, 3]], [[0, 11]], [[True, 2]], "0-3", [[0]], [[0, 10], [0, 10]], [[5, 6], [0, 1]]):
        with pytest.raises(ValueError):
            from_ranges(bad, 10)


def test_closest_first():
    peers = [{"url": u, "address": a} for u, a in [
        ("far", "10.1.2.3"), ("lan", "192.168.1.20"), ("same", "192.168.1.10"), ("v6", "2001:db8::1"),
        ("junk", "not an address"), ("lan6", "2001:db8:0:1::5"), ("mapped", "::ffff:192.168.1.99"),
    ]]
    in_order = ["same", "lan", "mapped", "far", "v6", "junk", "lan6"]
    assert [p["url"] for p in closest_first("192.168.1.10", peers)] == in_order
    assert [p["url"] for p in closest_first("2001:db8:0:1::9", peers)][:1] == ["lan6"]


def test_sparse_pieces_survive_a_restart_and_catch_corruption(tmp_path):
    data = os.urandom(4 * PIECE)
    manifest = manifest_of(data)

    async def scenario():
        storage = SparseFilePieces(str(tmp_path), "v")
        await storage.adopt(manifest)
        await storage.put(1, data[PIECE : 2 * PIECE])
        await storage.put(3, data[3 * PIECE :])
        storage.close()
        again = SparseFilePieces(str(tmp_path), "v")
        assert again.manifest == manifest and again.held() == {1, 3}
        assert await again.get(1) == data[PIECE : 2 * PIECE]
        assert await again.get(2) is None
        with open(tmp_path / "v.data", "r+b") as f:
            f.seek(3 * PIECE + 10)
            f.write(b"\0\1\2")
        assert await again.raw(3) != data[3 * PIECE :]  # what a peer would be sent, unchecked
        assert await again.get(3) is None  # what a client would be served: checked
        assert again.held() == {1}
        await again.adopt(manifest_of(os.urandom(PIECE)))  # the video changed: start over
        assert again.held() == set()
        again.close()

    asyncio.run(scenario())
    assert os.path.getsize(tmp_path / "v.data") == PIECE


@pytest.mark.pravega
def test_pravega_prefix_survives_a_restart_and_catches_corruption(pravega_settings):
    data = os.urandom(20 * PIECE + 1000)
    manifest = manifest_of(data)

    def piece(n: int) -> bytes:
        return data[n * PIECE : (n + 1) * PIECE]

    async def run_node(step):
        streams = PieceStreams(pravega_settings)
        streams.start()
        storage = streams.storage("v")
        await storage.adopt(manifest)
        # adopt() waits for the open at most OPEN_WAIT; a node's workers start long before its first read,
        # these just before it, which on a busy machine can take longer. Each step is about what the opened
        # stream holds, so it starts from there.
        await asyncio.wait([storage._opening])
        try:
            return await step(streams, storage)
        finally:
            storage.close()
            streams.close()

    async def first_run(streams, storage):
        assert storage.held() == set()
        # Out of order, as parallel fetches finish: 1 waits in memory until 0 comes.
        await storage.put(1, piece(1))
        assert storage.held() == {1} and await storage.get(1) == piece(1)
        await storage.put(0, piece(0))
        # Beyond the read-ahead's reach of the prefix: streamed through, not kept.
        await storage.put(2 + READ_AHEAD + 1, piece(2 + READ_AHEAD + 1))
        await until_held(storage, {0, 1})

    async def second_run(streams, storage):
        assert storage.held() == {0, 1}
        assert await storage.get(0) == piece(0) and await storage.raw(1) == piece(1)
        for n in range(2, 20):
            await storage.put(n, piece(n))
        await storage.put(20, data[20 * PIECE :])
        await until_held(storage, set(range(21)))
        assert await storage.get(20) == data[20 * PIECE :]
        return storage.stream

    async def another_version(streams, storage):
        await storage.adopt(manifest_of(os.urandom(3 * PIECE)))
        await asyncio.wait([storage._opening])  # its open deletes the first version's stream, as run_node waits
        assert storage.held() == set()

    async def back_to_the_first(streams, storage):
        assert storage.held() == set()  # its stream went with the other version's coming

    async def wrong_bytes_in_the_prefix(streams, storage):
        await streams.appender.append(storage.stream, piece(0))
        await streams.appender.append(storage.stream, b"y" * PIECE)  # not piece 1
        await streams.appender.append(storage.stream, piece(2))

    async def third_run(streams, storage):
        assert storage.held() == {0, 1, 2}
        assert await storage.get(1) is None  # caught, and what follows in the stream is not trusted
        assert storage.held() == {0}
        await storage.put(1, piece(1))
        assert storage.held() == {0}

    asyncio.run(run_node(first_run))
    stream = asyncio.run(run_node(second_run))
    assert streams_of(pravega_settings) == [stream]
    asyncio.run(run_node(another_version))
    assert len(streams_of(pravega_settings)) == 1 and streams_of(pravega_settings) != [stream]
    asyncio.run(run_node(back_to_the_first))
    asyncio.run(run_node(wrong_bytes_in_the_prefix))
    asyncio.run(run_node(third_run))


@pytest.mark.pravega
def test_pravega_pieces_outlast_a_slow_pravega_and_are_kept_again_after_a_lost_one(private_pravega, monkeypatch):
    """Opening the stream may take longer than pravega.timeout (a loaded controller): it still opens, at
    the first try. Past pravega.metadata_timeout it fails, nothing is kept, and it is opened again later."""
    pravega = private_pravega
    monkeypatch.setattr(pravega_pieces, "REOPEN_AFTER", 0.5)
    settings = PravegaSettings(controller_uri=pravega.uri, scope="reopen", timeout=1.0, metadata_timeout=1.0)
    data = os.urandom(4 * PIECE)
    pieces = [data[n * PIECE : (n + 1) * PIECE] for n in range(4)]

    async def slow():
        streams = PieceStreams(dataclasses.replace(settings, scope="slow", metadata_timeout=30.0))
        streams.start()
        storage = streams.storage("v")
        pravega.signal(signal.SIGSTOP)
        try:
            await storage.adopt(manifest_of(data))
            await asyncio.sleep(3.0)  # three times pravega.timeout
        finally:
            pravega.signal(signal.SIGCONT)
        await asyncio.wait([storage._opening])
        opened = storage.stream
        streams.close()
        return opened

    async def scenario():
        streams = PieceStreams(settings)
        streams.start()
        storage = streams.storage("v")
        pravega.signal(signal.SIGSTOP)  # Pravega stops answering, connections open
        try:
            await storage.adopt(manifest_of(data))
            await asyncio.wait([storage._opening])
        finally:
            pravega.signal(signal.SIGCONT)
        failed = storage.held(), storage.stream
        await asyncio.sleep(0.6)
        for n in range(4):
            await storage.put(n, pieces[n])
        await until_held(storage, {0, 1, 2, 3}, seconds=20)
        back = [await storage.get(n) for n in range(4)]
        storage.close()
        streams.close()
        return failed, back

    assert asyncio.run(slow()) is not None
    (held_while_down, stream_while_down), back = asyncio.run(scenario())
    assert held_while_down == set() and stream_while_down is None
    assert back == pieces


class _FakeVideo(tornado.web.RequestHandler):
    """An upstream's /stream that records the Range and If-Match it is asked with."""

    def initialize(self, data: bytes, asked: list) -> None:
        self.data, self.asked = data, asked

    def get(self) -> None:
        self.asked.append((self.request.headers["Range"], self.request.headers.get("If-Match")))
        first, last = self.request.headers["Range"].removeprefix("bytes=").split("-")
        self.set_status(206)
        self.set_header("Content-Range", f"bytes {first}-{last}/{len(self.data)}")
        self.finish(self.data[int(first) : int(last) + 1])


class _FakePeer(tornado.web.RequestHandler):
    """A peer holding every piece that misbehaves as told: ``cut``, ``stall`` or ``corrupt``."""

    def initialize(self, data: bytes, behaviour: str, asked: list) -> None:
        self.data, self.behaviour, self.asked = data, behaviour, asked

    async def get(self, n: str) -> None:
        self.asked.append(self.request.headers["Range"])
        piece = self.data[int(n) * PIECE : (int(n) + 1) * PIECE]
        first, last = self.request.headers["Range"].removeprefix("bytes=").split("-")
        body = piece[int(first) : int(last) + 1]
        self.set_status(206)
        self.set_header("Content-Range", f"bytes {first}-{last}/{len(piece)}")
        self.set_header("Content-Length", len(body))
        if self.behaviour == "corrupt":
            self.finish(bytes(b ^ 1 for b in body))
            return
        self.write(body[: len(body) // 2])
        await self.flush()
        if self.behaviour == "stall":
            await asyncio.sleep(30)
        self.request.connection.close()


class _Have(tornado.web.RequestHandler):
    def initialize(self, manifest: Manifest) -> None:
        self.manifest = manifest

    def get(self) -> None:
        self.finish({"root": self.manifest.root, "pieceSize": PIECE, "pieces": [[0, self.manifest.piece_count]]})


class _Peers(tornado.web.RequestHandler):
    def initialize(self, peers: list) -> None:
        self.peers = peers

    def get(self) -> None:
        self.finish(ujson.dumps(self.peers))


async def _fetch_with_peer(behaviour: str, n: int):
    """Fetches piece ``n`` with one misbehaving peer and an honest upstream."""
    data = os.urandom(4 * PIECE)
    manifest = manifest_of(data)
    upstream_asked, peer_asked = [], []
    peer_server, peer_port = await listen(tornado.web.Application([
        (r"/videos/v/have", _Have, {"manifest": manifest}),
        (r"/videos/v/pieces/(\d+)", _FakePeer, {"data": data, "behaviour": behaviour, "asked": peer_asked}),
    ]))
    peer_url = f"http://127.0.0.1:{peer_port}"
    upstream_server, upstream_port = await listen(tornado.web.Application([
        (r"/videos/v/stream", _FakeVideo, {"data": data, "asked": upstream_asked}),
        (r"/videos/v/peers", _Peers, {"peers": [{"url": peer_url, "address": "127.0.0.1"}]}),
    ]))
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    upstream = Upstream(upstream_url)
    swarm = Swarm(upstream, manifest, own_url=None, bad=set())
    fetcher = PieceFetcher(manifest, swarm, upstream, peer_stall=0.3)
    began = time.monotonic()
    try:
        piece, kind = await fetcher.fetch(n)
    finally:
        peer_server.stop()
        upstream_server.stop()
    return {"ok": piece == data[n * PIECE : (n + 1) * PIECE], "kind": kind, "seconds": time.monotonic() - began,
            "upstream": upstream_asked, "peer": peer_asked, "bad": swarm.bad, "peer_url": peer_url}


def test_a_piece_cut_short_is_resumed_elsewhere_at_the_exact_byte():
    result = asyncio.run(_fetch_with_peer("cut", 2))
    assert result["ok"] and result["kind"] == "origin"
    assert result["peer"] == [f"bytes=0-{PIECE - 1}"]
    # Half the piece came from the peer; the upstream is asked for the rest only, and for this version only.
    assert result["upstream"] == [(f"bytes={2 * PIECE + PIECE // 2}-{3 * PIECE - 1}", '"v1"')]
    assert not result["bad"]


def test_a_stalled_peer_is_given_up_after_its_stall_timeout():
    result = asyncio.run(_fetch_with_peer("stall", 1))
    assert result["ok"]
    assert result["upstream"] == [(f"bytes={PIECE + PIECE // 2}-{2 * PIECE - 1}", '"v1"')]
    assert 0.3 <= result["seconds"] < 2


def test_a_peer_sending_wrong_bytes_is_marked_bad_and_the_piece_refetched():
    result = asyncio.run(_fetch_with_peer("corrupt", 0))
    assert result["ok"] and result["kind"] == "origin"
    assert result["bad"] == {result["peer_url"]}
    assert result["upstream"] == [(f"bytes=0-{PIECE - 1}", '"v1"')]


# --- the origin's endpoints, in process ---------------------------------------


@pytest.mark.gen_test
async def test_origin_serves_manifests_and_lists_peers_closest_first(http_client, base_url, app, library):
    r = await http_client.fetch(f"{base_url}/videos/alpha/manifest")
    manifest = Manifest.from_json(ujson.loads(r.body))
    alpha = read_bytes(library / "alpha.mp4")
    assert manifest == manifest_of(alpha, app.config.peer.piece_size, "alpha", app.store.get("alpha").etag)

    presence = app.presence
    for socket_id, ip, peer in [
        ("far", "10.0.0.5", "http://10.0.0.5:1"), ("plain", "127.0.0.1", None),
        ("lan", "127.0.0.9", "http://127.0.0.9:2"), ("same", "127.0.0.1", "http://127.0.0.1:3"),
    ]:
        presence.connect(socket_id, ip)
        presence.watch(socket_id, "alpha", peer)
    r = await http_client.fetch(f"{base_url}/videos/alpha/peers")
    assert ujson.loads(r.body) == [
        {"url": "http://127.0.0.1:3", "address": "127.0.0.1", "socketId": "same"},
        {"url": "http://127.0.0.9:2", "address": "127.0.0.9", "socketId": "lan"},
        {"url": "http://10.0.0.5:1", "address": "10.0.0.5", "socketId": "far"},
    ]
    for path in ("have", "pieces/0", "sources"):
        r = await http_client.fetch(f"{base_url}/videos/alpha/{path}", raise_error=False)
        assert r.code == 404 and "origin" in ujson.loads(r.body)["error"]


def test_pieces_the_storage_does_not_keep_are_fetched_once_for_a_slow_reader():
    """A node whose Pravega does not answer keeps nothing; its read-ahead must not fetch the same pieces again."""
    data = os.urandom(12 * PIECE)
    manifest = manifest_of(data)

    async def scenario():
        asked = []
        upstream_server, upstream_port = await listen(tornado.web.Application([
            (r"/videos/v/stream", _FakeVideo, {"data": data, "asked": asked}),
            (r"/videos/v/peers", _Peers, {"peers": []}),
        ]))
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        upstream = Upstream(upstream_url)
        # Nothing listens there: opening the stream fails, and the storage keeps no piece.
        streams = PieceStreams(PravegaSettings(controller_uri=f"tcp://127.0.0.1:{bind_unused_port()[1]}",
                                               timeout=0.5, metadata_timeout=0.5))
        storage = streams.storage("v")
        await storage.adopt(manifest)
        await asyncio.wait([storage._opening])
        fetcher = PieceFetcher(manifest, Swarm(upstream, manifest, own_url=None, bad=set()), upstream)
        session = VideoSession(manifest, storage, fetcher, dict.fromkeys(("local", "peers", "origin"), 0))
        try:
            first = [bytes(c) async for c in session.read(0, PIECE, PIECE)]
            await asyncio.sleep(0.5)  # the reader pauses; the read-ahead fills its window
            ahead = [bytes(c) async for c in session.read(PIECE, 3 * PIECE, PIECE)]
        finally:
            session.close()
            streams.close()
            upstream_server.stop()
        return b"".join(first + ahead), asked, storage.held()

    body, asked, held = asyncio.run(scenario())
    assert body == data[: 3 * PIECE] and held == set()
    ranges = [r for r, _ in asked]
    assert len(ranges) == len(set(ranges)), ranges  # no piece asked twice
    assert len(ranges) <= 1 + READ_AHEAD + 2, ranges


# --- real nodes on loopback --------------------------------------------------


def test_peer_killed_mid_transfer_costs_one_short_stall(servers):
    origin = servers("origin")
    data = write_random_video(os.path.join(origin.library, "big.mp4"), 4 * MiB)
    b = servers("b", upstream=origin.url)
    c = servers("c", upstream=origin.url)

    async def scenario():
        await start_all(origin, b, c, video="big")
        seeder = Viewer(b.url)
        await seeder.watch("big")
        assert (await seeder.play("big")).body == data
        await until(lambda: _listed(origin, "big", b.url), what="b listed at the origin")

        viewer = Viewer(c.url)
        await viewer.watch("big")
        playing = asyncio.ensure_future(viewer.play("big", range_size=256 * 1024, rate=4 * MiB))
        await until(lambda: viewer.received >= 1.5 * MiB, what="c halfway")
        b.kill()
        playback = await playing
        sources = await get_json(f"{c.url}/videos/big/sources")
        viewer.close()
        seeder.close()
        return playback, sources

    playback, sources = asyncio.run(scenario())
    assert playback.sha256 == hashlib.sha256(data).hexdigest()
    assert playback.longest_request < 1.0, playback.durations
    assert sources["peers"] >= MiB and sources["origin"] >= MiB and _served(sources) == len(data), sources
    assert sources["reached"] == {b.url: "http"}, sources


def test_a_peer_no_http_request_reaches_is_read_over_a_data_channel_signalled_through_the_origin(servers):
    origin = servers("origin")
    data = write_random_video(os.path.join(origin.library, "big.mp4"), 4 * MiB)
    # b announces a URL nothing answers at (a port nobody listens on), as a node behind a NAT would.
    b = servers("b", upstream=origin.url, public_url=f"http://127.0.0.1:{free_port()}")
    c = servers("c", upstream=origin.url)

    async def scenario():
        await start_all(origin, b, c, video="big")
        seeder = Viewer(b.url)
        await seeder.watch("big")
        assert (await seeder.play("big")).body == data
        await until(lambda: _listed(origin, "big", b.public_url), what="b listed at the origin")

        viewer = Viewer(c.url)
        await viewer.watch("big")
        # The first piece opens c's session, whose swarm finds b's URL dead and dials it through signalling.
        first = await viewer.play("big", range_size=PIECE, end=PIECE)
        await until(lambda: _reached(c, "big", b.public_url, "direct-channel"), CHANNEL_UP, what="c reaching b over a channel")
        rest = await viewer.play("big", start=PIECE)
        sources = await get_json(f"{c.url}/videos/big/sources")
        viewer.close()
        seeder.close()
        return first.body + rest.body, sources

    body, sources = asyncio.run(scenario())
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert sources["reached"] == {b.public_url: "direct-channel"}, sources
    # From the origin: the first piece and what was read ahead while the channel opened (9 pieces of 64).
    assert sources["peers"] >= 3 * len(data) // 4 and _served(sources) == len(data), sources


# Seconds for a node to find a peer's URL dead and open a data channel to it
# through the origin's presence sockets: about one on loopback here.
CHANNEL_UP = 20.0


async def _reached(server: Server, video_id: str, url: str, via: str) -> bool:
    return (await get_json(f"{server.url}/videos/{video_id}/sources"))["reached"].get(url) == via


def _served(sources: dict) -> int:
    return sources["local"] + sources["peers"] + sources["origin"]


async def _play_beside_a_corrupted_copy(origin: Server, b: Server, c: Server, bad_piece: int) -> tuple[Playback, dict]:
    """b's player plays the video, then piece ``bad_piece`` of b's copy is corrupted on disk and c's player plays it."""
    await start_all(origin, b, c, video="big")
    seeder = Viewer(b.url)
    await seeder.watch("big")
    await seeder.play("big")
    await until(lambda: _listed(origin, "big", b.public_url), what="b listed at the origin")
    with open(b.pieces_file("big"), "r+b") as f:
        f.seek(bad_piece * PIECE + 1000)
        f.write(b"corrupted on disk")
    viewer = Viewer(c.url)
    await viewer.watch("big")
    playback = await viewer.play("big")
    sources = await get_json(f"{c.url}/videos/big/sources")
    viewer.close()
    seeder.close()
    return playback, sources


def test_a_node_with_a_corrupted_copy_is_caught_and_avoided(servers):
    origin = servers("origin")
    data = write_random_video(os.path.join(origin.library, "big.mp4"), 4 * MiB)
    b = servers("b", upstream=origin.url)
    c = servers("c", upstream=origin.url)
    bad_piece = 3

    async def scenario():
        # Others reach B through a proxy, which counts what C asks of it.
        b_proxy = await CountingProxy(b.port).start()
        b.public_url = b_proxy.url
        playback, sources = await _play_beside_a_corrupted_copy(origin, b, c, bad_piece)
        await b_proxy.close()
        return playback, sources, b_proxy.sent

    playback, sources, sent_by_b = asyncio.run(scenario())
    assert playback.sha256 == hashlib.sha256(data).hexdigest()
    assert "fails verification" in c.log_tail(200)
    # B sent the pieces up to the bad one and at most a read-ahead window beside it, then nothing more.
    most = (bad_piece + 1 + READ_AHEAD + MAX_IN_FLIGHT) * PIECE
    assert sent_by_b < most < len(data) / 3, sent_by_b
    assert sources["origin"] >= len(data) - most, sources


def test_a_corrupted_piece_over_a_data_channel_is_caught_and_its_sender_avoided(servers):
    """As over HTTP: a piece that fails verification is never served, and its sender is asked for nothing more."""
    origin = servers("origin")
    data = write_random_video(os.path.join(origin.library, "big.mp4"), 4 * MiB)
    b = servers("b", upstream=origin.url, public_url=f"http://127.0.0.1:{free_port()}")  # reached only by a channel
    c = servers("c", upstream=origin.url)
    # Past the first pieces, which c may read from the origin while its channel to b opens.
    bad_piece = 40
    playback, sources = asyncio.run(_play_beside_a_corrupted_copy(origin, b, c, bad_piece))
    assert playback.sha256 == hashlib.sha256(data).hexdigest()
    assert sources["reached"] == {b.public_url: "direct-channel"}, sources
    assert f"peer {b.public_url} sent a piece of big that fails verification" in c.log_tail(300)
    # The channel carried pieces before the bad one, and nothing after it and its read-ahead window.
    most = (bad_piece + 1 + READ_AHEAD + MAX_IN_FLIGHT) * PIECE
    assert 0 < sources["peers"] < most and sources["origin"] >= len(data) - most, sources


def test_chain_origin_a_b_with_a_real_video(servers):
    origin = servers("origin")
    make_video(os.path.join(origin.library, "clip.mp4"), seconds=3.0, container="mp4")
    write_srt(os.path.join(origin.library, "clip.en.srt"), [(0.0, 1.0, "Hello"), (1.0, 2.5, "Chained")])
    with open(os.path.join(origin.library, "clip.json"), "w") as f:
        ujson.dump({"name": "Chained Clip"}, f)
    data = read_bytes(os.path.join(origin.library, "clip.mp4"))
    a = servers("a", upstream=origin.url, piece_size=1024)
    b = servers("b", upstream=a.url)

    async def scenario():
        origin.start()
        await origin.ready(video="clip")
        await start_all(a, b, video="clip")
        viewer = Viewer(b.url)
        await viewer.watch("clip")
        playback = await viewer.play("clip", range_size=32 * 1024)
        await until(lambda: _listed(a, "clip", b.url), what="b listed at a")
        await until(lambda: _listed(origin, "clip", a.url), what="a listed at the origin")
        facts = {
            "catalogs": [await get_json(f"{s.url}/videos/clip") for s in (origin, b)],
            "manifests": [await get_json(f"{s.url}/videos/clip/manifest") for s in (origin, a, b)],
            "captions": [await _body(f"{s.url}/videos/clip/captions/en.vtt") for s in (origin, b)],
            "heads": [await _head(f"{s.url}/videos/clip/stream") for s in (origin, b)],
            "b sources": await get_json(f"{b.url}/videos/clip/sources"),
        }
        viewer.close()
        return playback, facts

    playback, facts = asyncio.run(scenario())
    assert playback.body == data
    assert playback.first_byte[0] < 1.0
    at_origin, at_b = facts["catalogs"]
    assert at_b["name"] == "Chained Clip" and at_b["size"] == at_origin["size"] == len(data)
    assert at_b["durationSeconds"] == at_origin["durationSeconds"] and at_b["captions"] == at_origin["captions"]
    assert facts["manifests"][0] == facts["manifests"][1] == facts["manifests"][2]
    assert facts["manifests"][0]["pieceSize"] == 64 * 1024  # the origin's, not a's own setting
    assert facts["captions"][0] == facts["captions"][1] and b"Chained" in facts["captions"][1]
    assert facts["heads"][0] == facts["heads"][1]  # the origin's ETag and Last-Modified
    assert facts["b sources"]["origin"] == len(data)  # for b, "origin" is its upstream, a


def test_a_node_serves_what_it_holds_to_peers_and_without_its_upstream(servers):
    origin = servers("origin")
    data = write_random_video(os.path.join(origin.library, "big.mp4"), MiB + 1000)
    node = servers("node", upstream=origin.url)

    async def scenario():
        await start_all(origin, node, video="big")
        viewer = Viewer(node.url)
        await viewer.play("big", range_size=100_000, start=200_000, end=300_000)
        partly = await get_json(f"{node.url}/videos/big/have")
        await viewer.play("big")
        whole = await get_json(f"{node.url}/videos/big/have")
        root = whole["root"]
        piece = AsyncHTTPClient().fetch
        ranged = await piece(f"{node.url}/videos/big/pieces/16?root={root}", headers={"Range": "bytes=10-"})
        wrong_root = await piece(f"{node.url}/videos/big/pieces/1?root={'0' * 64}", raise_error=False)
        missing = await piece(f"{node.url}/videos/big/pieces/17?root={root}", raise_error=False)
        origin.kill()
        again = await viewer.play("big")
        sources = await get_json(f"{node.url}/videos/big/sources")
        return partly, whole, ranged, wrong_root, missing, again, sources

    partly, whole, ranged, wrong_root, missing, again, sources = asyncio.run(scenario())
    # Pieces 3 and 4 hold bytes 200000-299999; pieces up to 8 ahead of the reader were fetched too.
    assert partly["pieces"][0][0] == 3 and partly["pieces"][0][1] > 4 and partly["pieceSize"] == PIECE
    assert whole["pieces"] == [[0, 17]]
    assert ranged.code == 206 and ranged.body == data[16 * PIECE + 10 :]
    assert ranged.headers["Content-Range"] == f"bytes 10-{len(data) - 16 * PIECE - 1}/{len(data) - 16 * PIECE}"
    assert wrong_root.code == 404 and missing.code == 404
    assert again.body == data
    # Fetched pieces count toward the origin until served to their end once: piece 3 was, by the first
    # read, so the second play served it as local; the third play was local throughout.
    assert sources == {"local": PIECE + len(data), "peers": 0, "origin": 100_000 + len(data) - PIECE, "reached": {}}


@pytest.mark.pravega
def test_a_pravega_node_keeps_the_verified_prefix_and_streams_the_rest_through(servers, pravega_settings):
    origin = servers("origin")
    data = write_random_video(os.path.join(origin.library, "big.mp4"), 2 * MiB + 1000)
    pravega = {"controller_uri": pravega_settings.controller_uri, "scope": pravega_settings.scope}
    node = servers("node", upstream=origin.url, pravega=pravega)
    middle = 20 * PIECE

    async def scenario():
        await start_all(origin, node, video="big")
        viewer = Viewer(node.url)
        seek = await viewer.play("big", start=middle, end=middle + 2 * PIECE)
        after_seek = await get_json(f"{node.url}/videos/big/have")
        whole = await viewer.play("big", range_size=256 * 1024)
        # A wait for appends to land, not a bound on their speed: on a busy machine 33 appends behind a play
        # outlasted the default 10 s.
        await until(lambda: _holds(node, "big", [[0, 33]]), 30, what="the whole video in the node's Pravega")
        node.stop()
        node.start()
        await node.ready(video="big")
        again = await viewer.play("big")
        sources = await get_json(f"{node.url}/videos/big/sources")
        health = await get_json(f"{node.url}/healthz")
        return seek, after_seek, whole, again, sources, health

    seek, after_seek, whole, again, sources, health = asyncio.run(scenario())
    assert seek.body == data[middle : middle + 2 * PIECE]
    # Far past the prefix (empty then): served, and not kept.
    assert after_seek["pieces"] == [], after_seek
    assert whole.body == data and again.body == data
    # After the restart every byte came from the node's own Pravega.
    assert sources == {"local": len(data), "peers": 0, "origin": 0, "reached": {}}, sources
    assert health["store"]["piecesHeld"] == {"big": 33}
    # One stream holds them, and nothing went to the node's disk.
    assert len(streams_of(pravega_settings)) == 1
    assert not os.path.exists(os.path.join(node.library, ".pieces"))


async def _holds(server: Server, video_id: str, pieces: list[list[int]]) -> bool:
    return (await get_json(f"{server.url}/videos/{video_id}/have"))["pieces"] == pieces


def test_four_nodes_take_load_off_the_origin(servers):
    origin = servers("origin")
    data = write_random_video(os.path.join(origin.library, "big.mp4"), 4 * MiB)

    async def scenario():
        origin.start()
        await origin.ready(video="big")
        proxy = await CountingProxy(origin.port).start()
        nodes = [servers(f"n{i}", upstream=proxy.url) for i in range(4)]
        await start_all(*nodes, video="big")
        counted_from = proxy.sent

        async def watch(i: int, node: Server):
            await asyncio.sleep(1.0 * i)
            viewer = Viewer(node.url)
            await viewer.watch("big")
            playback = await viewer.play("big", range_size=256 * 1024, rate=2 * MiB)
            return viewer, playback

        results = await asyncio.gather(*(watch(i, n) for i, n in enumerate(nodes)))
        for viewer, _ in results:
            viewer.close()
        await proxy.close()
        return [p for _, p in results], proxy.sent - counted_from

    playbacks, origin_sent = asyncio.run(scenario())
    digest = hashlib.sha256(data).hexdigest()
    assert all(p.sha256 == digest for p in playbacks)
    assert all(p.first_byte[0] < 1.0 for p in playbacks), [p.first_byte[0] for p in playbacks]
    print(f"origin sent {origin_sent / len(data):.2f}x the video for 4 viewers")
    assert origin_sent <= 1.5 * len(data), origin_sent / len(data)


async def _listed(server: Server, video_id: str, url: str) -> bool:
    return url in await peer_urls(server, video_id)


async def _body(url: str) -> bytes:
    return (await AsyncHTTPClient().fetch(url)).body


async def _head(url: str) -> tuple[str, str]:
    r = await AsyncHTTPClient().fetch(url, method="HEAD")
    return r.headers["ETag"], r.headers["Last-Modified"]

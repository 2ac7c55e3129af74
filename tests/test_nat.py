"""Peers behind NAT (issue 15), on a simulated internet of network namespaces (harness/netns.py) with a real coturn.

Four homes on one WAN: ``a`` (two hosts) and ``b`` behind endpoint-independent
NAT, ``c`` and ``d`` behind symmetric NAT; coturn on the WAN is the STUN and
TURN server. Each peer is an aiortc process in its host's namespace
(harness/webrtc_peer.py), signalled by the test over its stdin and stdout;
the serving one holds a video of random bytes in a piece file and answers
the piece protocol of peers/channel.py, the fetching one reads every piece
over the data channel and checks it against the manifest.

Then the same with the real thing: ``server.py`` as the origin on the WAN
beside coturn (handing out TURN credentials), a ``server.py`` node in a home
host announcing its home's public address, and each node's player (a
:class:`harness.nodes.Viewer`: presence websocket and Range reads) run
inside the home (:meth:`harness.netns.Namespace.inside`). The nodes dial each
other through the origin's presence sockets (peers/links.py) when HTTP to a
peer's URL gets no answer. The internet, coturn and the origin are made once
for the module and torn down after it, also when it fails; the nodes are
each test's own.

Needs root, iproute2, nftables and coturn (scripts/setup --test); without
them the tests are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from harness.loopback import until
from harness.media import write_random_video
from harness.nodes import Playback, Server, Viewer, start_all
from harness.netns import (ENDPOINT_INDEPENDENT, PREFIX_BASE, SYMMETRIC, HomePlan, Internet, namespace_names,
                           remove_leftovers, unavailable)
from harness.turn import NamespaceTurnServer, turnserver
from peers.fetcher import PEER_STALL, UPSTREAM_STALL
from peers.session import MAX_IN_FLIGHT
from peers import links
from harness.webrtc_peer import PeerProcess, connect, manifest_json
from tests.needs import skip_or_fail

pytestmark = pytest.mark.netns

VIDEO_SIZE = 4 * 1024 * 1024 + 12345
PIECE_SIZE = 1024 * 1024
# Bounds for a machine 2-3x slower than this one, where a peer process starts (aiortc imported) and connects
# in about 1.5 s and the video crosses in about 3 s: they only catch a connection or transfer that never ends.
CONNECT_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 60.0
CLOSE_TIMEOUT = 15.0
# A TCP handshake across two veths takes well under a millisecond; what is not through in 3 s is not coming.
TCP_TIMEOUT = 3.0
# A node's announcement reaching the origin's peer list: one presence round trip, well under a second.
LISTED = 15.0
# What a router forwards in from the server itself besides relayed data: STUN answers, a few hundred bytes.
STUN_ONLY = 16 * 1024


@pytest.fixture(scope="module")
def internet():
    reason = unavailable() or (None if turnserver() else "coturn is not installed (scripts/setup --test installs it)")
    if reason:
        skip_or_fail("the NAT tests", reason)
    with Internet([HomePlan("a", ENDPOINT_INDEPENDENT, hosts=2), HomePlan("b", ENDPOINT_INDEPENDENT),
                   HomePlan("c", SYMMETRIC), HomePlan("d", SYMMETRIC)]) as net:
        yield net


@pytest.fixture(scope="module")
def coturn(internet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("coturn")
    with NamespaceTurnServer(internet.wan, folder) as server:
        yield server
    print(f"--- coturn ---\n{server.log_tail()}")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[str, str, bytes]:
    """The served file, its manifest's path and its bytes."""
    folder = tmp_path_factory.mktemp("video")
    path = str(folder / "alpha.mp4")
    data = write_random_video(path, VIDEO_SIZE)
    manifest = str(folder / "manifest.json")
    with open(manifest, "w") as f:
        json.dump(manifest_json(data, PIECE_SIZE), f)
    return path, manifest, data


def _transfer(fetching, serving, ice: tuple[list, list], video, tmp_path) -> tuple[dict, dict, dict]:
    """Connects a fetching peer in namespace ``fetching`` to a serving one in ``serving``; returns both open lines and the fetch."""
    path, manifest, _ = video
    server = PeerProcess(serving, ["--ice", json.dumps(ice[1]), "--serve", path, "--piece-size", str(PIECE_SIZE)],
                         str(tmp_path / "serving.log"))
    fetcher = PeerProcess(fetching, ["--ice", json.dumps(ice[0]), "--fetch", manifest], str(tmp_path / "fetching.log"))
    try:
        fetcher_open, server_open = connect(fetcher, server, CONNECT_TIMEOUT)
        fetched = fetcher.expect("fetched", TRANSFER_TIMEOUT)
    finally:
        for peer in (fetcher, server):
            peer.close(CLOSE_TIMEOUT)
    return fetcher_open["open"], server_open["open"], fetched


_LISTEN = """
import socket
server = socket.create_server(("0.0.0.0", 8000))
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""

_CONNECT = """
import concurrent.futures, json, socket, sys
def attempt(target):
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=float(sys.argv[1])).close()
        return "connected"
    except OSError as e:
        return repr(e)
with concurrent.futures.ThreadPoolExecutor() as pool:
    print(json.dumps(dict(zip(sys.argv[2:], pool.map(attempt, sys.argv[2:])))))
"""


def _listen(namespace) -> subprocess.Popen:
    process = namespace.python(["-c", _LISTEN], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "listening"
    return process


def _tcp_from(namespace, *targets: str, port: int = 8000) -> dict[str, str]:
    """Whether a TCP connection from ``namespace`` to each of ``targets`` (addresses, at ``port``) opens, by address."""
    result = namespace.run([sys.executable, "-c", _CONNECT, str(TCP_TIMEOUT), *(f"{t}:{port}" for t in targets)],
                           timeout=TCP_TIMEOUT + 30)
    return {target.rpartition(":")[0]: outcome for target, outcome in json.loads(result.stdout).items()}


def test_a_home_reaches_the_wan_but_no_host_of_another_home(internet):
    a, b = internet.homes["a"], internet.homes["b"]
    for namespace in (internet.wan, b.hosts[0]):
        _listen(namespace)
    reached = _tcp_from(a.hosts[0], internet.wan.address, b.hosts[0].address, b.public_address)
    assert reached[internet.wan.address] == "connected"
    # Neither the host's private address (no route on the WAN) nor its router's public one (nothing forwarded in).
    assert reached[b.hosts[0].address] != "connected", reached
    assert reached[b.public_address] != "connected", reached
    assert _tcp_from(b.hosts[0], internet.wan.address)[internet.wan.address] == "connected"


def test_endpoint_independent_nat_connects_server_reflexive_and_carries_the_pieces(internet, coturn, video, tmp_path):
    a, b = internet.homes["a"], internet.homes["b"]
    stun = [{"urls": coturn.stun_url()}]
    before = a.forwarded_in()
    fetcher, server, fetched = _transfer(a.hosts[0], b.hosts[0], (stun, stun), video, tmp_path)
    # Each sends straight to the other's router, at the public port STUN showed (srflx), or at one learnt
    # from the other's first check (prflx): either way home to home, no relay.
    assert fetcher["remote"]["address"] == b.public_address, fetcher
    assert server["remote"]["address"] == a.public_address, server
    for end in (fetcher["local"], fetcher["remote"], server["local"], server["remote"]):
        assert end["type"] != "relay", (fetcher, server)
    assert fetcher["remote"]["type"] in ("srflx", "prflx") and server["remote"]["type"] in ("srflx", "prflx")
    assert fetched["sha256"] == hashlib.sha256(video[2]).hexdigest()
    after = a.forwarded_in()
    assert after["peers"] - before["peers"] >= VIDEO_SIZE
    assert after["server"] - before["server"] < STUN_ONLY


def test_symmetric_nat_connects_only_through_turn_and_coturn_counts_the_relayed_bytes(internet, coturn, video,
                                                                                       tmp_path):
    c, d = internet.homes["c"], internet.homes["d"]
    before = c.forwarded_in()
    ice = (coturn.ice_servers("node-c"), coturn.ice_servers("node-d"))
    fetcher, server, fetched = _transfer(c.hosts[0], d.hosts[0], ice, video, tmp_path)
    for pair in (fetcher, server):
        assert "relay" in (pair["local"]["type"], pair["remote"]["type"]), (fetcher, server)
        assert coturn.address in (pair["local"]["address"], pair["remote"]["address"]), (fetcher, server)
    assert fetched["sha256"] == hashlib.sha256(video[2]).hexdigest()
    # Every byte came to home c from coturn's address, none straight from home d.
    after = c.forwarded_in()
    assert after["peers"] == before["peers"]
    assert after["server"] - before["server"] >= VIDEO_SIZE
    # And coturn says so: the sessions of the two nodes' credentials relayed at least the video (SCTP and
    # DTLS add their headers), counted once, in whichever allocation carried it.
    sessions = coturn.closed_sessions("node-c", 1, CLOSE_TIMEOUT) + coturn.closed_sessions("node-d", 1, CLOSE_TIMEOUT)
    assert sum(s.relayed for s in sessions) >= VIDEO_SIZE, sessions


def test_two_hosts_behind_one_router_connect_over_host_candidates(internet, coturn, video, tmp_path):
    a = internet.homes["a"]
    stun = [{"urls": coturn.stun_url()}]
    before = a.forwarded_in()
    fetcher, server, fetched = _transfer(a.hosts[0], a.hosts[1], (stun, stun), video, tmp_path)
    assert fetcher["local"]["type"] == fetcher["remote"]["type"] == "host", fetcher
    assert (fetcher["local"]["address"], fetcher["remote"]["address"]) == (a.hosts[0].address, a.hosts[1].address)
    assert server["local"]["type"] == server["remote"]["type"] == "host", server
    assert fetched["sha256"] == hashlib.sha256(video[2]).hexdigest()
    # The LAN carried it: the router forwarded nothing in from another home.
    assert a.forwarded_in()["peers"] == before["peers"]


def test_what_a_killed_run_left_is_removed_by_the_next(internet):
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has now: the run "killed" before its teardown
    left = Internet([HomePlan("x", SYMMETRIC)], prefix=f"{PREFIX_BASE}{gone.pid}")
    left.build()
    sleeper = left.homes["x"].hosts[0].popen(["sleep", "600"])
    removed = remove_leftovers()
    assert sorted(removed) == sorted(ns.name for ns in left.namespaces())
    assert sleeper.wait(10) != 0
    # This run's own namespaces (its process is alive) are left alone.
    assert {ns.name for ns in internet.namespaces()} <= set(namespace_names())



# --- real servers: the origin on the WAN with coturn, a node and its player in each home ---------------------

NODE_PIECE = 64 * 1024


@pytest.fixture(scope="module")
def origin(internet, coturn, tmp_path_factory):
    """``server.py`` on the WAN beside coturn, handing out its STUN and TURN with credentials (peer.turn_secret).

    It runs two worker processes, as an origin on a machine of several cores
    does by default: a node's announcement, its signals and its reads may each
    land on either, so the peer lists and the signalling cross the workers.
    """
    server = Server(str(tmp_path_factory.mktemp("servers")), "origin", piece_size=NODE_PIECE, namespace=internet.wan,
                    workers=2,
                    peer={"ice_servers": [coturn.stun_url(), f"turn:{coturn.address}:3478?transport=udp"],
                          "turn_secret": coturn.secret})
    server.start()
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.stop()
        print(f"--- origin ---\n{server.log_tail()}")


@pytest.fixture
def nodes(origin, tmp_path):
    """Makes nodes below the origin (or ``upstream``), each on a host of a home; stops them after, and shows their logs.

    A node announces its home's public address, as one behind a home router
    would (the origin lists a peer only at the address it comes from), at its
    own port, which the router forwards to nobody.
    """
    made: list[Server] = []

    def make(name: str, home, host: int = 0, upstream: Server = origin) -> Server:
        node = Server(str(tmp_path), name, upstream=upstream.url, piece_size=NODE_PIECE, namespace=home.hosts[host])
        node.public_url = f"http://{home.public_address}:{node.port}"
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()
        print(f"--- {node.name} ({node.url}) ---\n{node.log_tail()}")


async def _egress(origin: Server) -> float:
    """Video bytes the origin has sent (to nodes: they read it through its /stream), from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    async def metrics() -> str:
        return (await AsyncHTTPClient().fetch(origin.url + "/metrics")).body.decode()

    for family in text_string_to_metric_families(await origin.namespace.inside(metrics())):
        for s in family.samples:
            if s.name == "binge_streamed_bytes_total":
                return s.value
    return 0.0


async def _close(viewer: Viewer) -> None:
    viewer.close()


VIDEO_OF_NODES = 4 * 1024 * 1024


async def _seed(origin: Server, node: Server, video_id: str) -> tuple[Viewer, float]:
    """Node ``node``'s player watches and plays the whole video (so the node holds it and is listed as its peer)."""
    seeder = Viewer(node.url)
    await node.namespace.inside(seeder.watch(video_id))
    await node.namespace.inside(seeder.play(video_id))

    async def listed() -> bool:
        return any(p["url"] == node.public_url for p in await origin.get_json(f"/videos/{video_id}/peers"))

    await until(listed, LISTED, what=f"{node.name} listed at the origin")
    return seeder


async def _watch_from(node: Server, video_id: str, **play) -> tuple[Playback, dict, Viewer]:
    viewer = Viewer(node.url)
    await node.namespace.inside(viewer.watch(video_id))
    playback = await node.namespace.inside(viewer.play(video_id, **play))
    return playback, await node.get_json(f"/videos/{video_id}/sources"), viewer


async def _two_viewers(origin: Server, first: Server, second: Server, video_id: str, **play
                       ) -> tuple[Playback, dict, float]:
    """``first``'s player plays the video, then ``second``'s (``play`` as for Viewer.play); the second's playback
    and sources, and the origin's egress."""
    await start_all(first, second, video=video_id)
    before = await _egress(origin)
    seeder = await _seed(origin, first, video_id)
    playback, sources, viewer = await _watch_from(second, video_id, **play)
    egress = await _egress(origin) - before
    for v, node in ((viewer, second), (seeder, first)):
        await node.namespace.inside(_close(v))
    return playback, sources, egress


async def _paced_playback(origin: Server, first: Server, second: Server, video_id: str, rate: int
                          ) -> tuple[Viewer, Viewer, asyncio.Future]:
    """``first`` seeded, then ``second``'s player playing in 256 KiB ranges paced at ``rate`` bytes a second:
    the seeder, the viewer, and its playback under way."""
    await start_all(first, second, video=video_id)
    seeder = await _seed(origin, first, video_id)
    viewer = Viewer(second.url)
    await second.namespace.inside(viewer.watch(video_id))
    playing = asyncio.ensure_future(second.namespace.inside(viewer.play(video_id, range_size=256 * 1024, rate=rate)))
    return seeder, viewer, playing


def test_a_node_streams_from_a_node_behind_another_endpoint_independent_nat_over_a_direct_channel(
        internet, origin, coturn, nodes):
    a, b = internet.homes["a"], internet.homes["b"]
    data = write_random_video(os.path.join(origin.library, "direct.mp4"), VIDEO_OF_NODES)
    first, second = nodes("a", a), nodes("b", b)
    earlier = set(coturn.sessions())
    forwarded = b.forwarded_in()
    # Paced at 8 Mbit/s (4 s): time enough for a channel whose relayed pair won the race to move to the direct one.
    playback, sources, egress = asyncio.run(_two_viewers(origin, first, second, "direct",
                                                         range_size=256 * 1024, rate=1024 * 1024))
    # The point of the setup: b cannot reach the URL a announces.
    assert _tcp_from(b.hosts[0], a.public_address, port=first.port)[a.public_address] != "connected"
    assert playback.sha256 == hashlib.sha256(data).hexdigest()
    assert sources["reached"] == {first.public_url: "direct-channel"}, sources
    assert sources["peers"] >= len(data) * 3 // 4, sources
    # The whole video once for a, and for b what it read before the channel opened.
    assert egress <= 1.3 * len(data), (egress, sources)
    # Home to home through both NATs: b's router let in straight from a's home what b had from a, but for what
    # coturn relayed before a channel moved (none, unless the relayed pair won the race: see the test below).
    direct = b.forwarded_in()["peers"] - forwarded["peers"]
    for node in (second, first):
        node.stop()
    relayed = _relayed_after(coturn, earlier)
    assert direct >= sources["peers"] - relayed, (direct, relayed, sources)


def test_a_channel_that_opened_relayed_moves_to_a_direct_pair_once_one_opens(internet, origin, coturn, nodes):
    """As on a slow machine, where the relayed pair's check succeeds before the direct one's first resend."""
    a, b = internet.homes["a"], internet.homes["b"]
    data = write_random_video(os.path.join(origin.library, "moved.mp4"), VIDEO_OF_NODES)
    first, second = nodes("a", a), nodes("b", b)

    async def reached() -> str | None:
        return (await second.get_json("/videos/moved/sources"))["reached"].get(first.public_url)

    async def scenario():
        # Paced at 2 Mbit/s (16 s), so the playback outlasts the move however late in the resend schedule it comes.
        seeder, viewer, playing = await _paced_playback(origin, first, second, "moved", rate=256 * 1024)
        with b.dropping_udp_from(a.public_address):
            await until(_is(reached, "relayed-channel"), TRANSFER_TIMEOUT, what="b reading a over a relayed channel")
        forwarded = b.forwarded_in()
        await until(_is(reached, "direct-channel"), links.CONNECT_TIMEOUT + 5.0, what="b's channel to a moving to a direct pair")
        moved = await second.get_json("/videos/moved/sources")
        playback = await playing
        sources = await second.get_json("/videos/moved/sources")
        for v, node in ((viewer, second), (seeder, first)):
            await node.namespace.inside(_close(v))
        return playback, moved, sources, b.forwarded_in()["peers"] - forwarded["peers"]

    playback, moved, sources, direct = asyncio.run(scenario())
    assert playback.sha256 == hashlib.sha256(data).hexdigest()
    assert "moves to a direct pair" in second.log_tail(400)
    assert sources["reached"] == {first.public_url: "direct-channel"}, sources
    # What b read from a once its channel had moved came straight from a's home, but for the pieces that were
    # under way on the relay at the move (at most MAX_IN_FLIGHT of them).
    assert sources["peers"] > moved["peers"] + MAX_IN_FLIGHT * NODE_PIECE, (moved, sources)
    assert direct >= sources["peers"] - moved["peers"] - MAX_IN_FLIGHT * NODE_PIECE, (direct, moved, sources)


def _is(value, wanted: str):
    async def condition() -> bool:
        return await value() == wanted
    return condition


def test_a_node_streams_from_a_node_behind_symmetric_nats_over_a_relayed_channel(internet, origin, coturn, nodes):
    c, d = internet.homes["c"], internet.homes["d"]
    data = write_random_video(os.path.join(origin.library, "relayed.mp4"), VIDEO_OF_NODES)
    first, second = nodes("c", c), nodes("d", d)
    earlier = set(coturn.sessions())
    forwarded = d.forwarded_in()
    playback, sources, egress = asyncio.run(_two_viewers(origin, first, second, "relayed"))
    assert playback.sha256 == hashlib.sha256(data).hexdigest()
    assert sources["reached"] == {first.public_url: "relayed-channel"}, sources
    assert sources["peers"] >= len(data) * 3 // 4, sources
    assert egress <= 1.3 * len(data), (egress, sources)
    # Nothing came to d straight from c's home: all through coturn, whose own counters, once the nodes have
    # closed their allocations, show it relayed at least what d had from its peer.
    assert d.forwarded_in()["peers"] == forwarded["peers"]
    for node in (second, first):
        node.stop()
    relayed = _relayed_after(coturn, earlier)
    assert relayed >= sources["peers"], (relayed, sources)


def _relayed_after(coturn, earlier: set[str]) -> int:
    """Bytes relayed in the TURN sessions not in ``earlier``, once every one of them has closed."""
    def sessions():
        return [s for i, s in coturn.sessions().items() if i not in earlier]

    deadline = time.monotonic() + CLOSE_TIMEOUT
    while not (sessions() and all(s.closed for s in sessions())):
        assert time.monotonic() < deadline, f"coturn: sessions not closed within {CLOSE_TIMEOUT:g} s: {sessions()}"
        time.sleep(0.1)
    return sum(s.relayed for s in sessions())


def test_two_nodes_behind_one_router_find_each_other_on_the_lan_and_use_http_there(internet, origin, nodes):
    a = internet.homes["a"]
    data = write_random_video(os.path.join(origin.library, "lan.mp4"), VIDEO_OF_NODES)
    first, second = nodes("a1", a, host=0), nodes("a2", a, host=1)
    forwarded = a.forwarded_in()
    playback, sources, egress = asyncio.run(_two_viewers(origin, first, second, "lan"))
    assert playback.sha256 == hashlib.sha256(data).hexdigest()
    # The announced URL (the router's public address) does not lead back in; the channel's host candidates
    # showed a2 where a1 is on the LAN, and HTTP there carried the pieces.
    assert sources["reached"] == {first.public_url: "http"}, sources
    assert f"reading it over HTTP at {first.url}" in second.log_tail(400)
    assert sources["peers"] >= len(data) * 3 // 4, sources
    assert egress <= 1.3 * len(data), (egress, sources)
    # The LAN carried it: nothing came in through the router but the origin's bytes.
    assert a.forwarded_in()["peers"] - forwarded["peers"] <= egress + STUN_ONLY


def test_when_the_serving_node_is_killed_the_other_finishes_from_the_origin(internet, origin, nodes):
    a, b = internet.homes["a"], internet.homes["b"]
    data = write_random_video(os.path.join(origin.library, "killed.mp4"), VIDEO_OF_NODES)
    first, second = nodes("a", a), nodes("b", b)

    async def scenario():
        # Paced as a player at four times an 8 Mbit/s stream, so the kill comes mid-video.
        seeder, viewer, playing = await _paced_playback(origin, first, second, "killed", rate=4 * 1024 * 1024)

        async def from_peer() -> bool:
            return (await second.get_json("/videos/killed/sources"))["peers"] >= len(data) // 4

        await until(from_peer, TRANSFER_TIMEOUT, what="b reading from a over the channel")
        first.kill()
        playback = await playing
        sources = await second.get_json("/videos/killed/sources")
        await second.namespace.inside(_close(viewer))
        return playback, sources

    playback, sources = asyncio.run(scenario())
    assert playback.sha256 == hashlib.sha256(data).hexdigest()
    assert sources["peers"] >= len(data) // 4 and sources["origin"] > 0, sources
    assert sources["peers"] + sources["origin"] == len(data), sources
    # No request waited longer than a stalled channel's bound and the upstream's answer after it.
    assert playback.longest_request < PEER_STALL + UPSTREAM_STALL + 5.0, playback.durations


def test_with_no_turn_between_symmetric_nats_the_node_plays_from_the_origin_within_the_stall_bounds(
        internet, coturn, nodes, tmp_path):
    """Neither HTTP nor a channel reaches the peer (an upstream handing out STUN only): the upstream serves."""
    c, d = internet.homes["c"], internet.homes["d"]
    upstream = Server(str(tmp_path), "stun-only", piece_size=NODE_PIECE, namespace=internet.wan,
                      peer={"ice_servers": [coturn.stun_url()]})
    data = write_random_video(os.path.join(upstream.library, "alone.mp4"), VIDEO_OF_NODES)
    first, second = nodes("c", c, upstream=upstream), nodes("d", d, upstream=upstream)

    async def scenario():
        await start_all(upstream, first, second, video="alone")
        seeder = await _seed(upstream, first, "alone")
        # Paced so that the playback outlasts d's attempt to dial c (peers.links.CONNECT_TIMEOUT).
        playback, sources, viewer = await _watch_from(second, "alone", range_size=256 * 1024, rate=256 * 1024)
        for v, node in ((viewer, second), (seeder, first)):
            await node.namespace.inside(_close(v))
        return playback, sources

    try:
        playback, sources = asyncio.run(scenario())
    finally:
        upstream.stop()
        print(f"--- stun-only upstream ---\n{upstream.log_tail()}")
    assert playback.sha256 == hashlib.sha256(data).hexdigest()
    assert sources["peers"] == 0 and sources["origin"] == len(data), sources
    # d did try c, over a channel that could not open, and went on from the upstream meanwhile.
    assert f"no data channel within {links.CONNECT_TIMEOUT:g} s" in second.log_tail(400)
    assert playback.longest_request < PEER_STALL + UPSTREAM_STALL + 5.0, playback.durations

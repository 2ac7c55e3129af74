"""Peers behind NAT (issue 15), on a simulated internet of network namespaces (harness/netns.py) with a real coturn.

Four homes on one WAN: ``a`` (two hosts) and ``b`` behind endpoint-independent
NAT, ``c`` and ``d`` behind symmetric NAT; coturn on the WAN is the STUN and
TURN server. Each peer is an aiortc process in its host's namespace
(harness/webrtc_peer.py), signalled by the test over its stdin and stdout;
the serving one holds a video of random bytes in a piece file and answers
the piece protocol of peers/channel.py, the fetching one reads every piece
over the data channel and checks it against the manifest. The internet and
coturn are made once for the module and torn down after it, also when it
fails.

Needs root, iproute2, nftables and coturn (scripts/setup --test); without
them the tests are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from harness.media import write_random_video
from harness.netns import (ENDPOINT_INDEPENDENT, PREFIX_BASE, SYMMETRIC, HomePlan, Internet, namespace_names,
                           remove_leftovers, unavailable)
from harness.turn import NamespaceTurnServer, turnserver
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
    try:
        socket.create_connection((target, 8000), timeout=float(sys.argv[1])).close()
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


def _tcp_from(namespace, *targets: str) -> dict[str, str]:
    result = namespace.run([sys.executable, "-c", _CONNECT, str(TCP_TIMEOUT), *targets], timeout=TCP_TIMEOUT + 30)
    return json.loads(result.stdout)


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

"""The hop guard (peers.hops): a loop of upstreams is answered at once, with an error naming it.

First the header logic on its own, then a node's requests to an in-process
fake upstream (every kind carries the chain; a 508 is passed on, not
retried), then real ``server.py`` nodes on loopback whose upstreams loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import pytest
import tornado.web
import ujson

import api_paths
from harness.http import fetch_json
from harness.in_process import listen
from harness.loopback import free_port, until
from harness.media import write_random_video
from harness.nodes import CountingProxy, Server, start_all
from harness.server_process import ROOT
from media.store import InvalidInput
from peers import hops
from peers.catalog import UpstreamCatalog
from peers.fetcher import PieceFetcher
from peers.hops import LoopDetected
from peers.swarm import Swarm
from peers.upstream import Upstream
from tests.pieces import PIECE, manifest_of


# --- the header on its own -------------------------------------------------------


def test_the_chain_is_parsed_strictly():
    assert hops.parse(None) == () and hops.parse("") == () and hops.parse(" ") == ()
    assert hops.parse("a1, b.2,c_3 ") == ("a1", "b.2", "c_3")
    for bad in ("a b", "a,,b", "a,", "x" * 65, "a;b", "a\rb", "é"):
        with pytest.raises(InvalidInput) as e:
            hops.parse(bad)
        assert e.value.status == 400 and "Binge-Via" in str(e.value)


def test_a_chain_that_comes_back_or_runs_long_is_refused():
    hops.check(("a", "b"), "c")
    hops.check(("a", "b"), None)  # an origin has no id: only the length counts
    hops.check(tuple(f"n{i}" for i in range(hops.MAX_HOPS)), "me")
    with pytest.raises(LoopDetected) as ring:
        hops.check(("x", "a", "b"), "a", "http://10.0.0.1:8081")
    assert ring.value.status == 508
    assert "upstream loop: a -> b -> a" in str(ring.value) and "http://10.0.0.1:8081" in str(ring.value)
    with pytest.raises(LoopDetected) as itself:
        hops.check(("a",), "a")
    assert "node a is its own upstream" in str(itself.value)
    with pytest.raises(LoopDetected) as long:
        hops.check(tuple(f"n{i}" for i in range(hops.MAX_HOPS + 1)), None)
    assert "too many hops" in str(long.value)


def test_the_chain_follows_the_request_into_its_tasks_and_no_further():
    async def later() -> dict:
        await asyncio.sleep(0)
        return hops.outgoing("me")

    async def request(value: str | None) -> dict:
        hops.admit(value, "me")
        return await asyncio.ensure_future(later())  # a task started for the request: a piece fetch, say

    async def scenario():
        served = await asyncio.gather(request("a, b"), request(None))
        return served, hops.outgoing("me")

    served, background = asyncio.run(scenario())
    assert served == [{"Binge-Via": "a, b, me"}, {"Binge-Via": "me"}]
    assert background == {"Binge-Via": "me"}


# --- a node's requests to its upstream, in process ------------------------------------


class _Recorder(tornado.web.RequestHandler):
    """Records each request's Binge-Via; answers what ``answers`` holds for its path, or a 508."""

    def initialize(self, seen: list, answers: dict) -> None:
        self.seen, self.answers = seen, answers

    def _answer(self) -> None:
        self.seen.append((self.request.method, self.request.path, self.request.headers.get("Binge-Via")))
        answer = self.answers.get(self.request.path)
        if answer is None:
            self.set_status(508)
            self.finish({"error": "upstream loop: p -> q -> p: a request from node p came back to it", "status": 508})
            return
        status, headers, body = answer
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        self.finish(body)

    get = head = _answer


def test_every_request_to_the_upstream_carries_the_chain_and_a_508_is_passed_on():
    data = os.urandom(2 * PIECE)
    manifest = manifest_of(data)
    validators = {"ETag": '"v1"', "Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT"}
    answers = {
        "/videos": (200, {}, ujson.dumps([{"id": "v"}])),
        "/videos/v/stream": (200, validators, b""),
        "/videos/v/manifest": (200, {}, ujson.dumps(manifest.to_json())),
        "/videos/v/peers": (200, {}, "[]"),
        "/videos/v/captions/en.vtt": (200, {}, "WEBVTT\n"),
    }

    async def scenario():
        seen: list = []
        server, port = await listen(tornado.web.Application([(r".*", _Recorder, {"seen": seen, "answers": answers})]))
        url = f"http://127.0.0.1:{port}"
        upstream = Upstream(url, "me")
        try:
            async def served_for_a_node_below():
                hops.admit("below", "me")
                await upstream.catalog()
                await upstream.validators("v")
                await upstream.manifest("v")
                await upstream.peers("v")
                await upstream.body(api_paths.CAPTION(video_id="v", lang="en"))
                with pytest.raises(LoopDetected) as from_body:
                    await upstream.body(api_paths.POSTER(video_id="v"))
                return from_body.value

            from_body = await asyncio.ensure_future(served_for_a_node_below())
            # The stream answers 508 from here on; the fetcher gives up at once, not after GIVE_UP.
            del answers["/videos/v/stream"]
            fetcher = PieceFetcher(manifest, Swarm(upstream, manifest, None, set()), upstream)
            began = time.monotonic()
            with pytest.raises(LoopDetected) as from_stream:
                await fetcher.fetch(1)
            return seen, from_body, from_stream.value, time.monotonic() - began
        finally:
            server.stop()

    seen, from_body, from_stream, seconds = asyncio.run(scenario())
    assert seen[:6] == [
        ("GET", "/videos", "below, me"), ("HEAD", "/videos/v/stream", "below, me"),
        ("GET", "/videos/v/manifest", "below, me"), ("GET", "/videos/v/peers", "below, me"),
        ("GET", "/videos/v/captions/en.vtt", "below, me"), ("GET", "/videos/v/poster", "below, me"),
    ]
    # Read for no request below (the fetcher ran in the test's own task): this node's id alone.
    assert ("GET", "/videos/v/stream", "me") in seen[6:] and all(via == "me" for _, _, via in seen[6:])
    assert from_body.status == 508 and "upstream loop: p -> q -> p" in str(from_body)
    assert "upstream loop: p -> q -> p" in str(from_stream) and seconds < 2, seconds


def test_a_request_from_below_is_not_held_by_a_catalog_read_made_for_another_chain():
    """Two nodes upstream of each other find the loop at once, not after both time out.

    Each node's own catalog read (no chain from below) may be in flight when
    the other's request arrives. Joined, it would carry the wrong chain: each
    node would wait on the other until the 5 s timeouts, and again, in step.
    Here the upstream holds the node's own read open; the request from below
    must reach it with its own chain meanwhile.
    """
    async def scenario():
        release = asyncio.Event()
        seen: list = []

        class HoldsTheNodesOwnRead(tornado.web.RequestHandler):
            async def get(self) -> None:
                via = self.request.headers.get("Binge-Via")
                seen.append(via)
                if via == "me":
                    await release.wait()
                self.finish("[]")

        server, port = await listen(tornado.web.Application([(r"/videos", HoldsTheNodesOwnRead)]))
        catalog = UpstreamCatalog(Upstream(f"http://127.0.0.1:{port}", "me"), 60, lambda: None)
        try:
            own_read = catalog.refresh_soon()
            await until(lambda: seen == ["me"], what="the node's own read to reach the upstream")

            async def asked_from_below():
                hops.admit("below", "me")
                return await catalog.servable()

            videos = await asyncio.wait_for(asyncio.ensure_future(asked_from_below()), 10)
            assert not own_read.done()
            release.set()
            await own_read
            return videos, seen
        finally:
            release.set()
            server.stop()

    videos, seen = asyncio.run(scenario())
    assert videos == {} and seen == ["me", "below, me"]


# --- real nodes on loopback ------------------------------------------------------


async def _get(url: str):
    """(status, JSON body, seconds taken) of a GET, errors included."""
    began = time.monotonic()
    code, body, _ = await fetch_json(url, timeout=30)
    return code, body, time.monotonic() - began


async def _health_until(server: Server, says: str, timeout: float = 20.0) -> dict:
    """Polls ``/healthz`` until its store's error contains ``says``; returns the whole answer."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            code, health, _ = await _get(f"{server.url}/healthz")
            if says in health["store"].get("error", ""):
                return health
        except (OSError, ValueError, TypeError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{server.name}'s /healthz never said {says!r}:\n{server.log_tail()}")
        await asyncio.sleep(0.1)


def test_two_nodes_upstream_of_each_other_answer_with_the_loop_not_a_hang(servers):
    a = servers("a")
    b = servers("b", upstream=a.url)
    a.upstream = b.url
    # A node pointed into the loop learns of it too.
    below = servers("below", upstream=a.url)

    async def scenario():
        for server in (a, b, below):
            server.start()
        healths = [await _health_until(s, "upstream loop") for s in (a, b, below)]
        answers = {
            "videos a": await _get(f"{a.url}/videos"),
            "videos b": await _get(f"{b.url}/videos"),
            "videos below": await _get(f"{below.url}/videos"),
            "stream below": await _get(f"{below.url}/videos/any/stream"),
            "health a": await _get(f"{a.url}/healthz"),
        }
        return healths, answers

    healths, answers = asyncio.run(scenario())
    a_id, b_id = healths[0]["nodeId"], healths[1]["nodeId"]
    rings = (f"{a_id} -> {b_id} -> {a_id}", f"{b_id} -> {a_id} -> {b_id}")
    for health in healths:
        assert health["status"] == "degraded" and any(ring in health["store"]["error"] for ring in rings), health
    for name in ("videos a", "videos b", "videos below", "stream below"):
        status, body, seconds = answers[name]
        assert status == 508 and body["status"] == 508, (name, body)
        assert any(ring in body["error"] for ring in rings), (name, body)
        assert seconds < 2.0, (name, seconds)  # the JSON timeout is 5 s, a fetch gives up after 20
    assert answers["health a"][0] == 503
    # Found once per catalog read, not in a hot loop: a few hundred requests at most over the test.
    for server in (a, b):
        assert len(re.findall(r'"status": ?508', server.log_tail(100000))) < 400


def test_a_node_that_reaches_itself_through_a_proxy_says_so(servers):
    node = servers("node")

    async def scenario():
        proxy = await CountingProxy(node.port).start()  # a port of its own: the config cannot tell
        node.upstream = proxy.url
        node.start()
        try:
            health = await _health_until(node, "is its own upstream")
            return health, await _get(f"{node.url}/videos")
        finally:
            await proxy.close()

    health, (status, body, seconds) = asyncio.run(scenario())
    assert f"node {health['nodeId']} ({node.public_url}) is its own upstream" in health["store"]["error"]
    assert status == 508 and "is its own upstream" in body["error"] and seconds < 2.0


def test_a_node_whose_upstream_is_its_own_address_does_not_start(tmp_path):
    (tmp_path / "library").mkdir()
    port = free_port()
    (tmp_path / "c.yaml").write_text(f"server:\n  port: {port}\npeer:\n  upstream: http://localhost:{port}/\n")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "server.py"), "--config", str(tmp_path / "c.yaml")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr == (f"config error: peer.upstream: 'http://localhost:{port}/' is this server itself, "
                             "a loop; set it to the origin's URL or another node's\n")


def test_a_healthy_chain_passes_the_guard(servers):
    """origin <- a <- b: b's requests reach the origin through a, and b learns a's catalog."""
    origin = servers("origin")
    write_random_video(os.path.join(origin.library, "v.mp4"), 3 * PIECE)
    a = servers("a", upstream=origin.url)
    b = servers("b", upstream=a.url)

    async def scenario():
        origin.start()
        await origin.ready(video="v")
        await start_all(a, b, video="v")
        return [await _get(f"{s.url}/videos/v/manifest") for s in (origin, b)], await _get(f"{b.url}/healthz")

    manifests, health = asyncio.run(scenario())
    assert manifests[0][0] == manifests[1][0] == 200 and manifests[0][1] == manifests[1][1]
    assert health[0] == 200 and "error" not in health[1]["store"]

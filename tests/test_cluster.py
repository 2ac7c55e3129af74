"""Binge+ on Pravega at production shape: the durable cluster of scripts/pravega cluster, its nodes failing.

One cluster serves the whole module (the ``pravega_cluster`` fixture starts
it once per run, in a fresh folder). The tests run in this file's order, the
destructive ones last; each revives what it killed and waits until the
cluster serves again, so the next finds it whole. Every server is a real
``server.py`` (harness/server_process.py), every video real bytes, and each
test works in a scope of its own.

The bounds: the cluster fails over a lost segment store in about 11 s (a
6 s ZooKeeper session, a 2 s rebalance, the container's recovery), and
Binge+ adds at most one ``pravega.timeout`` and a worker's start. Bounds on
what needs no failover are loose (10 s for a second's poll) so they hold on
a machine 2-3x slower; the figures printed are what bench/RESULTS.md records.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest
import ujson
from tornado.httpclient import AsyncHTTPClient

from harness.clients import Download
from harness.http import get_json, metric
from harness.loopback import until
from harness.media import MiB, write_random_video
from harness.nodes import Server, Viewer
from harness.presence import Client, watching
from harness.server_process import ROOT, ServerProcess
from media.pravega_ingest import replay_catalog
from media.pravega_store import ingest_into_pravega
from media.store import NewVideo, Unavailable
from pravega_workers.blocking import stream_manager
from settings import settings_from_dict
from tests.conftest import read_bytes

pytestmark = pytest.mark.cluster

# Seconds within which a change in Pravega (a new catalog record, a presence change) shows on every server:
# the followers poll every 0.5 s (catalog) and 0.25 s (presence); the rest is slack for a slow machine.
SPREAD_BOUND = 10.0
# pravega.timeout of the servers here: how long one try of a read may wait on a lost segment store.
READ_TIMEOUT = 2.0


def new_scope() -> str:
    return f"cluster-{uuid.uuid4().hex[:10]}"


def pravega_server(folder, name: str, uri: str, scope: str, **pravega) -> ServerProcess:
    """``server.py`` on the Pravega store of ``scope``."""
    return ServerProcess(folder, {
        "server": {"shutdown_grace": 1},
        "storage": {"backend": "pravega", "cache_dir": str(folder / f"{name}-cache"), "chunk_size": 256 * 1024},
        "pravega": {"controller_uri": uri, "scope": scope, "timeout": READ_TIMEOUT, "instance_timeout": 10,
                    **pravega},
    }, name)


def settings_for(uri: str, scope: str):
    return settings_from_dict({"storage": {"backend": "pravega"}, "pravega": {"controller_uri": uri, "scope": scope}})


def random_video(folder, video_id: str, size: int, seed: int) -> tuple[NewVideo, bytes]:
    path = str(folder / f"{video_id}.mp4")
    data = write_random_video(path, size, seed)
    return NewVideo(id=video_id, source_path=path, name=video_id, mime_type="video/mp4", duration_seconds=60.0,
                    captions={}, poster=None), data


async def fetch(url: str, **headers: str):
    return await AsyncHTTPClient().fetch(url, headers=headers, raise_error=False, request_timeout=60)


async def healthy(server: ServerProcess) -> bool:
    response = await fetch(f"{server.url}/healthz")
    return response.code == 200 and ujson.loads(response.body)["status"] == "ok"


# ------------------------------------------------------------------ two servers on one cluster


def test_two_servers_share_the_catalog_and_presence(pravega_cluster, tmp_path, media_dir):
    """A video ingested with one server's config (binge-ingest) is served by both; a viewer on one
    is in the other's presence. Both within SPREAD_BOUND; the latencies are printed."""
    scope = new_scope()
    a = pravega_server(tmp_path, "a", pravega_cluster.uri, scope)
    b = pravega_server(tmp_path, "b", pravega_cluster.uri, scope)
    source = str(media_dir / "clip.mp4")

    async def scenario():
        with a, b:
            await asyncio.gather(a.ready(30), b.ready(30))
            ingest = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "media.ingest", source, "--id", "shared", "--name", "Shared",
                "--captions", str(media_dir / "clip.en.srt"), "--config", a.config_path,
                cwd=ROOT, stderr=subprocess.PIPE)
            _, err = await ingest.communicate()
            assert ingest.returncode == 0, err.decode()
            ingested = time.monotonic()
            await until(lambda: listed(b, "shared"), SPREAD_BOUND, what="b listing the video", step=0.02)
            catalog_latency = time.monotonic() - ingested
            body = (await fetch(f"{b.url}/videos/shared/stream")).body
            captions = (await fetch(f"{b.url}/videos/shared/captions/en.vtt")).body

            # A watch names a video of the catalog of the server it is sent to.
            await until(lambda: listed(a, "shared"), SPREAD_BOUND, what="a listing the video")
            on_a, on_b = await Client().connect(a), await Client().connect(b)
            await until(lambda: knows(b, on_a.socket_id), SPREAD_BOUND, what="b knowing a's socket")
            sent = time.monotonic()
            on_a.send({"type": "watch", "video": "shared"})
            await on_b.presence_until(watching(on_a.socket_id, "shared"), SPREAD_BOUND)
            presence_latency = time.monotonic() - sent
            return catalog_latency, body, captions, presence_latency

    catalog_latency, body, captions, presence_latency = asyncio.run(scenario())
    print(f"ingest done -> listed by the other server: {catalog_latency:.2f} s; "
          f"watch on one -> in the other's presence: {presence_latency:.2f} s")
    assert body == read_bytes(source)
    assert captions.startswith(b"WEBVTT") and b"Hello &amp; welcome" in captions


async def listed(server: ServerProcess, video_id: str) -> bool:
    return any(v["id"] == video_id for v in await get_json(f"{server.url}/videos"))


async def knows(server: ServerProcess, socket_id: str) -> bool:
    return socket_id in (await get_json(f"{server.url}/presence"))["sockets"]


# ------------------------------------------------------------------ the controller restarted


def test_streaming_goes_on_while_the_controller_restarts(pravega_cluster, tmp_path):
    """The controller SIGKILLed and started again under two servers: a viewer reading a video it
    had open goes on, every range right and none slow; afterwards a new video reaches both
    catalogs and a new viewer both presences, so their followers reconnected."""
    scope = new_scope()
    settings = settings_for(pravega_cluster.uri, scope)
    item, data = random_video(tmp_path, "open", 4 * MiB, seed=3)
    ingest_into_pravega(settings, item, lambda done: None)
    a = pravega_server(tmp_path, "a", pravega_cluster.uri, scope)
    b = pravega_server(tmp_path, "b", pravega_cluster.uri, scope)
    range_size = 256 * 1024

    async def scenario():
        with a, b:
            await asyncio.gather(a.ready(30, video="open"), b.ready(30, video="open"))
            before = await Client().connect(a)
            before.send({"type": "watch", "video": "open"})
            # Open first: opening a stream asks the controller where its segment is, so a first
            # read while the controller is down fails by design (the request gets its 503). The
            # video is read once and its manifest made (the origin's own read of it) before the
            # kill; started together, the kill once won the race and the first read got a 503.
            assert (await fetch(f"{a.url}/videos/open/manifest")).code == 200
            assert (await fetch(f"{a.url}/videos/open/stream", Range="bytes=0-0")).code == 206
            restart = threading.Thread(target=lambda: (pravega_cluster.kill("controller"),
                                                       pravega_cluster.revive("controller")))
            reads, slowest, offset = 0, 0.0, 0
            restart.start()
            try:
                while restart.is_alive() or reads < 5:
                    started = time.monotonic()
                    end = min(offset + range_size, len(data))
                    response = await fetch(f"{a.url}/videos/open/stream", Range=f"bytes={offset}-{end - 1}")
                    assert response.code == 206, (response.code, response.body[:200])
                    assert response.body == data[offset:end], f"wrong bytes at {offset}"
                    slowest = max(slowest, time.monotonic() - started)
                    reads += 1
                    offset = end % len(data)
                    await asyncio.sleep(0.1)
            finally:
                await asyncio.to_thread(restart.join)  # the controller back, whatever happened here

            item2, data2 = random_video(tmp_path, "after", 300_000, seed=4)
            await asyncio.to_thread(ingest_into_pravega, settings, item2, lambda done: None)
            for server in (a, b):
                await until(lambda: listed(server, "after"), SPREAD_BOUND, what=f"{server.name} listing it")
            assert (await fetch(f"{b.url}/videos/after/stream")).body == data2
            observer, late = await Client().connect(a), await Client().connect(b)
            late.send({"type": "watch", "video": "after"})
            await observer.presence_until(watching(late.socket_id, "after"), SPREAD_BOUND)
            on_b = await Client().connect(b)
            await on_b.presence_until(watching(before.socket_id, "open"), SPREAD_BOUND)
            return reads, slowest

    reads, slowest = asyncio.run(scenario())
    print(f"{reads} ranges read while the controller restarted; slowest {slowest:.2f} s")
    # The segment store serves an open stream without the controller: no range waits on its restart.
    assert slowest < READ_TIMEOUT, slowest


# ------------------------------------------------------------------ a bookie lost while ingesting


def test_an_ingest_survives_a_bookie_killed_under_it(pravega_cluster, tmp_path):
    """A bookie SIGKILLed halfway through an ingest: the ingest finishes (each entry needs two of
    its three bookies, and the fourth takes the lost one's place), or fails with one line and no
    record; run again, it completes, and the video streams byte for byte."""
    scope = new_scope()
    settings = settings_for(pravega_cluster.uri, scope)
    item, data = random_video(tmp_path, "big", 48 * MiB, seed=6)
    killed = []

    def progress(done: int) -> None:
        if done >= len(data) // 3 and not killed:
            pravega_cluster.kill("bookie2")
            killed.append(time.monotonic())

    started = time.monotonic()
    try:
        try:
            ingest_into_pravega(settings, item, progress)
            failure = None
        except Unavailable as e:
            failure = str(e)
        took = time.monotonic() - started
        catalog = replay_catalog(stream_manager(pravega_cluster.uri), scope)
    finally:
        pravega_cluster.revive("bookie2")
    print(f"ingest with bookie2 killed a third of the way: {'failed: ' + failure if failure else 'done'} "
          f"in {took:.1f} s")
    assert killed
    if failure:
        assert "\n" not in failure
        assert "big" not in catalog, "a failed ingest left a record"
    else:
        assert catalog["big"].record.size == len(data)
    ingest_into_pravega(settings, item, lambda done: None)

    async def scenario():
        with pravega_server(tmp_path, "s", pravega_cluster.uri, scope) as server:
            await server.ready(30, video="big")
            return (await fetch(f"{server.url}/videos/big/stream")).body

    assert hashlib.sha256(asyncio.run(scenario())).digest() == hashlib.sha256(data).digest()


# ------------------------------------------------------------------ a segment store lost while streaming

PACE = 1 * MiB  # bytes a second each client reads
STREAM_SIZE = 8 * MiB


class PacedClient:
    """Reads a video's whole body at PACE through a small receive buffer, noting the longest wait for bytes.

    A body cut short is taken up with a Range request from the byte where it stopped.
    """

    def __init__(self, port: int, video_id: str) -> None:
        self.port, self.video_id = port, video_id
        self.body = bytearray()
        self.longest_wait = 0.0
        self.requests = 0

    async def run(self, size: int) -> None:
        while len(self.body) < size:
            self.requests += 1
            headers = {"Range": f"bytes={len(self.body)}-"} if self.body else {}
            download = await Download.start(self.port, f"/videos/{self.video_id}/stream", **headers)
            assert download.status in (200, 206), download.status
            try:
                while len(self.body) < size:
                    waited = time.monotonic()
                    try:
                        piece = await download.read(min(64 * 1024, size - len(self.body)), timeout=120)
                    except asyncio.IncompleteReadError as e:
                        self.body += e.partial
                        break
                    self.longest_wait = max(self.longest_wait, time.monotonic() - waited)
                    self.body += piece
                    await asyncio.sleep(len(piece) / PACE)
            finally:
                download.close()


def log_times(log: str, pattern: str) -> list[float]:
    """Epoch times of the lines of a Pravega node's log (stamped HH:MM:SS.mmm, local time, today) matching ``pattern``."""
    today = datetime.date.today()
    return [datetime.datetime.combine(today, datetime.datetime.strptime(line[:12], "%H:%M:%S.%f").time()).timestamp()
            for line in log.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{3} ", line) and re.search(pattern, line)]


def resumed_reads(log: str) -> list[tuple[float, float]]:
    """The reads ``server.py`` logged as resumed: when (epoch), and how long after their first try."""
    found = re.findall(r"^(\S+ \S+) INFO binge\.pravega: resumed a read of .* after ([\d.]+) s", log, re.MULTILINE)
    return [(datetime.datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f").timestamp(), float(took)) for at, took in found]


def test_streams_ride_out_a_segment_store_killed_under_them(pravega_cluster, tmp_path):
    """The segment store holding a video's container SIGKILLed while four clients read videos:
    every client ends with the right bytes, its response completed (the server resumes its read
    once the container has moved) or cut short and taken up again with a Range from where it
    stopped. The longest stall is printed with where it went."""
    scope = new_scope()
    settings = settings_for(pravega_cluster.uri, scope)
    videos = {}
    for i in range(4):
        item, data = random_video(tmp_path, f"v{i}", STREAM_SIZE, seed=10 + i)
        videos[item.id] = (ingest_into_pravega(settings, item, lambda done: None).locator, data)
    victim = pravega_cluster.owner(scope, videos["v0"][0])
    survivor = next(s for s in pravega_cluster.SEGMENT_STORES if s != victim)
    hit = [video_id for video_id, (stream, _) in videos.items() if pravega_cluster.owner(scope, stream) == victim]

    async def scenario():
        with pravega_server(tmp_path, "s", pravega_cluster.uri, scope) as server:
            await server.ready(30, video="v3")
            clients = {video_id: PacedClient(server.port, video_id) for video_id in videos}
            reading = asyncio.gather(*(c.run(STREAM_SIZE) for c in clients.values()))
            await asyncio.sleep(2.0)
            killed_at = time.time()
            await asyncio.to_thread(pravega_cluster.kill, victim)
            await reading
            await until(lambda: healthy(server), 60, what="the server healthy again")
        with open(server.log_path) as f:
            return clients, killed_at, resumed_reads(f.read())

    try:
        clients, killed_at, resumed = asyncio.run(scenario())
        # Where the stall went, from the nodes' logs: the store's ZooKeeper session running out, the
        # controller's rebalance and the survivor recovering the containers, then Binge+'s retry.
        removed = min(t for t in log_times(pravega_cluster.log("controller"), "HOST_REMOVED") if t >= killed_at)
        recovered = max(t for t in log_times(pravega_cluster.log(survivor), r"Container \d+ has been registered")
                        if t >= removed)
    finally:
        pravega_cluster.revive(victim)
    for video_id, client in clients.items():
        assert client.body == videos[video_id][1], f"{video_id}: wrong bytes"
    assert resumed, "no read was resumed: the kill missed every stream"
    resumed_at, stall = max(resumed, key=lambda r: r[1])
    waited = max(clients[v].longest_wait for v in hit)
    print(f"longest stall of a read {stall:.1f} s (a client waited {waited:.1f} s for bytes; requests "
          f"{sorted(c.requests for c in clients.values())}): session timeout {removed - killed_at:.1f} s, "
          f"rebalance and container recovery {recovered - removed:.1f} s, Binge+ retry {resumed_at - recovered:.1f} s")
    # A read is resumed for pravega.failover_timeout (30 s) before the body is cut; each try waits at
    # most pravega.timeout.
    assert stall < 30 + READ_TIMEOUT, stall


# ------------------------------------------------------------------ the whole cluster restarted


def test_everything_survives_a_restart_of_the_whole_cluster(pravega_cluster, tmp_path, sample_videos):
    """The cluster stopped and started under a running server and a Pravega-backed peer node:
    every video, poster and caption track comes back byte for byte, the catalog is whole, the
    server is healthy again by itself, and the node still holds its verified prefix."""
    scope, node_scope = new_scope(), new_scope()
    settings = settings_for(pravega_cluster.uri, scope)
    for item in sample_videos:
        ingest_into_pravega(settings, item, lambda done: None)
    big, big_data = random_video(tmp_path, "big", 2 * MiB + 1000, seed=8)
    ingest_into_pravega(settings, big, lambda done: None)
    origin = pravega_server(tmp_path, "origin", pravega_cluster.uri, scope)
    node = Server(str(tmp_path), "node", upstream=origin.url,
                  pravega={"controller_uri": pravega_cluster.uri, "scope": node_scope})

    async def everything(server: ServerProcess) -> dict:
        videos = await get_json(f"{server.url}/videos")
        got = {"catalog": sorted((v["id"], v["size"], v["name"], v["stream"]) for v in videos)}
        for v in videos:
            base = f"{server.url}/videos/{v['id']}"
            got[v["id"]] = hashlib.sha256((await fetch(f"{base}/stream")).body).hexdigest()
            if v["poster"]:
                got[f"{v['id']} poster"] = (await fetch(f"{base}/poster")).body
            for track in (await get_json(f"{base}/captions")):
                got[f"{v['id']} {track['lang']}"] = (await fetch(f"{server.url}{track['url']}")).body
        return got

    async def scenario():
        with origin, node:
            await origin.ready(30, video="big")
            await node.ready(30, video="big")
            assert (await Viewer(node.url).play("big")).body == big_data
            pieces = [[0, len((await get_json(f"{origin.url}/videos/big/manifest"))["pieces"])]]
            # In Pravega, not merely verified: a piece still waiting to be appended is lost with the cluster.
            await until(lambda: kept_in_pravega(node, len(big_data)), 60, what="every piece in the node's Pravega")
            before = await everything(origin)
            pid = origin.pid
            await asyncio.to_thread(pravega_cluster.stop)
            await asyncio.to_thread(pravega_cluster.start)
            restarted = time.monotonic()
            await until(lambda: healthy(origin), 60, what="the origin healthy again", step=0.2)
            recovered = time.monotonic() - restarted
            after = await everything(origin)
            await until(lambda: healthy(node), 60, what="the node healthy again", step=0.2)
            local_before = (await get_json(f"{node.url}/videos/big/sources"))["local"]
            replay = await Viewer(node.url).play("big")
            sources = await get_json(f"{node.url}/videos/big/sources")
            assert origin.pid == pid and origin.process.poll() is None
            return before, after, recovered, pieces, await held(node), replay, sources["local"] - local_before

    before, after, recovered, pieces, held_after, replay, local = asyncio.run(scenario())
    print(f"the origin was healthy {recovered:.1f} s after the cluster served again")
    assert after == before
    assert {row[0] for row in after["catalog"]} == {"alpha", "beta", "big"}
    assert after["alpha"] == hashlib.sha256(read_bytes(sample_videos[0].source_path)).hexdigest()
    assert after["alpha poster"] == sample_videos[0].poster and after["beta poster"] == sample_videos[1].poster
    assert b"Hello &amp; welcome" in after["alpha en"] and b"Bonjour" in after["alpha fr"]
    assert held_after == pieces
    # Every byte of the replay came from the node's own (restarted) Pravega.
    assert replay.body == big_data and local == len(big_data)


async def held(node: Server) -> list:
    return (await get_json(f"{node.url}/videos/big/have"))["pieces"]


async def kept_in_pravega(node: Server, size: int) -> bool:
    return await metric(node.url, "binge_peer_held_bytes") == size

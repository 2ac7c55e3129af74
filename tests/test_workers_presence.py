"""One presence picture and one count per address for all the worker processes of a server.

First the apps of several workers in this process, each with its own
relay connection (presence/relay.py) and its own row of the shared counts
(ops/limits.py), on a relay served from this event loop: over the
filesystem store, and over Pravega, where each worker also follows the
scope's presence stream, so every sibling's record comes twice. Then
``server.py`` with real worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import statistics
import time
import types

import pytest
import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from harness.http import get_json
from harness.in_process import serving
from harness.loopback import until
from harness.media import write_unprobed_video
from harness.presence import Client, watching
from harness.server_process import ServerProcess
from ops.limits import SharedCounts, shared_counts
from ops.workers import WorkerContext
from presence.relay import Relay, relaying
from tests.test_presence_changes import apply
from tests.test_workers import REPLACED_WITHIN, WORKERS, every_worker, workers_server

# A change on one worker shows on another within the broadcast's coalescing
# (presence.coalesce_interval, 0.02 s) plus the relay's few milliseconds;
# this leaves room for a machine three times slower and still tells the
# relay from Pravega's path, which polls every 0.25 s.
RELAY_PROPAGATION = 0.2


def worker(run_dir, index: int, count: int) -> WorkerContext:
    """What ops.workers.current() gives worker ``index``."""
    return WorkerContext(index, count, str(run_dir), 0)


class Place:
    """A served app as harness.presence.Client connects to it."""

    def __init__(self, app, port: int) -> None:
        self.app, self.url = app, f"http://127.0.0.1:{port}"

    async def presence(self) -> dict:
        return await get_json(f"{self.url}/presence", timeout=5)


@contextlib.asynccontextmanager
async def workers(config, tmp_path, count: int = 2):
    """``count`` workers' apps on one relay, as the supervisor's services make them: yields their Places."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    supervisor = types.SimpleNamespace(run_dir=str(run_dir), count=count)
    async with shared_counts(supervisor), relaying(supervisor) as relay, contextlib.AsyncExitStack() as stack:
        places = [Place(*await stack.enter_async_context(serving(config, worker(run_dir, i, count))))
                  for i in range(count)]
        await until(lambda: relay.connected() == count, 10, "every worker on the relay")
        yield places


@pytest.mark.parametrize("config", ["filesystem", pytest.param("pravega", marks=pytest.mark.pravega)], indirect=True)
def test_a_viewer_on_one_worker_is_in_the_others_picture_within_the_coalescing(config, tmp_path):
    async def check():
        async with workers(config, tmp_path) as (a, b):
            on_b = await Client().connect(b)
            follower = Client()
            follower.conn = None
            viewer = await Client().connect(a)
            await until(lambda: _has_socket(b, viewer.socket_id), 5)

            started = time.monotonic()
            viewer.send({"type": "watch", "video": "alpha"})
            await on_b.presence_until(watching(viewer.socket_id, "alpha"), 5)
            took = time.monotonic() - started
            assert took < RELAY_PROPAGATION, f"{took:.3f}s"
            on_a, listed = await a.presence(), await b.presence()
            assert on_a["videos"] == listed["videos"] and on_a["sockets"] == listed["sockets"]
            assert {w["instance"] for w in listed["videos"]["alpha"]} == {a.app.presence_link.instance}

            viewer.conn.close()
            await on_b.presence_until(lambda p: viewer.socket_id not in p["sockets"], RELAY_PROPAGATION + 1)

    asyncio.run(check())


async def _has_socket(place: Place, socket_id: str) -> bool:
    return socket_id in (await place.presence())["sockets"]


@pytest.mark.parametrize("config", ["filesystem"], indirect=True)
def test_changes_followers_and_versions_stay_consistent_on_every_worker(config, tmp_path):
    """Clients on both workers churn; a ``?changes=1`` follower on each rebuilds its worker's picture exactly."""

    async def check():
        async with workers(config, tmp_path) as (a, b):
            followers = {}
            for place in (a, b):
                follower = Client()
                follower.conn = await _connect(place, "?changes=1", follower)
                followers[place] = follower
            churners = [await Client().connect(place) for place in (a, b, a, b)]
            for round_ in range(20):
                for i, client in enumerate(churners):
                    client.send({"type": "watch", "video": "alpha" if (round_ + i) % 2 else "beta"}
                                if round_ % 3 else {"type": "leave"})
                await asyncio.sleep(0.005)
            for place, follower in followers.items():
                held, versions = None, []
                # Until the worker is quiet: its picture then is everyone's last state.
                want = None
                while True:
                    try:
                        message = await follower.next(0.5)
                    except TimeoutError:
                        break
                    if message["type"] in ("presence", "changes"):
                        held = apply(held, message)
                        versions.append(held["version"])
                want = await place.presence()
                assert held == want
                assert versions == sorted(versions) and len(set(versions)) == len(versions)
            on_a, on_b = await a.presence(), await b.presence()
            assert on_a["sockets"] == on_b["sockets"] and len(on_a["sockets"]) == 6
            assert ({v: {w["socketId"] for w in ws} for v, ws in on_a["videos"].items()}
                    == {v: {w["socketId"] for w in ws} for v, ws in on_b["videos"].items()})

    asyncio.run(check())


async def _connect(place: Place, query: str, client: Client):
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(place.url.replace("http", "ws") + "/presence" + query,
                                   on_message_callback=client.inbox.put_nowait)
    client.socket_id = (await client.next())["socketId"]
    return conn


@pytest.mark.parametrize("config", ["filesystem", pytest.param("pravega", marks=pytest.mark.pravega)], indirect=True)
def test_a_signal_crosses_to_a_socket_of_a_sibling_worker_once(config, tmp_path):
    async def check():
        async with workers(config, tmp_path) as (a, b):
            on_a, on_b = await Client().connect(a), await Client().connect(b)
            for client in (on_a, on_b):
                client.send({"type": "watch", "video": "alpha"})
            await on_a.presence_until(watching(on_b.socket_id, "alpha"), 5)
            await on_b.presence_until(watching(on_a.socket_id, "alpha"), 5)
            on_a.send({"type": "signal", "to": on_b.socket_id, "data": {"type": "offer"}})
            assert await on_b.relayed(RELAY_PROPAGATION + 1) == {"type": "signal", "from": on_a.socket_id,
                                                                 "data": {"type": "offer"}}
            on_b.send({"type": "signal", "to": on_a.socket_id, "data": {"type": "answer"}})
            assert await on_a.relayed(RELAY_PROPAGATION + 1) == {"type": "signal", "from": on_b.socket_id,
                                                                 "data": {"type": "answer"}}
            # On Pravega the same signal comes again through the stream, a poll later: it is not delivered twice.
            with pytest.raises(TimeoutError):
                await on_b.relayed(1.0)

    asyncio.run(check())


@pytest.mark.parametrize("config", ["filesystem"], indirect=True)
def test_a_worker_that_loses_the_relay_leaves_the_picture_and_comes_back_with_a_replay(config, tmp_path):
    async def check():
        async with workers(config, tmp_path) as (a, b):
            on_a, on_b = await Client().connect(a), await Client().connect(b)
            on_a.send({"type": "watch", "video": "alpha"})
            await on_b.presence_until(watching(on_a.socket_id, "alpha"), 5)
            transport = a.app.presence_link.transports[0]
            transport._outbox.abort()  # the connection breaks, as when the relay drops a stuck worker
            await on_b.presence_until(lambda p: on_a.socket_id not in p["sockets"], 5)
            await on_b.presence_until(watching(on_a.socket_id, "alpha"), 5)
            assert transport.connections == 2
            # And a's picture came back too, from the relay's replay of b's snapshot.
            await until(lambda: _has_socket(a, on_b.socket_id), 5)

    asyncio.run(check())


def test_the_relay_drops_a_worker_that_reads_nothing_and_keeps_serving_the_others(tmp_path):
    from presence.relay import HELLO, KEPT_CHANGE, frame, read_frame, socket_path

    async def check():
        relay = Relay(str(tmp_path), max_pending=256 * 1024)
        await relay.start()
        try:
            stuck_reader, stuck = await asyncio.open_unix_connection(socket_path(str(tmp_path)))
            stuck.transport.pause_reading()
            stuck.write(frame(HELLO, 0, ujson.dumps({"instance": "stuck", "index": 0}).encode()))
            _, writer = await asyncio.open_unix_connection(socket_path(str(tmp_path)))
            writer.write(frame(HELLO, 0, ujson.dumps({"instance": "busy", "index": 1}).encode()))
            reader_c, c = await asyncio.open_unix_connection(socket_path(str(tmp_path)))
            c.write(frame(HELLO, 0, ujson.dumps({"instance": "reader", "index": 2}).encode()))
            await until(lambda: relay.connected() == 3, 5)
            record, got = b"x" * 1000, []

            async def read_all():
                while len(got) < 4000:
                    kind, _, payload = await read_frame(reader_c)
                    if payload == record:
                        got.append(kind)

            reading = asyncio.create_task(read_all())
            # 4 MB to each, far past what the stuck one may have pending, kernel buffers and all.
            for seq in range(1, 4001):
                writer.write(frame(KEPT_CHANGE, seq, record))
                await writer.drain()
                if seq % 50 == 0:  # the reader keeps up
                    await until(lambda: len(got) >= seq - 50 or reading.done(), 5, "the reader", step=0.001)
            await asyncio.wait_for(reading, 10)
            await until(lambda: relay.connected() == 2, 5, "the stuck worker dropped")
            stuck.transport.resume_reading()
            assert len(await asyncio.wait_for(stuck_reader.read(), 5)) < 1000 * 4000
        finally:
            await relay.close()

    asyncio.run(check())


def test_a_worker_that_closes_its_connection_with_frames_unread_leaves_without_a_warning(tmp_path, caplog):
    """A worker's relay connection ends with a reset when it stops (RelayTransport.close aborts it),
    often with the relay's last frames unread: that is a worker going, as at every SIGTERM, not a fault."""
    from presence.relay import HELLO, KEPT_CHANGE, frame, socket_path

    async def check():
        relay = Relay(str(tmp_path))
        await relay.start()
        try:
            _, leaving = await asyncio.open_unix_connection(socket_path(str(tmp_path)))
            leaving.write(frame(HELLO, 0, ujson.dumps({"instance": "leaving", "index": 0}).encode()))
            _, other = await asyncio.open_unix_connection(socket_path(str(tmp_path)))
            other.write(frame(HELLO, 0, ujson.dumps({"instance": "other", "index": 1}).encode()))
            await until(lambda: relay.connected() == 2, 5)
            leaving.transport.pause_reading()  # what comes now arrives after its last read
            other.write(frame(KEPT_CHANGE, 1, b"x" * 1000))
            await other.drain()
            await asyncio.sleep(0.1)
            leaving.transport.abort()
            await until(lambda: relay.connected() == 1, 5, "the leaving worker gone")
            other.close()
            await until(lambda: relay.connected() == 0, 5, "the other worker gone")
        finally:
            await relay.close()

    with caplog.at_level("INFO", logger="binge.presence"):
        asyncio.run(check())
    assert not [r.getMessage() for r in caplog.records if r.name == "binge.presence" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("config", ["filesystem"], indirect=True)
def test_slots_per_address_count_across_workers(config, tmp_path):
    """2 websockets on each of 2 workers are 4 for the address; a worker's death releases its own."""
    config = config.__class__(**{**config.__dict__, "limits": config.limits.__class__(
        **{**config.limits.__dict__, "sockets_per_ip": 4})})

    async def check():
        async with workers(config, tmp_path) as (a, b):
            clients = [await Client().connect(place) for place in (a, b, a, b)]
            assert len(clients) == 4
            for place in (a, b):
                with pytest.raises(HTTPClientError) as refused:
                    await AsyncHTTPClient().fetch(place.url + "/presence", headers={
                        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
                assert refused.value.code == 429
            clients[0].conn.close()
            await until(lambda: a.app.sockets.__len__() == 1, 5)
            await Client().connect(b)

    asyncio.run(check())


def test_a_shared_count_is_summed_over_workers_never_short_and_a_dead_row_is_released(tmp_path):
    from ops.limits import release_worker

    async def check():
        supervisor = types.SimpleNamespace(run_dir=str(tmp_path), count=3)
        async with shared_counts(supervisor):
            rows = [SharedCounts(str(tmp_path), "streams", i, 3) for i in range(3)]
            addresses = [f"10.0.{i // 256}.{i % 256}" for i in range(5000)]
            for i, address in enumerate(addresses):
                rows[i % 3].add(address, 1 + i % 4)
            for i, address in enumerate(addresses):
                assert rows[(i + 1) % 3].count(address) >= 1 + i % 4
            over = sum(rows[0].count(a) != 1 + i % 4 for i, a in enumerate(addresses))
            assert over < len(addresses) / 100, f"{over} of 5000 addresses counted over"
            release_worker(str(tmp_path), "streams", 0)
            assert rows[1].count(addresses[0]) == 0 and rows[1].count(addresses[1]) == 2
            rows[0].add(addresses[0], -1)  # the row's owner was alive after all: its count stays at 0
            assert rows[2].count(addresses[0]) == 0

    asyncio.run(check())


# server.py with real worker processes (tests.test_workers.WORKERS of them):
# the supervisor's relay, not one in this process.
# Seconds a SIGKILLed worker's sockets (and slots) may take to leave the
# others' pictures (and counts): the relay tells them as soon as the kernel
# ends the dead worker's connection, in milliseconds, so this is room for a
# loaded machine, and far below presence's instance timeout (30 s), which
# is what would drop them if the relay did not.
GONE_WITHIN = 5.0
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def presence_server(tmp_path, **limits) -> ServerProcess:
    library = tmp_path / "library"
    library.mkdir()
    for video in ("lobby", "alpha", "beta"):
        write_unprobed_video(str(library / f"{video}.mp4"), 1024)
    return workers_server(tmp_path, limits)


async def pictures(server: ServerProcess) -> dict[int, dict]:
    """Index -> that worker's ``GET /presence``."""
    return {index: picture for index, (_, _, picture) in (await asyncio.to_thread(every_worker, server, "/presence")).items()}


async def placed(server: ServerProcess, video: str = "lobby") -> tuple[Client, str]:
    """A new socket watching ``video``, and the instance of the worker it landed on (its entry names it)."""
    client = await Client().connect(server)
    client.send({"type": "watch", "video": video})
    picture = await client.presence_until(watching(client.socket_id, video), 5)
    return client, next(w["instance"] for w in picture["videos"][video] if w["socketId"] == client.socket_id)


async def on_each_worker(server: ServerProcess, each: int) -> dict[str, list[Client]]:
    """Instance -> sockets on that worker: new sockets until every worker has ``each`` (the rest closed)."""
    held: dict[str, list[Client]] = {}
    for _ in range(50 * each):
        client, instance = await placed(server)
        if len(held.setdefault(instance, [])) < each:
            held[instance].append(client)
        else:  # and its slot released (it is gone from a neighbour's picture) before the next comes
            client.conn.close()
            await held[instance][0].presence_until(lambda p: client.socket_id not in p["sockets"], 5)
        if len(held) == WORKERS and all(len(c) == each for c in held.values()):
            return held
    raise AssertionError(f"sockets never spread over the workers: {({i: len(c) for i, c in held.items()})}")


def test_real_workers_share_one_picture_and_broadcast_through_the_relay_within_the_coalescing(tmp_path):
    asyncio.run(_one_picture_scenario(tmp_path))


async def _one_picture_scenario(tmp_path) -> None:
    with presence_server(tmp_path) as server:
        held = await on_each_worker(server, 1)
        (viewer,), (on_other,) = held.values()
        took = []
        for round_ in range(6):
            video = "alpha" if round_ % 2 else "beta"
            started = time.monotonic()
            viewer.send({"type": "watch", "video": video})
            await on_other.presence_until(watching(viewer.socket_id, video), 5)
            took.append(time.monotonic() - started)
        print(f"a change on one worker seen on the other after {', '.join(f'{t * 1000:.0f}' for t in took)} ms")
        # The median: one round may meet a worker's garbage collection or the machine's other load.
        assert statistics.median(took) < RELAY_PROPAGATION, took

        every = await pictures(server)
        for index, picture in every.items():
            assert watching(viewer.socket_id, video)(picture) and watching(on_other.socket_id, "lobby")(picture), index
        assert every[0]["videos"] == every[1]["videos"] and every[0]["sockets"] == every[1]["sockets"]

        viewer.conn.close()
        await on_other.presence_until(lambda p: viewer.socket_id not in p["sockets"], RELAY_PROPAGATION + 1)
        for client in (viewer, on_other):
            assert client.versions == sorted(set(client.versions)), client.versions
    assert "Traceback" not in open(server.log_path).read()


def test_a_killed_workers_sockets_leave_the_picture_and_its_replacement_joins_it(tmp_path):
    asyncio.run(_killed_scenario(tmp_path))


async def _killed_scenario(tmp_path) -> None:
    with presence_server(tmp_path) as server:
        held = await on_each_worker(server, 2)
        workers = {w["index"]: w for w, _, _ in (await asyncio.to_thread(every_worker, server, "/healthz")).values()}
        doomed, kept = held[workers[0]["instance"]], held[workers[1]["instance"]]
        os.kill(workers[0]["pid"], signal.SIGKILL)

        def survivors_only(picture: dict) -> bool:
            return (not {c.socket_id for c in doomed} & picture["sockets"].keys()
                    and all(watching(c.socket_id, "lobby")(picture) for c in kept))

        for client in kept:  # each survivor's socket stays open and is told
            await client.presence_until(survivors_only, GONE_WITHIN)

        # The replacement, worker 0 again with another pid and instance, has the survivors' viewers in its picture...
        async def replaced():
            answers = await asyncio.to_thread(every_worker, server, "/presence")
            worker, _, picture = answers[0]
            return worker if worker["pid"] != workers[0]["pid"] and survivors_only(picture) else None

        new = await until(replaced, REPLACED_WITHIN, "worker 0 replaced, seeing the survivors' viewers", step=0.1)
        # ...and a viewer on it is in the survivors' pictures.
        for _ in range(50):
            client, instance = await placed(server, "alpha")
            if instance == new["instance"]:
                break
            client.conn.close()
        else:
            raise AssertionError("no new socket landed on the replacement")
        for survivor in kept:
            await survivor.presence_until(watching(client.socket_id, "alpha"), RELAY_PROPAGATION + 1)
            assert survivor.versions == sorted(set(survivor.versions)), survivor.versions
    assert "Traceback" not in open(server.log_path).read()


def test_sockets_per_ip_count_across_real_workers_and_a_killed_workers_slots_are_released(tmp_path):
    asyncio.run(_limits_scenario(tmp_path))


async def _limits_scenario(tmp_path) -> None:
    limit = 4
    with presence_server(tmp_path, sockets_per_ip=limit) as server:
        held = await on_each_worker(server, limit // WORKERS)

        def refused_by_each() -> dict[int, tuple[dict, int, dict]]:
            return every_worker(server, "/presence", UPGRADE)

        for index, (_, status, body) in (await asyncio.to_thread(refused_by_each)).items():
            assert status == 429 and "too many" in body["error"], (index, status, body)

        workers = {w["index"]: w for w, _, _ in (await asyncio.to_thread(every_worker, server, "/healthz")).values()}
        os.kill(workers[0]["pid"], signal.SIGKILL)
        freed = len(held[workers[0]["instance"]])

        # The relay releases the dead worker's row when its connection ends: its slots come back.
        async def connected():
            try:
                return await Client().connect(server)
            except (HTTPClientError, OSError):  # refused (429) until the row is released
                return None

        for _ in range(freed):
            await until(connected, GONE_WITHIN, "a killed worker's slot released")
        for index, (_, status, _) in (await asyncio.to_thread(refused_by_each)).items():
            assert status == 429, (index, status)
    assert "Traceback" not in open(server.log_path).read()

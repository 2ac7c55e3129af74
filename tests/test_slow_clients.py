"""Clients that never read: dropped after a bound, the server's memory bounded, everyone else served.

The main test runs a real ``server.py`` on a filesystem library holding a
64 MiB video, with ``server.stall_timeout`` at 10 s. 200 raw TCP clients ask
for the whole video and never read; 200 websocket clients finish the
handshake, each watches the video with a 1 KiB peer URL (presence grows to
some 250 KiB) and never read, while driver sockets keep presence changing.
Meanwhile a normal client must get the whole video intact and a normal
websocket must keep hearing presence; the server's RSS must never grow by
64 MiB or more, and soon after the stall timeout every stalled connection
must be gone (the server's open file descriptors back to what they were).

The last test covers the chunked path (the one stores without a local file
take) in process: a client that stops reading is cut off there too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import re
import socket
import time

import pytest
import ujson
from tornado.websocket import WebSocketClosedError, websocket_connect

from handlers import tornado_internals
from harness.clients import TEXT, frame, silent_websocket, stalled_stream
from harness.http import get_json
from harness.loopback import PeakRss, open_fds, rss_kib
from harness.media import MiB, write_unprobed_video
from harness.server_process import ServerProcess
from tests.conftest import make_config

VIDEO_SIZE = 64 * MiB
STALLED = 200
# Longer than making the 400 stalled clients takes on a slow, busy machine (3 s seen on a busy one of
# ours): every presence change while they join goes to every stalled websocket already there.
STALL_TIMEOUT = 10.0
RSS_BUDGET_KIB = 64 * 1024
PEER_URL = "http://127.0.0.1/" + "p" * 1000


def answered_stalled_stream(port: int) -> socket.socket:
    """A stalled stream whose answer has begun: the server holds it open, sending the body."""
    sock = stalled_stream(port, "/videos/big/stream")
    # Peeked, not read: the client still takes nothing off its receive buffer.
    assert sock.recv(12, socket.MSG_PEEK) == b"HTTP/1.1 200"
    return sock


def stalled_websocket(port: int) -> socket.socket:
    """A presence websocket that watches the video with a long peer URL, then never reads again."""
    sock = silent_websocket(port)
    sock.sendall(frame(TEXT, ujson.dumps({"type": "watch", "video": "big", "peer": PEER_URL},
                                         escape_forward_slashes=False).encode()))
    return sock


async def get_whole_video(port: int) -> bytes:
    """The video's body over a plain HTTP/1.1 connection, read as fast as it comes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /videos/big/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        return await reader.readexactly(length)
    finally:
        writer.close()


def make_stalled_clients(port: int) -> list[socket.socket]:
    """``STALLED`` stalled streams and as many stalled websockets, each answered by the server.

    Made on threads, many at once: the blocking calls leave the test's event
    loop free to read the normal websocket meanwhile, and making them all
    takes less than ``STALL_TIMEOUT``, so none is dropped before the last
    one is made.
    """
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        streams = [pool.submit(answered_stalled_stream, port) for _ in range(STALLED)]
        websockets = [pool.submit(stalled_websocket, port) for _ in range(STALLED)]
        return [future.result() for future in streams + websockets]


class Listener:
    """A normal presence websocket: takes every message as it comes and notes when it came."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.version = 0
        self.closed_with: int | None = None

    def on_message(self, message: str | None) -> None:
        if message is None:
            self.closed_with = self.conn.close_code
            return
        parsed = ujson.loads(message)
        if parsed["type"] == "presence":
            self.arrivals.append(time.monotonic())
            self.version = parsed["version"]

    def longest_gap(self, since: float) -> float:
        times = [since] + [t for t in self.arrivals if t >= since] + [time.monotonic()]
        return max(b - a for a, b in zip(times, times[1:]))


async def drive(port: int, stop: asyncio.Event, drivers: int = 4) -> None:
    """Keeps presence changing: each driver socket switches between watching and not, 10 times a second."""
    # Each driver takes every message as it comes and drops it. A Tornado
    # client that nobody reads from stops reading its socket after one queued
    # message, so it answers no more pings either, and the server rightly
    # closes it as dead after presence.ping_interval + ping_timeout: on a slow
    # machine, where the test outlasts that, the drivers died mid-test.
    conns = [await websocket_connect(f"ws://127.0.0.1:{port}/presence?changes=1",
                                     on_message_callback=lambda message: None)
             for _ in range(drivers)]
    try:
        watching = False
        while not stop.is_set():
            watching = not watching
            message = ujson.dumps({"type": "watch", "video": "big"} if watching else {"type": "leave"})
            for conn in conns:
                try:
                    await conn.write_message(message)
                except WebSocketClosedError:
                    raise AssertionError(f"the server closed a driver: {conn.close_code} {conn.close_reason}")
            await asyncio.sleep(0.1)
    finally:
        for conn in conns:
            conn.close()


@pytest.fixture
def server(tmp_path):
    """``(process, port, video bytes)``: server.py on a library holding the 64 MiB video ``big``."""
    library = tmp_path / "library"
    library.mkdir()
    video = write_unprobed_video(str(library / "big.mp4"), VIDEO_SIZE)
    server = ServerProcess(tmp_path, {
        "server": {"stall_timeout": STALL_TIMEOUT, "shutdown_grace": 1},
        "storage": {"library": str(library), "cache_dir": str(tmp_path / "cache")},
        # The drivers change presence faster than a person would; every client is 127.0.0.1.
        "limits": {"streams_per_ip": 4 * STALLED, "sockets_per_ip": 4 * STALLED},
        # A stalled websocket is dropped by back-pressure while presence
        # changes, and by the ping timeout once it goes quiet; at the default
        # 10 s + 10 s that second path alone nearly fills the test's deadline
        # on a busy machine.
        "presence": {"ping_interval": 4, "ping_timeout": 4},
    }, log_level="WARNING")
    with server:
        yield server.process, server.port, video


def test_stalled_clients_are_dropped_and_cost_bounded_memory(server):
    proc, port, video = server
    expected = hashlib.sha256(video).digest()
    stalled: list[socket.socket] = []
    peak = PeakRss(proc.pid)

    async def scenario() -> None:
        # Warm up what the first request of each kind builds, so it is in the baseline.
        assert hashlib.sha256(await get_whole_video(port)).digest() == expected
        listener = Listener()
        conn = listener.conn = await websocket_connect(f"ws://127.0.0.1:{port}/presence",
                                                       on_message_callback=listener.on_message)
        await asyncio.sleep(0.5)
        rss_before, fds_before = rss_kib(proc.pid), open_fds(proc.pid)

        peak.start()
        stop = asyncio.Event()
        driving = asyncio.ensure_future(drive(port, stop))
        started = time.monotonic()
        # Every one of them is known to be held by the server (its answer began), so no count of the
        # server's descriptors is needed for that: a stream holds three (socket, file, and sendfile's
        # copy of it) and a websocket one, and the first streams may already be gone.
        stalled.extend(await asyncio.to_thread(make_stalled_clients, port))
        created = time.monotonic()
        assert created - started < STALL_TIMEOUT, f"making the stalled clients took {created - started:.1f} s"

        # Everyone else is served meanwhile.
        body = await get_whole_video(port)
        assert len(body) == VIDEO_SIZE and hashlib.sha256(body).digest() == expected
        del body

        # Then the stalled connections go: streams after stall_timeout,
        # websockets once their backlog passes presence.max_pending_bytes.
        deadline = created + STALL_TIMEOUT + 20
        while open_fds(proc.pid) > fds_before + 4:  # the drivers' sockets
            if driving.done():
                driving.result()  # a driver that failed says why, not a silent gap in presence
            assert time.monotonic() < deadline, (
                f"{open_fds(proc.pid) - fds_before} connections still open "
                f"{time.monotonic() - started:.1f} s after the stalled clients came")
            await asyncio.sleep(0.25)
        dropped_after = time.monotonic() - started
        assert listener.closed_with is None, f"the normal websocket was closed with {listener.closed_with}"
        assert listener.longest_gap(started) < 2.0, "the normal websocket stopped hearing presence"
        stop.set()
        await driving
        peak.running = False
        peak.join()
        rss_after = rss_kib(proc.pid)
        growth_peak, growth_after = peak.peak - rss_before, rss_after - rss_before
        print(f"stalled clients made in {created - started:.1f} s, gone {dropped_after:.1f} s after they came; "
              f"longest gap in presence {listener.longest_gap(started):.2f} s; RSS {rss_before / 1024:.1f} MiB "
              f"before, +{growth_peak / 1024:.1f} MiB at peak, +{growth_after / 1024:.1f} MiB after")
        assert growth_peak < RSS_BUDGET_KIB and growth_after < RSS_BUDGET_KIB

        # The normal websocket is in step with presence once the changes stop.
        final = (await get_json(f"http://127.0.0.1:{port}/presence"))["version"]
        for _ in range(50):
            if listener.version == final:
                break
            await asyncio.sleep(0.1)
        assert listener.version == final
        conn.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        peak.running = False
        for sock in stalled:
            sock.close()


CHUNKED_STALL_TIMEOUT = 0.5


@pytest.fixture
def config(tmp_path, library):
    write_unprobed_video(str(library / "big.mp4"), 8 * MiB)
    return make_config(tmp_path, server={"stall_timeout": CHUNKED_STALL_TIMEOUT})


@pytest.mark.gen_test(timeout=20)
async def test_chunked_path_drops_a_client_that_stops_reading(http_server, http_port, monkeypatch):
    # Over TLS the body goes out in chunks, as from a store without local
    # files: here every connection passes for a TLS one.
    monkeypatch.setattr(tornado_internals, "sends_plain", lambda connection: False)
    sock = stalled_stream(http_port, "/videos/big/stream")
    sock.setblocking(False)
    await asyncio.sleep(CHUNKED_STALL_TIMEOUT + 1)
    loop = asyncio.get_running_loop()
    received = 0
    # Cut off, the connection ends once its buffered bytes are read; still
    # open, the rest of the body would come and then the connection would
    # wait for the next request.
    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), 2):
        received += len(chunk)
    sock.close()
    assert 0 < received < 8 * MiB

"""The operator's side: /metrics, access and error logs, per-address limits, and shutdown on SIGTERM.

Most run against the app in process, on a filesystem library that also
holds a 32 MiB video of random bytes: a client that asks for it and does
not read keeps its stream open as long as the test wants. Two run
``server.py`` itself: an origin and a peer node, to see a node's counts; and
an origin sent SIGTERM with streams and websockets open.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest
import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from handlers import catalog, tornado_internals
from harness.clients import silent_websocket, stalled_stream
from harness.http import sample
from harness.loopback import until
from harness.media import write_random_video
from harness.nodes import MiB, Server, start_all
from tests.conftest import make_config, read_bytes

BIG = 32 * MiB


@pytest.fixture
def config(request, tmp_path, library):
    """The settings, with the sections a test parametrizes this with (indirectly) changed."""
    write_random_video(str(library / "big.mp4"), BIG)
    return make_config(tmp_path, **getattr(request, "param", {}))


# Requests that say they come from these addresses through a proxy we trust.
FROM_A = {"X-Forwarded-For": "198.51.100.1"}
FROM_B = {"X-Forwarded-For": "198.51.100.2"}
TWO_OF_EACH_TRUSTING_LOOPBACK = pytest.mark.parametrize("config", [{
    "server": {"trusted_proxies": ["127.0.0.1"]}, "limits": {"streams_per_ip": 2, "sockets_per_ip": 2},
}], indirect=True, ids=["two-of-each"])


async def metrics(http_client, base_url) -> str:
    response = await http_client.fetch(f"{base_url}/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.body.decode()


# ---------------------------------------------------------------- /metrics


@pytest.mark.gen_test
async def test_metrics_parse_and_count_requests_streams_and_websockets(app, http_client, base_url, http_port, sample_videos):
    alpha = read_bytes(sample_videos[0].source_path)
    before = await metrics(http_client, base_url)
    assert sample(before, "binge_active_streams") == 0
    assert sample(before, "binge_websocket_clients") == 0
    assert sample(before, "binge_streamed_bytes_total", store="filesystem") == 0

    await http_client.fetch(f"{base_url}/videos")
    await http_client.fetch(f"{base_url}/videos/alpha/stream")
    missing = await http_client.fetch(f"{base_url}/videos/nope", raise_error=False)
    assert missing.code == 404
    ws = await websocket_connect(f"ws://127.0.0.1:{http_port}/presence")
    await ws.read_message()  # welcome
    await ws.read_message()  # the presence that follows its own arrival
    during = await metrics(http_client, base_url)
    ws.close()

    assert sample(during, "binge_http_requests_total", route="VideoListHandler", status="200") == 1
    assert sample(during, "binge_http_requests_total", route="StreamHandler", status="200") == 1
    assert sample(during, "binge_http_requests_total", route="VideoHandler", status="404") == 1
    assert sample(during, "binge_http_requests_total", route="PresenceHandler", status="101") == 1
    assert sample(during, "binge_streamed_bytes_total", store="filesystem") == len(alpha)
    assert sample(during, "binge_websocket_clients") == 1
    assert sample(during, "binge_presence_broadcast_latency_seconds_count") >= 1
    assert sample(during, "binge_piece_verification_failures_total") is None  # an origin verifies no pieces

    await until(lambda: len(app.sockets) == 0, timeout=5, what="the websocket to close")
    after = await metrics(http_client, base_url)
    assert sample(after, "binge_websocket_clients") == 0
    assert sample(after, "binge_active_streams") == 0


@pytest.mark.gen_test
async def test_active_streams_counts_a_body_in_flight(app, http_server, http_client, base_url, http_port):
    sock = stalled_stream(http_port, "/videos/big/stream")
    try:
        await until(lambda: len(app.streams) == 1, timeout=5, what="the stream to start")
        assert sample(await metrics(http_client, base_url), "binge_active_streams") == 1
    finally:
        sock.close()
    await until(lambda: len(app.streams) == 0, timeout=5, what="the stream to end")


def test_a_peer_node_counts_bytes_by_source_and_by_store(tmp_path):
    asyncio.run(_peer_node_scenario(tmp_path))


async def _peer_node_scenario(tmp_path) -> None:
    origin = Server(str(tmp_path), "origin")
    data = write_random_video(os.path.join(origin.library, "small.mp4"), MiB)
    node = Server(str(tmp_path), "node", upstream=origin.url)
    client = AsyncHTTPClient()
    try:
        await start_all(origin, node, video="small")
        for _ in range(2):  # the first read fetches every piece from the origin, the second has them
            assert (await client.fetch(f"{node.url}/videos/small/stream")).body == data

        async def counted() -> bool:
            text = (await client.fetch(f"{node.url}/metrics")).body.decode()
            return (
                sample(text, "binge_source_bytes_total", source="origin") == len(data)
                and sample(text, "binge_source_bytes_total", source="local") == len(data)
                and sample(text, "binge_streamed_bytes_total", store="peer") == 2 * len(data)
                and sample(text, "binge_peer_held_bytes") == len(data)
            )

        await until(counted, timeout=5, what="the node's counts")
    finally:
        node.stop()
        origin.stop()


# ---------------------------------------------------------------- logs


@pytest.mark.gen_test
async def test_every_request_gets_one_json_access_line(app, http_client, base_url, caplog):
    with caplog.at_level("INFO", logger="binge.access"):
        ok = await http_client.fetch(f"{base_url}/videos/alpha/stream?x=1", headers={"Range": "bytes=0-99", "User-Agent": "ua/1"})
        missing = await http_client.fetch(f"{base_url}/videos/nope/stream", raise_error=False)
    lines = [ujson.loads(r.getMessage()) for r in caplog.records if r.name == "binge.access"]
    assert len(lines) == 2
    stream, error = lines
    assert set(stream) == {"time", "request_id", "method", "path", "route", "status", "bytes",
                           "duration_ms", "ip", "user_agent"}
    assert stream["method"] == "GET" and stream["path"] == "/videos/alpha/stream"
    assert stream["route"] == "StreamHandler" and stream["status"] == 206 and stream["bytes"] == 100
    assert stream["ip"] == "127.0.0.1" and stream["user_agent"] == "ua/1"
    assert stream["request_id"] == ok.headers["X-Request-Id"]
    assert stream["time"].endswith("Z") and stream["duration_ms"] >= 0
    assert error["status"] == 404 and "nope" in error["error"]
    assert error["request_id"] == missing.headers["X-Request-Id"] != stream["request_id"]
    assert [r.levelname for r in caplog.records if r.name == "binge.access"] == ["INFO", "WARNING"]


@pytest.mark.gen_test
async def test_an_unexpected_error_is_one_json_line_with_its_traceback_never_sent(
    app, http_client, base_url, caplog, monkeypatch
):
    def broken(self):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(catalog.VideoListHandler, "get", broken)
    with caplog.at_level("INFO"):
        response = await http_client.fetch(f"{base_url}/videos", raise_error=False)
    assert response.code == 500
    assert ujson.loads(response.body) == {"error": "internal server error", "status": 500}
    assert b"secret" not in response.body
    (error,) = [ujson.loads(r.getMessage()) for r in caplog.records if r.name == "binge.error"]
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert error["route"] == "VideoListHandler" and "RuntimeError('secret detail')" == error["error"]
    assert "Traceback" in error["traceback"] and "secret detail" in error["traceback"]
    # Nothing else logs it: the access line and the error line are all.
    assert [r.name for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == ["binge.error", "binge.access"]


# ---------------------------------------------------------------- limits


@TWO_OF_EACH_TRUSTING_LOOPBACK
@pytest.mark.gen_test
async def test_streams_past_the_per_address_limit_get_429_others_are_served(app, http_client, base_url, http_port):
    held = [stalled_stream(http_port, "/videos/big/stream", FROM_A) for _ in range(2)]
    try:
        await until(lambda: len(app.streams) == 2, timeout=5, what="two streams")
        refused = await http_client.fetch(f"{base_url}/videos/alpha/stream", headers=FROM_A, raise_error=False)
        assert refused.code == 429
        assert refused.headers["Retry-After"] == "2"
        assert refused.headers["Content-Type"].startswith("application/json")
        assert "Content-Range" not in refused.headers
        body = ujson.loads(refused.body)
        assert body["status"] == 429 and "198.51.100.1" in body["error"]
        # Another address, and what is not a body in flight, are not limited.
        assert (await http_client.fetch(f"{base_url}/videos/alpha/stream", headers=FROM_B)).code == 200
        assert (await http_client.fetch(f"{base_url}/videos/alpha/stream", method="HEAD", headers=FROM_A)).code == 200
        assert (await http_client.fetch(f"{base_url}/videos", headers=FROM_A)).code == 200
    finally:
        held[0].close()
    # A client that leaves gives its slot back.
    await until(lambda: len(app.streams) == 1, timeout=5, what="the slot of the client that left")
    assert (await http_client.fetch(f"{base_url}/videos/alpha/stream", headers=FROM_A)).code == 200
    # So does a stream that ends (its handler finishes just after the client has it all).
    await until(lambda: len(app.streams) == 1, timeout=5, what="the slot of the stream that ended")
    held[1].close()
    await until(lambda: len(app.streams) == 0, timeout=5, what="every slot")


@TWO_OF_EACH_TRUSTING_LOOPBACK
@pytest.mark.gen_test
async def test_websockets_past_the_per_address_limit_are_refused_before_the_upgrade(app, http_server, http_port):
    def connect(headers):
        return websocket_connect(HTTPRequest(f"ws://127.0.0.1:{http_port}/presence", headers=headers))

    first, second = await connect(FROM_A), await connect(FROM_A)
    with pytest.raises(HTTPClientError) as refused:
        await connect(FROM_A)
    assert refused.value.code == 429
    assert refused.value.response.headers["Retry-After"] == "2"
    assert ujson.loads(refused.value.response.body)["status"] == 429
    other = await connect(FROM_B)
    first.close()
    await until(lambda: len(app.sockets) == 2, timeout=5, what="the closed socket's slot")
    again = await connect(FROM_A)
    for ws in (second, other, again):
        ws.close()
    await until(lambda: len(app.sockets) == 0, timeout=5, what="every slot")


@pytest.mark.parametrize("path", ["sendfile", "chunks"])
@pytest.mark.gen_test
async def test_a_cut_stream_ends_quietly_and_frees_its_slot(app, http_server, http_port, caplog, monkeypatch, path):
    if path == "chunks":  # what TLS and stores without a local file take: every stream passes for TLS here
        monkeypatch.setattr(tornado_internals, "sends_plain", lambda connection: False)
    sock = stalled_stream(http_port, "/videos/big/stream")
    await until(lambda: len(app.streams) == 1, timeout=5, what="the stream to start")
    with caplog.at_level("INFO"):
        app.streams.cut_all()
        await until(lambda: len(app.streams) == 0, timeout=5, what="the cut stream's slot")
        received = await asyncio.to_thread(read_to_the_end, sock)
    assert received < BIG
    (line,) = [ujson.loads(r.getMessage()) for r in caplog.records if r.name == "binge.access"]
    assert line["status"] == 200 and line["bytes"] < BIG
    if path == "chunks":  # counted chunk by chunk; sendfile, by 4 MiB segment
        assert line["bytes"] > 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# ---------------------------------------------------------------- SIGTERM


def test_sigterm_closes_websockets_with_1001_cuts_what_is_left_after_the_grace_and_exits_0(tmp_path):
    asyncio.run(_sigterm_scenario(tmp_path))


async def _sigterm_scenario(tmp_path) -> None:
    server = Server(str(tmp_path), "origin")  # shutdown_grace: 1
    grace = 1.0
    write_random_video(os.path.join(server.library, "big.mp4"), BIG)
    server.start()
    try:
        await server.ready(video="big")
        ws = await websocket_connect(f"ws://127.0.0.1:{server.port}/presence")
        await ws.read_message()
        silent = silent_websocket(server.port, rcvbuf=None)
        slow = stalled_stream(server.port, "/videos/big/stream")
        await asyncio.sleep(0.5)  # the stream is under way, its buffers full

        signalled = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        while await asyncio.wait_for(ws.read_message(), grace + 3) is not None:
            pass
        assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")

        # The slow reader reads nothing during the grace, then all it can.
        await asyncio.sleep(grace + 0.5 - (time.monotonic() - signalled))
        received = await asyncio.to_thread(read_to_the_end, slow)
        assert received < BIG, "the stream was cut short, not sent whole"
        assert time.monotonic() - signalled < grace + 3

        await asyncio.to_thread(server.process.wait, grace + 5)
        assert server.process.returncode == 0
        assert time.monotonic() - signalled < grace + 5
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port)).close()
        silent.close()
    finally:
        server.kill()
    log = open(server.log_path).read()
    assert "Traceback" not in log and " ERROR " not in log, log
    assert "cutting 1 streams still open after 1 s" in log
    assert "cutting 1 websockets still open after 1 s" in log
    stream_line = next(ujson.loads(line) for line in log.splitlines() if '"route":"StreamHandler"' in line)
    assert stream_line["status"] == 200 and stream_line["bytes"] < BIG


def read_to_the_end(sock: socket.socket) -> int:
    """Reads until the server closes the connection; the body bytes that came (headers included)."""
    sock.settimeout(10)
    total = 0
    try:
        while data := sock.recv(1 << 16):
            total += len(data)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return total

"""What Binge+ relies on in Tornado's internals (handlers/tornado_internals.py), pinned against the installed Tornado.

Each test drives a small handler of its own over real loopback sockets. One
failing after a Tornado upgrade names the behaviour that changed: fix its
function in handlers/tornado_internals.py, and every caller follows.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
import subprocess
import tracemalloc

import pytest
import tornado.httpserver
import tornado.web
import tornado.websocket
from tornado.httpclient import HTTPRequest
from tornado.simple_httpclient import HTTPStreamClosedError
from tornado.httputil import HTTPOutputError
from tornado.testing import bind_unused_port
from tornado.websocket import WebSocketClosedError, websocket_connect

from handlers.tornado_internals import (
    body_sent_around, reason, response_header, sends_plain, socket_of, text_frame, write_shared_text,
)
from harness.clients import upgrade_request
from harness.loopback import until

BODY = b"hello"


class Recorded(tornado.web.RequestHandler):
    """Answers ``BODY`` with ``?status=`` (and ``?reason=``), noting what the helpers read of its response."""

    def get(self) -> None:
        seen = self.application.seen
        seen["length before"] = response_header(self, "Content-Length", "none")
        self.set_status(int(self.get_query_argument("status", "200")), self.get_query_argument("reason", None))
        seen["reason"] = reason(self)
        self.finish(BODY)
        seen["length after"] = response_header(self, "Content-Length")
        seen["type"] = response_header(self, "Content-Type")


class SentAround(tornado.web.RequestHandler):
    """Sends ``BODY`` past the connection, straight to the socket, as sendfile(2) does; ``?counted=1`` says so."""

    async def get(self) -> None:
        connection = self.request.connection
        self.set_header("Content-Length", len(BODY))
        await self.flush()
        socket_of(connection).send(BODY)
        if self.get_query_argument("counted") == "1":
            body_sent_around(connection, len(BODY))
        try:
            self.finish()
        except HTTPOutputError as e:
            self.application.seen["error"] = str(e)


class Plain(tornado.web.RequestHandler):
    """Notes whether its connection sends plain bytes, and its socket; with ``?close=1``, what socket_of gives once closed."""

    def get(self) -> None:
        connection = self.request.connection
        self.application.seen["plain"] = sends_plain(connection)
        self.application.seen["socket"] = socket_of(connection)
        if self.get_query_argument("close", "") == "1":
            connection.close()
            self.application.seen["socket after close"] = socket_of(connection)
        else:
            self.finish("ok")


@functools.lru_cache(maxsize=1)
def payload(size: int) -> bytes:
    """``size`` bytes, one object for every socket sent them, as a broadcast hands out."""
    return b"x" * size


class SharedText(tornado.websocket.WebSocketHandler):
    """Sends ``?size=`` bytes with write_shared_text on opening; notes the futures, and what a write after closing does."""

    def open(self) -> None:
        future = write_shared_text(self, payload(int(self.get_query_argument("size"))))
        self.application.seen["future"] = future
        self.application.seen.setdefault("futures", []).append(future)

    def on_close(self) -> None:
        try:
            write_shared_text(self, b"late")
        except WebSocketClosedError:
            self.application.seen["closed"] = "refused"


@pytest.fixture
def app():
    application = tornado.web.Application(
        [("/recorded", Recorded), ("/around", SentAround), ("/plain", Plain), ("/ws", SharedText)])
    application.seen = {}
    return application


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1, made by openssl(1)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
def tls_port(app, io_loop, tls_context):
    """The port of the same app served over TLS."""
    sock, port = bind_unused_port()
    server = tornado.httpserver.HTTPServer(app, ssl_options=tls_context)
    server.add_sockets([sock])
    yield port
    server.stop()


@pytest.mark.gen_test
async def test_response_header_reads_what_the_handler_set_and_what_finish_added(app, http_client, base_url):
    response = await http_client.fetch(base_url + "/recorded")
    assert response.body == BODY
    assert app.seen["length before"] == "none"  # the default, for a header not set
    assert app.seen["length after"] == str(len(BODY))  # set by finish(), what the access line counts
    assert app.seen["type"] == response.headers["Content-Type"]


@pytest.mark.gen_test
async def test_reason_is_the_phrase_given_or_the_statuss_own(app, http_client, base_url):
    await http_client.fetch(base_url + "/recorded?status=404", raise_error=False)
    assert app.seen["reason"] == "Not Found"
    await http_client.fetch(base_url + "/recorded?status=426&reason=Upgrade%20Required", raise_error=False)
    assert app.seen["reason"] == "Upgrade Required"


async def get_twice(port: int, path: str) -> list[bytes]:
    """Two GETs of ``path`` one after the other on one connection; each response's body (b"" once it closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    bodies = []
    try:
        for _ in range(2):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                bodies.append(await reader.readexactly(len(BODY)))
            except asyncio.IncompleteReadError:
                bodies.append(b"")
    finally:
        writer.close()
    return bodies


@pytest.mark.gen_test
async def test_a_body_sent_around_the_connection_and_counted_keeps_it_alive(app, http_server, http_port):
    assert await asyncio.wait_for(get_twice(http_port, "/around?counted=1"), 5) == [BODY, BODY]
    assert "error" not in app.seen


@pytest.mark.gen_test
async def test_uncounted_the_connection_takes_the_body_for_short_and_closes(app, http_server, http_port):
    # What body_sent_around is for: Tornado still counts the body against Content-Length.
    assert await asyncio.wait_for(get_twice(http_port, "/around?counted=0"), 5) == [BODY, b""]
    assert "less than Content-Length" in app.seen["error"]


@pytest.mark.gen_test
async def test_sockets_are_plain_without_tls_and_none_once_closed(app, http_client, base_url, tls_port):
    await http_client.fetch(base_url + "/plain")
    assert app.seen["plain"] is True and isinstance(app.seen["socket"], socket.socket)
    await http_client.fetch(f"https://127.0.0.1:{tls_port}/plain", validate_cert=False)
    assert app.seen["plain"] is False  # over TLS the bytes must go through the stream
    with pytest.raises(HTTPStreamClosedError):
        await http_client.fetch(base_url + "/plain?close=1")
    assert app.seen["socket after close"] is None


def test_a_text_frame_is_rfc_6455s_and_built_once_per_payload():
    for size, header in [(125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"), (70000, b"\x81\x7f" + (70000).to_bytes(8, "big"))]:
        payload = os.urandom(size)
        assert text_frame(payload) == header + payload
        assert text_frame(payload) is text_frame(payload)


@pytest.mark.gen_test
async def test_shared_text_reaches_tornados_own_client_and_is_done_at_once(app, http_server, http_port):
    for size in (5, 200, 70000):
        conn = await websocket_connect(f"ws://127.0.0.1:{http_port}/ws?size={size}")
        assert await conn.read_message() == "x" * size
        # Done when write_shared_text returned: the broadcaster counts nothing pending for it.
        assert app.seen["future"].done()
        conn.close()
        await until(lambda: app.seen.pop("closed", None), 5, "the server to see the close")


@pytest.mark.gen_test
async def test_shared_text_goes_through_the_stream_over_tls(app, tls_port):
    request = HTTPRequest(f"wss://127.0.0.1:{tls_port}/ws?size=70000", validate_cert=False)
    conn = await websocket_connect(request)
    assert await conn.read_message() == "x" * 70000
    conn.close()


# Far more than the server's send buffer (4 MiB at most by default on Linux)
# and a stalled client's small receive buffer hold together.
UNTAKEN = 16 * 1024 * 1024


async def stalled_websocket(port: int, size: int) -> socket.socket:
    """A websocket on a bare socket with a small receive buffer, asking for ``size`` bytes; it reads nothing yet."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, upgrade_request(f"/ws?size={size}"))
    return sock


@pytest.mark.gen_test(timeout=20)
async def test_shared_text_the_socket_cannot_take_waits_in_the_stream_until_read(app, http_server, http_port):
    size = UNTAKEN
    loop = asyncio.get_running_loop()
    sock = await stalled_websocket(http_port, size)
    await until(lambda: "future" in app.seen, 5, "the server to send")
    future = app.seen["future"]
    await asyncio.sleep(0.2)
    assert not future.done()  # the rest is queued: the broadcaster counts it as pending
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)  # now read it quickly
    received = bytearray()
    expected = text_frame(b"x" * size)
    while not received.endswith(expected):
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5)
        assert chunk, "the server closed the connection"
        received += chunk
        assert len(received) < len(expected) + 4096, "more bytes than the handshake and the frame"
    assert received.split(b"\r\n\r\n", 1)[1] == expected
    await asyncio.wait_for(future, 5)
    sock.close()


@pytest.mark.gen_test(timeout=30)
async def test_sockets_that_cannot_take_a_frame_share_one_copy_of_it(app, http_server, http_port):
    # What the hand-written frames are for: Tornado's write_message would
    # copy the payload into a frame per socket, and each stalled socket
    # would hold most of its copy.
    clients, frame_size = 8, len(text_frame(payload(UNTAKEN)))
    text_frame.cache_clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        socks = [await stalled_websocket(http_port, UNTAKEN) for _ in range(clients)]
        await until(lambda: len(app.seen.get("futures", ())) == clients, 10, "every socket to be sent the frame")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert not any(future.done() for future in app.seen["futures"])  # each holds most of the frame, unsent
    assert held < 2 * frame_size, f"{held} bytes held for {clients} sockets sent one {frame_size}-byte frame"
    for sock in socks:
        sock.close()

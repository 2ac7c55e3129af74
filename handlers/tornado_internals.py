"""Every place Binge+ reaches past Tornado's public API, and why it must.

Each function here leans on something Tornado does not promise: a private
attribute, or how a stream or a websocket behaves inside. Nothing else in the
tree does; ``tests/test_tornado_internals.py`` pins each behaviour relied on
against the installed Tornado (6.6 when written), so an upgrade that changes
one fails there, by name, not somewhere in a stream or a broadcast.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct

import tornado.web
import tornado.websocket
from tornado.http1connection import HTTP1Connection
from tornado.iostream import SSLIOStream, StreamClosedError


def response_header(handler: tornado.web.RequestHandler, name: str, default: str = "") -> str:
    """A header of the response ``handler`` is building, as set so far: Tornado has setters, no getter.

    Once the handler has finished, ``Content-Length`` is there too: finish()
    sets it from the body when the handler did not.
    """
    return handler._headers.get(name, default)


def reason(handler: tornado.web.RequestHandler) -> str:
    """The reason phrase of the handler's status, as the last set_status gave it or its default."""
    return handler._reason


def sends_plain(connection: HTTP1Connection) -> bool:
    """Whether bytes written to the connection's socket reach the client as they are: not over TLS,
    where they must go through the stream to be encrypted."""
    return not isinstance(connection.stream, SSLIOStream)


def socket_of(connection: HTTP1Connection) -> socket.socket | None:
    """The connection's socket, to send on past the connection (sendfile(2)); None once the client hung up.

    Only once what the connection was given has gone out (after an awaited
    flush()): bytes sent here would otherwise overtake it.
    """
    stream = connection.stream
    return None if stream.closed() else stream.socket


def body_sent_around(connection: HTTP1Connection, size: int) -> None:
    """Counts ``size`` body bytes sent past the connection (by sendfile(2)) as sent through it.

    The connection checks the body against ``Content-Length`` by counting
    what goes through its write(); without this, finish() after a body sent
    another way raises, as if the body had come up short.
    """
    connection._expected_content_remaining -= size


@functools.lru_cache(maxsize=2)
def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked websocket text frame (RFC 6455 section 5.2).

    Cached because a broadcast hands every socket the same bytes object: the
    frame is built once, and the lookup is cheap (bytes keep their hash, and
    the key is found by identity).
    """
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", 0x81, size) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def write_shared_text(handler: tornado.websocket.WebSocketHandler, payload: bytes) -> asyncio.Future[None]:
    """Sends ``payload`` as a text frame that every socket sent the same bytes object shares.

    Tornado's write_message copies the payload into a frame of each socket's
    own and wraps each write in a task: a broadcast to a thousand sockets (or
    to a hundred that stopped reading) would hold a thousand copies, and no
    write would be done when it returns, so every client would count as
    behind. Here a socket with nothing queued is handed the frame directly,
    which is all a client that keeps up ever needs (a quarter less CPU per
    broadcast than going through the stream), and the future it gets back is
    already done; what the socket does not take goes into the stream's buffer
    as a view of the shared frame, not a copy. Over TLS the bytes must go
    through the stream, which encrypts them.

    Frames go out uncompressed and unmasked, which RFC 6455 asks of a server
    and RFC 7692 allows: the handler must not negotiate compression (by
    default it does not). Raises WebSocketClosedError as write_message does.
    """
    connection = handler.ws_connection
    if connection is None or connection.is_closing():
        raise tornado.websocket.WebSocketClosedError()
    stream, frame = connection.stream, text_frame(payload)
    if not stream.writing() and not isinstance(stream, SSLIOStream):
        try:
            sent = stream.socket.send(frame)
        except OSError:
            sent = 0  # full, or broken: the stream finds out below and acts as usual
        if sent == len(frame):
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        frame = memoryview(frame)[sent:]
    try:
        return stream.write(frame)
    except StreamClosedError:
        raise tornado.websocket.WebSocketClosedError() from None

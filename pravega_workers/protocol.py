"""The frames the server and its Pravega worker processes exchange over a socket pair.

Every frame is a 16-byte header, ``kind`` (u32), ``tag`` (u64) and
``length`` (u32), followed by ``length`` bytes of payload. For a read the tag
is the request's id and the reply carries it back; for a follow worker it is
the stream offset the message leaves the follower at.

This module is the blocking side that worker processes use; the server reads
the same frames without blocking (see :mod:`pravega_workers.pool`).
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct(">IQI")

# Server -> reader worker. Payload: JSON.
READ = 1  # {"reader", "stream", "offset", "length"}: answered with DATA or ERROR
RELEASE = 2  # {"reader"}: the read is over; not answered

# Server -> follow worker.
APPEND = 3  # one event to append to the followed stream, as is; not answered

# Server -> appender worker; each is answered with DATA or ERROR.
CREATE = 5  # JSON {"stream"}: created (one segment) unless it exists; answered with JSON {"tail"}, its length
APPEND_TO = 6  # the stream's name, b"\n", one event: appended and flushed; answered with no bytes
# JSON {"prefix", "keep": [names]}: every stream named prefix… but those sealed and deleted;
# answered with JSON {"deleted": [names]}
DELETE = 7
LIST = 8  # JSON {"prefix"}: answered with JSON {"streams": {name: tail}}, the streams named prefix… and their lengths

# Reader and appender workers -> server.
DATA = 16  # exactly the bytes asked for, or the answer described above
ERROR = 17  # JSON {"kind": "unavailable" | "not_found", "message"}
READY = 18  # the worker is up and takes requests; sent once, first, with tag 0 and no payload

# Follow worker -> server.
RESET = 32  # a replay from the stream's head follows
RECORD = 33  # one event, as written to the stream
CAUGHT_UP = 34  # every event up to the tail (the tag) has been sent
FAILING = 35  # JSON {"message"}: Pravega failed; the worker retries

# Larger frames are a broken peer, not a message.
MAX_PAYLOAD = 64 * 1024 * 1024


def send_frame(sock: socket.socket, kind: int, tag: int, *payload: bytes | bytearray | memoryview) -> None:
    """Sends one frame whose payload is the parts of ``payload`` end to end, without joining them."""
    parts = [memoryview(HEADER.pack(kind, tag, sum(len(p) for p in payload))), *map(memoryview, payload)]
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts.pop(0))
        if parts:
            parts[0] = parts[0][sent:]


def recv_frame(sock: socket.socket) -> tuple[int, int, bytes] | None:
    """The next frame, or None when the peer closed the socket."""
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    kind, tag, length = HEADER.unpack(header)
    if length > MAX_PAYLOAD:
        raise ValueError(f"frame of {length} bytes")
    payload = _recv_exactly(sock, length) if length else b""
    if payload is None:
        return None
    return kind, tag, payload


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buffer = bytearray(n)
    view = memoryview(buffer)
    got = 0
    while got < n:
        r = sock.recv_into(view[got:])
        if r == 0:
            return None
        got += r
    return bytes(buffer)

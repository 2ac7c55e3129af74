"""The frames the server and its Pravega worker processes exchange over a socket pair.

Every frame is a 16-byte header, ``kind`` (u32), ``tag`` (u64) and
``length`` (u32), followed by ``length`` bytes of payload. For a read the tag
is the request's id and the reply carries it back; for the catalog worker it
is the catalog offset the message leaves the follower at.

This module is the blocking side that worker processes use; the server reads
the same frames without blocking (see :mod:`media.pravega_pool`).
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct(">IQI")

# Server -> reader worker. Payload: JSON.
READ = 1  # {"reader", "stream", "offset", "length"}: answered with DATA or ERROR
RELEASE = 2  # {"reader"}: the read is over; not answered

# Reader worker -> server.
DATA = 16  # exactly the bytes asked for
ERROR = 17  # JSON {"kind": "unavailable" | "not_found", "message"}

# Catalog worker -> server.
CATALOG_RESET = 32  # a replay from the catalog's head follows
CATALOG_RECORD = 33  # one record, as written to the catalog stream
CATALOG_CAUGHT_UP = 34  # every record up to the tail (the tag) has been sent
CATALOG_FAILING = 35  # JSON {"message"}: Pravega failed; the worker retries

# Larger frames are a broken peer, not a message.
MAX_PAYLOAD = 64 * 1024 * 1024


def send_frame(sock: socket.socket, kind: int, tag: int, payload: bytes | bytearray | memoryview = b"") -> None:
    sock.sendall(HEADER.pack(kind, tag, len(payload)))
    if payload:
        sock.sendall(payload)


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

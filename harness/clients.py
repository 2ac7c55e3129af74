"""Raw clients, for what Tornado's clients will not do: stall, read at their own pace, or send any frame at all.

:class:`Download` is one GET on the caller's event loop; the rest are blocking sockets.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

# Small enough that a client that stops reading soon stops taking bytes.
SMALL_RCVBUF = 4096
# Websocket opcodes (RFC 6455 5.2).
TEXT, BINARY, CONTINUATION, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9


def upgrade_request(path: str = "/presence", host: str = "127.0.0.1") -> bytes:
    """A websocket handshake request (RFC 6455 4.1) for ``path``, with a fresh key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:
    """One websocket frame as a client sends it; ``length`` may claim a size other than the payload's."""
    length = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack(">H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", length)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")
    return head + mask + body


def connected(port: int, rcvbuf: int | None = SMALL_RCVBUF) -> socket.socket:
    """A blocking socket to ``port`` of 127.0.0.1, its receive buffer set to ``rcvbuf`` (None: the default)."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    return sock


def stalled_stream(port: int, path: str, headers: dict[str, str] | None = None) -> socket.socket:
    """A socket that has asked for ``path`` and reads nothing: the server's answer stays open until it is closed."""
    sock = connected(port)
    lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode())
    return sock


def silent_websocket(port: int, rcvbuf: int | None = SMALL_RCVBUF) -> socket.socket:
    """A presence websocket whose handshake the server answered; the caller reads from it no more."""
    sock = connected(port, rcvbuf)
    sock.sendall(upgrade_request())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101"), answer[:200]
    return sock


class Download:
    """One GET, read at the test's own pace through a small receive buffer,
    so the server cannot run far ahead of what the test has read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def start(cls, port: int, path: str, **headers: str) -> Download:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        download = cls(*await asyncio.open_connection(sock=sock, limit=1 << 20))
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        download.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(download.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *fields = head.decode("latin-1").split("\r\n")
        download.status = int(status_line.split()[1])
        download.headers = {n.strip().lower(): v.strip() for n, _, v in (f.partition(":") for f in fields if f)}
        return download

    @property
    def length(self) -> int:
        return int(self.headers["content-length"])

    async def read(self, n: int, timeout: float = 10.0) -> bytes:
        """The next ``n`` bytes of the body; IncompleteReadError, with what came, when it ends first."""
        return await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def rest(self, timeout: float = 20.0) -> bytes:
        """Everything up to the server's close."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    def close(self) -> None:
        self.writer.close()


async def get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    download = await Download.start(port, path, **headers)
    try:
        return download.status, download.headers, await download.rest()
    finally:
        download.close()

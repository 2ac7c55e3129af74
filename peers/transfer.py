"""HTTP requests from a node to other servers: JSON documents and byte ranges.

JSON (catalogs, manifests, peer lists, have lists) goes through Tornado's
``AsyncHTTPClient`` with a timeout on the whole request.

Bytes go through :func:`get_range`, which speaks the little HTTP/1.1 needed
itself, because a source that stops sending must be given up after a few
seconds of silence while keeping the bytes it did send, and
``AsyncHTTPClient`` can neither time out on silence nor be abandoned
mid-body. One request per connection (``Connection: close``); the answer
must be a 206 whose ``Content-Range`` is exactly the range asked for, with a
``Content-Length`` body. Every failure — refused connection, an answer other
than that 206, silence for ``stall`` seconds, a connection closed early —
is a :class:`TransferError`, raised after whatever bytes did arrive were
yielded, so the caller knows the exact byte to resume from.

An error answer's JSON ``{"error": message}`` (what every Binge+ server
sends) is kept as the TransferError's ``detail``, so a caller can pass on
why the other server refused (a 508 naming a loop of upstreams, say).
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from typing import AsyncIterator
from urllib.parse import urlsplit

import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPResponse
from tornado.httputil import HTTPHeaders, HTTPInputError, parse_response_start_line

CONNECT_TIMEOUT = 2.0
# Largest read from a socket at once: what one chunk of a piece can be.
READ_SIZE = 256 * 1024
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)\Z")
# Largest error body read for its message.
ERROR_BODY_MAX = 64 * 1024


class TransferError(Exception):
    """A request to another server failed.

    ``status`` is its HTTP status when it answered with one, and ``detail``
    the ``error`` of its JSON body when it had one.
    """

    def __init__(self, message: str, status: int | None = None, detail: str | None = None) -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.status = status
        self.detail = detail


async def fetch(
    url: str, timeout: float, method: str = "GET", headers: dict[str, str] | None = None
) -> HTTPResponse:
    """The answer to a GET or HEAD of ``url`` (with ``headers``); TransferError unless it is a 200."""
    try:
        response = await AsyncHTTPClient().fetch(
            url, method=method, headers=headers, connect_timeout=min(timeout, CONNECT_TIMEOUT),
            request_timeout=timeout, raise_error=False,
        )
    except (OSError, HTTPClientError) as e:  # Tornado raises these even with raise_error=False
        raise TransferError(f"{method} {url}: {e}") from None
    if response.code == 599:
        raise TransferError(f"{method} {url}: {response.error}")
    if response.code != 200:
        raise TransferError(f"{method} {url}: HTTP {response.code}", response.code, error_detail(response.body))
    return response


async def get_json(url: str, timeout: float, headers: dict[str, str] | None = None) -> object:
    """The JSON document at ``url``; TransferError for anything but a 200 with JSON."""
    response = await fetch(url, timeout, headers=headers)
    try:
        return ujson.loads(response.body)
    except ValueError:
        raise TransferError(f"GET {url}: the answer is not JSON") from None


def error_detail(body: bytes | None) -> str | None:
    """The ``error`` of a JSON error body, or None."""
    try:
        error = ujson.loads(body or b"").get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, str) else None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Making one loads the system's CA certificates: some 17 ms, too much for every piece.
    return ssl.create_default_context()


async def get_range(
    url: str, start: int, end: int, stall: float, headers: dict[str, str] | None = None
) -> AsyncIterator[bytes]:
    """Yields bytes ``start`` to ``end`` (excluded) of the resource at ``url`` as they arrive.

    ``headers`` are sent along (``If-Match``, say). Each chunk is a new
    ``bytes`` the caller may keep.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", f"Range: bytes={start}-{end - 1}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    try:
        port = parts.port or (443 if secure else 80)
        tls = _tls_context() if secure else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port, ssl=tls), CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as e:
        raise TransferError(f"cannot connect to {parts.netloc}: {str(e) or 'timed out'}") from None
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        remaining = await _read_head(reader, url, start, end, stall)
        while remaining:
            try:
                data = await asyncio.wait_for(reader.read(min(remaining, READ_SIZE)), stall)
            except asyncio.TimeoutError:
                raise TransferError(f"{url}: nothing for {stall:g} s, {remaining} bytes short") from None
            if not data:
                raise TransferError(f"{url}: connection closed {remaining} bytes short")
            remaining -= len(data)
            yield data
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        raise TransferError(f"{url}: {str(e) or type(e).__name__}") from None
    finally:
        writer.close()


async def _read_head(reader: asyncio.StreamReader, url: str, start: int, end: int, stall: float) -> int:
    """Reads the status line and headers; returns the body's length once they are the 206 asked for."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), stall)
    except asyncio.TimeoutError:
        raise TransferError(f"{url}: no answer in {stall:g} s") from None
    status_line, _, header_text = head.decode("latin-1").partition("\r\n")
    try:
        status = parse_response_start_line(status_line).code
        response_headers = HTTPHeaders.parse(header_text)
    except HTTPInputError:
        raise TransferError(f"{url}: not an HTTP answer") from None
    if status != 206:
        raise TransferError(f"{url}: HTTP {status}", status, await _error_body(reader, response_headers, stall))
    match = CONTENT_RANGE.match(response_headers.get("Content-Range", ""))
    if not match or (int(match[1]), int(match[2]) + 1) != (start, end):
        raise TransferError(f"{url}: answered {response_headers.get('Content-Range')!r} for bytes {start}-{end - 1}")
    if response_headers.get("Content-Length") != str(end - start):
        raise TransferError(f"{url}: Content-Length {response_headers.get('Content-Length')!r} for {end - start} bytes")
    return end - start


async def _error_body(reader: asyncio.StreamReader, headers: HTTPHeaders, stall: float) -> str | None:
    """The message of an error answer's JSON body, when it is small and comes at once; else None."""
    try:
        length = int(headers.get("Content-Length", ""))
    except ValueError:
        return None
    if not 0 < length <= ERROR_BODY_MAX:
        return None
    try:
        return error_detail(await asyncio.wait_for(reader.readexactly(length), stall))
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return None

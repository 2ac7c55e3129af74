"""Structured logs: one JSON line per HTTP request, and one per unexpected error.

An access line (logger ``binge.access``; INFO below 400, WARNING below 500,
ERROR from 500) is written when the response ends, streams included::

    {"time": "2026-01-02T03:04:05.678Z", "request_id": "9f2c...", "method": "GET",
     "path": "/videos/alpha/stream", "route": "StreamHandler", "status": 206,
     "bytes": 1048576, "duration_ms": 12.3, "ip": "203.0.113.7", "user_agent": "...",
     "error": "..."}

``route`` is the handler's class, ``bytes`` the body bytes sent (what a cut
stream really sent), ``ip`` the client's address after
``server.trusted_proxies``, and ``error`` (only on errors) the message the
client got. An unexpected exception adds one line on ``binge.error`` with
the same request fields, the exception and its traceback; the client only
ever sees "internal server error", and (in ``X-Request-Id``, as every
response has) the request id to quote.
"""

from __future__ import annotations

import logging
import secrets
import time
import traceback
from types import TracebackType
from typing import TextIO

import tornado.web
import ujson

from handlers import tornado_internals

ACCESS = logging.getLogger("binge.access")
ERRORS = logging.getLogger("binge.error")

# Characters kept of a path or user agent: a hostile client must not be
# able to make one log line arbitrarily long.
FIELD_LIMIT = 1024


def new_request_id() -> str:
    return secrets.token_hex(8)


def route(handler: tornado.web.RequestHandler) -> str:
    """The name requests are logged and counted under: the handler's class, never the path."""
    return type(handler).__name__


def log_request(handler: tornado.web.RequestHandler, ip: str) -> None:
    """Writes the access line of a finished request."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not ACCESS.isEnabledFor(level):
        return  # built for every request otherwise, on the streaming hot path
    entry = {
        **_request_fields(handler, ip),
        "status": status,
        "bytes": body_bytes(handler),
        "duration_ms": round(1000 * handler.request.request_time(), 1),
        "user_agent": handler.request.headers.get("User-Agent", "")[:FIELD_LIMIT],
    }
    error = getattr(handler, "error_message", None)
    if error is not None:
        entry["error"] = error
    ACCESS.log(level, _dumps(entry))


def log_error(
    handler: tornado.web.RequestHandler, ip: str,
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None],
) -> None:
    """Writes the error line of an exception the request did not expect, traceback included."""
    entry = {
        **_request_fields(handler, ip),
        "error": repr(exc_info[1]),
        "traceback": "".join(traceback.format_exception(*exc_info)),
    }
    ERRORS.error(_dumps(entry))


def body_bytes(handler: tornado.web.RequestHandler) -> int:
    """Body bytes sent: counted by handlers that stream (``body_bytes``), else the Content-Length."""
    counted = getattr(handler, "body_bytes", None)
    if counted is not None:
        return counted
    if handler.request.method == "HEAD" or handler.get_status() in (101, 204, 304):
        return 0
    return int(tornado_internals.response_header(handler, "Content-Length", "0"))


def send_to(stream: TextIO) -> None:
    """Writes access and error lines to ``stream`` as they are, bare JSON, outside the root logger's format."""
    handler = logging.StreamHandler(stream)
    for logger in (ACCESS, ERRORS):
        logger.addHandler(handler)
        logger.propagate = False


def _request_fields(handler: tornado.web.RequestHandler, ip: str) -> dict:
    request = handler.request
    return {
        "time": _utc_now(),
        "request_id": getattr(handler, "request_id", None) or new_request_id(),
        "method": request.method,
        "path": request.path[:FIELD_LIMIT],
        "route": route(handler),
        "ip": ip,
    }


def _utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _dumps(entry: dict) -> str:
    # ASCII only: no character a client sends can break the line in two.
    return ujson.dumps(entry, escape_forward_slashes=False)

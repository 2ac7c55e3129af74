"""What every Binge+ HTTP handler shares: JSON answers, JSON errors, CORS, HEAD and Allow."""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING

import tornado.web
import ujson
from tornado.httputil import HTTPServerRequest

from handlers import tornado_internals
from media.ranges import http_date
from media.store import StoreError
from ops import access_log
from ops.limits import Refused
from peers import hops

if TYPE_CHECKING:
    from handlers.app import BingeApp

# Headers a cross-origin <video> or fetch() may read from our responses.
EXPOSED_HEADERS = "Accept-Ranges, Content-Length, Content-Range, Content-Type, ETag, Last-Modified, Retry-After, X-Request-Id"


def client_ip(request: HTTPServerRequest, trusted_proxies: tuple[str, ...]) -> str:
    """The client's address; X-Forwarded-For counts only when a trusted proxy sent it.

    Hops are read right to left, skipping trusted proxies, so a client
    cannot pass off an address of its choosing by prepending it.
    """
    address = request.remote_ip or ""
    if address not in trusted_proxies:
        return address
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        address = hop
        if hop not in trusted_proxies:
            break
    return address


def allowed_methods(handler_class: type[tornado.web.RequestHandler]) -> str:
    """The methods a resource answers, for ``Allow``: those its handler implements, and HEAD and
    OPTIONS (BaseHandler's, a GET's preflight) exactly where GET; empty for a resource with none."""
    implemented = [
        method for method in handler_class.SUPPORTED_METHODS
        if getattr(handler_class, method.lower()) is not getattr(tornado.web.RequestHandler, method.lower())
    ]
    has_get = "GET" in implemented
    return ", ".join(m for m in implemented if m not in ("HEAD", "OPTIONS") or has_get)


def stamp_date(handler: tornado.web.RequestHandler) -> float:
    """Sets the response's ``Date`` and returns it, so that the Last-Modified sent can be kept from passing it."""
    now = time.time()
    handler.set_header("Date", http_date(now))
    return now


class ApiError(tornado.web.HTTPError):
    """An error whose ``message`` is safe and useful to show the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, log_message=None)
        self.message = message


class BaseHandler(tornado.web.RequestHandler):
    """Answers in JSON, errors included, with the configured CORS origin on every response.

    A :class:`media.store.StoreError` raised by a handler becomes its status
    (404, 503…) with its message; anything unexpected becomes a 500 with a
    generic message, logged here with its traceback and never sent
    (:mod:`ops.access_log`). A :class:`ops.limits.Refused` becomes its
    status with ``Retry-After``. Every response names its request in
    ``X-Request-Id``, as its access line does.

    Before anything else a request's ``Binge-Via`` is checked
    (:mod:`peers.hops`): one that came back round a loop of upstreams, or
    passed through too many nodes, is answered 508 Loop Detected with a
    message naming the loop; a malformed one, 400.

    Every resource with a GET answers HEAD with the GET's status and headers
    and no body (RFC 9110 §9.3.2), and OPTIONS as a CORS preflight; a 405
    lists in ``Allow`` the methods the resource has (§15.5.6). A 200 that a
    handler gives no ``ETag`` of its own gets Tornado's, a hash of its body,
    and an ``If-None-Match`` naming it is answered 304: that is how the
    live JSON (``no-cache``) revalidates cheaply. Handlers whose answers
    may not be stored, or never repeat, turn that off
    (``etag_from_body``).
    """

    application: "BingeApp"
    # Set by handlers that count the body they send themselves (streams).
    body_bytes: int | None = None
    # The message of the error answered, for the access line.
    error_message: str | None = None
    # The response's Date, as a timestamp: no Last-Modified may pass it.
    date: float
    # False where there is nothing to revalidate: a no-store answer, or one that never repeats.
    etag_from_body = True

    @cached_property
    def request_id(self) -> str:
        return access_log.new_request_id()

    def set_default_headers(self) -> None:
        self.date = stamp_date(self)
        self.set_header("Access-Control-Allow-Origin", self.application.config.server.cors_origin)
        self.set_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)
        self.set_header("Server", "Binge+")
        self.set_header("X-Request-Id", self.request_id)

    def prepare(self) -> None:
        app = self.application
        hops.admit(self.request.headers.get(hops.HEADER), app.node_id, app.config.peer.public_url)

    async def head(self, *args: str, **kwargs: str) -> None:
        """The GET's answer, whose body Tornado drops for a HEAD; a 405 where there is no GET."""
        # A HEAD never switches protocols: a websocket handshake is a GET (RFC 6455 §4.1).
        self.request.headers.pop("Upgrade", None)
        answered = self.get(*args, **kwargs)
        if answered is not None:
            await answered

    def options(self, *args: str, **kwargs: str) -> None:
        """A CORS preflight: the resource's methods, with the headers a player sends."""
        methods = allowed_methods(type(self))
        self.set_header("Allow", methods)
        self.set_header("Access-Control-Allow-Methods", methods)
        self.set_header("Access-Control-Allow-Headers", "Range, If-Range, If-None-Match, If-Modified-Since, Content-Type")
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)

    def compute_etag(self) -> str | None:
        return super().compute_etag() if self.etag_from_body else None

    def write_json(self, obj: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False))

    def refuse_range(self, size: int, what: str) -> None:
        """416 for a Range outside ``what``'s ``size`` bytes, with the ``Content-Range: bytes */size`` RFC 9110 asks for.

        Written here, not raised: an error raised goes out with every header cleared.
        """
        self.set_header("Content-Range", f"bytes */{size}")
        self.write_json({"error": f"range not satisfiable: {what} has {size} bytes", "status": 416}, 416)

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            message = exc.message
        elif isinstance(exc, (StoreError, Refused)):
            status_code = exc.status
            message = str(exc)
        elif isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            message = exc.log_message % exc.args if exc.log_message else tornado_internals.reason(self)
        else:
            message = "internal server error" if status_code >= 500 else tornado_internals.reason(self)
        self.set_error_headers(status_code, exc)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.error_message = message
        # A HEAD gets the GET's Content-Length too: Tornado drops the body itself.
        self.finish(ujson.dumps({"error": message, "status": status_code}))

    def set_error_headers(self, status_code: int, exc: BaseException | None) -> None:
        """The status and headers of any error answer, JSON or page: never stored, ``Allow`` on a 405,
        ``Retry-After`` on a refusal."""
        self.set_status(status_code)
        self.set_header("Cache-Control", "no-store")
        if status_code == 405:
            self.set_header("Allow", allowed_methods(type(self)))
        if isinstance(exc, Refused):
            self.set_header("Retry-After", exc.retry_after)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, (ApiError, StoreError, Refused)):
            return  # expected: the access line carries the message
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
        else:
            access_log.log_error(self, self.client_ip(), (typ, value, tb))

    def client_ip(self) -> str:
        return client_ip(self.request, self.application.config.server.trusted_proxies)


class NotFoundHandler(BaseHandler):
    """Any path we do not serve."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"no such endpoint: {self.request.path}")

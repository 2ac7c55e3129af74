"""``/presence``: the presence JSON on a plain GET, live presence over a websocket.

A websocket client gets ``{"type": "welcome", "socketId"}``, then
``{"type": "presence", "version", "presence"}`` after its own arrival and
after every change (coalesced, see :mod:`presence.broadcast`). It may send
``{"type": "watch", "video": ID[, "peer": URL]}`` and ``{"type": "leave"}``
(checked by :mod:`presence.messages`), which only ever change its own entry, and
``{"type": "signal", "to", "data"}``, relayed to another socket by
:mod:`presence.signalling`; anything else gets
``{"type": "error", "error"}`` and the socket stays open, except a client
that keeps flooding, which is closed with 1008. One client address may hold
``limits.sockets_per_ip`` sockets; one more is refused before its upgrade
with a JSON 429 and ``Retry-After``; at shutdown, sockets are closed with
1001. A client that does not answer the server's pings
(``presence.ping_interval``) within ``presence.ping_timeout`` is closed.
With ``?changes=1`` on its URL, a client gets that first presence and then
``{"type": "changes"}`` messages carrying only what changed (see
:mod:`presence.broadcast`).
"""

from __future__ import annotations

import secrets

import tornado.websocket
import ujson

from handlers import tornado_internals
from handlers.base import BaseHandler
from ops.limits import TokenBucket, Verdict
from presence.broadcast import encode
from presence.messages import BadMessage, Signal, Watch, parse_message

# Frames up to this many times the larger of presence.max_message_bytes and
# max_signal_bytes are read and
# answered with an error; bigger ones are refused by the websocket protocol
# (close 1009) before they are buffered.
FRAME_LIMIT_FACTOR = 4

POLICY_VIOLATION = 1008


class PresenceHandler(BaseHandler, tornado.websocket.WebSocketHandler):
    """One presence websocket, or the presence JSON for a GET without ``Upgrade: websocket``.

    BaseHandler comes first so its CORS headers and JSON answers apply here too.
    """

    # Set in open(); None before and once the socket has left presence.
    socket_id: str | None = None

    async def get(self, *args: str, **kwargs: str) -> None:
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            self.set_header("Cache-Control", "no-store")
            self.write_json(self.application.presence.snapshot())
            return
        # Held from before the upgrade (one too many is refused with a JSON
        # 429) until the socket has closed: Tornado's get() lasts that long.
        with self.application.sockets.hold(self.client_ip(), self.request.connection.close):
            await super().get(*args, **kwargs)

    # The websocket settings come from config.presence here, not from
    # Application settings, so that they sit beside the checks they pair with.
    @property
    def ping_interval(self) -> float:
        return self.application.config.presence.ping_interval

    @property
    def ping_timeout(self) -> float:
        return self.application.config.presence.ping_timeout

    @property
    def max_message_size(self) -> int:
        settings = self.application.config.presence
        return FRAME_LIMIT_FACTOR * max(settings.max_message_bytes, settings.max_signal_bytes)

    def check_origin(self, origin: str) -> bool:
        """Cross-origin pages may connect when CORS lets them read our responses."""
        allowed = self.application.config.server.cors_origin
        return allowed == "*" or origin == allowed or super().check_origin(origin)

    def finish(self, chunk: str | bytes | dict | None = None):
        # Tornado refuses a bad handshake (400, 403, 426) with a plain-text
        # reason or none; like every API error, it goes out as JSON here.
        status = self.get_status()
        if status >= 400 and not tornado_internals.response_header(self, "Content-Type").startswith("application/json"):
            self.set_header("Content-Type", "application/json; charset=utf-8")
            message = chunk if isinstance(chunk, str) and chunk else tornado_internals.reason(self)
            chunk = ujson.dumps({"error": message, "status": status})
        return super().finish(chunk)

    def open(self, *args: str, **kwargs: str) -> None:
        settings = self.application.config.presence
        self.set_nodelay(True)
        self.ip = self.client_ip()
        self._bucket = TokenBucket(settings.messages_per_second)
        self._broadcaster = self.application.broadcaster
        self._broadcaster.join(self, changes=self.get_query_argument("changes", "") == "1")
        self.socket_id = secrets.token_urlsafe(15)
        self._send({"type": "welcome", "socketId": self.socket_id})
        self.application.presence.connect(self.socket_id, self.ip)
        self.application.signalling.join(self.socket_id, self._send, self.close)

    def write_message(self, message: str | bytes | dict, binary: bool = False):
        """Sends ``bytes`` as a text frame shared by every socket sent the same bytes
        (:func:`handlers.tornado_internals.write_shared_text`); anything else goes Tornado's way."""
        if not isinstance(message, bytes) or binary:
            return super().write_message(message, binary)
        return tornado_internals.write_shared_text(self, message)

    def on_message(self, message: str | bytes) -> None:
        if self.socket_id is None:
            return  # closed by us, the client has not finished closing yet
        verdict = self._bucket.take()
        if verdict is Verdict.ABUSE:
            self.close(POLICY_VIOLATION, "too many messages")
        elif verdict is Verdict.LIMITED:
            self._send({"type": "error", "error": "too many messages; slow down"})
        else:
            try:
                self._apply(message)
            except BadMessage as e:
                self._send({"type": "error", "error": str(e)})

    def on_close(self) -> None:
        self._leave()

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Closes the websocket, and takes the socket out of presence now, not when the client answers."""
        self._leave()
        super().close(code, reason)

    def _apply(self, message: str | bytes) -> None:
        app = self.application
        settings = app.config.presence
        parsed = parse_message(message, settings.max_message_bytes, settings.max_signal_bytes, app.store.videos, self.ip)
        if isinstance(parsed, Signal):
            app.signalling.signal(self.socket_id, parsed)
        elif isinstance(parsed, Watch):
            app.presence.watch(self.socket_id, parsed.video, parsed.peer)
        else:
            app.presence.leave(self.socket_id)

    def _send(self, message: dict) -> None:
        self._broadcaster.send(self, encode(message))

    def _leave(self) -> None:
        if self.socket_id is not None:
            self._broadcaster.leave(self)
            self.application.signalling.leave(self.socket_id)
            self.application.presence.disconnect(self.socket_id)
            self.socket_id = None

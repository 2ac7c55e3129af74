"""Presence over the wire: one serialization per burst of changes, the same bytes to every client.

A change does not go out at once: the first change after a broadcast starts
a ``coalesce_interval`` timer, and when it fires the state as it then is goes
to every client as one message. A burst of changes therefore costs one
``ujson.dumps`` and one write per client, and a client always gets the
latest state rather than a backlog of stale ones.

Writes are not awaited one client at a time, so one slow client cannot hold
up the others; instead each client's unflushed bytes are counted (added on
write, taken off when the write's future resolves) and a client that would
go over ``max_pending_bytes`` is closed, so a client that stops reading costs
at most that much memory, plus one message: a client with nothing pending is
always sent the next message, so a presence bigger than the bound still
reaches everyone who keeps up.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Awaitable, Protocol

import ujson
from tornado.websocket import WebSocketClosedError

from presence.state import Change, Presence
from settings import PresenceSettings

# Close code for a client that does not read fast enough: "try again later".
TOO_SLOW = 1013


def encode(message: dict) -> bytes:
    """A message as the UTF-8 JSON text frame payload every client gets."""
    return ujson.dumps(message, ensure_ascii=False, escape_forward_slashes=False).encode()


class Client(Protocol):
    """What the broadcaster needs of a socket: `tornado.websocket.WebSocketHandler` has it."""

    def write_message(self, message: bytes, binary: bool = False) -> Awaitable[None]: ...

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Broadcaster:
    """Keeps every joined client up to date with ``presence``.

    Clients join before their socket is added to presence, so the broadcast
    that follows their own connection is the first presence they get.
    """

    def __init__(self, presence: Presence, settings: PresenceSettings) -> None:
        self._presence = presence
        self._interval = settings.coalesce_interval
        self._max_pending = settings.max_pending_bytes
        # Joined clients -> bytes written to them that their socket has not taken yet.
        self._pending: dict[Client, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        presence.subscribe(self._on_change)

    def join(self, client: Client) -> None:
        self._pending[client] = 0

    def leave(self, client: Client) -> None:
        """Stops sending to ``client``; harmless if it already left."""
        self._pending.pop(client, None)

    def send(self, client: Client, data: bytes) -> None:
        """Writes ``data`` to a joined client, or closes it if its backlog would exceed the bound.

        A client that left, or whose socket has closed, is skipped.
        """
        pending = self._pending.get(client)
        if pending is None:
            return
        if pending and pending + len(data) > self._max_pending:
            self.leave(client)
            client.close(TOO_SLOW, "too slow to keep up with presence")
            return
        try:
            future = client.write_message(data, binary=False)
        except WebSocketClosedError:
            self.leave(client)
            return
        self._pending[client] = pending + len(data)
        asyncio.ensure_future(future).add_done_callback(partial(self._written, client, len(data)))

    def _written(self, client: Client, size: int, future: asyncio.Future) -> None:
        # Asking for the exception also keeps asyncio from logging it as never retrieved.
        if future.cancelled() or future.exception() is not None:
            # The connection is gone; the handler's on_close takes it out of presence.
            self.leave(client)
        elif client in self._pending:
            self._pending[client] -= size

    def _on_change(self, change: Change) -> None:
        if self._timer is None and self._pending:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._flush)

    def _flush(self) -> None:
        self._timer = None
        presence = self._presence.snapshot()
        data = encode({"type": "presence", "version": presence["version"], "presence": presence})
        # A copy: sending may close a client, which leaves, which changes the dict.
        for client in list(self._pending):
            self.send(client, data)

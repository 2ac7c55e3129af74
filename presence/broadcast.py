"""Presence over the wire: one serialization per burst of changes, the same bytes to every client.

Broadcasts are at least ``coalesce_interval`` apart. A change goes out on
the event loop's next turn, or, when the last broadcast is more recent than
that, once the interval since it has passed; the changes made meanwhile go
with it. A burst of changes therefore costs one ``ujson.dumps`` per kind of
message and one write per client, and a lone change waits for nothing.

A client picks, when it joins, which messages it gets:

- snapshots (the default): ``{"type": "presence", "version", "presence"}``,
  the whole state as it is when the broadcast goes out;
- changes: that snapshot first, then ``{"type": "changes", "from",
  "version", "changes": [...]}`` carrying every change since the previous
  message, in order, each one socket's new entry (``socketId``,
  ``ipaddress``, ``video`` (null: none), optional ``peer`` and ``instance``)
  or ``{"socketId", "gone": true}``. Applied in order to the presence at
  version ``from``, they give the presence at ``version``, watcher order
  included: a socket that moves to another video goes to the end of its
  list, one that only changes its peer keeps its place. A burst of more
  changes than there are sockets goes out as a snapshot instead, which is
  then the shorter. At 1,000 clients a snapshot is about 90 KiB, a change
  about 100 bytes, which is what makes the difference (bench/RESULTS.md).

Writes are not awaited one client at a time, so one slow client cannot hold
up the others; instead each client's unflushed bytes are counted (added on a
write the socket could not take at once, taken off when the write's future
resolves) and a client that would go over ``max_pending_bytes`` is closed,
so a client that stops reading costs at most that much memory, plus one
message: a client with nothing pending is always sent the next message, so a
presence bigger than the bound still reaches everyone who keeps up. Every client is handed the very same bytes
object, so the websocket can keep one copy of a message for all of them.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import time
from typing import Awaitable, Callable, Protocol

import ujson
from tornado.websocket import WebSocketClosedError

from presence.state import Change, Presence, watcher_entry
from settings import PresenceSettings

# Close code for a client that does not read fast enough: "try again later".
TOO_SLOW = 1013


def encode(message: dict) -> bytes:
    """A message as the UTF-8 JSON text frame payload every client gets."""
    return ujson.dumps(message, ensure_ascii=False, escape_forward_slashes=False).encode()


def _collector_held_off(method: Callable[..., None]) -> Callable[..., None]:
    """Holds off Python's cycle collector while ``method`` runs, and until the event loop's next turn.

    A broadcast makes thousands of short-lived objects: a snapshot's dicts,
    and the futures and callbacks of writes a socket could not take at once,
    which live until the loop's next turn. Collections in the middle would
    find them alive and move them towards the oldest generation, whose full
    scans then come every few seconds and take some 100 ms at 1,000 clients:
    the p99 latency. Held off until the callbacks have run (they were
    scheduled first), the collector finds them gone.
    """

    @functools.wraps(method)
    def held_off(*args: object) -> None:
        if not gc.isenabled():
            return method(*args)
        gc.disable()
        try:
            return method(*args)
        finally:
            asyncio.get_running_loop().call_soon(gc.enable)

    return held_off


class Client(Protocol):
    """What the broadcaster needs of a socket: `tornado.websocket.WebSocketHandler` has it."""

    def write_message(self, message: bytes, binary: bool = False) -> Awaitable[None]: ...

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Broadcaster:
    """Keeps every joined client up to date with ``presence``.

    Clients join before their socket is added to presence, so the broadcast
    that follows their own connection is the first presence they get.
    """

    def __init__(
        self, presence: Presence, settings: PresenceSettings,
        on_broadcast: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._presence = presence
        self._interval = settings.coalesce_interval
        self._max_pending = settings.max_pending_bytes
        # Joined clients -> bytes written to them that their socket has not taken yet.
        self._pending: dict[Client, int] = {}
        # Clients that asked for changes, and those of them that have had a snapshot.
        self._want_changes: set[Client] = set()
        self._following: set[Client] = set()
        # The changes since the last broadcast, kept while anyone wants changes.
        self._changes: list[Change] = []
        # The version of the last broadcast: where followers are.
        self._version = presence.version
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")  # event loop time
        # Told, after each broadcast, the seconds since the change that started its timer.
        self._on_broadcast = on_broadcast
        self._changed_at = 0.0
        presence.subscribe(self._on_change)

    def join(self, client: Client, changes: bool = False) -> None:
        """Starts sending presence to ``client``: changes after a first snapshot, or snapshots only."""
        self._pending[client] = 0
        if changes:
            self._want_changes.add(client)

    def leave(self, client: Client) -> None:
        """Stops sending to ``client``; harmless if it already left."""
        self._pending.pop(client, None)
        self._want_changes.discard(client)
        self._following.discard(client)

    def close_all(self, code: int, reason: str) -> None:
        """Closes every joined client with ``code`` (the server is going away, say)."""
        for client in list(self._pending):
            self.leave(client)
            client.close(code, reason)

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
            future = asyncio.ensure_future(client.write_message(data, binary=False))
        except WebSocketClosedError:
            self.leave(client)
            return
        if future.done():
            # The socket took it all at once, as it does for a client that
            # keeps up: nothing to count, and no callback to run.
            self._written(client, 0, future)
            return
        self._pending[client] = pending + len(data)
        future.add_done_callback(functools.partial(self._written, client, len(data)))

    def _written(self, client: Client, size: int, future: asyncio.Future) -> None:
        # Asking for the exception also keeps asyncio from logging it as never retrieved.
        if future.cancelled() or future.exception() is not None:
            # The connection is gone; the handler's on_close takes it out of presence.
            self.leave(client)
        elif client in self._pending:
            self._pending[client] -= size

    def _on_change(self, change: Change) -> None:
        if not self._pending:
            return  # nobody to tell: whoever joins next starts from a snapshot
        if self._want_changes:
            self._changes.append(change)
        if self._timer is None:
            self._changed_at = time.monotonic()
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(max(loop.time(), self._last_flush + self._interval), self._flush)

    @_collector_held_off
    def _flush(self) -> None:
        self._timer = None
        self._last_flush = asyncio.get_running_loop().time()
        changes, self._changes = self._changes, []
        version, self._version = self._version, self._presence.version
        whole = len(changes) > self._presence.socket_count()
        # Both messages are made before any send: a send may close a client,
        # which changes presence, and that change belongs to the next burst.
        snapshot = diff = None
        if whole or len(self._following) < len(self._pending):
            presence = self._presence.snapshot()
            snapshot = encode({"type": "presence", "version": presence["version"], "presence": presence})
        if self._following and not whole:
            entries = [self._entry(change) for change in changes]
            diff = encode({"type": "changes", "from": version, "version": self._version, "changes": entries})
        # A copy: sending may close a client, which leaves, which changes the dict.
        for client in list(self._pending):
            self.send(client, diff if diff is not None and client in self._following else snapshot)
        self._following = set(self._want_changes)
        self._on_broadcast(time.monotonic() - self._changed_at)

    def _entry(self, change: Change) -> dict:
        """A change as followers get it: the socket's entry as in a snapshot, plus its video."""
        state = change.state
        if state is None:
            return {"socketId": change.socket_id, "gone": True}
        return {**watcher_entry(change.socket_id, state, self._presence.instance), "video": state.video_id}

"""Presence shared through Pravega by every server instance on one scope.

Each instance appends its own sockets' changes to the scope's ``presence``
event stream and follows that stream for everyone's (the records and how
they merge are in :mod:`presence.shared`). The client's calls hold the GIL
and block, so a follow worker process does both (see
:class:`pravega_workers.follower.StreamFollower`): this side hands it records
without waiting and hears each event of the stream back.

Every ``pravega.instance_timeout / 3`` seconds an instance appends a
snapshot of its sockets, which is its heartbeat; an instance silent for
``instance_timeout`` is dropped from everyone's picture. The worker
truncates the stream to about its last ``instance_timeout`` seconds, which
always holds the latest snapshot of every live instance: a new instance
learns the whole picture from that short replay, and the stream does not
grow. After any replay an instance sends its snapshot at once, which also
repairs whatever of its records were lost while Pravega was away. On a
clean shutdown it appends ``gone``, so the others drop its sockets at once.
Signals between sockets of two instances go the same way (``signal``
records, see :mod:`presence.signalling`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Callable

from pravega_workers.follower import StreamFollower
from presence.shared import RemoteInstances, RemoteSignal, change_record, gone_record, signal_record, snapshot_record
from presence.state import Change, Presence
from settings import PravegaSettings

log = logging.getLogger("binge.presence")

PRESENCE_STREAM = "presence"
# Snapshots per instance_timeout: an instance survives the loss of all but one.
HEARTBEATS_PER_TIMEOUT = 3
# How often the worker looks for others' records: a change shows on every
# instance within about this, plus the broadcast's coalescing.
POLL = 0.25
# Seconds a closing instance gives its worker to append its last records.
CLOSE_GRACE = 1.0


class PresenceLink(StreamFollower):
    """Keeps ``presence`` holding the sockets of every instance on the scope, and shares this one's."""

    def __init__(self, presence: Presence, settings: PravegaSettings) -> None:
        super().__init__(settings, PRESENCE_STREAM, poll=POLL, keep=settings.instance_timeout)
        self.instance = uuid.uuid4().hex[:12]
        self.presence = presence
        # Told each live signal of another instance (see presence.signalling).
        self.on_signal: Callable[[RemoteSignal], None] = lambda signal: None
        self.remote = RemoteInstances(presence, self.instance, settings.instance_timeout,
                                      on_signal=lambda signal: self.on_signal(signal))
        self.heartbeat = settings.instance_timeout / HEARTBEATS_PER_TIMEOUT
        self._ticker: asyncio.Task | None = None

    def start(self) -> None:
        self.presence.instance = self.instance
        self.presence.subscribe(self._on_change)
        super().start()
        self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        self.append(gone_record(self.instance, time.time()))
        await super().close(grace=CLOSE_GRACE)

    def on_reset(self) -> None:
        self.remote.begin_replay()

    def on_record(self, data: bytes) -> None:
        self.remote.receive(data)

    def on_caught_up(self) -> None:
        if self.remote.end_replay():
            self._send_snapshot()

    def _on_change(self, change: Change) -> None:
        # Other instances' sockets came from the stream: only our own go back to it.
        if change.instance is None:
            self.append(change_record(self.instance, change, time.time()))

    def send_signal(self, signal: RemoteSignal) -> None:
        """Appends a signal for a socket of another instance; that one delivers it."""
        self.append(signal_record(self.instance, signal, time.time()))

    def _send_snapshot(self) -> None:
        self.append(snapshot_record(self.instance, self.presence.local_sockets(), time.time()))

    async def _tick(self) -> None:
        """Sends the heartbeat snapshot and drops instances gone silent."""
        last_snapshot = time.monotonic()
        while True:
            await asyncio.sleep(min(0.5, self.heartbeat))
            now = time.monotonic()
            if now - last_snapshot >= self.heartbeat:
                last_snapshot = now
                self._send_snapshot()
            for instance in self.remote.expire():
                log.info("presence: instance %s silent for %gs, its sockets dropped", instance,
                         self.settings.instance_timeout)

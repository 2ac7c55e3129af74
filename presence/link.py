"""Presence shared with other instances: one mechanism over one or two transports.

An *instance* is one server process: one of several instances of an origin
on one Pravega scope, or one worker process of a server with
``server.workers`` > 1 (or both). Each hands its own sockets' records (see
:mod:`presence.shared`) to every transport it has, and hears everyone
else's from each: :class:`presence.pravega_link.PravegaTransport` (the
scope's ``presence`` stream, between machines) and
:class:`presence.relay.RelayTransport` (the parent's relay, between the
workers of one server, in milliseconds). With both, a sibling's record
comes twice; its ``seq`` makes the second copy change nothing.

Every ``instance_timeout / 3`` seconds an instance sends a snapshot of its
sockets, which is its heartbeat; an instance silent for
``instance_timeout`` is dropped from everyone's picture. A transport that
(re)connects replays what it holds (the latest snapshot of every live
instance and what followed) between :meth:`Receiver.on_reset` and
:meth:`Receiver.on_caught_up`, and the instance then sends its snapshot at
once, which also repairs whatever of its records were lost while the
transport was away. On a clean shutdown it sends ``gone``, so the others
drop its sockets at once. Signals between sockets of two instances go the
same way (``signal`` records, see :mod:`presence.signalling`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Callable, Protocol

from presence.shared import RemoteInstances, RemoteSignal, change_record, gone_record, signal_record, snapshot_record
from presence.state import Change, Presence

log = logging.getLogger("binge.presence")

# Snapshots per instance_timeout: an instance survives the loss of all but one.
HEARTBEATS_PER_TIMEOUT = 3
# Seconds a closing instance gives its transports to hand on its last records.
CLOSE_GRACE = 1.0

# What a record is to a transport that keeps a replay of its own (the relay):
# a snapshot starts an instance's replay anew, a change is added to it, a
# message (signal, gone) is for the moment only.
SNAPSHOT, CHANGE, MESSAGE = "snapshot", "change", "message"


class Receiver(Protocol):
    """What a transport tells, on the event loop, naming itself by its ``name``."""

    def on_reset(self, source: str) -> None:
        """A replay of what the transport holds follows."""

    def on_record(self, source: str, data: bytes) -> None:
        """One record, in the transport's order."""

    def on_caught_up(self, source: str) -> None:
        """The replay is over; records from now on are live."""


class Transport(Protocol):
    """Carries records between instances: each one given to :meth:`append` reaches every other instance."""

    name: str

    def start(self, receiver: Receiver) -> None: ...

    def append(self, record: bytes, kind: str, seq: int) -> None:
        """Sends ``record`` (of ``kind``, the writer's ``seq``) without waiting; lost if the transport is down."""

    async def close(self, grace: float) -> None:
        """Stops, after up to ``grace`` seconds to send what it was given."""


class PresenceLink:
    """Keeps ``presence`` holding the sockets of every other instance its transports reach, and shares this one's."""

    def __init__(self, presence: Presence, transports: list[Transport], instance_timeout: float,
                 instance: str | None = None) -> None:
        self.instance = instance or uuid.uuid4().hex[:12]
        self.presence = presence
        self.transports = transports
        self.instance_timeout = instance_timeout
        # Told each live signal of another instance (see presence.signalling).
        self.on_signal: Callable[[RemoteSignal], None] = lambda signal: None
        self.remote = RemoteInstances(presence, self.instance, instance_timeout,
                                      on_signal=lambda signal: self.on_signal(signal))
        self.heartbeat = instance_timeout / HEARTBEATS_PER_TIMEOUT
        self._seq = 0
        self._ticker: asyncio.Task | None = None

    def start(self) -> None:
        self.presence.instance = self.instance
        self.presence.subscribe(self._on_change)
        for transport in self.transports:
            transport.start(self)
        self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        seq = self._next_seq()
        self._send(gone_record(self.instance, seq, time.time()), MESSAGE, seq)
        await asyncio.gather(*(transport.close(CLOSE_GRACE) for transport in self.transports))

    def on_reset(self, source: str) -> None:
        self.remote.begin_replay(source)

    def on_record(self, source: str, data: bytes) -> None:
        self.remote.receive(data, source)

    def on_caught_up(self, source: str) -> None:
        if self.remote.end_replay(source):
            self._send_snapshot()

    def send_signal(self, signal: RemoteSignal) -> None:
        """Sends a signal for a socket of another instance; that one delivers it."""
        seq = self._next_seq()
        self._send(signal_record(self.instance, seq, signal, time.time()), MESSAGE, seq)

    def _on_change(self, change: Change) -> None:
        # Other instances' sockets came from a transport: only our own go out.
        if change.instance is None:
            seq = self._next_seq()
            self._send(change_record(self.instance, seq, change, time.time()), CHANGE, seq)

    def _send_snapshot(self) -> None:
        seq = self._next_seq()
        self._send(snapshot_record(self.instance, seq, self.presence.local_sockets(), time.time()), SNAPSHOT, seq)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, record: bytes, kind: str, seq: int) -> None:
        for transport in self.transports:
            transport.append(record, kind, seq)

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
                log.info("presence: instance %s silent for %gs, its sockets dropped", instance, self.instance_timeout)
